// Issue 10: graceful shutdown of a serving bastion (SIGTERM) with real psql sessions through the
// PostgreSQL proxy to a real PostgreSQL: listeners stop accepting, a running statement finishes
// within shutdown.grace, a statement longer than the grace is cut at the grace, a held request is
// refused (its approval expires "the bastion is stopping") and never reaches the database, the
// process exits 0 and `audit verify` passes.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withPostgres } from './harness/pg.js';
import { freePort } from './harness/ports.js';

const MAIN = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');
const db = withPostgres();

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function psql(port: number, token: string, args: string[]): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn('psql', ['-X', '-A', '-t', '-h', '127.0.0.1', '-p', String(port), '-U', 'demo-agent', '-d', 'shop', ...args], {
      env: { PATH: process.env.PATH ?? '', PGPASSWORD: token, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '10' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('graceful shutdown (SIGTERM)', () => {
  test('running statements finish within the grace, held requests are refused, exit 0, audit intact', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-ops-stop-'));
    let child: ChildProcess | null = null;
    try {
      const policies = join(dir, 'policies');
      cpSync('examples/policies', policies, { recursive: true });
      const [pgPort, httpPort] = [await freePort(), await freePort()];
      const dataDir = join(dir, 'data');
      const configFile = join(dir, 'portcullis.yaml');
      writeFileSync(
        configFile,
        [
          `data_dir: ${dataDir}`,
          `policies: ${policies}`,
          'listen:',
          `  postgres: 127.0.0.1:${pgPort}`,
          `  http: 127.0.0.1:${httpPort}`,
          'postgres:',
          '  allow_plaintext: true',
          'shutdown:',
          '  grace: 3s',
          'log:',
          '  level: debug',
          'targets:',
          '  shop:',
          '    protocol: postgres',
          `    host: ${db.host}`,
          `    port: ${db.port}`,
          '    database: shop',
          `    user: ${db.user}`,
          '    password: env:SHOP_PW',
          '',
        ].join('\n'),
      );
      child = spawn(process.execPath, [MAIN, 'serve', '--config', configFile], { env: { PATH: process.env.PATH, SHOP_PW: db.password, PORTCULLIS_LOG_FORMAT: 'json' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<number | null>((resolve) => child!.on('exit', (c) => resolve(c)));
      for (let i = 0; i < 600 && !out.includes('portcullis ready'); i++) await sleep(100);
      assert.match(out, /portcullis ready/, err);
      const tok = cli(['token', 'create', '--subject', 'demo-agent', '--groups', 'agents', '--data-dir', dataDir, '--json']);
      assert.equal(tok.status, 0, tok.stderr);
      const token = (JSON.parse(tok.stdout) as { token: string }).token;

      const warm = await psql(pgPort, token, ['-c', 'SELECT count(*) FROM customers']);
      assert.equal(warm.stdout.trim(), '1000', warm.stderr);
      // Metrics from real traffic: masked result values, bytes both ways, sessions.
      const masked = await psql(pgPort, token, ['-c', 'SELECT email, card_number FROM customers ORDER BY id LIMIT 5']);
      assert.equal(masked.stdout.trim().split('\n').length, 5, masked.stderr);
      let metrics = '';
      const value = (re: RegExp) => Number(re.exec(metrics)?.[1] ?? NaN);
      // psql has exited; its session closes (audited) a moment later.
      for (let i = 0; i < 50; i++) {
        metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
        if (value(/^portcullis_sessions_open\{protocol="postgres"\} (\d+)$/m) === 0) break;
        await sleep(100);
      }
      assert.ok(value(/^portcullis_masked_values_total\{kind="column"\} (\d+)$/m) >= 10, 'email + card of 5 rows masked by column rules');
      assert.ok(value(/^portcullis_proxied_bytes_total\{protocol="postgres",direction="out"\} (\d+)$/m) > 0);
      assert.ok(value(/^portcullis_proxied_bytes_total\{protocol="postgres",direction="in"\} (\d+)$/m) > 0);
      assert.equal(value(/^portcullis_sessions_total\{protocol="postgres"\} (\d+)$/m), 2);
      assert.equal(value(/^portcullis_sessions_open\{protocol="postgres"\} (\d+)$/m), 0);

      // A: finishes within the grace; its next statement finds the session closed (57P01).
      const a = psql(pgPort, token, ['-c', "SELECT pg_sleep(1.5), 'finished-a'", '-c', "SELECT 'second-a'"]);
      // B: longer than the grace: cut at the grace.
      const b = psql(pgPort, token, ['-c', "SELECT pg_sleep(30), 'finished-b'"]);
      // C: held for an approval: refused at shutdown, never executed.
      const c = psql(pgPort, token, ['-c', 'DELETE FROM customers WHERE id = 1000']);
      let pending: { id: string }[] = [];
      for (let i = 0; i < 100 && pending.length === 0; i++) {
        await sleep(100);
        const l = cli(['approvals', '--json', '--data-dir', dataDir]);
        if (l.status === 0) pending = JSON.parse(l.stdout) as { id: string }[];
      }
      assert.equal(pending.length, 1, 'C is held');
      await sleep(200);

      const t0 = Date.now();
      child.kill('SIGTERM');
      // Stop accepting: a new connection is refused while A still runs.
      await sleep(150);
      const refused = await new Promise<boolean>((resolve) => {
        const s = connect(pgPort, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          resolve(false);
        });
        s.once('error', () => resolve(true));
      });
      assert.equal(refused, true, 'the listener stopped accepting');

      const [ra, rb, rc] = await Promise.all([a, b, c]);
      const code = await exited;
      const stopMs = Date.now() - t0;
      assert.equal(code, 0, err);
      assert.match(ra.stdout, /finished-a/, `A finished its running statement: ${ra.stdout} ${ra.stderr}`);
      assert.doesNotMatch(ra.stdout, /second-a/);
      assert.match(ra.stderr, /shutting down|terminat|closed the connection/i);
      assert.doesNotMatch(rb.stdout, /finished-b/, 'B was cut at the grace');
      assert.notEqual(rb.code, 0);
      assert.ok(stopMs < 15_000, `stopped within grace + margin (${stopMs} ms)`);
      assert.notEqual(rc.code, 0);
      assert.match(rc.stderr, /bastion is stopping|expired/i, `C ${rc.ms} ms: ${rc.stderr}\nA ${ra.ms} ms: ${ra.stdout} ${ra.stderr}\nB ${rb.ms} ms ${rb.stderr}\n--- bastion log:\n${err}`);
      const still = await db.connect();
      const row = await still.query('SELECT count(*)::int AS n FROM customers WHERE id = 1000');
      assert.equal(row.rows[0].n, 1, 'the held DELETE never ran');

      const v = cli(['audit', 'verify', '--data-dir', dataDir]);
      assert.equal(v.status, 0, v.stdout + v.stderr);
      const events = readFileSync(join(dataDir, 'audit', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; data?: Record<string, unknown> });
      const expired = events.find((e) => e.type === 'approval' && e.data?.state === 'expired');
      assert.equal(expired?.data?.reason, 'the bastion is stopping');
      assert.equal(events.filter((e) => e.type === 'session.close').length, events.filter((e) => e.type === 'session.open').length, 'every session closed in the audit');
      assert.equal(events.at(-1)?.type, 'checkpoint', 'closing checkpoint written');
      t.diagnostic(`SIGTERM → exit in ${stopMs} ms (grace 3 s); A ${ra.ms} ms, B ${rb.ms} ms`);
    } finally {
      if (child && child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
