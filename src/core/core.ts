// The shared core every proxy calls: one policy snapshot (swapped atomically on reload), the
// write-ahead audit log, the session registry and the event bus. `decide()` is the single entry
// point: identity + request → decision, with the audit event durable before it returns.
import { randomUUID } from 'node:crypto';
import { loadPolicyDir, type CompiledPolicy } from '../policy/compile.js';
import { requestActions } from '../policy/actions.js';
import { evaluateCached } from './decision-cache.js';
import { PortcullisError, type Decision, type Identity, type PolicyRequest, type Protocol } from '../policy/types.js';
import type { Store } from '../store/types.js';
import { AuditLog, type AuditOpenOptions } from './audit.js';
import { Approvals } from './approvals.js';
import { Budgets } from './budgets.js';
import { holdRequest, type HoldOptions, type HoldOutcome } from './hold.js';
import { ApprovalWebhook, type WebhookConfig } from './webhook.js';
import { EventBus, type RequestSummary, type SessionInfo } from './events.js';
import { summarizeRequest } from './summary.js';
import type { Logger } from './log.js';
import { CastWriter, castWriterOptions, recordingPath, type CastHeader, type CastSummary } from '../../recordings/asciicast.js';
import type { RecordingsConfig } from '../config/recordings.js';

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
  /** How long an approval stays usable for its request when the approver gives no --for (ms, default 10 min). */
  approvalGrantTtlMs?: number;
  /** POST approval notifications here (approvals.webhook). */
  webhook?: WebhookConfig;
  store: Store;
  log: Logger;
  /** Audit write/fsync override (tests, instrumentation). */
  auditIo?: AuditOpenOptions['io'];
  /** Recording rotation, size cap and fsync policy (config `recordings`; default src/config/recordings.ts). */
  recordings?: RecordingsConfig;
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
  /** Damage budgets: `consume()` for what a request did, `snapshot()` for the console and /metrics. */
  readonly budgets: Budgets;
  private webhook: ApprovalWebhook | null = null;

  private constructor(
    private readonly opts: CoreOptions,
    readonly audit: AuditLog,
    policy: CompiledPolicy,
  ) {
    this.policySnapshot = policy;
    this.approvals = new Approvals(opts.store, audit, opts.approvalTimeoutMs ?? 5 * 60_000, opts.approvalGrantTtlMs);
    this.budgets = new Budgets(opts.store, () => this.policySnapshot, (id) => this.sessions.get(id), opts.log);
  }

  /** Loads the policy (throws a ConfigError naming file:line:field) and opens the audit log. */
  static async open(opts: CoreOptions): Promise<Core> {
    const policy = loadPolicyDir(opts.policiesDir);
    const audit = await AuditLog.open(opts.dataDir, { ...opts.audit, io: opts.auditIo });
    const core = new Core(opts, audit, policy);
    const expired = await core.approvals.recover();
    if (expired) opts.log.warn('expired approvals left pending by a previous run', { count: expired });
    await core.budgets.open();
    if (opts.webhook) core.webhook = new ApprovalWebhook(core.approvals, opts.webhook, opts.log);
    return core;
  }

  get policy(): CompiledPolicy {
    return this.policySnapshot;
  }

  get store(): Store {
    return this.opts.store;
  }

  get dataDir(): string {
    return this.opts.dataDir;
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
    const w = CastWriter.open(recordingPath(this.opts.dataDir, session), header, castWriterOptions(this.opts.recordings));
    this.recordings.set(session, w);
    const events = this.events;
    return {
      path: w.path,
      output(data, stream = 'stdout') {
        w.output(data);
        events.emit('session.output', { session, data, stream });
      },
      input: (data) => w.input(data),
      resize(cols, rows) {
        w.resize(cols, rows);
        events.emit('session.resize', { session, cols, rows });
      },
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
      await this.budgets.sessionClosed(info, closedAt).catch((e: unknown) => this.opts.log.error('budgets: closing the session failed', { error: String(e) }));
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
    const policy = this.policySnapshot;
    const t0 = performance.now();
    const ev = evaluateCached(policy, request);
    const evalSeconds = (performance.now() - t0) / 1000;
    let decision = ev.decision;
    let shadow: { effect: string; rule: string; reason: string; code?: string } | undefined = ev.shadow;
    let engine: { effect: string; rule: string } | undefined;
    if (policy.budgets.length > 0 && decision.effect !== 'deny') {
      // Damage budgets: an exhausted one refuses (or holds) before anything is forwarded.
      const b = await this.budgets.check(session, request, ev.actions);
      if (b.live) {
        engine = { effect: decision.effect, rule: decision.rule };
        decision = b.live.effect === 'review' ? { ...b.live, masks: decision.masks, ...(decision.approval ? { approval: decision.approval } : {}) } : b.live;
      }
      shadow ??= b.shadow;
      if (decision.effect !== 'deny') this.budgets.countStatement(session, request, ev.actions);
    }
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
          // Keys in canonical (sorted) order (see summarizeRequest).
          data: { ...(decision.code ? { code: decision.code } : {}), ...(engine ? { engine } : {}), policy: policy.version, ...(shadow ? { shadow } : {}) },
        },
        { durable: !readOnly },
      );
      if (session) this.events.emit('request.decided', { session, request: summary, decision, seq: written.seq });
      this.events.emit('decision.made', { protocol: request.protocol, decision, evalSeconds });
      return { decision, seq: written.seq };
    } catch (e) {
      const msg = e instanceof PortcullisError ? e.message : String(e);
      this.opts.log.error('audit write failed: refusing the request', { error: msg });
      const refused: Decision = { effect: 'deny', rule: 'audit-unavailable', reason: `the audit log cannot be written (${msg}); refusing (fail closed)`, masks: [] };
      this.events.emit('decision.made', { protocol: request.protocol, decision: refused, evalSeconds });
      return { decision: refused, seq: null };
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
    opts: HoldOptions = {},
  ): Promise<HoldOutcome> {
    return holdRequest({ approvals: this.approvals, audit: this.audit, recordingOffset: (id) => (id ? this.recordings.get(id)?.offset() : undefined) }, session, request, decision, onHeld, signal, opts);
  }

  /**
   * A request decided before runs again without a new decision (a prepared statement executed
   * again): only the damage budgets are checked again, and the run is counted. Null: it may run.
   * Otherwise the audited refusal (a budget asking for review refuses here: the agent sends the
   * statement again as a new request to be held).
   */
  async recheck(session: string, request: PolicyRequest): Promise<{ decision: Decision; seq: number | null } | null> {
    const policy = this.policySnapshot;
    if (policy.budgets.length === 0) return null;
    const actions = requestActions(request);
    const b = await this.budgets.check(session, request, actions);
    if (!b.live) {
      this.budgets.countStatement(session, request, actions);
      return null;
    }
    const decision: Decision = b.live.effect === 'deny' ? b.live : { ...b.live, effect: 'deny', remedy: `${b.live.remedy ?? ''}; this budget asks for review: send the statement again (not a prepared re-execution) to be held for approval` };
    try {
      const written = await this.audit.append(
        {
          type: 'request',
          session,
          identity: request.identity,
          target: request.target,
          protocol: request.protocol,
          request: summarizeRequest(request),
          decision: { effect: decision.effect, rule: decision.rule, reason: decision.reason },
          data: { policy: policy.version, code: 'budget_exceeded', reexecution: true },
        },
        { durable: true },
      );
      this.events.emit('request.decided', { session, request: summarizeRequest(request), decision, seq: written.seq });
      return { decision, seq: written.seq };
    } catch (e) {
      const msg = e instanceof PortcullisError ? e.message : String(e);
      return { decision: { effect: 'deny', rule: 'audit-unavailable', reason: `the audit log cannot be written (${msg}); refusing (fail closed)`, masks: [] }, seq: null };
    }
  }

  async close(): Promise<void> {
    await this.approvals.expireAll('the bastion is stopping').catch(() => undefined);
    for (const id of [...this.sessions.keys()]) await this.closeSession(id, 'bastion stopping').catch(() => undefined);
    await this.webhook?.stop();
    await this.budgets.close();
    await this.audit.close();
  }
}
