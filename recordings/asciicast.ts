// asciicast v2 writer: one JSON header line, then one `[time, code, data]` line per event
// (https://docs.asciinema.org/manual/asciicast/v2/). Streaming: events are appended as they
// happen, text is decoded per stream across chunk boundaries (a UTF-8 character split between two
// reads is written once, whole), and the SHA-256 of every byte written is kept so that the
// session-end audit event can bind the file into the audit chain. Callers pass data that is
// already masked: the writer never sees a secret.
import { createHash, type Hash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';

export interface CastHeader {
  width: number;
  height: number;
  /** Unix seconds of the start (default: now). */
  timestamp?: number;
  title?: string;
  env?: Record<string, string>;
  idle_time_limit?: number;
}

export interface CastSummary {
  path: string;
  bytes: number;
  events: number;
  sha256: string;
  /** True when the size cap was reached and later output was dropped (a marker says so). */
  truncated: boolean;
}

export interface CastWriterOptions {
  /** Stop recording output after this many bytes (a final marker records the cut). Default 1 GiB. */
  maxBytes?: number;
  /** fsync after this many bytes written since the last fsync (default 1 MiB; 0 = only at close). */
  syncEvery?: number;
  /** Clock (ms), for tests. Default: monotonic (a wall-clock step never makes time go back). */
  now?: () => number;
}

export type CastEventCode = 'o' | 'i' | 'r' | 'm';

/** The recording of a session: `<data-dir>/recordings/<session-id>.cast`. */
export function recordingPath(dataDir: string, session: string): string {
  return join(dataDir, 'recordings', `${session}.cast`);
}

export class CastWriter {
  private readonly fd: number;
  private readonly hash: Hash = createHash('sha256');
  private readonly started: number;
  private readonly now: () => number;
  private readonly maxBytes: number;
  private readonly syncEvery: number;
  private readonly decoders = { o: new StringDecoder('utf8'), i: new StringDecoder('utf8') };
  private bytes = 0;
  private unsynced = 0;
  private events = 0;
  private truncated = false;
  private lastOffset = 0;
  private closed: CastSummary | null = null;

  private constructor(
    readonly path: string,
    header: CastHeader,
    opts: CastWriterOptions,
  ) {
    this.now = opts.now ?? (() => performance.now());
    this.started = this.now();
    if (!Number.isInteger(header.width) || header.width < 1 || !Number.isInteger(header.height) || header.height < 1) {
      throw new RangeError(`asciicast: width and height must be positive integers (got ${header.width}x${header.height})`);
    }
    this.maxBytes = opts.maxBytes ?? 1024 ** 3;
    this.syncEvery = opts.syncEvery ?? 1024 * 1024;
    mkdirSync(dirname(path), { recursive: true, mode: 0o750 });
    this.fd = openSync(path, 'wx', 0o640);
    const h: Record<string, unknown> = { version: 2, width: header.width, height: header.height, timestamp: header.timestamp ?? Math.floor(Date.now() / 1000) };
    if (header.idle_time_limit !== undefined) h.idle_time_limit = header.idle_time_limit;
    if (header.title !== undefined) h.title = header.title;
    if (header.env !== undefined) h.env = header.env;
    this.line(JSON.stringify(h));
  }

  /** Create the file (it must not exist yet) and write the header. */
  static open(path: string, header: CastHeader, opts: CastWriterOptions = {}): CastWriter {
    return new CastWriter(path, header, opts);
  }

  /** Terminal output (already masked). */
  output(data: string | Buffer): void {
    this.text('o', data);
  }

  /** Terminal input (already masked; callers drop echo-off input such as passwords). */
  input(data: string | Buffer): void {
    this.text('i', data);
  }

  resize(cols: number, rows: number): void {
    if (!Number.isInteger(cols) || cols < 1 || !Number.isInteger(rows) || rows < 1) return;
    this.event('r', `${cols}x${rows}`);
  }

  /** A marker (shown as a chapter by asciinema-player), e.g. at each decided command. */
  marker(label: string): void {
    this.event('m', label);
  }

  /** Seconds since the start, as written in events (for linking approvals to an offset). */
  offset(): number {
    // Non-decreasing, as asciicast readers require.
    this.lastOffset = Math.max(this.lastOffset, Math.round(this.now() - this.started) / 1000);
    return this.lastOffset;
  }

  get summary(): { bytes: number; events: number } {
    return { bytes: this.bytes, events: this.events };
  }

  /** Flush pending partial characters, fsync and close. Idempotent. */
  close(): CastSummary {
    if (this.closed) return this.closed;
    for (const code of ['o', 'i'] as const) {
      const rest = this.decoders[code].end();
      if (rest) this.event(code, rest);
    }
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.closed = { path: this.path, bytes: this.bytes, events: this.events, sha256: this.hash.digest('hex'), truncated: this.truncated };
    return this.closed;
  }

  private text(code: 'o' | 'i', data: string | Buffer): void {
    const s = typeof data === 'string' ? data : this.decoders[code].write(data);
    if (s) this.event(code, s);
  }

  private event(code: CastEventCode, data: string): void {
    if (this.closed || this.truncated) return;
    const b = Buffer.from(`[${this.offset()}, ${JSON.stringify(code)}, ${JSON.stringify(data)}]\n`, 'utf8');
    if (this.bytes + b.length > this.maxBytes && code !== 'm') {
      this.truncated = true;
      this.line(`[${this.offset()}, "m", ${JSON.stringify(`recording stopped: size cap of ${this.maxBytes} bytes reached`)}]`);
      return;
    }
    this.write(b);
    this.events++;
  }

  private line(l: string): void {
    this.write(Buffer.from(l + '\n', 'utf8'));
  }

  private write(b: Buffer): void {
    writeSync(this.fd, b);
    this.hash.update(b);
    this.bytes += b.length;
    this.unsynced += b.length;
    if (this.syncEvery > 0 && this.unsynced >= this.syncEvery) {
      fsyncSync(this.fd);
      this.unsynced = 0;
    }
  }
}
