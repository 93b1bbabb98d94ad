// Damage budgets at run time: counters per budget, identity (or group), target and window, kept in
// the store (they survive a restart) with an in-memory copy the hot path reads.
//
// Semantics (docs/agent-outcomes.md):
// - `check` runs in Core.decide before a request is forwarded: a request a limit concerns
//   (policy/budgets.ts limitConcerns) is refused — with the budget's effect (deny or review) and
//   code `budget_exceeded` — when the counter has already reached the limit. Counters grow when
//   the target reports what a statement did (PostgreSQL: CommandComplete row counts, bytes of
//   the rows sent), so the statement that crosses the limit runs (its row count is not known
//   before it runs) and every later one the limit concerns is refused: with one row per
//   statement, a budget of 10 deleted rows lets 10 statements through and stops the 11th.
// - statements_per_minute counts requests that were let through (not exempt) in the current
//   clock minute, in memory only.
// - session_minutes: per session, the minutes since the session opened; per day, the minutes of
//   the identity's sessions closed today plus the current session's.
// - Transaction control and session settings are never counted or refused.
import type { Action } from '../policy/actions.js';
import { budgetApplies, exemptFromBudgets, limitConcerns, type BudgetCounterName, type BudgetCounters, type BudgetLimit, type CompiledBudget } from '../policy/budgets.js';
import type { CompiledPolicy } from '../policy/compile.js';
import type { Decision, PolicyRequest } from '../policy/types.js';
import type { BudgetRecord, Store } from '../store/types.js';
import type { SessionInfo } from './events.js';
import type { Logger } from './log.js';

const DAY = 86_400_000;
const MINUTE = 60_000;

export interface BudgetUsage {
  budget: string;
  /** Subject, or `*` for a budget shared by its group. */
  who: string;
  target: string;
  window: string;
  per: 'day' | 'session';
  limits: Partial<Record<BudgetLimit, number>>;
  used: Partial<Record<BudgetLimit, number>>;
  effect: 'deny' | 'review';
  shadow: boolean;
  /** Unix ms when a daily window resets; null for a session window. */
  resetsAt: number | null;
}

export interface BudgetShadow {
  effect: 'deny' | 'review';
  rule: string;
  reason: string;
  code: 'budget_exceeded';
}

export interface BudgetCheck {
  /** An enforced budget is exhausted: the decision to apply. */
  live?: Decision;
  /** A shadow budget would have refused the request. */
  shadow?: BudgetShadow;
}

interface Counter {
  rec: BudgetRecord;
  stored: boolean;
  loaded: Promise<void>;
  chain: Promise<void>;
  /** The stored counter could not be read: checks refuse (fail closed) until a read succeeds. */
  failed?: string;
}

interface MinuteCount {
  budget: string;
  who: string;
  target: string;
  window: string;
  minute: number;
  n: number;
}

function dayStart(now: number): number {
  return Math.floor(now / DAY) * DAY;
}

function dayWindow(now: number): string {
  return `day:${new Date(now).toISOString().slice(0, 10)}`;
}

const round = (x: number): number => Math.round(x * 100) / 100;

export class Budgets {
  private readonly counters = new Map<string, Counter>();
  private readonly minutes = new Map<string, MinuteCount>();
  private readonly enabled = new Map<string, { version: string; on: boolean }>();
  private pruneTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: Store,
    private readonly policy: () => CompiledPolicy,
    private readonly session: (id: string) => SessionInfo | undefined,
    private readonly log: Logger,
  ) {}

  /** Load today's counters; drop those of sessions (gone with the previous process) and of past days. */
  async open(now = Date.now()): Promise<void> {
    for (const r of await this.store.budgets.find()) {
      if (r.window.startsWith('session:') || r.expiresAt <= now) {
        await this.store.budgets.remove(r.id);
        continue;
      }
      this.counters.set(r.id, { rec: r, stored: true, loaded: Promise.resolve(), chain: Promise.resolve() });
    }
    this.pruneTimer = setInterval(() => void this.prune().catch((e: unknown) => this.log.warn('budgets: pruning failed', { error: String(e) })), 3_600_000);
    this.pruneTimer.unref();
  }

  private async prune(now = Date.now()): Promise<void> {
    for (const [k, c] of this.counters) {
      if (c.rec.expiresAt > now) continue;
      this.counters.delete(k);
      await c.chain;
      await this.store.budgets.remove(k);
    }
  }

  async close(): Promise<void> {
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    this.pruneTimer = null;
    await Promise.all([...this.counters.values()].map((c) => c.chain));
  }

  private who(b: CompiledBudget, req: { identity: { subject: string } }): string {
    return b.by === 'group' ? '*' : req.identity.subject;
  }

  private windowOf(b: CompiledBudget, session: string | null, now: number): string | null {
    if (b.per === 'day') return dayWindow(now);
    return session ? `session:${session}` : null;
  }

  private counter(b: CompiledBudget, who: string, target: string, window: string, now: number): Counter {
    const id = `${b.ref}|${who}|${target}|${window}`;
    const c = this.counters.get(id);
    if (c) return c;
    const rec: BudgetRecord = { id, budget: b.ref, who, target, window, counters: {}, updatedAt: now, expiresAt: window.startsWith('day:') ? dayStart(now) + 2 * DAY : now + 2 * DAY };
    const fresh: Counter = { rec, stored: false, loaded: Promise.resolve(), chain: Promise.resolve() };
    fresh.loaded = this.store.budgets.get(id).then(
      (r) => {
        if (r) {
          fresh.rec = r;
          fresh.stored = true;
        }
      },
      (e: unknown) => {
        fresh.failed = String((e as Error)?.message ?? e);
        if (this.counters.get(id) === fresh) this.counters.delete(id); // the next check reads again
        this.log.error('budgets: cannot read a counter; refusing what it limits', { id, error: fresh.failed });
      },
    );
    this.counters.set(id, fresh);
    return fresh;
  }

  private persist(c: Counter): Promise<void> {
    c.chain = c.chain
      .then(async () => {
        const rec = { ...c.rec, counters: { ...c.rec.counters } };
        if (!c.stored) {
          await this.store.budgets.insert(rec);
          c.stored = true;
        } else await this.store.budgets.update(rec.id, { counters: rec.counters, updatedAt: rec.updatedAt, expiresAt: rec.expiresAt });
      })
      .catch((e: unknown) => this.log.error('budgets: cannot store a counter', { id: c.rec.id, error: String(e) }));
    return c.chain;
  }

  private applicable(req: Pick<PolicyRequest, 'protocol' | 'identity' | 'target' | 'time'>): CompiledBudget[] {
    const all = this.policy().budgets;
    if (all.length === 0) return [];
    return all.filter((b) => budgetApplies(b, req as PolicyRequest));
  }

  /** Whether any budget applies to this live session (cheap; cached per policy version). */
  enabledFor(session: string): boolean {
    const policy = this.policy();
    if (policy.budgets.length === 0) return false;
    const hit = this.enabled.get(session);
    if (hit && hit.version === policy.version) return hit.on;
    const info = this.session(session);
    const on = info ? this.applicable({ protocol: info.protocol, identity: info.identity, target: info.target }).length > 0 : false;
    this.enabled.set(session, { version: policy.version, on });
    return on;
  }

  private minuteKey(b: CompiledBudget, who: string, target: string, window: string): string {
    return `${b.ref}|${who}|${target}|${window}`;
  }

  /** Whether an exhausted budget refuses this request (before it is forwarded). */
  async check(session: string | null, req: PolicyRequest, actions: readonly Action[], now = Date.now()): Promise<BudgetCheck> {
    const budgets = this.applicable(req);
    if (budgets.length === 0 || exemptFromBudgets(actions)) return {};
    const out: BudgetCheck = {};
    for (const b of budgets) {
      if (b.shadow ? out.shadow : out.live?.effect === 'deny') continue;
      const window = this.windowOf(b, session, now);
      if (window === null) continue;
      const who = this.who(b, req);
      for (const [limit, max] of Object.entries(b.limits) as [BudgetLimit, number][]) {
        if (!limitConcerns(limit, actions)) continue;
        let used: number;
        try {
          used = await this.used(b, limit, who, req.target, window, session, now);
        } catch (e) {
          // Fail closed: a budget whose counter cannot be read refuses what it limits.
          if (!b.shadow) out.live = { effect: 'deny', rule: b.ref, code: 'budget_exceeded', reason: `budget ${b.id}: its counter cannot be read (${String((e as Error).message)}); refusing (fail closed)`, masks: [] };
          break;
        }
        if (used < max) continue;
        const d = this.exceeded(b, limit, used, max, who, req.target, now);
        if (b.shadow) out.shadow = { effect: b.effect, rule: b.ref, reason: d.reason, code: 'budget_exceeded' };
        else if (!out.live || (out.live.effect === 'review' && d.effect === 'deny')) out.live = d;
        break;
      }
    }
    return out;
  }

  private async used(b: CompiledBudget, limit: BudgetLimit, who: string, target: string, window: string, session: string | null, now: number): Promise<number> {
    if (limit === 'statements_per_minute') {
      const m = this.minutes.get(this.minuteKey(b, who, target, window));
      return m && m.minute === Math.floor(now / MINUTE) ? m.n : 0;
    }
    const info = session ? this.session(session) : undefined;
    if (limit === 'session_minutes' && b.per === 'session') return info ? (now - info.openedAt) / MINUTE : 0;
    const c = this.counter(b, who, target, window, now);
    await c.loaded;
    if (c.failed) throw new Error(c.failed);
    const stored = c.rec.counters[limit] ?? 0;
    if (limit === 'session_minutes') return stored + (info ? (now - Math.max(info.openedAt, dayStart(now))) / MINUTE : 0);
    return stored;
  }

  private exceeded(b: CompiledBudget, limit: BudgetLimit, used: number, max: number, who: string, target: string, now: number): Decision {
    const per = limit === 'statements_per_minute' ? 'minute' : b.per === 'day' ? 'day (UTC)' : 'session';
    const reason = b.reason ?? `budget ${b.id} exhausted: ${limit} ${round(used)} of ${max} per ${per} for ${who === '*' ? 'the group' : who} on ${target}`;
    let retryAfterS: number | undefined;
    let remedy: string;
    if (limit === 'statements_per_minute') {
      retryAfterS = Math.max(1, Math.ceil(((Math.floor(now / MINUTE) + 1) * MINUTE - now) / 1000));
      remedy = 'slow down: the count starts again every minute';
    } else if (b.per === 'day') {
      retryAfterS = Math.max(1, Math.ceil((dayStart(now) + DAY - now) / 1000));
      remedy = `wait for the daily reset at ${new Date(dayStart(now) + DAY).toISOString()}, or ask an operator to raise the budget`;
    } else remedy = 'the budget is per session: ask an operator to raise it';
    const d: Decision = { effect: b.effect, rule: b.ref, reason, remedy: b.remedy ?? remedy, masks: [], code: 'budget_exceeded' };
    if (retryAfterS !== undefined) d.retryAfterS = retryAfterS;
    return d;
  }

  /** Count a request that is let through, for statements_per_minute. */
  countStatement(session: string | null, req: PolicyRequest, actions: readonly Action[], now = Date.now()): void {
    const budgets = this.applicable(req);
    if (budgets.length === 0 || exemptFromBudgets(actions)) return;
    const minute = Math.floor(now / MINUTE);
    for (const b of budgets) {
      if (b.limits.statements_per_minute === undefined) continue;
      const window = this.windowOf(b, session, now);
      if (window === null) continue;
      const who = this.who(b, req);
      const key = this.minuteKey(b, who, req.target, window);
      const m = this.minutes.get(key);
      if (m && m.minute === minute) m.n++;
      else this.minutes.set(key, { budget: b.ref, who, target: req.target, window, minute, n: 1 });
    }
  }

  /**
   * What a session's request did, as the proxy learns it (rows from CommandComplete, bytes of the
   * rows sent): added to every budget of the session's identity and target that limits it.
   */
  async consume(session: string, amounts: BudgetCounters, now = Date.now()): Promise<void> {
    const info = this.session(session);
    if (!info) return;
    const budgets = this.applicable({ protocol: info.protocol, identity: info.identity, target: info.target });
    const writes: Promise<void>[] = [];
    for (const b of budgets) {
      const names = (Object.keys(amounts) as BudgetCounterName[]).filter((k) => (amounts[k] ?? 0) > 0 && b.limits[k] !== undefined);
      if (names.length === 0) continue;
      const window = this.windowOf(b, session, now);
      if (window === null) continue;
      const c = this.counter(b, this.who(b, info), info.target, window, now);
      writes.push(
        c.loaded.then(() => {
          if (c.failed) return;
          for (const k of names) c.rec.counters[k] = (c.rec.counters[k] ?? 0) + (amounts[k] ?? 0);
          c.rec.updatedAt = now;
          return this.persist(c);
        }),
      );
    }
    await Promise.all(writes);
  }

  /** A session ended: its minutes count against daily session_minutes; its session counters go. */
  async sessionClosed(info: SessionInfo, closedAt = Date.now()): Promise<void> {
    this.enabled.delete(info.id);
    const win = `session:${info.id}`;
    for (const [k, m] of this.minutes) if (m.window === win) this.minutes.delete(k);
    for (const [k, c] of this.counters) {
      if (c.rec.window !== win) continue;
      this.counters.delete(k);
      await c.chain;
      if (c.stored) await this.store.budgets.remove(k).catch(() => false);
    }
    const minutes = (closedAt - Math.max(info.openedAt, dayStart(closedAt))) / MINUTE;
    if (minutes <= 0) return;
    const budgets = this.applicable({ protocol: info.protocol, identity: info.identity, target: info.target });
    const writes: Promise<void>[] = [];
    for (const b of budgets) {
      if (b.per !== 'day' || b.limits.session_minutes === undefined) continue;
      const c = this.counter(b, this.who(b, info), info.target, dayWindow(closedAt), closedAt);
      writes.push(
        c.loaded.then(() => {
          c.rec.counters.session_minutes = (c.rec.counters.session_minutes ?? 0) + minutes;
          c.rec.updatedAt = closedAt;
          return this.persist(c);
        }),
      );
    }
    await Promise.all(writes);
  }

  /** Every counter with its budget's limits (the console's view; /metrics reads it too). */
  snapshot(now = Date.now()): BudgetUsage[] {
    const byRef = new Map(this.policy().budgets.map((b) => [b.ref, b]));
    const rows = new Map<string, BudgetUsage>();
    const row = (id: string, budget: string, who: string, target: string, window: string): BudgetUsage | null => {
      const b = byRef.get(budget);
      if (!b) return null;
      let r = rows.get(id);
      if (!r) {
        r = { budget, who, target, window, per: b.per, limits: { ...b.limits }, used: {}, effect: b.effect, shadow: b.shadow, resetsAt: window.startsWith('day:') ? Date.parse(window.slice(4)) + DAY : null };
        rows.set(id, r);
      }
      return r;
    };
    for (const [id, c] of this.counters) {
      if (c.rec.expiresAt <= now) continue;
      const r = row(id, c.rec.budget, c.rec.who, c.rec.target, c.rec.window);
      if (!r) continue;
      for (const [k, v] of Object.entries(c.rec.counters)) if ((r.limits as Record<string, number>)[k] !== undefined) (r.used as Record<string, number>)[k] = round(v);
    }
    const minute = Math.floor(now / MINUTE);
    for (const [id, m] of this.minutes) {
      const r = row(id, m.budget, m.who, m.target, m.window);
      if (r) r.used.statements_per_minute = m.minute === minute ? m.n : 0;
    }
    return [...rows.values()].sort((a, b) => a.budget.localeCompare(b.budget) || a.who.localeCompare(b.who) || a.target.localeCompare(b.target) || a.window.localeCompare(b.window));
  }
}
