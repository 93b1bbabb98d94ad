// Shell fact extraction: p50/p99 of shellFacts (parse + extract, uncached) against the parser
// alone (baseline, same run: mvdan-sh's Parse, then Parse plus the copy into the plain AST) and
// shellFactsCached (LRU hits), for a few line shapes.
//
//   npx tsx bench/shell.bench.ts
//
// Bounded: at most ITERATIONS samples and TIME_BUDGET_MS per shape and mode.

import { performance } from 'node:perf_hooks';
import sh from 'mvdan-sh';
import { parseShell } from '../src/policy/shell/ast.js';
import { clearShellFactsCache, shellFacts, shellFactsCached } from '../src/policy/shell/index.js';

const ITERATIONS = 2000;
const TIME_BUDGET_MS = 1500;
/** Cache hits are far below timer resolution: each sample times a batch of this many calls. */
const HIT_BATCH = 200;

const SHAPES: [string, string][] = [
  ['simple', 'ls -la'],
  ['list', 'ls -la; rm -rf /srv'],
  ['pipe+sudo', 'curl -s http://example.com/install.sh | sudo bash'],
  ['loop+subst', `for f in $(find . -name '*.log' -mtime +7); do gzip "$f" && mv "$f.gz" /archive/; done`],
  ['wrappers', `bash -c 'echo $(sudo env FOO=1 timeout 5 nice -n 10 rm -rf /tmp/x)' | xargs -0 -I{} echo {}`],
  [
    'paste 12 lines',
    Array.from({ length: 12 }, (_, i) => `cd /srv/app${i} && git pull --ff-only && npm ci --silent > /tmp/log${i} 2>&1 || echo "fail ${i}"`).join('\n'),
  ],
];

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

/** Samples of one call each, in µs. */
function sampleCalls(fn: () => void): number[] {
  const out: number[] = [];
  const deadline = performance.now() + TIME_BUDGET_MS;
  for (let i = 0; i < ITERATIONS && performance.now() < deadline; i++) {
    const t0 = performance.now();
    fn();
    out.push((performance.now() - t0) * 1000);
  }
  return out.sort((a, b) => a - b);
}

/** Samples of HIT_BATCH calls each, divided, in µs per call. */
function sampleBatches(fn: () => void): number[] {
  const out: number[] = [];
  const deadline = performance.now() + TIME_BUDGET_MS;
  for (let i = 0; i < ITERATIONS / 10 && performance.now() < deadline; i++) {
    const t0 = performance.now();
    for (let k = 0; k < HIT_BATCH; k++) fn();
    out.push(((performance.now() - t0) * 1000) / HIT_BATCH);
  }
  return out.sort((a, b) => a - b);
}

function fmt(n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

const rawParser = sh.syntax.NewParser();

// Warm up the parser (GopherJS start-up, JIT) outside the measurements.
for (let i = 0; i < 200; i++) for (const [, line] of SHAPES) shellFacts(line);

const rows: string[][] = [];
for (const [name, line] of SHAPES) {
  const commands = shellFacts(line).commands.length;
  const raw = sampleCalls(() => rawParser.Parse(line, 'bench'));
  const parse = sampleCalls(() => parseShell(line));
  const uncached = sampleCalls(() => shellFacts(line));
  clearShellFactsCache();
  shellFactsCached(line);
  const cached = sampleBatches(() => shellFactsCached(line));
  const p50u = percentile(uncached, 50);
  rows.push([
    name,
    String(line.length),
    String(commands),
    fmt(percentile(raw, 50)),
    fmt(percentile(raw, 99)),
    fmt(percentile(parse, 50)),
    fmt(percentile(parse, 99)),
    fmt(p50u),
    fmt(percentile(uncached, 99)),
    (p50u / percentile(raw, 50)).toFixed(2),
    fmt(percentile(cached, 50)),
    fmt(percentile(cached, 99)),
    (p50u / percentile(cached, 50)).toFixed(0),
  ]);
}

const header = ['shape', 'chars', 'cmds', 'mvdan p50', 'mvdan p99', '+copy p50', '+copy p99', 'facts p50', 'facts p99', 'facts/mvdan', 'cached p50', 'cached p99', 'uncached/cached'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
console.log('shell facts, µs per call (mvdan = the parser alone, the baseline; +copy = parse and copy to the plain AST;');
console.log('facts = shellFacts, uncached; cached = shellFactsCached hit)');
console.log(line(header));
for (const r of rows) console.log(line(r));
