// SFTP and scp through the bastion with the real OpenSSH clients (`sftp -b`, `scp`, which uses
// SFTP in OpenSSH 9): every file operation decided as its equivalent shell command under the
// reference policy plus a test rule that protects files named *keep*; on the local sandbox (the
// system's sftp-server as the unprivileged target user) and on a real sshd target.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startSshd, type Sshd } from './harness/sshd.js';
import { startSshBastion, type SshBastion } from './harness/sshbastion.js';

let sshd: Sshd;
let b: SshBastion;
let local: string;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], input = '', cwd?: string): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.on('error', () => undefined);
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

const opts = () => ['-i', b.agentKey.file, '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'IdentitiesOnly=yes', '-o', 'LogLevel=ERROR'];

function sftp(login: string, batch: string): Promise<Result> {
  return run('sftp', ['-b', '-', '-P', String(b.port), ...opts(), `${login}@127.0.0.1`], batch, local);
}

function scp(args: string[]): Promise<Result> {
  return run('scp', ['-P', String(b.port), ...opts(), ...args], '', local);
}

const requests = (re: RegExp) => b.audit().filter((e) => e.type === 'request' && re.test(String((e.request as { command?: string }).command ?? '')));

before(async () => {
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
      '  - id: protect-keep',
      '    effect: deny',
      '    shell:',
      '      program: [rm, tee, cat, mv]',
      '      args_any: ["*keep*"]',
      '    reason: "files named *keep* are protected: {command}"',
      '',
    ].join('\n'),
  });
  local = path.join(b.root, 'client');
  fs.mkdirSync(local);
  fs.writeFileSync(path.join(local, 'up.txt'), 'uploaded through the bastion\n');
  fs.writeFileSync(path.join(local, 'big.bin'), Buffer.alloc(3 * 1024 * 1024 + 17, 0xab).map((_, i) => (i * 7919) & 0xff));
});

after(async () => {
  await b?.close();
  await sshd?.stop();
});

describe('SFTP through the bastion, decided op by op', () => {
  test('sftp on the local sandbox: put, get, ls, mkdir, rename, rm, rmdir — files owned by the unprivileged user', async () => {
    const r = await sftp('demo-agent+sandbox', ['put up.txt', 'put big.bin', 'mkdir dir1', 'rename up.txt dir1/moved.txt', 'ls dir1', 'get dir1/moved.txt back.txt', 'get big.bin big.back', 'rm dir1/moved.txt', 'rmdir dir1', ''].join('\n'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /moved\.txt/);
    const box = path.join(b.dataDir, 'sandbox');
    assert.equal(fs.readFileSync(path.join(local, 'back.txt'), 'utf8'), 'uploaded through the bastion\n');
    assert.ok(fs.readFileSync(path.join(local, 'big.back')).equals(fs.readFileSync(path.join(local, 'big.bin'))), 'a 3 MiB file round-trips intact');
    assert.ok(!fs.existsSync(path.join(box, 'dir1')));
    assert.notEqual(fs.statSync(path.join(box, 'big.bin')).uid, 0, 'written by the target user, not root');
    for (const re of [/^tee '.*big\.bin'$/, /^mkdir '.*dir1'$/, /^mv '.*up\.txt' '.*dir1\/moved\.txt'$/, /^ls '.*dir1\/?'$/, /^cat '.*moved\.txt'$/, /^rm '.*dir1\/moved\.txt'$/, /^rmdir '.*dir1'$/]) {
      assert.ok(requests(re).some((e) => (e.decision as { effect: string }).effect === 'allow'), `audited and allowed: ${re}`);
    }
  });

  test('a denied operation gets PERMISSION_DENIED naming the rule, and does not happen', async () => {
    const box = path.join(b.dataDir, 'sandbox');
    fs.writeFileSync(path.join(box, 'keep.txt'), 'precious\n');
    const rm = await sftp('demo-agent+sandbox', 'rm keep.txt\n');
    assert.notEqual(rm.code, 0);
    assert.match(rm.stderr, /portcullis: blocked by \S+test-extra\.yaml:protect-keep/);
    assert.ok(fs.existsSync(path.join(box, 'keep.txt')), 'the file is still there');
    const put = await sftp('demo-agent+sandbox', 'put up.txt keep-new.txt\n');
    assert.notEqual(put.code, 0);
    assert.ok(!fs.existsSync(path.join(box, 'keep-new.txt')), 'a denied write creates nothing');
    const get = await sftp('demo-agent+sandbox', 'get keep.txt\n');
    assert.notEqual(get.code, 0);
    assert.ok(!fs.existsSync(path.join(local, 'keep.txt')));
    assert.ok(requests(/^rm '.*keep\.txt'$/).some((e) => (e.decision as { effect: string }).effect === 'deny'));
  });

  test('scp (SFTP mode) up and down, and a denied scp', async () => {
    const up = await scp(['up.txt', 'demo-agent+sandbox@127.0.0.1:scp-up.txt']);
    assert.equal(up.code, 0, up.stderr);
    assert.equal(fs.readFileSync(path.join(b.dataDir, 'sandbox', 'scp-up.txt'), 'utf8'), 'uploaded through the bastion\n');
    const down = await scp(['demo-agent+sandbox@127.0.0.1:scp-up.txt', 'scp-down.txt']);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(fs.readFileSync(path.join(local, 'scp-down.txt'), 'utf8'), 'uploaded through the bastion\n');
    const denied = await scp(['up.txt', 'demo-agent+sandbox@127.0.0.1:keep-scp.txt']);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /protect-keep/);
  });

  test('sftp to a real sshd target through its sftp subsystem, same rules', async () => {
    const r = await sftp('demo-agent+web', ['put up.txt web-up.txt', 'get web-up.txt web-back.txt', 'rm web-up.txt', ''].join('\n'));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.readFileSync(path.join(local, 'web-back.txt'), 'utf8'), 'uploaded through the bastion\n');
    const denied = await sftp('demo-agent+web', 'put up.txt keep-web.txt\n');
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /protect-keep/);
    assert.ok(requests(/^tee '.*web-up\.txt'$/).some((e) => e.target === 'web'));
  });

  test('each SFTP session is one core session with its recording and counts', async () => {
    const before = new Set(b.recordings());
    const r = await sftp('demo-agent+sandbox', 'ls\n');
    assert.equal(r.code, 0, r.stderr);
    const fresh = b.recordings().filter((f) => !before.has(f));
    assert.equal(fresh.length, 1);
    const cast = fs.readFileSync(fresh[0]!, 'utf8');
    assert.match(cast, /allow \S+ssh\.yaml:commands: ls/);
    const id = path.basename(fresh[0]!, '.cast');
    const t0 = Date.now();
    while (!b.audit().some((e) => e.type === 'session.close' && e.session === id) && Date.now() - t0 < 5000) await new Promise((res) => setTimeout(res, 50));
    const close = b.audit().find((e) => e.type === 'session.close' && e.session === id);
    assert.ok(((close?.data as { sftp?: { decided?: number } }).sftp?.decided ?? 0) > 0, 'the close event counts the decided operations');
  });
});
