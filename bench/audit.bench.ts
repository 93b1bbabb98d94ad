// Audit append latency and throughput, against a raw write+fsync baseline measured in the same run.
//
//   npx tsx bench/audit.bench.ts [--events N] [--rounds R] [--dir DIR]
//
// Cases (N events each, default 2,000; every case also stops after 20 s), each run R times
// (default 3) in interleaved rounds; the table shows the median run by events/s:
//   baseline  raw fs.writeSync + fsyncSync / fdatasyncSync of a line of the same size, 1 appender
//   always    sync 'always' (every append waits for fsync), 1 and 32 concurrent appenders
//   writes    sync 'writes' with non-durable events (resolve after write; fsync on a 200 ms timer),
//             1 and 32 appenders; and a mix with 10 % durable events (state changes), 32 appenders
//             and the same with appenders that yield to the event loop after each append (as a
//             socket-driven proxy does), showing the latency of the reads (which must not wait
//             for a running fsync) and of the durable appends apart; 2 such appenders (reads);
//             1 such appender for 1 s (reads across the 200 ms timer fsyncs)
// The directory must be on the disk under test (not tmpfs); default: the OS temp dir.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { AuditLog, type AuditInput, type AuditSyncMode } from '../src/core/audit.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const N = Math.max(100, Math.min(100_000, Number.parseInt(arg('--events', '2000'), 10) || 2000));
const ROOT = arg('--dir', os.tmpdir());
const ROUNDS = Math.max(1, Math.min(9, Number.parseInt(arg('--rounds', '3'), 10) || 3));
const CASE_BUDGET_MS = 20_000;

interface Row {
  name: string;
  events: number;
  p50: number; // µs
  p99: number; // µs
  perSec: number;
  fsyncs: number;
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function row(name: string, lat: number[], elapsedMs: number, fsyncs: number): Row {
  const sorted = [...lat].sort((a, b) => a - b);
  return { name, events: lat.length, p50: pct(sorted, 50) * 1000, p99: pct(sorted, 99) * 1000, perSec: (lat.length / elapsedMs) * 1000, fsyncs };
}

function event(i: number): AuditInput {
  return {
    type: 'request',
    session: `sess-${i % 32}`,
    identity: { subject: 'demo-agent', groups: ['agents'], authMethod: 'api-token' },
    target: 'shop',
    protocol: 'postgres',
    request: { sql: `SELECT id, name, email FROM public.customers WHERE id = ${i}`, statements: 1 },
    decision: { effect: 'allow', rule: 'examples/policies/postgres.yaml:reads', reason: 'read on public' },
  };
}

function tmp(): string {
  return fs.mkdtempSync(path.join(ROOT, 'pc-audit-bench-'));
}

async function lineSize(): Promise<number> {
  const dir = tmp();
  const log = await AuditLog.open(dir, { sync: 'writes' });
  for (let i = 0; i < 20; i++) await log.append(event(1000 + i));
  await log.close();
  const text = fs.readFileSync(path.join(dir, 'audit', 'audit.jsonl'), 'utf8');
  const lines = text.split('\n').filter((l) => l.includes('"type":"request"'));
  fs.rmSync(dir, { recursive: true, force: true });
  return Math.round(lines.reduce((s, l) => s + Buffer.byteLength(l) + 1, 0) / lines.length);
}

function baseline(name: string, size: number, syncFn: (fd: number) => void): Row {
  const dir = tmp();
  const fd = fs.openSync(path.join(dir, 'raw.jsonl'), 'a', 0o640);
  const line = Buffer.from(`${'x'.repeat(size - 1)}\n`);
  const lat: number[] = [];
  const start = performance.now();
  for (let i = 0; i < N && performance.now() - start < CASE_BUDGET_MS; i++) {
    const t = performance.now();
    fs.writeSync(fd, line);
    syncFn(fd);
    lat.push(performance.now() - t);
  }
  const elapsed = performance.now() - start;
  fs.closeSync(fd);
  fs.rmSync(dir, { recursive: true, force: true });
  return row(name, lat, elapsed, lat.length);
}

interface CaseOptions {
  /** Every durableEvery-th event is durable (0: none). */
  durableEvery?: number;
  /** Only the latency of non-durable (reads) or durable appends is reported (events/s counts all). */
  latencyOf?: 'reads' | 'durable';
  /** Run for this long instead of N events. */
  forMs?: number;
  /** Each appender yields to the event loop (setImmediate) after each append. */
  yieldEach?: boolean;
}

async function auditCase(name: string, sync: AuditSyncMode, appenders: number, o: CaseOptions = {}): Promise<Row> {
  const dir = tmp();
  const log = await AuditLog.open(dir, { sync });
  const lat: number[] = [];
  const durableEvery = o.durableEvery ?? 0;
  const limit = o.forMs ? Number.MAX_SAFE_INTEGER : N;
  const budget = o.forMs ?? CASE_BUDGET_MS;
  let next = 0;
  let count = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: appenders }, async () => {
      // Each appender takes the next event number until N are done or the budget is spent.
      for (;;) {
        const i = next++;
        if (i >= limit || performance.now() - start > budget) return;
        const durable = durableEvery > 0 && i % durableEvery === 0;
        const t = performance.now();
        await log.append(event(i), { durable });
        count++;
        if (o.latencyOf === undefined || (o.latencyOf === 'durable') === durable) lat.push(performance.now() - t);
        // Yield to the event loop after each append, as a socket-driven proxy does (its requests
        // arrive as I/O events): otherwise appenders whose appends settle in microtasks starve
        // the fsync completions and the timer of the others.
        if (o.yieldEach) await new Promise((r) => setImmediate(r));
      }
    }),
  );
  const elapsed = performance.now() - start;
  const fsyncs = log.stats.fsyncs;
  await log.close();
  fs.rmSync(dir, { recursive: true, force: true });
  const r = row(name, lat, elapsed, fsyncs);
  r.events = count;
  r.perSec = (count / elapsed) * 1000;
  return r;
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

async function main(): Promise<void> {
  const size = await lineSize();
  console.log(`audit bench: ${N} events per case, ${ROUNDS} interleaved rounds (median by events/s), line ≈ ${size} bytes, dir ${ROOT}, node ${process.version}`);
  const cases: [string, () => Row | Promise<Row>][] = [
    ['baseline raw write+fsync, 1 appender', () => baseline('baseline raw write+fsync, 1 appender', size, (fd) => fs.fsyncSync(fd))],
    ['baseline raw write+fdatasync, 1 appender', () => baseline('baseline raw write+fdatasync, 1 appender', size, (fd) => fs.fdatasyncSync(fd))],
    ['always, 1 appender', () => auditCase('always, 1 appender', 'always', 1)],
    ['always, 32 appenders (group commit)', () => auditCase('always, 32 appenders (group commit)', 'always', 32)],
    ['writes non-durable, 1 appender', () => auditCase('writes non-durable, 1 appender', 'writes', 1)],
    ['writes non-durable, 32 appenders', () => auditCase('writes non-durable, 32 appenders', 'writes', 32)],
    ['writes 10% durable, 32 appenders', () => auditCase('writes 10% durable, 32 appenders', 'writes', 32, { durableEvery: 10 })],
    ['  the same, yielding, latency of the reads', () => auditCase('  the same, yielding, latency of the reads', 'writes', 32, { durableEvery: 10, latencyOf: 'reads', yieldEach: true })],
    ['  the same, yielding, latency of the durable', () => auditCase('  the same, yielding, latency of the durable', 'writes', 32, { durableEvery: 10, latencyOf: 'durable', yieldEach: true })],
    ['writes 10% durable, 2 appenders yielding, reads', () => auditCase('writes 10% durable, 2 appenders yielding, reads', 'writes', 2, { durableEvery: 10, latencyOf: 'reads', yieldEach: true })],
    ['writes non-durable, 1 appender yielding, 1 s', () => auditCase('writes non-durable, 1 appender yielding, 1 s', 'writes', 1, { forMs: 1000, yieldEach: true })],
  ];
  // Rounds are interleaved so that a noisy neighbour on the disk hits every case alike.
  const runs = new Map<string, Row[]>();
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, run] of cases) {
      const list = runs.get(name) ?? [];
      list.push(await run());
      runs.set(name, list);
    }
  }
  const rows = cases.map(([name]) => {
    const list = [...runs.get(name)!].sort((a, b) => a.perSec - b.perSec);
    return list[Math.floor(list.length / 2)]!;
  });

  const base = rows[0]!;
  const header = ['case', 'events', 'p50 µs', 'p99 µs', 'events/s', 'x baseline ev/s', 'fsyncs', 'events/fsync'];
  const table = rows.map((r) => [
    r.name,
    fmt(r.events),
    fmt(r.p50, 1),
    fmt(r.p99, 1),
    fmt(r.perSec),
    fmt(r.perSec / base.perSec, 2),
    fmt(r.fsyncs),
    r.fsyncs > 0 ? fmt(r.events / r.fsyncs, 1) : '-',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const t of table) console.log(line(t));
}

await main();
