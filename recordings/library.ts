// The recordings of a data dir: `<data-dir>/recordings/<session>.cast` (terminal sessions,
// asciicast v2), `<session>.pg.jsonl` (PostgreSQL transcripts) and `<session>.kube.jsonl`
// (Kubernetes transcripts, same shape). Listing, and finding a
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
}

const SUFFIX: Record<RecordingKind, string> = { cast: '.cast', pg: '.pg.jsonl', kube: '.kube.jsonl' };
const SESSION_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

export function recordingsDir(dataDir: string): string {
  return join(dataDir, 'recordings');
}

function kindOf(name: string): { session: string; kind: RecordingKind } | null {
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
  for (const name of names) {
    const k = kindOf(name);
    if (!k) continue;
    try {
      const st = statSync(join(dir, name));
      if (st.isFile()) out.push({ ...k, path: join(dir, name), bytes: st.size, mtime: st.mtimeMs });
    } catch {
      // removed meanwhile
    }
  }
  return out.sort((a, b) => b.mtime - a.mtime || a.session.localeCompare(b.session));
}

export interface SessionRecordings {
  session: string;
  cast?: string;
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
    return { session: k?.session ?? basename(p), [kind]: p };
  }
  if (!SESSION_RE.test(arg)) throw new PortcullisError('recording_not_found', `"${arg}" is not a session id`);
  const all = listRecordings(dataDir);
  const exact = all.filter((r) => r.session === arg);
  const matches = exact.length ? exact : all.filter((r) => r.session.startsWith(arg));
  const sessions = [...new Set(matches.map((r) => r.session))];
  if (sessions.length === 0) throw new PortcullisError('recording_not_found', `no recording of session ${arg} in ${recordingsDir(dataDir)}`);
  if (sessions.length > 1) throw new PortcullisError('recording_ambiguous', `"${arg}" matches ${sessions.length} sessions: ${sessions.slice(0, 5).join(', ')}${sessions.length > 5 ? ', …' : ''}`);
  const out: SessionRecordings = { session: sessions[0]! };
  for (const r of matches) out[r.kind] = r.path;
  return out;
}
