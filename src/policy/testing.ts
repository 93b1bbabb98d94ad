// `policy test`: YAML test files of request → expected effect / rule / masks.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, YamlSource, validateAgainst, type SourceProblem } from '../config/source.js';
import type { CompiledPolicy } from './compile.js';
import { decide } from './engine.js';
import { policyTestFileSchema, requestSchema } from './schema.js';
import type { Decision, Identity, PolicyRequest } from './types.js';

export interface TestCaseResult {
  file: string;
  line: number;
  name: string;
  ok: boolean;
  /** What differed: `field: expected X, got Y` lines. */
  diff: string[];
  decision: Decision;
}

type RawTest = {
  name: string;
  request?: Record<string, unknown>;
  sql?: string;
  command?: string;
  http?: Record<string, unknown>;
  forward?: Record<string, unknown>;
  identity?: Identity;
  target?: string;
  searchPath?: string[];
  reason?: string;
  expect: { effect: string; rule?: string; reason?: string; masks?: string[]; code?: string };
};
type RawTestFile = { defaults?: { protocol?: string; identity?: Identity; target?: string }; tests: RawTest[] };

export function maskKey(m: Decision['masks'][number]): string {
  return m.column ?? m.detector ?? `${m.resource}.${m.field}`;
}

/** The test files of a policy directory: `<dir>/tests/*.yaml`. */
export function defaultTestFiles(dir: string): string[] {
  const t = join(dir, 'tests');
  try {
    if (!statSync(t).isDirectory()) return [];
  } catch {
    return [];
  }
  return readdirSync(t)
    .filter((n) => /\.ya?ml$/.test(n))
    .sort()
    .map((n) => join(t, n));
}

export function runPolicyTestFile(policy: CompiledPolicy, file: string): TestCaseResult[] {
  const src = YamlSource.read(file);
  const raw = src.value();
  const problems: SourceProblem[] = validateAgainst(src, raw, policyTestFileSchema);
  if (problems.length) throw new ConfigError(problems);
  const tf = raw as RawTestFile;
  const results: TestCaseResult[] = [];
  tf.tests.forEach((t, i) => {
    const base: Record<string, unknown> = { ...(tf.defaults ?? {}), ...(t.request ?? {}) };
    for (const k of ['sql', 'command', 'http', 'forward', 'identity', 'target', 'searchPath', 'reason'] as const) if (t[k] !== undefined) base[k] = t[k];
    if (base.sql !== undefined || base.command !== undefined || base.http !== undefined || base.forward !== undefined) {
      if (base.protocol === undefined) base.protocol = base.sql !== undefined ? 'postgres' : base.http !== undefined ? 'kubernetes' : 'ssh';
    }
    if (t.sql !== undefined) base.protocol = 'postgres';
    if (t.command !== undefined || t.forward !== undefined) base.protocol = 'ssh';
    if (t.http !== undefined) base.protocol = 'kubernetes';
    const reqProblems = validateAgainst(src, base, requestSchema).map((p) => ({ ...src.problem(['tests', i], `request: ${p.field ? p.field + ': ' : ''}${p.message}`) }));
    if (reqProblems.length) throw new ConfigError(reqProblems);
    const req = base as unknown as PolicyRequest;
    const d = decide(policy, req);
    const diff: string[] = [];
    if (d.effect !== t.expect.effect) diff.push(`effect: expected ${t.expect.effect}, got ${d.effect}`);
    if (t.expect.rule !== undefined && d.rule !== t.expect.rule && !d.rule.endsWith(`:${t.expect.rule}`)) diff.push(`rule: expected ${t.expect.rule}, got ${d.rule}`);
    if (t.expect.code !== undefined && (d.code ?? '') !== t.expect.code) diff.push(`code: expected ${t.expect.code}, got ${d.code ?? '(none)'}`);
    if (t.expect.reason !== undefined && !d.reason.includes(t.expect.reason)) diff.push(`reason: expected to contain "${t.expect.reason}", got "${d.reason}"`);
    if (t.expect.masks !== undefined) {
      const got = d.masks.map(maskKey).sort();
      const want = [...t.expect.masks].sort();
      if (got.join('\n') !== want.join('\n')) diff.push(`masks: expected [${want.join(', ')}], got [${got.join(', ')}]`);
    }
    results.push({ file, line: src.position(['tests', i]).line, name: t.name, ok: diff.length === 0, diff, decision: d });
  });
  return results;
}
