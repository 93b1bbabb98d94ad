// One command line through the core before anything reaches the target: decide (write-ahead
// audited), a marker in the recording, and for `review` a hold until an operator decides. What the
// agent is told comes back as notice lines (stderr for exec, inline in a terminal):
//   portcullis: blocked by <file:id>: <reason> (<remedy>)
//   portcullis-json: {"code":"policy_denied",…}            (src/core/outcome.ts)
import type { Core, SessionRecording } from '../../core/core.js';
import { outcomeJson, outcomeOf } from '../../core/outcome.js';
import type { Masker } from '../../masking/index.js';
import { evaluate } from '../../policy/engine.js';
import type { Decision, Effect, Identity, PolicyRequest } from '../../policy/types.js';

export interface GateContext {
  core: Core;
  session: string;
  identity: Identity;
  target: string;
  /** The agent's stated reason (PORTCULLIS_REASON). */
  reason?: string;
  masker: Masker;
  recording: SessionRecording | null;
  /** Aborts a hold (the client went away). */
  signal: AbortSignal;
}

export type GateResult = { run: true; decision: Decision } | { run: false; decision: Decision; notice: string[] };

const RANK: Record<Effect, number> = { allow: 0, review: 1, deny: 2 };

function request(ctx: GateContext, command: string): PolicyRequest {
  const r: PolicyRequest = { protocol: 'ssh', identity: ctx.identity, target: ctx.target, command };
  if (ctx.reason !== undefined) r.reason = ctx.reason;
  return r;
}

/**
 * Of several readings of one terminal line, the one to decide: the strictest under the current
 * policy among those that parse (a reading that does not parse cannot be what the shell runs),
 * the primary one when it is not stricter. The decision itself is then made by core.decide.
 */
export function strictestReading(ctx: Pick<GateContext, 'core' | 'identity' | 'target' | 'reason'>, primary: string, others: readonly string[]): string {
  if (others.length === 0) return primary;
  let best = primary;
  let bestRank = RANK[evaluate(ctx.core.policy, request(ctx as GateContext, primary)).decision.effect];
  for (const o of others) {
    const ev = evaluate(ctx.core.policy, request(ctx as GateContext, o));
    if (ev.actions.some((a) => a.kind === 'unparseable')) continue;
    const r = RANK[ev.decision.effect];
    if (r > bestRank) {
      best = o;
      bestRank = r;
    }
  }
  return best;
}

/** Would the current policy allow `command`? A pure check (no audit event, nothing held). */
export function wouldAllow(ctx: Pick<GateContext, 'core' | 'identity' | 'target' | 'reason'>, command: string): boolean {
  return evaluate(ctx.core.policy, request(ctx as GateContext, command)).decision.effect === 'allow';
}

export function blockedLines(ctx: Pick<GateContext, 'masker'>, d: Decision, extra: Parameters<typeof outcomeOf>[1] = {}): string[] {
  const m = (s: string) => ctx.masker.maskText(s);
  const o = outcomeOf(d, extra);
  const masked = { ...o, reason: m(o.reason), ...(o.remedy ? { remedy: m(o.remedy) } : {}) };
  let head: string;
  if (extra.hold === 'denied' || extra.hold === 'expired') {
    head = `portcullis: ${extra.hold === 'denied' ? 'approval denied' : 'approval expired'} for ${d.rule}: ${m(d.reason)}`;
  } else head = `portcullis: blocked by ${d.rule}: ${m(d.reason)}${d.remedy ? ` (${m(d.remedy)})` : ''}`;
  return [head, `portcullis-json: ${outcomeJson(masked)}`];
}

/**
 * Decide `command`; on review hold it (`onHeld` gets the notice lines to show while waiting).
 * Never throws for a policy outcome; a failure of the hold machinery refuses (fail closed).
 */
export async function gate(ctx: GateContext, command: string, onHeld: (lines: string[]) => void): Promise<GateResult> {
  const req = request(ctx, command);
  const { decision } = await ctx.core.decide(ctx.session, req);
  ctx.recording?.marker(`${decision.effect} ${decision.rule}: ${ctx.masker.maskText(command)}`);
  if (decision.effect === 'allow') return { run: true, decision };
  if (decision.effect === 'deny') return { run: false, decision, notice: blockedLines(ctx, decision) };
  try {
    const out = await ctx.core.hold(
      ctx.session,
      req,
      decision,
      (id, expiresAt) => {
        const o = outcomeOf(decision, { approvalId: id, hold: 'pending' });
        const masked = { ...o, reason: ctx.masker.maskText(o.reason), ...(o.remedy ? { remedy: ctx.masker.maskText(o.remedy) } : {}) };
        const secs = Math.max(0, Math.round((expiresAt - Date.now()) / 1000));
        onHeld([
          `portcullis: held for approval ${id} (${decision.rule}): ${ctx.masker.maskText(decision.reason)} — waiting up to ${secs}s for an operator (portcullis approve ${id})`,
          `portcullis-json: ${outcomeJson(masked)}`,
        ]);
      },
      ctx.signal,
    );
    ctx.recording?.marker(`${out.state} ${out.approvalId}${out.by ? ` by ${out.by}` : ''}: ${ctx.masker.maskText(command)}`);
    if (out.state === 'approved') return { run: true, decision };
    if (out.withdrawn) {
      // The agent stopped waiting (Ctrl-C, disconnect): the approval stays pending, bound to this
      // exact command; once approved, running the same command again passes once.
      const o = outcomeOf(decision, { approvalId: out.approvalId, hold: 'pending', retryAfterS: 30 });
      const masked = { ...o, reason: ctx.masker.maskText(o.reason), ...(o.remedy ? { remedy: ctx.masker.maskText(o.remedy) } : {}) };
      return { run: false, decision, notice: [`portcullis: hold abandoned: approval ${out.approvalId} (${decision.rule}) stays pending; run the same command again once it is approved`, `portcullis-json: ${outcomeJson(masked)}`] };
    }
    const d: Decision = { ...decision, reason: out.reason ? `${decision.reason}; ${out.reason}` : decision.reason };
    return { run: false, decision, notice: blockedLines(ctx, d, { approvalId: out.approvalId, hold: out.state }) };
  } catch (e) {
    const d: Decision = { effect: 'deny', rule: decision.rule, reason: `the request could not be held for approval (${(e as Error).message}); refusing (fail closed)`, masks: [] };
    return { run: false, decision: d, notice: blockedLines(ctx, d) };
  }
}
