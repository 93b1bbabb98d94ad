// Issue 10: sd_notify (a real AF_UNIX datagram receiver made with unix-dgram plays systemd's
// NOTIFY_SOCKET), and the serve process's life: READY=1 only once its listeners accept, WATCHDOG=1
// pings, SIGHUP reloads (a bad policy or a bad config keeps the old, names file:line; log level
// live), SIGTERM → STOPPING=1, exit 0 and an intact audit chain.
//
// systemd itself is not PID 1 on this machine (no `systemctl start`, no `systemd-run`): the
// protocol is tested against a receiver socket, exactly what systemd reads.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as unixDgram from 'unix-dgram';
import { createLogger } from '../src/core/log.js';
import { openNotifier, watchdogInterval } from '../src/runtime/sdnotify.js';
import { freePort } from './harness/ports.js';

const MAIN = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');
let root: string;

/** A datagram socket bound at `path` collecting every message, like systemd's notify socket. */
function receiver(path: string): { messages: string[]; next(pred: (m: string) => boolean, ms?: number): Promise<string>; close(): void } {
  const messages: string[] = [];
  const waiters: { pred: (m: string) => boolean; resolve: (m: string) => void }[] = [];
  const sock = unixDgram.createSocket('unix_dgram', (buf) => {
    const m = buf.toString('utf8');
    messages.push(m);
    for (const w of [...waiters]) {
      if (w.pred(m)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  });
  sock.bind(path);
  let seen = 0;
  return {
    messages,
    /** The next message (after those already returned by next) matching pred. */
    next(pred, ms = 20_000) {
      for (; seen < messages.length; seen++) {
        if (pred(messages[seen]!)) return Promise.resolve(messages[seen++]!);
      }
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no notify message matching ${pred.toString()} within ${ms} ms; got ${JSON.stringify(messages)}`)), ms);
        waiters.push({
          pred,
          resolve: (m) => {
            clearTimeout(t);
            seen = messages.length;
            resolve(m);
          },
        });
      });
    },
    close: () => sock.close(),
  };
}

before(() => {
  root = mkdtempSync(join(tmpdir(), 'pc-ops-life-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

describe('sd_notify', () => {
  test('sends READY/STATUS/RELOADING(+MONOTONIC_USEC)/STOPPING and WATCHDOG pings; clears the environment', async () => {
    const path = join(root, 'notify-unit.sock');
    const rx = receiver(path);
    const logs: string[] = [];
    const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: path, WATCHDOG_USEC: '100000', WATCHDOG_PID: String(process.pid), OTHER: 'x' };
    const n = await openNotifier(createLogger('debug', (l) => logs.push(l)), env);
    try {
      assert.equal(n.enabled, true);
      assert.equal(n.watchdogMs, 50);
      assert.deepEqual(env, { OTHER: 'x' }, 'children never inherit NOTIFY_SOCKET / WATCHDOG_*');
      n.ready('serving\npolicy x');
      assert.equal(await rx.next((m) => m.startsWith('READY=1')), 'READY=1\nSTATUS=serving policy x');
      n.startWatchdog();
      await rx.next((m) => m === 'WATCHDOG=1');
      await rx.next((m) => m === 'WATCHDOG=1');
      await rx.next((m) => m === 'WATCHDOG=1');
      n.reloading();
      const r = await rx.next((m) => m.startsWith('RELOADING=1'));
      const usec = BigInt(/MONOTONIC_USEC=(\d+)/.exec(r)![1]!);
      assert.ok(usec > 0n && usec <= process.hrtime.bigint() / 1000n);
      n.stopping('bye');
      assert.equal(await rx.next((m) => m.startsWith('STOPPING=1')), 'STOPPING=1\nSTATUS=bye');
    } finally {
      n.close();
      rx.close();
    }
    const pings = rx.messages.filter((m) => m === 'WATCHDOG=1').length;
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(rx.messages.filter((m) => m === 'WATCHDOG=1').length, pings, 'no ping after close');
  });

  test('without NOTIFY_SOCKET nothing is sent; an abstract socket or a watchdog for another pid is ignored', async () => {
    const logs: string[] = [];
    const log = createLogger('debug', (l) => logs.push(l));
    const none = await openNotifier(log, {});
    assert.equal(none.enabled, false);
    assert.equal(none.send('READY=1'), false);
    const abstract = await openNotifier(log, { NOTIFY_SOCKET: '@/org/freedesktop/systemd1/notify' });
    assert.equal(abstract.enabled, false);
    assert.match(logs.join('\n'), /abstract socket/);
    assert.equal(watchdogInterval({ WATCHDOG_USEC: '30000000' }), 15_000);
    assert.equal(watchdogInterval({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: String(process.pid + 1) }), null);
    assert.equal(watchdogInterval({}), null);
  });
});

interface Serve {
  child: ChildProcess;
  stderr: () => string;
  stdout: () => string;
  exit: Promise<number | null>;
}

function startServe(args: string[], env: NodeJS.ProcessEnv): Serve {
  const child = spawn(process.execPath, [MAIN, 'serve', ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, stderr: () => err, stdout: () => out, exit };
}

async function readyz(port: number): Promise<{ status: number; body: { ready: boolean; policy: string } }> {
  const r = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: r.status, body: (await r.json()) as { ready: boolean; policy: string } };
}

describe('serve lifecycle (Type=notify)', () => {
  test('READY after the listeners accept; SIGHUP: bad policy / bad config keep the old, log level live; SIGTERM: STOPPING, exit 0, audit intact', async (t) => {
    const dir = mkdtempSync(join(root, 'serve-'));
    const policies = join(dir, 'policies');
    cpSync('examples/policies', policies, { recursive: true });
    const port = await freePort();
    const configFile = join(dir, 'portcullis.yaml');
    const config = (level: string) => [`data_dir: ${join(dir, 'data')}`, `policies: ${policies}`, 'listen:', `  http: 127.0.0.1:${port}`, 'log:', `  level: ${level}`, 'shutdown:', '  grace: 2s', ''].join('\n');
    writeFileSync(configFile, config('info'));
    const sockPath = join(dir, 'notify.sock');
    const rx = receiver(sockPath);
    const s = startServe(['--config', configFile], { NOTIFY_SOCKET: sockPath, WATCHDOG_USEC: '400000', PORTCULLIS_LOG_FORMAT: 'json' });
    try {
      const ready = await rx.next((m) => m.startsWith('READY=1'), 60_000);
      assert.match(ready, /STATUS=serving policy [0-9a-f]{16}/);
      // READY=1 came after the listener accepts: it answers at once.
      const r0 = await readyz(port);
      assert.equal(r0.status, 200);
      const version = r0.body.policy;
      await rx.next((m) => m === 'WATCHDOG=1');
      await rx.next((m) => m === 'WATCHDOG=1');

      // A bad policy: RELOADING=1 … READY=1, the old policy keeps deciding, the log names file:line.
      const pgPolicy = join(policies, 'postgres.yaml');
      const good = readFileSync(pgPolicy, 'utf8');
      appendFileSync(pgPolicy, '  - id: broken\n    effect: maybe\n');
      s.child.kill('SIGHUP');
      await rx.next((m) => m.startsWith('RELOADING=1'));
      const after1 = await rx.next((m) => m.startsWith('READY=1'));
      assert.match(after1, /last reload failed: invalid policy/);
      const failLine = s.stderr().split('\n').find((l) => l.includes('policy reload failed'));
      assert.ok(failLine, s.stderr());
      const fail = JSON.parse(failLine) as { level: string; error: string; version: string };
      assert.equal(fail.level, 'error');
      assert.match(fail.error, /postgres\.yaml:\d+/, 'names file:line');
      assert.match(fail.error, /effect/, 'names the field');
      assert.equal(fail.version, version);
      assert.equal((await readyz(port)).body.policy, version, 'still the old policy');
      writeFileSync(pgPolicy, good);

      // A bad config: nothing changes, the error names the config file and line.
      writeFileSync(configFile, config('info') + 'listen_typo: 1\n');
      s.child.kill('SIGHUP');
      const after2 = await rx.next((m) => m.startsWith('READY=1') && m.includes('invalid config'));
      assert.ok(after2);
      assert.match(s.stderr(), /"msg":"reload: the config is invalid[^"]*".*portcullis\.yaml:\d+/);

      // A good config with log level debug and a changed policy: both applied together.
      writeFileSync(configFile, config('debug'));
      writeFileSync(join(policies, 'extra.yaml'), 'rules:\n  - id: extra-read\n    effect: allow\n    when: { protocol: postgres }\n    sql: { action: read }\n');
      s.child.kill('SIGHUP');
      const after3 = await rx.next((m) => m.startsWith('READY=1') && !m.includes('failed'));
      const newVersion = /serving policy ([0-9a-f]{16})/.exec(after3)![1];
      assert.notEqual(newVersion, version);
      assert.equal((await readyz(port)).body.policy, newVersion);
      assert.match(s.stderr(), /"msg":"reloaded".*"logLevel":"debug"/);

      s.child.kill('SIGTERM');
      assert.match(await rx.next((m) => m.startsWith('STOPPING=1')), /STATUS=stopping \(SIGTERM\)/);
      assert.equal(await s.exit, 0, s.stderr());
      const v = spawnSync(process.execPath, [MAIN, 'audit', 'verify', '--data-dir', join(dir, 'data')], { encoding: 'utf8' });
      assert.equal(v.status, 0, v.stdout + v.stderr);
      t.diagnostic(`notify messages: ${rx.messages.length} (${rx.messages.filter((m) => m === 'WATCHDOG=1').length} watchdog pings)`);
    } finally {
      if (s.child.exitCode === null) s.child.kill('SIGKILL');
      rx.close();
    }
  });
});
