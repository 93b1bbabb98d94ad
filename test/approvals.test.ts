// Approvals in the shared core: hold → approve / deny / expire, the requester cannot approve its
// own request, every state change audited, pending approvals expired after a restart.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { initFacts } from '../src/policy/actions.js';
import { openStore } from '../src/store/index.js';
import type { PolicyRequest } from '../src/policy/types.js';

const agent = { subject: 'demo-agent', groups: ['agents'] };
const held: PolicyRequest = { protocol: 'postgres', identity: agent, target: 'shop', sql: 'DELETE FROM customers WHERE id = 7', reason: 'remove a test customer' };
let root: string;
const log = createLogger('error', () => undefined);

async function open(dataDir: string, approvalTimeoutMs = 60_000) {
  const policiesDir = join(dataDir, 'policies');
  cpSync('examples/policies', policiesDir, { recursive: true });
  const store = await openStore(dataDir);
  const core = await Core.open({ dataDir, policiesDir, audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 100 }, approvalTimeoutMs, store, log });
  return { core, store, close: async () => { await core.close(); await store.close(); } };
}

before(async () => {
  await initFacts();
  root = mkdtempSync(join(tmpdir(), 'pc-approvals-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

describe('approvals', () => {
  test('a held request is released by an operator; the requester cannot approve itself', async () => {
    const dir = mkdtempSync(join(root, 'a-'));
    const { core, close } = await open(dir);
    const { decision } = await core.decide(null, held);
    assert.equal(decision.effect, 'review');
    let onHeld!: (id: string) => void;
    const heldP = new Promise<string>((r) => (onHeld = r));
    const outcome = core.hold(null, held, decision, (id) => onHeld(id));
    const heldId = await heldP;
    assert.match(heldId, /^[a-z2-9]{10}$/);
    const pending = await core.approvals.list('pending');
    assert.equal(pending.length, 1);
    assert.equal(pending[0].rule, decision.rule);
    assert.equal((pending[0] as unknown as { justification: string }).justification, 'remove a test customer');
    await assert.rejects(core.approvals.decide(heldId, 'approved', 'demo-agent'), { code: 'approval_self' });
    const rec = await core.approvals.decide(heldId, 'approved', 'demo-oncall', 'looks fine');
    assert.equal(rec.state, 'approved');
    assert.deepEqual(await outcome, { state: 'approved', by: 'demo-oncall', reason: 'looks fine', approvalId: heldId });
    await assert.rejects(core.approvals.decide(heldId, 'denied', 'demo-oncall'), { code: 'approval_not_pending' });
    await assert.rejects(core.approvals.decide('nosuchid42', 'denied', 'demo-oncall'), { code: 'approval_not_found' });
    await close();
    const audit = readFileSync(join(dir, 'audit', 'audit.jsonl'), 'utf8');
    assert.match(audit, /"type":"approval.requested"/);
    assert.match(audit, new RegExp(`"approval":"${heldId}","by":"demo-oncall","reason":"looks fine","state":"approved"`));
  });

  test('denied and expired holds', async () => {
    const dir = mkdtempSync(join(root, 'b-'));
    const { core, close } = await open(dir, 300);
    const { decision } = await core.decide(null, held);
    let onHeld!: (id: string) => void;
    const heldP = new Promise<string>((r) => (onHeld = r));
    const denied = core.hold(null, held, decision, (x) => onHeld(x));
    const id = await heldP;
    await core.approvals.decide(id, 'denied', 'demo-oncall', 'no');
    assert.equal((await denied).state, 'denied');
    const expired = await core.hold(null, held, decision, () => undefined);
    assert.equal(expired.state, 'expired');
    assert.equal((await core.approvals.list('expired')).length, 1);
    const ac = new AbortController();
    const gone = core.hold(null, held, decision, () => ac.abort());
    assert.equal((await gone).state, 'expired');
    await close();
  });

  test('pending approvals do not survive a restart as pending: they expire, never forward', async () => {
    const dir = mkdtempSync(join(root, 'c-'));
    const first = await open(dir);
    const { decision } = await first.core.decide(null, held);
    const rec = await first.core.approvals.create({ protocol: 'postgres', target: 'shop', identity: agent, request: { sql: held.sql }, rule: decision.rule, reason: decision.reason });
    // Simulate a crash: close the store and the audit log without expiring anything.
    await first.core.audit.close();
    await first.store.close();
    const second = await open(dir);
    const after = await second.store.approvals.get(rec.id);
    assert.equal(after?.state, 'expired');
    assert.match(after?.decisionReason ?? '', /restarted/);
    await second.close();
  });
});
