// The control socket: JSON lines over a unix socket; malformed lines get an error and the
// connection stays open; approvals decided through it release held requests; sessions killed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlClient } from '../src/control/client.js';
import { startControlServer } from '../src/control/server.js';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { initFacts } from '../src/policy/actions.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import type { PolicyRequest } from '../src/policy/types.js';
import { IdentityService, defaultIdentityConfig } from '../src/identity/index.js';

const agent = { subject: 'demo-agent', groups: ['agents'] };
let dir: string;
let core: Core;
let store: Store;
let server: { close(): Promise<void> };
let sock: string;
let identity: IdentityService;

before(async () => {
  await initFacts();
  dir = mkdtempSync(join(tmpdir(), 'pc-control-'));
  cpSync('examples/policies', join(dir, 'policies'), { recursive: true });
  store = await openStore(dir);
  const log = createLogger('error', () => undefined);
  core = await Core.open({ dataDir: dir, policiesDir: join(dir, 'policies'), audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 100 }, store, log });
  sock = join(dir, 'control.sock');
  identity = new IdentityService(defaultIdentityConfig(), store);
  server = await startControlServer(core, { socket: sock, log, identity });
});
after(async () => {
  await server.close();
  await core.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

function rawExchange(lines: string[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const s = connect(sock);
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      if (buf.split('\n').filter(Boolean).length >= lines.length) {
        s.end();
        resolve(buf.trim().split('\n'));
      }
    });
    s.on('error', reject);
    s.write(lines.join('\n') + '\n');
  });
}

describe('control socket', () => {
  test('the socket is mode 0660', () => {
    assert.equal(statSync(sock).mode & 0o777, 0o660);
  });

  test('malformed lines and unknown ops get errors; the connection stays usable', async () => {
    const out = (await rawExchange(['{not json', '{"id":2,"op":"nope"}', '{"id":3,"op":"sessions.list"}'])).map((l) => JSON.parse(l));
    assert.equal(out[0].ok, false);
    assert.equal(out[0].error.code, 'bad_json');
    assert.equal(out[1].error.code, 'unknown_op');
    assert.deepEqual(out[2], { id: 3, ok: true, result: [] });
  });

  test('an approval is listed and decided over the socket, releasing the held request', async () => {
    const req: PolicyRequest = { protocol: 'postgres', identity: agent, target: 'shop', sql: 'DELETE FROM customers WHERE id = 3' };
    const { decision } = await core.decide(null, req);
    let onHeld!: (id: string) => void;
    const heldId = new Promise<string>((r) => (onHeld = r));
    const outcome = core.hold(null, req, decision, (id) => onHeld(id));
    const id = await heldId;
    const self = await ControlClient.connect(sock, 'demo-agent');
    await assert.rejects(self.call('approval.decide', { id, decision: 'approved' }), { code: 'approval_self' });
    self.close();
    const c = await ControlClient.connect(sock, 'oncall-alice');
    const list = await c.call<{ id: string; rule: string }[]>('approvals.list', { state: 'pending' });
    assert.deepEqual(list.map((a) => a.id), [id]);
    await assert.rejects(c.call('approval.decide', { id, decision: 'maybe' }), { code: 'bad_request' });
    const rec = await c.call<{ state: string; decidedBy: string }>('approval.decide', { id, decision: 'approved', reason: 'ok' });
    assert.equal(rec.state, 'approved');
    assert.equal(rec.decidedBy, 'oncall-alice');
    assert.equal((await outcome).state, 'approved');
    c.close();
  });

  test('API tokens are created and revoked through the running bastion', async () => {
    const c = await ControlClient.connect(sock, 'oncall-alice');
    const created = await c.call<{ token: string; record: { id: string } }>('token.create', { subject: 'ci-job', groups: ['agents'], ttlMs: 3_600_000 });
    const who = await identity.verifyBearer(created.token, { remote: '127.0.0.1', protocol: 'postgres' });
    assert.equal(who.subject, 'ci-job');
    const listed = await c.call<{ id: string }[]>('token.list');
    assert.ok(listed.some((t) => t.id === created.record.id));
    assert.doesNotMatch(JSON.stringify(listed), new RegExp(created.token.slice(-20)));
    await c.call('token.revoke', { id: created.record.id });
    await assert.rejects(identity.verifyBearer(created.token, { remote: '127.0.0.1', protocol: 'postgres' }), { code: 'token_revoked' });
    c.close();
  });

  test('sessions are listed and killed through their proxy', async () => {
    let killedWith = '';
    const s = await core.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent, kill: (reason) => { killedWith = reason; void core.closeSession(s.id, reason); } });
    const c = await ControlClient.connect(sock, 'oncall-alice');
    const list = await c.call<{ id: string }[]>('sessions.list');
    assert.ok(list.some((x) => x.id === s.id));
    await c.call('session.kill', { id: s.id });
    assert.match(killedWith, /killed by operator oncall-alice/);
    await assert.rejects(c.call('session.kill', { id: s.id }), { code: 'session_not_found' });
    c.close();
  });
});
