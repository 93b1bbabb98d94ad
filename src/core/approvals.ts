// Just-in-time approvals: a `review` decision parks the request as a pending approval in the
// store; on-call staff approve or deny it (console, CLI); it expires into a denial on timeout.
// Every state change is a compare-and-set on the stored record and is audited. Approvals that are
// still pending when the bastion starts are expired: a held request is never forwarded by a
// process that did not hold it.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Identity, Protocol } from '../policy/types.js';
import { PortcullisError } from '../policy/types.js';
import type { ApprovalRecord, Store } from '../store/types.js';
import type { AuditLog } from './audit.js';

export type ApprovalOutcome = { state: 'approved' | 'denied' | 'expired'; by?: string; reason?: string };

/** A `follow()` that stopped waiting before the approval was decided: it is still pending. */
export type FollowOutcome = ApprovalOutcome | { state: 'pending'; by?: undefined; reason?: undefined };

export interface ApprovalRequest {
  session?: string;
  protocol: Protocol;
  target: string;
  identity: Identity;
  /** The masked request summary shown to approvers. */
  request: Record<string, unknown>;
  rule: string;
  /** The decision's reason (why review). */
  reason: string;
  /** The agent's stated justification, if any. */
  justification?: string;
  timeoutMs?: number;
  /**
   * Requests held with a key (`Core.hold` with `reuse`): a retry of the same request attaches to
   * this approval while it is pending, and an approval granted after every requester stopped
   * waiting is kept for one retry (see `takeGrant`).
   */
  key?: string;
}

interface ApprovalEvents {
  created: [ApprovalRecord];
  decided: [ApprovalRecord];
}

/** Short, unambiguous ids operators can type: 10 chars of [a-z2-9] minus look-alikes. */
function newId(): string {
  const alphabet = 'abcdefghjkmnpqrstuvwxyz23456789';
  const b = randomBytes(10);
  let s = '';
  for (const x of b) s += alphabet[x % alphabet.length];
  return s;
}

export class Approvals extends EventEmitter<ApprovalEvents> {
  private readonly waiters = new Map<string, { resolve: (o: ApprovalOutcome) => void; timer: NodeJS.Timeout }>();
  // Keyed holds (reuse): followers may come and go while the approval stays pending.
  private readonly followers = new Map<string, Set<(o: ApprovalOutcome) => void>>();
  private readonly expiry = new Map<string, NodeJS.Timeout>();
  private readonly pendingByKey = new Map<string, { id: string; expiresAt: number }>();
  private readonly keyOf = new Map<string, { key: string; windowMs: number }>();
  private readonly grants = new Map<string, { id: string; until: number; by?: string }>();

  constructor(
    private readonly store: Store,
    private readonly audit: AuditLog,
    private readonly defaultTimeoutMs: number,
  ) {
    super();
  }

  /** Expire approvals left pending by a previous process (their requests are gone). */
  async recover(): Promise<number> {
    const stale = await this.store.approvals.find({ state: 'pending' });
    for (const a of stale) await this.settle(a.id, 'expired', 'portcullis', 'the bastion restarted while the request was held');
    return stale.length;
  }

  /** Create a pending approval. Resolve its outcome with `wait(id)`. */
  async create(r: ApprovalRequest): Promise<ApprovalRecord> {
    const now = Date.now();
    const rec: ApprovalRecord = {
      id: newId(),
      state: 'pending',
      request: r.request,
      rule: r.rule,
      identity: r.identity,
      reason: r.reason,
      createdAt: now,
      expiresAt: now + (r.timeoutMs ?? this.defaultTimeoutMs),
      session: r.session,
      target: r.target,
      protocol: r.protocol,
    };
    if (r.justification !== undefined) (rec as ApprovalRecord & { justification?: string }).justification = r.justification;
    await this.audit.append(
      { type: 'approval.requested', session: r.session, identity: r.identity, target: r.target, protocol: r.protocol, request: r.request, data: { approval: rec.id, rule: r.rule, expiresAt: new Date(rec.expiresAt).toISOString(), justification: r.justification ?? null } },
      { durable: true },
    );
    await this.store.approvals.insert(rec);
    if (r.key !== undefined) {
      this.pendingByKey.set(r.key, { id: rec.id, expiresAt: rec.expiresAt });
      this.keyOf.set(rec.id, { key: r.key, windowMs: rec.expiresAt - now });
    }
    this.emit('created', rec);
    return rec;
  }

  /** The pending approval of a keyed hold, if there is one. */
  pendingFor(key: string): { id: string; expiresAt: number } | undefined {
    return this.pendingByKey.get(key);
  }

  /**
   * An approval granted for `key` after its requesters had stopped waiting: returned once (the
   * retry it was kept for), within the approval window counted from the grant.
   */
  takeGrant(key: string): { id: string; by?: string } | undefined {
    const g = this.grants.get(key);
    if (!g) return undefined;
    this.grants.delete(key);
    return g.until > Date.now() ? { id: g.id, ...(g.by !== undefined ? { by: g.by } : {}) } : undefined;
  }

  /**
   * Wait for a keyed approval without owning it: after `waitMs`, or when `signal` aborts, this
   * waiter stops with `pending` and the approval stays pending until it is decided or expires.
   */
  follow(id: string, expiresAt: number, opts: { signal?: AbortSignal; waitMs?: number } = {}): Promise<FollowOutcome> {
    if (!this.expiry.has(id)) {
      this.expiry.set(id, setTimeout(() => void this.settle(id, 'expired', 'portcullis', 'approval timed out').catch(() => undefined), Math.max(0, expiresAt - Date.now())));
    }
    return new Promise<FollowOutcome>((resolve) => {
      const set = this.followers.get(id) ?? new Set();
      this.followers.set(id, set);
      let timer: NodeJS.Timeout | undefined;
      const done = (o: FollowOutcome) => {
        set.delete(f);
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener('abort', gone);
        resolve(o);
      };
      const f = (o: ApprovalOutcome) => done(o);
      const gone = () => done({ state: 'pending' });
      set.add(f);
      if (opts.waitMs !== undefined) timer = setTimeout(gone, opts.waitMs);
      if (opts.signal?.aborted) gone();
      else opts.signal?.addEventListener('abort', gone, { once: true });
    });
  }

  /** Wait for the approval's outcome; expires it at `expiresAt`. Cancel with the signal (client gone). */
  wait(id: string, expiresAt: number, signal?: AbortSignal): Promise<ApprovalOutcome> {
    return new Promise<ApprovalOutcome>((resolve) => {
      const timer = setTimeout(() => void this.settle(id, 'expired', 'portcullis', 'approval timed out').catch(() => undefined), Math.max(0, expiresAt - Date.now()));
      this.waiters.set(id, { resolve, timer });
      signal?.addEventListener('abort', () => void this.settle(id, 'expired', 'portcullis', 'the requester went away').catch(() => undefined), { once: true });
    });
  }

  async list(state?: ApprovalRecord['state']): Promise<ApprovalRecord[]> {
    return this.store.approvals.find(state ? { state } : {}, { sort: { createdAt: 1 } });
  }

  /**
   * An operator decides. The requester can never approve its own request. Throws
   * `approval_not_found`, `approval_not_pending` or `approval_self`.
   */
  async decide(id: string, state: 'approved' | 'denied', operator: string, reason?: string): Promise<ApprovalRecord> {
    const rec = await this.store.approvals.get(id);
    if (!rec) throw new PortcullisError('approval_not_found', `no approval with id ${id}`);
    if (rec.state !== 'pending') throw new PortcullisError('approval_not_pending', `approval ${id} is already ${rec.state}`);
    if (state === 'approved' && operator === rec.identity.subject) throw new PortcullisError('approval_self', `${operator} requested ${id} and cannot approve it`);
    const out = await this.settle(id, state, operator, reason);
    if (!out) throw new PortcullisError('approval_not_pending', `approval ${id} was decided concurrently`);
    return out;
  }

  private async settle(id: string, state: ApprovalOutcome['state'], by: string, reason?: string): Promise<ApprovalRecord | null> {
    const cur = await this.store.approvals.get(id);
    if (!cur || cur.state !== 'pending') return null;
    // Audit first: an approval that is not on record must not release the request.
    await this.audit.append(
      { type: 'approval', session: cur.session, identity: cur.identity, target: cur.target, protocol: cur.protocol, data: { approval: id, state, by, reason: reason ?? null } },
      { durable: true },
    );
    const updated = await this.store.approvals.update(id, { state, decidedAt: Date.now(), decidedBy: by, decisionReason: reason }, { where: { state: 'pending' } });
    if (!updated) return null;
    const w = this.waiters.get(id);
    if (w) {
      clearTimeout(w.timer);
      this.waiters.delete(id);
      w.resolve({ state, by, reason });
    }
    const t = this.expiry.get(id);
    if (t) clearTimeout(t);
    this.expiry.delete(id);
    const fs = this.followers.get(id);
    this.followers.delete(id);
    const k = this.keyOf.get(id);
    this.keyOf.delete(id);
    if (k) {
      if (this.pendingByKey.get(k.key)?.id === id) this.pendingByKey.delete(k.key);
      // Nobody is waiting any more: keep the grant for the requester's retry.
      if (state === 'approved' && !w && !fs?.size) this.grants.set(k.key, { id, until: Date.now() + k.windowMs, by });
    }
    for (const f of fs ?? []) f({ state, by, reason });
    this.emit('decided', updated);
    return updated;
  }

  /** Refuse every held request (shutdown). */
  async expireAll(reason: string): Promise<void> {
    for (const id of new Set([...this.waiters.keys(), ...this.expiry.keys()])) await this.settle(id, 'expired', 'portcullis', reason).catch(() => undefined);
    this.grants.clear();
  }
}
