// Recording cost on the data path, and live-view fan-out, against baselines measured in the same run.
//
//   node dist/bench/recordings.bench.js [--mib N] [--rounds R]
//
// Cases (N MiB of terminal output in 4 KiB chunks, default 32; R interleaved rounds, default 3,
// median by MiB/s):
//   baseline write    fs.writeSync of the same bytes (no encoding): the floor for any recorder
//   cast writer       CastWriter.output: UTF-8 decoding, JSON event lines, SHA-256, fsync per MiB
//   baseline parse    JSON.parse of every line of the written file
//   cast reader       parseCast: the same with asciicast validation
//   live view         Core.record().output with one console watching over the control socket
//                     (session.watch): bytes delivered to the client per second
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { CastWriter } from '../recordings/asciicast.js';
import { parseCast } from '../recordings/reader.js';
import { ControlClient } from '../src/control/client.js';
import { startControlServer } from '../src/control/server.js';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { initFacts } from '../src/policy/actions.js';
import { openStore } from '../src/store/index.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const MIB = Math.max(1, Math.min(512, Number(arg('--mib', '32')) || 32));
const ROUNDS = Math.max(1, Math.min(9, Number(arg('--rounds', '3')) || 3));
const CHUNK = 4096;

/** Terminal-like output: ASCII with escapes and some multibyte text, 4 KiB chunks. */
function chunks(): Buffer[] {
  const line = Buffer.from('\x1b[32mdemo-agent@sandbox\x1b[0m:~$ ls -la  total 48 drwxr-xr-x  h\u00e9llo w\u00f6rld \u20ac 42\r\n', 'utf8');
  const big = Buffer.alloc(CHUNK * 64);
  for (let o = 0; o < big.length; o += line.length) line.copy(big, o, 0, Math.min(line.length, big.length - o));
  const out: Buffer[] = [];
  const n = (MIB * 1024 * 1024) / CHUNK;
  // Chunk boundaries fall inside multibyte characters too.
  for (let i = 0; i < n; i++) out.push(big.subarray((i * CHUNK) % (big.length - CHUNK), ((i * CHUNK) % (big.length - CHUNK)) + CHUNK));
  return out;
}

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'pc-recbench-'));
}

type Row = { name: string; mibPerSec: number };

function time(name: string, bytes: number, fn: () => void): Row {
  const t0 = performance.now();
  fn();
  const s = (performance.now() - t0) / 1000;
  return { name, mibPerSec: bytes / 1024 / 1024 / s };
}

async function liveView(data: Buffer[]): Promise<Row> {
  await initFacts();
  const dir = tmp();
  fs.cpSync('examples/policies', path.join(dir, 'policies'), { recursive: true });
  const store = await openStore(dir);
  const log = createLogger('error', () => undefined);
  const core = await Core.open({ dataDir: dir, policiesDir: path.join(dir, 'policies'), audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 1000 }, store, log });
  const server = await startControlServer(core, { socket: path.join(dir, 'c.sock'), log });
  const s = await core.openSession({ protocol: 'ssh', target: 'sandbox', identity: { subject: 'bench', groups: ['agents'] } });
  const rec = core.record(s.id, { width: 80, height: 24 });
  const c = await ControlClient.connect(path.join(dir, 'c.sock'));
  const total = data.reduce((n, b) => n + b.length, 0);
  let got = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  await c.subscribe('session.watch', { id: s.id, replay: false }, (e, d) => {
    if (e !== 'session.output') return;
    got += Buffer.byteLength((d as { data: string }).data);
    if (got >= total - 8) done();
  });
  const t0 = performance.now();
  // Sustained throughput: the session keeps at most 1 MiB ahead of the console (a flood beyond
  // 8 MiB would, by design, end the subscription).
  let sent = 0;
  for (let i = 0; i < data.length; i++) {
    rec.output(data[i]!);
    sent += data[i]!.length;
    for (let spins = 0; sent - got > 1024 * 1024 && spins < 100_000; spins++) await new Promise((r) => setImmediate(r));
  }
  let timer!: NodeJS.Timeout;
  const timedOut = await Promise.race([finished.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), 120_000)))]);
  clearTimeout(timer);
  const s2 = (performance.now() - t0) / 1000;
  if (timedOut) console.log(`(live view: only ${got} of ${total} bytes arrived within 120 s)`);
  c.close();
  await server.close();
  await core.close();
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return { name: 'live view (record + watch)', mibPerSec: got / 1024 / 1024 / s2 };
}

async function round(data: Buffer[]): Promise<Row[]> {
  const bytes = data.reduce((n, b) => n + b.length, 0);
  const dir = tmp();
  const rows: Row[] = [];
  rows.push(
    time('baseline write', bytes, () => {
      const fd = fs.openSync(path.join(dir, 'raw'), 'w');
      for (const b of data) fs.writeSync(fd, b);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    }),
  );
  const castFile = path.join(dir, 'x.cast');
  rows.push(
    time('cast writer', bytes, () => {
      const w = CastWriter.open(castFile, { width: 80, height: 24 });
      for (const b of data) w.output(b);
      w.close();
    }),
  );
  const text = fs.readFileSync(castFile, 'utf8');
  rows.push(
    time('baseline parse (JSON.parse per line)', bytes, () => {
      for (const l of text.split('\n')) if (l) JSON.parse(l);
    }),
  );
  rows.push(time('cast reader (parseCast)', bytes, () => void parseCast(text, castFile)));
  fs.rmSync(dir, { recursive: true, force: true });
  rows.push(await liveView(data));
  return rows;
}

async function main(): Promise<void> {
  const data = chunks();
  console.log(`recordings bench: ${MIB} MiB of terminal output in ${CHUNK}-byte chunks, ${ROUNDS} rounds (median), node ${process.version}`);
  const all: Row[][] = [];
  for (let r = 0; r < ROUNDS; r++) all.push(await round(data));
  const names = all[0]!.map((r) => r.name);
  const med = names.map((n, i) => {
    const v = all.map((rows) => rows[i]!.mibPerSec).sort((a, b) => a - b);
    return { name: n, mibPerSec: v[Math.floor(v.length / 2)]! };
  });
  const w = Math.max(...names.map((n) => n.length));
  console.log(`${'case'.padEnd(w)}  ${'MiB/s'.padStart(9)}  vs baseline`);
  for (const r of med) {
    const base = r.name.includes('parse') || r.name.includes('reader') ? med[2]! : med[0]!;
    console.log(`${r.name.padEnd(w)}  ${r.mibPerSec.toFixed(1).padStart(9)}  ${r === base ? '(baseline)' : `${(r.mibPerSec / base.mibPerSec).toFixed(2)}x ${base.name.split(' (')[0]}`}`);
  }
}

await main();
