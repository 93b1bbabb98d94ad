// The control socket's streams: `session.watch` (one session: a replay of its recording so far,
// then its live output, decisions, statements and approvals until it ends) and `events.subscribe`
// (the core's events for the whole bastion). Both read the core's event bus; nothing here can
// slow a session down (a client that falls behind is cut off by the server, see server.ts).
import { closeSync, existsSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import { partPath, recordingPath } from '../../recordings/asciicast.js';
import { parseCastEvent, parseCastHeader } from '../../recordings/reader.js';
import { parseTranscript } from '../../recordings/transcript.js';
import type { Core } from '../core/core.js';
import type { CoreEvents } from '../core/events.js';
import { PortcullisError } from '../policy/types.js';
import type { ApprovalRecord } from '../store/types.js';
import type { SessionActivity } from './activity.js';
import type { DecisionEvent, WatchReplay } from './protocol.js';
import { join } from 'node:path';

/** Pushes one event to the subscriber. */
export type Push = (event: string, data: unknown) => void;

export interface Subscription {
  result: unknown;
  /** Runs right after the response is written: sends the first events and starts listening. Returns stop. */
  start(push: Push, end: (reason: string) => void): () => void;
}

/** Most of a recording a watch replays (the tail of a longer one: the screen is rebuilt from it). */
export const REPLAY_MAX_BYTES = 8 * 1024 * 1024;
const REPLAY_MAX_TRANSCRIPT = 500;

export function decisionEvent(e: CoreEvents['request.decided'][0]): DecisionEvent {
  const d = e.decision;
  return {
    session: e.session,
    request: e.request as DecisionEvent['request'],
    decision: { effect: d.effect, rule: d.rule, reason: d.reason, ...(d.remedy ? { remedy: d.remedy } : {}) },
    seq: e.seq,
    at: Date.now(),
  };
}

function readTail(file: string, max: number): { head: string; body: string; skipped: number } {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const read = (pos: number, len: number) => {
      const b = Buffer.alloc(len);
      let got = 0;
      for (let i = 0; got < len && i < 1000; i++) {
        const n = readSync(fd, b, got, len - got, pos + got);
        if (n === 0) break;
        got += n;
      }
      return b.subarray(0, got);
    };
    if (size <= max) {
      const all = read(0, size).toString('utf8');
      const nl = all.indexOf('\n');
      return { head: nl < 0 ? all : all.slice(0, nl), body: nl < 0 ? '' : all.slice(nl + 1), skipped: 0 };
    }
    const first = read(0, Math.min(size, 64 * 1024)).toString('utf8');
    const head = first.slice(0, Math.max(0, first.indexOf('\n')));
    const tail = read(size - max, max);
    const nl = tail.indexOf(0x0a);
    return { head, body: tail.subarray(nl + 1).toString('utf8'), skipped: size - max + nl + 1 };
  } finally {
    closeSync(fd);
  }
}

/** What a session's recording holds so far (sync: nothing of the session happens meanwhile). */
export function replayOf(dataDir: string, session: string): Pick<WatchReplay, 'cast' | 'transcript'> {
  const out: Pick<WatchReplay, 'cast' | 'transcript'> = {};
  const first = recordingPath(dataDir, session);
  if (existsSync(first)) {
    // A rotated recording: the tail of its latest part (`<session>.<n>.cast`, same header shape).
    let n = 0;
    let before = 0;
    while (existsSync(partPath(first, n + 1))) before += statSync(partPath(first, n++)).size;
    const cast = partPath(first, n);
    const tail = readTail(cast, REPLAY_MAX_BYTES);
    const { head, body } = tail;
    const skipped = tail.skipped + before;
    const header = parseCastHeader(head, cast);
    const events: [number, string, string][] = [];
    const lines = body.split('\n');
    let prev = 0;
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i]!;
      if (l === '') continue;
      try {
        const e = parseCastEvent(l, i + 2, cast, prev);
        prev = e.time;
        events.push([e.time, e.code, e.data]);
      } catch {
        if (i < lines.length - 1) throw new PortcullisError('cast_invalid', `${cast}: line ${i + 2} is not an asciicast event`);
      }
    }
    out.cast = { header: header as unknown as { width: number; height: number }, events, ...(skipped ? { truncatedBefore: skipped } : {}) };
  }
  const pg = [`${session}.pg.jsonl`, `${session}.kube.jsonl`].map((n) => join(dataDir, 'recordings', n)).find((f) => existsSync(f));
  if (pg) {
    const { head, body } = readTail(pg, REPLAY_MAX_BYTES);
    const entries = parseTranscript(`${head}\n${body}`, pg);
    out.transcript = entries.length > REPLAY_MAX_TRANSCRIPT + 1 ? [entries[0]!, ...entries.slice(-REPLAY_MAX_TRANSCRIPT)] : entries;
  }
  return out;
}

export function watchSession(core: Core, activity: SessionActivity, id: string, opts: { replay: boolean }): Subscription {
  const view = activity.view(id);
  if (!view) throw new PortcullisError('session_not_found', `no live session ${id}`);
  return {
    result: { session: view },
    start(push, end) {
      const decoder = new StringDecoder('utf8');
      if (opts.replay) push('watch.replay', { session: view, ...replayOf(core.dataDir, id) } satisfies WatchReplay);
      const bus = core.events;
      const onOutput = (e: CoreEvents['session.output'][0]) => {
        if (e.session !== id) return;
        const data = decoder.write(e.data);
        if (data) push('session.output', { session: id, data, stream: e.stream });
      };
      const onResize = (e: CoreEvents['session.resize'][0]) => {
        if (e.session === id) push('session.resize', e);
      };
      const onDecided = (e: CoreEvents['request.decided'][0]) => {
        if (e.session === id) push('request.decided', decisionEvent(e));
      };
      const onStatement = (e: CoreEvents['session.statement'][0]) => {
        if (e.session === id) push('session.statement', e);
      };
      const onCreated = (a: ApprovalRecord) => {
        if (a.session === id) push('approval.created', a);
      };
      const onApprovalDecided = (a: ApprovalRecord) => {
        if (a.session === id) push('approval.decided', a);
      };
      const onClosed = (s: CoreEvents['session.closed'][0]) => {
        if (s.id !== id) return;
        push('session.closed', s);
        end(`session ${id} ended: ${s.reason}`);
      };
      bus.on('session.output', onOutput);
      bus.on('session.resize', onResize);
      bus.on('request.decided', onDecided);
      bus.on('session.statement', onStatement);
      bus.on('session.closed', onClosed);
      core.approvals.on('created', onCreated);
      core.approvals.on('decided', onApprovalDecided);
      return () => {
        bus.off('session.output', onOutput);
        bus.off('session.resize', onResize);
        bus.off('request.decided', onDecided);
        bus.off('session.statement', onStatement);
        bus.off('session.closed', onClosed);
        core.approvals.off('created', onCreated);
        core.approvals.off('decided', onApprovalDecided);
      };
    },
  };
}

export const EVENT_TYPES = ['session.opened', 'session.closed', 'request.decided', 'session.statement', 'approval.created', 'approval.decided', 'policy.reloaded', 'policy.reload_failed'] as const;
export type StreamEventType = (typeof EVENT_TYPES)[number];

export function subscribeEvents(core: Core, types: readonly string[] | undefined): Subscription {
  const want = new Set<string>(types ?? EVENT_TYPES);
  for (const t of want) if (!(EVENT_TYPES as readonly string[]).includes(t)) throw new PortcullisError('bad_request', `unknown event type "${t}"; types: ${EVENT_TYPES.join(', ')} (live output: session.watch)`);
  return {
    result: { types: [...want] },
    start(push) {
      const stops: (() => void)[] = [];
      const bus = core.events;
      const on = <K extends keyof CoreEvents>(name: K, map: (...a: CoreEvents[K]) => unknown) => {
        if (!want.has(name)) return;
        const fn = (...a: CoreEvents[K]) => push(name, map(...a));
        (bus as unknown as NodeJS.EventEmitter).on(name, fn as (...x: unknown[]) => void);
        stops.push(() => (bus as unknown as NodeJS.EventEmitter).off(name, fn as (...x: unknown[]) => void));
      };
      on('session.opened', (s) => s);
      on('session.closed', (s) => s);
      on('request.decided', (e) => decisionEvent(e));
      on('session.statement', (e) => e);
      on('policy.reloaded', (e) => e);
      on('policy.reload_failed', (e) => e);
      for (const [name, ev] of [['approval.created', 'created'], ['approval.decided', 'decided']] as const) {
        if (!want.has(name)) continue;
        const fn = (a: ApprovalRecord) => push(name, a);
        core.approvals.on(ev, fn);
        stops.push(() => core.approvals.off(ev, fn));
      }
      return () => {
        for (const s of stops) s();
      };
    },
  };
}
