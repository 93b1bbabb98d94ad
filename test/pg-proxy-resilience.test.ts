// The PostgreSQL proxy under stress and failure: TLS (verify-full with psql), plaintext refused,
// wrong token, unknown and unreachable targets, per-identity connection limits, a malformed client
// message (only that connection ends), clients going away mid-result and during a hold, and a
// 250,000-row masked result streamed with bounded memory. Real PostgreSQL, psql and the core.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chownSync, cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { IdentityService, defaultIdentityConfig } from '../src/identity/index.js';
import { initFacts } from '../src/policy/actions.js';
import type { Identity } from '../src/policy/types.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { startPostgresProxy, type PostgresProxy, type PostgresProxyOptions } from '../src/proxy/postgres/index.js';
import { B, decodeNoticeFields, encodeQuery, noticeField } from '../src/proxy/postgres/codec.js';
import { rawLogin } from './harness/pgraw.js';
import { withPostgres } from './harness/pg.js';
import { freePort } from './harness/ports.js';

const db = withPostgres({ logStatements: false });
const log = createLogger('error', () => undefined);

let root: string;
let store: Store;
let core: Core;
let proxy: PostgresProxy;
let token: string;
const extra: PostgresProxy[] = [];

let identity: IdentityService;

/** The wiring serve uses: the agent's password is a bearer token for src/identity. */
function authenticate(user: string, password: string, ctx: { remote: string }): Promise<Identity> {
  return identity.verifyBearer(password, { remote: ctx.remote, protocol: 'postgres', userHint: user });
}

function shop(): PostgresProxyOptions['targets'] {
  return (name) => (name === 'shop' ? { host: db.host, port: db.port, database: 'shop', user: db.user, password: db.password } : undefined);
}

async function another(opts: Partial<PostgresProxyOptions>): Promise<PostgresProxy> {
  const p = await startPostgresProxy(core, { port: 0, allowPlaintext: true, log, authenticate, targets: shop(), ...opts });
  extra.push(p);
  return p;
}

before(async () => {
  await initFacts();
  root = mkdtempSync(join(tmpdir(), 'pc-pgproxy-res-'));
  const dataDir = join(root, 'data');
  const policiesDir = join(root, 'policies');
  cpSync('examples/policies', policiesDir, { recursive: true });
  store = await openStore(dataDir);
  core = await Core.open({ dataDir, policiesDir, audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 1000 }, store, log, approvalTimeoutMs: 20_000 });
  identity = new IdentityService(defaultIdentityConfig(), store);
  token = (await identity.createToken({ subject: 'demo-agent', groups: ['agents'] })).token;
  proxy = await startPostgresProxy(core, { port: 0, allowPlaintext: true, dataDir, log, authenticate, targets: shop() });
});

after(async () => {
  for (const p of extra) await p.close();
  await proxy?.close();
  await core?.close();
  await store?.close();
  rmSync(root, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function psql(port: number, sql: string, env: Record<string, string> = {}, args: string[] = []): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn('psql', ['-X', '-A', '-t', ...args, '-c', sql], {
      env: { PATH: process.env.PATH ?? '', PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'demo-agent', PGDATABASE: 'shop', PGPASSWORD: token, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '10', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function direct<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: db.connectionString() });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe('TLS and credentials', () => {
  test('sslmode=verify-full with psql against the bastion certificate; plaintext refused', async () => {
    const key = join(root, 'key.pem');
    const cert = join(root, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const p = await another({ tls: { key: readFileSync(key), cert: readFileSync(cert) }, allowPlaintext: false });
    const ok = await psql(p.port, 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()', { PGSSLMODE: 'verify-full', PGSSLROOTCERT: cert });
    assert.equal(ok.code, 0, ok.stderr);
    // the agent's session is TLS to the bastion (the upstream hop here is plain TCP on loopback)
    assert.equal(ok.stdout.trim(), 'f');
    const sessions = await store.sessions.find({});
    assert.ok(sessions.some((s) => (s.meta as Record<string, string>)['tls'] === 'yes'));
    const plain = await psql(p.port, 'SELECT 1', { PGSSLMODE: 'disable' });
    assert.notEqual(plain.code, 0);
    assert.match(plain.stderr, /connection without TLS refused/);
    const wrongName = await psql(p.port, 'SELECT 1', { PGSSLMODE: 'verify-full', PGSSLROOTCERT: cert, PGHOST: 'localhost' });
    assert.notEqual(wrongName.code, 0);
  });

  test('TLS to the upstream (target tls with the server CA, host name checked)', async () => {
    const key = join(root, 'up-key.pem');
    const cert = join(root, 'up-cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const dataDir = db.server.dataDir;
    const owner = statSync(dataDir);
    for (const [src, name] of [[key, 'server.key'], [cert, 'server.crt']] as const) {
      const dst = join(dataDir, name);
      writeFileSync(dst, readFileSync(src), { mode: 0o600 });
      chownSync(dst, owner.uid, owner.gid);
    }
    await direct(async (c) => {
      await c.query('ALTER SYSTEM SET ssl = on');
      await c.query('SELECT pg_reload_conf()');
    });
    await waitFor('the server to accept TLS', async () => direct(async (c) => (await c.query('SHOW ssl')).rows[0].ssl === 'on'));
    const p = await another({ targets: (n) => (n === 'shop' ? { host: db.host, port: db.port, database: 'shop', user: db.user, password: db.password, tls: { mode: 'verify-full', ca: readFileSync(cert) } } : undefined) });
    const r = await psql(p.port, 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 't');
    const masked = await psql(p.port, 'SELECT email FROM customers WHERE id = 1');
    assert.match(masked.stdout.trim(), /^[^@*]\*+@/);
    const other = join(root, 'other-cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(root, 'other-key.pem'), '-out', other, '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' });
    const bad = await another({ targets: (n) => (n === 'shop' ? { host: db.host, port: db.port, database: 'shop', user: db.user, password: db.password, tls: { mode: 'verify-full', ca: readFileSync(other) } } : undefined) });
    const b = await psql(bad.port, 'SELECT 1');
    assert.notEqual(b.code, 0);
    assert.match(b.stderr, /target shop unreachable: TLS to 127\.0\.0\.1:\d+ failed/);
  });

  test('a wrong token: 28P01 with the reason, connection closed', async () => {
    const r = await psql(proxy.port, 'SELECT 1', { PGPASSWORD: 'pcat_0123456789abcdef_' + 'A'.repeat(43) });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /FATAL: {2}password authentication failed for user "demo-agent"/);
    assert.match(r.stderr, /DETAIL: {2}API token not recognized/);
  });

  test('another subject\'s token: refused', async () => {
    const other = (await identity.createToken({ subject: 'someone-else', groups: ['agents'] })).token;
    const r = await psql(proxy.port, 'SELECT 1', { PGPASSWORD: other });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /password authentication failed/);
    assert.match(r.stderr, /does not match the credential's subject/);
  });

  test('target routing: dbname shop, shop@postgres; unknown target 3D000', async () => {
    const a = await psql(proxy.port, 'SELECT current_database()', { PGDATABASE: 'shop@postgres' });
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout.trim(), 'postgres');
    const b = await psql(proxy.port, 'SELECT 1', { PGDATABASE: 'nosuch' });
    assert.notEqual(b.code, 0);
    assert.match(b.stderr, /database "nosuch" does not exist/);
  });

  test('upstream down: 08006 target shop unreachable', async () => {
    const dead = await freePort();
    const p = await another({ targets: (n) => (n === 'shop' ? { host: '127.0.0.1', port: dead, database: 'shop', user: 'x', password: 'y' } : undefined) });
    const c = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'demo-agent', password: token, database: 'shop' });
    c.on('error', () => undefined);
    const e = (await c.connect().then(
      () => assert.fail('connected'),
      (err: unknown) => err,
    )) as { code?: string; message: string };
    assert.equal(e.code, '08006');
    assert.match(e.message, /^target shop unreachable: connect to 127\.0\.0\.1:\d+ failed: ECONNREFUSED/);
  });

  test('connection limit per identity: 53300', async () => {
    const p = await another({ maxConnectionsPerIdentity: 1 });
    const first = await rawLogin(p.port, token);
    try {
      const r = await psql(p.port, 'SELECT 1');
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /too many connections for identity "demo-agent"/);
    } finally {
      first.sock.destroy();
    }
    await waitFor('the slot to be released', async () => p.connections() === 0);
    const again = await psql(p.port, 'SELECT 1');
    assert.equal(again.code, 0, again.stderr);
  });
});

describe('upstream login methods', () => {
  test('md5 and cleartext password upstream logins (SCRAM-SHA-256 is what every other test uses)', async () => {
    await direct(async (c) => {
      await c.query("SET password_encryption = 'md5'");
      await c.query("CREATE ROLE md5user LOGIN PASSWORD 'md5-secret'");
      await c.query("RESET password_encryption");
      await c.query("CREATE ROLE pwuser LOGIN PASSWORD 'pw-secret'");
    });
    const hba = join(db.server.dataDir, 'pg_hba.conf');
    const original = readFileSync(hba, 'utf8');
    writeFileSync(hba, 'host all md5user 127.0.0.1/32 md5\nhost all pwuser 127.0.0.1/32 password\n' + original);
    try {
      await direct(async (c) => void (await c.query('SELECT pg_reload_conf()')));
      for (const [user, password] of [['md5user', 'md5-secret'], ['pwuser', 'pw-secret']] as const) {
        const p = await another({ targets: (n) => (n === 'shop' ? { host: db.host, port: db.port, database: 'shop', user, password } : undefined) });
        const r = await psql(p.port, 'SELECT current_user');
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.trim(), user);
        const wrong = await another({ targets: (n) => (n === 'shop' ? { host: db.host, port: db.port, database: 'shop', user, password: 'nope' } : undefined) });
        const w = await psql(wrong.port, 'SELECT 1');
        assert.notEqual(w.code, 0);
        assert.match(w.stderr, /target shop unreachable: login failed: password authentication failed/);
      }
    } finally {
      writeFileSync(hba, original);
      await direct(async (c) => void (await c.query('SELECT pg_reload_conf()')));
    }
  });
});

describe('session limits', () => {
  test('idle timeout closes an idle session (57P05)', async () => {
    const p = await another({ session: { idleTimeoutMs: 600 } });
    const c = await rawLogin(p.port, token);
    const closed = new Promise<void>((r) => c.sock.once('close', () => r()));
    await closed;
    let code: string | undefined;
    for (let f = c.reader.next(); f; f = c.reader.next()) if (f.type === B.ErrorResponse) code = noticeField(decodeNoticeFields(f.body), 'C');
    assert.equal(code, '57P05');
  });

  test('a revoked token ends its open session at the next revalidation (28000)', async () => {
    const t = await identity.createToken({ subject: 'demo-agent', groups: ['agents'] });
    const p = await another({ session: { revalidateMs: 200, revalidate: (id) => identity.check(id) } });
    const c = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'demo-agent', password: t.token, database: 'shop' });
    const ended = new Promise<Error>((resolve) => c.once('error', resolve));
    await c.connect();
    assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
    await identity.revokeToken(t.record.id);
    const e = (await ended) as Error & { code?: string };
    assert.equal(e.code, '28000');
    assert.match(e.message, /credential is no longer valid: token revoked at/);
    await c.end().catch(() => undefined);
  });
});

describe('isolation and clean-up', () => {
  test('a malformed message ends that connection only (08P01)', async () => {
    const good = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'demo-agent', password: token, database: 'shop' });
    await good.connect();
    try {
      const bad = await rawLogin(proxy.port, token);
      const closed = new Promise<void>((r) => bad.sock.once('close', () => r()));
      bad.sock.write(Buffer.from([0x7a, 0, 0, 0, 4])); // 'z': not a frontend message
      await closed;
      let f;
      let err: string | undefined;
      while ((f = bad.reader.next())) if (f.type === B.ErrorResponse) err = noticeField(decodeNoticeFields(f.body), 'C');
      assert.equal(err, '08P01');
      const r = await good.query('SELECT 42 AS n');
      assert.equal(r.rows[0].n, 42);
    } finally {
      await good.end();
    }
  });

  test('a client gone mid-result: the upstream query is cancelled and its backend ends', async () => {
    const c = await rawLogin(proxy.port, token, [['application_name', 'gone-mid-result']]);
    c.sock.write(encodeQuery('SELECT g, repeat(\'x\', 200) FROM generate_series(1, 5000000) g'));
    await waitFor('rows to flow', async () => c.reader.buffered > 64 * 1024);
    c.sock.destroy();
    await waitFor('the upstream backend to go away', async () =>
      direct(async (d) => (await d.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'gone-mid-result'")).rows[0].n === 0),
    );
    await waitFor('the proxy to drop the session', async () => proxy.connections() === 0);
  });

  test('a client gone during a hold: the approval stays pending (detached) until decided or expired', async () => {
    const created = new Promise<string>((resolve) => core.approvals.once('created', (rec) => resolve(rec.id)));
    const c = await rawLogin(proxy.port, token);
    c.sock.write(encodeQuery('DELETE FROM customers WHERE id = 999999'));
    const id = await created;
    c.sock.destroy();
    await waitFor('the approval to be detached', async () => (await store.approvals.get(id))?.detachedAt !== undefined);
    assert.equal((await store.approvals.get(id))?.state, 'pending');
    await core.approvals.decide(id, 'denied', 'demo-oncall', 'test clean-up');
    assert.equal((await store.approvals.get(id))?.state, 'denied');
  });
});

describe('resources', () => {
  test('a 250,000-row masked result streams with bounded memory', async () => {
    const out = join(root, 'big.txt');
    const samples: number[] = [];
    global.gc?.();
    const base = process.memoryUsage().rss;
    const timer = setInterval(() => samples.push(process.memoryUsage().rss), 25);
    const r = await psql(proxy.port, 'SELECT g, c.email, c.card_number, c.ssn FROM customers c CROSS JOIN generate_series(1, 250) g', {}, ['-o', out]);
    clearInterval(timer);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(statSync(out).size > 10_000_000);
    const text = readFileSync(out, 'utf8');
    const lines = text.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 250_000);
    const real = await direct(async (d) => (await d.query('SELECT email, card_number FROM customers WHERE id <= 20')).rows);
    for (const row of real) {
      assert.ok(!text.includes(row.email), 'an email leaked');
      assert.ok(!text.includes(row.card_number), 'a card number leaked');
    }
    const peak = Math.max(...samples, base);
    assert.ok(peak - base < 100 * 1024 * 1024, `rss grew by ${Math.round((peak - base) / 1048576)} MB`);
  });
});
