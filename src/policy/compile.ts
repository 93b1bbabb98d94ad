// Policy files → an immutable compiled snapshot. Every rule becomes a list of conditions; each
// condition can test a request or an action and describe itself for `policy explain`.
import { createHash } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ConfigError, YamlSource, validateAgainst, type PathSeg, type SourceProblem } from '../config/source.js';
import type { Action, ActionKind } from './actions.js';
import { compileBudget, type CompiledBudget, type RawBudget } from './budgets.js';
import { asList, globs } from './glob.js';
import { policyFileSchema } from './schema.js';
import type { Effect, MaskSpec, PolicyRequest, Protocol } from './types.js';

export interface Condition<T> {
  /** e.g. `sql.action`, `when.groups`. */
  field: string;
  /** The expected value, as written, for explanations. */
  expected: string;
  test(x: T): boolean;
}

export interface CompiledRule {
  /** `file:id` as shown in decisions (file relative to the policy base). */
  ref: string;
  id: string;
  file: string;
  line: number;
  effect: Effect | 'mask';
  reason?: string;
  remedy?: string;
  protocols: ReadonlySet<Protocol> | null;
  requestConds: Condition<PolicyRequest>[];
  /** The kind of action the rule's facts block applies to; null = any action of its protocols. */
  actionKind: ActionKind | null;
  actionConds: Condition<Action>[];
  masks: MaskSpec[];
  /** One key per mask (what it masks), to merge masks of several rules without duplicates. */
  maskKeys: string[];
  /** `mode: shadow` (the rule's or its file's): evaluated and audited, never changes a decision. */
  shadow: boolean;
  /** review rules: minimum length of the agent's stated reason (null: none required). */
  requireReason: number | null;
  /** review rules: distinct approvers needed (default 1). */
  approvers?: number;
  /** review rules: how long a hold waits for its approvers, ms. */
  approvalTimeoutMs?: number;
}

export interface CompiledPolicy {
  readonly rules: readonly CompiledRule[];
  /** The live (not shadow) rules that can apply to each protocol, in order (precomputed: the hot path skips the rest). */
  readonly byProtocol: ReadonlyMap<Protocol, readonly CompiledRule[]>;
  /** Live and shadow rules together, for the protocols that have shadow rules (else absent). */
  readonly shadowByProtocol: ReadonlyMap<Protocol, readonly CompiledRule[]>;
  /** Damage budgets of every file, in order. */
  readonly budgets: readonly CompiledBudget[];
  readonly files: readonly string[];
  /** SHA-256 over the files' contents: the policy version recorded in audit events. */
  readonly version: string;
  readonly loadedAt: number;
}

type When = {
  protocol?: string | string[];
  targets?: string | string[];
  subjects?: string | string[];
  groups?: string | string[];
  issuers?: string | string[];
  auth_methods?: string | string[];
  time?: { days?: string[]; hours?: string; tz?: string };
};
type RawMask = { column?: string; detector?: string; resource?: string; field?: string; strategy: MaskSpec['strategy']; keep_first?: number; keep_last?: number; value?: string };
type RawRule = {
  id: string;
  effect: Effect | 'mask';
  description?: string;
  reason?: string;
  remedy?: string;
  when?: When;
  sql?: Record<string, unknown>;
  shell?: Record<string, unknown>;
  kube?: Record<string, unknown>;
  forward?: Record<string, unknown>;
  unparseable?: true;
  masks?: RawMask[];
  mode?: 'enforce' | 'shadow';
  require_reason?: boolean | { min_length: number };
  approvers?: number;
  approval_timeout?: string;
};
type RawPolicyFile = { version?: number; description?: string; mode?: 'enforce' | 'shadow'; scope?: When; budgets?: RawBudget[]; rules: RawRule[] };

function durationMs(s: string): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(s);
  if (!m) return NaN;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
}

const str = (v: unknown): string[] => asList(v as string | string[]) ?? [];
const show = (v: unknown): string => (Array.isArray(v) ? `[${v.join(', ')}]` : String(v));

function cond<T>(field: string, expected: unknown, test: (x: T) => boolean): Condition<T> {
  return { field, expected: show(expected), test };
}

const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

function timeCondition(t: NonNullable<When['time']>, field: string, src: YamlSource, path: PathSeg[], problems: SourceProblem[]): Condition<PolicyRequest> {
  const tz = t.tz ?? 'UTC';
  let fmt: Intl.DateTimeFormat;
  try {
    fmt = new Intl.DateTimeFormat('en-US', { timeZone: tz, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  } catch {
    problems.push(src.problem([...path, 'tz'], `unknown time zone "${tz}"`));
    fmt = new Intl.DateTimeFormat('en-US', { timeZone: 'UTC' });
  }
  let from = 0;
  let to = 24 * 60;
  if (t.hours) {
    const [a, b] = t.hours.split('-');
    const mins = (s: string) => Number(s.slice(0, 2)) * 60 + Number(s.slice(3, 5));
    from = mins(a);
    to = mins(b);
    if (to <= from) problems.push(src.problem([...path, 'hours'], `end ${b} must be after start ${a}`));
  }
  const days = t.days ? new Set(t.days) : null;
  return cond<PolicyRequest>(field, `${t.days?.join(',') ?? 'any day'} ${t.hours ?? 'all day'} ${tz}`, (r) => {
    const parts = fmt.formatToParts(new Date(r.time ?? Date.now()));
    const get = (ty: string) => parts.find((p) => p.type === ty)?.value ?? '';
    const day = get('weekday').toLowerCase().slice(0, 3);
    const m = Number(get('hour')) * 60 + Number(get('minute'));
    if (days && !days.has(day) && DAYS.includes(day)) return false;
    return m >= from && m < to;
  });
}

function whenConditions(w: When | undefined, prefix: string, src: YamlSource, path: PathSeg[], problems: SourceProblem[]): { protocols: Set<Protocol> | null; conds: Condition<PolicyRequest>[] } {
  const conds: Condition<PolicyRequest>[] = [];
  let protocols: Set<Protocol> | null = null;
  if (!w) return { protocols, conds };
  if (w.protocol !== undefined) protocols = new Set(str(w.protocol) as Protocol[]);
  if (w.targets !== undefined) {
    const m = globs(str(w.targets));
    conds.push(cond(`${prefix}.targets`, w.targets, (r) => m(r.target)));
  }
  if (w.subjects !== undefined) {
    const m = globs(str(w.subjects));
    conds.push(cond(`${prefix}.subjects`, w.subjects, (r) => m(r.identity.subject)));
  }
  if (w.groups !== undefined) {
    const m = globs(str(w.groups));
    conds.push(cond(`${prefix}.groups`, w.groups, (r) => r.identity.groups.some(m)));
  }
  if (w.issuers !== undefined) {
    const m = globs(str(w.issuers));
    conds.push(cond(`${prefix}.issuers`, w.issuers, (r) => r.identity.issuer !== undefined && m(r.identity.issuer)));
  }
  if (w.auth_methods !== undefined) {
    const m = globs(str(w.auth_methods));
    conds.push(cond(`${prefix}.auth_methods`, w.auth_methods, (r) => r.identity.authMethod !== undefined && m(r.identity.authMethod)));
  }
  if (w.time) conds.push(timeCondition(w.time, `${prefix}.time`, src, [...path, 'time'], problems));
  return { protocols, conds };
}

/** A function pattern without a schema matches the bare name in any schema. */
function functionMatcher(patterns: string[]): (fn: string) => boolean {
  const qualified = globs(patterns.filter((p) => p.includes('.')), true);
  const bare = globs(patterns.filter((p) => !p.includes('.')), true);
  return (fn) => {
    const name = fn.includes('.') ? fn.slice(fn.lastIndexOf('.') + 1) : fn;
    return bare(name) || (fn.includes('.') && qualified(fn));
  };
}

function sqlConditions(s: Record<string, unknown>): Condition<Action>[] {
  const c: Condition<Action>[] = [];
  const on = (field: string, expected: unknown, t: (a: Extract<Action, { kind: 'sql' }>['sql']) => boolean) =>
    c.push(cond<Action>(`sql.${field}`, expected, (a) => a.kind === 'sql' && t(a.sql)));
  for (const [k, v] of Object.entries(s)) {
    switch (k) {
      case 'action': {
        const set = new Set(str(v));
        on(k, v, (a) => set.has(a.action));
        break;
      }
      case 'command': {
        const m = globs(str(v), true);
        on(k, v, (a) => m(a.command));
        break;
      }
      case 'relation': {
        const m = globs(str(v));
        on(k, v, (a) => a.relation !== undefined && m(a.relation));
        break;
      }
      case 'schema': {
        const m = globs(str(v));
        on(k, v, (a) => a.schema !== undefined && m(a.schema));
        break;
      }
      case 'not_schema': {
        const m = globs(str(v));
        on(k, v, (a) => a.schema === undefined || !m(a.schema));
        break;
      }
      case 'has_relation':
        on(k, v, (a) => (a.relation !== undefined) === v);
        break;
      case 'where':
        on(k, v, (a) => a.where !== undefined && a.where === v);
        break;
      case 'function': {
        const m = functionMatcher(str(v));
        on(k, v, (a) => a.function !== undefined && m(a.function));
        break;
      }
      case 'object': {
        const m = globs(str(v), true);
        on(k, v, (a) => a.object !== undefined && m(a.object));
        break;
      }
      case 'copy_target': {
        const set = new Set(str(v));
        on(k, v, (a) => a.copy !== undefined && set.has(a.copy.target));
        break;
      }
      case 'setting': {
        const m = globs(str(v), true);
        on(k, v, (a) => a.setting !== undefined && m(a.setting));
        break;
      }
      case 'not_setting': {
        const m = globs(str(v), true);
        on(k, v, (a) => a.setting === undefined || !m(a.setting));
        break;
      }
      case 'transaction': {
        const m = globs(str(v), true);
        on(k, v, (a) => a.transaction !== undefined && m(a.transaction));
        break;
      }
      case 'nested': {
        const m = globs(str(v));
        on(k, v, (a) => a.nested !== undefined && m(a.nested));
        break;
      }
    }
  }
  return c;
}

function shellConditions(s: Record<string, unknown>): Condition<Action>[] {
  const c: Condition<Action>[] = [];
  const on = (field: string, expected: unknown, t: (a: Extract<Action, { kind: 'shell' }>['cmd']) => boolean) =>
    c.push(cond<Action>(`shell.${field}`, expected, (a) => a.kind === 'shell' && t(a.cmd)));
  for (const [k, v] of Object.entries(s)) {
    switch (k) {
      case 'program': {
        const m = globs(str(v));
        on(k, v, (x) => x.program !== null && m(x.program));
        break;
      }
      case 'dynamic':
        on(k, v, (x) => x.dynamic === v);
        break;
      case 'flags_any': {
        const set = new Set(str(v));
        on(k, v, (x) => x.flags.some((f) => set.has(f)));
        break;
      }
      case 'args_all': {
        const need = str(v);
        on(k, v, (x) => need.every((n) => x.args.includes(n)));
        break;
      }
      case 'args_any': {
        const m = globs(str(v));
        on(k, v, (x) => x.args.some(m));
        break;
      }
      case 'stdin': {
        const set = new Set(str(v));
        on(k, v, (x) => x.stdin !== null && set.has(x.stdin));
        break;
      }
      case 'piped_from': {
        const m = globs(str(v));
        on(k, v, (x) => x.pipedFrom !== null && m(x.pipedFrom));
        break;
      }
      case 'wrapped_by': {
        const m = globs(str(v));
        on(k, v, (x) => x.wrappers.some((w) => m(w) || m(w.split(' ')[0])));
        break;
      }
    }
  }
  return c;
}

function kubeConditions(s: Record<string, unknown>): Condition<Action>[] {
  const c: Condition<Action>[] = [];
  const on = (field: string, expected: unknown, t: (a: Extract<Action, { kind: 'kube' }>['kube']) => boolean) =>
    c.push(cond<Action>(`kube.${field}`, expected, (a) => a.kind === 'kube' && t(a.kube)));
  for (const [k, v] of Object.entries(s)) {
    switch (k) {
      case 'verbs': {
        const m = globs(str(v));
        on(k, v, (x) => m(x.verb));
        break;
      }
      case 'api_groups': {
        const m = globs(asList(v as string | string[]) ?? []);
        on(k, v, (x) => x.isResourceRequest && m(x.apiGroup));
        break;
      }
      case 'resources': {
        // RBAC semantics: `pods` is the resource without subresource; `pods/log` the subresource.
        const m = globs(str(v));
        on(k, v, (x) => x.isResourceRequest && m(x.subresource ? `${x.resource}/${x.subresource}` : x.resource));
        break;
      }
      case 'namespaces': {
        const m = globs(str(v));
        on(k, v, (x) => x.namespace !== '' && m(x.namespace));
        break;
      }
      case 'not_namespaces': {
        const m = globs(str(v));
        on(k, v, (x) => x.namespace === '' || !m(x.namespace));
        break;
      }
      case 'names': {
        const m = globs(str(v));
        on(k, v, (x) => x.name !== '' && m(x.name));
        break;
      }
      case 'scope': {
        const set = new Set(str(v));
        on(k, v, (x) => set.has(x.scope));
        break;
      }
      case 'discovery':
        on(k, v, (x) => x.discovery === v);
        break;
      case 'resource_request':
        on(k, v, (x) => x.isResourceRequest === v);
        break;
      case 'paths': {
        const m = globs(str(v));
        on(k, v, (x) => m(x.path));
        break;
      }
    }
  }
  return c;
}

function forwardConditions(s: Record<string, unknown>, src: YamlSource, path: PathSeg[], problems: SourceProblem[]): Condition<Action>[] {
  const c: Condition<Action>[] = [];
  const on = (field: string, expected: unknown, t: (a: Extract<Action, { kind: 'forward' }>['fwd']) => boolean) =>
    c.push(cond<Action>(`forward.${field}`, expected, (a) => a.kind === 'forward' && t(a.fwd)));
  for (const [k, v] of Object.entries(s)) {
    if (k === 'direction') {
      const set = new Set(str(v));
      on(k, v, (x) => set.has(x.direction));
    } else if (k === 'hosts') {
      const m = globs(str(v), true);
      on(k, v, (x) => m(x.host));
    } else if (k === 'ports') {
      const ranges: [number, number][] = [];
      (v as (number | string)[]).forEach((p, i) => {
        if (typeof p === 'number') ranges.push([p, p]);
        else {
          const [a, b] = p.split('-').map(Number);
          if (!(a >= 1 && b <= 65535 && a <= b)) problems.push(src.problem([...path, 'ports', i], `bad port range "${p}"`));
          ranges.push([a, b]);
        }
      });
      on(k, v, (x) => ranges.some(([a, b]) => x.port >= a && x.port <= b));
    }
  }
  return c;
}

function compileMasks(masks: RawMask[] | undefined, ref: string, src: YamlSource, path: PathSeg[], problems: SourceProblem[]): MaskSpec[] {
  if (!masks) return [];
  return masks.map((m, i) => {
    const kinds = [m.column !== undefined, m.detector !== undefined, m.resource !== undefined].filter(Boolean).length;
    if (kinds !== 1) problems.push(src.problem([...path, i], 'a mask names exactly one of column, detector or resource'));
    if (m.resource !== undefined && m.field === undefined) problems.push(src.problem([...path, i], 'a resource mask needs "field"'));
    if (m.strategy === 'fixed' && m.value === undefined) problems.push(src.problem([...path, i, 'strategy'], 'strategy "fixed" needs "value"'));
    const spec: MaskSpec = { strategy: m.strategy, rule: ref };
    if (m.column !== undefined) spec.column = m.column;
    if (m.detector !== undefined) spec.detector = m.detector;
    if (m.resource !== undefined) spec.resource = m.resource;
    if (m.field !== undefined) spec.field = m.field;
    if (m.keep_first !== undefined) spec.keepFirst = m.keep_first;
    if (m.keep_last !== undefined) spec.keepLast = m.keep_last;
    if (m.value !== undefined) spec.value = m.value;
    return spec;
  });
}

const FACT_KEYS = ['sql', 'shell', 'kube', 'forward', 'unparseable'] as const;
const FACT_PROTOCOL: Record<(typeof FACT_KEYS)[number], Protocol | null> = {
  sql: 'postgres',
  shell: 'ssh',
  forward: 'ssh',
  kube: 'kubernetes',
  unparseable: null,
};

/** Compile one policy file's text. `display` is the file name used in rule refs. */
export function compilePolicySource(src: YamlSource, display: string): { rules: CompiledRule[]; budgets: CompiledBudget[]; problems: SourceProblem[] } {
  const raw = src.value();
  const problems = validateAgainst(src, raw, policyFileSchema);
  if (problems.length) return { rules: [], budgets: [], problems };
  const file = raw as RawPolicyFile;
  const scope = whenConditions(file.scope, 'scope', src, ['scope'], problems);
  const rules: CompiledRule[] = [];
  const ids = new Set<string>();
  file.rules.forEach((r, i) => {
    const path: PathSeg[] = ['rules', i];
    const ref = `${display}:${r.id}`;
    if (ids.has(r.id)) problems.push(src.problem([...path, 'id'], `duplicate rule id "${r.id}" in this file`));
    ids.add(r.id);
    const present = FACT_KEYS.filter((k) => r[k] !== undefined);
    if (present.length > 1) problems.push(src.problem(path, `a rule matches one kind of facts; it has ${present.join(' and ')}`));
    if (r.effect === 'mask' && !r.masks) problems.push(src.problem([...path, 'masks'], 'an effect "mask" rule needs "masks"'));
    if (r.effect !== 'allow' && r.effect !== 'mask' && r.masks) problems.push(src.problem([...path, 'masks'], 'masks belong to allow or mask rules'));
    if (r.unparseable && r.effect === 'allow') problems.push(src.problem([...path, 'effect'], 'an unparseable request can never be allowed (fail closed): use deny or review'));
    for (const k of ['require_reason', 'approvers', 'approval_timeout'] as const) {
      if (r[k] !== undefined && r.effect !== 'review') problems.push(src.problem([...path, k], `"${k}" applies to review rules only`));
    }
    const own = whenConditions(r.when, 'when', src, [...path, 'when'], problems);
    let protocols: Set<Protocol> | null = own.protocols ?? scope.protocols;
    if (own.protocols && scope.protocols) protocols = new Set([...own.protocols].filter((p) => scope.protocols?.has(p)));
    const factKey = present[0];
    const factProtocol = factKey ? FACT_PROTOCOL[factKey] : null;
    if (factProtocol) {
      if (protocols && !protocols.has(factProtocol)) problems.push(src.problem([...path, factKey], `"${factKey}" facts only occur with protocol ${factProtocol}`));
      protocols = new Set([factProtocol]);
    }
    let actionConds: Condition<Action>[] = [];
    let actionKind: ActionKind | null = null;
    if (factKey === 'sql') {
      actionKind = 'sql';
      actionConds = sqlConditions(r.sql ?? {});
    } else if (factKey === 'shell') {
      actionKind = 'shell';
      actionConds = shellConditions(r.shell ?? {});
    } else if (factKey === 'kube') {
      actionKind = 'kube';
      actionConds = kubeConditions(r.kube ?? {});
    } else if (factKey === 'forward') {
      actionKind = 'forward';
      actionConds = forwardConditions(r.forward ?? {}, src, [...path, 'forward'], problems);
    } else if (factKey === 'unparseable') {
      actionKind = 'unparseable';
    }
    rules.push({
      ref,
      id: r.id,
      file: display,
      line: src.position(path).line,
      effect: r.effect,
      reason: r.reason,
      remedy: r.remedy,
      protocols,
      requestConds: [...scope.conds, ...own.conds],
      actionKind,
      actionConds,
      masks: [],
      maskKeys: [],
      shadow: file.mode === 'shadow' || r.mode === 'shadow',
      requireReason: r.require_reason === undefined || r.require_reason === false ? null : r.require_reason === true ? 1 : r.require_reason.min_length,
      ...(r.approvers !== undefined ? { approvers: r.approvers } : {}),
      ...(r.approval_timeout !== undefined ? { approvalTimeoutMs: durationMs(r.approval_timeout) } : {}),
    });
    const last = rules[rules.length - 1];
    last.masks = compileMasks(r.masks, ref, src, [...path, 'masks'], problems);
    last.maskKeys = last.masks.map((m) => `${m.column ?? ''}|${m.detector ?? ''}|${m.resource ?? ''}|${m.field ?? ''}`);
  });
  const budgets: CompiledBudget[] = [];
  (file.budgets ?? []).forEach((b, i) => {
    const path: PathSeg[] = ['budgets', i];
    if (ids.has(b.id)) problems.push(src.problem([...path, 'id'], `duplicate id "${b.id}" in this file (rules and budgets share ids)`));
    ids.add(b.id);
    const own = whenConditions((b as RawBudget & { when?: When }).when, 'when', src, [...path, 'when'], problems);
    let protocols: Set<Protocol> | null = own.protocols ?? scope.protocols;
    if (own.protocols && scope.protocols) protocols = new Set([...own.protocols].filter((p) => scope.protocols?.has(p)));
    budgets.push(compileBudget(b, { ref: `${display}:${b.id}`, file: display, line: src.position(path).line, protocols, conds: [...scope.conds, ...own.conds], fileShadow: file.mode === 'shadow' }));
  });
  return { rules, budgets, problems };
}

/** The policy files of a directory: `*.yaml` / `*.yml` directly in it, sorted by name. */
export function policyFiles(dir: string): string[] {
  let names: string[];
  try {
    if (!statSync(dir).isDirectory()) throw new Error('not a directory');
    names = readdirSync(dir);
  } catch (e) {
    throw new ConfigError([{ file: dir, line: 1, col: 1, field: '', message: `cannot read policy directory: ${(e as Error).message}` }]);
  }
  return names
    .filter((n) => /\.ya?ml$/.test(n))
    .sort()
    .map((n) => join(dir, n))
    .filter((p) => statSync(p).isFile());
}

/**
 * Load and compile every policy file of `dir`. Rule refs name the file as given relative to the
 * current directory (so `--policies examples/policies` gives `examples/policies/postgres.yaml:id`).
 * Throws ConfigError listing every problem of every file; nothing is half-loaded.
 */
export function loadPolicyDir(dir: string): CompiledPolicy {
  const files = policyFiles(dir);
  const problems: SourceProblem[] = [];
  const rules: CompiledRule[] = [];
  const budgets: CompiledBudget[] = [];
  const hash = createHash('sha256');
  for (const f of files) {
    const display = relative(process.cwd(), f).startsWith('..') ? f : relative(process.cwd(), f);
    try {
      const src = YamlSource.read(f);
      hash.update(display).update('\0').update(src.doc.toString()).update('\0');
      const r = compilePolicySource(src, display);
      problems.push(...r.problems);
      rules.push(...r.rules);
      budgets.push(...r.budgets);
    } catch (e) {
      if (e instanceof ConfigError) problems.push(...e.problems);
      else throw e;
    }
  }
  if (files.length === 0) problems.push({ file: dir, line: 1, col: 1, field: '', message: 'no policy files (*.yaml) found: everything would be denied' });
  if (problems.length) throw new ConfigError(problems);
  return freezePolicy(rules, budgets, files, hash.digest('hex').slice(0, 16));
}

/** The immutable snapshot of compiled rules and budgets (per-protocol rule lists precomputed). */
export function freezePolicy(rules: CompiledRule[], budgets: CompiledBudget[], files: string[], version: string): CompiledPolicy {
  const byProtocol = new Map<Protocol, CompiledRule[]>();
  const shadowByProtocol = new Map<Protocol, CompiledRule[]>();
  for (const p of ['postgres', 'ssh', 'kubernetes'] as const) {
    const all = rules.filter((r) => !r.protocols || r.protocols.has(p));
    byProtocol.set(p, all.filter((r) => !r.shadow));
    if (all.some((r) => r.shadow)) shadowByProtocol.set(p, all);
  }
  return Object.freeze({
    rules: Object.freeze(rules),
    byProtocol,
    shadowByProtocol,
    budgets: Object.freeze(budgets),
    files: Object.freeze(files),
    version,
    loadedAt: Date.now(),
  });
}
