// Reading the audit log: `audit search` (readAudit, a filtered streaming scan) and
// `audit tail [-n N] [-f]` (tailAudit: the last N events read from the end of the file, then,
// with follow, new events as they are appended). Neither reads the whole file into memory. A last
// line without its newline (a write in progress) is not returned until it is complete. These
// readers do not verify the chain: that is `verifyAudit`.

import { promises as fsp } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { PortcullisError } from '../policy/types.js';
import { auditPaths, readLastLines, readLines, type AuditEvent } from './audit-common.js';

export type { AuditEvent } from './audit-common.js';

export interface AuditFilter {
  /** identity.subject equals. */
  subject?: string;
  target?: string;
  /** decision.effect equals (allow | deny | review). */
  effect?: string;
  protocol?: string;
  type?: string;
  session?: string;
  /** time >= since. */
  since?: Date;
  /** time < until. */
  until?: Date;
  /** Case-insensitive substring of the event (any field but prev/hash). */
  text?: string;
  /** Only decisions a shadow rule or budget (`mode: shadow`) would have changed. */
  shadow?: boolean;
  /** Stop after this many matches (in log order, oldest first). */
  limit?: number;
}

/** Whether an event passes a filter. */
export function matchesAudit(ev: AuditEvent, f: AuditFilter): boolean {
  if (f.subject !== undefined && ev.identity?.subject !== f.subject) return false;
  if (f.target !== undefined && ev.target !== f.target) return false;
  if (f.effect !== undefined && ev.decision?.effect !== f.effect) return false;
  if (f.protocol !== undefined && ev.protocol !== f.protocol) return false;
  if (f.type !== undefined && ev.type !== f.type) return false;
  if (f.session !== undefined && ev.session !== f.session) return false;
  if (f.shadow && (typeof ev.data?.shadow !== 'object' || ev.data.shadow === null)) return false;
  if (f.since !== undefined || f.until !== undefined) {
    const t = Date.parse(ev.time);
    if (f.since !== undefined && !(t >= f.since.getTime())) return false;
    if (f.until !== undefined && !(t < f.until.getTime())) return false;
  }
  if (f.text !== undefined && f.text !== '') {
    const { prev: _prev, hash: _hash, ...rest } = ev;
    if (!JSON.stringify(rest).toLowerCase().includes(f.text.toLowerCase())) return false;
  }
  return true;
}

function parseLine(text: string, line: number | null, file: string): AuditEvent {
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as AuditEvent;
  } catch {
    // fall through
  }
  throw new PortcullisError('audit_corrupt_line', `audit: ${line !== null ? `line ${line}` : 'a line'} of ${file} is not a JSON event (run \`portcullis audit verify\`)`, {
    path: file,
    ...(line !== null ? { line } : {}),
  });
}

function validateFilter(f: AuditFilter): void {
  for (const k of ['since', 'until'] as const) {
    const d = f[k];
    if (d !== undefined && (!(d instanceof Date) || Number.isNaN(d.getTime()))) {
      throw new PortcullisError('audit_bad_filter', `audit: filter.${k} must be a valid Date`, { field: k });
    }
  }
  if (f.limit !== undefined && (!Number.isInteger(f.limit) || f.limit < 0)) {
    throw new PortcullisError('audit_bad_filter', `audit: filter.limit must be a non-negative integer (got ${String(f.limit)})`, { field: 'limit' });
  }
}

/** The events that pass `filter`, oldest first, streamed from the log. */
export async function* readAudit(dataDir: string, filter: AuditFilter = {}): AsyncGenerator<AuditEvent> {
  validateFilter(filter);
  const file = auditPaths(dataDir).log;
  const limit = filter.limit ?? Infinity;
  if (limit === 0) return;
  let found = 0;
  for await (const raw of readLines(file)) {
    if (!raw.terminated) return; // a write in progress
    if (raw.text === '') continue;
    const ev = parseLine(raw.text, raw.line, file);
    if (!matchesAudit(ev, filter)) continue;
    yield ev;
    found++;
    if (found >= limit) return;
  }
}

export interface AuditTailOptions {
  /** How often follow mode looks for new lines, ms. Default 250. */
  pollMs?: number;
  /** Only events passing this filter (limit is ignored). */
  filter?: AuditFilter;
}

/**
 * The last `n` events (oldest first); with `follow`, then every event appended after them until
 * `signal` aborts or the consumer stops iterating. A log that shrinks while followed throws
 * `audit_truncated`.
 */
export async function* tailAudit(dataDir: string, n = 10, follow = false, signal?: AbortSignal, opts: AuditTailOptions = {}): AsyncGenerator<AuditEvent> {
  if (!Number.isInteger(n) || n < 0) throw new PortcullisError('audit_bad_filter', `audit tail: n must be a non-negative integer (got ${String(n)})`);
  const filter: AuditFilter = { ...(opts.filter ?? {}), limit: undefined };
  validateFilter(filter);
  const pollMs = opts.pollMs ?? 250;
  const file = auditPaths(dataDir).log;

  let pos = 0;
  if (filter.subject === undefined && filter.target === undefined && filter.effect === undefined && filter.protocol === undefined && filter.type === undefined && filter.session === undefined && filter.since === undefined && filter.until === undefined && !filter.text && !filter.shadow) {
    const tail = await readLastLines(file, n);
    for (const text of tail.lines) yield parseLine(text, null, file);
    pos = tail.completeEnd;
  } else {
    // With a filter the last n *matching* events: scan once, keep a ring of n.
    const ring: AuditEvent[] = [];
    for await (const raw of readLines(file)) {
      if (!raw.terminated) break;
      pos = raw.offset + Buffer.byteLength(raw.text) + 1;
      if (raw.text === '') continue;
      const ev = parseLine(raw.text, raw.line, file);
      if (!matchesAudit(ev, filter)) continue;
      ring.push(ev);
      if (ring.length > n) ring.shift();
    }
    yield* ring;
  }
  if (!follow) return;

  const CHUNK = 1024 * 1024;
  let carry = Buffer.alloc(0);
  // Runs until aborted or the consumer returns; each iteration reads new bytes or sleeps.
  while (!signal?.aborted) {
    let size = 0;
    try {
      size = (await fsp.stat(file)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (size < pos + carry.length) {
      throw new PortcullisError('audit_truncated', `audit tail: ${file} shrank from ${pos + carry.length} to ${size} bytes while followed`, { path: file });
    }
    const readFrom = pos + carry.length;
    if (size > readFrom) {
      const len = Math.min(CHUNK, size - readFrom);
      const buf = Buffer.alloc(len);
      const fh = await fsp.open(file, 'r');
      let got: number;
      try {
        got = (await fh.read(buf, 0, len, readFrom)).bytesRead;
      } finally {
        await fh.close();
      }
      let data = Buffer.concat([carry, buf.subarray(0, got)]);
      let nl = data.indexOf(0x0a);
      while (nl >= 0) {
        const text = data.subarray(0, nl).toString('utf8');
        pos += nl + 1;
        data = data.subarray(nl + 1);
        if (text !== '') {
          const ev = parseLine(text, null, file);
          if (matchesAudit(ev, filter)) yield ev;
          if (signal?.aborted) return;
        }
        nl = data.indexOf(0x0a);
      }
      carry = Buffer.from(data);
      continue;
    }
    try {
      await sleep(pollMs, undefined, signal ? { signal } : undefined);
    } catch {
      return; // aborted
    }
  }
}
