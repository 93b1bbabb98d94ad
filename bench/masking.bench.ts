// Masking throughput: the row masker on customer-shaped rows (cells/s) and the stream masker on
// mixed log output (MB/s), each against a plain copy of the same data measured in the same run.
// Run: npx tsx bench/masking.bench.ts [--rows N] [--mib N]

import { performance } from 'node:perf_hooks';
import { Masker } from '../src/masking/index.js';
import type { MaskSpec } from '../src/policy/types.js';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? Number(process.argv[i + 1]) : def;
  return Number.isFinite(v) && v > 0 ? v : def;
}

const ROWS = Math.min(arg('--rows', 100_000), 2_000_000);
const MIB = Math.min(arg('--mib', 64), 1024);
const ROUNDS = 5;

const MASKS: MaskSpec[] = [
  { column: 'public.customers.email', strategy: 'partial', rule: 'bench:mask-customers' },
  { column: 'public.customers.card_number', strategy: 'last4', rule: 'bench:mask-customers' },
  { column: 'public.customers.ssn', strategy: 'redact', rule: 'bench:mask-customers' },
  { detector: 'card', strategy: 'last4', rule: 'bench:mask-cards-everywhere' },
];

// deterministic pseudo-random numbers: an LCG modulo 2^31 in exact 32-bit arithmetic (a plain
// `seed * 1103515245` passes 2^53 and loses its low bits), scaled from the high bits (an LCG's
// low bits have short periods).
let seed = 42;
function rnd(n: number): number {
  seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
  return Math.floor((seed / 0x80000000) * n);
}

function luhnComplete(prefix: string): string {
  for (let d = 0; d < 10; d++) {
    const s = prefix + d;
    let sum = 0;
    for (let i = 0; i < s.length; i++) {
      let x = s.charCodeAt(s.length - 1 - i) - 48;
      if (i % 2 === 1) {
        x *= 2;
        if (x > 9) x -= 9;
      }
      sum += x;
    }
    if (sum % 10 === 0) return s;
  }
  return prefix + '0';
}

function card(): string {
  let p = '4' + String(rnd(10));
  while (p.length < 15) p += String(rnd(10));
  const c = luhnComplete(p);
  return `${c.slice(0, 4)} ${c.slice(4, 8)} ${c.slice(8, 12)} ${c.slice(12)}`;
}

const FIRST = ['Alice', 'Bob', 'Carol', 'Dave', 'Eve', 'Frank', 'Grace', 'Heidi', 'Ivan', 'Judy'];
const LAST = ['Smith', 'Jones', 'Brown', 'Müller', 'García', 'Nguyen', 'Kowalski', 'Rossi'];

function customerRows(n: number): Buffer[][] {
  const rows: Buffer[][] = [];
  for (let i = 0; i < n; i++) {
    const first = FIRST[rnd(FIRST.length)]!;
    const last = LAST[rnd(LAST.length)]!;
    rows.push([
      Buffer.from(String(i + 1)),
      Buffer.from(`${first} ${last}`),
      Buffer.from(`${first.toLowerCase()}.${i}@example.com`),
      Buffer.from(`555-${String(100 + rnd(900))}-${String(1000 + rnd(9000))}`),
      Buffer.from(card()),
      Buffer.from(`${String(100 + rnd(500))}-${String(10 + rnd(89))}-${String(1000 + rnd(9000))}`),
    ]);
  }
  return rows;
}

function logText(mib: number): Buffer {
  const lines: string[] = [];
  let size = 0;
  const target = mib * 1024 * 1024;
  const levels = ['INFO ', 'DEBUG', 'WARN ', 'ERROR'];
  const paths = ['/api/v1/orders', '/api/v1/customers', '/healthz', '/api/v1/payments', '/static/app.js'];
  let i = 0;
  while (size < target) {
    const ts = `2024-05-01T12:${String(rnd(60)).padStart(2, '0')}:${String(rnd(60)).padStart(2, '0')}.${String(rnd(1000)).padStart(3, '0')}Z`;
    let line: string;
    switch (i % 50) {
      case 7:
        line = `${ts} INFO  [billing] charged card ${card()} amount=12.50 currency=EUR`;
        break;
      case 19:
        line = `${ts} INFO  [mailer] sent receipt to ${FIRST[rnd(10)]!.toLowerCase()}${i}@example.org (template=receipt)`;
        break;
      case 31:
        line = `${ts} WARN  [config] loaded DB_PASSWORD=s3cr3t-${i} token=ghp_${'aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5'.slice(0, 36)}`;
        break;
      case 43:
        line = `${ts} \x1b[32mINFO \x1b[0m [http] ${'GET'} /api/v1/customers/${i} 200 ${rnd(90)}ms`;
        break;
      default:
        line = `${ts} ${levels[rnd(4)]} [worker-${rnd(8)}] ${['GET', 'POST'][rnd(2)]} ${paths[rnd(5)]}/${rnd(100000)}?page=${rnd(10)} ${[200, 200, 201, 404, 500][rnd(5)]} ${rnd(300)}ms req=${rnd(1e9).toString(16)} user=user${rnd(1000)} bytes=${rnd(100000)}`;
    }
    lines.push(line);
    size += line.length + 1;
    i++;
  }
  return Buffer.from(lines.join('\n') + '\n', 'utf8');
}

function best(fn: () => void): number {
  let min = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    fn();
    min = Math.min(min, performance.now() - t0);
  }
  return min;
}

function fmt(n: number, digits = 1): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function main(): void {
  const masker = new Masker({ masks: MASKS, hmacKey: 'bench-key-0123456789abcdef' });

  // --- rows
  const rows = customerRows(ROWS);
  const columns = ['id', 'name', 'email', 'phone', 'card_number', 'ssn'].map((c, i) => ({
    table: 'public.customers',
    column: c,
    typeOid: i === 0 ? 23 : 25,
    format: 'text' as const,
  }));
  const rowMasker = masker.rowMasker(columns);
  const cells = ROWS * columns.length;
  let sink = 0;
  const copyMs = best(() => {
    for (const r of rows) {
      const out = r.map((c) => Buffer.from(c));
      sink += out.length;
    }
  });
  const maskMs = best(() => {
    for (const r of rows) sink += rowMasker(r).length;
  });
  const sample = rowMasker(rows[0]!).map((b) => b?.toString() ?? 'NULL');

  // --- stream
  const log = logText(MIB);
  const CHUNK = 64 * 1024;
  let outBytes = 0;
  const streamCopyMs = best(() => {
    for (let o = 0; o < log.length; o += CHUNK) {
      const c = Buffer.from(log.subarray(o, o + CHUNK));
      outBytes += c.length;
    }
  });
  let masked = 0;
  const streamMs = best(() => {
    masked = 0;
    const s = masker.streamMasker({ onOutput: (c) => (masked += c.length) });
    for (let o = 0; o < log.length; o += CHUNK) s.write(log.subarray(o, o + CHUNK));
    s.end();
  });
  // machine-speed reference: one native regex pass over the same data (the digit-run seed the
  // masker itself runs); useful to read the figures on a slow or shared machine
  const chunks: string[] = [];
  for (let o = 0; o < log.length; o += CHUNK) chunks.push(log.toString('latin1', o, o + CHUNK));
  const seed = /\d\d\d(?:[ .()/-]{0,2}\d){6}/g;
  const refMs = best(() => {
    for (const c of chunks) {
      seed.lastIndex = 0;
      while (seed.exec(c) !== null) sink++;
    }
  });
  const small = 1024;
  const smallMs = best(() => {
    const s = masker.streamMasker({ onOutput: (c) => (outBytes += c.length) });
    const n = Math.min(log.length, 8 * 1024 * 1024);
    for (let o = 0; o < n; o += small) s.write(log.subarray(o, o + small));
    s.end();
  });
  const smallMiB = Math.min(log.length, 8 * 1024 * 1024) / (1024 * 1024);

  const mib = log.length / (1024 * 1024);
  const table = [
    ['benchmark', 'baseline (copy)', 'masked', 'ratio masked/copy'],
    [
      `row masker, ${ROWS.toLocaleString('en-US')} customer rows (${cells.toLocaleString('en-US')} cells)`,
      `${fmt(cells / copyMs / 1000, 2)} M cells/s`,
      `${fmt(cells / maskMs / 1000, 2)} M cells/s`,
      `${fmt(maskMs / copyMs, 2)}x time`,
    ],
    [
      `stream masker, ${fmt(mib)} MiB mixed logs, 64 KiB chunks`,
      `${fmt(mib / (streamCopyMs / 1000))} MB/s`,
      `${fmt(mib / (streamMs / 1000))} MB/s`,
      `${fmt(streamMs / streamCopyMs, 2)}x time`,
    ],
    [`stream masker, ${fmt(smallMiB)} MiB, 1 KiB chunks`, '', `${fmt(smallMiB / (smallMs / 1000))} MB/s`, ''],
    [`reference: one regex pass (digit runs), ${fmt(mib)} MiB`, '', `${fmt(mib / (refMs / 1000))} MB/s`, `masker = ${fmt(streamMs / refMs, 2)}x this`],
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  for (const r of table) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join('  '));
  console.log(`sample masked row: ${JSON.stringify(sample)}`);
  console.log(`stream output ${fmt(masked / (1024 * 1024))} MiB for ${fmt(mib)} MiB input (${sink > 0 && outBytes > 0 ? 'ok' : ''})`);
}

main();
