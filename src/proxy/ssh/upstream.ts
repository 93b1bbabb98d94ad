// One upstream abstraction for both kinds of SSH target: a local program (node-pty for terminals,
// a plain child process for exec without a terminal) and a remote host (an ssh2 client). The
// session code only sees `UpstreamProcess`: bytes out (stdout, stderr), bytes in, EOF, window
// changes, signals, and one `exit` after the last output byte.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';

export interface PtySpec {
  term: string;
  cols: number;
  rows: number;
  width: number;
  height: number;
}

/** How the target's program ended: an exit status, or a signal (name without `SIG`). */
export interface ExitInfo {
  code: number | null;
  signal?: string;
  coreDumped?: boolean;
  /** Why there is neither (the target went away), for the agent's stderr. */
  error?: string;
}

export interface UpstreamEvents {
  /** stdout (or the terminal's output). */
  data: [Buffer];
  stderr: [Buffer];
  /** Writing to stdin may continue. */
  drain: [];
  /** Once, after all output was emitted. */
  exit: [ExitInfo];
}

export abstract class UpstreamProcess extends EventEmitter<UpstreamEvents> {
  private exited = false;
  /** Events before the consumer called begin() (a fast program can finish before it listens). */
  private early: [keyof UpstreamEvents, unknown[]][] | null = [];

  /** The consumer listens now: deliver what happened so far, then everything as it happens. */
  begin(): void {
    const q = this.early;
    this.early = null;
    for (const [ev, args] of q ?? []) (this.emit as (e: string, ...a: unknown[]) => boolean)(ev, ...args);
  }

  override emit<K extends keyof UpstreamEvents>(event: K, ...args: UpstreamEvents[K]): boolean {
    if (this.early) {
      this.early.push([event, args]);
      return true;
    }
    return super.emit(event as keyof UpstreamEvents, ...(args as never));
  }
  /** Write to stdin; false: wait for `drain`. */
  abstract write(b: Buffer): boolean;
  /** EOF on stdin. */
  abstract end(): void;
  abstract resize(p: Pick<PtySpec, 'cols' | 'rows' | 'width' | 'height'>): void;
  /** Deliver a signal (`INT`, `TERM`, …). */
  abstract signal(name: string): void;
  /** Stop / restart reading output (the agent's side is full). */
  abstract pause(): void;
  abstract resume(): void;
  /** End the program and release everything (idempotent). */
  abstract close(): void;

  protected finish(e: ExitInfo): void {
    if (this.exited) return;
    this.exited = true;
    this.emit('exit', e);
  }

  get hasExited(): boolean {
    return this.exited;
  }
}

export interface StartOptions {
  pty?: PtySpec;
  /** Allow-listed environment (LANG, LC_*, TERM, PORTCULLIS_REASON). */
  env: Record<string, string>;
}

/** A connection to one target for one agent connection; several sessions may share it. */
export interface Upstream {
  readonly kind: 'local' | 'remote';
  exec(command: string, o: StartOptions): Promise<UpstreamProcess>;
  shell(o: StartOptions): Promise<UpstreamProcess>;
  /** Prompt markers (OSC 133) are known to come with this target's interactive shell. */
  readonly promptMarks: boolean;
  /** A subsystem (`sftp`) as a raw byte stream (forward: local.ts runs the system's sftp-server). */
  subsystem?(name: string): Promise<UpstreamProcess>;
  /** A TCP connection from the target's side to dstHost:dstPort (remote targets: ssh2 forwardOut). */
  forwardOut?(src: { host: string; port: number }, dst: { host: string; port: number }): Promise<Duplex>;
  /**
   * A listener on the target's side (remote targets: ssh2 `forwardIn`, i.e. the target's sshd
   * binds it); each incoming connection is offered to `onConnection` (accept gives its stream).
   * Resolves with the bound port and a `close` that cancels the listener (`unforwardIn`).
   */
  forwardIn?(bindAddr: string, bindPort: number, onConnection: (c: ForwardedConnection) => void): Promise<{ port: number; close(): void }>;
  close(): void;
}

/** One connection to a forwardIn listener, from `srcIP:srcPort` on the target's side. */
export interface ForwardedConnection {
  srcIP: string;
  srcPort: number;
  accept(): Duplex;
  reject(): void;
}

/** Signal names an agent may send (RFC 4254 6.9). */
export const SIGNALS = new Set(['ABRT', 'ALRM', 'FPE', 'HUP', 'ILL', 'INT', 'KILL', 'PIPE', 'QUIT', 'SEGV', 'TERM', 'USR1', 'USR2']);
