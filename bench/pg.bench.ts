// PostgreSQL proxy throughput: pgbench -S (simple and -M prepared) at 1 and 8 clients against
// the server directly, through pgbouncer (when installed) and through Portcullis with the
// reference policy and the audit log on; plus masking throughput on a wide customers scan.
//
//   npx tsx bench/pg.bench.ts [--seconds S] [--scale N] [--rounds R] [--only portcullis|pgbouncer]
//                             [--modes simple,prepared] [--clients 1,8] [--warmup W]
//
// Every target is first warmed up (W seconds of pgbench per mode at 8 clients, default 2, not
// counted: a bastion runs for days, and a proxy measured while its JIT compiles its hot path —
// up to a seventh of its CPU at 1 client — says little of its steady state; the server's caches
// are warm for every target alike). Then every case runs S seconds (default 5; pgbench -T),
// R rounds (default 1) interleaved, the best TPS kept. p99 latency comes from pgbench's per-transaction log (-l) at 1 client. Ratios are
// against the direct, pgbouncer and node-pipe (a bare Node pass-through in its own process, the
// ceiling of any Node proxy here) figures of the same run. pgbouncer (session pooling) runs
// when /usr/sbin/pgbouncer exists (as the postgres user when this runs as root); otherwise the
// table says why it is skipped. Everything shares the machine: on a small one, pgbench, the
// server and the proxy compete for the same CPUs.

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { freePort } from '../src/demo/ports.js';
import { startLocalPostgres } from '../src/demo/localpg.js';
import { seedShop } from '../src/demo/seed.js';
import { initFacts } from '../src/policy/actions.js';
import { SessionMasks } from '../src/proxy/postgres/maskstate.js';
import { startPostgresProxy } from '../src/proxy/postgres/index.js';
import { B, encodeQuery, decodeCommandComplete } from '../src/proxy/postgres/codec.js';
import { connectUpstream } from '../src/proxy/postgres/upstream.js';
import { openStore } from '../src/store/index.js';
import type { MaskSpec } from '../src/policy/types.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const SECONDS = Math.max(1, Math.min(60, Number.parseInt(arg('--seconds', '5'), 10) || 5));
const SCALE = Math.max(1, Math.min(50, Number.parseInt(arg('--scale', '5'), 10) || 5));
const ROUNDS = Math.max(1, Math.min(5, Number.parseInt(arg('--rounds', '1'), 10) || 1));
const WARMUP = Math.max(0, Math.min(30, Number.parseInt(arg('--warmup', '2'), 10) || 0));
const ONLY = arg('--only', '');
const MODES = arg('--modes', 'simple,prepared').split(',');
const CLIENTS = arg('--clients', '1,8').split(',').map(Number);
const PGBOUNCER = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => fs.existsSync(p));

interface Result {
  tps: number;
  /** Transactions pgbench completed. */
  tx: number;
  /** CPU time of the proxy (this process for Portcullis, the child's for pgbouncer and node-pipe) per transaction, µs: user and system. */
  cpuPerTx?: { user: number; system: number };
  avgMs: number;
  p99Ms: number | null;
}

function runPgbench(args: string[], env: Record<string, string>, logDir: string | null): Promise<Result> {
  return new Promise((resolve, reject) => {
    const full = [...args, ...(logDir ? ['-l', '--log-prefix', path.join(logDir, 'pgbench_log')] : [])];
    const child = spawn('pgbench', full, { env: { PATH: process.env.PATH ?? '', PGSSLMODE: 'disable', ...env }, cwd: logDir ?? os.tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), (SECONDS + 60) * 1000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(out);
      const lat = /latency average = ([\d.]+) ms/.exec(out);
      const txs = /number of transactions actually processed: (\d+)/.exec(out);
      if (code !== 0 || !tps) return reject(new Error(`pgbench ${full.join(' ')} exited ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`));
      let p99: number | null = null;
      if (logDir) {
        const lats: number[] = [];
        for (const f of fs.readdirSync(logDir).filter((x) => x.startsWith('pgbench_log'))) {
          for (const line of fs.readFileSync(path.join(logDir, f), 'utf8').split('\n')) {
            const parts = line.split(' ');
            if (parts.length > 2) lats.push(Number(parts[2]));
          }
          fs.rmSync(path.join(logDir, f));
        }
        lats.sort((a, b) => a - b);
        if (lats.length) p99 = lats[Math.min(lats.length - 1, Math.floor(lats.length * 0.99))]! / 1000;
      }
      resolve({ tps: Number(tps[1]), tx: txs ? Number(txs[1]) : 0, avgMs: lat ? Number(lat[1]) : 0, p99Ms: p99 });
    });
  });
}

async function startPgbouncer(dir: string, pgHost: string, pgPort: number, user: string, password: string): Promise<{ port: number; pid: number | undefined; stop: () => void } | string> {
  if (!PGBOUNCER) return 'pgbouncer is not installed (/usr/sbin/pgbouncer; .ci/run installs it)';
  const port = await freePort();
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const ini = path.join(dir, 'pgbouncer.ini');
  const users = path.join(dir, 'userlist.txt');
  fs.writeFileSync(users, `"${user}" "${password}"\n`);
  fs.writeFileSync(
    ini,
    [
      '[databases]',
      `shop = host=${pgHost} port=${pgPort} dbname=shop user=${user} password=${password}`,
      '[pgbouncer]',
      `listen_addr = 127.0.0.1`,
      `listen_port = ${port}`,
      `unix_socket_dir =`,
      `auth_type = plain`,
      `auth_file = ${users}`,
      'pool_mode = session',
      'max_client_conn = 100',
      'default_pool_size = 20',
      `logfile = ${path.join(dir, 'pgbouncer.log')}`,
      `pidfile = ${path.join(dir, 'pgbouncer.pid')}`,
      '',
    ].join('\n'),
  );
  let argv = [PGBOUNCER, ini];
  if (root) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    for (const f of [dir, ini, users]) fs.chownSync(f, uid, gid);
    argv = ['runuser', '-u', 'postgres', '--', ...argv];
  }
  const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) {
      // The pid of pgbouncer itself (as root, child is runuser): from its pidfile.
      let pid = child.pid;
      try {
        pid = Number.parseInt(fs.readFileSync(path.join(dir, 'pgbouncer.pid'), 'utf8'), 10) || pid;
      } catch {
        /* no pidfile yet: the child's pid */
      }
      return { port, pid, stop: () => child.kill('SIGTERM') };
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  return `pgbouncer did not start (see ${path.join(dir, 'pgbouncer.log')})`;
}

/** User and system CPU time of a process, µs, from /proc (Linux); null where it cannot be read. */
function procCpu(pid: number | undefined): { user: number; system: number } | null {
  if (pid === undefined) return null;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const tick = 1e6 / 100; // USER_HZ is 100 on Linux
    return { user: Number(f[11]) * tick, system: Number(f[12]) * tick };
  } catch {
    return null;
  }
}

/** The bare Node pass-through (bench/pg-passthrough.ts) in its own process: the ceiling of a Node proxy. */
async function startPassthrough(upPort: number): Promise<{ port: number; pid: number | undefined; stop: () => void }> {
  const port = await freePort();
  const script = path.join(path.dirname(new URL(import.meta.url).pathname), `pg-passthrough${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`);
  const args = script.endsWith('.ts') ? ['--import', 'tsx', script] : [script];
  const child = spawn(process.execPath, [...args, String(port), String(upPort)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the pass-through did not start')), 20_000);
    child.stdout.once('data', () => (clearTimeout(t), resolve()));
    child.once('exit', (code) => (clearTimeout(t), reject(new Error(`the pass-through exited ${code}`))));
  });
  return { port, pid: child.pid, stop: () => child.kill('SIGTERM') };
}

/**
 * The scan client in a process of its own (this script with --scan-client), as psql or pgbench
 * would be: timed in this process, the client's frame parsing would share the bastion's thread.
 */
function scanInChild(host: string, port: number, user: string, password: string, sql: string): Promise<{ ms: number; rows: number }> {
  return new Promise((resolve, reject) => {
    const self = fileURLToPath(import.meta.url);
    const args = self.endsWith('.ts') ? ['--import', 'tsx', self] : [self];
    const child = spawn(process.execPath, [...args, '--scan-client', host, String(port), user, sql], { env: { ...process.env, SCAN_PASSWORD: password }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      try {
        if (code !== 0) throw new Error(`the scan client exited ${code}`);
        resolve(JSON.parse(out) as { ms: number; rows: number });
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}

/** Streams a query's rows over a raw connection, counting rows; returns elapsed ms. */
async function scan(host: string, port: number, user: string, password: string, sql: string): Promise<{ ms: number; rows: number }> {
  const c = await connectUpstream({ host, port, database: 'shop', user, password }, []);
  c.socket.resume();
  const t0 = performance.now();
  let rows = 0;
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      c.reader.push(d);
      for (let f = c.reader.next(); f; f = c.reader.next()) {
        if (f.type === B.DataRow) rows++;
        else if (f.type === B.ErrorResponse) reject(new Error('query failed'));
        else if (f.type === B.CommandComplete) void decodeCommandComplete(f.body);
        else if (f.type === B.ReadyForQuery) {
          c.socket.off('data', onData);
          resolve();
        }
      }
    };
    c.socket.on('data', onData);
    c.socket.write(encodeQuery(sql));
  });
  const ms = performance.now() - t0;
  c.socket.destroy();
  return { ms, rows };
}

async function main(): Promise<void> {
  await initFacts();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pc-pgbench-'));
  fs.chmodSync(tmp, 0o755);
  const log = createLogger('error', () => undefined);
  const server = await startLocalPostgres({ dir: path.join(tmp, 'pg') });
  const cleanups: (() => Promise<void> | void)[] = [() => server.stop()];
  try {
    await server.createDatabase('shop');
    await seedShop(server.connectionString('shop'));
    execFileSync('pgbench', ['-i', '-q', '-s', String(SCALE), server.connectionString('shop')], { stdio: 'ignore', env: { PATH: process.env.PATH ?? '' } });

    const dataDir = path.join(tmp, 'data');
    const store = await openStore(dataDir);
    const core = await Core.open({ dataDir, policiesDir: 'examples/policies', audit: { sync: 'writes', intervalMs: 200, checkpointEvery: 1000 }, store, log });
    const { createApiToken, verifyApiToken } = await import('../src/identity/tokens.js');
    const token = (await createApiToken(store, { subject: 'demo-agent', groups: ['agents'] }, Date.now())).token;
    const proxy = await startPostgresProxy(core, {
      port: 0,
      allowPlaintext: true,
      dataDir,
      log,
      authenticate: async (user, password) => {
        const rec = await verifyApiToken(store, password, Date.now());
        if (rec.subject !== user) throw new Error('subject mismatch');
        return { subject: rec.subject, groups: rec.groups, authMethod: 'api-token' };
      },
      targets: (name) => (name === 'shop' ? { host: server.host, port: server.port, database: 'shop', user: server.superuser, password: server.password } : undefined),
    });
    cleanups.unshift(async () => {
      await proxy.close();
      await core.close();
      await store.close();
    });
    const bouncer = await startPgbouncer(path.join(tmp, 'pgbouncer'), server.host, server.port, server.superuser, server.password);
    if (typeof bouncer !== 'string') cleanups.unshift(() => bouncer.stop());
    const passthrough = await startPassthrough(server.port);
    cleanups.unshift(() => passthrough.stop());

    const self = (): { user: number; system: number } => process.cpuUsage();
    const targets: { name: string; port: number; user: string; password: string; cpu?: () => { user: number; system: number } | null }[] = [
      { name: 'direct', port: server.port, user: server.superuser, password: server.password },
      ...(typeof bouncer !== 'string' ? [{ name: 'pgbouncer', port: bouncer.port, user: server.superuser, password: server.password, cpu: () => procCpu(bouncer.pid) }] : []),
      { name: 'node-pipe', port: passthrough.port, user: server.superuser, password: server.password, cpu: () => procCpu(passthrough.pid) },
      { name: 'portcullis', port: proxy.port, user: 'demo-agent', password: token, cpu: self },
    ];
    const logDir = path.join(tmp, 'logs');
    fs.mkdirSync(logDir);
    const results = new Map<string, Result>();
    const selected = targets.filter((t) => ONLY === '' || t.name === ONLY || t.name === 'direct' || t.name === 'node-pipe');
    if (WARMUP > 0) {
      for (const mode of MODES) {
        for (const t of selected) {
          await runPgbench(['-n', '-S', '-M', mode, '-c', '8', '-j', '4', '-T', String(WARMUP), '-h', '127.0.0.1', '-p', String(t.port), '-U', t.user, 'shop'], { PGPASSWORD: t.password }, null);
        }
      }
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of MODES) {
        for (const clients of CLIENTS) {
          for (const t of selected) {
            const key = `${mode}|${clients}|${t.name}`;
            const cpu0 = t.cpu?.() ?? null;
            const r = await runPgbench(
              ['-n', '-S', '-M', mode, '-c', String(clients), '-j', String(Math.min(clients, 4)), '-T', String(SECONDS), '-h', '127.0.0.1', '-p', String(t.port), '-U', t.user, 'shop'],
              { PGPASSWORD: t.password },
              clients === 1 ? logDir : null,
            );
            const cpu1 = t.cpu?.() ?? null;
            if (cpu0 && cpu1 && r.tx > 0) r.cpuPerTx = { user: (cpu1.user - cpu0.user) / r.tx, system: (cpu1.system - cpu0.system) / r.tx };
            const prev = results.get(key);
            if (!prev || r.tps > prev.tps) results.set(key, r);
          }
        }
      }
    }

    const fmt = (n: number, d = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
    process.stdout.write(`pgbench -S, ${SECONDS} s per case, scale ${SCALE}, ${os.cpus().length} CPUs, PostgreSQL ${server.version}\n`);
    if (typeof bouncer === 'string') process.stdout.write(`pgbouncer: skipped — ${bouncer}\n`);
    process.stdout.write(`${'mode'.padEnd(9)}${'clients'.padStart(8)}${'target'.padStart(12)}${'TPS'.padStart(10)}${'avg ms'.padStart(9)}${'p99 ms'.padStart(9)}${'vs direct'.padStart(11)}${'vs pgbouncer'.padStart(14)}${'vs node-pipe'.padStart(14)}\n`);
    for (const mode of MODES) {
      for (const clients of CLIENTS) {
        const d = results.get(`${mode}|${clients}|direct`)!;
        const b = results.get(`${mode}|${clients}|pgbouncer`);
        const np = results.get(`${mode}|${clients}|node-pipe`);
        for (const t of targets) {
          const r = results.get(`${mode}|${clients}|${t.name}`);
          if (!r) continue;
          process.stdout.write(
            `${mode.padEnd(9)}${String(clients).padStart(8)}${t.name.padStart(12)}${fmt(r.tps).padStart(10)}${fmt(r.avgMs, 3).padStart(9)}${(r.p99Ms !== null ? fmt(r.p99Ms, 3) : '-').padStart(9)}${fmt(r.tps / d.tps, 2).padStart(10)}×${(b ? fmt(r.tps / b.tps, 2) + '×' : '-').padStart(14)}${(np ? fmt(r.tps / np.tps, 2) + '×' : '-').padStart(14)}\n`,
          );
        }
        const cpus = targets.flatMap((t) => {
          const c = results.get(`${mode}|${clients}|${t.name}`)?.cpuPerTx;
          return c ? [`${t.name} ${fmt(c.user + c.system, 0)} (${fmt(c.user, 0)} user + ${fmt(c.system, 0)} sys)`] : [];
        });
        if (cpus.length) process.stdout.write(`${''.padEnd(29)}proxy CPU µs per transaction: ${cpus.join(', ')}\n`);
        const p = results.get(`${mode}|${clients}|portcullis`);
        if (clients === 1 && p && p.p99Ms !== null && d.p99Ms !== null) process.stdout.write(`${''.padEnd(29)}added p99 latency through Portcullis: ${fmt(p.p99Ms - d.p99Ms, 3)} ms\n`);
      }
    }

    // Masking throughput: a wide scan of customers (6 columns, 3 of them masked, the card
    // detector on the others) through the proxy, against the same scan direct.
    const reps = 100;
    const sql = `SELECT c.* FROM customers c CROSS JOIN generate_series(1, ${reps}) g`;
    const cells = 1000 * reps * 6;
    // Best of three each, the client in its own process.
    const best = async (host: string, port: number, user: string, password: string): Promise<{ ms: number; rows: number }> => {
      let b: { ms: number; rows: number } | null = null;
      for (let i = 0; i < 3; i++) {
        const r = await scanInChild(host, port, user, password, sql);
        if (r.rows !== 1000 * reps) throw new Error(`the scan returned ${r.rows} rows, not ${1000 * reps}`);
        if (!b || r.ms < b.ms) b = r;
      }
      return b!;
    };
    const direct = await best(server.host, server.port, server.superuser, server.password);
    const via = await best('127.0.0.1', proxy.port, 'demo-agent', token);
    process.stdout.write(`\nwide scan of customers (${fmt(direct.rows)} rows × 6 columns = ${fmt(cells)} cells)\n`);
    process.stdout.write(`  direct          ${fmt(direct.ms)} ms   ${fmt(cells / (direct.ms / 1000))} cells/s\n`);
    process.stdout.write(`  portcullis      ${fmt(via.ms)} ms   ${fmt(cells / (via.ms / 1000))} cells/s   (${fmt(direct.ms / via.ms, 2)}× direct)\n`);
    // The row masker alone, on the same cells, in this process (no network).
    const masks: MaskSpec[] = [
      { column: 'public.customers.email', strategy: 'partial', rule: 'bench' },
      { column: 'public.customers.card_number', strategy: 'last4', rule: 'bench' },
      { column: 'public.customers.ssn', strategy: 'redact', rule: 'bench' },
      { detector: 'card', strategy: 'last4', rule: 'bench' },
    ];
    const sm = new SessionMasks(undefined, 'text');
    sm.add(masks);
    const cols = ['id', 'name', 'email', 'phone', 'card_number', 'ssn'].map((c, i) => ({ table: 'public.customers', column: c, typeOid: i === 0 ? 23 : 25, format: 'text' as const }));
    const rm = sm.rowMasker(cols);
    const sample = (await import('../src/demo/seed.js')).generateCustomers().map((c, i) => [Buffer.from(String(i + 1)), Buffer.from(c.name), Buffer.from(c.email), Buffer.from(c.phone), Buffer.from(c.card_number), Buffer.from(c.ssn)]);
    const t0 = performance.now();
    let n = 0;
    for (let r = 0; r < reps; r++) for (const row of sample) n += rm(row).length;
    const ms = performance.now() - t0;
    process.stdout.write(`  row masker only ${fmt(ms)} ms   ${fmt(n / (ms / 1000))} cells/s (in process)\n`);
  } finally {
    for (const c of cleanups) await Promise.resolve(c()).catch(() => undefined);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--scan-client') {
  const [host, port, user, sql] = process.argv.slice(3);
  scan(host!, Number(port), user!, process.env.SCAN_PASSWORD ?? '', sql!).then(
    (r) => process.stdout.write(JSON.stringify(r)),
    (e: unknown) => {
      process.stderr.write(`scan failed: ${String(e)}\n`);
      process.exitCode = 1;
    },
  );
} else main().catch((e: unknown) => {
  process.stderr.write(`pg bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
