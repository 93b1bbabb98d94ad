// The single binary (issue 10): dist/portcullis, built by ./build.sh, runs alone — copied into an
// empty directory, empty environment, no node_modules — and carries what it needs (the
// PostgreSQL parser's WASM, the example policies, ...). Plus src/runtime/assets.ts outside it.
//
// Which binary checks run (building takes ~15 s, so the tests never build the binary itself):
// - dist/portcullis exists → it is tested (copy alone into a temp dir, --help, --version,
//   policy eval against a copy of examples/policies with no PATH at all).
// - it is missing and PORTCULLIS_TEST_BINARY=1 or CI is set → the test FAILS: run ./build.sh.
// - it is missing otherwise (a developer's `npm test`) → the cheaper half runs instead: the same
//   esbuild bundle the binary is made from (scripts/sea/build.mjs --bundle-only) is run by node
//   from an empty directory with the same checks, and a diagnostic says the binary itself was not
//   tested. Bundling is where most breakage shows up (a new dynamic require, import.meta use,
//   top-level await, an unpatched native module).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './harness/tmp.js';
import { assetDir, assetKeys, assetPath, cacheRoot, emscriptenModuleArg, isSea, loadNative, packageRoot, readAsset } from '../src/runtime/assets.js';
import { PortcullisError } from '../src/policy/types.js';
import { freePort } from './harness/ports.js';
import * as unixDgram from 'unix-dgram';

const root = process.cwd();
const bin = path.join(root, 'dist', 'portcullis');
const required = process.env.PORTCULLIS_TEST_BINARY === '1' || Boolean(process.env.CI);

const REQUESTS = [
  { protocol: 'postgres', identity: { subject: 'demo-agent', groups: ['agents'] }, target: 'shop', sql: 'DELETE FROM customers' },
  { protocol: 'postgres', identity: { subject: 'demo-agent', groups: ['agents'] }, target: 'shop', sql: 'SELECT id, name FROM customers WHERE id = 1' },
  { protocol: 'ssh', identity: { subject: 'demo-agent', groups: ['agents'] }, target: 'sandbox', command: 'ls -la; rm -rf /srv' },
];

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, input?: string): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { cwd, env, input, encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return r;
}

/** --help, --version and policy eval through `launch` (the binary, or node + the bundle). */
function cliChecks(label: string, prepare: (dir: string) => { cmd: string; args: string[] }, note?: string): void {
  test(`${label}: --help and --version from an empty directory with an empty environment`, async (t) => {
    if (note) t.diagnostic(note);
    const tmp = await tempDir('portcullis-bin-');
    try {
      const { cmd, args } = prepare(tmp.path);
      const env = { PATH: '/usr/bin:/bin', PORTCULLIS_CACHE_DIR: path.join(tmp.path, 'cache') };
      const help = run(cmd, [...args, '--help'], tmp.path, env);
      assert.equal(help.status, 0, help.stderr);
      assert.match(help.stdout, /usage: portcullis <command>/);
      assert.match(help.stdout, /policy eval/);
      assert.equal(help.stderr, '', 'nothing on stderr (no SEA or require warnings)');
      const version = run(cmd, [...args, '--version'], tmp.path, env);
      assert.equal(version.status, 0, version.stderr);
      assert.match(version.stdout, /^portcullis \d+\.\d+\.\d+/);
    } finally {
      await tmp.remove();
    }
  });

  test(`${label}: policy eval with the PostgreSQL parser (WASM) and the shell parser, no PATH`, async (t) => {
    if (note) t.diagnostic(note);
    const tmp = await tempDir('portcullis-bin-');
    try {
      const { cmd, args } = prepare(tmp.path);
      fs.cpSync(path.join(root, 'examples', 'policies'), path.join(tmp.path, 'policies'), { recursive: true });
      const emptyBin = path.join(tmp.path, 'no-bin');
      fs.mkdirSync(emptyBin);
      const input = REQUESTS.map((r) => JSON.stringify(r)).join('\n') + '\n';
      const r = run(cmd, [...args, 'policy', 'eval', '--policies', 'policies'], tmp.path, { PATH: emptyBin, PORTCULLIS_CACHE_DIR: path.join(tmp.path, 'cache') }, input);
      const lines = r.stdout.trim().split('\n').filter(Boolean);
      assert.equal(lines.length, 3, `one decision per request; stdout=${r.stdout} stderr=${r.stderr}`);
      const [del, sel, ssh] = lines.map((l) => JSON.parse(l) as { effect: string; rule: string });
      assert.equal(del.effect, 'deny');
      assert.equal(del.rule, 'policies/postgres.yaml:no-unbounded-writes');
      assert.equal(sel.effect, 'allow');
      assert.match(sel.rule, /^policies\/postgres\.yaml:/);
      assert.equal(ssh.effect, 'deny');
      assert.match(ssh.rule, /^policies\/ssh\.yaml:/);
      assert.ok(r.status === 0 || r.status === 1, `exit 0 or 1, not a usage/config/internal error: ${r.status} ${r.stderr}`);
      assert.equal(r.stderr, '', 'nothing on stderr');
    } finally {
      await tmp.remove();
    }
  });
}

/** The newest .ts file under src/ (bounded walk), to say when the binary is older than its sources. */
function newestSource(dir: string, depth = 0): { file: string; mtimeMs: number } {
  let best = { file: '', mtimeMs: 0 };
  if (depth > 16) return best;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    const cand = e.isDirectory() ? newestSource(p, depth + 1) : e.name.endsWith('.ts') ? { file: p, mtimeMs: fs.statSync(p).mtimeMs } : best;
    if (cand.mtimeMs > best.mtimeMs) best = cand;
  }
  return best;
}

describe('single binary dist/portcullis', () => {
  if (fs.existsSync(bin)) {
    const newest = newestSource(path.join(root, 'src'));
    const stale = newest.mtimeMs > fs.statSync(bin).mtimeMs ? `dist/portcullis is older than ${path.relative(root, newest.file)}: it may not contain the current sources (rebuild with ./build.sh)` : undefined;
    cliChecks('binary', (dir) => {
      const copy = path.join(dir, 'portcullis');
      fs.copyFileSync(bin, copy);
      fs.chmodSync(copy, 0o755);
      assert.deepEqual(fs.readdirSync(dir), ['portcullis'], 'the binary is alone in its directory');
      return { cmd: copy, args: [] };
    }, stale);
  } else if (required) {
    test('dist/portcullis exists', () => {
      assert.fail('dist/portcullis is missing: run ./build.sh first (PORTCULLIS_TEST_BINARY=1 or CI is set, so the binary must be tested)');
    });
  } else {
    const note = 'dist/portcullis is missing: the binary itself is NOT tested, only the bundle it is made from; run ./build.sh (PORTCULLIS_TEST_BINARY=1 makes this a failure)';
    cliChecks('bundle (no dist/portcullis: run ./build.sh to test the binary)', (dir) => {
      const work = path.join(dir, 'bundle');
      const b = run(process.execPath, [path.join(root, 'scripts', 'sea', 'build.mjs'), '--bundle-only', '--dev-root', '--work-dir', work], root, process.env);
      assert.equal(b.status, 0, `bundle failed:\n${b.stdout}${b.stderr}`);
      return { cmd: process.execPath, args: [path.join(work, 'portcullis.cjs')] };
    }, note);
  }
});

/** psql as the demo agent against the bastion (plaintext on loopback, as the demo allows). */
function psql(port: number, token: string, sql: string): SpawnSyncReturns<string> {
  return spawnSync('psql', ['-X', '-A', '-t', '-h', '127.0.0.1', '-p', String(port), '-U', 'demo-agent', '-d', 'shop', '-c', sql], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { PATH: '/usr/bin:/bin', PGPASSWORD: token, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '10' },
  });
}

/**
 * The binary copied alone into a temp dir and started on the demo there (env -i PATH, free ports),
 * waited for until it prints "portcullis ready"; its demo.env read.
 */
async function startBinaryDemo(prefix: string, extraEnv: Record<string, string> = {}) {
  const tmp = await tempDir(prefix);
  const copy = path.join(tmp.path, 'portcullis');
  fs.copyFileSync(bin, copy);
  fs.chmodSync(copy, 0o755);
  const env = { PATH: '/usr/bin:/bin', PORTCULLIS_CACHE_DIR: path.join(tmp.path, 'cache'), PORTCULLIS_LOG_FORMAT: 'json', ...extraEnv };
  const [pgPort, httpPort, sshPort] = [await freePort(), await freePort(), await freePort()];
  const t0 = Date.now();
  const child = spawn(copy, ['serve', '--demo', '--data-dir', 'demo', '--listen', `postgres=127.0.0.1:${pgPort}`, '--listen', `http=127.0.0.1:${httpPort}`, '--listen', `ssh=127.0.0.1:${sshPort}`], { cwd: tmp.path, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const io = { out: '', err: '' };
  child.stdout.on('data', (d: Buffer) => (io.out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (io.err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  const stop = async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await tmp.remove();
  };
  try {
    for (let i = 0; i < 1200 && !io.out.includes('portcullis ready') && child.exitCode === null; i++) await sleep(100);
    assert.match(io.out, /portcullis ready/, `stdout:\n${io.out}\nstderr:\n${io.err}`);
  } catch (e) {
    await stop();
    throw e;
  }
  const readyMs = Date.now() - t0;
  const demoEnv = Object.fromEntries(
    fs
      .readFileSync(path.join(tmp.path, 'demo', 'demo.env'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  ) as Record<string, string>;
  return { tmp, copy, env, child, io, exited, stop, readyMs, demoEnv, pgPort, httpPort, sshPort };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('single binary: serve --demo alone in an empty directory (env -i PATH=/usr/bin:/bin)', () => {
  const present = fs.existsSync(bin);
  const skip = present ? false : required ? false : 'dist/portcullis is missing: run ./build.sh (PORTCULLIS_TEST_BINARY=1 makes this a failure)';
  test('demo ready; psql allowed + denied; SIGHUP with a bad policy keeps serving; SIGTERM exits 0; audit verify passes', { skip, timeout: 300_000 }, async (t) => {
    assert.ok(present, 'dist/portcullis is missing: run ./build.sh first');
    // systemd's notify socket, played by a datagram receiver: proves unix-dgram's native addon
    // travels inside the binary and loads from there.
    const notifyDir = await tempDir('portcullis-bin-notify-');
    const notifyPath = path.join(notifyDir.path, 'notify.sock');
    const notes: string[] = [];
    const rx = unixDgram.createSocket('unix_dgram', (m) => notes.push(m.toString('utf8')));
    rx.bind(notifyPath);
    let demo: Awaited<ReturnType<typeof startBinaryDemo>>;
    try {
      demo = await startBinaryDemo('portcullis-bin-demo-', { NOTIFY_SOCKET: notifyPath });
    } catch (e) {
      rx.close();
      await notifyDir.remove();
      throw e;
    }
    const { tmp, copy, env, child, io, exited, readyMs, demoEnv, pgPort, httpPort } = demo;
    try {
      assert.match(io.out, /listening: PostgreSQL on 127\.0\.0\.1:\d+/);
      const token = demoEnv.PORTCULLIS_DEMO_TOKEN!;
      for (let i = 0; i < 50 && !notes.some((n) => n.startsWith('READY=1')); i++) await sleep(100);
      assert.ok(notes.some((n) => n.startsWith('READY=1')), `sd_notify READY=1 from the binary: ${JSON.stringify(notes)}`);
      const ready = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
      assert.equal(ready.status, 200);
      const version = ((await ready.json()) as { policy: string }).policy;

      const allowed = psql(pgPort, token, 'SELECT count(*) FROM customers');
      assert.equal(allowed.status, 0, allowed.stderr);
      assert.equal(allowed.stdout.trim(), '1000');
      const denied = psql(pgPort, token, 'DELETE FROM orders');
      assert.notEqual(denied.status, 0);
      assert.match(denied.stderr, /no-unbounded-writes/);
      const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
      assert.match(metrics, /^portcullis_decisions_total\{protocol="postgres",effect="deny",rule="[^"]*:no-unbounded-writes"\} 1$/m);

      // SIGHUP with a broken policy (the binary's demo policies are a copy under the data dir).
      const policy = path.join(tmp.path, 'demo', 'policies', 'postgres.yaml');
      fs.appendFileSync(policy, '  - id: broken\n    effect: maybe\n');
      child.kill('SIGHUP');
      for (let i = 0; i < 100 && !io.err.includes('policy reload failed'); i++) await sleep(100);
      assert.match(io.err, /"msg":"policy reload failed; keeping the previous policy".*postgres\.yaml:\d+/);
      assert.equal(((await (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).json()) as { policy: string }).policy, version);
      assert.equal(psql(pgPort, token, 'SELECT count(*) FROM customers').stdout.trim(), '1000', 'still serving');
      assert.match(psql(pgPort, token, 'DELETE FROM orders').stderr, /no-unbounded-writes/, 'the old policy still decides');

      const t1 = Date.now();
      child.kill('SIGTERM');
      assert.equal(await exited, 0, io.err);
      const stopMs = Date.now() - t1;
      assert.ok(notes.some((n) => n.startsWith('RELOADING=1')) && notes.some((n) => n.startsWith('STOPPING=1')), JSON.stringify(notes));
      const verify = spawnSync(copy, ['audit', 'verify', '--data-dir', 'demo'], { cwd: tmp.path, env, encoding: 'utf8' });
      assert.equal(verify.status, 0, verify.stdout + verify.stderr);
      t.diagnostic(`serve --demo ready in ${readyMs} ms (initdb + seed included); SIGTERM → exit in ${stopMs} ms`);
    } finally {
      await demo.stop();
      rx.close();
      await notifyDir.remove();
    }
  });
  test('SSH exec through the binary demo: real ssh, allowed `echo hello`, denied `rm -rf x` (126 + reason), a .cast recorded', { skip, timeout: 300_000 }, async () => {
    assert.ok(present, 'dist/portcullis is missing: run ./build.sh first');
    const demo = await startBinaryDemo('portcullis-bin-ssh-');
    const { tmp, io, exited, demoEnv, sshPort, child } = demo;
    try {
      assert.match(io.out, new RegExp(`listening: SSH on 127\\.0\\.0\\.1:${sshPort}`));
      const key = path.resolve(tmp.path, demoEnv.PORTCULLIS_DEMO_SSH_KEY!);
      const ssh = (command: string) =>
        spawnSync('ssh', ['-i', key, '-p', String(sshPort), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=20', 'demo-agent+sandbox@127.0.0.1', command], {
          encoding: 'utf8',
          timeout: 60_000,
          env: { PATH: '/usr/bin:/bin', HOME: tmp.path },
        });
      const allowed = ssh('echo hello');
      assert.equal(allowed.status, 0, allowed.stderr);
      assert.equal(allowed.stdout.trim(), 'hello');
      const denied = ssh('rm -rf x');
      assert.equal(denied.status, 126, denied.stderr);
      assert.match(denied.stderr, /^portcullis: blocked by \S*no-recursive-or-forced-rm: /m);
      assert.equal(denied.stdout, '');
      child.kill('SIGTERM');
      assert.equal(await exited, 0, io.err);
      const casts = fs.readdirSync(path.join(tmp.path, 'demo', 'recordings')).filter((f) => f.endsWith('.cast'));
      assert.ok(casts.length >= 1, `a .cast under demo/recordings: ${casts.join(', ')}`);
      const recorded = casts.map((f) => fs.readFileSync(path.join(tmp.path, 'demo', 'recordings', f), 'utf8'));
      assert.ok(recorded.some((c) => JSON.parse(c.split('\n')[0]!).version === 2 && c.includes('hello')), 'the allowed exec is recorded (asciicast v2 with its output)');
    } finally {
      await demo.stop();
    }
  });
});

describe('src/runtime/assets.ts outside the binary', () => {
  test('keys resolve under the package root; directories and native modules too', () => {
    assert.equal(isSea(), false);
    assert.equal(packageRoot(), root);
    assert.equal(assetDir('examples/policies'), path.join(root, 'examples', 'policies'));
    const keys = assetKeys('examples/policies');
    assert.ok(keys.includes('examples/policies/postgres.yaml'), keys.join(', '));
    assert.ok(keys.every((k) => k.startsWith('examples/policies/')));
    assert.deepEqual(readAsset('examples/policies/postgres.yaml'), fs.readFileSync(path.join(root, 'examples/policies/postgres.yaml')));
    const wasm = assetPath('node_modules/libpg-query/wasm/libpg-query.wasm');
    assert.equal(fs.readFileSync(wasm).subarray(0, 4).toString('hex'), '0061736d', 'a WebAssembly module');
    const arg = emscriptenModuleArg('node_modules/libpg-query/wasm/libpg-query.wasm');
    assert.equal(arg.locateFile?.('libpg-query.wasm', '/elsewhere/'), wasm);
    const pty = loadNative('node_modules/node-pty/build/Release/pty.node') as { fork?: unknown };
    assert.equal(typeof pty.fork, 'function');
    assert.equal(loadNative('node_modules/node-pty/build/Release/pty.node'), pty, 'loaded once');
  });

  test('keys must stay inside the package; missing assets are named', () => {
    for (const bad of ['../etc/passwd', '/etc/passwd', 'examples/../../x', 'a//b', '']) {
      assert.throws(() => assetPath(bad), (e: unknown) => e instanceof PortcullisError && e.code === 'ASSET_KEY_INVALID', bad);
    }
    assert.throws(() => assetPath('examples/policies/nope.yaml'), (e: unknown) => e instanceof PortcullisError && e.code === 'ASSET_NOT_FOUND' && /nope\.yaml/.test(e.message));
    assert.throws(() => assetDir('examples/policies/postgres.yaml'), (e: unknown) => e instanceof PortcullisError && e.code === 'ASSET_NOT_FOUND');
  });

  test('the extraction cache must be private: created 0700, a shared or foreign directory is refused', async () => {
    const tmp = await tempDir('portcullis-cache-');
    const saved = process.env.PORTCULLIS_CACHE_DIR;
    try {
      const mine = path.join(tmp.path, 'new', 'cache');
      process.env.PORTCULLIS_CACHE_DIR = mine;
      assert.equal(cacheRoot(), mine);
      assert.equal(fs.statSync(mine).mode & 0o777, 0o700);
      const shared = path.join(tmp.path, 'shared');
      fs.mkdirSync(shared);
      fs.chmodSync(shared, 0o777);
      process.env.PORTCULLIS_CACHE_DIR = shared;
      assert.throws(() => cacheRoot(), (e: unknown) => e instanceof PortcullisError && e.code === 'ASSET_CACHE_UNSAFE' && /writable by group or others/.test(e.message));
      const link = path.join(tmp.path, 'link');
      fs.symlinkSync(mine, link);
      process.env.PORTCULLIS_CACHE_DIR = link;
      assert.throws(() => cacheRoot(), (e: unknown) => e instanceof PortcullisError && e.code === 'ASSET_CACHE_UNSAFE' && /symbolic link/.test(e.message));
    } finally {
      if (saved === undefined) delete process.env.PORTCULLIS_CACHE_DIR;
      else process.env.PORTCULLIS_CACHE_DIR = saved;
      await tmp.remove();
    }
  });
});
