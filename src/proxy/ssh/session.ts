// One SSH session channel (exec or shell) from open to exit: a core session (audited) and its
// recording, the command decided before the target sees it, the upstream program, masked output
// to the agent and the recording, input by the right discipline (raw data, terminal lines, or
// script lines), window changes, signals, idle timeout / maximum duration, and a clean end when
// the core kills it.
import type { ServerChannel, Session } from 'ssh2';
import type { Core, SessionRecording } from '../../core/core.js';
import type { SessionInfo } from '../../core/events.js';
import type { Logger } from '../../core/log.js';
import type { SshAuthInfo } from '../../identity/index.js';
import type { Masker, StreamMasker } from '../../masking/index.js';
import { shellFactsCached } from '../../policy/shell/index.js';
import type { Identity } from '../../policy/types.js';
import { gate, strictestReading, wouldAllow, type GateContext, type GateResult } from './gate.js';
import { LineTracker } from './linetracker.js';
import { sessionMasker } from './masks.js';
import { OutputPipe } from './output.js';
import { PlainLines } from './plain.js';
import { SftpSession } from './sftp.js';
import { envAllowed } from './routing.js';
import { TerminalLines } from './terminal.js';
import { SIGNALS, type ExitInfo, type PtySpec, type Upstream, type UpstreamProcess } from './upstream.js';

export interface SessionLimits {
  idleTimeoutMs?: number;
  maxDurationMs?: number;
  /** Re-check the agent's credential this often (config `session.revalidate`); a refused one ends the session. */
  revalidateMs?: number;
  revalidate?: (identity: Identity) => Promise<{ ok: true } | { ok: false; message: string }>;
}

/** What a session needs from its connection. */
export interface ConnectionContext {
  core: Core;
  log: Logger;
  hmacKey?: Buffer | string;
  auth: SshAuthInfo;
  identity: Identity;
  target: string;
  remote: string;
  connectionId: string;
  /** A ProxyJump: the outer connection this one arrived through. */
  via?: string;
  /** The target's upstream for this connection (opened on first use). */
  upstream(): Upstream;
  /** For the recording header. */
  shell: string;
  limits: SessionLimits;
  /** End the agent's SSH connection (after a kill). */
  endConnection(): void;
  /** Run `fn` when the agent's connection goes away (channels get no close event then). */
  onConnectionClose(fn: () => void): void;
}

/** Shells whose stdin is a script / whose terminal is a command prompt. */
const SHELLS = new Set(['sh', 'bash', 'zsh', 'dash', 'ksh', 'mksh', 'ash', 'fish', 'busybox', 'tcsh', 'csh']);
/** Input of an exec without a terminal kept in the recording (it is data, often bulk). */
const RECORD_STDIN_MAX = 64 * 1024;

/** An exec that starts a shell reading commands from its terminal or stdin (`bash`, `sudo -i bash`, `sh -s`). */
export function startsBareShell(command: string): boolean {
  try {
    const f = shellFactsCached(command);
    return f.commands.some((c) => c.program !== null && SHELLS.has(c.program) && !c.flags.includes('c') && c.args.every((a) => a.startsWith('-')));
  } catch {
    return false;
  }
}

export function attachSession(ctx: ConnectionContext, s: Session): void {
  const session = new SshSession(ctx, s);
  ctx.onConnectionClose(() => void session.channelClosed());
}

class SshSession {
  private pty: PtySpec | undefined;
  private readonly env: Record<string, string> = {};
  private reason: string | undefined;
  private started = false;
  private finished = false;
  private ch: ServerChannel | null = null;
  private info: SessionInfo | null = null;
  private rec: SessionRecording | null = null;
  private masker: Masker | null = null;
  private proc: UpstreamProcess | null = null;
  private out: OutputPipe | null = null;
  private err: OutputPipe | null = null;
  private inputMasker: StreamMasker | null = null;
  private tracker: LineTracker | null = null;
  private term: TerminalLines | null = null;
  private plain: PlainLines | null = null;
  private exitOverride: number | undefined;
  private readonly abort = new AbortController();
  private lastActivity = Date.now();
  private holding = 0;
  private timers: NodeJS.Timeout[] = [];
  private stdinBytes = 0;
  private closeReason = 'exited';

  constructor(
    private readonly ctx: ConnectionContext,
    s: Session,
  ) {
    s.on('pty', (accept, reject, info) => {
      if (this.started || !ctx.auth.permissions.pty) return reject?.();
      this.pty = { term: info.term || 'xterm', cols: info.cols || 80, rows: info.rows || 24, width: info.width || 0, height: info.height || 0 };
      accept?.();
    });
    s.on('window-change', (accept, _reject, info) => {
      if (this.pty) Object.assign(this.pty, { cols: info.cols, rows: info.rows, width: info.width, height: info.height });
      this.proc?.resize({ cols: info.cols, rows: info.rows, width: info.width, height: info.height });
      this.tracker?.resize(info.cols, info.rows);
      this.rec?.resize(info.cols, info.rows);
      accept?.();
    });
    s.on('env', (accept, reject, info) => {
      if (this.started || !envAllowed(info.key) || typeof info.val !== 'string' || info.val.length > 4096) return reject?.();
      if (info.key === 'PORTCULLIS_REASON') this.reason = info.val;
      this.env[info.key] = info.val;
      accept?.();
    });
    s.on('signal', (accept, reject, info) => {
      if (!SIGNALS.has(info.name)) return reject?.();
      this.touch();
      this.proc?.signal(info.name);
      accept?.();
    });
    s.on('exec', (accept, _reject, info) => void this.start(accept, info.command));
    s.on('shell', (accept) => void this.start(accept, undefined));
    s.on('subsystem', (accept, _reject, info) => {
      if (info.name !== 'sftp' || this.started || !ctx.upstream().subsystem) return this.refuseChannel(accept, `the ${info.name} subsystem is not available on this bastion`);
      this.started = true;
      const sftp = new SftpSession(ctx);
      ctx.onConnectionClose(() => void sftp.end('client disconnected'));
      void sftp.start(accept);
    });
    s.on('x11', (_accept, reject) => reject?.());
    s.on('auth-agent', (_accept, reject) => reject?.());
  }

  private refuseChannel(accept: () => ServerChannel, message: string): void {
    if (this.started) return;
    this.started = true;
    const ch = accept();
    ch.stderr.write(`portcullis: ${message}\r\n`);
    ch.exit(1);
    ch.end();
  }

  private touch(): void {
    this.lastActivity = Date.now();
  }

  private async start(accept: () => ServerChannel, requested: string | undefined): Promise<void> {
    if (this.started) return;
    this.started = true;
    const ch = accept();
    this.ch = ch;
    ch.on('close', () => void this.channelClosed());
    ch.on('error', () => undefined);
    const ctx = this.ctx;
    const command = ctx.auth.forceCommand ?? requested;
    const meta: Record<string, string> = { connection: ctx.connectionId, channel: command === undefined ? 'shell' : 'exec', pty: this.pty ? `${this.pty.term} ${this.pty.cols}x${this.pty.rows}` : 'no', ...(ctx.via ? { via: ctx.via } : {}) };
    try {
      this.masker = sessionMasker(ctx.core.policy, ctx.identity, ctx.target, ctx.hmacKey);
      if (ctx.auth.forceCommand !== undefined && requested !== undefined) meta.requested = this.masker.maskText(requested.slice(0, 1024));
      this.info = await ctx.core.openSession({ protocol: 'ssh', target: ctx.target, identity: ctx.identity, remote: ctx.remote, meta, kill: (r) => void this.kill(r) });
      this.rec = ctx.core.record(this.info.id, {
        width: this.pty?.cols ?? 80,
        height: this.pty?.rows ?? 24,
        env: { TERM: this.pty?.term ?? this.env.TERM ?? 'dumb', SHELL: ctx.shell },
        title: `${ctx.identity.subject} → ${ctx.target}${command !== undefined ? `: ${this.masker.maskText(command.slice(0, 200))}` : ''}`,
      });
    } catch (e) {
      ctx.log.error('ssh session could not be opened', { error: (e as Error).message, target: ctx.target });
      return this.failEarly(`cannot open the session (${(e as Error).message}); refusing (fail closed)`);
    }
    if (this.finished) {
      // the agent went away while the session was being opened
      await ctx.core.closeSession(this.info.id, 'client disconnected').catch(() => undefined);
      return;
    }
    const masker = this.masker;
    const onError = (e: unknown) => ctx.log.error('ssh output masking failed', { session: this.info?.id, error: String(e) });
    this.out = new OutputPipe({ masker, sink: ch, record: (b) => this.rec?.output(b, 'stdout'), onFull: () => this.proc?.pause(), onDrain: () => this.proc?.resume(), interactive: !!this.pty, onError });
    this.err = new OutputPipe({ masker, sink: ch.stderr, record: (b) => this.rec?.output(b, 'stderr'), onFull: () => this.proc?.pause(), onDrain: () => this.proc?.resume(), onError });
    this.inputMasker = masker.streamMasker({ onOutput: (b) => this.rec?.input(b), onError });
    this.startTimers();
    try {
      if (command === undefined) await this.runShell();
      else await this.runExec(command);
    } catch (e) {
      ctx.log.error('ssh session failed', { session: this.info?.id, error: (e as Error).message });
      if (!this.finished) await this.finish({ code: null, error: (e as Error).message });
    }
  }

  private gateContext(signal?: AbortSignal): GateContext {
    const ctx = this.ctx;
    const g: GateContext = {
      core: ctx.core,
      session: this.info!.id,
      identity: ctx.identity,
      target: ctx.target,
      masker: this.masker!,
      recording: this.rec,
      signal: signal ? AbortSignal.any([this.abort.signal, signal]) : this.abort.signal,
    };
    if (this.reason !== undefined) g.reason = this.reason;
    return g;
  }

  private policyContext(): Pick<GateContext, 'core' | 'identity' | 'target' | 'reason'> {
    return { core: this.ctx.core, identity: this.ctx.identity, target: this.ctx.target, ...(this.reason !== undefined ? { reason: this.reason } : {}) };
  }

  private async decide(command: string, onHeld: (lines: string[]) => void, signal?: AbortSignal): Promise<GateResult> {
    this.holding++;
    try {
      return await gate(this.gateContext(signal), command, onHeld);
    } finally {
      this.holding--;
      this.touch();
    }
  }

  private stderrLines(lines: string[]): void {
    this.err?.notice(lines.map((l) => l + (this.pty ? '\r\n' : '\n')).join(''));
  }

  private async runExec(command: string): Promise<void> {
    const res = await this.decide(command, (lines) => this.stderrLines(lines));
    if (this.finished) return;
    if (!res.run) {
      this.stderrLines(res.notice);
      return this.finish({ code: 126 }, 'refused');
    }
    const proc = await this.open((u) => u.exec(command, { env: this.env, ...(this.pty ? { pty: this.pty } : {}) }));
    if (!proc) return;
    if (startsBareShell(command)) return this.pty ? this.terminal(proc) : this.script(proc);
    this.raw(proc);
  }

  private async runShell(): Promise<void> {
    const proc = await this.open((u) => u.shell({ env: this.env, ...(this.pty ? { pty: this.pty } : {}) }));
    if (!proc) return;
    if (this.pty) this.terminal(proc);
    else this.script(proc);
  }

  private async open(start: (u: Upstream) => Promise<UpstreamProcess>): Promise<UpstreamProcess | null> {
    let proc: UpstreamProcess;
    try {
      proc = await start(this.ctx.upstream());
    } catch (e) {
      this.ctx.log.warn('ssh target refused the session', { session: this.info?.id, target: this.ctx.target, error: (e as Error).message });
      await this.finish({ code: null, error: `target ${this.ctx.target}: ${(e as Error).message}` }, 'target unavailable');
      return null;
    }
    if (this.finished) {
      proc.close();
      return null;
    }
    this.proc = proc;
    proc.on('data', (b) => {
      this.touch();
      this.tracker?.feed(b);
      this.out?.write(b);
    });
    proc.on('stderr', (b) => {
      this.touch();
      this.err?.write(b);
    });
    proc.on('exit', (e) => void this.finish(e));
    return proc;
  }

  /** Data straight through (exec of an ordinary command). */
  private raw(proc: UpstreamProcess): void {
    const ch = this.ch!;
    ch.on('data', (b: Buffer) => {
      this.touch();
      this.recordStdin(b);
      if (!proc.write(b)) {
        ch.pause();
        proc.once('drain', () => ch.resume());
      }
    });
    ch.on('end', () => {
      if (!this.pty) proc.end();
    });
    proc.begin();
  }

  private recordStdin(b: Buffer): void {
    if (this.pty) {
      this.inputMasker?.write(b);
      return;
    }
    const before = this.stdinBytes;
    this.stdinBytes += b.length;
    if (before >= RECORD_STDIN_MAX) return;
    this.inputMasker?.write(b.subarray(0, RECORD_STDIN_MAX - before));
    if (this.stdinBytes >= RECORD_STDIN_MAX) this.rec?.marker(`stdin: recording stops after ${RECORD_STDIN_MAX} bytes`);
  }

  /** An interactive terminal: command lines read off the screen, Enter held until decided. */
  private terminal(proc: UpstreamProcess): void {
    const ch = this.ch!;
    const pty = this.pty!;
    const tracker = new LineTracker(pty.cols, pty.rows);
    this.tracker = tracker;
    const term = new TerminalLines({
      tracker,
      send: (s) => {
        proc.write(Buffer.from(s, 'utf8'));
      },
      notice: async (lines) => {
        const text = '\r\n' + lines.join('\r\n');
        this.out?.notice(text);
        await tracker.feedNotice(text);
      },
      wouldAllow: (command) => wouldAllow(this.policyContext(), command),
      decide: (command, others, signal) => {
        const pick = strictestReading(this.policyContext(), command, others);
        return this.decide(
          pick,
          (lines) => {
            const text = '\r\n' + lines.join('\r\n');
            this.out?.notice(text);
            void tracker.feedNotice(text);
          },
          signal,
        );
      },
      recordInput: (s) => this.inputMasker?.write(s),
      marker: (l) => this.rec?.marker(l),
      fail: (e) => void this.failed(e),
      abandon: (message) => void this.kill(message),
    });
    this.term = term;
    ch.on('data', (b: Buffer) => {
      this.touch();
      term.input(b);
    });
    proc.begin();
  }

  /** A shell without a terminal: stdin is a script, decided command by command. */
  private script(proc: UpstreamProcess): void {
    const ch = this.ch!;
    const plain = new PlainLines({
      send: (s) => proc.write(Buffer.from(s, 'utf8')),
      endInput: () => proc.end(),
      notice: (lines) => this.stderrLines(lines),
      decide: (command, signal) => this.decide(command, (lines) => this.stderrLines(lines), signal),
      recordInput: (s) => this.inputMasker?.write(s),
      refused: () => {
        this.exitOverride = 126;
      },
      pauseInput: () => ch.pause(),
      resumeInput: () => ch.resume(),
      fail: (e) => void this.failed(e),
    });
    this.plain = plain;
    ch.on('data', (b: Buffer) => {
      this.touch();
      plain.input(b);
    });
    ch.on('end', () => plain.end());
    proc.begin();
  }

  private startTimers(): void {
    const { idleTimeoutMs, maxDurationMs, revalidateMs, revalidate } = this.ctx.limits;
    if (revalidateMs && revalidate) {
      const t = setInterval(() => {
        void revalidate(this.ctx.identity).then(
          (r) => {
            if (!r.ok) void this.kill(`the credential is no longer valid: ${r.message}`);
          },
          (e: unknown) => this.ctx.log.warn('ssh proxy: credential revalidation failed', { session: this.info?.id, error: (e as Error).message }),
        );
      }, revalidateMs);
      t.unref();
      this.timers.push(t);
    }
    if (maxDurationMs) {
      const t = setTimeout(() => void this.kill(`the session reached its maximum duration (${Math.round(maxDurationMs / 1000)} s, session.max_duration)`), maxDurationMs);
      t.unref();
      this.timers.push(t);
    }
    if (idleTimeoutMs) {
      const every = Math.max(50, Math.min(5000, Math.floor(idleTimeoutMs / 10)));
      const t = setInterval(() => {
        if (this.holding > 0) return this.touch();
        if (Date.now() - this.lastActivity >= idleTimeoutMs) void this.kill(`idle for ${Math.round(idleTimeoutMs / 1000)} s (session.idle_timeout)`);
      }, every);
      t.unref();
      this.timers.push(t);
    }
  }

  /** The core (operator, timeout, shutdown) ends the session. */
  private async kill(reason: string): Promise<void> {
    if (this.finished) return;
    this.closeReason = `killed: ${reason}`;
    this.rec?.marker(`session ended by the bastion: ${reason}`);
    if (this.pty) this.out?.notice(`\r\nportcullis: session ended by the bastion: ${reason}\r\n`);
    else this.stderrLines([`portcullis: session ended by the bastion: ${reason}`]);
    this.abort.abort();
    this.proc?.close();
    await this.finish({ code: 255 }, this.closeReason);
    this.ctx.endConnection();
  }

  private async failed(e: unknown): Promise<void> {
    this.ctx.log.error('ssh session input handling failed', { session: this.info?.id, error: String(e) });
    this.proc?.close();
    await this.finish({ code: null, error: 'internal error; the session was closed (fail closed)' }, 'internal error');
  }

  private async failEarly(message: string): Promise<void> {
    const ch = this.ch;
    this.finished = true;
    if (ch && ch.writable) {
      ch.stderr.write(`portcullis: ${message}\n`);
      ch.exit(255);
      ch.end();
    }
    if (this.info) await this.ctx.core.closeSession(this.info.id, 'failed to start').catch(() => undefined);
  }

  private async finish(e: ExitInfo, reason?: string): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    for (const t of this.timers) clearTimeout(t);
    this.term?.close();
    this.plain?.close();
    this.abort.abort();
    if (e.error) this.stderrLines([`portcullis: ${e.error}`]);
    this.out?.end();
    this.err?.end();
    this.inputMasker?.end();
    this.inputMasker = null; // input arriving after the end is not recorded (and must not throw)
    if (!this.pty && this.stdinBytes > 0) this.rec?.marker(`stdin: ${this.stdinBytes} bytes`);
    const ch = this.ch;
    if (ch && ch.writable) {
      if (this.exitOverride !== undefined) ch.exit(this.exitOverride);
      else if (e.signal) ch.exit(e.signal, e.coreDumped === true, '');
      else ch.exit(e.code ?? 255);
      ch.end();
    }
    this.tracker?.dispose();
    this.tracker = null;
    const exit = this.exitOverride !== undefined ? { status: this.exitOverride } : e.signal ? { signal: e.signal } : { status: e.code ?? 255 };
    if (this.info) await this.ctx.core.closeSession(this.info.id, reason ?? this.closeReason, { exit }).catch((err: unknown) => this.ctx.log.error('ssh session close failed', { error: String(err) }));
  }

  /** The agent closed the channel or went away. */
  async channelClosed(): Promise<void> {
    this.abort.abort();
    if (this.finished) return;
    this.closeReason = 'client disconnected';
    this.proc?.close();
    await this.finish({ code: null }, 'client disconnected');
  }
}
