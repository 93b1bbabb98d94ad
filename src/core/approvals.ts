// Just-in-time approvals: a `review` decision parks the request as a pending approval in the
// store; on-call staff approve or deny it (console, CLI); it expires into a denial on timeout.
// Every state change is a compare-and-set on the stored record and is audited.
//
// Statement-bound: an approval is bound to identity + target + the exact request (binding.ts).
// Once approved it is a grant: single use (`once`, the default) or every retry of the same
// request (`same-request`), until `validUntil` (the approver's `--for`, default grantTtlMs). A
// requester that stops waiting (client timeout, cancel, disconnect) leaves its approval pending
// ("detached") until it expires: a retry of the same request attaches to it, and once approved
// a retry uses the grant without a new hold.
//
// Two-person rule: `required` distinct approvers (never the requester); each approval is a vote,
// audited; the last one settles the record. One denial denies.
//
// Restart: approvals still pending when the bastion starts are expired (a held request is never
// forwarded by a process that did not hold it); approved grants survive in the store.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Identity, Protocol } from '../policy/types.js';
import { PortcullisError } from '../policy/types.js';
import type { ApprovalRecord, ApprovalVote, Patch, Store } from '../store/types.js';
import type { AuditLog } from './audit.js';

export type ApprovalOutcome = {
  state: 'approved' | 'denied' | 'expired';
  by?: string;
  reason?: string;
  /** The requester stopped waiting; the approval stays pending (a retry can pick it up). */
  withdrawn?: boolean;
  /** An earlier approval of the same request was used (no new hold). */
  reused?: boolean;
};

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
  /** requestBinding() of the request (identity + target + exact request). */
  binding?: string;
  /** Distinct approvers needed (default 1). */
  required?: number;
  /** Seconds into the session's recording. */
  recordingOffset?: number;
}

export interface DecideOptions {
  /** once (default): one run of the request; same-request: every retry until the grant expires. */
  scope?: 'once' | 'same-request';
  /** How long the grant stays usable after approval, ms (default: the store's grant TTL). */
  forMs?: number;
}

interface ApprovalEvents {
  created: [ApprovalRecord];
  /** A vote that did not settle the approval yet (two-person rule). */
  voted: [ApprovalRecord];
  decided: [ApprovalRecord];
  /** An approved grant was used by a request (a retry, or the held request itself). */
  used: [ApprovalRecord];
}

/** Longest grant an approver may give. */
export const MAX_GRANT_MS = 7 * 24 * 3_600_000;

/** Short, unambiguous ids operators can type: 10 chars of [a-z2-9] minus look-alikes. */
function newId(): string {
  const alphabet = 'abcdefghjkmnpqrstuvwxyz23456789';
  const b = randomBytes(10);
  let s = '';
  for (const x of b) s += alphabet[x % alphabet.length];
  return s;
}

export class Approvals extends EventEmitter<ApprovalEvents> {
  private readonly waiters = new Map<string, (o: ApprovalOutcome) => void>();
  private readonly timers = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly store: Store,
    private readonly audit: AuditLog,
    private readonly defaultTimeoutMs: number,
    private readonly grantTtlMs = 10 * 60_000,
  ) {
    super();
  }

  /** Expire approvals left pending by a previous process (their requests are gone). */
  async recover(): Promise<number> {
    const stale = await this.store.approvals.find({ state: 'pending' });
    for (const a of stale) await this.settle(a.id, 'expired', 'portcullis', 'the bastion restarted while the request was held');
    return stale.length;
  }

  /** Create a pending approval (expires at its timeout). Resolve its outcome with `wait(id)`. */
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
    if (r.justification !== undefined) rec.justification = r.justification;
    if (r.binding !== undefined) rec.binding = r.binding;
    if (r.required !== undefined && r.required > 1) rec.required = r.required;
    if (r.recordingOffset !== undefined) rec.recordingOffset = r.recordingOffset;
    rec.voteCount = 0;
    await this.audit.append(
      {
        type: 'approval.requested',
        session: r.session,
        identity: r.identity,
        target: r.target,
        protocol: r.protocol,
        request: r.request,
        data: {
          approval: rec.id,
          rule: r.rule,
          expiresAt: new Date(rec.expiresAt).toISOString(),
          justification: r.justification ?? null,
          ...(rec.required ? { approvers: rec.required } : {}),
          ...(r.recordingOffset !== undefined ? { recordingOffset: r.recordingOffset } : {}),
        },
      },
      { durable: true },
    );
    await this.store.approvals.insert(rec);
    this.arm(rec);
    this.emit('created', rec);
    return rec;
  }

  private arm(rec: ApprovalRecord): void {
    if (this.timers.has(rec.id)) return;
    const t = setTimeout(() => void this.settle(rec.id, 'expired', 'portcullis', 'approval timed out').catch(() => undefined), Math.max(0, rec.expiresAt - Date.now()));
    t.unref();
    this.timers.set(rec.id, t);
  }

  /**
   * Wait for the approval's outcome. The signal (client gone, cancel) ends the wait only: the
   * approval stays pending, detached, until it is decided or expires.
   */
  wait(id: string, _expiresAt?: number, signal?: AbortSignal): Promise<ApprovalOutcome> {
    return new Promise<ApprovalOutcome>((resolve) => {
      const done = (o: ApprovalOutcome) => {
        if (this.waiters.get(id) === done) this.waiters.delete(id);
        resolve(o);
      };
      this.waiters.set(id, done);
      const onAbort = () => {
        if (this.waiters.get(id) !== done) return;
        this.waiters.delete(id);
        void this.store.approvals.update(id, { detachedAt: Date.now() }, { where: { state: 'pending' } }).catch(() => undefined);
        resolve({ state: 'expired', withdrawn: true, reason: `the requester stopped waiting; approval ${id} stays pending until it expires: retry the same request to use it once approved` });
      };
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
      // Decided between the caller's lookup and this wait: answer with the stored outcome.
      void this.store.approvals.get(id).then(
        (cur) => {
          if (this.waiters.get(id) !== done) return;
          if (!cur) done({ state: 'expired', reason: `approval ${id} is gone` });
          else if (cur.state !== 'pending') done({ state: cur.state, by: cur.decidedBy, reason: cur.decisionReason });
        },
        () => undefined,
      );
    });
  }

  /** Whether a requester is waiting for this approval in this process. */
  isWaited(id: string): boolean {
    return this.waiters.has(id);
  }

  get(id: string): Promise<ApprovalRecord | null> {
    return this.store.approvals.get(id);
  }

  async list(state?: ApprovalRecord['state']): Promise<ApprovalRecord[]> {
    return this.store.approvals.find(state ? { state } : {}, { sort: { createdAt: 1 } });
  }

  /**
   * A usable grant for this binding, given under the same rule: approved, not expired, with at
   * least the approvers the rule needs now, and (scope once) not used yet; it is used atomically
   * (compare-and-set on `uses`). Null when there is none.
   */
  async useGrant(binding: string, rule: string, minApprovers = 1): Promise<ApprovalRecord | null> {
    const now = Date.now();
    const grants = await this.store.approvals.find({ binding, state: 'approved', rule }, { sort: { decidedAt: -1 } });
    for (const g of grants) {
      if ((g.validUntil ?? 0) <= now || (g.required ?? 1) < minApprovers) continue;
      const used = await this.markUsed(g);
      if (used) return used;
    }
    return null;
  }

  /** Count one run of the approved request: scope once can be used by one request only. */
  async markUsed(g: ApprovalRecord): Promise<ApprovalRecord | null> {
    const uses = g.uses ?? 0;
    if ((g.scope ?? 'once') === 'once' && uses > 0) return null;
    const updated = await this.store.approvals.update(g.id, { uses: uses + 1 }, { where: { state: 'approved', uses } });
    if (updated) this.emit('used', updated);
    return updated;
  }

  /** A pending approval of this binding and rule whose requester went away (a retry attaches to it). */
  async detached(binding: string, rule: string, minApprovers = 1): Promise<ApprovalRecord | null> {
    const pending = await this.store.approvals.find({ binding, state: 'pending', rule }, { sort: { createdAt: 1 } });
    for (const p of pending) {
      if (this.waiters.has(p.id) || p.expiresAt <= Date.now() || (p.required ?? 1) < minApprovers) continue;
      const updated = await this.store.approvals.update(p.id, { detachedAt: undefined }, { where: { state: 'pending' } });
      if (updated) {
        this.arm(updated);
        return updated;
      }
    }
    return null;
  }

  /**
   * An operator decides. The requester can never approve its own request; under the two-person
   * rule each approver counts once. Throws `approval_not_found`, `approval_not_pending`,
   * `approval_self`, `approval_duplicate_approver` or `bad_request`.
   */
  async decide(id: string, state: 'approved' | 'denied', operator: string, reason?: string, opts: DecideOptions = {}): Promise<ApprovalRecord> {
    if (opts.scope !== undefined && opts.scope !== 'once' && opts.scope !== 'same-request') throw new PortcullisError('bad_request', `scope must be once or same-request, got "${String(opts.scope)}"`);
    if (opts.forMs !== undefined && !(Number.isInteger(opts.forMs) && opts.forMs > 0 && opts.forMs <= MAX_GRANT_MS)) {
      throw new PortcullisError('bad_request', `the grant duration must be between 1 ms and ${MAX_GRANT_MS / 3_600_000} h`);
    }
    const rec = await this.store.approvals.get(id);
    if (!rec) throw new PortcullisError('approval_not_found', `no approval with id ${id}`);
    if (rec.state !== 'pending') throw new PortcullisError('approval_not_pending', `approval ${id} is already ${rec.state}`);
    if (state === 'denied') {
      const out = await this.settle(id, 'denied', operator, reason);
      if (!out) throw new PortcullisError('approval_not_pending', `approval ${id} was decided concurrently`);
      return out;
    }
    if (operator === rec.identity.subject) throw new PortcullisError('approval_self', `${operator} requested ${id} and cannot approve it`);
    const votes = rec.votes ?? [];
    if (votes.some((v) => v.by === operator)) {
      throw new PortcullisError('approval_duplicate_approver', `${operator} already approved ${id}; it needs ${(rec.required ?? 1) - votes.length} more distinct approver(s)`);
    }
    const vote: ApprovalVote = { by: operator, at: Date.now() };
    if (reason !== undefined) vote.reason = reason;
    if (opts.scope !== undefined) vote.scope = opts.scope;
    if (opts.forMs !== undefined) vote.forMs = opts.forMs;
    const all = [...votes, vote];
    const required = rec.required ?? 1;
    if (all.length < required) {
      await this.audit.append(
        { type: 'approval.vote', session: rec.session, identity: rec.identity, target: rec.target, protocol: rec.protocol, data: { approval: id, by: operator, reason: reason ?? null, votes: all.length, required } },
        { durable: true },
      );
      const updated = await this.store.approvals.update(id, { votes: all, voteCount: all.length }, { where: { state: 'pending', voteCount: votes.length } });
      if (!updated) throw new PortcullisError('approval_not_pending', `approval ${id} was decided concurrently`);
      this.emit('voted', updated);
      return updated;
    }
    const out = await this.settle(id, 'approved', operator, reason, all);
    if (!out) throw new PortcullisError('approval_not_pending', `approval ${id} was decided concurrently`);
    return out;
  }

  private async settle(id: string, state: ApprovalOutcome['state'], by: string, reason?: string, votes?: ApprovalVote[]): Promise<ApprovalRecord | null> {
    const cur = await this.store.approvals.get(id);
    if (!cur || cur.state !== 'pending') return null;
    const now = Date.now();
    const patch: Patch<ApprovalRecord> = { state, decidedAt: now, decidedBy: by, decisionReason: reason };
    if (state === 'approved') {
      const vs = votes ?? [];
      // Under the two-person rule the narrowest scope and the shortest duration asked for win.
      const scope = vs.length > 0 && vs.every((v) => v.scope === 'same-request') ? 'same-request' : 'once';
      const given = vs.map((v) => v.forMs).filter((x): x is number => x !== undefined);
      const forMs = given.length > 0 ? Math.min(...given) : this.grantTtlMs;
      patch.scope = scope;
      patch.validUntil = now + forMs;
      patch.uses = 0;
      patch.votes = vs;
      patch.voteCount = vs.length;
    }
    // Audit first: an approval that is not on record must not release the request.
    await this.audit.append(
      {
        type: 'approval',
        session: cur.session,
        identity: cur.identity,
        target: cur.target,
        protocol: cur.protocol,
        data: {
          approval: id,
          state,
          by,
          reason: reason ?? null,
          ...(state === 'approved' ? { usable: { scope: patch.scope, until: new Date(patch.validUntil as number).toISOString() }, voters: (patch.votes ?? []).map((v) => v.by) } : {}),
        },
      },
      { durable: true },
    );
    const updated = await this.store.approvals.update(id, patch, { where: { state: 'pending' } });
    if (!updated) return null;
    const t = this.timers.get(id);
    if (t) clearTimeout(t);
    this.timers.delete(id);
    const w = this.waiters.get(id);
    if (w) w({ state, by, reason });
    this.emit('decided', updated);
    return updated;
  }

  /** Refuse every request held or detached in this process (shutdown). */
  async expireAll(reason: string): Promise<void> {
    const ids = new Set([...this.waiters.keys(), ...this.timers.keys()]);
    for (const id of ids) await this.settle(id, 'expired', 'portcullis', reason).catch(() => undefined);
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}
