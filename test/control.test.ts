// The control socket: JSON lines; malformed lines get errors and the connection stays open; the
// peer's uid is proven by the filesystem challenge (a non-operator uid is refused, a forged
// answer fails); approvals decided through it release held requests; sessions killed; live
// session watching, the event stream and audit search; every action audited with the operator.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { ControlClient } from '../src/control/client.js';
import { startControlServer } from '../src/control/server.js';
import { UserDb } from '../src/control/users.js';
import type { OperatorIdentity, WatchReplay } from '../src/control/protocol.js';
import type { AuditEvent } from '../src/core/audit-common.js';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { initFacts } from '../src/policy/actions.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import type { PolicyRequest } from '../src/policy/types.js';
import { IdentityService, defaultIdentityConfig } from '../src/identity/index.js';
import { tempDir, type TempDir } from './harness/tmp.js';

const agent = { subject: 'demo-agent', groups: ['agents'] };
const isRoot = process.getuid?.() === 0;
const log = createLogger('error', () => undefined);
let tmp: TempDir;
let dir: string;
let core: Core;
let store: Store;
let server: { close(): Promise<void>; authDir: string };
let sock: string;
let identity: IdentityService;

before(async () => {
  await initFacts();
  tmp = await tempDir('pc-control-');
  dir = tmp.path;
  cpSync('examples/policies', join(dir, 'policies'), { recursive: true });
  store = await openStore(dir);
  core = await Core.open({ dataDir: dir, policiesDir: join(dir, 'policies'), audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 100 }, store, log });
  sock = join(dir, 'control.sock');
  identity = new IdentityService(defaultIdentityConfig(), store);
  server = await startControlServer(core, { socket: sock, log, identity });
});
after(async () => {
  await server.close();
  await core.close();
  await store.close();
  await tmp.remove();
});

/** A raw connection: send lines, read response/event lines. */
class Raw {
  private buf = '';
  private waiters: (() => void)[] = [];
  readonly lines: Record<string, unknown>[] = [];
  constructor(readonly s: Socket) {
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(JSON.parse(this.buf.slice(0, nl)));
        this.buf = this.buf.slice(nl + 1);
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }
  static open(path = sock): Promise<Raw> {
    return new Promise((res, rej) => {
      const s = connect(path);
      s.once('connect', () => res(new Raw(s)));
      s.once('error', rej);
    });
  }
  send(...l: string[]): void {
    this.s.write(l.join('\n') + '\n');
  }
  /** Wait until `n` lines have arrived (bounded: 10 s). */
  async until(n: number): Promise<Record<string, unknown>[]> {
    const deadline = Date.now() + 10_000;
    while (this.lines.length < n) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} lines; got ${JSON.stringify(this.lines)}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
    return this.lines;
  }
  close(): void {
    this.s.destroy();
  }
}

async function rawAuth(r: Raw, answer: (c: { dir: string; nonce: string }) => void): Promise<Record<string, unknown>> {
  const base = r.lines.length;
  r.send(JSON.stringify({ id: 'h', op: 'hello', args: { operator: 'someone-else' } }));
  const hello = (await r.until(base + 1))[base] as { result: { challenge: { dir: string; nonce: string } } };
  answer(hello.result.challenge);
  r.send(JSON.stringify({ id: 'a', op: 'auth', args: { nonce: hello.result.challenge.nonce } }));
  return (await r.until(base + 2))[base + 1]!;
}

async function lastAudit(type: string): Promise<AuditEvent | undefined> {
  const { readAudit } = await import('../src/core/audit-read.js');
  let last: AuditEvent | undefined;
  for await (const e of readAudit(dir, { type })) last = e;
  return last;
}

describe('control socket', () => {
  test('the socket is mode 0660 and the challenge directory 1733, owned by the server', () => {
    assert.equal(statSync(sock).mode & 0o777, 0o660);
    const st = statSync(server.authDir);
    assert.equal(st.mode & 0o7777, 0o1733);
    assert.equal(st.uid, process.getuid!());
  });

  test('malformed lines and unknown ops get errors; ops before authentication are refused; the connection stays usable', async () => {
    const r = await Raw.open();
    r.send('{not json', '[1,2]', '{"id":2,"op":"nope"}', '{"id":3,"op":"sessions.list"}');
    const out = await r.until(4);
    assert.equal((out[0] as { error: { code: string } }).error.code, 'bad_json');
    assert.equal((out[1] as { error: { code: string } }).error.code, 'bad_json');
    assert.equal((out[2] as { error: { code: string } }).error.code, 'unknown_op');
    assert.deepEqual(out[3], { id: 3, ok: false, error: { code: 'not_authenticated', message: 'not authenticated: say hello and answer the challenge first (ControlClient does)' } });
    const auth = await rawAuth(r, (c) => mkdirSync(join(c.dir, c.nonce), { mode: 0o700 }));
    assert.equal(auth.ok, true, JSON.stringify(auth));
    const op = auth.result as OperatorIdentity;
    assert.equal(op.uid, process.getuid!());
    assert.equal(op.role, 'operator');
    assert.equal(op.claimed, 'someone-else', 'the claimed name is kept only as a claim');
    assert.notEqual(op.user, 'someone-else');
    assert.deepEqual(readdirSync(server.authDir), [], 'the answered challenge is removed');
    r.send('{"id":4,"op":"sessions.list"', '{"id":5,"op":"sessions.list"}');
    const more = await r.until(8);
    assert.equal((more[6] as { error: { code: string } }).error.code, 'bad_json');
    assert.deepEqual(more[7], { id: 5, ok: true, result: [] });
    r.close();
  });

  test('a forged or careless answer to the challenge is refused', async () => {
    const cases: [string, (c: { dir: string; nonce: string }) => void, RegExp][] = [
      ['no answer', () => undefined, /does not exist/],
      ['a file instead of a directory', (c) => writeFileSync(join(c.dir, c.nonce), ''), /must be a directory/],
      ['a symlink to an operator-owned directory', (c) => symlinkSync(dir, join(c.dir, c.nonce)), /must be a directory/],
      ['mode 0755', (c) => { mkdirSync(join(c.dir, c.nonce)); chmodSync(join(c.dir, c.nonce), 0o755); }, /mode 0700/],
      ['a non-empty directory', (c) => { mkdirSync(join(c.dir, c.nonce), { mode: 0o700 }); mkdirSync(join(c.dir, c.nonce, 'x')); }, /empty/],
    ];
    for (const [name, answer, re] of cases) {
      const r = await Raw.open();
      const res = (await rawAuth(r, answer)) as { ok: boolean; error: { code: string; message: string } };
      assert.equal(res.ok, false, name);
      assert.equal(res.error.code, 'auth_failed', name);
      assert.match(res.error.message, re, name);
      assert.deepEqual(readdirSync(server.authDir), [], `${name}: the answer is removed`);
      // The nonce is single use: answering again fails too.
      r.send(JSON.stringify({ id: 'b', op: 'auth', args: { nonce: 'f'.repeat(64) } }));
      const again = (await r.until(3))[2] as { ok: boolean; error: { code: string } };
      assert.equal(again.error.code, 'auth_failed');
      r.close();
    }
  });

  test('where the challenge directory could be swapped (world-writable, not sticky) a private one under the temp dir is used; neither safe: refused', async () => {
    const t = await tempDir('pc-unsafe-');
    const savedTmp = process.env.TMPDIR;
    try {
      const d = join(t.path, 'open');
      mkdirSync(d);
      chmodSync(d, 0o777);
      const s2 = join(d, 'control.sock');
      const srv = await startControlServer(core, { socket: s2, log });
      assert.ok(!srv.authDir.startsWith(d), srv.authDir);
      assert.equal(statSync(srv.authDir).mode & 0o7777, 0o1733);
      const c = await ControlClient.connect(s2);
      assert.equal(c.operator?.role, 'operator');
      c.close();
      await srv.close();
      assert.throws(() => statSync(srv.authDir), { code: 'ENOENT' }, 'removed at close');
      process.env.TMPDIR = d;
      await assert.rejects(startControlServer(core, { socket: s2, log }), { code: 'control_auth_unsafe' });
    } finally {
      if (savedTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = savedTmp;
      await t.remove();
    }
  });

  test('a non-operator uid is refused (kernel-attested, whatever name it claims); a control.group member may act', async (t) => {
    if (!isRoot) {
      // Without root no second uid can be made: the same decision through a test group instead.
      t.diagnostic('not root: checking the group decision with a synthetic passwd/group for this uid');
      const tt = await tempDir('pc-users-');
      try {
        const uid = process.getuid!();
        writeFileSync(join(tt.path, 'passwd'), `tester:x:${uid}:${uid}::/:/bin/sh\n`);
        writeFileSync(join(tt.path, 'group'), `tester:x:${uid}:\npc-oncall:x:4321:\n`);
        const s2 = join(tt.path, 'c.sock');
        const srv = await startControlServer(core, { socket: s2, log, group: 'pc-oncall', serviceUid: uid + 1, users: new UserDb({ passwd: join(tt.path, 'passwd'), group: join(tt.path, 'group') }) });
        await assert.rejects(ControlClient.connect(s2, 'root'), { code: 'not_operator' });
        await srv.close();
        writeFileSync(join(tt.path, 'group'), `tester:x:${uid}:\npc-oncall:x:4321:tester\n`);
        const srv2 = await startControlServer(core, { socket: s2, log, group: 'pc-oncall', serviceUid: uid + 1, users: new UserDb({ passwd: join(tt.path, 'passwd'), group: join(tt.path, 'group') }) });
        const c = await ControlClient.connect(s2);
        assert.equal(c.operator?.role, 'operator');
        c.close();
        await srv2.close();
      } finally {
        await tt.remove();
      }
      return;
    }
    // Root: real users. pcop-* is in the operator group, pcno-* is not; the agent's name is a
    // third user so that "the requester cannot approve itself" is checked with a real uid.
    const tag = randomBytes(3).toString('hex');
    const group = `pcops-${tag}`;
    const opUser = `pcop-${tag}`;
    const noUser = `pcno-${tag}`;
    const sh = (cmd: string, args: string[]) => {
      const r = spawnSync(cmd, args, { encoding: 'utf8' });
      assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
    };
    sh('groupadd', [group]);
    sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '-G', group, opUser]);
    sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', noUser]);
    const tt = await tempDir('pc-users-');
    try {
      const s2 = join(tt.path, 'c.sock');
      const srv = await startControlServer(core, { socket: s2, log, group });
      // File permissions would already keep pcno-* out; open them to show the uid check itself.
      chmodSync(s2, 0o666);
      const asUser = (user: string, script: string) =>
        new Promise<{ code: number | null; out: string; err: string }>((res) => {
          const uid = Number(spawnSync('id', ['-u', user], { encoding: 'utf8' }).stdout.trim());
          const gid = Number(spawnSync('id', ['-g', user], { encoding: 'utf8' }).stdout.trim());
          const p = spawn(process.execPath, ['--input-type=module', '-e', script], { uid, gid, env: { PATH: '/usr/bin:/bin' }, cwd: '/' });
          let out = '';
          let err = '';
          p.stdout.on('data', (d: Buffer) => (out += d.toString()));
          p.stderr.on('data', (d: Buffer) => (err += d.toString()));
          const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
          p.on('close', (code) => {
            clearTimeout(timer);
            res({ code, out, err });
          });
        });
      const clientJs = resolve('dist/src/control/client.js');
      const probe = (claim: string) => `
        import { ControlClient } from ${JSON.stringify(clientJs)};
        try {
          const c = await ControlClient.connect(${JSON.stringify(s2)}, ${JSON.stringify(claim)});
          const out = { operator: c.operator };
          try { out.sessions = (await c.call('sessions.list')).length; } catch (e) { out.sessionsError = e.code; }
          console.log(JSON.stringify(out));
          c.close();
        } catch (e) { console.log(JSON.stringify({ error: e.code, message: e.message })); }`;
      // The non-operator claims to be root: refused, and audited with its real identity.
      const no = await asUser(noUser, probe('root'));
      const noRes = JSON.parse(no.out.trim() || '{}');
      assert.equal(noRes.error, 'not_operator', no.out + no.err);
      assert.match(noRes.message, new RegExp(`${noUser} \\(uid \\d+\\) is not root, the service user or a member of control.group "${group}"`));
      const refused = await lastAudit('operator.refused');
      assert.equal(refused?.identity?.subject, noUser);
      assert.equal((refused?.data?.operator as { claimed?: string }).claimed, 'root');
      // Even a raw connection of that user that skips the client gets nothing.
      const rawNo = await asUser(
        noUser,
        `import { connect } from 'node:net';
         const s = connect(${JSON.stringify(s2)}); let b = '';
         s.on('data', (d) => { b += d; if (b.split('\\n').length > 2) { console.log(b); s.destroy(); } });
         s.write('{"id":1,"op":"sessions.list"}\\n{"id":2,"op":"approvals.list"}\\n');`,
      );
      assert.match(rawNo.out, /"id":1,"ok":false,"error":\{"code":"not_authenticated"/);
      assert.match(rawNo.out, /"id":2,"ok":false,"error":\{"code":"not_authenticated"/);
      // The group member is an operator and may list.
      const yes = await asUser(opUser, probe(opUser));
      const yesRes = JSON.parse(yes.out.trim() || '{}');
      assert.equal(yesRes.operator?.user, opUser, yes.out + yes.err);
      assert.equal(yesRes.operator?.role, 'operator');
      assert.match(yesRes.operator?.why, new RegExp(`member of control.group ${group}`));
      assert.equal(yesRes.sessions, 0);
      // A request held for an agent whose subject is that same unix user: it cannot approve it.
      const req: PolicyRequest = { protocol: 'postgres', identity: { subject: opUser, groups: ['agents'] }, target: 'shop', sql: 'DELETE FROM customers WHERE id = 9' };
      const { decision } = await core.decide(null, req);
      let held!: (id: string) => void;
      const heldId = new Promise<string>((r) => (held = r));
      const ac = new AbortController();
      const outcome = core.hold(null, req, decision, (id) => held(id), ac.signal);
      const id = await heldId;
      const self = await asUser(
        opUser,
        `import { ControlClient } from ${JSON.stringify(clientJs)};
         const c = await ControlClient.connect(${JSON.stringify(s2)});
         try { await c.call('approval.decide', { id: ${JSON.stringify(id)}, decision: 'approved' }); console.log('approved'); } catch (e) { console.log(e.code); }
         c.close();`,
      );
      assert.equal(self.out.trim(), 'approval_self', self.err);
      ac.abort();
      assert.equal((await outcome).state, 'expired');
      await srv.close();
    } finally {
      await tt.remove();
      spawnSync('userdel', [opUser]);
      spawnSync('userdel', [noUser]);
      spawnSync('groupdel', [group]);
    }
  });

  test('an approval is listed and decided over the socket, releasing the held request; the decision names the operator', async () => {
    const req: PolicyRequest = { protocol: 'postgres', identity: agent, target: 'shop', sql: 'DELETE FROM customers WHERE id = 3', reason: 'ticket 42' };
    const { decision } = await core.decide(null, req);
    let onHeld!: (id: string) => void;
    const heldId = new Promise<string>((r) => (onHeld = r));
    const outcome = core.hold(null, req, decision, (id) => onHeld(id));
    const id = await heldId;
    const c = await ControlClient.connect(sock, 'oncall-alice');
    const list = await c.call<{ id: string; rule: string; justification?: string }[]>('approvals.list', { state: 'pending' });
    // A hold whose requester went away stays pending (an agent's retry can pick it up): list by id.
    const mine = list.filter((a) => a.id === id);
    assert.equal(mine.length, 1, 'the held request is listed as pending');
    assert.equal(mine[0]!.justification, 'ticket 42');
    await assert.rejects(c.call('approval.decide', { id, decision: 'maybe' }), { code: 'bad_request' });
    const rec = await c.call<{ state: string; decidedBy: string }>('approval.decide', { id, decision: 'approved', reason: 'ok' });
    assert.equal(rec.state, 'approved');
    assert.equal(rec.decidedBy, c.operator!.user, 'decided by the kernel-attested user, not the claimed name');
    assert.equal((await outcome).state, 'approved');
    const ev = await lastAudit('approval');
    assert.equal(ev?.data?.by, c.operator!.user);
    c.close();
  });

  test('API tokens are created and revoked through the running bastion, audited with the operator', async () => {
    const c = await ControlClient.connect(sock, 'oncall-alice');
    const created = await c.call<{ token: string; record: { id: string } }>('token.create', { subject: 'ci-job', groups: ['agents'], ttlMs: 3_600_000 });
    const who = await identity.verifyBearer(created.token, { remote: '127.0.0.1', protocol: 'postgres' });
    assert.equal(who.subject, 'ci-job');
    const listed = await c.call<{ id: string }[]>('token.list');
    assert.ok(listed.some((t) => t.id === created.record.id));
    assert.doesNotMatch(JSON.stringify(listed), new RegExp(created.token.slice(-20)));
    await c.call('token.revoke', { id: created.record.id });
    await assert.rejects(identity.verifyBearer(created.token, { remote: '127.0.0.1', protocol: 'postgres' }), { code: 'token_revoked' });
    const ev = await lastAudit('operator.token.revoke');
    assert.equal(ev?.identity?.subject, c.operator!.user);
    assert.equal((ev?.data?.operator as { uid: number }).uid, process.getuid!());
    c.close();
  });

  test('sessions are listed (with their last command) and killed through their proxy; the kill is audited first', async () => {
    let killedWith = '';
    const s = await core.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent, kill: (reason) => { killedWith = reason; void core.closeSession(s.id, reason); } });
    await core.decide(s.id, { protocol: 'ssh', identity: agent, target: 'sandbox', command: 'uname -a' });
    const c = await ControlClient.connect(sock);
    const list = await c.call<{ id: string; lastRequest?: { text: string; effect: string }; requests: number }[]>('sessions.list');
    const mine = list.find((x) => x.id === s.id);
    assert.deepEqual([mine?.lastRequest?.text, mine?.lastRequest?.effect, mine?.requests], ['uname -a', 'allow', 1]);
    await c.call('session.kill', { id: s.id, reason: 'runaway' });
    assert.match(killedWith, new RegExp(`killed by operator ${c.operator!.user}: runaway`));
    await assert.rejects(c.call('session.kill', { id: s.id }), { code: 'session_not_found' });
    const ev = await lastAudit('operator.kill');
    assert.equal(ev?.session, s.id);
    assert.equal(ev?.identity?.subject, c.operator!.user);
    assert.equal(ev?.identity?.authMethod, 'unix-peer');
    c.close();
  });

  test('session.watch: the recording so far, then live output (UTF-8 split across chunks), resizes, decisions, approvals, the end', async () => {
    const s = await core.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent });
    const rec = core.record(s.id, { width: 100, height: 30 });
    rec.output(Buffer.from('$ echo h\u00e9llo\r\nh\u00e9llo\r\n$ '));
    const c = await ControlClient.connect(sock);
    const events: [string, unknown][] = [];
    let ended = '';
    const sub = await c.subscribe('session.watch', { id: s.id }, (e, d) => events.push([e, d]), (r) => (ended = r));
    assert.equal((sub.result as { session: { id: string } }).session.id, s.id);
    const waitFor = async (pred: () => boolean, what: string) => {
      const deadline = Date.now() + 10_000;
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; events: ${JSON.stringify(events).slice(0, 2000)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await waitFor(() => events.some(([e]) => e === 'watch.replay'), 'the replay');
    const replay = events.find(([e]) => e === 'watch.replay')![1] as WatchReplay;
    assert.deepEqual([replay.cast?.header.width, replay.cast?.header.height], [100, 30]);
    assert.equal(replay.cast?.events.map((e) => e[2]).join(''), '$ echo h\u00e9llo\r\nh\u00e9llo\r\n$ ');
    // A 3-byte character split over two chunks arrives whole.
    const euro = Buffer.from('\u20ac', 'utf8');
    rec.output(Buffer.concat([Buffer.from('price '), euro.subarray(0, 1)]));
    rec.output(Buffer.concat([euro.subarray(1), Buffer.from('5\r\n')]));
    rec.resize(120, 40);
    await core.decide(s.id, { protocol: 'ssh', identity: agent, target: 'sandbox', command: 'rm -rf /srv' });
    const req: PolicyRequest = { protocol: 'ssh', identity: agent, target: 'sandbox', command: 'sudo reboot-not-really' };
    const d2 = await core.decide(s.id, req);
    let heldId = '';
    const held = core.hold(s.id, req, d2.decision, (id) => (heldId = id));
    await waitFor(() => events.some(([e]) => e === 'approval.created'), 'the approval');
    await core.approvals.decide(heldId, 'denied', 'oncall-bob', 'not now');
    assert.equal((await held).state, 'denied');
    await core.closeSession(s.id, 'agent logged out');
    await waitFor(() => ended !== '', 'the end of the subscription');
    const live = events.filter(([e]) => e === 'session.output').map(([, d]) => (d as { data: string }).data).join('');
    assert.equal(live, 'price \u20ac5\r\n');
    assert.deepEqual(events.find(([e]) => e === 'session.resize')?.[1], { session: s.id, cols: 120, rows: 40 });
    const decided = events.filter(([e]) => e === 'request.decided').map(([, d]) => d as { request: { command: string }; decision: { effect: string; rule: string } });
    assert.deepEqual(decided.map((d) => [d.request.command, d.decision.effect]), [['rm -rf /srv', 'deny'], ['sudo reboot-not-really', 'review']]);
    assert.ok(events.some(([e]) => e === 'approval.decided'));
    assert.ok(events.some(([e]) => e === 'session.closed'));
    assert.match(ended, /agent logged out/);
    const watched = await lastAudit('operator.watch');
    assert.equal(watched?.session, s.id);
    await assert.rejects(c.subscribe('session.watch', { id: s.id }, () => undefined), { code: 'session_not_found' });
    c.close();
  });

  test('events.subscribe streams session, decision and approval events; unsubscribe stops them', async () => {
    const c = await ControlClient.connect(sock);
    const got: string[] = [];
    const sub = await c.subscribe('events.subscribe', { types: ['session.opened', 'request.decided', 'session.closed'] }, (e) => got.push(e));
    await assert.rejects(c.subscribe('events.subscribe', { types: ['session.output'] }, () => undefined), { code: 'bad_request' });
    const s = await core.openSession({ protocol: 'postgres', target: 'shop', identity: agent });
    await core.decide(s.id, { protocol: 'postgres', identity: agent, target: 'shop', sql: 'SELECT 1' });
    await core.closeSession(s.id);
    const deadline = Date.now() + 10_000;
    while (got.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(got, ['session.opened', 'request.decided', 'session.closed']);
    await sub.cancel();
    const s2 = await core.openSession({ protocol: 'postgres', target: 'shop', identity: agent });
    await core.closeSession(s2.id);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(got.length, 3);
    c.close();
  });

  test('audit.search filters the log and returns the most recent matches; bad arguments are precise errors', async () => {
    const c = await ControlClient.connect(sock);
    const denies = await c.call<AuditEvent[]>('audit.search', { effect: 'deny', limit: 5 });
    assert.ok(denies.length >= 1);
    assert.ok(denies.every((e) => e.decision?.effect === 'deny'));
    const recent = await c.call<AuditEvent[]>('audit.search', { limit: 3 });
    assert.equal(recent.length, 3);
    assert.ok(recent[0]!.seq < recent[2]!.seq);
    const text = await c.call<AuditEvent[]>('audit.search', { text: 'uname', since: '1h' });
    assert.ok(text.some((e) => e.request?.command === 'uname -a'));
    await assert.rejects(c.call('audit.search', { effect: 'maybe' }), { code: 'bad_request' });
    await assert.rejects(c.call('audit.search', { limit: 0 }), { code: 'bad_request' });
    await assert.rejects(c.call('audit.search', { since: 'yesterday-ish' }), { code: 'bad_request' });
    c.close();
  });

  test('a subscriber that stops reading is cut off (sub.end) instead of growing the bastion without bound', async () => {
    const s = await core.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent });
    const rec = core.record(s.id, { width: 80, height: 24 });
    const r = await Raw.open();
    await rawAuth(r, (ch) => mkdirSync(join(ch.dir, ch.nonce), { mode: 0o700 }));
    r.send(JSON.stringify({ id: 9, op: 'session.watch', args: { id: s.id, replay: false } }));
    await r.until(3);
    r.s.pause();
    const chunk = Buffer.alloc(1024 * 1024, 'x');
    for (let i = 0; i < 16; i++) rec.output(chunk);
    r.s.resume();
    const deadline = Date.now() + 20_000;
    while (!r.lines.some((l) => l.event === 'sub.end') && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    const end = r.lines.find((l) => l.event === 'sub.end') as { data: { reason: string } } | undefined;
    assert.match(end?.data.reason ?? '', /fell more than \d+ bytes behind/);
    // The connection itself still works.
    r.send('{"id":10,"op":"sessions.list"}');
    const deadline2 = Date.now() + 10_000;
    while (!r.lines.some((l) => l.id === 10) && Date.now() < deadline2) await new Promise((res) => setTimeout(res, 20));
    assert.equal(r.lines.find((l) => l.id === 10)?.ok, true);
    r.close();
    await core.closeSession(s.id);
  });
});
