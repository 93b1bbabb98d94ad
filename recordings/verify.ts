// Recordings bound into the audit chain: `Core.closeSession` writes a recording's SHA-256, size
// and event count into the `session.close` event (`data.recording`); `audit verify` calls
// `checkRecording` for each such event once the chain itself is intact, so an edited, truncated,
// replaced or deleted .cast file fails verification, naming the file. The file is looked up under
// the verified data dir (`<data-dir>/recordings/<name>`), so a data dir copied elsewhere verifies.
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import { recordingsDir } from './library.js';

export interface RecordingRef {
  /** Line and seq of the session.close event. */
  line: number;
  seq: number;
  session?: string;
  /** The path as recorded (only its file name is used). */
  path: string;
  sha256: string;
  bytes?: number;
}

/** The recording a `session.close` event binds, if any (its first part when it was rotated). */
export function recordingRefOf(ev: { type: string; seq: number; session?: string; data?: Record<string, unknown> }, line: number): RecordingRef | null {
  return recordingRefsOf(ev, line)[0] ?? null;
}

/**
 * Every recording file a `session.close` event binds: the recording itself, or each of its parts
 * (`data.recording.parts`, in order) when it was rotated. A malformed part entry is returned as a
 * ref that cannot match (so verification fails, naming it) rather than skipped.
 */
export function recordingRefsOf(ev: { type: string; seq: number; session?: string; data?: Record<string, unknown> }, line: number): RecordingRef[] {
  if (ev.type !== 'session.close') return [];
  const r = ev.data?.recording as { path?: unknown; sha256?: unknown; bytes?: unknown; parts?: unknown } | undefined;
  if (!r || typeof r !== 'object' || typeof r.sha256 !== 'string' || typeof r.path !== 'string') return [];
  const base = { line, seq: ev.seq, ...(ev.session ? { session: ev.session } : {}) };
  const one = (x: { path?: unknown; sha256?: unknown; bytes?: unknown }): RecordingRef => ({
    ...base,
    path: typeof x.path === 'string' ? x.path : JSON.stringify(x.path ?? null),
    sha256: typeof x.sha256 === 'string' ? x.sha256 : '(missing)',
    ...(typeof x.bytes === 'number' ? { bytes: x.bytes } : {}),
  });
  if (r.parts === undefined) return [one(r)];
  if (!Array.isArray(r.parts) || r.parts.length === 0) return [{ ...base, path: JSON.stringify(r.parts), sha256: '(missing)' }];
  return (r.parts as unknown[]).map((p) => one(typeof p === 'object' && p !== null ? (p as Record<string, unknown>) : {}));
}

async function sha256File(file: string): Promise<{ sha256: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(file)) {
    h.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: h.digest('hex'), bytes };
}

/** The problem with a bound recording (missing, modified), or null when it matches. */
export async function checkRecording(dataDir: string, ref: RecordingRef): Promise<string | null> {
  const name = basename(ref.path);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*\.cast$/.test(name)) return `session.close records a recording path that is not a .cast file name: ${JSON.stringify(ref.path)}`;
  const file = join(recordingsDir(dataDir), name);
  const who = `recording ${file}${ref.session ? ` (session ${ref.session})` : ''}`;
  try {
    const st = await fsp.lstat(file);
    if (!st.isFile()) return `${who} is not a regular file`;
  } catch (e) {
    return `${who} is missing (${(e as NodeJS.ErrnoException).code ?? String(e)}); its SHA-256 is recorded in this session.close event`;
  }
  const got = await sha256File(file);
  if (got.sha256 !== ref.sha256) {
    const size = ref.bytes !== undefined && ref.bytes !== got.bytes ? `; ${got.bytes} bytes where ${ref.bytes} were recorded` : '';
    return `${who} was modified: its SHA-256 is ${got.sha256.slice(0, 12)}… but this session.close event recorded ${ref.sha256.slice(0, 12)}…${size}`;
  }
  return null;
}
