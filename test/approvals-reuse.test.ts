// Core.hold with { waitMs, reuse } (the Kubernetes proxy's holds): a requester stops waiting
// without expiring the approval; a retry of the same request attaches to the pending approval; an
// approval granted after every requester left passes the next identical request exactly once.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { initFacts } from '../src/policy/actions.js';
import type { PolicyRequest } from '../src/policy/types.js';
import { openStore } from '../src/store/index.js';

const agent = { subject: 'demo-agent', groups: ['agents'] };
const del = (name: string): PolicyRequest => ({ protocol: 'kubernetes', identity: agent, target: 'demo-cluster', http: { method: 'DELETE', path: `/api/v1/namespaces/default/pods/${name}` } });
const log = createLogger('error', () => undefined);
let root: string;

async function open(approvalTimeoutMs = 60_000) {
  const dir = mkdtempSync(join(root, 'c-'));
  const policiesDir = join(dir, 'policies');
  cpSync('examples/policies', policiesDir, { recursive: true });
  const store = await openStore(dir);
  const core = await Core.open({ dataDir: dir, policiesDir, audit: { sync: 'writes', intervalMs: 20, checkpointEvery: 100 }, approvalTimeoutMs, store, log });
  return {
    core,
    audit: () => readFileSync(join(dir, 'audit', 'audit.jsonl'), 'utf8'),
    close: async () => {
      await core.close();
      await store.close();
    },
  };
}

before(async () => {
  await initFacts();
  root = mkdtempSync(join(tmpdir(), 'pc-reuse-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

describe('approval reuse', () => {
  test('gave up → still pending → retry attaches → granted later → the next retry passes once', async () => {
    const { core, audit, close } = await open();
    const req = del('web-1');
    const { decision } = await core.decide(null, req);
    assert.equal(decision.effect, 'review');
    const opts = { waitMs: 100};
    const ids: string[] = [];
    const first = await core.hold(null, req, decision, (id) => ids.push(id), undefined, opts);
    assert.equal(first.state, 'pending');
    assert.ok(first.expiresAt && first.expiresAt > Date.now());
    const second = await core.hold(null, req, decision, (id) => ids.push(id), undefined, opts);
    assert.equal(second.state, 'pending');
    assert.equal(second.approvalId, first.approvalId, 'the retry attached to the same approval');
    assert.equal((await core.approvals.list('pending')).length, 1);
    // Another request of the same agent is another approval.
    const other = await core.hold(null, del('web-2'), decision, () => undefined, undefined, opts);
    assert.notEqual(other.approvalId, first.approvalId);
    await core.approvals.decide(first.approvalId, 'approved', 'demo-oncall', 'go');
    const third = await core.hold(null, req, decision, () => assert.fail('no new hold'), undefined, opts);
    assert.deepEqual({ state: third.state, id: third.approvalId, reused: third.reused, by: third.by }, { state: 'approved', id: first.approvalId, reused: true, by: 'demo-oncall' });
    const fourth = await core.hold(null, req, decision, () => undefined, undefined, opts);
    assert.equal(fourth.state, 'pending');
    assert.notEqual(fourth.approvalId, first.approvalId, 'a grant passes one retry');
    assert.deepEqual(ids, [first.approvalId, first.approvalId]);
    await close();
    assert.match(audit(), new RegExp(`"type":"approval.used"`));
    assert.match(audit(), new RegExp(`"approval":"${first.approvalId}"[^\n]*"type":"approval.used"`));
  });

  test('a requester still waiting gets the decision itself (no grant is left behind)', async () => {
    const { core, close } = await open();
    const req = del('web-3');
    const { decision } = await core.decide(null, req);
    let held!: string;
    const p = core.hold(null, req, decision, (id) => (held = id), undefined, { waitMs: 10_000});
    await new Promise((r) => setTimeout(r, 50));
    await core.approvals.decide(held, 'approved', 'demo-oncall');
    assert.equal((await p).state, 'approved');
    const again = await core.hold(null, req, decision, () => undefined, undefined, { waitMs: 50});
    assert.equal(again.state, 'pending');
    await close();
  });

  test('denied and expired approvals leave no grant; an aborted wait leaves the approval pending', async () => {
    const { core, close } = await open(300);
    const req = del('web-4');
    const { decision } = await core.decide(null, req);
    const ac = new AbortController();
    const p = core.hold(null, req, decision, () => ac.abort(), ac.signal, { waitMs: 10_000});
    const gone = await p;
    assert.equal(gone.state, 'pending');
    assert.equal((await core.approvals.list('pending')).length, 1);
    const waiting = core.hold(null, req, decision, () => undefined, undefined, { waitMs: 10_000});
    const expired = await waiting;
    assert.equal(expired.state, 'expired');
    const next = await core.hold(null, req, decision, () => undefined, undefined, { waitMs: 50});
    assert.equal(next.state, 'pending');
    assert.notEqual(next.approvalId, gone.approvalId);
    await core.approvals.decide(next.approvalId, 'denied', 'demo-oncall', 'no');
    const after = await core.hold(null, req, decision, () => undefined, undefined, { waitMs: 50});
    assert.equal(after.state, 'pending', 'a denial is no grant');
    assert.notEqual(after.approvalId, next.approvalId);
    await close();
  });
});
