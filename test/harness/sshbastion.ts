// The SSH bastion for tests, built the way `serve` builds it: a config file parsed by the real
// config loader, the reference policy (examples/policies, with the SSH rules also applied to the
// remote test targets), the real core, store, identity service and SSH proxy on a free port.
// Targets: `sandbox` (local shell), and — when an sshd harness is given — `web` (the sshd with
// the test user's own key) and `web-ca` (the same sshd, logged in with a short-lived certificate
// from the bastion's upstream CA); `dead` is a port nothing listens on. The agent `demo-agent` (group agents) logs in with a key, or
// with a certificate from the `agents` user CA. Clients: the real `ssh`, plain or in a pty.
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pty from 'node-pty';
import { parseConfig } from '../../src/config/config.js';
import { YamlSource } from '../../src/config/source.js';
import { Core } from '../../src/core/core.js';
import { createLogger } from '../../src/core/log.js';
import { IdentityService } from '../../src/identity/index.js';
import { opensshPrivateKey, publicBlobOf, publicKeyLine } from '../../src/identity/ssh-wire.js';
import { initFacts } from '../../src/policy/actions.js';
import { startSshProxy, sshTargetsFromConfig, type SshProxy } from '../../src/proxy/ssh/index.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { freePort } from './ports.js';
import type { Sshd } from './sshd.js';
import { tempDir, type TempDir } from './tmp.js';

export interface KeyFiles {
  priv: string;
  pub: string;
  file: string;
}

function writeKey(dir: string, name: string): KeyFiles {
  const { privateKey } = generateKeyPairSync('ed25519');
  const b = publicBlobOf(privateKey);
  const priv = opensshPrivateKey(privateKey, name);
  const pub = publicKeyLine(b.type, b.blob, name);
  const file = path.join(dir, name);
  fs.writeFileSync(file, priv, { mode: 0o600 });
  fs.writeFileSync(file + '.pub', pub + '\n', { mode: 0o644 });
  return { priv, pub, file };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface BastionOptions {
  sshd?: Sshd;
  session?: { idleTimeoutMs?: number; maxDurationMs?: number; revalidateMs?: number };
  approvalTimeoutMs?: number;
  /** An extra policy file (YAML text) next to the reference policy, e.g. forwards to test ports. */
  extraPolicy?: string;
}

export interface SshBastion {
  root: string;
  dataDir: string;
  core: Core;
  store: Store;
  proxy: SshProxy;
  port: number;
  agentKey: KeyFiles;
  /** The user CA agents' certificates are signed with (ssh-keygen -s). */
  agentCa: KeyFiles;
  /** The upstream CA's public key (what web-ca's sshd trusts). */
  upstreamCaPub: string;
  /** Args for the real ssh client to reach `login` through the bastion (before the command). */
  sshArgs(login: string, extra?: string[]): string[];
  /** Run the real ssh client. */
  ssh(login: string, command: string | null, o?: { input?: string | Buffer; tty?: boolean; env?: Record<string, string>; extra?: string[]; timeoutMs?: number }): Promise<RunResult>;
  /** The real ssh client in a terminal (node-pty), for interactive sessions. */
  terminal(login: string, o?: { extra?: string[]; cols?: number; rows?: number; command?: string }): Terminal;
  recordings(): string[];
  audit(): Record<string, unknown>[];
  close(): Promise<void>;
}

const log = createLogger('error', () => undefined);

/** Removes ANSI escape sequences (CSI, OSC) and carriage returns, for assertions on screen text. */
export function plain(s: string): string {
  // eslint-disable-next-line no-control-regex -- terminal escape sequences
  return s.replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, '').replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, '').replace(/\x1b[()][A-Za-z0-9]/g, '').replace(/\x1b[=>78]/g, '').replace(/\r/g, '');
}

export class Terminal {
  private out = '';
  readonly exited: Promise<number>;
  private readonly p: pty.IPty;

  constructor(argv: string[], cols: number, rows: number) {
    this.p = pty.spawn(argv[0]!, argv.slice(1), { name: 'xterm', cols, rows, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', TERM: 'xterm' } });
    this.p.onData((d) => {
      this.out += d;
    });
    this.exited = new Promise((res) => this.p.onExit(({ exitCode }) => res(exitCode)));
  }

  /** Everything received so far (raw). */
  get raw(): string {
    return this.out;
  }

  get text(): string {
    return plain(this.out);
  }

  write(s: string): void {
    this.p.write(s);
  }

  /** Type keys one at a time, as a person would (with a small pause between them). */
  async type(s: string, gapMs = 5): Promise<void> {
    for (const ch of s) {
      this.p.write(ch);
      await new Promise((r) => setTimeout(r, gapMs));
    }
  }

  /** Wait until the plain text after `from` matches `re`. */
  async waitFor(re: RegExp, timeoutMs = 10_000, from = 0): Promise<string> {
    const t0 = Date.now();
    for (;;) {
      const t = plain(this.out.slice(from));
      if (re.test(t)) return t;
      if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${re} in:\n${t.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Position to pass to waitFor(…, from) for output after now. */
  mark(): number {
    return this.out.length;
  }

  resize(cols: number, rows: number): void {
    this.p.resize(cols, rows);
  }

  kill(): void {
    try {
      this.p.kill('SIGKILL');
    } catch {
      // gone
    }
  }
}

/** Runs the real asciinema CLI in a terminal (it opens /dev/tty). */
export function asciinema(args: string[], timeoutMs = 30_000): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const p = pty.spawn('asciinema', args, { name: 'xterm', cols: 120, rows: 40, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', TERM: 'xterm', LANG: 'C.UTF-8' } });
    let out = '';
    p.onData((d) => (out += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.onExit(({ exitCode }) => {
      clearTimeout(timer);
      resolve({ code: exitCode, out });
    });
  });
}

export async function startSshBastion(o: BastionOptions = {}): Promise<SshBastion> {
  await initFacts();
  const tmp: TempDir = await tempDir('portcullis-sshb-');
  const root = tmp.path;
  const dataDir = path.join(root, 'data');
  const policies = path.join(root, 'policies');
  fs.cpSync('examples/policies', policies, { recursive: true });
  const sshPolicy = path.join(policies, 'ssh.yaml');
  fs.writeFileSync(sshPolicy, fs.readFileSync(sshPolicy, 'utf8').replace('targets: [sandbox]', 'targets: [sandbox, web, web-ca, dead]'));
  if (o.extraPolicy) fs.writeFileSync(path.join(policies, 'test-extra.yaml'), o.extraPolicy);
  const keys = path.join(root, 'keys');
  fs.mkdirSync(keys, { mode: 0o700 });
  const agentKey = writeKey(keys, 'agent');
  const agentCa = writeKey(keys, 'agents-ca');
  const upstreamCa = writeKey(keys, 'upstream-ca');
  const sshd = o.sshd;
  const deadPort = await freePort();
  const yaml = [
    `data_dir: ${JSON.stringify(dataDir)}`,
    `policies: ${JSON.stringify(policies)}`,
    'identity:',
    '  ssh:',
    '    authorized_keys:',
    `      - { subject: demo-agent, groups: [agents], keys: [${JSON.stringify(agentKey.pub)}] }`,
    '    user_cas:',
    `      - { name: agents, public_key: ${JSON.stringify(agentCa.pub)}, groups: [agents] }`,
    '  upstream_ssh_ca:',
    `    private_key: ${JSON.stringify('file:' + upstreamCa.file)}`,
    '    ttl: 5m',
    '    targets: [web-ca]',
    'targets:',
    '  sandbox:',
    '    protocol: ssh',
    '    kind: local',
    `    cwd: ${JSON.stringify(path.join(dataDir, 'sandbox'))}`,
    '  dead:',
    '    protocol: ssh',
    '    host: 127.0.0.1',
    `    port: ${deadPort}`,
    '    user: nobody',
    `    private_key: ${JSON.stringify('file:' + agentKey.file)}`,
    ...(sshd
      ? [
          '  web:',
          '    protocol: ssh',
          `    host: ${sshd.host}`,
          `    port: ${sshd.port}`,
          `    user: ${sshd.user}`,
          `    private_key: ${JSON.stringify('file:' + sshd.userKeyFile)}`,
          `    host_key: ${JSON.stringify(sshd.hostKeyLine)}`,
          '  web-ca:',
          '    protocol: ssh',
          `    host: ${sshd.host}`,
          `    port: ${sshd.port}`,
          `    user: ${sshd.user}`,
        ]
      : []),
  ].join('\n');
  const cfgFile = path.join(root, 'portcullis.yaml');
  fs.writeFileSync(cfgFile, yaml + '\n');
  const config = parseConfig(YamlSource.parse(cfgFile, yaml), { checkSecrets: true });
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o750 });
  const store = await openStore(dataDir);
  const core = await Core.open({ dataDir, policiesDir: policies, audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 1000 }, store, log, approvalTimeoutMs: o.approvalTimeoutMs ?? 20_000 });
  const identity = new IdentityService(config.identity, store, {
    log,
    audit: (e) => core.audit.append({ type: 'identity.rejected', protocol: e.protocol, data: { remote: e.remote, code: e.code, message: e.message } }, { durable: true }).then(() => undefined),
  });
  sshd?.trustUserCa(upstreamCa.pub);
  const proxy = await startSshProxy(core, {
    port: 0,
    dataDir,
    log,
    identity,
    hmacKey: Buffer.alloc(32, 7),
    targets: sshTargetsFromConfig(config),
    defaultTargets: new Map([['demo-agent', 'sandbox']]),
    session: { ...o.session, ...(o.session?.revalidateMs ? { revalidate: (id: Parameters<IdentityService['check']>[0]) => identity.check(id) } : {}) },
  });
  const base = ['-p', String(proxy.port), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'IdentitiesOnly=yes', '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=10'];
  const sshArgs = (login: string, extra: string[] = []) => [...base, '-i', agentKey.file, ...extra, `${login}@127.0.0.1`];
  return {
    root,
    dataDir,
    core,
    store,
    proxy,
    port: proxy.port,
    agentKey,
    agentCa,
    upstreamCaPub: upstreamCa.pub,
    sshArgs,
    ssh(login, command, ro = {}) {
      return new Promise((resolve, reject) => {
        const args = [...sshArgs(login, [...(ro.tty ? ['-tt'] : ['-T']), ...(ro.extra ?? [])]), ...(command !== null ? [command] : [])];
        const child = spawn('ssh', args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...ro.env }, stdio: ['pipe', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.stdin.on('error', () => undefined);
        const timer = setTimeout(() => child.kill('SIGKILL'), ro.timeoutMs ?? 30_000);
        child.on('error', reject);
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal, stdout, stderr });
        });
        if (ro.input !== undefined) child.stdin.end(ro.input);
        else child.stdin.end();
      });
    },
    terminal(login, to = {}) {
      return new Terminal(['ssh', ...sshArgs(login, ['-tt', ...(to.extra ?? [])]), ...(to.command ? [to.command] : [])], to.cols ?? 100, to.rows ?? 30);
    },
    recordings() {
      const d = path.join(dataDir, 'recordings');
      return fs.existsSync(d) ? fs.readdirSync(d).filter((f) => f.endsWith('.cast')).map((f) => path.join(d, f)) : [];
    },
    audit() {
      const f = path.join(dataDir, 'audit', 'audit.jsonl');
      return fs
        .readFileSync(f, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    async close() {
      await proxy.close();
      await core.close();
      await store.close();
      await tmp.remove();
    },
  };
}
