// Port forwarding through the bastion with the real OpenSSH client: -L and -R to a loopback echo
// server, decided by policy per host:port (the reference policy plus a test policy that lists the
// echo server's port), on the local sandbox (connected from the bastion) and on a real sshd target
// (connected by the target's sshd). Agent forwarding is refused.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { startSshd, type Sshd } from './harness/sshd.js';
import { startSshBastion, type SshBastion } from './harness/sshbastion.js';
import { freePort } from './harness/ports.js';

let sshd: Sshd;
let b: SshBastion;
let echo: net.Server;
let echoPort: number;
let deniedEcho: net.Server;
let deniedPort: number;
let remotePort: number;
/** A second allowed -R port, for the remote-target test (its own port: no clash with the local -R test). */
let targetRemotePort: number;
const children = new Set<ChildProcess>();

function echoServer(): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((s) => s.pipe(s).on('error', () => undefined));
  return new Promise((res) => server.listen(0, '127.0.0.1', () => res({ server, port: (server.address() as net.AddressInfo).port })));
}

/** Connect to 127.0.0.1:port (retrying while the listener comes up), send `msg`, collect what comes back until close or `expect` bytes. */
async function roundTrip(port: number, msg: string, timeoutMs = 10_000): Promise<string> {
  const t0 = Date.now();
  for (;;) {
    try {
      return await new Promise<string>((res, rej) => {
        const s = net.connect(port, '127.0.0.1');
        let got = '';
        let connected = false;
        const timer = setTimeout(() => {
          s.destroy();
          res(got);
        }, 5000);
        s.on('connect', () => {
          connected = true;
          s.write(msg);
        });
        s.on('data', (d: Buffer) => {
          got += d.toString();
          if (got.length >= msg.length) {
            clearTimeout(timer);
            s.end();
            res(got);
          }
        });
        s.on('close', () => {
          clearTimeout(timer);
          res(got);
        });
        s.on('error', (e) => {
          clearTimeout(timer);
          if (connected) res(got);
          else rej(e);
        });
      });
    } catch (e) {
      if (Date.now() - t0 > timeoutMs) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** A long-running `ssh -N` with forwards; killed in after() at the latest. */
function sshN(login: string, extra: string[]): { child: ChildProcess; exited: Promise<{ code: number | null; stderr: string }> } {
  const child = spawn('ssh', [...b.sshArgs(login, ['-N', '-o', 'ExitOnForwardFailure=yes', ...extra])], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; stderr: string }>((res) =>
    child.on('close', (code) => {
      children.delete(child);
      res({ code, stderr });
    }),
  );
  return { child, exited };
}

before(async () => {
  ({ server: echo, port: echoPort } = await echoServer());
  ({ server: deniedEcho, port: deniedPort } = await echoServer());
  remotePort = await freePort();
  targetRemotePort = await freePort();
  sshd = await startSshd();
  b = await startSshBastion({
    sshd,
    extraPolicy: [
      'version: 1',
      'scope:',
      '  protocol: ssh',
      '  targets: [sandbox, web]',
      '  groups: [agents]',
      'rules:',
      '  - id: test-echo-forward',
      '    effect: allow',
      `    forward: { direction: local, hosts: [127.0.0.1], ports: [${echoPort}] }`,
      '    reason: the test echo server',
      '  - id: test-remote-forward',
      '    effect: allow',
      `    forward: { direction: remote, hosts: [127.0.0.1], ports: [${remotePort}, ${targetRemotePort}] }`,
      '    reason: the test remote forward',
      '',
    ].join('\n'),
  });
});

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await b?.close();
  await sshd?.stop();
  echo?.close();
  deniedEcho?.close();
});

describe('port forwarding decided by policy', () => {
  test('-L to an allowed port on the local sandbox carries data; the forward is an audited session', async () => {
    const lport = await freePort();
    const f = sshN('demo-agent+sandbox', ['-L', `127.0.0.1:${lport}:127.0.0.1:${echoPort}`]);
    assert.equal(await roundTrip(lport, 'ping-local'), 'ping-local');
    f.child.kill('SIGTERM');
    await f.exited;
    const decided = b.audit().filter((e) => e.type === 'request' && (e.request as { forward?: { port?: number } }).forward?.port === echoPort);
    assert.ok(decided.some((e) => (e.decision as { effect: string; rule: string }).effect === 'allow' && /test-extra\.yaml:test-echo-forward/.test((e.decision as { rule: string }).rule)));
    const t0 = Date.now();
    let open: Record<string, unknown> | undefined;
    while (Date.now() - t0 < 5000) {
      open = b.audit().find((e) => e.type === 'session.open' && (e.data as { destination?: string }).destination === `127.0.0.1:${echoPort}`);
      if (open && b.audit().some((e) => e.type === 'session.close' && e.session === open!.session)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(open, 'the forward opened a core session');
    const close = b.audit().find((e) => e.type === 'session.close' && e.session === open.session);
    assert.deepEqual((close?.data as { bytes?: unknown }).bytes, { toTarget: 10, toAgent: 10 });
  });

  test('-L to a port the policy does not list: the channel is refused, nothing connects', async () => {
    let reached = 0;
    deniedEcho.on('connection', () => reached++);
    const lport = await freePort();
    const f = sshN('demo-agent+sandbox', ['-L', `127.0.0.1:${lport}:127.0.0.1:${deniedPort}`]);
    assert.equal(await roundTrip(lport, 'ping'), '');
    f.child.kill('SIGTERM');
    await f.exited;
    assert.equal(reached, 0, 'the denied destination was never connected');
    const d = b.audit().find((e) => e.type === 'request' && (e.request as { forward?: { port?: number } }).forward?.port === deniedPort);
    assert.equal((d?.decision as { effect?: string }).effect, 'deny');
  });

  test('-L on a real sshd target: connected by the target, allowed port only', async () => {
    const lport = await freePort();
    const f = sshN('demo-agent+web', ['-L', `127.0.0.1:${lport}:127.0.0.1:${echoPort}`]);
    assert.equal(await roundTrip(lport, 'ping-remote'), 'ping-remote');
    f.child.kill('SIGTERM');
    await f.exited;
    const d = b.audit().find((e) => e.type === 'request' && e.target === 'web' && (e.request as { forward?: { port?: number } }).forward?.port === echoPort);
    assert.equal((d?.decision as { effect?: string }).effect, 'allow', 'decided for the web target');
  });

  test('-R to an allowed port: the bastion listens and hands connections to the agent', async () => {
    const f = sshN('demo-agent+sandbox', ['-R', `127.0.0.1:${remotePort}:127.0.0.1:${echoPort}`]);
    assert.equal(await roundTrip(remotePort, 'ping-reverse'), 'ping-reverse');
    f.child.kill('SIGTERM');
    await f.exited;
  });

  test('-R on a real sshd target: the target\'s sshd listens, each connection reaches the agent and is audited; cancelled with the agent', async () => {
    const f = sshN('demo-agent+web', ['-R', `127.0.0.1:${targetRemotePort}:127.0.0.1:${echoPort}`]);
    // the target's sshd (same machine, loopback) binds targetRemotePort; two connections through it
    assert.equal(await roundTrip(targetRemotePort, 'ping-target-1'), 'ping-target-1');
    assert.equal(await roundTrip(targetRemotePort, 'ping-target-2'), 'ping-target-2');
    const d = b.audit().find((e) => e.type === 'request' && e.target === 'web' && (e.request as { forward?: { direction?: string; port?: number } }).forward?.direction === 'remote');
    assert.equal((d?.decision as { effect?: string }).effect, 'allow', 'decided for the web target');
    const conns = () => b.audit().filter((e) => e.type === 'session.open' && e.target === 'web' && (e.data as { channel?: string }).channel === 'forwarded-tcpip');
    const closed = (s: unknown) => b.audit().find((e) => e.type === 'session.close' && e.session === s);
    const t0 = Date.now();
    while (Date.now() - t0 < 5000 && !(conns().length === 2 && conns().every((o) => closed(o.session)))) await new Promise((r) => setTimeout(r, 50));
    assert.equal(conns().length, 2, 'each accepted connection is a core session');
    for (const o of conns()) {
      assert.equal((o.data as { bind?: string }).bind, `127.0.0.1:${targetRemotePort}`);
      assert.deepEqual((closed(o.session)?.data as { bytes?: unknown }).bytes, { toTarget: 13, toAgent: 13 });
    }
    f.child.kill('SIGTERM');
    await f.exited;
    // the agent is gone: the target's listener is cancelled (unforwardIn / connection end)
    const t1 = Date.now();
    let refused = false;
    while (!refused && Date.now() - t1 < 5000) {
      refused = await roundTrip(targetRemotePort, 'x', 0).then(() => false, () => true);
      if (!refused) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(refused, 'nothing listens on the target after the agent left');
    const fwd = b.audit().find((e) => e.type === 'session.open' && e.target === 'web' && (e.data as { channel?: string }).channel === 'tcpip-forward');
    assert.ok(fwd, 'the listener itself is a core session');
  });

  test('-R to a port the policy does not list is refused (ExitOnForwardFailure)', async () => {
    const port = await freePort();
    const f = sshN('demo-agent+sandbox', ['-R', `127.0.0.1:${port}:127.0.0.1:${echoPort}`]);
    const r = await f.exited;
    assert.equal(r.code, 255);
    assert.match(r.stderr, /remote port forwarding failed/i);
    await assert.rejects(roundTrip(port, 'x', 300), 'nothing listens on the denied port');
  });

  test('agent forwarding is refused; the session still runs', async () => {
    // a real ssh-agent on the client side, so that -A really asks for forwarding
    const sock = `${b.root}/agent.sock`;
    const agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
    children.add(agent);
    const t0 = Date.now();
    while (!fs.existsSync(sock) && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
    try {
      const r = await b.ssh('demo-agent+sandbox', 'echo "sock=${SSH_AUTH_SOCK:-none}"', { extra: ['-A', '-v'], env: { SSH_AUTH_SOCK: sock } });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), 'sock=none');
      assert.match(r.stderr, /Requesting authentication agent forwarding/);
    } finally {
      agent.kill('SIGTERM');
    }
  });
});
