// The cost of the metrics on the decision path: Core.decide() of a (cached) allowed read, with
// audit.sync 'interval' so that the disk does not hide it, with and without the prom-client
// metrics attached (decision counter + eval histogram + instrumented audit I/O), against the
// baseline without metrics measured in the same run (interleaved rounds, median by decisions/s).
//
//   node dist/bench/metrics.bench.js [--decisions N] [--rounds R]
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { Metrics } from '../src/core/metrics.js';
import { initFacts } from '../src/policy/actions.js';
import { openStore } from '../src/store/index.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? Number.parseInt(process.argv[i + 1] ?? '', 10) : NaN;
  return Number.isFinite(v) ? v : fallback;
}

const N = Math.max(1000, Math.min(200_000, arg('--decisions', 20_000)));
const ROUNDS = Math.max(1, Math.min(9, arg('--rounds', 3)));
const log = createLogger('error', () => undefined);
const request = { protocol: 'postgres' as const, identity: { subject: 'demo-agent', groups: ['agents'] }, target: 'shop', sql: 'SELECT id, name FROM customers WHERE id = 42' };

async function run(withMetrics: boolean, root: string): Promise<number> {
  const dataDir = mkdtempSync(join(root, withMetrics ? 'm-' : 'b-'));
  const policiesDir = join(dataDir, 'policies');
  cpSync('examples/policies', policiesDir, { recursive: true });
  const store = await openStore(dataDir);
  const metrics = withMetrics ? new Metrics() : null;
  const core = await Core.open({ dataDir, policiesDir, audit: { sync: 'interval', intervalMs: 200, checkpointEvery: 1000 }, store, log, ...(metrics ? { auditIo: metrics.auditIo() } : {}) });
  metrics?.attach(core);
  for (let i = 0; i < 200; i++) await core.decide(null, request); // warm-up (caches, JIT)
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await core.decide(null, request);
  const perSec = (N / (performance.now() - t0)) * 1000;
  await core.close();
  await store.close();
  return perSec;
}

async function main(): Promise<void> {
  await initFacts();
  const root = mkdtempSync(join(tmpdir(), 'pc-bench-metrics-'));
  try {
    const base: number[] = [];
    const with_: number[] = [];
    // Alternate which runs first, so that neither side always gets the warmer process.
    for (let r = 0; r < ROUNDS; r++) {
      if (r % 2 === 0) {
        base.push(await run(false, root));
        with_.push(await run(true, root));
      } else {
        with_.push(await run(true, root));
        base.push(await run(false, root));
      }
    }
    const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
    const b = med(base);
    const m = med(with_);
    process.stdout.write(`decisions: ${N} per run, ${ROUNDS} rounds (median)\n`);
    process.stdout.write(`  baseline (no metrics)   ${b.toFixed(0).padStart(8)} decisions/s\n`);
    process.stdout.write(`  metrics attached        ${m.toFixed(0).padStart(8)} decisions/s   ratio ${(m / b).toFixed(3)}\n`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

void main();
