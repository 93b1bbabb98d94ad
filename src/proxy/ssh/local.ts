// Local targets (`kind: local`): a shell on the bastion's own machine, in the target's `cwd`.
// Terminal sessions run under node-pty; exec without a terminal runs as a plain child process
// (separate stdout/stderr, real EOF on stdin). When the bastion runs as root the program runs as
// the target's `user` (default `nobody`) — never as root — with supplementary groups dropped.
//
// bash gets a known prompt (--rcfile written by the bastion, outside the sandbox) carrying OSC 133
// marks (A prompt start, B prompt end = where the command line starts, C command start via PS0),
// so that the line tracker finds the command line exactly; other shells fall back to heuristics.
//
// node-pty loses the tail of the output when the program exits (the master reads EIO before the
// kernel has flushed the last bytes): the bastion keeps the slave side open itself until node-pty
// reports the exit, so every byte is read first.
import { spawn, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmodSync, chownSync, closeSync, constants as fsc, existsSync, mkdirSync, openSync, statSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { constants as osc } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import pty from 'node-pty';
import { PortcullisError } from '../../policy/types.js';
import { UpstreamProcess, type PtySpec, type StartOptions, type Upstream, type ExitInfo } from './upstream.js';

export interface LocalTargetConfig {
  name: string;
  shell: string;
  cwd: string;
  /** Run as this user (name); default: the bastion's user, or `nobody` when that is root. */
  user?: string;
  /** Where the bastion keeps its rcfile (not writable by the target's user). */
  stateDir: string;
}

interface RunAs {
  uid: number;
  gid: number;
  name: string;
  home: string;
}

/** The system's SFTP server (run for the sftp subsystem of a local target, as the target's user). */
const SFTP_SERVERS = ['/usr/lib/openssh/sftp-server', '/usr/libexec/openssh/sftp-server', '/usr/libexec/sftp-server', '/usr/lib/ssh/sftp-server'];

const SIGNAL_NAMES = new Map<number, string>(Object.entries(osc.signals).map(([k, v]) => [v, k.replace(/^SIG/, '')]));

function lookupUser(name: string): RunAs {
  let line: string;
  try {
    line = execFileSync('getent', ['passwd', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    throw new PortcullisError('ssh_local_user', `local target: no system user "${name}"`);
  }
  const f = line.split(':');
  const uid = Number(f[2]);
  const gid = Number(f[3]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new PortcullisError('ssh_local_user', `local target: unusable passwd entry for "${name}"`);
  return { uid, gid, name, home: f[5] ?? '/' };
}

/** Adds o+x to every ancestor of `dir` that lacks it, so that the target's user can reach it. */
function makeTraversable(dir: string): string[] {
  const changed: string[] = [];
  let current = dirname(resolve(dir));
  for (let i = 0; i < 64; i++) {
    const st = statSync(current);
    if ((st.mode & 0o001) === 0) {
      chmodSync(current, (st.mode & 0o7777) | 0o001);
      changed.push(current);
    }
    const parent = dirname(current);
    if (parent === current) break;
    current = parent;
  }
  return changed;
}

const RC = (target: string) => `# written by portcullis: the local target's prompt, with OSC 133 marks the SSH line tracker reads
PS1='\\[\\e]133;A\\a\\]\\u@${target}:\\w\\$ \\[\\e]133;B\\a\\]'
PS2='\\[\\e]133;A\\a\\]> \\[\\e]133;B\\a\\]'
PS0='\\e]133;C\\a'
unset PROMPT_COMMAND HISTFILE
`;

export class LocalTarget {
  private readonly runAs: RunAs | null;
  private readonly rcfile: string | null;
  readonly notes: string[] = [];

  constructor(readonly cfg: LocalTargetConfig) {
    const root = typeof process.getuid === 'function' && process.getuid() === 0;
    const userName = cfg.user ?? (root ? 'nobody' : undefined);
    this.runAs = userName ? lookupUser(userName) : null;
    if (this.runAs && this.runAs.uid === 0) throw new PortcullisError('ssh_local_user', `local target ${cfg.name}: refusing to run the shell as root (user "${userName}")`);
    if (this.runAs && !root && this.runAs.uid !== process.getuid?.()) throw new PortcullisError('ssh_local_user', `local target ${cfg.name}: only root can run the shell as "${userName}"`);
    mkdirSync(cfg.cwd, { recursive: true, mode: 0o750 });
    if (this.runAs && root) {
      const st = statSync(cfg.cwd);
      if (st.uid === 0) {
        chownSync(cfg.cwd, this.runAs.uid, this.runAs.gid);
        this.notes.push(`${cfg.cwd} now belongs to ${this.runAs.name}`);
      }
      const changed = makeTraversable(cfg.cwd);
      if (changed.length) this.notes.push(`made traversable (o+x) for ${this.runAs.name}: ${changed.join(', ')}`);
    }
    if (basename(cfg.shell) === 'bash') {
      mkdirSync(cfg.stateDir, { recursive: true, mode: 0o755 });
      chmodSync(cfg.stateDir, 0o755);
      this.rcfile = join(cfg.stateDir, `${cfg.name}.bashrc`);
      writeFileSync(this.rcfile, RC(cfg.name), { mode: 0o644 });
      chmodSync(this.rcfile, 0o644);
    } else this.rcfile = null;
    if (!existsSync(cfg.shell)) throw new PortcullisError('ssh_local_shell', `local target ${cfg.name}: shell ${cfg.shell} does not exist`);
  }

  get promptMarks(): boolean {
    return this.rcfile !== null;
  }

  env(extra: Record<string, string>, term?: string): Record<string, string> {
    const home = this.cfg.cwd;
    const user = this.runAs?.name ?? process.env.USER ?? 'portcullis';
    return {
      PATH: '/usr/local/bin:/usr/bin:/bin',
      HOME: home,
      USER: user,
      LOGNAME: user,
      SHELL: this.cfg.shell,
      ...extra,
      ...(term ? { TERM: term } : {}),
    };
  }

  connect(): Upstream {
    return {
      kind: 'local',
      promptMarks: this.promptMarks,
      exec: (command, o) => Promise.resolve(o.pty ? this.spawnPty([this.cfg.shell, '-c', command], o.pty, o.env) : this.spawnPlain(command, o)),
      shell: (o) => {
        const args = this.rcfile ? ['--noprofile', '--rcfile', this.rcfile, '-i'] : ['-i'];
        if (!o.pty) return Promise.resolve(this.spawnPlainArgs([this.cfg.shell, ...(this.rcfile ? ['--noprofile', '--norc'] : []), '-s'], o));
        return Promise.resolve(this.spawnPty([this.cfg.shell, ...args], o.pty, o.env));
      },
      subsystem: (name) => {
        const server = name === 'sftp' ? SFTP_SERVERS.find((f) => existsSync(f)) : undefined;
        if (!server) return Promise.reject(new PortcullisError('ssh_local_subsystem', name === 'sftp' ? `local target ${this.cfg.name}: no sftp-server (${SFTP_SERVERS.join(', ')}; install openssh-server or openssh-sftp-server)` : `no subsystem "${name}"`));
        return Promise.resolve(this.spawnPlainArgs([server, '-d', this.cfg.cwd], { env: {} }));
      },
      // a local target is the bastion's own machine: the connection is made from here
      forwardOut: (_src, dst) =>
        new Promise((res, rej) => {
          const sock = netConnect({ host: dst.host, port: dst.port });
          const onError = (e: Error) => rej(new PortcullisError('ssh_local_forward', `cannot connect to ${dst.host}:${dst.port}: ${e.message}`));
          sock.once('error', onError);
          sock.once('connect', () => {
            sock.off('error', onError);
            sock.setNoDelay(true);
            res(sock);
          });
        }),
      close: () => undefined,
    };
  }

  private spawnPty(argv: string[], p: PtySpec, env: Record<string, string>): UpstreamProcess {
    const proc = pty.spawn(argv[0]!, argv.slice(1), {
      name: p.term || 'xterm',
      cols: Math.max(1, p.cols || 80),
      rows: Math.max(1, p.rows || 24),
      cwd: this.cfg.cwd,
      env: this.env(env, p.term || 'xterm'),
      encoding: null,
      ...(this.runAs ? { uid: this.runAs.uid, gid: this.runAs.gid } : {}),
    });
    return new PtyProcess(proc);
  }

  private spawnPlain(command: string, o: StartOptions): UpstreamProcess {
    return this.spawnPlainArgs([this.cfg.shell, '-c', command], o);
  }

  private spawnPlainArgs(argv: string[], o: StartOptions): UpstreamProcess {
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: this.cfg.cwd,
      env: this.env(o.env),
      stdio: 'pipe',
      ...(this.runAs ? { uid: this.runAs.uid, gid: this.runAs.gid } : {}),
    });
    return new ChildProcess(child);
  }
}

class PtyProcess extends UpstreamProcess {
  private hold: number | null = null;

  constructor(private readonly p: pty.IPty) {
    super();
    try {
      // see the file comment: keep the slave open until node-pty reports the exit
      this.hold = openSync((p as unknown as { ptsName: string }).ptsName, fsc.O_RDWR | fsc.O_NOCTTY);
    } catch {
      this.hold = null; // the program already exited: nothing more to protect
    }
    // node-pty types onData as string; with `encoding: null` it delivers Buffers
    p.onData((d) => this.emit('data', Buffer.isBuffer(d) ? d : Buffer.from(d as string)));
    p.onExit(({ exitCode, signal }) => {
      this.release();
      const e: ExitInfo = signal ? { code: null, signal: SIGNAL_NAMES.get(signal) ?? 'KILL' } : { code: exitCode };
      this.finish(e);
    });
  }

  private release(): void {
    if (this.hold !== null) {
      closeSync(this.hold);
      this.hold = null;
    }
  }

  write(b: Buffer): boolean {
    this.p.write(b);
    return true;
  }
  end(): void {
    this.p.write('\x04');
  }
  resize(s: { cols: number; rows: number }): void {
    if (this.hasExited) return;
    try {
      this.p.resize(Math.max(1, s.cols), Math.max(1, s.rows));
    } catch {
      // the pty is already gone
    }
  }
  signal(name: string): void {
    if (this.hasExited) return;
    try {
      this.p.kill('SIG' + name);
    } catch {
      // already gone
    }
  }
  pause(): void {
    this.p.pause();
  }
  resume(): void {
    this.p.resume();
  }
  close(): void {
    if (!this.hasExited) this.signal('HUP');
    const p = this.p;
    setTimeout(() => {
      if (!this.hasExited) {
        try {
          p.kill('SIGKILL');
        } catch {
          // gone
        }
      }
    }, 2000).unref();
  }
}

class ChildProcess extends UpstreamProcess {
  constructor(private readonly c: ChildProcessWithoutNullStreams) {
    super();
    c.stdout.on('data', (d: Buffer) => this.emit('data', d));
    c.stderr.on('data', (d: Buffer) => this.emit('stderr', d));
    c.stdin.on('drain', () => this.emit('drain'));
    c.stdin.on('error', () => undefined); // EPIPE when the program stops reading: not the agent's problem
    c.on('error', (e) => this.finish({ code: 127, error: `cannot start the program: ${e.message}` }));
    c.on('close', (code, signal) => this.finish(signal ? { code: null, signal: signal.replace(/^SIG/, '') } : { code: code ?? 0 }));
  }
  write(b: Buffer): boolean {
    if (this.c.stdin.destroyed) return true;
    return this.c.stdin.write(b);
  }
  end(): void {
    this.c.stdin.end();
  }
  resize(): void {
    // no terminal
  }
  signal(name: string): void {
    try {
      this.c.kill(('SIG' + name) as NodeJS.Signals);
    } catch {
      // gone
    }
  }
  pause(): void {
    this.c.stdout.pause();
    this.c.stderr.pause();
  }
  resume(): void {
    this.c.stdout.resume();
    this.c.stderr.resume();
  }
  close(): void {
    if (this.hasExited) return;
    this.signal('TERM');
    setTimeout(() => {
      if (!this.hasExited) this.signal('KILL');
    }, 2000).unref();
  }
}
