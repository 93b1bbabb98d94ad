// The control socket's wire protocol (JSON lines over a unix socket), shared by the server, the
// CLI and the console (tui/).
//
// Requests, one per line:   {"id":1,"op":"sessions.list","args":{}}
// Responses, one each:      {"id":1,"ok":true,"result":…} | {"id":1,"ok":false,"error":{"code","message"}}
// Pushed events (after a subscribing op succeeded; `sub` is that request's id):
//                           {"event":"session.output","sub":7,"data":{…}}
// A subscription ends with {"event":"sub.end","sub":7,"data":{"reason":…}} (session closed, the
// client fell behind, unsubscribe).
//
// Handshake: `hello` answers a challenge; the client proves its uid by answering it (see
// peercred.ts) with `auth`. Until then only `hello` and `auth` are accepted.
import type { SessionInfo } from '../core/events.js';
import type { ApprovalRecord } from '../store/types.js';

export const PROTOCOL_VERSION = 2;

export interface ControlRequest {
  id?: number | string;
  op: string;
  args?: Record<string, unknown>;
}

export interface ControlResponse {
  id?: number | string;
  ok: boolean;
  result?: unknown;
  error?: { code: string; message: string };
}

export interface ControlEvent {
  event: string;
  sub: number | string;
  data: unknown;
}

export interface HelloResult {
  version: string;
  protocol: number;
  policy: string;
  challenge: { dir: string; nonce: string; expiresAt: number };
}

/** Who the peer is, as the kernel attests it (see peercred.ts), and what it may do. */
export interface OperatorIdentity {
  uid: number;
  user: string;
  groups: string[];
  /** operator: every op; none: hello/auth/whoami only. */
  role: 'operator' | 'none';
  /** Why this role (root, the service user, member of control.group, or why not). */
  why: string;
  /** The name the client stated in hello (recorded in the audit, never trusted). */
  claimed?: string;
}

/** A live session as `sessions.list` reports it. */
export interface SessionView extends SessionInfo {
  lastRequest?: { text: string; effect: string; rule: string; at: number };
  requests: number;
}

export type ApprovalView = ApprovalRecord & { justification?: string };

/** One decided request of a session (`request.decided`, as the console shows it). */
export interface DecisionEvent {
  session: string;
  request: { protocol: string; target: string; sql?: string; command?: string; http?: { method: string; path: string }; forward?: { host: string; port: number }; reason?: string };
  decision: { effect: string; rule: string; reason: string; remedy?: string };
  seq: number;
  at: number;
}

/** `session.watch`'s first event: the recording so far. */
export interface WatchReplay {
  session: SessionView;
  /** asciicast v2 header and events so far (terminal sessions). */
  cast?: { header: { width: number; height: number; [k: string]: unknown }; events: [number, string, string][]; truncatedBefore?: number };
  /** PostgreSQL transcript lines so far (statement sessions). */
  transcript?: Record<string, unknown>[];
}

export interface RecordingInfo {
  session: string;
  kind: 'cast' | 'pg' | 'kube';
  file: string;
  bytes: number;
  mtime: number;
  protocol?: string;
  target?: string;
  subject?: string;
  openedAt?: number;
  closedAt?: number;
  live: boolean;
}

/** Text of a request summary for one line of a list. */
export function requestText(r: { sql?: unknown; command?: unknown; http?: unknown; forward?: unknown } | undefined | null): string {
  if (!r) return '';
  const http = r.http as { method?: string; path?: string } | undefined;
  const fwd = r.forward as { host?: string; port?: number } | undefined;
  const t = typeof r.sql === 'string' ? r.sql : typeof r.command === 'string' ? r.command : http ? `${http.method ?? '?'} ${http.path ?? ''}` : fwd ? `forward ${fwd.host}:${fwd.port}` : '';
  return t.replace(/\s+/g, ' ').trim();
}
