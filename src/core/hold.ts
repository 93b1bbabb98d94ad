// Holding a request under review (Core.hold), the same for every proxy:
//   1. an approved grant for exactly this request (same identity, target and request: binding.ts)
//      under the same rule that is still usable passes at once — no new hold (an agent that timed out and retries
//      succeeds once the approval came in);
//   2. else a pending approval of the same request whose requester went away is picked up;
//   3. else a new approval is created (two-person rule and timeout from the review rule, the
//      agent's stated reason, the session's recording offset).
// Then the hold waits. An approval that arrives while the requester waits is used by it (scope
// once: used up); one that arrives after it stopped waiting stays usable for a retry.
import type { Decision, PolicyRequest } from '../policy/types.js';
import type { AuditLog } from './audit.js';
import type { ApprovalOutcome, Approvals } from './approvals.js';
import { requestBinding } from './binding.js';
import { summarizeRequest } from './summary.js';

/**
 * How a hold ended. `pending` only with `waitMs`: the bounded wait ran out (or the requester left)
 * while the approval stays pending — the proxy tells the agent to retry (the same request then
 * attaches to it, or passes once it is approved).
 */
export type HoldOutcome = Omit<ApprovalOutcome, 'state'> & { state: ApprovalOutcome['state'] | 'pending'; approvalId: string; expiresAt?: number };

export interface HoldOptions {
  /** Wait at most this long (ms) for the decision, e.g. shorter than an HTTP client's timeout. */
  waitMs?: number;
}

export interface HoldContext {
  approvals: Approvals;
  audit: AuditLog;
  /** Seconds into the session's recording, when it is recorded. */
  recordingOffset(session: string | null): number | undefined;
}

export async function holdRequest(
  ctx: HoldContext,
  session: string | null,
  request: PolicyRequest,
  decision: Decision,
  onHeld: (approvalId: string, expiresAt: number) => void,
  signal?: AbortSignal,
  opts: HoldOptions = {},
): Promise<HoldOutcome> {
  const binding = requestBinding(request);
  const required = decision.approval?.approvers ?? 1;
  const grant = await ctx.approvals.useGrant(binding, decision.rule, required);
  if (grant) {
    await ctx.audit.append(
      {
        type: 'approval.used',
        session: session ?? undefined,
        identity: request.identity,
        target: request.target,
        protocol: request.protocol,
        data: { approval: grant.id, scope: grant.scope ?? 'once', uses: grant.uses ?? 1, validUntil: grant.validUntil ? new Date(grant.validUntil).toISOString() : null, rule: decision.rule },
      },
      { durable: true },
    );
    return { state: 'approved', by: grant.decidedBy, reason: grant.decisionReason, reused: true, approvalId: grant.id };
  }
  const offset = ctx.recordingOffset(session);
  const rec =
    (await ctx.approvals.detached(binding, decision.rule, required)) ??
    (await ctx.approvals.create({
      session: session ?? undefined,
      protocol: request.protocol,
      target: request.target,
      identity: request.identity,
      request: summarizeRequest(request) as unknown as Record<string, unknown>,
      rule: decision.rule,
      reason: decision.reason,
      justification: request.reason,
      binding,
      required,
      ...(decision.approval?.timeoutMs ? { timeoutMs: decision.approval.timeoutMs } : {}),
      ...(offset !== undefined ? { recordingOffset: offset } : {}),
    }));
  let waitSignal = signal;
  if (opts.waitMs !== undefined) {
    const timeout = AbortSignal.timeout(opts.waitMs);
    waitSignal = signal ? AbortSignal.any([signal, timeout]) : timeout;
  }
  const pending = ctx.approvals.wait(rec.id, rec.expiresAt, waitSignal);
  onHeld(rec.id, rec.expiresAt);
  const outcome = await pending;
  if (outcome.withdrawn && opts.waitMs !== undefined) return { state: 'pending', approvalId: rec.id, expiresAt: rec.expiresAt };
  if (outcome.state === 'approved') {
    // The held request runs now: that is the approval's use (scope once: its only one).
    const cur = await ctx.approvals.get(rec.id);
    if (cur && !(await ctx.approvals.markUsed(cur))) {
      return { state: 'expired', reason: `approval ${rec.id} was already used by a retry of the same request`, approvalId: rec.id };
    }
  }
  return { ...outcome, approvalId: rec.id };
}
