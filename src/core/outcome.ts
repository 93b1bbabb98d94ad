// Machine-readable outcomes: every deny and hold a proxy reports carries one JSON object with a
// stable `code`, so an agent can act on a refusal without a human reading logs. The proxies put
// it where their protocol has room: PostgreSQL in the error's DETAIL (MESSAGE stays human), SSH
// as a second stderr line `portcullis-json: {…}`, Kubernetes in `Status.details`.
// Schema: docs/outcome.schema.json.
import type { Decision, Effect } from '../policy/types.js';

export type OutcomeCode =
  | 'policy_denied'
  | 'approval_required'
  | 'approval_denied'
  | 'approval_expired'
  | 'budget_exceeded'
  | 'unparseable'
  | 'identity_rejected'
  | 'reason_required';

export const OUTCOME_CODES: readonly OutcomeCode[] = [
  'policy_denied',
  'approval_required',
  'approval_denied',
  'approval_expired',
  'budget_exceeded',
  'unparseable',
  'identity_rejected',
  'reason_required',
];

export interface Outcome {
  code: OutcomeCode;
  effect: Effect;
  rule: string;
  reason: string;
  remedy?: string;
  approval_id?: string;
  retry_after_s?: number;
}

/**
 * The outcome of a decision that stops a request. `hold` says what happened to a hold: pending
 * (held now, or the agent stopped waiting and may retry), denied or expired (the hold ended
 * without approval). Otherwise the decision's own `code` (unparseable, budget_exceeded,
 * reason_required) or `policy_denied`. `code` overrides everything (e.g. identity_rejected).
 */
export function outcomeOf(
  decision: Pick<Decision, 'effect' | 'rule' | 'reason' | 'remedy'> & Partial<Pick<Decision, 'code' | 'retryAfterS'>>,
  extra: { approvalId?: string; hold?: 'pending' | 'denied' | 'expired'; retryAfterS?: number; code?: OutcomeCode } = {},
): Outcome {
  let code: OutcomeCode;
  if (extra.code) code = extra.code;
  else if (extra.hold === 'denied') code = 'approval_denied';
  else if (extra.hold === 'expired') code = 'approval_expired';
  else if (extra.hold === 'pending' || decision.effect === 'review') code = 'approval_required';
  else if (decision.code) code = decision.code;
  else code = 'policy_denied';
  const o: Outcome = { code, effect: extra.hold === 'denied' || extra.hold === 'expired' ? 'deny' : decision.effect, rule: decision.rule, reason: decision.reason };
  if (decision.remedy) o.remedy = decision.remedy;
  if (extra.approvalId) o.approval_id = extra.approvalId;
  const retry = extra.retryAfterS ?? decision.retryAfterS;
  if (retry !== undefined) o.retry_after_s = retry;
  return o;
}

/** The one-line JSON form (no newlines, stable key order). */
export function outcomeJson(o: Outcome): string {
  return JSON.stringify(o);
}
