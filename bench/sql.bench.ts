// SQL fact extraction latency: `npx tsx bench/sql.bench.ts`.
//
// - sqlFacts (uncached) on several statement shapes, against the bare libpg-query parse of the
//   same text (the baseline: what the extraction adds on top of PostgreSQL's parser);
// - sqlFactsCached for a repeated statement and for the same statement with varying literals;
// - the cache-key normalizers considered: this module's JS lexer vs libpg-query's normalizeSync,
//   fingerprintSync and scanSync (why the JS lexer: see src/policy/sql/lexer.ts).
// Goals (foundation issue): < 100 µs uncached, < 20 µs p99 cached.
// Every measurement is bounded: a fixed number of iterations after warm-up, and at most ~2 s.

import { fingerprintSync, normalizeSync, parseSync, scanSync } from 'libpg-query';
import { clearSqlFactsCache, initSqlParser, sqlFacts, sqlFactsCached } from '../src/policy/sql/index.js';
import { normalizeLiterals } from '../src/policy/sql/lexer.js';

const WARMUP = 3000; // enough for V8 to optimize the hot functions before sampling
const MAX_MS = 2000;

interface Row {
  name: string;
  n: number;
  p50: number;
  p99: number;
  base?: number;
}

const gc = (globalThis as { gc?: () => void }).gc; // present under --expose-gc (npm run bench)

function measure(name: string, iterations: number, fn: (i: number) => unknown, base?: number): Row {
  for (let i = 0; i < WARMUP; i++) fn(i);
  gc?.();
  const samples: number[] = [];
  const deadline = Date.now() + MAX_MS;
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    fn(i);
    samples.push(Number(process.hrtime.bigint() - t0) / 1000);
    if ((i & 255) === 0 && Date.now() > deadline) break;
  }
  samples.sort((a, b) => a - b);
  const pick = (q: number) => samples[Math.min(samples.length - 1, Math.floor(samples.length * q))]!;
  return { name, n: samples.length, p50: pick(0.5), p99: pick(0.99), base };
}

function print(title: string, rows: Row[]): void {
  console.log(`\n${title}`);
  console.log(`${'case'.padEnd(46)} ${'n'.padStart(6)} ${'p50 µs'.padStart(9)} ${'p99 µs'.padStart(9)} ${'p50 / baseline'.padStart(15)}`);
  for (const r of rows) {
    const ratio = r.base ? `${(r.p50 / r.base).toFixed(2)}x` : '';
    console.log(`${r.name.padEnd(46)} ${String(r.n).padStart(6)} ${r.p50.toFixed(1).padStart(9)} ${r.p99.toFixed(1).padStart(9)} ${ratio.padStart(15)}`);
  }
}

await initSqlParser();

const SHAPES: [string, string][] = [
  ['select by key', 'SELECT * FROM customers WHERE id = 42'],
  ['join + filter + order', "SELECT c.id, c.name, o.total FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.email LIKE '%@example.com' AND o.total > 100 ORDER BY o.total DESC LIMIT 50"],
  ['insert', "INSERT INTO orders (customer_id, total, note) VALUES (42, 19.99, 'gift') RETURNING id"],
  ['update with where', "UPDATE customers SET name = 'x', phone = '555' WHERE id = 42"],
  ['CTE delete', 'WITH d AS (DELETE FROM customers WHERE id = 1 RETURNING *) SELECT count(*) FROM d'],
  ['multi-statement tx', "BEGIN; SET LOCAL statement_timeout = '5s'; UPDATE orders SET total = 1 WHERE id = 7; COMMIT"],
  [
    'psql \\d customers (columns)',
    "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef), a.attnotnull FROM pg_catalog.pg_attribute a WHERE a.attrelid = '16385' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
  ],
];

const uncached: Row[] = [];
for (const [name, sql] of SHAPES) {
  const parse = measure(`  parse only: ${name}`, 5000, () => parseSync(sql));
  uncached.push(parse);
  uncached.push(measure(`sqlFacts: ${name}`, 5000, () => sqlFacts(sql), parse.p50));
}
print('uncached sqlFacts vs the bare parse (baseline)', uncached);

clearSqlFactsCache();
const cached: Row[] = [];
const fresh = measure('sqlFacts, uncached (baseline)', 5000, () => sqlFacts('SELECT * FROM customers WHERE id = 42'));
cached.push(fresh);
cached.push(measure('cached: same statement', 20000, () => sqlFactsCached('SELECT * FROM customers WHERE id = 42'), fresh.p50));
cached.push(measure('cached: literal varies (id = i)', 20000, (i) => sqlFactsCached(`SELECT * FROM customers WHERE id = ${i}`), fresh.p50));
cached.push(
  measure('cached: two literals vary, join shape', 20000, (i) => sqlFactsCached(`SELECT c.id, o.total FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.email = 'u${i}@example.com' AND o.total > ${i}.5`), fresh.p50),
);
cached.push(measure('cached: SET (exact-text key), repeated', 20000, () => sqlFactsCached("SET statement_timeout = '5s'"), fresh.p50));
print('sqlFactsCached (one cache entry per shape)', cached);

const norm: Row[] = [];
for (const [name, sql] of [SHAPES[0]!, SHAPES[1]!]) {
  const js = measure(`JS lexer (normalizeLiterals): ${name}`, 20000, () => normalizeLiterals(sql));
  norm.push(js);
  norm.push(measure(`libpg-query normalizeSync: ${name}`, 5000, () => normalizeSync(sql), js.p50));
  norm.push(measure(`libpg-query fingerprintSync: ${name}`, 5000, () => fingerprintSync(sql), js.p50));
  norm.push(measure(`libpg-query scanSync: ${name}`, 3000, () => scanSync(sql), js.p50));
}
print('cache-key normalizers (baseline: the JS lexer)', norm);
