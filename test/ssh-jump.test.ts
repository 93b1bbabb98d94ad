// ProxyJump through the bastion with the real OpenSSH client (`ssh -J`), host-key checking strict:
// the agent's known_hosts holds the bastion's own key and the host CA line printed by
// `portcullis ssh ca`, so the inner connection proves it speaks for the target with a host
// certificate. Sessions through a jump get the same policy, recording and masking as direct ones.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startSshd, type Sshd } from './harness/sshd.js';
import { startSshBastion, type SshBastion } from './harness/sshbastion.js';

let sshd: Sshd;
let b: SshBastion;
let cfg: string;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], input = '', timeoutMs = 30_000): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.on('error', () => undefined);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

/** `ssh -F cfg -J bastion <login> <command>`: every hop reads the same config (strict host keys). */
function jump(login: string, command: string, extra: string[] = []): Promise<Result> {
  return run('ssh', ['-F', cfg, '-J', 'bastion', ...extra, login, command]);
}

/** Writes the agent's ssh config and known_hosts: the bastion's key and the host CA line. */
async function agentConfig(caLine: string, file = 'ssh_config'): Promise<string> {
  const kh = path.join(b.root, `known_hosts.${file}`);
  const hostKey = b.proxy.hostKeys.find((k) => k.type === 'ssh-ed25519')!;
  fs.writeFileSync(kh, `[127.0.0.1]:${b.port} ${hostKey.publicKeyLine}\n${caLine}\n`);
  const out = path.join(b.root, file);
  fs.writeFileSync(
    out,
    [
      'Host bastion',
      '  HostName 127.0.0.1',
      `  Port ${b.port}`,
      '  User demo-agent',
      'Host *',
      '  BatchMode yes',
      '  StrictHostKeyChecking yes',
      `  UserKnownHostsFile ${kh}`,
      '  GlobalKnownHostsFile /dev/null',
      `  IdentityFile ${b.agentKey.file}`,
      '  IdentitiesOnly yes',
      '  LogLevel ERROR',
      '  ConnectTimeout 10',
      '',
    ].join('\n'),
  );
  return out;
}

before(async () => {
  sshd = await startSshd();
  b = await startSshBastion({ sshd });
  // the line an operator hands to agents, from the real CLI
  const ca = await run(process.execPath, ['dist/src/cli/main.js', 'ssh', 'ca', '--data-dir', b.dataDir]);
  assert.equal(ca.code, 0, ca.stderr);
  assert.match(ca.stdout, /^@cert-authority \* ssh-ed25519 \S+/);
  cfg = await agentConfig(ca.stdout.trim());
});

after(async () => {
  await b?.close();
  await sshd?.stop();
});

describe('ProxyJump (ssh -J) with a host certificate', () => {
  test('exec on the local sandbox through the jump: host certificate accepted, allowed command runs', async () => {
    const r = await jump('demo-agent@sandbox', 'echo jumped; pwd');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), ['jumped', path.join(b.dataDir, 'sandbox')]);
  });

  test('a denied command through the jump exits 126 with the reason; nothing runs', async () => {
    const marker = path.join(b.dataDir, 'sandbox', 'jump-victim');
    fs.mkdirSync(marker, { recursive: true });
    const r = await jump('demo-agent@sandbox', `rm -rf ${marker}`);
    assert.equal(r.code, 126);
    assert.match(r.stderr, /^portcullis: blocked by \S+ssh\.yaml:no-recursive-or-forced-rm/m);
    assert.ok(fs.existsSync(marker), 'the denied command must not run');
  });

  test('a real sshd remote target through the jump, same policy', async () => {
    const ok = await jump('demo-agent@web', 'echo remote; id -un');
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(ok.stdout.trim().split('\n'), ['remote', sshd.user]);
    const denied = await jump('demo-agent@web', 'ls; rm -rf /tmp/x');
    assert.equal(denied.code, 126);
    assert.match(denied.stderr, /no-recursive-or-forced-rm/);
  });

  test('the jumped session is one core session with its recording, linked to the outer connection', async () => {
    const before = new Set(b.recordings());
    const r = await jump('demo-agent@sandbox', 'echo recorded-through-jump');
    assert.equal(r.code, 0, r.stderr);
    const fresh = b.recordings().filter((f) => !before.has(f));
    assert.equal(fresh.length, 1, 'one recording for the one inner session');
    assert.match(fs.readFileSync(fresh[0]!, 'utf8'), /recorded-through-jump/);
    const id = path.basename(fresh[0]!, '.cast');
    const open = b.audit().find((e) => e.type === 'session.open' && e.session === id);
    assert.ok(open, 'session.open audited');
    assert.equal(open.target, 'sandbox');
    assert.equal(typeof (open.data as { via?: string }).via, 'string', 'the session names the outer connection it came through');
    assert.ok(b.audit().some((e) => e.type === 'session.close' && e.session === id));
  });

  test('without the CA line the host certificate is not trusted (strict checking refuses)', async () => {
    const other = await agentConfig('# no CA', 'ssh_config_noca');
    const r = await run('ssh', ['-F', other, '-J', 'bastion', 'demo-agent@sandbox', 'echo nope']);
    assert.equal(r.code, 255);
    assert.doesNotMatch(r.stdout, /nope/);
    assert.match(r.stderr, /host key|verification failed/i);
  });

  test('the inner login must be the identity that jumped, to the jump target', async () => {
    const r = await jump('someone-else@sandbox', 'echo nope');
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Permission denied/);
    const wrongTarget = await jump('demo-agent+web@sandbox', 'echo nope');
    assert.equal(wrongTarget.code, 255);
  });

  test('an address shared by several targets is not a jump; an unknown host is a port forward (denied)', async () => {
    const shared = await run('ssh', ['-F', cfg, '-J', 'bastion', '-p', String(sshd.port), `demo-agent@${sshd.host}`, 'echo nope']);
    assert.equal(shared.code, 255);
    const unknown = await jump('demo-agent@no-such-target', 'echo nope');
    assert.equal(unknown.code, 255);
    assert.match(unknown.stderr, /administratively prohibited|open failed|Connection closed/i);
    const fwd = b.audit().filter((e) => e.type === 'request' && (e.request as { forward?: { host?: string } }).forward?.host === 'no-such-target');
    assert.equal(fwd.length, 1, 'the raw forward was decided and audited');
    assert.equal((fwd[0]!.decision as { effect: string }).effect, 'deny');
  });
});
