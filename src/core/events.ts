// The core's event bus: proxies publish, the recorder, the console (via the control socket) and
// the metrics subscribe. Payloads are already masked when they are published.
import { EventEmitter } from 'node:events';
import type { Decision, Identity, PolicyRequest, Protocol } from '../policy/types.js';

export interface SessionInfo {
  id: string;
  protocol: Protocol;
  target: string;
  identity: Identity;
  openedAt: number;
  remote?: string;
  meta: Record<string, string>;
}

export interface CoreEvents {
  'session.opened': [SessionInfo];
  'session.closed': [SessionInfo & { closedAt: number; reason: string }];
  'request.decided': [{ session: string; request: RequestSummary; decision: Decision; seq: number }];
  /** A chunk of (masked) output of a session, for live view and recording. */
  'session.output': [{ session: string; data: Buffer; stream: 'stdout' | 'stderr' }];
  /** The session's terminal was resized (live view). */
  'session.resize': [{ session: string; cols: number; rows: number }];
  /** One statement of a PostgreSQL session finished (masked; row count, duration): transcripts, console. */
  'session.statement': [StatementSummary];
  'policy.reloaded': [{ version: string; rules: number }];
  /** Every decision Core.decide returns (with or without a session), for the metrics. `evalSeconds`: policy evaluation alone. */
  'decision.made': [{ protocol: Protocol; decision: Decision; evalSeconds: number }];
  /**
   * Bytes a proxy moved for a session: `in` from the agent towards the target, `out` back to the
   * agent. Emit per chunk or batched; only counters listen (the metrics).
   */
  'session.bytes': [{ protocol: Protocol; direction: 'in' | 'out'; bytes: number }];
  'policy.reload_failed': [{ error: string }];
}

/** What the audit log and the event bus keep of a request: no secrets, masked literals. */
export interface RequestSummary {
  protocol: Protocol;
  target: string;
  sql?: string;
  /** PostgreSQL: the search_path the statement was decided under, when not ["public"] (policy simulate). */
  searchPath?: string[];
  command?: string;
  http?: PolicyRequest['http'];
  forward?: PolicyRequest['forward'];
  reason?: string;
}

/** A finished statement as proxies report it (the PostgreSQL transcript entry). */
export interface StatementSummary {
  session: string;
  [key: string]: unknown;
}

export class EventBus extends EventEmitter<CoreEvents> {
  constructor() {
    super({ captureRejections: false });
    this.setMaxListeners(1000);
  }
}
