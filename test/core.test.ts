// The shared core: decide() writes the audit event before it returns (write-ahead), refuses when
// the audit log cannot be written (fail closed), swaps policy snapshots atomically on reload.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { setSummaryMasker } from '../src/core/summary.js';
import { verifyAudit } from '../src/core/audit-verify.js';
import { initFacts } from '../src/policy/actions.js';
import { openStore } from '../src/store/index.js';
import type { PolicyRequest } from '../src/policy/types.js';

const agent = { subject: 'demo-agent', groups: ['agents'] };
const pg = (sql: string): PolicyRequest => ({ protocol: 'postgres', identity: agent, target: 'shop', sql });
let root: string;
const logs: string[] = [];
const log = createLogger('debug', (l) => logs.push(l));

async function openCore(name: string, extra: Partial<Parameters<typeof Core.open>[0]> = {}) {
  const dataDir = mkdtempSync(join(root, name + '-'));
  const policiesDir = join(dataDir, 'policies');
  cpSync('examples/policies', policiesDir, { recursive: true });
  const store = await openStore(dataDir);
  const core = await Core.open({ dataDir, policiesDir, audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 100 }, store, log, ...extra });
  return { core, dataDir, policiesDir, store };
}

before(async () => {
  await initFacts();
  root = mkdtempSync(join(tmpdir(), 'pc-core-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

describe('core.decide', () => {
  test('the audit event is on disk, fsynced, when decide() returns', async () => {
    const { core, dataDir, store } = await openCore('wal');
    const s = await core.openSession({ protocol: 'postgres', target: 'shop', identity: agent, remote: '127.0.0.1:5555' });
    const seen: number[] = [];
    core.events.on('request.decided', (e) => seen.push(e.seq));
    const { decision, seq } = await core.decide(s.id, pg('DELETE FROM customers'));
    assert.equal(decision.effect, 'deny');
    assert.ok(seq !== null);
    assert.ok(core.audit.stats.syncedSeq >= seq, 'a denial waits for fsync');
    const lines = readFileSync(join(dataDir, 'audit', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const ev = lines.find((l) => l.seq === seq);
    assert.equal(ev.type, 'request');
    assert.equal(ev.session, s.id);
    assert.match(ev.decision.rule, /\/policies\/postgres\.yaml:no-unbounded-writes$/);
    assert.equal(ev.request.sql, 'DELETE FROM customers');
    assert.match(ev.data.policy, /^[0-9a-f]{16}$/);
    assert.deepEqual(seen, [seq]);
    await core.closeSession(s.id);
    assert.ok((await store.sessions.get(s.id))?.closedAt);
    await core.close();
    await store.close();
    const v = await verifyAudit(dataDir);
    assert.equal(v.ok, true, JSON.stringify(v));
  });

  test('reads are not forced to fsync one by one under audit.sync=writes, writes are', async () => {
    const { core, store } = await openCore('sync');
    const before = core.audit.stats.fsyncs;
    for (let i = 0; i < 20; i++) await core.decide(null, pg(`SELECT * FROM orders WHERE id = ${i}`));
    const readFsyncs = core.audit.stats.fsyncs - before;
    assert.ok(readFsyncs < 5, `20 reads cost ${readFsyncs} fsyncs`);
    const b2 = core.audit.stats.fsyncs;
    const { seq } = await core.decide(null, pg('UPDATE orders SET status = $$x$$ WHERE id = 1'));
    assert.ok(core.audit.stats.fsyncs > b2 && seq !== null && core.audit.stats.syncedSeq >= seq);
    await core.close();
    await store.close();
  });

  test('fail closed: when the audit write fails the request is refused', async () => {
    let fail = false;
    const { core, store } = await openCore('fail', {
      auditIo: {
        async write(fh, data) {
          if (fail) throw new Error('EIO: simulated disk failure');
          await fh.write(data, 0, data.length);
        },
      },
    });
    assert.equal((await core.decide(null, pg('SELECT 1'))).decision.effect, 'allow');
    fail = true;
    const r = await core.decide(null, pg('SELECT 1'));
    assert.equal(r.decision.effect, 'deny');
    assert.equal(r.decision.rule, 'audit-unavailable');
    assert.match(r.decision.reason, /audit log cannot be written/);
    assert.equal(r.seq, null);
    fail = false;
    const again = await core.decide(null, pg('SELECT 1'));
    assert.equal(again.decision.effect, 'deny', 'the log stays refused until reopened');
    assert.ok(logs.some((l) => /audit write failed: refusing the request/.test(l)));
    await core.close().catch(() => undefined);
    await store.close();
  });

  test('the audit summary passes through the masking hook', async () => {
    const { core, dataDir, store } = await openCore('mask');
    setSummaryMasker((s) => s.replace(/4111 1111 1111 1111/g, '**** **** **** 1111'));
    try {
      await core.decide(null, pg("SELECT * FROM customers WHERE card_number = '4111 1111 1111 1111'"));
    } finally {
      setSummaryMasker((s) => s);
    }
    await core.close();
    await store.close();
    const text = readFileSync(join(dataDir, 'audit', 'audit.jsonl'), 'utf8');
    assert.doesNotMatch(text, /4111 1111 1111 1111/);
    assert.match(text, /\*\*\*\* \*\*\*\* \*\*\*\* 1111/);
  });
});

describe('policy reload', () => {
  test('a good policy swaps in; a bad one keeps the old snapshot and says why', async () => {
    const { core, policiesDir, store } = await openCore('reload');
    const v1 = core.policy.version;
    const old = core.policy;
    assert.equal((await core.decide(null, pg('LISTEN x'))).decision.effect, 'deny');
    writeFileSync(join(policiesDir, 'zz-listen.yaml'), 'scope: { groups: [agents] }\nrules:\n  - id: listen\n    effect: allow\n    sql: { action: listen }\n');
    const ok = core.reloadPolicies();
    assert.equal(ok.ok, true);
    assert.notEqual(core.policy.version, v1);
    assert.equal((await core.decide(null, pg('LISTEN x'))).decision.effect, 'allow');
    assert.equal(old.rules.length + 1, core.policy.rules.length, 'the old snapshot is unchanged');
    const good = core.policy;
    writeFileSync(join(policiesDir, 'zz-listen.yaml'), 'rules:\n  - id: listen\n    effect: allwo\n');
    const bad = core.reloadPolicies();
    assert.equal(bad.ok, false);
    assert.ok(!bad.ok && /zz-listen\.yaml:3:\d+: rules\[0\]\.effect/.test(bad.error), JSON.stringify(bad));
    assert.equal(core.policy, good);
    assert.equal((await core.decide(null, pg('LISTEN x'))).decision.effect, 'allow');
    await core.close();
    await store.close();
  });
});
