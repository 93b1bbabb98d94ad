// Damage budgets as the policy declares them (`budgets:` in a policy file) and which requests
// each limit concerns. The counting itself is the core's (src/core/budgets.ts); this module is
// pure so that `policy simulate`, the engine and the core agree on what a budget covers.
//
//   budgets:
//     - id: agent-deletes
//       when: { groups: [agents], targets: [shop] }   # and the file's scope
//       per: day            # day (UTC) | session
//       by: identity        # identity: one counter per subject | group: one shared counter
//       limits: { rows_deleted: 10, statements_per_minute: 120 }
//       effect: deny        # deny | review, with code budget_exceeded
import type { Action } from './actions.js';
import type { Condition } from './compile.js';
import type { PolicyRequest, Protocol } from './types.js';

export type BudgetLimit = 'rows_deleted' | 'rows_written' | 'statements_per_minute' | 'bytes_returned' | 'session_minutes';
/** The limits whose counters are kept in the store (statements_per_minute lives in memory). */
export type BudgetCounterName = 'rows_deleted' | 'rows_written' | 'bytes_returned' | 'session_minutes';
export type BudgetCounters = Partial<Record<BudgetCounterName, number>>;

export interface CompiledBudget {
  /** `file:id`, as rules are named. */
  ref: string;
  id: string;
  file: string;
  line: number;
  per: 'day' | 'session';
  by: 'identity' | 'group';
  limits: Partial<Record<BudgetLimit, number>>;
  effect: 'deny' | 'review';
  /** Evaluated and audited as "would exceed", never enforced. */
  shadow: boolean;
  reason?: string;
  remedy?: string;
  protocols: ReadonlySet<Protocol> | null;
  requestConds: Condition<PolicyRequest>[];
}

export interface RawBudget {
  id: string;
  description?: string;
  per?: 'day' | 'session';
  by?: 'identity' | 'group';
  limits: Partial<Record<BudgetLimit, number>>;
  effect?: 'deny' | 'review';
  mode?: 'enforce' | 'shadow';
  reason?: string;
  remedy?: string;
}

export function compileBudget(
  raw: RawBudget,
  ctx: { ref: string; file: string; line: number; protocols: ReadonlySet<Protocol> | null; conds: Condition<PolicyRequest>[]; fileShadow: boolean },
): CompiledBudget {
  const b: CompiledBudget = {
    ref: ctx.ref,
    id: raw.id,
    file: ctx.file,
    line: ctx.line,
    per: raw.per ?? 'day',
    by: raw.by ?? 'identity',
    limits: { ...raw.limits },
    effect: raw.effect ?? 'deny',
    shadow: ctx.fileShadow || raw.mode === 'shadow',
    protocols: ctx.protocols,
    requestConds: ctx.conds,
  };
  if (raw.reason !== undefined) b.reason = raw.reason;
  if (raw.remedy !== undefined) b.remedy = raw.remedy;
  return b;
}

/** Whether a budget applies to an identity on a target (its `when` and the file's scope). */
export function budgetApplies(b: CompiledBudget, req: PolicyRequest): boolean {
  if (b.protocols && !b.protocols.has(req.protocol)) return false;
  for (const c of b.requestConds) if (!c.test(req)) return false;
  return true;
}

/**
 * Statements that never count against a budget and are never refused by one: transaction control
 * and session settings (an agent over budget must still be able to ROLLBACK or COMMIT).
 */
const EXEMPT_SQL = new Set(['transaction', 'set', 'reset', 'show', 'discard', 'deallocate', 'close']);

export function exemptFromBudgets(actions: readonly Action[]): boolean {
  return actions.length > 0 && actions.every((a) => a.kind === 'sql' && EXEMPT_SQL.has(a.sql.action));
}

// EXECUTE of a statement prepared with SQL PREPARE may delete or write anything: it counts (fail closed).
const DELETES_SQL = new Set(['delete', 'truncate', 'merge', 'execute']);
const WRITES_SQL = new Set(['insert', 'update', 'delete', 'merge', 'truncate', 'execute']);
const DELETES_KUBE = new Set(['delete', 'deletecollection']);
const WRITES_KUBE = new Set(['create', 'update', 'patch', 'delete', 'deletecollection']);

/**
 * Whether an exhausted limit refuses this request: rows_deleted stops requests that can delete,
 * rows_written requests that can write; the other limits stop every request that is not exempt.
 */
export function limitConcerns(limit: BudgetLimit, actions: readonly Action[]): boolean {
  switch (limit) {
    case 'rows_deleted':
      return actions.some((a) => (a.kind === 'sql' && DELETES_SQL.has(a.sql.action)) || (a.kind === 'kube' && DELETES_KUBE.has(a.kube.verb)));
    case 'rows_written':
      return actions.some(
        (a) => (a.kind === 'sql' && (WRITES_SQL.has(a.sql.action) || (a.sql.action === 'copy' && a.sql.copy?.direction === 'from'))) || (a.kind === 'kube' && WRITES_KUBE.has(a.kube.verb)),
      );
    default:
      return !exemptFromBudgets(actions);
  }
}
