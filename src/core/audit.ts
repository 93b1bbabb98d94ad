// The write-ahead, hash-chained audit log (ARCHITECTURE.md "Write-ahead audit").
//
// <dataDir>/audit/audit.jsonl holds one event per line. Every event names the hash of the line
// before it (`prev`) and its own hash (SHA-256 over the canonical JSON of the event without
// `hash`). Every `checkpointEvery` events, and on close, a `checkpoint` event signs the head of
// the chain with the Ed25519 key in <dataDir>/keys/; <dataDir>/audit/HEAD.json names the last
// durable event, signed the same way, so that a truncated tail is detectable. HEAD.json is
// rewritten (tmp + rename) after durable batches, at most every `headEveryMs` (default 100 ms;
// 0 = after every batch), never ahead of what is fsynced; flush() and close() rewrite it fsynced.
//
// Ordering and concurrency: `append` assigns seq, prev and hash synchronously, so the chain is
// correct however many callers interleave. Lines go to disk through a single writer loop: every
// append that arrives while a write is in flight joins the next batch, written with one write().
// A separate syncer runs fdatasync(): one fsync covers every line written before it started, and
// every durable line written while it runs shares the next one — group commit, as PostgreSQL
// does with its WAL. The writer never waits for the syncer, so a read's append is not delayed by
// a running fsync (timer or durable batch): it settles as soon as its line is written.
//
// Durability: sync 'always' fsyncs before resolving every append; 'writes' only those appended
// with { durable: true } (state changes, denials, approvals); 'interval' never waits for fsync.
// Non-durable lines are fsynced by a timer (intervalMs, default 200 ms). A failed write or fsync
// rejects every pending append with `audit_write_failed` and the log refuses all further appends
// until it is reopened: the caller must then refuse the request (fail closed).

import type { FileHandle } from 'node:fs/promises';
import { promises as fsp, writeSync } from 'node:fs';
import path from 'node:path';
import { PortcullisError } from '../policy/types.js';
import { canonicalJson } from './canonical-json.js';
import * as nodeCrypto from 'node:crypto';
import {
  auditPaths,
  CHECKPOINT_TYPE,
  eventShapeProblem,
  GENESIS_PREV,
  hashEvent,
  loadOrCreateKeys,
  readHead,
  readLastLines,
  signCheckpoint,
  verifyCheckpointSig,
  writeHead,
  type AuditDecision,
  type AuditEvent,
  type AuditIdentity,
  type AuditInput,
  type AuditKeys,
  type AuditPaths,
  type CheckpointData,
} from './audit-common.js';

export type { AuditDecision, AuditEvent, AuditIdentity, AuditInput, CheckpointData } from './audit-common.js';

export type AuditSyncMode = 'always' | 'writes' | 'interval';

/** Turns the caller's request into what is stored (already masked). Returning undefined stores none. */
export type AuditSummarize = (request: unknown) => Record<string, unknown> | undefined;

/** The two I/O operations of the writer; injectable for tests and instrumentation. */
export interface AuditIo {
  /** Write all of `data` at the end of the file. */
  write(fh: FileHandle, data: Buffer): Promise<void>;
  /** Make everything written so far durable (fdatasync). */
  sync(fh: FileHandle): Promise<void>;
}

export interface AuditOpenOptions {
  /** Default 'writes'. */
  sync?: AuditSyncMode;
  /** fsync timer for non-durable lines, ms. Default 200. */
  intervalMs?: number;
  /** A signed checkpoint after every event whose seq is a multiple of this. Default 1000. */
  checkpointEvery?: number;
  /**
   * Least time between two HEAD.json rewrites after durable batches, ms. Default 100; 0 rewrites
   * it after every durable batch (measurably slower with one appender: a rename per fsync).
   * flush() and close() always bring it up to date, fsynced.
   */
  headEveryMs?: number;
  /** Default summary hook for `request` (a per-append hook wins). */
  summarize?: AuditSummarize;
  /** Override of write/fsync (tests, instrumentation). */
  io?: Partial<AuditIo>;
  /** Clock (tests). */
  now?: () => Date;
}

export interface AuditAppendOptions {
  /** Wait for fsync before resolving (sync 'writes'). Ignored by 'always' (always durable) and 'interval' (never). */
  durable?: boolean;
  summarize?: AuditSummarize;
}

export interface AuditStats {
  /** Events accepted (including checkpoints). */
  appends: number;
  /** write() calls on the log. */
  writes: number;
  /** fdatasync() calls on the log. */
  fsyncs: number;
  /** Largest number of lines written by one write(). */
  maxBatch: number;
  checkpoints: number;
  /** HEAD.json rewrites. */
  headWrites: number;
  /** Highest seq handed to write() successfully. */
  writtenSeq: number;
  /** Highest seq known durable (fsynced). */
  syncedSeq: number;
}

/** crypto.hash (Node ≥ 20.12): one-shot, measurably cheaper than createHash for short inputs. */
const oneShotHash = (nodeCrypto as { hash?: (alg: string, data: string, enc: 'hex') => string }).hash;
function sha256Hex(s: string): string {
  return oneShotHash ? oneShotHash('sha256', s, 'hex') : nodeCrypto.createHash('sha256').update(s).digest('hex');
}

const DEFAULT_INTERVAL_MS = 200;
const DEFAULT_HEAD_EVERY_MS = 100;
const DEFAULT_CHECKPOINT_EVERY = 1000;

interface Pending {
  seq: number;
  hash: string;
  line: string;
  event: AuditEvent;
  durable: boolean;
  settled: boolean;
  resolve?: (e: AuditEvent) => void;
  reject?: (e: Error) => void;
}

interface Waiter {
  seq: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

const defaultIo: AuditIo = {
  // A synchronous write(): a page-cache copy of a few hundred bytes costs microseconds, less than
  // the thread-pool round trip of an async write (measured: ~30 % more events/s with one
  // appender). The fsync, which waits for the disk, stays asynchronous.
  async write(fh, data) {
    let off = 0;
    // Each iteration writes at least one byte or throws.
    while (off < data.length) {
      const n = writeSync(fh.fd, data, off, data.length - off);
      if (n <= 0) throw new Error('write() wrote 0 bytes');
      off += n;
    }
  },
  async sync(fh) {
    await fh.datasync();
  },
};

export { defaultIo as defaultAuditIo };

/** Logs open in this process, by resolved path: two writers on one chain would fork it. */
const openLogs = new Set<string>();

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function validateOptions(opts: AuditOpenOptions): { sync: AuditSyncMode; intervalMs: number; checkpointEvery: number; headEveryMs: number } {
  const sync = opts.sync ?? 'writes';
  if (sync !== 'always' && sync !== 'writes' && sync !== 'interval') {
    throw new PortcullisError('audit_bad_option', `audit.sync must be one of always, writes, interval (got ${JSON.stringify(sync)})`, { option: 'sync' });
  }
  const intervalMs = opts.intervalMs ?? DEFAULT_INTERVAL_MS;
  if (!Number.isInteger(intervalMs) || intervalMs < 1 || intervalMs > 60_000) {
    throw new PortcullisError('audit_bad_option', `audit.intervalMs must be an integer from 1 to 60000 (got ${String(intervalMs)})`, { option: 'intervalMs' });
  }
  const checkpointEvery = opts.checkpointEvery ?? DEFAULT_CHECKPOINT_EVERY;
  if (!Number.isInteger(checkpointEvery) || checkpointEvery < 1) {
    throw new PortcullisError('audit_bad_option', `audit.checkpointEvery must be a positive integer (got ${String(checkpointEvery)})`, { option: 'checkpointEvery' });
  }
  const headEveryMs = opts.headEveryMs ?? DEFAULT_HEAD_EVERY_MS;
  if (!Number.isInteger(headEveryMs) || headEveryMs < 0 || headEveryMs > 60_000) {
    throw new PortcullisError('audit_bad_option', `audit.headEveryMs must be an integer from 0 to 60000 (got ${String(headEveryMs)})`, { option: 'headEveryMs' });
  }
  return { sync, intervalMs, checkpointEvery, headEveryMs };
}

function openRefused(p: AuditPaths, message: string, details: Record<string, unknown> = {}): PortcullisError {
  return new PortcullisError('audit_corrupt', `audit: refusing to open ${p.log}: ${message}; run \`portcullis audit verify\` and repair by hand`, { path: p.log, ...details });
}

export class AuditLog {
  readonly path: string;
  readonly stats: AuditStats = { appends: 0, writes: 0, fsyncs: 0, maxBatch: 0, checkpoints: 0, headWrites: 0, writtenSeq: 0, syncedSeq: 0 };

  private seq: number;
  private prevHash: string;
  private lastType: string | null;
  private writtenHash: string;
  private syncedHash: string;

  private queue: Pending[] = [];
  /** Written durable lines waiting for the next fsync. */
  private awaitingSync: Pending[] = [];
  private flushWaiters: Waiter[] = [];
  private writing = false;
  private syncing = false;
  private syncWanted = false;
  private syncTimer: NodeJS.Timeout | null = null;
  private failure: PortcullisError | null = null;
  private closing = false;
  private closePromise: Promise<void> | null = null;
  private writePromise: Promise<void> | null = null;
  private syncPromise: Promise<void> | null = null;

  private headTarget: { seq: number; hash: string; durable: boolean } | null = null;
  private headRunning: Promise<void> | null = null;
  private headTimer: NodeJS.Timeout | null = null;
  private lastHeadAt = 0;
  /** Highest seq HEAD.json was written with / written and fsynced with. */
  private headWrittenSeq: number;
  private headDurableSeq: number;

  private constructor(
    private readonly paths: AuditPaths,
    private readonly fh: FileHandle,
    private readonly keys: AuditKeys,
    private readonly mode: AuditSyncMode,
    private readonly intervalMs: number,
    private readonly checkpointEvery: number,
    private readonly io: AuditIo,
    private readonly now: () => Date,
    private readonly summarize: AuditSummarize | undefined,
    private readonly lockKey: string,
    private readonly headEveryMs: number,
    resume: { seq: number; hash: string; type: string | null; headSeq: number },
  ) {
    this.path = paths.log;
    this.seq = resume.seq;
    this.prevHash = resume.hash;
    this.lastType = resume.type;
    this.writtenHash = resume.hash;
    this.syncedHash = resume.hash;
    this.stats.writtenSeq = resume.seq;
    this.stats.syncedSeq = resume.seq;
    this.headWrittenSeq = resume.headSeq;
    this.headDurableSeq = resume.headSeq;
  }

  /**
   * Open (or create) the log under `<dataDir>/audit/`. An existing log is continued after its
   * last line, whose hash is checked; a torn or edited last line, or a HEAD.json that is ahead of
   * the log or does not match it, refuses to open (nothing is repaired silently).
   */
  static async open(dataDir: string, opts: AuditOpenOptions = {}): Promise<AuditLog> {
    const { sync, intervalMs, checkpointEvery, headEveryMs } = validateOptions(opts);
    const p = auditPaths(dataDir);
    const lockKey = path.resolve(p.log);
    if (openLogs.has(lockKey)) {
      throw new PortcullisError('audit_already_open', `audit: ${p.log} is already open in this process`, { path: p.log });
    }
    openLogs.add(lockKey);
    try {
      await fsp.mkdir(p.dir, { recursive: true, mode: 0o750 });

      // Resume from the last line.
      const tail = await readLastLines(p.log, 1);
      let seq = 0;
      let hash = GENESIS_PREV;
      let type: string | null = null;
      if (tail.completeEnd < tail.size) {
        throw openRefused(p, `the file ends with a partial line at byte ${tail.completeEnd} (${tail.size - tail.completeEnd} bytes without a newline): a write was torn or the file was truncated`, { offset: tail.completeEnd });
      }
      if (tail.lines.length === 1) {
        const text = tail.lines[0]!;
        let ev: unknown;
        try {
          ev = JSON.parse(text);
        } catch {
          throw openRefused(p, `the last line (byte ${tail.startOffset}) is not valid JSON`, { offset: tail.startOffset });
        }
        const problem = eventShapeProblem(ev);
        if (problem) throw openRefused(p, `the last line (byte ${tail.startOffset}) is not an audit event: ${problem}`, { offset: tail.startOffset });
        const last = ev as AuditEvent;
        if (hashEvent(last) !== last.hash) {
          throw openRefused(p, `the last line (seq ${last.seq}) does not match its hash: it was edited`, { seq: last.seq });
        }
        seq = last.seq;
        hash = last.hash;
        type = last.type;
      } else if (tail.size > 0) {
        throw openRefused(p, 'the file holds no complete line');
      }

      // The key is created only with a new log: a log whose key went missing stays unopenable.
      const keys = await loadOrCreateKeys(dataDir, seq === 0);

      // HEAD.json must agree with the log.
      const head = await readHead(p.head);
      let headSeq = 0;
      if (head.state === 'invalid') throw openRefused(p, head.problem);
      if (head.state === 'ok') {
        const h = head.head;
        if (!verifyCheckpointSig(keys.publicKey, h.seq, h.hash, h.sig)) {
          throw openRefused(p, `HEAD.json (seq ${h.seq}) is not signed by ${p.publicKey}`);
        }
        if (h.seq > seq) {
          throw openRefused(p, `HEAD.json records seq ${h.seq} but the log ends at seq ${seq}: the log was truncated`, { headSeq: h.seq, seq });
        }
        if (h.seq === seq && h.hash !== hash) {
          throw openRefused(p, `HEAD.json records hash ${h.hash} for seq ${seq} but the last line's hash is ${hash}`, { seq });
        }
        headSeq = h.seq;
      } else if (seq > 0) {
        throw openRefused(p, `HEAD.json is missing (the log has ${seq} events)`);
      }

      const io: AuditIo = { write: opts.io?.write ?? defaultIo.write, sync: opts.io?.sync ?? defaultIo.sync };
      const fh = await fsp.open(p.log, 'a', 0o640);
      const log = new AuditLog(p, fh, keys, sync, intervalMs, checkpointEvery, io, opts.now ?? (() => new Date()), opts.summarize, lockKey, headEveryMs, {
        seq,
        hash,
        type,
        headSeq: head.state === 'ok' ? headSeq : -1,
      });
      if (head.state === 'missing') {
        // A new log: HEAD.json exists from the start, so that deleting it later is detectable.
        try {
          await log.writeHeadNow({ seq: 0, hash: GENESIS_PREV, durable: true });
        } catch (err) {
          await fh.close().catch(() => undefined);
          throw new PortcullisError('audit_write_failed', `audit: cannot write ${p.head}: ${(err as Error).message}`, { path: p.head });
        }
      }
      return log;
    } catch (err) {
      openLogs.delete(lockKey);
      throw err;
    }
  }

  /** The seq of the last event accepted (0 for an empty log). */
  get lastSeq(): number {
    return this.seq;
  }

  /** The hash of the last event accepted. */
  get lastHash(): string {
    return this.prevHash;
  }

  /** SHA-256 hex of the checkpoint public key. */
  get keyFingerprint(): string {
    return this.keys.fingerprint;
  }

  /** Why the log refuses appends, if it does. */
  get error(): PortcullisError | null {
    return this.failure;
  }

  /**
   * Append one event. Resolves with the stored event once its line is written — and, when the
   * append is durable (sync 'always', or 'writes' with durable: true), once it is fsynced.
   * Rejects with `audit_write_failed` when the log cannot be written (the request must then be
   * refused), `audit_closed` after close, `audit_bad_event` for an event that cannot be stored.
   */
  append(input: AuditInput, opts: AuditAppendOptions = {}): Promise<AuditEvent> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new PortcullisError('audit_closed', `audit: ${this.path} is closed`, { path: this.path }));
    let body: Omit<AuditEvent, 'seq' | 'prev' | 'hash' | 'time'>;
    try {
      body = this.buildBody(input, opts.summarize ?? this.summarize);
    } catch (err) {
      return Promise.reject(err);
    }
    const durable = this.mode === 'always' || (this.mode === 'writes' && opts.durable === true);
    return new Promise<AuditEvent>((resolve, reject) => {
      let pending: Pending;
      try {
        pending = this.enqueue(body, durable);
      } catch (err) {
        reject(err as Error);
        return;
      }
      pending.resolve = resolve;
      pending.reject = reject;
      if (pending.seq % this.checkpointEvery === 0) this.enqueueCheckpoint();
      this.kick();
    });
  }

  /** Resolves once every event appended so far is written, fsynced and recorded in HEAD.json. */
  async flush(): Promise<void> {
    if (this.failure) throw this.failure;
    await this.flushInternal();
  }

  /**
   * Append a closing checkpoint (unless the last event is one), flush, and close the file.
   * Further appends reject with `audit_closed`. Throws the log's failure, if it failed.
   */
  async close(): Promise<void> {
    this.closePromise ??= this.doClose();
    return this.closePromise;
  }

  private async doClose(): Promise<void> {
    this.closing = true;
    let failure: Error | null = this.failure;
    if (!failure) {
      try {
        if (this.seq > 0 && this.lastType !== CHECKPOINT_TYPE) {
          this.enqueueCheckpoint();
          this.kick();
        }
        await this.flushInternal();
      } catch (err) {
        failure = err as Error;
      }
    }
    // Let the writer, the syncer and a HEAD write settle before closing the descriptor.
    if (this.writePromise) await this.writePromise;
    if (this.syncPromise) await this.syncPromise;
    if (this.headRunning) await this.headRunning;
    if (this.syncTimer) clearTimeout(this.syncTimer);
    this.syncTimer = null;
    if (this.headTimer) clearTimeout(this.headTimer);
    this.headTimer = null;
    openLogs.delete(this.lockKey);
    await this.fh.close().catch(() => undefined);
    if (failure) throw failure;
  }

  // -------------------------------------------------------------------------------------------

  private buildBody(input: AuditInput, summarize: AuditSummarize | undefined): Omit<AuditEvent, 'seq' | 'prev' | 'hash' | 'time'> {
    if (!isRecord(input)) throw new PortcullisError('audit_bad_event', 'audit: the event is not an object');
    if (typeof input.type !== 'string' || input.type === '') {
      throw new PortcullisError('audit_bad_event', 'audit: event.type must be a non-empty string');
    }
    if (input.type === CHECKPOINT_TYPE) {
      throw new PortcullisError('audit_bad_event', `audit: event type "${CHECKPOINT_TYPE}" is reserved for the log's own signed checkpoints`);
    }
    const body: Omit<AuditEvent, 'seq' | 'prev' | 'hash' | 'time'> = { type: input.type };
    if (input.session !== undefined) body.session = String(input.session);
    if (input.identity !== undefined) {
      const id = input.identity;
      if (!isRecord(id) || typeof id.subject !== 'string' || !Array.isArray(id.groups)) {
        throw new PortcullisError('audit_bad_event', 'audit: event.identity must have subject (string) and groups (string[])');
      }
      // Keys in canonical (sorted) order: canonicalJson then takes JSON.stringify's fast path.
      const identity = {} as AuditIdentity;
      if (id.authMethod !== undefined) identity.authMethod = String(id.authMethod);
      identity.groups = id.groups.map(String);
      if (id.issuer !== undefined) identity.issuer = String(id.issuer);
      identity.subject = id.subject;
      body.identity = identity;
    }
    if (input.target !== undefined) body.target = String(input.target);
    if (input.protocol !== undefined) body.protocol = String(input.protocol);
    if (input.request !== undefined) {
      let summary: unknown;
      if (summarize) {
        try {
          summary = summarize(input.request);
        } catch (err) {
          throw new PortcullisError('audit_summarize_failed', `audit: the request summary hook threw: ${(err as Error).message}`);
        }
      } else {
        summary = input.request;
      }
      if (summary !== undefined) {
        if (!isRecord(summary)) throw new PortcullisError('audit_bad_event', 'audit: the request summary must be a JSON object');
        body.request = summary;
      }
    }
    if (input.decision !== undefined) {
      const d = input.decision;
      if (!isRecord(d) || typeof d.effect !== 'string' || typeof d.rule !== 'string') {
        throw new PortcullisError('audit_bad_event', 'audit: event.decision must have effect and rule');
      }
      body.decision = { effect: d.effect as AuditDecision['effect'], reason: typeof d.reason === 'string' ? d.reason : '', rule: d.rule };
    }
    if (input.data !== undefined) {
      if (!isRecord(input.data)) throw new PortcullisError('audit_bad_event', 'audit: event.data must be a JSON object');
      body.data = input.data;
    }
    return body;
  }

  /** Assign seq/prev/hash and queue the line. Synchronous: this is what keeps the chain ordered. */
  private enqueue(body: Omit<AuditEvent, 'seq' | 'prev' | 'hash' | 'time'>, durable: boolean): Pending {
    const seq = this.seq + 1;
    // Keys in canonical (sorted) order, so that canonicalJson can use JSON.stringify (the bytes
    // are the same in any order; only the speed differs).
    const unhashed = {} as Omit<AuditEvent, 'hash'>;
    if (body.data !== undefined) unhashed.data = body.data;
    if (body.decision !== undefined) unhashed.decision = body.decision;
    if (body.identity !== undefined) unhashed.identity = body.identity;
    unhashed.prev = this.prevHash;
    if (body.protocol !== undefined) unhashed.protocol = body.protocol;
    if (body.request !== undefined) unhashed.request = body.request;
    unhashed.seq = seq;
    if (body.session !== undefined) unhashed.session = body.session;
    if (body.target !== undefined) unhashed.target = body.target;
    unhashed.time = this.now().toISOString();
    unhashed.type = body.type;
    const canonical = canonicalJson(unhashed); // throws on cycles/BigInt: nothing is committed yet
    const hash = sha256Hex(canonical);
    const line = `${canonical.slice(0, -1)},"hash":"${hash}"}\n`;
    const event = { ...unhashed, hash } as AuditEvent;
    this.seq = seq;
    this.prevHash = hash;
    this.lastType = body.type;
    this.stats.appends++;
    const pending: Pending = { seq, hash, line, event, durable, settled: false };
    this.queue.push(pending);
    return pending;
  }

  private enqueueCheckpoint(): void {
    const upto = this.seq;
    const head = this.prevHash;
    const data: CheckpointData = { upto, head, sig: signCheckpoint(this.keys.privateKey, upto, head), key: this.keys.fingerprint };
    this.enqueue({ type: CHECKPOINT_TYPE, data: { ...data } }, false);
    this.stats.checkpoints++;
  }

  private kick(): void {
    if (this.writing || this.failure || this.queue.length === 0) return;
    this.writing = true;
    // After this turn of the event loop's I/O callbacks, so that the appends of every session
    // served in the same turn share one write() (one syscall for many statements under load).
    setImmediate(() => {
      this.writePromise = this.writeLoop();
    });
  }

  /**
   * The writer: writes queued lines, one write() per batch, and never waits for an fsync. A
   * non-durable line settles as soon as it is written; a durable one joins `awaitingSync`, which
   * the syncer commits as a group (every durable line written while an fsync runs shares the next).
   */
  private async writeLoop(): Promise<void> {
    let current: Pending[] = [];
    try {
      // Each iteration consumes the queue; bounded by the number of appends.
      for (let i = 0; i < Number.MAX_SAFE_INTEGER && !this.failure && this.queue.length > 0; i++) {
        current = this.queue;
        this.queue = [];
        await this.writeBatch(current);
        current = [];
      }
    } catch (err) {
      this.fail('writer', err, current);
    } finally {
      this.writing = false;
    }
  }

  private async writeBatch(batch: Pending[]): Promise<void> {
    const data = Buffer.from(batch.length === 1 ? batch[0]!.line : batch.map((p) => p.line).join(''), 'utf8');
    try {
      await this.io.write(this.fh, data);
    } catch (err) {
      this.fail('write', err, batch);
      return;
    }
    if (this.failure) {
      // The syncer failed meanwhile: this batch left the queue before fail() ran.
      this.rejectUnsettled(batch);
      return;
    }
    const last = batch[batch.length - 1]!;
    this.stats.writes++;
    if (batch.length > this.stats.maxBatch) this.stats.maxBatch = batch.length;
    this.stats.writtenSeq = last.seq;
    this.writtenHash = last.hash;
    let durable = false;
    for (const p of batch) {
      if (p.durable) {
        durable = true;
        this.awaitingSync.push(p);
      } else {
        p.settled = true;
        p.resolve?.(p.event);
      }
    }
    if (durable || this.syncWanted || this.flushWaiters.length > 0) {
      this.startSync();
    } else if (!this.syncTimer) {
      this.syncTimer = setTimeout(() => {
        this.syncTimer = null;
        this.syncWanted = true;
        this.startSync();
      }, this.intervalMs);
      this.syncTimer.unref();
    }
  }

  private syncNeeded(): boolean {
    return this.awaitingSync.length > 0 || this.syncWanted || this.flushWaiters.some((w) => w.seq <= this.stats.writtenSeq);
  }

  private startSync(): void {
    if (this.syncing || this.failure || !this.syncNeeded()) return;
    this.syncing = true;
    this.syncPromise = this.syncLoop().finally(() => {
      this.syncing = false;
      // A request that came in as the loop ended.
      if (!this.failure && this.syncNeeded()) this.startSync();
    });
  }

  /**
   * The syncer: one fdatasync() covers every line written before it starts (group commit); the
   * durable appends among them settle when it returns. Runs concurrently with the writer.
   */
  private async syncLoop(): Promise<void> {
    // Each iteration commits what was written before it; bounded by the number of writes.
    for (let i = 0; i < Number.MAX_SAFE_INTEGER && !this.failure && this.syncNeeded(); i++) {
      const group = this.awaitingSync;
      this.awaitingSync = [];
      this.syncWanted = false;
      await this.syncNow(group);
    }
  }

  private async syncNow(batch: Pending[]): Promise<void> {
    const seq = this.stats.writtenSeq;
    const hash = this.writtenHash;
    if (seq > this.stats.syncedSeq) {
      try {
        await this.io.sync(this.fh);
      } catch (err) {
        this.fail('fsync', err, batch);
        return;
      }
      if (this.failure) {
        // The writer failed meanwhile: this group left awaitingSync before fail() ran.
        this.rejectUnsettled(batch);
        return;
      }
      this.stats.fsyncs++;
      this.stats.syncedSeq = seq;
      this.syncedHash = hash;
      if (this.syncTimer && seq >= this.stats.writtenSeq) {
        clearTimeout(this.syncTimer);
        this.syncTimer = null;
      }
      this.scheduleHead();
    }
    for (const p of batch) {
      if (!p.settled) {
        p.settled = true;
        p.resolve?.(p.event);
      }
    }
    if (this.flushWaiters.length > 0) {
      const done = this.flushWaiters.filter((w) => w.seq <= this.stats.syncedSeq);
      this.flushWaiters = this.flushWaiters.filter((w) => w.seq > this.stats.syncedSeq);
      for (const w of done) w.resolve();
    }
  }

  private async flushInternal(): Promise<void> {
    const target = this.seq;
    if (target > this.stats.syncedSeq) {
      await new Promise<void>((resolve, reject) => {
        this.flushWaiters.push({ seq: target, resolve, reject });
        this.kick();
        this.startSync();
      });
    }
    // HEAD.json: durably at `target` (the batches' HEAD writes skip the fsyncs).
    if (this.headDurableSeq < target) {
      this.headTarget = { seq: this.stats.syncedSeq, hash: this.syncedHash, durable: true };
      this.startHead();
    }
    for (let i = 0; i < 1000 && this.headRunning; i++) await this.headRunning;
    if (this.failure) throw this.failure;
  }

  /** A cheap (non-fsynced) HEAD.json rewrite after a durable batch, at most every headEveryMs. */
  private scheduleHead(): void {
    const wait = this.headEveryMs - (Date.now() - this.lastHeadAt);
    if (wait <= 0) {
      // Keep a durable target that flush() set.
      this.headTarget = { seq: this.stats.syncedSeq, hash: this.syncedHash, durable: this.headTarget?.durable ?? false };
      this.startHead();
    } else if (!this.headTimer) {
      this.headTimer = setTimeout(() => {
        this.headTimer = null;
        this.scheduleHead();
      }, wait);
      this.headTimer.unref();
    }
  }

  private startHead(): void {
    if (this.headRunning || this.failure) return;
    this.headRunning = (async () => {
      // Coalesces: each iteration writes the newest target; bounded by the number of targets set.
      for (let i = 0; i < Number.MAX_SAFE_INTEGER; i++) {
        const t = this.headTarget;
        this.headTarget = null;
        if (!t || !this.headNeeded(t)) break;
        await this.writeHeadNow(t);
      }
    })()
      .catch((err: unknown) => {
        this.fail('HEAD.json write', err, []);
      })
      .finally(() => {
        this.headRunning = null;
        if (this.headTarget && this.headNeeded(this.headTarget)) this.startHead();
      });
  }

  private headNeeded(t: { seq: number; durable: boolean }): boolean {
    return t.seq > this.headWrittenSeq || (t.durable && t.seq > this.headDurableSeq);
  }

  private async writeHeadNow(t: { seq: number; hash: string; durable: boolean }): Promise<void> {
    this.lastHeadAt = Date.now();
    const head = { seq: t.seq, hash: t.hash, sig: signCheckpoint(this.keys.privateKey, t.seq, t.hash), key: this.keys.fingerprint };
    await writeHead(this.paths.head, head, t.durable);
    this.headWrittenSeq = Math.max(this.headWrittenSeq, t.seq);
    if (t.durable) this.headDurableSeq = Math.max(this.headDurableSeq, t.seq);
    this.stats.headWrites++;
  }

  private rejectUnsettled(batch: Pending[]): void {
    const failure = this.failure;
    if (!failure) return;
    for (const p of batch) {
      if (!p.settled) {
        p.settled = true;
        p.reject?.(failure);
      }
    }
  }

  private fail(what: string, err: unknown, batch: Pending[]): void {
    if (!this.failure) {
      const cause = err as NodeJS.ErrnoException;
      this.failure = new PortcullisError(
        'audit_write_failed',
        `audit: ${what} of ${this.path} failed: ${cause?.message ?? String(err)}; the log refuses appends until it is reopened`,
        { path: this.path, operation: what, errno: cause?.code },
      );
    }
    const failure = this.failure;
    for (const p of [...batch, ...this.awaitingSync, ...this.queue]) {
      if (!p.settled) {
        p.settled = true;
        p.reject?.(failure);
      }
    }
    this.queue = [];
    this.awaitingSync = [];
    for (const w of this.flushWaiters) w.reject(failure);
    this.flushWaiters = [];
    if (this.syncTimer) {
      clearTimeout(this.syncTimer);
      this.syncTimer = null;
    }
    if (this.headTimer) {
      clearTimeout(this.headTimer);
      this.headTimer = null;
    }
  }
}
