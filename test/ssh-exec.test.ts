// The SSH bastion with real OpenSSH: exec requests through the proxy to the local sandbox and to a
// real sshd (test/harness/sshd.ts) logged in with its own key or with a bastion-issued
// certificate. Every reference-policy shell rule (examples/policies/tests/ssh.yaml) through exec;
// exit status, signals and stderr as OpenSSH passes them; holds; recordings played by the real
// asciinema; masking; logins by key and by certificate; targets that refuse or die.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import { startSshd, type Sshd } from './harness/sshd.js';
import { asciinema, startSshBastion, type RunResult, type SshBastion } from './harness/sshbastion.js';

interface Case {
  name: string;
  command?: string;
  expect: { effect: 'allow' | 'deny' | 'review'; rule?: string };
}
const CASES = (YAML.parse(fs.readFileSync('examples/policies/tests/ssh.yaml', 'utf8')) as { tests: Case[] }).tests.filter((c) => c.command !== undefined);

let sshd: Sshd;
let b: SshBastion;

/** The same command straight to the sshd (the OpenSSH baseline). */
function direct(command: string, input?: string): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn('ssh', ['-T', '-p', String(sshd.port), '-i', sshd.userKeyFile, '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'IdentitiesOnly=yes', '-o', 'LogLevel=ERROR', `${sshd.user}@127.0.0.1`, command]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

/** A client process (never spawnSync: the bastion runs in this process and must keep serving). */
function run(cmd: string, args: string[], input = ''): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

/** Deny every approval as soon as it is created (operator demo-oncall). */
function autoDecide(state: 'approved' | 'denied'): () => void {
  const on = (rec: { id: string }) => void b.core.approvals.decide(rec.id, state, 'demo-oncall', 'test operator').catch(() => undefined);
  b.core.approvals.on('created', on);
  return () => b.core.approvals.off('created', on);
}

before(async () => {
  sshd = await startSshd();
  b = await startSshBastion({ sshd, approvalTimeoutMs: 15_000 });
});

after(async () => {
  await b?.close();
  await sshd?.stop();
});

describe('exec through the bastion', () => {
  test('an allowed command runs on the local sandbox as an unprivileged user, in the sandbox', async () => {
    const r = await b.ssh('demo-agent+sandbox', 'echo hello; id -u; pwd');
    assert.equal(r.code, 0, r.stderr);
    const [hello, uid, cwd] = r.stdout.trim().split('\n');
    assert.equal(hello, 'hello');
    assert.notEqual(uid, '0', 'the sandbox shell must not run as root');
    assert.equal(cwd, path.join(b.dataDir, 'sandbox'));
  });

  test('the default target of the identity is used when the user name names none', async () => {
    const r = await b.ssh('demo-agent', 'echo routed');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'routed\n');
  });

  test('a denied command exits 126 with the reason and the outcome JSON on stderr, and nothing runs', async () => {
    fs.writeFileSync(path.join(b.dataDir, 'sandbox', 'keep'), 'x');
    const r = await b.ssh('demo-agent+sandbox', 'ls; rm -rf keep');
    assert.equal(r.code, 126);
    assert.equal(r.stdout, '', 'ls must not have run either');
    const lines = r.stderr.trim().split('\n');
    assert.match(lines[0]!, /^portcullis: blocked by \S+ssh\.yaml:no-recursive-or-forced-rm: rm with -r\/-f: rm -rf keep \(remove single files by name, without -r or -f\)$/);
    assert.match(lines[1]!, /^portcullis-json: /);
    const o = JSON.parse(lines[1]!.slice('portcullis-json: '.length)) as Record<string, string>;
    assert.equal(o.code, 'policy_denied');
    assert.equal(o.effect, 'deny');
    assert.match(o.rule!, /no-recursive-or-forced-rm$/);
    assert.ok(fs.existsSync(path.join(b.dataDir, 'sandbox', 'keep')), 'the file must still be there');
  });

  test('every reference-policy shell rule, through exec', async () => {
    const stop = autoDecide('denied');
    try {
      for (const c of CASES) {
        const r = await b.ssh('demo-agent+sandbox', c.command!);
        const blocked = /^portcullis: (blocked by|approval denied)/m.test(r.stderr);
        if (c.expect.effect === 'allow') {
          assert.ok(!blocked && r.code !== 126, `${c.name}: expected to run, got ${r.code} ${r.stderr}`);
        } else {
          assert.equal(r.code, 126, `${c.name}: expected 126, got ${r.code} ${r.stderr}`);
          assert.ok(blocked, `${c.name}: ${r.stderr}`);
          if (c.expect.rule) assert.match(r.stderr, new RegExp(`(blocked by |for |:)${c.expect.rule}[: ]`), c.name);
          if (c.expect.effect === 'review') assert.match(r.stderr, /portcullis: held for approval \w+/, c.name);
        }
      }
    } finally {
      stop();
    }
  });

  test('the same rules hold on a remote target (real sshd)', async () => {
    for (const c of CASES.filter((x) => x.expect.effect === 'deny').slice(0, 12)) {
      const r = await b.ssh('demo-agent+web', c.command!);
      assert.equal(r.code, 126, `${c.name}: ${r.stderr}`);
    }
  });

  test('exit status, stdout, stderr and stdin match OpenSSH straight to sshd', async () => {
    for (const cmd of ['echo out; echo err >&2; exit 3', 'cat; exit 0', 'printf "a\\0b"; exit 255', 'kill -TERM $$', 'kill -KILL $$']) {
      const d = await direct(cmd, 'some stdin\n');
      for (const t of ['web', 'web-ca']) {
        const r = await b.ssh(`demo-agent+${t}`, cmd, { input: 'some stdin\n' });
        assert.deepEqual({ code: r.code, stdout: r.stdout, stderr: r.stderr }, { code: d.code, stdout: d.stdout, stderr: d.stderr }, `${t}: ${cmd}`);
      }
    }
  });

  test('a signal from the client reaches the program; the exit signal comes back', async () => {
    // OpenSSH sends no signal requests, so this uses the exit-signal path of the local target
    const r = await b.ssh('demo-agent+sandbox', 'kill -TERM $$');
    const d = await direct('kill -TERM $$');
    assert.equal(r.code, d.code);
  });

  test('bulk stdin passes through intact', async () => {
    const data = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) % 251;
    const r = await b.ssh('demo-agent+web', 'sha256sum', { input: data });
    const want = execFileSync('sha256sum', { input: data }).toString();
    assert.equal(r.stdout, want);
  });

  test('PORTCULLIS_REASON (SendEnv) reaches the audit log with the request', async () => {
    const r = await b.ssh('demo-agent+sandbox', 'echo why', { env: { PORTCULLIS_REASON: 'checking disk usage for ticket 42' }, extra: ['-o', 'SendEnv=PORTCULLIS_REASON'] });
    assert.equal(r.code, 0, r.stderr);
    const ev = b.audit().filter((e) => e.type === 'request' && (e.request as { command?: string }).command === 'echo why');
    assert.equal(ev.length, 1);
    assert.equal((ev[0]!.request as { reason?: string }).reason, 'checking disk usage for ticket 42');
  });

  test('review: held with the approval id on stderr, runs once approved', async () => {
    const stop = autoDecide('approved');
    try {
      const r = await b.ssh('demo-agent+sandbox', 'sudo true');
      assert.match(r.stderr, /^portcullis: held for approval (\w+) \(\S+:sudo-needs-approval\)/m);
      const json = r.stderr.split('\n').find((l) => l.startsWith('portcullis-json: '))!;
      const o = JSON.parse(json.slice(17)) as Record<string, string>;
      assert.equal(o.code, 'approval_required');
      assert.ok(o.approval_id);
      // sudo is not installed in the sandbox: the shell's own error proves the command was run
      assert.match(r.stderr, /sudo: (command )?not found/);
      assert.equal(r.code, 127);
    } finally {
      stop();
    }
  });

  test('a client that disconnects during a hold ends the hold; the approval stays pending for a retry of the same command', async () => {
    const child = spawn('ssh', [...b.sshArgs('demo-agent+sandbox', ['-T']), 'sudo reboot-later']);
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const t0 = Date.now();
    while (!/held for approval (\w+)/.test(err) && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 20));
    const id = /held for approval (\w+)/.exec(err)![1]!;
    child.kill('SIGKILL');
    const t1 = Date.now();
    while (b.core.listSessions().some((x) => x.identity.subject === 'demo-agent') && Date.now() - t1 < 10_000) await new Promise((r) => setTimeout(r, 50));
    assert.equal(b.core.listSessions().filter((x) => x.identity.subject === 'demo-agent').length, 0, 'the session ended with the client');
    // statement-bound approvals: the request is not forgotten — approved later, the agent's retry passes once
    const rec = await b.store.approvals.get(id);
    assert.equal(rec?.state, 'pending');
    await b.core.approvals.decide(id, 'approved', 'demo-oncall', 'go');
    const retry = await b.ssh('demo-agent+sandbox', 'sudo reboot-later');
    assert.doesNotMatch(retry.stderr, /held for approval/, retry.stderr);
    assert.match(retry.stderr, /sudo: (command )?not found/, 'the approved command ran (sudo is not installed in the sandbox)');
  });

  test('a user certificate from a trusted user CA logs in as its principal', async () => {
    const dir = fs.mkdtempSync(path.join(b.root, 'cert-'));
    const key = path.join(dir, 'id');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    execFileSync('ssh-keygen', ['-q', '-s', b.agentCa.file, '-I', 'ci-run-1', '-n', 'demo-agent', '-V', '+5m', key + '.pub']);
    const args = b.sshArgs('demo-agent+sandbox').filter((a, i, all) => a !== b.agentKey.file && all[i + 1] !== b.agentKey.file);
    const r = await run('ssh', ['-T', '-i', key, '-o', `CertificateFile=${key}-cert.pub`, ...args, 'echo by-cert']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'by-cert\n');
    const open = b.audit().filter((e) => e.type === 'session.open' && (e.identity as { authMethod?: string }).authMethod === 'ssh-cert');
    assert.ok(open.length >= 1);
  });

  test('an unknown key is refused (and audited by the identity service)', async () => {
    const dir = fs.mkdtempSync(path.join(b.root, 'k-'));
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'id')]);
    const args = b.sshArgs('demo-agent+sandbox').map((a) => (a === b.agentKey.file ? path.join(dir, 'id') : a));
    const r = await run('ssh', ['-T', ...args, 'echo no']);
    assert.equal(r.status, 255);
    assert.match(r.stderr, /Permission denied \(publickey\)/);
    assert.ok(b.audit().some((e) => e.type === 'identity.rejected' && (e.data as { code?: string }).code === 'key_rejected'));
  });

  test('an unknown target and a target that refuses the connection get a clear message', async () => {
    const u = await b.ssh('demo-agent+nowhere', 'echo x');
    assert.equal(u.code, 1);
    assert.match(u.stderr, /portcullis: unknown SSH target "nowhere"/);
    const d = await b.ssh('demo-agent+dead', 'echo x');
    assert.equal(d.code, 255);
    assert.match(d.stderr, /portcullis: target dead: cannot log in to target dead \(127\.0\.0\.1:\d+\): .*ECONNREFUSED/);
  });

  test('a connection handed over as a stream (injectSocket) is served by the same code', async () => {
    const relay = net.createServer((sock) => b.proxy.injectSocket(sock, '10.9.8.7'));
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
    try {
      const port = (relay.address() as net.AddressInfo).port;
      const args = b.sshArgs('demo-agent+sandbox').map((a) => (a === String(b.port) ? String(port) : a));
      const r = await run('ssh', ['-T', ...args, 'echo injected']);
      assert.equal(r.stdout, 'injected\n', r.stderr);
      assert.ok(b.audit().some((e) => e.type === 'session.open' && (e.data as { remote?: string }).remote === '10.9.8.7'));
    } finally {
      relay.close();
    }
  });

  test('remote port forwarding the policy does not allow is refused (SFTP and forwards: ssh-sftp / ssh-forward tests)', async () => {
    const r = await b.ssh('demo-agent+sandbox', 'echo rfwd', { extra: ['-o', 'ExitOnForwardFailure=yes', '-R', '127.0.0.1:0:127.0.0.1:22'] });
    assert.equal(r.code, 255);
    assert.match(r.stderr, /remote port forwarding failed/i);
  });

  test('ssh -W / -L: forwards are decided by the policy (allowed port works, others refused)', async () => {
    const echo = net.createServer((c) => c.pipe(c));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    const port = (echo.address() as net.AddressInfo).port;
    try {
      // the reference policy allows 127.0.0.1:5432 and :8080 only; this test allows the echo port too
      fs.writeFileSync(
        path.join(b.root, 'policies', 'test-forward.yaml'),
        YAML.stringify({ version: 1, scope: { protocol: 'ssh', targets: ['sandbox', 'web'], groups: ['agents'] }, rules: [{ id: 'echo-forward', effect: 'allow', forward: { direction: 'local', hosts: ['127.0.0.1'], ports: [port] } }] }),
      );
      assert.equal(b.core.reloadPolicies().ok, true);
      for (const t of ['sandbox', 'web']) {
        const ok = await b.ssh(`demo-agent+${t}`, null, { extra: ['-W', `127.0.0.1:${port}`], input: 'through the tunnel\n' });
        assert.equal(ok.stdout, 'through the tunnel\n', `${t}: ${ok.stderr}`);
        const no = await b.ssh(`demo-agent+${t}`, null, { extra: ['-W', '127.0.0.1:22'], input: 'x\n' });
        assert.equal(no.code, 255);
        assert.match(no.stderr, /stdio forwarding failed/);
      }
      const decided = b.audit().filter((e) => e.type === 'request' && (e.request as { forward?: unknown }).forward !== undefined);
      assert.ok(decided.some((e) => (e.decision as { effect: string }).effect === 'allow'));
      assert.ok(decided.some((e) => (e.decision as { effect: string }).effect === 'deny'));
    } finally {
      fs.rmSync(path.join(b.root, 'policies', 'test-forward.yaml'), { force: true });
      b.core.reloadPolicies();
      echo.close();
    }
  });

  test('recordings: one per session, accepted by the real asciinema; a card number never in them', async () => {
    const card = '4111 1111 1111 1111';
    const r = await b.ssh('demo-agent+sandbox', `printf 'card: ${card}\\n'; printf '4111111111111111\\n' >&2`);
    assert.equal(r.code, 0);
    assert.doesNotMatch(r.stdout + r.stderr, /4111 ?1111 ?1111 ?1111/, 'the agent must get the masked form');
    assert.match(r.stdout, /card: /);
    const files = b.recordings();
    assert.ok(files.length >= 1);
    for (const f of files) {
      const text = fs.readFileSync(f, 'utf8');
      assert.doesNotMatch(text, /4111 ?1111 ?1111 ?1111/, f);
      const p = await asciinema(['play', '-s', '100', '-i', '0.05', f]);
      assert.equal(p.code, 0, `${f}: ${p.out}`);
    }
    const mine = files.map((f) => fs.readFileSync(f, 'utf8')).find((t) => t.includes('card: '));
    assert.ok(mine, 'the exec was recorded');
    assert.match(mine, /"m", "allow \S+:commands: printf/);
    // port forwards are sessions too (audited with byte counts), but raw TCP is not a terminal: no .cast
    const forwards = new Set(b.audit().filter((e) => e.type === 'session.open' && /forward|tcpip/.test(String((e.data as { channel?: string }).channel ?? ''))).map((e) => e.session));
    const closes = b.audit().filter((e) => e.type === 'session.close' && !forwards.has(e.session));
    assert.ok(closes.every((e) => typeof ((e.data as { recording?: { sha256?: string } }).recording?.sha256) === 'string'));
  });
});

describe('sessions end cleanly', () => {
  test('the core kills a session: the client sees the reason and the connection closes', async () => {
    const child = spawn('ssh', [...b.sshArgs('demo-agent+sandbox', ['-T']), 'echo started; sleep 30']);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const t0 = Date.now();
    while (!out.includes('started') && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 20));
    const s = b.core.listSessions().find((x) => x.protocol === 'ssh' && x.meta.channel === 'exec');
    assert.ok(s);
    assert.equal(await b.core.killSession(s.id, 'operator test'), true);
    const code = await new Promise<number | null>((res) => child.on('close', (c) => res(c)));
    assert.equal(code, 255);
    assert.match(err, /portcullis: session ended by the bastion: operator test/);
    assert.ok(b.audit().some((e) => e.type === 'session.close' && e.session === s.id));
  });

  test('a target that dies mid-session ends the session with a message', async () => {
    const own = await startSshd();
    const bb = await startSshBastion({ sshd: own });
    try {
      const child = spawn('ssh', [...bb.sshArgs('demo-agent+web', ['-T']), 'echo started; sleep 30']);
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const t0 = Date.now();
      while (!out.includes('started') && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 20));
      own.kill();
      const code = await new Promise<number | null>((res) => child.on('close', (c) => res(c)));
      assert.equal(code, 255);
      assert.match(err, /portcullis: (the target closed the connection|the target ended the session)/);
      // the bastion keeps serving others
      const r = await bb.ssh('demo-agent+sandbox', 'echo still-here');
      assert.equal(r.stdout, 'still-here\n');
    } finally {
      await bb.close();
      await own.stop();
    }
  });

  test('session.revalidate: a session whose user certificate expires meanwhile is ended with the reason (stderr, audit)', async () => {
    const bb = await startSshBastion({ session: { revalidateMs: 300 } });
    try {
      const dir = fs.mkdtempSync(path.join(bb.root, 'cert-'));
      const key = path.join(dir, 'id');
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
      execFileSync('ssh-keygen', ['-q', '-s', bb.agentCa.file, '-I', 'short-run', '-n', 'demo-agent', '-V', '+4s', key + '.pub']);
      const args = bb.sshArgs('demo-agent+sandbox').filter((a, i, all) => a !== bb.agentKey.file && all[i + 1] !== bb.agentKey.file);
      const t0 = Date.now();
      const r = await run('ssh', ['-T', '-i', key, '-o', `CertificateFile=${key}-cert.pub`, ...args, 'echo started; sleep 30; echo not-reached']);
      assert.equal(r.status, 255, r.stderr);
      assert.equal(r.stdout, 'started\n');
      assert.match(r.stderr, /^portcullis: session ended by the bastion: the credential is no longer valid: certificate expired at \S+/m);
      assert.ok(Date.now() - t0 < 20_000, 'ended soon after the expiry, not by the command');
      await bb.core.audit.flush();
      const closes = bb.audit().filter((e) => e.type === 'session.close' && /credential is no longer valid: certificate expired/.test(String((e.data as { reason?: string }).reason)));
      assert.equal(closes.length, 1, JSON.stringify(bb.audit().filter((e) => e.type === 'session.close')));
      // the long-lived key (no expiry, still configured) keeps its sessions
      const ok = await bb.ssh('demo-agent+sandbox', 'sleep 1; echo fine');
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout, 'fine\n');
    } finally {
      await bb.close();
    }
  });

  test('idle timeout and maximum duration close sessions', async () => {
    const bb = await startSshBastion({ session: { idleTimeoutMs: 600, maxDurationMs: 5000 } });
    try {
      const t0 = Date.now();
      const idle = await bb.ssh('demo-agent+sandbox', 'sleep 20');
      assert.equal(idle.code, 255);
      assert.match(idle.stderr, /idle for 1 s \(session\.idle_timeout\)/);
      assert.ok(Date.now() - t0 < 10_000);
      const busy = await bb.ssh('demo-agent+sandbox', 'for i in $(seq 1 100); do echo $i; sleep 0.2; done');
      assert.equal(busy.code, 255);
      assert.match(busy.stderr, /maximum duration/);
    } finally {
      await bb.close();
    }
  });
});
