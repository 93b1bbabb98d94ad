// Shared pieces of the audit log: event types, file locations, hashing, the Ed25519 checkpoint
// key, HEAD.json and a streaming line reader. Used by the writer (audit.ts), the verifier
// (audit-verify.ts) and the readers (audit-read.ts).

import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { PortcullisError, type Decision, type Effect, type Identity } from '../policy/types.js';
import { canonicalJson } from './canonical-json.js';

/** The prev of the first line. */
export const GENESIS_PREV = '0'.repeat(64);
export const CHECKPOINT_TYPE = 'checkpoint';
const CHECKPOINT_PREFIX = 'portcullis-audit-checkpoint';

/** The identity as recorded: never the credential's expiry or anything else. */
export interface AuditIdentity {
  subject: string;
  groups: string[];
  issuer?: string;
  authMethod?: string;
}

export interface AuditDecision {
  effect: Effect;
  rule: string;
  reason: string;
}

/** What a caller appends. `request` must already be masked by the caller (see `summarize`). */
export interface AuditInput {
  /** `request`, `session.open`, `session.close`, `approval`, `identity.rejected`, ... (free). */
  type: string;
  session?: string;
  identity?: AuditIdentity | Identity;
  target?: string;
  protocol?: string;
  /** A summary of the request. Stored as given, or as `summarize(request)` when a hook is set. */
  request?: unknown;
  decision?: AuditDecision | Decision;
  data?: Record<string, unknown>;
}

/** One line of the log. Absent optional fields are omitted from the line. */
export interface AuditEvent {
  seq: number;
  /** ISO-8601 with milliseconds, UTC. */
  time: string;
  type: string;
  session?: string;
  identity?: AuditIdentity;
  target?: string;
  protocol?: string;
  request?: Record<string, unknown>;
  decision?: AuditDecision;
  data?: Record<string, unknown>;
  /** Hash of the previous line (64 zeros for the first). */
  prev: string;
  /** SHA-256 hex of the canonical JSON of this event without `hash`. */
  hash: string;
}

/** `data` of a checkpoint event. */
export interface CheckpointData {
  /** seq of the event the checkpoint covers (the line before it). */
  upto: number;
  /** hash of that event. */
  head: string;
  /** Ed25519 signature (base64) over `portcullis-audit-checkpoint:<upto>:<head>`. */
  sig: string;
  /** SHA-256 hex of the signing public key (SPKI DER). */
  key: string;
}

/** `<dataDir>/audit/HEAD.json`: the last durable event, signed like a checkpoint. */
export interface AuditHead {
  seq: number;
  hash: string;
  sig: string;
  key: string;
}

export interface AuditPaths {
  dir: string;
  log: string;
  head: string;
  keysDir: string;
  privateKey: string;
  publicKey: string;
}

export function auditPaths(dataDir: string): AuditPaths {
  const dir = path.join(dataDir, 'audit');
  const keysDir = path.join(dataDir, 'keys');
  return {
    dir,
    log: path.join(dir, 'audit.jsonl'),
    head: path.join(dir, 'HEAD.json'),
    keysDir,
    privateKey: path.join(keysDir, 'audit-ed25519.pem'),
    publicKey: path.join(keysDir, 'audit-ed25519.pub.pem'),
  };
}

// ---------------------------------------------------------------------------------------------
// Hashing and signing
// ---------------------------------------------------------------------------------------------

/** SHA-256 hex over the canonical JSON of the event without its `hash` field. */
export function hashEvent(event: Omit<AuditEvent, 'hash'> | AuditEvent): string {
  const { hash: _hash, ...rest } = event as AuditEvent;
  return createHash('sha256').update(canonicalJson(rest)).digest('hex');
}

export function checkpointMessage(seq: number, head: string): Buffer {
  return Buffer.from(`${CHECKPOINT_PREFIX}:${seq}:${head}`, 'utf8');
}

export function signCheckpoint(privateKey: KeyObject, seq: number, head: string): string {
  return sign(null, checkpointMessage(seq, head), privateKey).toString('base64');
}

export function verifyCheckpointSig(publicKey: KeyObject, seq: number, head: string, sig: string): boolean {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(sig)) return false;
  const raw = Buffer.from(sig, 'base64');
  if (raw.length !== 64) return false;
  try {
    return verify(null, checkpointMessage(seq, head), publicKey, raw);
  } catch {
    return false;
  }
}

/** SHA-256 hex of the public key's SPKI DER encoding. */
export function keyFingerprint(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
}

export interface AuditKeys {
  privateKey: KeyObject;
  publicKey: KeyObject;
  fingerprint: string;
}

async function exists(file: string): Promise<boolean> {
  try {
    await fsp.access(file);
    return true;
  } catch {
    return false;
  }
}

/**
 * Load the checkpoint key pair, creating it when `create` is set and there is none. The private
 * key is written with mode 0600 (exclusive create, so two processes never race into two keys).
 */
export async function loadOrCreateKeys(dataDir: string, create: boolean): Promise<AuditKeys> {
  const p = auditPaths(dataDir);
  if (!(await exists(p.privateKey))) {
    if (!create) {
      throw new PortcullisError('audit_key_missing', `audit: the checkpoint signing key ${p.privateKey} is missing`, { path: p.privateKey });
    }
    await fsp.mkdir(p.keysDir, { recursive: true, mode: 0o700 });
    const pair = generateKeyPairSync('ed25519');
    const pem = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    try {
      await fsp.writeFile(p.privateKey, pem, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new PortcullisError('audit_key_write_failed', `audit: cannot write ${p.privateKey}: ${(err as Error).message}`, { path: p.privateKey });
      }
      // Another opener created it first: use theirs.
    }
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(await fsp.readFile(p.privateKey));
  } catch (err) {
    throw new PortcullisError('audit_key_invalid', `audit: cannot read the private key ${p.privateKey}: ${(err as Error).message}`, { path: p.privateKey });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new PortcullisError('audit_key_invalid', `audit: ${p.privateKey} is a ${String(privateKey.asymmetricKeyType)} key, expected ed25519`, { path: p.privateKey });
  }
  const publicKey = createPublicKey(privateKey);
  const fingerprint = keyFingerprint(publicKey);
  const pubPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  if (await exists(p.publicKey)) {
    let onDisk: KeyObject;
    try {
      onDisk = createPublicKey(await fsp.readFile(p.publicKey));
    } catch (err) {
      throw new PortcullisError('audit_key_invalid', `audit: cannot read the public key ${p.publicKey}: ${(err as Error).message}`, { path: p.publicKey });
    }
    if (onDisk.asymmetricKeyType !== 'ed25519' || keyFingerprint(onDisk) !== fingerprint) {
      throw new PortcullisError('audit_key_mismatch', `audit: ${p.publicKey} is not the public half of ${p.privateKey}`, { path: p.publicKey });
    }
  } else {
    await fsp.writeFile(p.publicKey, pubPem, { mode: 0o644 });
  }
  return { privateKey, publicKey, fingerprint };
}

/** Parse a public key given as a PEM string/Buffer or a KeyObject; must be Ed25519. */
export function toPublicKey(key: string | Buffer | KeyObject, where: string): KeyObject {
  let k: KeyObject;
  try {
    k = typeof key === 'string' || Buffer.isBuffer(key) ? createPublicKey(key) : key.type === 'private' ? createPublicKey(key) : key;
  } catch (err) {
    throw new PortcullisError('audit_key_invalid', `audit: ${where} is not a valid public key: ${(err as Error).message}`);
  }
  if (k.asymmetricKeyType !== 'ed25519') {
    throw new PortcullisError('audit_key_invalid', `audit: ${where} is a ${String(k.asymmetricKeyType)} key, expected ed25519`);
  }
  return k;
}

// ---------------------------------------------------------------------------------------------
// Event shape
// ---------------------------------------------------------------------------------------------

const HEX64 = /^[0-9a-f]{64}$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Returns a problem description, or null when `v` has the shape of an AuditEvent. */
export function eventShapeProblem(v: unknown): string | null {
  if (!isRecord(v)) return 'not a JSON object';
  if (typeof v.seq !== 'number' || !Number.isSafeInteger(v.seq) || v.seq < 1) return 'seq is not a positive integer';
  if (typeof v.time !== 'string' || Number.isNaN(Date.parse(v.time))) return 'time is not an ISO-8601 timestamp';
  if (typeof v.type !== 'string' || v.type === '') return 'type is missing';
  if (typeof v.prev !== 'string' || !HEX64.test(v.prev)) return 'prev is not a 64-hex-digit hash';
  if (typeof v.hash !== 'string' || !HEX64.test(v.hash)) return 'hash is not a 64-hex-digit hash';
  return null;
}

export function checkpointDataProblem(data: unknown): string | null {
  if (!isRecord(data)) return 'checkpoint without data';
  if (typeof data.upto !== 'number' || !Number.isSafeInteger(data.upto)) return 'checkpoint data.upto is not an integer';
  if (typeof data.head !== 'string' || !HEX64.test(data.head)) return 'checkpoint data.head is not a 64-hex-digit hash';
  if (typeof data.sig !== 'string') return 'checkpoint data.sig is missing';
  if (data.key !== undefined && typeof data.key !== 'string') return 'checkpoint data.key is not a string';
  return null;
}

// ---------------------------------------------------------------------------------------------
// HEAD.json
// ---------------------------------------------------------------------------------------------

export type HeadRead = { state: 'missing' } | { state: 'invalid'; problem: string } | { state: 'ok'; head: AuditHead };

export async function readHead(file: string): Promise<HeadRead> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'missing' };
    return { state: 'invalid', problem: `cannot read HEAD.json: ${(err as Error).message}` };
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { state: 'invalid', problem: 'HEAD.json is not valid JSON' };
  }
  if (!isRecord(v)) return { state: 'invalid', problem: 'HEAD.json is not a JSON object' };
  if (typeof v.seq !== 'number' || !Number.isSafeInteger(v.seq) || v.seq < 0) return { state: 'invalid', problem: 'HEAD.json seq is not an integer' };
  if (typeof v.hash !== 'string' || !HEX64.test(v.hash)) return { state: 'invalid', problem: 'HEAD.json hash is not a 64-hex-digit hash' };
  if (typeof v.sig !== 'string') return { state: 'invalid', problem: 'HEAD.json sig is missing' };
  return { state: 'ok', head: { seq: v.seq, hash: v.hash, sig: v.sig, key: typeof v.key === 'string' ? v.key : '' } };
}

/**
 * Write HEAD.json atomically: a tmp file renamed over it. With `durable`, the tmp file is fsynced
 * before the rename and the directory after it. Without, the rename reaches the disk with the next
 * journal commit — on ext4 (data=ordered, auto_da_alloc) the log's own next fdatasync forces that
 * commit, and a rename over an existing file never exposes an empty file.
 */
export async function writeHead(file: string, head: AuditHead, durable: boolean): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await fsp.open(tmp, 'w', 0o640);
  try {
    await fh.writeFile(`${JSON.stringify(head)}\n`);
    if (durable) await fh.datasync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
  if (durable) {
    const dir = await fsp.open(path.dirname(file), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Streaming line reader
// ---------------------------------------------------------------------------------------------

export interface RawLine {
  /** 1-based line number. */
  line: number;
  /** Byte offset of the line's first byte. */
  offset: number;
  text: string;
  /** False for a last line without its terminating newline. */
  terminated: boolean;
}

/** Yields the file's lines one by one without reading it whole. A missing file has no lines. */
export async function* readLines(file: string, start = 0): AsyncGenerator<RawLine> {
  const stream = createReadStream(file, { start, highWaterMark: 256 * 1024 });
  let carry: Buffer[] = [];
  let carryLen = 0;
  let lineNo = 0;
  let offset = start;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let from = 0;
      for (;;) {
        const nl = chunk.indexOf(0x0a, from);
        if (nl < 0) break;
        const piece = chunk.subarray(from, nl);
        const buf = carryLen > 0 ? Buffer.concat([...carry, piece]) : piece;
        lineNo++;
        yield { line: lineNo, offset, text: buf.toString('utf8'), terminated: true };
        offset += buf.length + 1;
        carry = [];
        carryLen = 0;
        from = nl + 1;
      }
      if (from < chunk.length) {
        carry.push(chunk.subarray(from));
        carryLen += chunk.length - from;
      }
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  } finally {
    stream.destroy();
  }
  if (carryLen > 0) {
    lineNo++;
    yield { line: lineNo, offset, text: Buffer.concat(carry).toString('utf8'), terminated: false };
  }
}

// ---------------------------------------------------------------------------------------------
// Reading from the end
// ---------------------------------------------------------------------------------------------

export interface TailRead {
  /** The last complete (newline-terminated) lines, oldest first, at most n. */
  lines: string[];
  /** Byte offset of the first returned line (or of the end of the complete region when none). */
  startOffset: number;
  /** Byte length of the complete region's end (just after the last newline). */
  completeEnd: number;
  /** File size when read. */
  size: number;
}

/**
 * Read the last `n` complete lines of a file by reading backwards in chunks (never the whole
 * file unless it is needed). A trailing partial line (no newline) is not returned; `completeEnd`
 * < `size` tells that there is one. A missing file reads as empty.
 */
export async function readLastLines(file: string, n: number, chunkSize = 64 * 1024): Promise<TailRead> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { lines: [], startOffset: 0, completeEnd: 0, size: 0 };
    throw err;
  }
  try {
    const size = (await fh.stat()).size;
    const chunks: Buffer[] = [];
    let pos = size;
    let newlines = 0;
    let lastNl = -1; // absolute offset of the last newline in the file
    const maxIter = Math.ceil(size / chunkSize) + 1;
    for (let i = 0; i < maxIter && pos > 0; i++) {
      const len = Math.min(chunkSize, pos);
      pos -= len;
      const buf = Buffer.alloc(len);
      let got = 0;
      for (let r = 0; r < 1000 && got < len; r++) {
        const { bytesRead } = await fh.read(buf, got, len - got, pos + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      chunks.unshift(buf.subarray(0, got));
      for (let j = got - 1; j >= 0; j--) {
        if (buf[j] === 0x0a) {
          if (lastNl < 0) lastNl = pos + j;
          newlines++;
        }
      }
      if (newlines >= n + 1) break;
    }
    const completeEnd = lastNl + 1;
    if (lastNl < 0 || n <= 0) return { lines: [], startOffset: completeEnd, completeEnd, size };
    const all = Buffer.concat(chunks); // file[pos, size)
    const region = all.subarray(0, completeEnd - pos);
    const parts = region.toString('utf8').split('\n');
    parts.pop(); // after the last newline: empty
    // When we did not reach the start of the file, the first part may begin mid-line.
    let firstIdx = pos > 0 ? 1 : 0;
    if (parts.length - firstIdx > n) firstIdx = parts.length - n;
    const lines = parts.slice(firstIdx);
    let startOffset = completeEnd;
    for (const l of lines) startOffset -= Buffer.byteLength(l, 'utf8') + 1;
    return { lines, startOffset, completeEnd, size };
  } finally {
    await fh.close();
  }
}
