// The recording of a PostgreSQL session: JSON lines in `<dataDir>/recordings/<session>.pg.jsonl`,
// one header line, one line per statement (as audited: masked; its decision, rows, duration and
// up to three masked sample rows), one closing line. Everything written here has already been
// masked by the caller; this module only serializes and appends (buffered, in order).

import fs from 'node:fs';
import path from 'node:path';
import type { Identity } from '../../policy/types.js';

export const TRANSCRIPT_VERSION = 1;
export const MAX_SAMPLE_ROWS = 3;
/** Longest statement text kept in a transcript line (longer ones are cut, with a marker). */
const MAX_STATEMENT_CHARS = 64 * 1024;
/** Longest sample cell kept. */
const MAX_CELL_CHARS = 256;
/** Longest time a transcript line waits in memory before it is written. */
const FLUSH_MS = 100;

export interface TranscriptHeader {
  type: 'session';
  v: number;
  session: string;
  protocol: 'postgres';
  target: string;
  identity: Identity;
  remote?: string;
  database?: string;
  applicationName?: string;
  time: string;
}

export interface StatementEntry {
  type: 'statement';
  time: string;
  session: string;
  /** 'simple' (Query), 'extended' (Parse … Execute), 'startup' (connection settings). */
  protocol: 'simple' | 'extended' | 'startup';
  /** The statement text as audited (masked). */
  statement: string;
  /** Bound parameters (extended protocol), masked. */
  params?: (string | null)[];
  decision: { effect: string; rule: string; reason: string };
  /** Audit sequence number of the decision. */
  seq?: number | null;
  approval?: { id: string; state: string; by?: string };
  /** Command tag(s) from CommandComplete. */
  command?: string;
  rows?: number;
  durationMs?: number;
  columns?: string[];
  sample?: (string | null)[][];
  error?: { code: string; message: string };
  /** Extended protocol: the execution stopped at its row limit (PortalSuspended). */
  suspended?: boolean;
}

export interface TranscriptEnd {
  type: 'end';
  time: string;
  session: string;
  reason: string;
}

export type TranscriptLine = TranscriptHeader | StatementEntry | TranscriptEnd;

export function clipStatement(s: string): string {
  return s.length > MAX_STATEMENT_CHARS ? s.slice(0, MAX_STATEMENT_CHARS) + `… [${s.length - MAX_STATEMENT_CHARS} more characters]` : s;
}

export function clipCell(s: string | null): string | null {
  if (s === null) return null;
  return s.length > MAX_CELL_CHARS ? s.slice(0, MAX_CELL_CHARS) + '…' : s;
}

/** Appends transcript lines for one session. Write errors are reported once, not thrown. */
export class TranscriptWriter {
  readonly file: string;
  private stream: fs.WriteStream | null;
  private failed = false;
  private pending: string[] = [];
  private pendingBytes = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    dir: string,
    session: string,
    private readonly onError: (e: Error) => void = () => undefined,
  ) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o750 });
    this.file = path.join(dir, `${session}.pg.jsonl`);
    this.stream = fs.createWriteStream(this.file, { flags: 'a', mode: 0o640 });
    this.stream.on('error', (e) => {
      if (!this.failed) {
        this.failed = true;
        this.onError(e);
      }
    });
  }

  /**
   * Lines are coalesced and written at most every `FLUSH_MS` (or at 64 KiB): a transcript is a
   * record for replay, not the audit log (which is written ahead of every request by the core).
   */
  write(line: TranscriptLine): void {
    if (!this.stream || this.failed) return;
    const text = JSON.stringify(line) + '\n';
    this.pending.push(text);
    this.pendingBytes += text.length;
    if (this.pendingBytes >= 64 * 1024) this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), FLUSH_MS);
      this.timer.unref();
    }
  }

  /** Writes what is pending now. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.pending.length === 0 || !this.stream) return;
    const data = this.pending.length === 1 ? this.pending[0]! : this.pending.join('');
    this.pending = [];
    this.pendingBytes = 0;
    this.stream.write(data);
  }

  close(): Promise<void> {
    this.flush();
    const s = this.stream;
    this.stream = null;
    if (!s) return Promise.resolve();
    return new Promise((resolve) => s.end(() => resolve()));
  }
}

/** Reads a transcript back (for `portcullis replay` and the tests). */
export function readTranscript(file: string): TranscriptLine[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: TranscriptLine[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    out.push(JSON.parse(line) as TranscriptLine);
  }
  return out;
}
