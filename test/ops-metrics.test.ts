// Issue 10: the metrics (prom-client, private registry) fed by a real core, and the health
// listener's /healthz, /readyz, /metrics over real HTTP; the structured logger.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Core } from '../src/core/core.js';
import { createLogger, REDACTED } from '../src/core/log.js';
import { Metrics } from '../src/core/metrics.js';
import { Masker } from '../src/masking/index.js';
import { initFacts } from '../src/policy/actions.js';
import type { PolicyRequest } from '../src/policy/types.js';
import { healthHandler } from '../src/runtime/health.js';
import { Lifecycle } from '../src/runtime/lifecycle.js';
import { openNotifier } from '../src/runtime/sdnotify.js';
import { openStore } from '../src/store/index.js';

const agent = { subject: 'demo-agent', groups: ['agents'] };
const pg = (sql: string): PolicyRequest => ({ protocol: 'postgres', identity: agent, target: 'shop', sql });
const log = createLogger('error', () => undefined);
let root: string;

/** One sample's value from the exposition text (labels in any order), or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const kv of (m[2] ?? '').matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) got[kv[1]!] = kv[2]!;
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

async function openCore(metrics: Metrics) {
  const dataDir = mkdtempSync(join(root, 'core-'));
  const policiesDir = join(dataDir, 'policies');
  cpSync('examples/policies', policiesDir, { recursive: true });
  const store = await openStore(dataDir);
  const core = await Core.open({ dataDir, policiesDir, audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 100 }, store, log, approvalTimeoutMs: 60_000, auditIo: metrics.auditIo() });
  return { core, store, dataDir };
}

before(async () => {
  await initFacts();
  root = mkdtempSync(join(tmpdir(), 'pc-ops-metrics-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

describe('metrics', () => {
  test('sessions, decisions by effect and rule, eval latency, bytes, approvals, audit I/O, masked values', async () => {
    const metrics = new Metrics({ version: '9.9.9' });
    const { core, store } = await openCore(metrics);
    const detach = metrics.attach(core);
    try {
      const s = await core.openSession({ protocol: 'postgres', target: 'shop', identity: agent });
      await core.decide(s.id, pg('SELECT id FROM customers WHERE id = 1'));
      await core.decide(s.id, pg('SELECT id FROM customers WHERE id = 2'));
      await core.decide(s.id, pg('DELETE FROM orders'));
      await core.decide(null, pg('DROP TABLE orders'));
      core.events.emit('session.bytes', { protocol: 'postgres', direction: 'in', bytes: 100 });
      core.events.emit('session.bytes', { protocol: 'postgres', direction: 'out', bytes: 4000 });
      core.events.emit('session.bytes', { protocol: 'postgres', direction: 'out', bytes: 96 });

      // A held request approved by the on-call: its wait time lands in the histogram.
      const review = await core.decide(s.id, pg('DELETE FROM customers WHERE id = 7'));
      assert.equal(review.decision.effect, 'review');
      let held = '';
      const outcome = core.hold(s.id, pg('DELETE FROM customers WHERE id = 7'), review.decision, (id) => (held = id));
      for (let i = 0; i < 100 && !held; i++) await new Promise((r) => setTimeout(r, 10));
      let text = await metrics.text();
      assert.equal(sample(text, 'portcullis_approvals_pending'), 1);
      await core.approvals.decide(held, 'approved', 'demo-oncall', 'ok');
      assert.equal((await outcome).state, 'approved');

      const before = await metrics.text();
      const masker = new Masker({ masks: [], defaultDetectors: true });
      assert.notEqual(masker.maskText('card 4111 1111 1111 1111 and 5500 0000 0000 0004'), 'card 4111 1111 1111 1111 and 5500 0000 0000 0004');
      text = await metrics.text();
      assert.equal(sample(text, 'portcullis_masked_values_total', { kind: 'text' })! - sample(before, 'portcullis_masked_values_total', { kind: 'text' })!, 2, 'two cards masked in text');

      assert.equal(sample(text, 'portcullis_build_info', { version: '9.9.9' }), 1);
      assert.equal(sample(text, 'portcullis_sessions_open', { protocol: 'postgres' }), 1);
      assert.equal(sample(text, 'portcullis_sessions_total', { protocol: 'postgres' }), 1);
      const readRule = (await core.decide(null, pg('SELECT 1'))).decision.rule;
      text = await metrics.text();
      assert.ok(sample(text, 'portcullis_decisions_total', { protocol: 'postgres', effect: 'allow', rule: readRule })! >= 1, text);
      const allows = text.split('\n').filter((l) => l.startsWith('portcullis_decisions_total{') && l.includes('effect="allow"')).reduce((n, l) => n + Number(l.split(' ').pop()), 0);
      assert.equal(allows, 3, 'three allowed reads');
      const denyRule = text.split('\n').find((l) => l.startsWith('portcullis_decisions_total{') && l.includes('effect="deny"') && l.includes('no-unbounded-writes'));
      assert.ok(denyRule?.endsWith(' 1'), `DELETE without WHERE counted under its rule: ${denyRule}`);
      assert.ok(text.includes('effect="review"'), 'review counted');
      assert.equal(sample(text, 'portcullis_policy_eval_seconds_count', { protocol: 'postgres' }), 6);
      assert.ok(sample(text, 'portcullis_policy_eval_seconds_sum', { protocol: 'postgres' })! > 0);
      assert.equal(sample(text, 'portcullis_proxied_bytes_total', { protocol: 'postgres', direction: 'in' }), 100);
      assert.equal(sample(text, 'portcullis_proxied_bytes_total', { protocol: 'postgres', direction: 'out' }), 4096);
      assert.equal(sample(text, 'portcullis_approval_wait_seconds_count', { outcome: 'approved' }), 1);
      assert.equal(sample(text, 'portcullis_approvals_pending'), 0);
      assert.ok(sample(text, 'portcullis_audit_write_seconds_count', { op: 'write' })! >= 1, 'audit writes timed');
      assert.ok(sample(text, 'portcullis_audit_write_seconds_count', { op: 'fsync' })! >= 1, 'audit fsyncs timed (denials are durable)');
      assert.equal(sample(text, 'portcullis_audit_last_seq'), core.audit.lastSeq);
      assert.equal(sample(text, 'portcullis_policy_info', { version: core.policy.version }), 1);
      assert.ok(sample(text, 'process_resident_memory_bytes')! > 0, 'process metrics exported');

      await core.closeSession(s.id);
      core.reloadPolicies();
      text = await metrics.text();
      assert.equal(sample(text, 'portcullis_sessions_open', { protocol: 'postgres' }), 0);
      assert.equal(sample(text, 'portcullis_reloads_total', { result: 'ok' }), 1);
    } finally {
      detach();
      await core.close();
      await store.close();
    }
  });

  test('the registry is private: two instances do not share samples', async () => {
    const a = new Metrics({ processMetrics: false });
    const b = new Metrics({ processMetrics: false });
    a.setReady(true);
    assert.equal(sample(await a.text(), 'portcullis_ready'), 1);
    assert.equal(sample(await b.text(), 'portcullis_ready'), 0);
    assert.equal(sample(await a.text(), 'process_resident_memory_bytes'), undefined);
  });
});

describe('health listener', () => {
  test('/healthz, /readyz (listeners, policy, audit, stopping), /metrics over HTTP', async () => {
    const metrics = new Metrics();
    const { core, store } = await openCore(metrics);
    metrics.attach(core);
    const life = new Lifecycle(log, await openNotifier(log, {}));
    const server: Server = createServer(healthHandler({ core, metrics, lifecycle: life, log }));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      const get = async (p: string) => {
        const r = await fetch(base + p);
        return { status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() };
      };
      assert.equal((await get('/healthz')).status, 200);
      let ready = await get('/readyz');
      assert.equal(ready.status, 503, 'not ready before start');
      assert.equal(JSON.parse(ready.body).checks.state, 'starting');
      life.listenerStarting('postgres');
      life.ready('test');
      ready = await get('/readyz');
      assert.equal(ready.status, 503);
      assert.equal(JSON.parse(ready.body).checks.listeners, 'down: postgres');
      life.listenerUp('postgres');
      ready = await get('/readyz');
      assert.equal(ready.status, 200, ready.body);
      assert.deepEqual(JSON.parse(ready.body).checks, { state: 'ok', listeners: 'ok', policy: 'ok', audit: 'ok' });
      const m = await get('/metrics');
      assert.equal(m.status, 200);
      assert.match(m.type, /^text\/plain; version=0\.0\.4/);
      assert.equal(sample(m.body, 'portcullis_ready'), 1);
      assert.equal((await get('/nope')).status, 404);
      assert.equal((await fetch(base + '/healthz', { method: 'POST' })).status, 405);
      // The audit log fails closed once it is closed: readiness says so.
      await core.close();
      ready = await get('/readyz');
      assert.equal(ready.status, 200, 'a closed log is not a failed one');
      void life.run({ reload: async () => 'x', stop: async () => 0 });
      process.kill(process.pid, 'SIGTERM');
      for (let i = 0; i < 100 && !life.stopping; i++) await new Promise((r) => setTimeout(r, 10));
      ready = await get('/readyz');
      assert.equal(ready.status, 503);
      assert.equal(JSON.parse(ready.body).checks.state, 'stopping');
      assert.equal(sample((await get('/metrics')).body, 'portcullis_ready'), 0);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await store.close();
    }
  });
});

describe('logger', () => {
  test('JSON lines, levels changeable at run time, secret-named fields redacted, strings masked', () => {
    const lines: string[] = [];
    const masker = new Masker({ masks: [], defaultDetectors: true });
    const l = createLogger('info', (x) => lines.push(x), (s) => masker.maskText(s));
    l.debug('hidden');
    l.info('card 4111 1111 1111 1111 seen', { password: 'hunter2', nested: { apiToken: 'abc', ok: 'fine' }, err: new Error('boom 4111111111111111'), n: 3 });
    l.setLevel('debug');
    l.debug('shown');
    assert.equal(lines.length, 2);
    const rec = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.equal(rec.level, 'info');
    assert.doesNotMatch(lines[0]!, /4111 1111 1111 1111|4111111111111111|hunter2|"abc"/);
    assert.equal(rec.password, REDACTED);
    assert.deepEqual(rec.nested, { apiToken: REDACTED, ok: 'fine' });
    assert.equal(rec.n, 3);
    assert.match(String(rec.err), /^boom /);
    assert.equal(JSON.parse(lines[1]!).msg, 'shown');
    const text: string[] = [];
    createLogger('info', (x) => text.push(x), undefined, 'text').warn('disk low', { dir: '/var/lib/portcullis', free: 3 });
    assert.match(text[0]!, /^\d\d:\d\d:\d\d\.\d{3} WARN {2}disk low {2}dir=\/var\/lib\/portcullis free=3$/);
  });
});
