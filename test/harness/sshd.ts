// A real OpenSSH sshd as an SSH target for tests: its own config, host key and user keys in a temp
// dir, on a free loopback port, `/run/sshd` as its privilege-separation directory. Logins go to an
// unprivileged system user (`portcullis-test`, created once when the tests run as root: home
// /var/lib/portcullis-test, shell /bin/bash, no password) with an authorized key from the temp dir,
// and any certificate signed by the user CA given at start or later (TrustedUserCAKeys).
//
//   const sshd = await startSshd({ userCa: caPublicKeyLine });
//   … ssh -i sshd.userKeyFile -p sshd.port portcullis-test@127.0.0.1 …
//   await sshd.stop();
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { opensshPrivateKey, publicBlobOf, publicKeyLine } from '../../src/identity/ssh-wire.js';
import { freePort } from './ports.js';
import { tempDir, type TempDir } from './tmp.js';

export const TEST_USER = 'portcullis-test';
const TEST_HOME = '/var/lib/portcullis-test';
const SSHD = ['/usr/sbin/sshd', '/usr/bin/sshd'].find((p) => fs.existsSync(p));

export interface Sshd {
  host: string;
  port: number;
  user: string;
  /** The test user's private key (OpenSSH format) and its file. */
  userKey: string;
  userKeyFile: string;
  userPublicKey: string;
  /** The server's host key line (`ssh-ed25519 AAAA…`). */
  hostKeyLine: string;
  dir: string;
  /** Trust certificates of this user CA from now on (sshd reads the file at each login). */
  trustUserCa(publicKeyLine: string): void;
  /** What sshd logged so far. */
  log(): string;
  /** Kill sshd now (SIGKILL) — a target dying; sessions it forked are killed too. */
  kill(): void;
  stop(): Promise<void>;
}

export interface SshdOptions {
  /** Public key line of a user CA whose certificates log in (TrustedUserCAKeys). */
  userCa?: string;
  /** Extra sshd_config lines. */
  extra?: string[];
}

/** Creates the unprivileged test user once (root only). */
export function ensureTestUser(): void {
  try {
    execFileSync('id', ['-u', TEST_USER], { stdio: 'ignore' });
  } catch {
    if (process.getuid?.() !== 0) throw new Error(`sshd harness: the system user ${TEST_USER} does not exist and only root can create it`);
    execFileSync('useradd', ['--system', '--create-home', '--home-dir', TEST_HOME, '--shell', '/bin/bash', TEST_USER], { stdio: 'ignore' });
  }
  // an account with a locked password ('!') cannot log in at all without PAM: '*' = no password, not locked
  if (process.getuid?.() === 0) execFileSync('usermod', ['-p', '*', TEST_USER], { stdio: 'ignore' });
}

function keyPair(comment: string): { priv: string; pub: string } {
  const { privateKey } = generateKeyPairSync('ed25519');
  const pub = publicBlobOf(privateKey);
  return { priv: opensshPrivateKey(privateKey, comment), pub: publicKeyLine(pub.type, pub.blob, comment) };
}

/** Pids of every descendant of `root` (from /proc), deepest last. */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(d), ppid);
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [pid, pp] of parent) {
      if (pp === p) {
        out.push(pid);
        walk(pid);
      }
    }
  };
  walk(root);
  return out;
}

export async function startSshd(opts: SshdOptions = {}): Promise<Sshd> {
  if (!SSHD) throw new Error('sshd harness: OpenSSH sshd is not installed (openssh-server)');
  ensureTestUser();
  fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const tmp: TempDir = await tempDir('portcullis-sshd-');
  const dir = tmp.path;
  const host = keyPair('sshd-host');
  const user = keyPair('portcullis-test-user');
  fs.writeFileSync(path.join(dir, 'host_key'), host.priv, { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'user_key'), user.priv, { mode: 0o600 });
  fs.mkdirSync(path.join(dir, 'authorized_keys'), { mode: 0o755 });
  fs.writeFileSync(path.join(dir, 'authorized_keys', TEST_USER), user.pub + '\n', { mode: 0o644 });
  const port = await freePort();
  const conf = [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${path.join(dir, 'host_key')}`,
    `PidFile ${path.join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}/%u`,
    `TrustedUserCAKeys ${path.join(dir, 'user_ca.pub')}`,
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    'PermitRootLogin no',
    // the keys live under /tmp (world-writable, sticky): sshd's path check would refuse them
    'StrictModes no',
    `AllowUsers ${TEST_USER}`,
    'MaxStartups 300:30:400',
    'MaxSessions 300',
    'AcceptEnv LANG LC_* PORTCULLIS_REASON',
    'X11Forwarding no',
    'PrintMotd no',
    'PrintLastLog no',
    'LogLevel VERBOSE',
    'Subsystem sftp internal-sftp',
    ...(opts.extra ?? []),
  ];
  fs.writeFileSync(path.join(dir, 'user_ca.pub'), opts.userCa ? opts.userCa.trim() + '\n' : '', { mode: 0o644 });
  fs.writeFileSync(path.join(dir, 'sshd_config'), conf.join('\n') + '\n', { mode: 0o644 });
  let log = '';
  const child: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', path.join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (d: Buffer) => {
    log += d.toString();
    if (log.length > 1_000_000) log = log.slice(-500_000);
  });
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  // ready when it listens
  const t0 = Date.now();
  while (!/Server listening on/.test(log)) {
    if (child.exitCode !== null || Date.now() - t0 > 10_000) {
      child.kill('SIGKILL');
      await tmp.remove();
      throw new Error(`sshd harness: sshd did not start: ${log.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  let stopped = false;
  return {
    host: '127.0.0.1',
    port,
    user: TEST_USER,
    userKey: user.priv,
    userKeyFile: path.join(dir, 'user_key'),
    userPublicKey: user.pub,
    hostKeyLine: host.pub,
    dir,
    log: () => log,
    trustUserCa(line: string) {
      fs.writeFileSync(path.join(dir, 'user_ca.pub'), line.trim() + '\n', { mode: 0o644 });
    },
    kill() {
      // the listener and every process it forked (connections, sessions): by pid, ours only
      for (const pid of [...descendants(child.pid!), child.pid!]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
      await tmp.remove();
    },
  };
}
