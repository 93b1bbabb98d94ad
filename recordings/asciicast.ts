// asciicast v2 writer: one JSON header line, then one `[time, code, data]` line per event
// (https://docs.asciinema.org/manual/asciicast/v2/). Streaming: events are appended as they
// happen, text is decoded per stream across chunk boundaries (a UTF-8 character split between two
// reads is written once, whole), and the SHA-256 of every byte written is kept so that the
// session-end audit event can bind the file into the audit chain. Callers pass data that is
// already masked: the writer never sees a secret.
// Rotation: when a part reaches `maxFileBytes`, it is fsynced and closed and the recording goes on
// in `<session>.<n>.cast` (n = 1, 2, …) with a fresh header (same size, the part's start time) and
// a first marker `continued from part n-1`; event times keep counting from the session start, so
// the parts read in order (header of the first, events of all) replay as one recording. Every
// part's SHA-256 is in the summary (`parts`), which `session.close` binds into the audit chain.
import { createHash, type Hash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { DEFAULT_RECORDINGS, type RecordingsConfig } from '../src/config/recordings.js';

export interface CastHeader {
  width: number;
  height: number;
  /** Unix seconds of the start (default: now). */
  timestamp?: number;
  title?: string;
  env?: Record<string, string>;
  idle_time_limit?: number;
}

export interface CastPart {
  path: string;
  bytes: number;
  sha256: string;
}

export interface CastSummary {
  /** The first part (`<session>.cast`): its path, size and SHA-256. */
  path: string;
  bytes: number;
  events: number;
  sha256: string;
  /** True when the size cap was reached and later output was dropped (a marker says so). */
  truncated: boolean;
  /** Every part in order, the first included, when the recording was rotated (more than one part). */
  parts?: CastPart[];
  /** Bytes of all parts together (with `parts`). */
  total_bytes?: number;
}

export interface CastWriterOptions {
  /** Stop recording output after this many bytes over all parts (a final marker records the cut). Default 1 GiB. */
  maxBytes?: number;
  /** Rotate to a new part file before one would exceed this many bytes. Default: no rotation. */
  maxFileBytes?: number;
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

/** Part n of a rotated recording: part 0 is `<base>.cast`, part n is `<base>.<n>.cast`. */
export function partPath(first: string, n: number): string {
  return n === 0 ? first : `${first.slice(0, -'.cast'.length)}.${n}.cast`;
}

/** Writer options from the `recordings` config (src/config/recordings.ts); defaults without one. */
export function castWriterOptions(c: RecordingsConfig | undefined): CastWriterOptions {
  const r = c ?? DEFAULT_RECORDINGS;
  return { maxFileBytes: r.maxFileBytes, maxBytes: r.maxSessionBytes, syncEvery: r.fsync === 'close' ? 0 : 1024 * 1024 };
}

export class CastWriter {
  private fd: number;
  private hash: Hash = createHash('sha256');
  private readonly started: number;
  private readonly now: () => number;
  private readonly maxBytes: number;
  private readonly maxFileBytes: number;
  private readonly syncEvery: number;
  private readonly header: CastHeader;
  private readonly parts: CastPart[] = [];
  private partPath: string;
  private partBytes = 0;
  private partEvents = 0;
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
    if (!path.endsWith('.cast')) throw new RangeError(`asciicast: the recording file name must end in .cast (got ${path})`);
    this.maxBytes = opts.maxBytes ?? 1024 ** 3;
    this.maxFileBytes = opts.maxFileBytes ?? Infinity;
    if (!(this.maxFileBytes >= 4096)) throw new RangeError(`asciicast: maxFileBytes must be at least 4096 (got ${this.maxFileBytes})`);
    this.syncEvery = opts.syncEvery ?? 1024 * 1024;
    this.header = header;
    mkdirSync(dirname(path), { recursive: true, mode: 0o750 });
    this.partPath = path;
    this.fd = openSync(path, 'wx', 0o640);
    this.writeHeader(header.timestamp ?? Math.floor(Date.now() / 1000));
  }

  private writeHeader(timestamp: number): void {
    const header = this.header;
    const h: Record<string, unknown> = { version: 2, width: header.width, height: header.height, timestamp };
    if (header.idle_time_limit !== undefined) h.idle_time_limit = header.idle_time_limit;
    if (header.title !== undefined) h.title = header.title;
    if (header.env !== undefined) h.env = header.env;
    this.line(JSON.stringify(h));
  }

  /** Close the current part (fsync) and go on in the next one. */
  private rotate(): void {
    const n = this.parts.length + 1;
    const next = partPath(this.path, n);
    // Opened first: if it fails (the file exists, no space), the current part stays open and whole.
    const fd = openSync(next, 'wx', 0o640);
    this.closePart();
    this.partPath = next;
    this.fd = fd;
    this.hash = createHash('sha256');
    this.partBytes = 0;
    this.partEvents = 0;
    this.writeHeader(Math.floor(Date.now() / 1000));
    // The time of the event that did not fit (already taken): times never go back.
    const m = Buffer.from(`[${this.lastOffset}, "m", ${JSON.stringify(`continued from part ${n - 1}`)}]\n`, 'utf8');
    this.write(m);
    this.events++;
    this.partEvents++;
  }

  private closePart(): void {
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.unsynced = 0;
    this.parts.push({ path: this.partPath, bytes: this.partBytes, sha256: this.hash.digest('hex') });
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

  /** Bytes (over all parts), events and parts so far (the current one counts). */
  get summary(): { bytes: number; events: number; parts: number } {
    return { bytes: this.bytes, events: this.events, parts: this.parts.length + (this.closed ? 0 : 1) };
  }

  /** Flush pending partial characters, fsync and close. Idempotent. */
  close(): CastSummary {
    if (this.closed) return this.closed;
    for (const code of ['o', 'i'] as const) {
      const rest = this.decoders[code].end();
      if (rest) this.event(code, rest);
    }
    this.closePart();
    const first = this.parts[0]!;
    this.closed = { path: this.path, bytes: first.bytes, events: this.events, sha256: first.sha256, truncated: this.truncated };
    if (this.parts.length > 1) Object.assign(this.closed, { parts: this.parts, total_bytes: this.bytes });
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
    // Rotate before this event would overflow the part (a part holds at least one event; the
    // final "recording stopped" marker may overflow it by one line).
    if (this.partBytes + b.length > this.maxFileBytes && this.partHasEvents()) this.rotate();
    this.write(b);
    this.events++;
    this.partEvents++;
  }

  private partHasEvents(): boolean {
    // A fresh part holds its header (and, after part 0, the "continued" marker) only.
    return this.partEvents > (this.parts.length === 0 ? 0 : 1);
  }

  private line(l: string): void {
    this.write(Buffer.from(l + '\n', 'utf8'));
  }

  private write(b: Buffer): void {
    writeSync(this.fd, b);
    this.hash.update(b);
    this.bytes += b.length;
    this.partBytes += b.length;
    this.unsynced += b.length;
    if (this.syncEvery > 0 && this.unsynced >= this.syncEvery) {
      fsyncSync(this.fd);
      this.unsynced = 0;
    }
  }
}
