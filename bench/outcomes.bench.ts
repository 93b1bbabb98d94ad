// What agent-native outcomes cost on the hot path: Core.decide (engine + write-ahead audit) for a
// repeated read in a live session with the reference policy (baseline, measured in the same run),
// then with a shadow rule file (the engine evaluates twice for that protocol) and with damage
// budgets that apply to the identity (counter lookups + statements_per_minute counting).
// Prints p50/p99 in µs and the ratio to the baseline.
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { initFacts } from '../src/policy/actions.js';
import type { PolicyRequest } from '../src/policy/types.js';
import { openStore } from '../src/store/index.js';

const N = 3000;
const WARM = 500;
const agent = { subject: 'demo-agent', groups: ['agents'] };
const req: PolicyRequest = { protocol: 'postgres', identity: agent, target: 'shop', sql: 'SELECT id, name, email FROM customers WHERE id = 42' };
const root = mkdtempSync(join(tmpdir(), 'pc-bench-outcomes-'));

const SHADOW = 'mode: shadow\nscope: { protocol: postgres }\nrules:\n  - { id: no-customers, effect: deny, sql: { relation: public.customers } }\n';
const BUDGETS = [
  'scope: { protocol: postgres, groups: [agents] }',
  'budgets:',
  '  - { id: deletes, limits: { rows_deleted: 1000, rows_written: 100000 } }',
  '  - { id: rate, per: session, limits: { statements_per_minute: 100000000, bytes_returned: 100000000000 } }',
  'rules:',
  '  - { id: placeholder, effect: deny, when: { subjects: [nobody] } }',
].join('\n');

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function measure(name: string, extra: Record<string, string>): Promise<{ name: string; p50: number; p99: number }> {
  const dir = mkdtempSync(join(root, 'c-'));
  const policiesDir = join(dir, 'policies');
  cpSync('examples/policies', policiesDir, { recursive: true });
  for (const [f, t] of Object.entries(extra)) writeFileSync(join(policiesDir, f), t);
  const store = await openStore(join(dir, 'data'));
  const core = await Core.open({ dataDir: join(dir, 'data'), policiesDir, audit: { sync: 'writes', intervalMs: 200, checkpointEvery: 100_000 }, store, log: createLogger('error', () => undefined) });
  const s = await core.openSession({ protocol: 'postgres', target: 'shop', identity: agent });
  for (let i = 0; i < WARM; i++) await core.decide(s.id, req);
  const times: number[] = [];
  const deadline = Date.now() + 30_000;
  for (let i = 0; i < N && Date.now() < deadline; i++) {
    const t0 = process.hrtime.bigint();
    await core.decide(s.id, req);
    times.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  await core.close();
  await store.close();
  return { name, p50: pct(times, 50), p99: pct(times, 99) };
}

await initFacts();
const rows = [await measure('reference policy (baseline)', {}), await measure('+ a shadow rule file', { 'zz-shadow.yaml': SHADOW }), await measure('+ budgets for the identity', { 'zz-budgets.yaml': BUDGETS })];
rmSync(root, { recursive: true, force: true });
const base = rows[0]!;
console.log('Core.decide latency (µs), repeated read in a live session, %d decisions each after %d warm-up', N, WARM);
console.log('case'.padEnd(32), 'p50'.padStart(8), 'p99'.padStart(8), 'p50 ×'.padStart(8), 'p99 ×'.padStart(8));
for (const r of rows) console.log(r.name.padEnd(32), r.p50.toFixed(1).padStart(8), r.p99.toFixed(1).padStart(8), (r.p50 / base.p50).toFixed(2).padStart(8), (r.p99 / base.p99).toFixed(2).padStart(8));
