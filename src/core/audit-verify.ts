// `portcullis audit verify`: walk the whole chain and report the FIRST bad line.
//
// Line by line (streamed, never the whole file in memory): the line is complete JSON of the
// right shape, its hash is the SHA-256 of its canonical JSON without `hash` (an edited line),
// seq is the next number (a deleted, inserted, duplicated or moved line), prev is the previous
// line's hash, and a checkpoint signs exactly the line before it with the trusted key. Then
// HEAD.json: signed by the trusted key, and the log reaches its seq with the same hash (a
// truncated tail). Last, the recordings that session.close events bind by SHA-256
// (recordings/verify.ts): a modified or missing .cast file fails, naming the file and the line of
// its session.close event.
//
// The trusted key is <dataDir>/keys/audit-ed25519.pub.pem unless `publicKey` is given. Whoever can
// write the data dir can also replace that key, rewrite the whole chain and sign it anew; a copy
// of the public key kept elsewhere (`publicKey`) is what detects that.

import { createPublicKey, type KeyObject } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import {
  auditPaths,
  CHECKPOINT_TYPE,
  checkpointDataProblem,
  eventShapeProblem,
  GENESIS_PREV,
  hashEvent,
  keyFingerprint,
  readHead,
  readLines,
  toPublicKey,
  verifyCheckpointSig,
  type AuditEvent,
  type CheckpointData,
} from './audit-common.js';
import { checkRecording, recordingRefsOf, type RecordingRef } from '../../recordings/verify.js';

export type AuditVerifyResult =
  | { ok: true; events: number; checkpoints: number; key: string | null; headSeq: number | null; recordings: number }
  | {
      ok: false;
      /** 1-based line of the log; 0 when the problem is HEAD.json or the key itself. */
      line: number;
      seq?: number;
      problem: string;
    };

export interface AuditVerifyOptions {
  /** The trusted checkpoint public key (PEM or KeyObject), e.g. a copy kept off the host. */
  publicKey?: string | Buffer | KeyObject;
  /** Check the recordings bound by session.close events (default true). */
  recordings?: boolean;
}

type TrustedKey = { key: KeyObject; fingerprint: string; source: string } | { key: null; problem: string };

async function loadTrustedKey(dataDir: string, opts: AuditVerifyOptions): Promise<TrustedKey> {
  if (opts.publicKey !== undefined) {
    try {
      const key = toPublicKey(opts.publicKey, 'the given public key');
      return { key, fingerprint: keyFingerprint(key), source: 'the given public key' };
    } catch (err) {
      return { key: null, problem: (err as Error).message };
    }
  }
  const file = auditPaths(dataDir).publicKey;
  let pem: Buffer;
  try {
    pem = await fsp.readFile(file);
  } catch (err) {
    return { key: null, problem: `the checkpoint public key ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
  }
  try {
    const key = createPublicKey(pem);
    if (key.asymmetricKeyType !== 'ed25519') return { key: null, problem: `${file} is not an Ed25519 public key` };
    return { key, fingerprint: keyFingerprint(key), source: file };
  } catch (err) {
    return { key: null, problem: `${file} is not a valid public key: ${(err as Error).message}` };
  }
}

function short(h: string): string {
  return `${h.slice(0, 12)}…`;
}

/** Verify `<dataDir>/audit/audit.jsonl` and HEAD.json. Never throws for a bad log; reports it. */
export async function verifyAudit(dataDir: string, opts: AuditVerifyOptions = {}): Promise<AuditVerifyResult> {
  const p = auditPaths(dataDir);
  const trusted = await loadTrustedKey(dataDir, opts);
  const head = await readHead(p.head);

  let expectedSeq = 1;
  let prev = GENESIS_PREV;
  let lines = 0;
  let checkpoints = 0;
  let hashAtHead: string | null = null;
  const recordings: RecordingRef[] = [];

  for await (const raw of readLines(p.log)) {
    const line = raw.line;
    lines = line;
    if (!raw.terminated) {
      return {
        ok: false,
        line,
        problem: `partial last line: ${Buffer.byteLength(raw.text)} bytes at offset ${raw.offset} without a terminating newline (the file was truncated or a write was torn)`,
      };
    }
    if (raw.text === '') return { ok: false, line, problem: 'empty line' };
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw.text);
    } catch {
      return { ok: false, line, problem: 'not valid JSON (the line was edited or damaged)' };
    }
    const shape = eventShapeProblem(parsed);
    if (shape) {
      const seq = typeof (parsed as { seq?: unknown })?.seq === 'number' ? (parsed as { seq: number }).seq : undefined;
      return { ok: false, line, ...(seq !== undefined ? { seq } : {}), problem: `not an audit event: ${shape}` };
    }
    const ev = parsed as AuditEvent;
    let computed: string;
    try {
      computed = hashEvent(ev);
    } catch (err) {
      return { ok: false, line, seq: ev.seq, problem: `cannot hash the event: ${(err as Error).message}` };
    }
    if (computed !== ev.hash) {
      return { ok: false, line, seq: ev.seq, problem: `hash mismatch: the line records ${short(ev.hash)} but its content hashes to ${short(computed)} (the line was edited)` };
    }
    if (ev.seq !== expectedSeq) {
      const problem =
        ev.seq > expectedSeq
          ? `seq ${ev.seq} where ${expectedSeq} was expected: ${ev.seq - expectedSeq} event(s) missing before this line (deleted or moved)`
          : `seq ${ev.seq} where ${expectedSeq} was expected: a line was inserted, duplicated or moved here`;
      return { ok: false, line, seq: ev.seq, problem };
    }
    if (ev.prev !== prev) {
      return {
        ok: false,
        line,
        seq: ev.seq,
        problem: line === 1 ? 'the first line\'s prev is not 64 zeros (lines were removed from the start)' : `prev does not match the hash of line ${line - 1} (lines were replaced, inserted or reordered)`,
      };
    }
    if (ev.type === CHECKPOINT_TYPE) {
      const dataProblem = checkpointDataProblem(ev.data);
      if (dataProblem) return { ok: false, line, seq: ev.seq, problem: dataProblem };
      const data = ev.data as unknown as CheckpointData;
      if (data.upto !== ev.seq - 1 || data.head !== ev.prev) {
        return { ok: false, line, seq: ev.seq, problem: `checkpoint covers seq ${data.upto} (${short(data.head)}) but the line before it is seq ${ev.seq - 1} (${short(ev.prev)})` };
      }
      if (trusted.key === null) return { ok: false, line, seq: ev.seq, problem: `cannot verify the checkpoint: ${trusted.problem}` };
      if (data.key !== undefined && data.key !== trusted.fingerprint) {
        return {
          ok: false,
          line,
          seq: ev.seq,
          problem: `forged checkpoint: signed by another key (${short(data.key)}), not by ${trusted.source} (${short(trusted.fingerprint)})`,
        };
      }
      if (!verifyCheckpointSig(trusted.key, data.upto, data.head, data.sig)) {
        return { ok: false, line, seq: ev.seq, problem: `forged checkpoint: the signature does not verify with ${trusted.source}` };
      }
      checkpoints++;
    }
    if (opts.recordings !== false) recordings.push(...recordingRefsOf(ev, line));
    if (head.state === 'ok' && ev.seq === head.head.seq) hashAtHead = ev.hash;
    prev = ev.hash;
    expectedSeq++;
  }

  const lastSeq = expectedSeq - 1;
  if (head.state === 'invalid') return { ok: false, line: 0, problem: `HEAD.json: ${head.problem}` };
  if (head.state === 'missing') {
    if (lines > 0) return { ok: false, line: 0, problem: `HEAD.json is missing (the log has ${lines} lines): a truncated tail cannot be ruled out` };
    return { ok: true, events: 0, checkpoints: 0, key: trusted.key ? trusted.fingerprint : null, headSeq: null, recordings: 0 };
  }
  const h = head.head;
  if (trusted.key === null) return { ok: false, line: 0, problem: `cannot verify HEAD.json: ${trusted.problem}` };
  if (h.key !== '' && h.key !== trusted.fingerprint) {
    return { ok: false, line: 0, problem: `forged HEAD.json: signed by another key (${short(h.key)}), not by ${trusted.source} (${short(trusted.fingerprint)})` };
  }
  if (!verifyCheckpointSig(trusted.key, h.seq, h.hash, h.sig)) {
    return { ok: false, line: 0, problem: `forged HEAD.json: the signature over seq ${h.seq} does not verify with ${trusted.source}` };
  }
  if (h.seq > lastSeq) {
    return {
      ok: false,
      line: lines + 1,
      seq: lastSeq + 1,
      problem: `truncated: HEAD.json records seq ${h.seq} but the log ends at seq ${lastSeq}${lines > 0 ? ` (line ${lines})` : ''}: ${h.seq - lastSeq} event(s) missing`,
    };
  }
  if (h.seq === 0 ? h.hash !== GENESIS_PREV : hashAtHead !== h.hash) {
    return { ok: false, line: h.seq, seq: h.seq, problem: `HEAD.json records hash ${short(h.hash)} for seq ${h.seq} but the log has ${short(hashAtHead ?? GENESIS_PREV)} there` };
  }
  // The chain is intact: now the recordings it binds (a tampered or missing .cast fails, named).
  for (const r of recordings) {
    const problem = await checkRecording(dataDir, r);
    if (problem) return { ok: false, line: r.line, seq: r.seq, problem };
  }
  return { ok: true, events: lines, checkpoints, key: trusted.fingerprint, headSeq: h.seq, recordings: recordings.length };
}
