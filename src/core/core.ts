// The shared core every proxy calls: one policy snapshot (swapped atomically on reload), the
// write-ahead audit log, the session registry and the event bus. `decide()` is the single entry
// point: identity + request → decision, with the audit event durable before it returns.
import { randomUUID } from 'node:crypto';
import { loadPolicyDir, type CompiledPolicy } from '../policy/compile.js';
import { evaluateCached } from './decision-cache.js';
import { PortcullisError, type Decision, type Identity, type PolicyRequest, type Protocol } from '../policy/types.js';
import type { Store } from '../store/types.js';
import { AuditLog, type AuditOpenOptions } from './audit.js';
import { Approvals, type ApprovalOutcome } from './approvals.js';
import { EventBus, type RequestSummary, type SessionInfo } from './events.js';
import { summarizeRequest } from './summary.js';
import type { Logger } from './log.js';
import { CastWriter, recordingPath, type CastHeader, type CastSummary } from '../../recordings/asciicast.js';

/**
 * A session's terminal recording (asciicast v2) as proxies feed it: every call writes the event
 * and publishes it on the event bus for the live view. Data must already be masked.
 */
export interface SessionRecording {
  output(data: Buffer, stream?: 'stdout' | 'stderr'): void;
  input(data: Buffer): void;
  resize(cols: number, rows: number): void;
  marker(label: string): void;
  /** Seconds since the recording started (approvals and audit events link to it). */
  offset(): number;
  readonly path: string;
}

export interface CoreOptions {
  dataDir: string;
  policiesDir: string;
  audit: { sync: 'always' | 'writes' | 'interval'; intervalMs: number; checkpointEvery: number };
  /** Default time a held request waits for an approval (ms). */
  approvalTimeoutMs?: number;
  store: Store;
  log: Logger;
  /** Audit write/fsync override (tests, instrumentation). */
  auditIo?: AuditOpenOptions['io'];
}

/** Actions that only read: their audit events may be synced on the interval (audit.sync: writes). */
const READ_ONLY_SQL = new Set(['read', 'show', 'call', 'transaction', 'set', 'reset', 'fetch', 'execute', 'prepare', 'declare', 'close', 'deallocate', 'discard']);

export class Core {
  readonly events = new EventBus();
  private policySnapshot: CompiledPolicy;
  private readonly sessions = new Map<string, SessionInfo>();
  private readonly killers = new Map<string, (reason: string) => void>();
  private readonly recordings = new Map<string, CastWriter>();
  readonly approvals: Approvals;

  private constructor(
    private readonly opts: CoreOptions,
    readonly audit: AuditLog,
    policy: CompiledPolicy,
  ) {
    this.policySnapshot = policy;
    this.approvals = new Approvals(opts.store, audit, opts.approvalTimeoutMs ?? 5 * 60_000);
  }

  /** Loads the policy (throws a ConfigError naming file:line:field) and opens the audit log. */
  static async open(opts: CoreOptions): Promise<Core> {
    const policy = loadPolicyDir(opts.policiesDir);
    const audit = await AuditLog.open(opts.dataDir, { ...opts.audit, io: opts.auditIo });
    const core = new Core(opts, audit, policy);
    const expired = await core.approvals.recover();
    if (expired) opts.log.warn('expired approvals left pending by a previous run', { count: expired });
    return core;
  }

  get policy(): CompiledPolicy {
    return this.policySnapshot;
  }

  get store(): Store {
    return this.opts.store;
  }

  /** Reload the policy: the new snapshot replaces the old atomically; on error the old stays. */
  reloadPolicies(): { ok: true; version: string } | { ok: false; error: string } {
    try {
      const next = loadPolicyDir(this.opts.policiesDir);
      this.policySnapshot = next;
      this.events.emit('policy.reloaded', { version: next.version, rules: next.rules.length });
      this.opts.log.info('policy reloaded', { version: next.version, rules: next.rules.length });
      return { ok: true, version: next.version };
    } catch (e) {
      const error = (e as Error).message;
      this.events.emit('policy.reload_failed', { error });
      this.opts.log.error('policy reload failed; keeping the previous policy', { error, version: this.policySnapshot.version });
      return { ok: false, error };
    }
  }

  /**
   * Register a session (audited before it is usable). `kill` is how the core ends it (operator
   * `kill`, revalidation failure, shutdown): the proxy closes the connection and then calls
   * closeSession itself.
   */
  async openSession(s: { protocol: Protocol; target: string; identity: Identity; remote?: string; meta?: Record<string, string>; kill?: (reason: string) => void }): Promise<SessionInfo> {
    const { kill, ...rest } = s;
    const info: SessionInfo = { id: randomUUID(), openedAt: Date.now(), meta: {}, ...rest };
    if (kill) this.killers.set(info.id, kill);
    await this.audit.append(
      { type: 'session.open', session: info.id, identity: info.identity, target: info.target, protocol: info.protocol, data: { remote: info.remote ?? null, ...info.meta } },
      { durable: true },
    );
    this.sessions.set(info.id, info);
    await this.opts.store.sessions.insert({ id: info.id, protocol: info.protocol, target: info.target, identity: info.identity, openedAt: info.openedAt, meta: info.meta });
    this.events.emit('session.opened', info);
    return info;
  }

  /**
   * Start the asciicast recording of a live session (`<data-dir>/recordings/<session>.cast`). It is
   * closed by closeSession, whose audit event carries the file's SHA-256 so `audit verify` can
   * detect tampering.
   */
  record(session: string, header: CastHeader): SessionRecording {
    if (!this.sessions.has(session)) throw new PortcullisError('no_session', `no live session ${session}`);
    if (this.recordings.has(session)) throw new PortcullisError('already_recording', `session ${session} is already being recorded`);
    const w = CastWriter.open(recordingPath(this.opts.dataDir, session), header);
    this.recordings.set(session, w);
    const events = this.events;
    return {
      path: w.path,
      output(data, stream = 'stdout') {
        w.output(data);
        events.emit('session.output', { session, data, stream });
      },
      input: (data) => w.input(data),
      resize: (cols, rows) => w.resize(cols, rows),
      marker: (label) => w.marker(label),
      offset: () => w.offset(),
    };
  }

  async closeSession(id: string, reason = 'closed', extra: Record<string, unknown> = {}): Promise<void> {
    const info = this.sessions.get(id);
    if (!info) return;
    this.sessions.delete(id);
    this.killers.delete(id);
    const closedAt = Date.now();
    const rec = this.recordings.get(id);
    this.recordings.delete(id);
    let recording: CastSummary | { error: string } | null = null;
    if (rec) {
      try {
        recording = rec.close();
      } catch (e) {
        recording = { error: (e as Error).message };
      }
    }
    try {
      await this.audit.append({ type: 'session.close', session: id, identity: info.identity, target: info.target, protocol: info.protocol, data: { reason, ...extra, ...(recording ? { recording } : {}) } }, { durable: true });
      await this.opts.store.sessions.update(id, { closedAt });
    } finally {
      this.events.emit('session.closed', { ...info, closedAt, reason });
    }
  }

  /** End a live session through its proxy. False when there is no such session. */
  async killSession(id: string, reason: string): Promise<boolean> {
    if (!this.sessions.has(id)) return false;
    const k = this.killers.get(id);
    if (k) k(reason);
    else await this.closeSession(id, reason);
    return true;
  }

  listSessions(): SessionInfo[] {
    return [...this.sessions.values()];
  }

  /**
   * Decide a request and write its audit event before returning (write-ahead). If the audit
   * event cannot be written the caller gets a `deny` with rule `audit-unavailable` and must
   * refuse the request (fail closed). Never throws for a bad request: it is decided fail-closed.
   */
  async decide(session: string | null, request: PolicyRequest): Promise<{ decision: Decision; seq: number | null }> {
    const ev = evaluateCached(this.policySnapshot, request);
    const decision = ev.decision;
    const summary: RequestSummary = summarizeRequest(request);
    const readOnly = decision.effect === 'allow' && ev.actions.every((a) => (a.kind === 'sql' && READ_ONLY_SQL.has(a.sql.action)) || (a.kind === 'kube' && ['get', 'list', 'watch'].includes(a.kube.verb)));
    try {
      const written = await this.audit.append(
        {
          type: 'request',
          session: session ?? undefined,
          identity: request.identity,
          target: request.target,
          protocol: request.protocol,
          request: summary,
          decision: { effect: decision.effect, rule: decision.rule, reason: decision.reason },
          data: { policy: this.policySnapshot.version },
        },
        { durable: !readOnly },
      );
      if (session) this.events.emit('request.decided', { session, request: summary, decision, seq: written.seq });
      return { decision, seq: written.seq };
    } catch (e) {
      const msg = e instanceof PortcullisError ? e.message : String(e);
      this.opts.log.error('audit write failed: refusing the request', { error: msg });
      return { decision: { effect: 'deny', rule: 'audit-unavailable', reason: `the audit log cannot be written (${msg}); refusing (fail closed)`, masks: [] }, seq: null };
    }
  }

  /**
   * Hold a request under review until an operator decides or it times out. `onHeld` runs once the
   * approval exists (the proxy tells the agent its id). Resolves with the outcome; a denied or
   * expired hold must be refused by the caller. `signal` aborts the hold (client went away).
   */
  async hold(
    session: string | null,
    request: PolicyRequest,
    decision: Decision,
    onHeld: (approvalId: string, expiresAt: number) => void,
    signal?: AbortSignal,
  ): Promise<ApprovalOutcome & { approvalId: string }> {
    const rec = await this.approvals.create({
      session: session ?? undefined,
      protocol: request.protocol,
      target: request.target,
      identity: request.identity,
      request: summarizeRequest(request) as unknown as Record<string, unknown>,
      rule: decision.rule,
      reason: decision.reason,
      justification: request.reason,
    });
    const pending = this.approvals.wait(rec.id, rec.expiresAt, signal);
    onHeld(rec.id, rec.expiresAt);
    const outcome = await pending;
    return { ...outcome, approvalId: rec.id };
  }

  async close(): Promise<void> {
    await this.approvals.expireAll('the bastion is stopping').catch(() => undefined);
    for (const id of [...this.sessions.keys()]) await this.closeSession(id, 'bastion stopping').catch(() => undefined);
    await this.audit.close();
  }
}
