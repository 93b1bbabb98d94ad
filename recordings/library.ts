// The recordings of a data dir: `<data-dir>/recordings/<session>.cast` (terminal sessions,
// asciicast v2), `<session>.pg.jsonl` (PostgreSQL transcripts) and `<session>.kube.jsonl`
// (Kubernetes transcripts, same shape); a rotated terminal recording goes on in
// `<session>.<n>.cast` (n = 1, 2, …), listed and found as one recording with its parts in order. Listing, and finding a
// session's files from an id, a unique id prefix or a file path.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { PortcullisError } from '../src/policy/types.js';

export type RecordingKind = 'cast' | 'pg' | 'kube';

/** The transcript kinds (JSON lines, recordings/transcript.ts). */
export const TRANSCRIPT_KINDS = ['pg', 'kube'] as const;

export interface RecordingFile {
  session: string;
  kind: RecordingKind;
  path: string;
  bytes: number;
  mtime: number;
  /** A rotated terminal recording: every part in order (the first is `path`); `bytes` counts them all. */
  parts?: string[];
}

const SUFFIX: Record<RecordingKind, string> = { cast: '.cast', pg: '.pg.jsonl', kube: '.kube.jsonl' };
const SESSION_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

export function recordingsDir(dataDir: string): string {
  return join(dataDir, 'recordings');
}

const PART_RE = /^([A-Za-z0-9][A-Za-z0-9_-]{0,127})\.([1-9]\d{0,5})\.cast$/;

function kindOf(name: string): { session: string; kind: RecordingKind; part?: number } | null {
  const p = PART_RE.exec(name);
  if (p) return { session: p[1]!, kind: 'cast', part: Number(p[2]) };
  for (const kind of ['pg', 'kube', 'cast'] as const) {
    if (name.endsWith(SUFFIX[kind])) {
      const session = name.slice(0, -SUFFIX[kind].length);
      return SESSION_RE.test(session) ? { session, kind } : null;
    }
  }
  return null;
}

/** Every recording file, newest first. */
export function listRecordings(dataDir: string): RecordingFile[] {
  const dir = recordingsDir(dataDir);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: RecordingFile[] = [];
  const parts = new Map<string, { n: number; path: string; bytes: number; mtime: number }[]>();
  for (const name of names) {
    const k = kindOf(name);
    if (!k) continue;
    try {
      const st = statSync(join(dir, name));
      if (!st.isFile()) continue;
      if (k.part !== undefined) {
        const list = parts.get(k.session) ?? [];
        list.push({ n: k.part, path: join(dir, name), bytes: st.size, mtime: st.mtimeMs });
        parts.set(k.session, list);
      } else out.push({ session: k.session, kind: k.kind, path: join(dir, name), bytes: st.size, mtime: st.mtimeMs });
    } catch {
      // removed meanwhile
    }
  }
  // The parts of a rotated recording join its first part (parts without a first one are not listed).
  for (const f of out) {
    const more = f.kind === 'cast' ? parts.get(f.session) : undefined;
    if (!more) continue;
    more.sort((a, b) => a.n - b.n);
    f.parts = [f.path, ...more.map((m) => m.path)];
    f.bytes += more.reduce((n, m) => n + m.bytes, 0);
    f.mtime = Math.max(f.mtime, ...more.map((m) => m.mtime));
  }
  return out.sort((a, b) => b.mtime - a.mtime || a.session.localeCompare(b.session));
}

export interface SessionRecordings {
  session: string;
  cast?: string;
  /** Every part of the terminal recording in order (the first is `cast`); just `[cast]` if not rotated. */
  castParts?: string[];
  pg?: string;
  kube?: string;
}

/** A session's transcript file (PostgreSQL or Kubernetes), if any. */
export function transcriptOf(r: SessionRecordings): string | undefined {
  return r.pg ?? r.kube;
}

/**
 * A session's recordings from a session id, a unique prefix of one, or a path to a .cast /
 * .pg.jsonl file. Throws `recording_not_found` or `recording_ambiguous` (listing the candidates).
 */
export function findSession(dataDir: string, arg: string): SessionRecordings {
  if (!arg) throw new PortcullisError('recording_not_found', 'a session id is required');
  if (arg.includes('/') || (existsSync(arg) && (arg.endsWith('.cast') || arg.endsWith('.jsonl')))) {
    const p = resolve(arg);
    if (!existsSync(p)) throw new PortcullisError('recording_not_found', `no such file ${p}`);
    const k = kindOf(basename(p));
    const kind: RecordingKind = k?.kind ?? (p.endsWith('.kube.jsonl') ? 'kube' : p.endsWith('.jsonl') ? 'pg' : 'cast');
    return { session: k?.session ?? basename(p), [kind]: p, ...(kind === 'cast' ? { castParts: [p] } : {}) };
  }
  if (!SESSION_RE.test(arg)) throw new PortcullisError('recording_not_found', `"${arg}" is not a session id`);
  const all = listRecordings(dataDir);
  const exact = all.filter((r) => r.session === arg);
  const matches = exact.length ? exact : all.filter((r) => r.session.startsWith(arg));
  const sessions = [...new Set(matches.map((r) => r.session))];
  if (sessions.length === 0) throw new PortcullisError('recording_not_found', `no recording of session ${arg} in ${recordingsDir(dataDir)}`);
  if (sessions.length > 1) throw new PortcullisError('recording_ambiguous', `"${arg}" matches ${sessions.length} sessions: ${sessions.slice(0, 5).join(', ')}${sessions.length > 5 ? ', …' : ''}`);
  const out: SessionRecordings = { session: sessions[0]! };
  for (const r of matches) {
    out[r.kind] = r.path;
    if (r.kind === 'cast') out.castParts = r.parts ?? [r.path];
  }
  return out;
}
