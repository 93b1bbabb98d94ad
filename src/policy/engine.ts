// The decision procedure. A request becomes actions (actions.ts); every action is decided by the
// rules that apply to it with precedence deny > review > allow, no allow → default-deny; the
// request's decision is the strongest of its actions' (any deny denies; any review holds).
import { describeAction, requestActions, type Action } from './actions.js';
import type { CompiledPolicy, CompiledRule } from './compile.js';
import type { Decision, Effect, MaskSpec, PolicyRequest } from './types.js';

export const DEFAULT_DENY = 'default-deny';

export interface ActionTrace {
  action: string;
  effect: Effect;
  rule: string;
  tried: { rule: string; effect: string; matched: boolean; failed?: string }[];
}

export interface Evaluation {
  decision: Decision;
  actions: Action[];
  trace?: ActionTrace[];
  /** Set when shadow rules would have decided differently (audited, never enforced). */
  shadow?: ShadowOutcome;
  /**
   * Set when a reason or remedy quotes a statement's own text (`{statement}`): the decision then
   * differs between statements that differ only in their literal values and must not be shared
   * between them (decision-cache.ts).
   */
  textDependent?: boolean;
}

/** Counts the `{statement}` placeholders filled (evaluate() compares it before and after). */
let textFills = 0;

function fill(template: string, a: Action): string {
  if (!template.includes('{')) return template;
  if (a.kind === 'sql' && template.includes('{statement}')) textFills++;
  return template.replace(/\{(\w+)\}/g, (whole, key: string) => {
    const v = placeholder(a, key);
    return v === undefined ? whole : v;
  });
}

function placeholder(a: Action, key: string): string | undefined {
  switch (a.kind) {
    case 'sql': {
      const s = a.sql;
      const map: Record<string, string | undefined> = {
        relation: s.relation, schema: s.schema, function: s.function, setting: s.setting, object: s.object,
        command: s.command, action: s.action.toUpperCase(), statement: a.text.length > 120 ? a.text.slice(0, 117) + '...' : a.text,
        copy: s.copy ? `${s.copy.direction} ${s.copy.target}` : undefined,
      };
      return map[key];
    }
    case 'shell': {
      const map: Record<string, string | undefined> = {
        program: a.cmd.program ?? '<dynamic>', args: a.cmd.args.join(' '), wrappers: a.cmd.wrappers.join(' > '),
        command: [a.cmd.program ?? '<dynamic>', ...a.cmd.args].join(' '), piped_from: a.cmd.pipedFrom ?? undefined,
      };
      return map[key];
    }
    case 'forward':
      return ({ host: a.fwd.host, port: String(a.fwd.port), direction: a.fwd.direction } as Record<string, string>)[key];
    case 'kube': {
      const k = a.kube;
      const map: Record<string, string> = {
        verb: k.verb, resource: k.subresource ? `${k.resource}/${k.subresource}` : k.resource, namespace: k.namespace || '(all)',
        name: k.name, group: k.apiGroup || 'core', path: k.path, scope: k.scope,
      };
      return map[key];
    }
    case 'unparseable':
      return ({ error: a.message, code: a.code } as Record<string, string>)[key];
  }
}

function ruleApplies(rule: CompiledRule, req: PolicyRequest): boolean {
  if (rule.protocols && !rule.protocols.has(req.protocol)) return false;
  for (const c of rule.requestConds) if (!c.test(req)) return false;
  return true;
}

function firstFailure(rule: CompiledRule, req: PolicyRequest, a: Action): string | undefined {
  if (rule.protocols && !rule.protocols.has(req.protocol)) return `protocol: ${req.protocol} not in [${[...rule.protocols].join(', ')}]`;
  for (const c of rule.requestConds) if (!c.test(req)) return `${c.field}: expected ${c.expected}`;
  if (!kindMatches(rule, a)) return `applies to ${rule.actionKind ?? 'any'} facts, not ${a.kind}`;
  for (const c of rule.actionConds) if (!c.test(a)) return `${c.field}: expected ${c.expected}`;
  return undefined;
}

function kindMatches(rule: CompiledRule, a: Action): boolean {
  if (rule.actionKind === null) return !(a.kind === 'unparseable' && rule.effect === 'allow');
  return rule.actionKind === a.kind;
}

function actionMatches(rule: CompiledRule, a: Action): boolean {
  if (!kindMatches(rule, a)) return false;
  for (const c of rule.actionConds) if (!c.test(a)) return false;
  return true;
}

const RANK: Record<Effect, number> = { allow: 0, review: 1, deny: 2 };

/** What shadow rules (`mode: shadow`) would have decided where it differs from the live decision. */
export interface ShadowOutcome {
  effect: Effect;
  rule: string;
  reason: string;
  code?: Decision['code'];
}

/** The remedy of a review refused for want of a stated reason (every protocol's way of giving one). */
export const REASON_REMEDY =
  "state why, then retry: PostgreSQL SET portcullis.reason = '...' (or the startup option portcullis.reason), SSH SendEnv PORTCULLIS_REASON, HTTP header X-Portcullis-Reason";

/** Decide a request against a compiled policy snapshot. Pure; never throws for bad input. */
export function evaluate(policy: CompiledPolicy, req: PolicyRequest, withTrace = false): Evaluation {
  const fills = textFills;
  const actions = requestActions(req);
  const live = run(policy.byProtocol.get(req.protocol) ?? [], policy, req, actions, withTrace);
  const withShadow = policy.shadowByProtocol.get(req.protocol);
  if (withShadow) {
    const all = run(withShadow, policy, req, actions, false);
    if (all.decision.effect !== live.decision.effect) {
      live.shadow = { effect: all.decision.effect, rule: all.decision.rule, reason: all.decision.reason };
      if (all.decision.code) live.shadow.code = all.decision.code;
    }
  }
  if (textFills !== fills) live.textDependent = true;
  return live;
}

function run(candidates: readonly CompiledRule[], policy: CompiledPolicy, req: PolicyRequest, actions: Action[], withTrace: boolean): Evaluation {
  const applicable: CompiledRule[] = [];
  for (const r of candidates) if (ruleApplies(r, req)) applicable.push(r);
  const trace: ActionTrace[] | undefined = withTrace ? [] : undefined;
  if (actions.length === 0) {
    return { actions, trace, decision: { effect: 'deny', rule: DEFAULT_DENY, reason: 'empty request: nothing to decide', masks: [] } };
  }
  let worst: { effect: Effect; rule: CompiledRule | null; action: Action } | null = null;
  const masks = new Map<string, MaskSpec>();
  const addMasks = (r: CompiledRule) => {
    for (let i = 0; i < r.masks.length; i++) {
      const key = r.maskKeys[i];
      if (!masks.has(key)) masks.set(key, r.masks[i]);
    }
  };
  // Review options of every action under review: the strictest wins.
  let approvers = 0;
  let timeoutMs = 0;
  let minReason = 0;
  for (const a of actions) {
    let deny: CompiledRule | null = null;
    let review: CompiledRule | null = null;
    let allow: CompiledRule | null = null;
    for (const r of applicable) {
      if (!actionMatches(r, a)) continue;
      if (r.effect === 'deny') deny ??= r;
      else if (r.effect === 'review') review ??= r;
      else if (r.effect === 'allow') {
        allow ??= r;
        addMasks(r);
      } else addMasks(r);
    }
    const chosen = deny ?? review ?? allow;
    const effect: Effect = chosen ? (chosen.effect as Effect) : 'deny';
    if (chosen && effect === 'review') {
      approvers = Math.max(approvers, chosen.approvers ?? 1);
      timeoutMs = Math.max(timeoutMs, chosen.approvalTimeoutMs ?? 0);
      minReason = Math.max(minReason, chosen.requireReason ?? 0);
    }
    if (trace) {
      trace.push({
        action: describeAction(a),
        effect,
        rule: chosen?.ref ?? DEFAULT_DENY,
        tried: policy.rules.map((r) => {
          const failed = firstFailure(r, req, a);
          const ref = r.shadow ? `${r.ref} (shadow)` : r.ref;
          return failed === undefined ? { rule: ref, effect: r.effect, matched: true } : { rule: ref, effect: r.effect, matched: false, failed };
        }),
      });
    }
    if (!worst || RANK[effect] > RANK[worst.effect]) worst = { effect, rule: chosen, action: a };
  }
  const w = worst as { effect: Effect; rule: CompiledRule | null; action: Action };
  let decision: Decision;
  if (!w.rule) {
    const a = w.action;
    decision = {
      effect: 'deny',
      rule: DEFAULT_DENY,
      reason: a.kind === 'unparseable' ? `cannot decide: ${a.message}` : `no rule allows ${describeAction(a)}`,
      masks: [],
    };
    if (a.kind === 'unparseable') decision.code = 'unparseable';
  } else {
    decision = {
      effect: w.effect,
      rule: w.rule.ref,
      reason: w.rule.reason ? fill(w.rule.reason, w.action) : `${describeAction(w.action)} (${w.rule.ref})`,
      masks: w.effect === 'deny' ? [] : [...masks.values()],
    };
    if (w.rule.remedy) decision.remedy = fill(w.rule.remedy, w.action);
    if (w.effect === 'deny' && w.action.kind === 'unparseable') decision.code = 'unparseable';
    if (w.effect === 'review') {
      const stated = (req.reason ?? '').trim();
      if (minReason > 0 && stated.length < minReason) {
        // A hold without the reason the policy asks for is refused before anyone is paged.
        decision = {
          effect: 'deny',
          rule: w.rule.ref,
          code: 'reason_required',
          reason: `${decision.reason}: a stated reason is required to ask for approval${minReason > 1 ? ` (at least ${minReason} characters${stated ? `, got ${stated.length}` : ''})` : ''}`,
          remedy: REASON_REMEDY,
          masks: [],
        };
      } else if (approvers > 1 || timeoutMs > 0) {
        decision.approval = {};
        if (approvers > 1) decision.approval.approvers = approvers;
        if (timeoutMs > 0) decision.approval.timeoutMs = timeoutMs;
      }
    }
  }
  return { decision, actions, trace };
}

export function decide(policy: CompiledPolicy, req: PolicyRequest): Decision {
  return evaluate(policy, req).decision;
}

/** Human-readable trace for `policy explain`. */
export function explain(policy: CompiledPolicy, req: PolicyRequest): string {
  const ev = evaluate(policy, req, true);
  const lines: string[] = [];
  lines.push(`request: ${req.protocol} ${req.identity.subject} [${req.identity.groups.join(', ')}] → ${req.target}`);
  lines.push(`actions: ${ev.actions.length}`);
  (ev.trace ?? []).forEach((t, i) => {
    lines.push('');
    lines.push(`action ${i + 1}: ${t.action}`);
    lines.push(`  → ${t.effect} by ${t.rule}`);
    for (const x of t.tried) {
      lines.push(`    ${x.matched ? 'match' : '  -  '} ${x.effect.padEnd(6)} ${x.rule}${x.failed ? `  (${x.failed})` : ''}`);
    }
  });
  lines.push('');
  const d = ev.decision;
  lines.push(`decision: ${d.effect} by ${d.rule}: ${d.reason}${d.remedy ? ` (remedy: ${d.remedy})` : ''}${d.code ? ` [${d.code}]` : ''}`);
  if (d.approval?.approvers) lines.push(`approval: ${d.approval.approvers} distinct approvers needed`);
  if (ev.shadow) lines.push(`shadow: would ${ev.shadow.effect} by ${ev.shadow.rule}: ${ev.shadow.reason} (mode: shadow, not enforced)`);
  if (d.masks.length) lines.push(`masks: ${d.masks.map((m) => `${m.column ?? m.detector ?? `${m.resource}.${m.field}`}→${m.strategy}`).join(', ')}`);
  lines.push(`precedence: deny > review > allow; no allowing rule → ${DEFAULT_DENY}`);
  return lines.join('\n');
}
