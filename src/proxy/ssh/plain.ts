// A shell without a terminal (`ssh -T bastion < script`, `echo cmd | ssh bastion`, or an exec
// that starts a bare shell): stdin is a script. It is split into lines; a line that does not
// complete a command yet (open quote, `for` … `done`, here-document) waits for the lines that
// complete it; each complete command is decided before it is written to the target's stdin.
// The first refused command ends the script: the reason goes to stderr, the target's stdin is
// closed (what was allowed before still runs to its end) and the session's exit status is 126.
import { StringDecoder } from 'node:string_decoder';
import type { GateResult } from './gate.js';
import { isIncomplete } from './incomplete.js';

export interface PlainHost {
  send(s: string): boolean;
  endInput(): void;
  /** Lines for the agent's stderr. */
  notice(lines: string[]): void;
  decide(command: string, abort: AbortSignal): Promise<GateResult>;
  recordInput(s: string): void;
  /** The script was cut short by a refusal: report exit status 126. */
  refused(): void;
  /** Backpressure: stop / resume reading the agent's stdin. */
  pauseInput(): void;
  resumeInput(): void;
  fail(e: unknown): void;
}

/** Longest single command accepted (bytes); beyond it the script is refused. */
const MAX_COMMAND = 1024 * 1024;

export class PlainLines {
  private queue: Promise<void> = Promise.resolve();
  private readonly decoder = new StringDecoder('utf8');
  private buf = '';
  private pending: string | null = null;
  private stopped = false;
  private readonly abort = new AbortController();

  constructor(private readonly h: PlainHost) {}

  input(b: Buffer): void {
    if (this.stopped) return;
    const s = this.decoder.write(b);
    this.h.pauseInput();
    this.queue = this.queue
      .then(() => this.handle(s, false))
      .then(() => this.h.resumeInput())
      .catch((e: unknown) => this.h.fail(e));
  }

  /** EOF from the agent. */
  end(): void {
    this.queue = this.queue.then(() => this.handle(this.decoder.end(), true)).catch((e: unknown) => this.h.fail(e));
  }

  close(): void {
    this.stopped = true;
    this.abort.abort();
  }

  private async handle(s: string, eof: boolean): Promise<void> {
    if (this.stopped) return;
    this.buf += s;
    let nl: number;
    while (!this.stopped && (nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      await this.line(line, true);
    }
    if (this.stopped) return;
    if (eof) {
      if (this.buf) await this.line(this.buf, false);
      this.buf = '';
      if (!this.stopped && this.pending !== null) {
        // an incomplete command at the end of the script: decided as it is (it cannot parse: refused)
        const p = this.pending;
        this.pending = null;
        await this.command(p, false);
      }
      if (!this.stopped) this.h.endInput();
    } else if (this.buf.length > MAX_COMMAND) {
      this.stop(['portcullis: a command line longer than 1 MiB was refused']);
    }
  }

  private async line(text: string, newline: boolean): Promise<void> {
    const full = this.pending === null ? text : `${this.pending}\n${text}`;
    if (this.pending === null && !text.trim()) {
      this.h.send(text + (newline ? '\n' : ''));
      return;
    }
    if (isIncomplete(full)) {
      if (full.length > MAX_COMMAND) return this.stop(['portcullis: a command longer than 1 MiB was refused']);
      this.pending = full;
      return;
    }
    this.pending = null;
    await this.command(full, newline);
  }

  private async command(text: string, newline: boolean): Promise<void> {
    const res = await this.h.decide(text, this.abort.signal);
    this.h.recordInput(text + '\n');
    if (res.run) {
      this.h.send(text + (newline ? '\n' : ''));
      return;
    }
    this.stop(res.notice);
  }

  private stop(notice: string[]): void {
    this.stopped = true;
    this.h.notice(notice);
    this.h.refused();
    this.h.endInput();
  }
}
