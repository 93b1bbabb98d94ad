// Control-socket ops for recordings, so that the console (which only talks to the socket) can list
// and replay them: `recordings.list` and `recording.get` (audited as operator.recording.read).
import { readFileSync, statSync } from 'node:fs';
import { findSession, listRecordings, type RecordingKind } from '../../recordings/library.js';
import { readCastParts } from '../../recordings/reader.js';
import type { Core } from '../core/core.js';
import { PortcullisError } from '../policy/types.js';
import type { SessionActivity } from './activity.js';
import type { RecordingInfo } from './protocol.js';

/** Largest recording sent over the socket in one piece. */
export const MAX_RECORDING_BYTES = 64 * 1024 * 1024;

type AuditOp<C> = (type: string, conn: C, data: Record<string, unknown>, session?: string) => Promise<void>;
type Op<C> = { access: 'operator'; run: (args: Record<string, unknown>, conn: C) => Promise<unknown> };

export function recordingOps<C>(core: Core, activity: SessionActivity, audit: AuditOp<C>): Record<string, Op<C>> {
  return {
    'recordings.list': {
      access: 'operator',
      run: async (args) => {
        const limit = args.limit === undefined ? 200 : Number(args.limit);
        if (!Number.isInteger(limit) || limit < 1 || limit > 5000) throw new PortcullisError('bad_request', '"limit" must be a whole number from 1 to 5000');
        const files = listRecordings(core.dataDir).slice(0, limit);
        const out: RecordingInfo[] = [];
        for (const f of files) {
          const s = await core.store.sessions.get(f.session).catch(() => null);
          out.push({
            session: f.session,
            kind: f.kind,
            file: f.path,
            bytes: f.bytes,
            mtime: f.mtime,
            live: activity.view(f.session) !== null,
            ...(s ? { protocol: s.protocol, target: s.target, subject: s.identity?.subject, openedAt: s.openedAt, ...(s.closedAt ? { closedAt: s.closedAt } : {}) } : {}),
          });
        }
        return out;
      },
    },
    'recording.get': {
      access: 'operator',
      run: async (args, conn) => {
        const session = args.session;
        if (typeof session !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/.test(session)) throw new PortcullisError('bad_request', '"session" must be a session id');
        const kind = args.kind === undefined ? undefined : (args.kind as RecordingKind);
        if (kind !== undefined && kind !== 'cast' && kind !== 'pg' && kind !== 'kube') throw new PortcullisError('bad_request', '"kind" must be cast, pg or kube');
        const found = findSession(core.dataDir, session);
        if (found.session !== session) throw new PortcullisError('recording_not_found', `no recording of session ${session}`);
        const k: RecordingKind | undefined = kind ?? (found.cast ? 'cast' : found.pg ? 'pg' : found.kube ? 'kube' : undefined);
        const file = k ? found[k] : undefined;
        if (!k || !file) throw new PortcullisError('recording_not_found', `session ${session} has no ${kind ?? ''} recording`.replace('  ', ' '));
        // A rotated terminal recording is sent as one: its parts in order (recordings/reader.ts).
        const parts = k === 'cast' ? (found.castParts ?? [file]) : [file];
        const bytes = parts.reduce((n, p) => n + statSync(p).size, 0);
        if (bytes > MAX_RECORDING_BYTES) throw new PortcullisError('recording_too_large', `${file}${parts.length > 1 ? ` (${parts.length} parts)` : ''} is ${bytes} bytes; replay it with \`portcullis replay\` on the bastion host`);
        const text = k === 'cast' ? readCastParts(parts) : readFileSync(file, 'utf8');
        await audit('operator.recording.read', conn, { kind: k, file, ...(parts.length > 1 ? { parts } : {}) }, session);
        return { session, kind: k, file, text };
      },
    },
  };
}
