// API tokens through a real store in a temp dir: create / use / revoke / expire, what is stored,
// revalidation of open sessions, and the `portcullis token` CLI (tokenCommand, stdout captured).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { YamlSource } from '../src/config/source.js';
import { defaultIdentityConfig, IdentityError, IdentityService, parseIdentityConfig, type IdentityRejection } from '../src/identity/index.js';
import { tempDir, type TempDir } from './harness/tmp.js';

let dir: TempDir;
let store: Store;
const ctx = { remote: '127.0.0.1', protocol: 'postgres' as const };

before(async () => {
  dir = await tempDir('portcullis-tokens-');
  store = await openStore(path.join(dir.path, 'svc'));
});
after(async () => {
  await store.close();
  await dir.remove();
});

async function rejects(p: Promise<unknown>, code: string, message?: RegExp): Promise<IdentityError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof IdentityError, `expected IdentityError, got ${String(e)}`);
    assert.equal(e.code, code, `code (message: ${e.message})`);
    if (message) assert.match(e.message, message);
    return e;
  }
  assert.fail(`expected ${code}, but it was accepted`);
}

describe('API tokens', () => {
  test('create → use: the token works, only a SHA-256 hash is stored', async () => {
    const s = new IdentityService(defaultIdentityConfig(), store);
    const { token, record } = await s.createToken({ subject: 'demo-agent', groups: ['agents', 'agents', 'ci'] });
    assert.match(token, /^pcat_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    assert.equal(token.split('_')[1], record.id);
    assert.deepEqual(record.groups, ['agents', 'ci']);
    assert.ok(record.expiresAt && Math.abs(record.expiresAt - Date.now() - 24 * 3_600_000) < 5000, 'default ttl 24h');
    const stored = await store.tokens.get(record.id);
    assert.ok(stored);
    assert.match(stored.hash, /^sha256:[0-9a-f]{64}$/);
    assert.equal(JSON.stringify(stored).includes(token.slice(22)), false, 'the secret is not stored');
    const id = await s.verifyBearer(token, { ...ctx, userHint: 'demo-agent' });
    assert.deepEqual(id, { subject: 'demo-agent', groups: ['agents', 'ci'], issuer: 'portcullis', authMethod: 'api-token', credentialId: `api-token:${record.id}`, expiresAt: record.expiresAt });
    assert.equal(await s.revalidate(id), true);
  });

  test('a wrong secret and an unknown id read the same', async () => {
    const s = new IdentityService(defaultIdentityConfig(), store);
    const { token } = await s.createToken({ subject: 'demo-agent' });
    const wrongSecret = token.slice(0, -4) + (token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const unknownId = 'pcat_0000000000000000_' + token.slice(-43);
    const a = await rejects(s.verifyBearer(wrongSecret, ctx), 'token_unknown');
    const b = await rejects(s.verifyBearer(unknownId, ctx), 'token_unknown');
    assert.equal(a.message, b.message);
    assert.equal(a.message, 'API token not recognized');
    await rejects(s.verifyBearer('pcat_short', ctx), 'token_malformed');
  });

  test('revoked: refused at once, also for the open session (revalidate)', async () => {
    const s = new IdentityService(defaultIdentityConfig(), store);
    const { token, record } = await s.createToken({ subject: 'agent-r', groups: ['agents'] });
    const id = await s.verifyBearer(token, ctx);
    const r = await s.revokeToken(record.id.slice(0, 8));
    assert.equal(r.already, false);
    assert.equal(r.info.status, 'revoked');
    await rejects(s.verifyBearer(token, ctx), 'token_revoked', /^token revoked at \d{4}-\d\d-\d\dT/);
    assert.equal(await s.revalidate(id), false);
    assert.equal((await s.check(id)).ok, false);
    assert.equal((await s.revokeToken(token)).already, true, 'the full token also names it');
  });

  test('expired: refused with its expiry; the open session ends', async () => {
    const clock = { now: Date.now() };
    const s = new IdentityService(defaultIdentityConfig(), store, { now: () => clock.now });
    const { token, record } = await s.createToken({ subject: 'agent-e', ttlMs: 60_000 });
    const id = await s.verifyBearer(token, ctx);
    clock.now += 60_000;
    await rejects(s.verifyBearer(token, ctx), 'token_expired', new RegExp(`^token expired at ${new Date(record.expiresAt as number).toISOString()}$`));
    assert.deepEqual(await s.check(id), { ok: false, code: 'token_expired', message: `token expired at ${new Date(record.expiresAt as number).toISOString()}` });
  });

  test('the PostgreSQL user name must be the token subject', async () => {
    const s = new IdentityService(defaultIdentityConfig(), store);
    const { token } = await s.createToken({ subject: 'demo-agent' });
    await rejects(s.verifyBearer(token, { ...ctx, userHint: 'postgres' }), 'subject_mismatch');
  });

  test('max_ttl from the config bounds new tokens', async () => {
    const src = YamlSource.parse('/etc/p.yaml', 'identity:\n  api_tokens:\n    default_ttl: 1h\n    max_ttl: 2h\n');
    const s = new IdentityService(parseIdentityConfig(src, (src.value() as { identity: unknown }).identity), store);
    await assert.rejects(s.createToken({ subject: 'x', ttlMs: 3 * 3_600_000 }), /at most 7200s/);
    await assert.rejects(s.createToken({ subject: 'x', ttlMs: null }), /at most 7200s/);
    const { record } = await s.createToken({ subject: 'x' });
    assert.ok(record.expiresAt && record.expiresAt - record.createdAt === 3_600_000);
    const bad = YamlSource.parse('/etc/p.yaml', 'identity:\n  api_tokens:\n    default_ttl: 3h\n    max_ttl: 2h\n');
    assert.throws(() => parseIdentityConfig(bad, (bad.value() as { identity: unknown }).identity), /p\.yaml:3:\d+: identity\.api_tokens\.default_ttl: longer than max_ttl/);
  });

  test('bad tokens from one address are rate-limited and audited; API token failures count', async () => {
    const events: IdentityRejection[] = [];
    const src = YamlSource.parse('/etc/p.yaml', 'identity:\n  rate_limit: { failures: 5, per: 1m, cooldown: 1m }\n');
    const s = new IdentityService(parseIdentityConfig(src, (src.value() as { identity: unknown }).identity), store, { audit: async (e) => void events.push(e) });
    const { token } = await s.createToken({ subject: 'victim' });
    for (let i = 0; i < 5; i++) await rejects(s.verifyBearer(`pcat_${'0'.repeat(15)}${i}_${'A'.repeat(43)}`, { ...ctx, remote: '127.0.0.5', userHint: 'victim' }), 'token_unknown');
    // the right token from the same address is now refused without being looked at
    await rejects(s.verifyBearer(token, { ...ctx, remote: '127.0.0.5' }), 'rate_limited');
    assert.equal((await s.verifyBearer(token, { ...ctx, remote: '127.0.0.6' })).subject, 'victim');
    assert.deepEqual(events.map((e) => e.code), ['token_unknown', 'token_unknown', 'token_unknown', 'token_unknown', 'token_unknown', 'rate_limited']);
    assert.equal(events[0].subjectHint, 'victim');
    assert.equal(events[0].method, 'api-token');
    assert.ok(events.every((e) => !JSON.stringify(e).includes('AAAAAAAA')), 'no secret in audit events');
  });
});

describe('portcullis token (tokenCommand)', () => {
  // tokenCommand writes to process.stdout, which the test runner also uses to report: it runs in a
  // child process (compiled: plain node; under tsx: node --import tsx).
  const moduleUrl = new URL('../src/cli/token.js', import.meta.url).href;
  const viaTsx = import.meta.url.endsWith('.ts');
  async function run(sub: string, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
    const script = `const m = await import(${JSON.stringify(moduleUrl)}); process.exitCode = await m.tokenCommand(${JSON.stringify(sub)}, ${JSON.stringify(args)});`;
    const nodeArgs = [...(viaTsx ? ['--import', 'tsx'] : []), '--input-type=module', '-e', script];
    return new Promise((resolve, reject) => {
      execFile(process.execPath, nodeArgs, { cwd: process.cwd(), timeout: 60_000 }, (error, stdout, stderr) => {
        if (error && typeof error.code !== 'number') reject(error);
        else resolve({ code: error ? (error.code as number) : 0, out: stdout, err: stderr });
      });
    });
  }

  test('create prints the token once with id and expiry; list never shows hashes; revoke; the token then fails', async () => {
    const dataDir = path.join(dir.path, 'cli');
    const c = await run('create', '--subject', 'demo-agent', '--groups', 'agents,ci', '--groups', 'extra', '--ttl', '2h', '--data-dir', dataDir);
    assert.equal(c.code, 0, c.err);
    const token = c.out.split('\n')[0];
    assert.match(token, /^pcat_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    const id = /id:\s+([0-9a-f]{16})/.exec(c.out)?.[1];
    assert.equal(id, token.slice(5, 21));
    assert.match(c.out, /groups:\s+agents,ci,extra/);
    const exp = /expires:\s+(\S+)/.exec(c.out)?.[1];
    assert.ok(exp && Math.abs(Date.parse(exp) - Date.now() - 2 * 3_600_000) < 5000);

    const j = await run('create', '--subject', 'other', '--ttl', 'never', '--json', '--data-dir', dataDir);
    const created = JSON.parse(j.out) as { token: string; id: string; expiresAt: string | null };
    assert.equal(created.expiresAt, null);

    const l = await run('list', '--data-dir', dataDir);
    assert.equal(l.code, 0);
    assert.match(l.out, /^ID\s+SUBJECT\s+GROUPS\s+CREATED\s+EXPIRES\s+STATUS/);
    assert.match(l.out, new RegExp(`${id}\\s+demo-agent\\s+agents,ci,extra\\s+\\S+\\s+\\S+\\s+active`));
    const lj = await run('list', '--json', '--data-dir', dataDir);
    const rows = JSON.parse(lj.out) as Record<string, unknown>[];
    assert.equal(rows.length, 2);
    assert.ok(rows.every((r) => !('hash' in r)));
    assert.equal(lj.out.includes('sha256'), false);
    assert.equal(lj.out.includes(token.slice(22)), false);

    // the store the CLI wrote is the one the bastion reads
    const st = await openStore(dataDir);
    try {
      const s = new IdentityService(defaultIdentityConfig(), st);
      assert.equal((await s.verifyBearer(token, ctx)).subject, 'demo-agent');
    } finally {
      await st.close();
    }

    const r = await run('revoke', id as string, '--data-dir', dataDir);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`revoked token ${id} \\(demo-agent\\)`));
    const again = await run('revoke', (id as string).slice(0, 6), '--data-dir', dataDir);
    assert.match(again.out, /was already revoked/);
    const l2 = await run('list', '--data-dir', dataDir);
    assert.match(l2.out, new RegExp(`${id}.*revoked \\d{4}-`));

    const st2 = await openStore(dataDir);
    try {
      await rejects(new IdentityService(defaultIdentityConfig(), st2).verifyBearer(token, ctx), 'token_revoked');
    } finally {
      await st2.close();
    }
    assert.ok(fs.existsSync(path.join(dataDir, 'db')));
  });

  test('with a bastion running, create and revoke go through its control socket (a broken one is an error, nothing written)', async () => {
    const dataDir = path.join(dir.path, 'cli3');
    fs.mkdirSync(dataDir, { recursive: true });
    const server = net.createServer((c) => c.destroy());
    await new Promise<void>((resolve) => server.listen(path.join(dataDir, 'control.sock'), resolve));
    try {
      const c = await run('create', '--subject', 'x', '--data-dir', dataDir);
      assert.equal(c.code, 1);
      assert.match(c.err, /portcullis token create: .*(closed the control connection|control connection failed|cannot reach)/);
      assert.equal(c.out, '', 'no token printed');
      assert.equal((await run('revoke', 'deadbeefdeadbeef', '--data-dir', dataDir)).code, 1);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    // a stale socket file (nothing listening) does not block
    fs.writeFileSync(path.join(dataDir, 'control.sock'), '');
    assert.equal((await run('create', '--subject', 'x', '--data-dir', dataDir)).code, 0);
  });

  test('usage errors exit 2; an unknown id exits 1', async () => {
    const dataDir = path.join(dir.path, 'cli2');
    assert.equal((await run('create', '--data-dir', dataDir)).code, 2);
    assert.match((await run('create', '--subject', 'x', '--ttl', 'soon', '--data-dir', dataDir)).err, /--ttl "soon" is not a duration/);
    assert.equal((await run('create', '--subject', 'has space', '--data-dir', dataDir)).code, 2);
    assert.equal((await run('list', '--subject', 'x', '--data-dir', dataDir)).code, 2);
    assert.equal((await run('revoke', '--data-dir', dataDir)).code, 2);
    assert.equal((await run('frobnicate')).code, 2);
    const r = await run('revoke', 'deadbeefdeadbeef', '--data-dir', dataDir);
    assert.equal(r.code, 1);
    assert.match(r.err, /no token with id deadbeefdeadbeef \(token_unknown\)/);
    const h = await run('create', '--help');
    assert.equal(h.code, 0);
    assert.match(h.out, /portcullis token create --subject S/);
  });
});
