// `portcullis policy eval | explain | test`.
import { createReadStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Ajv } from 'ajv';
import { initFacts } from '../policy/actions.js';
import { loadPolicyDir, type CompiledPolicy } from '../policy/compile.js';
import { decide, explain } from '../policy/engine.js';
import { requestSchema } from '../policy/schema.js';
import { defaultTestFiles, runPolicyTestFile } from '../policy/testing.js';
import type { Decision, PolicyRequest } from '../policy/types.js';
import { EXIT, UsageError } from './util.js';

const validateRequest = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true }).compile(requestSchema);

export type ParsedLine = { ok: true; request: PolicyRequest } | { ok: false; error: { code: string; message: string } };

/** Parse and validate one request line of `policy eval`. */
export function parseRequestLine(line: string, lineNo: number): ParsedLine {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (e) {
    return { ok: false, error: { code: 'bad_json', message: `line ${lineNo}: not JSON: ${(e as Error).message}` } };
  }
  if (!validateRequest(value)) {
    const e = validateRequest.errors?.[0];
    const where = e?.instancePath ? e.instancePath.slice(1).replace(/\//g, '.') : 'request';
    const extra = e?.keyword === 'additionalProperties' ? ` "${String((e.params as { additionalProperty: string }).additionalProperty)}"` : '';
    const allowed = e?.keyword === 'enum' ? ` (${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')})` : '';
    return { ok: false, error: { code: 'bad_request', message: `line ${lineNo}: ${where}: ${e?.message ?? 'invalid'}${extra}${allowed}` } };
  }
  const req = value as unknown as PolicyRequest & { time?: number | string };
  if (typeof req.time === 'string') {
    const t = Date.parse(req.time);
    if (Number.isNaN(t)) return { ok: false, error: { code: 'bad_request', message: `line ${lineNo}: time: not an ISO-8601 date "${req.time}"` } };
    req.time = t;
  }
  return { ok: true, request: req as PolicyRequest };
}

export function decisionJson(d: Decision): string {
  const out: Record<string, unknown> = { effect: d.effect, rule: d.rule, reason: d.reason };
  if (d.remedy !== undefined) out.remedy = d.remedy;
  out.masks = d.masks;
  if (d.code !== undefined) out.code = d.code;
  if (d.approval !== undefined) out.approval = d.approval;
  return JSON.stringify(out);
}

function loadPolicies(dir: string | undefined): CompiledPolicy {
  if (!dir) throw new UsageError('--policies DIR is required');
  return loadPolicyDir(dir);
}

function inputStream(file: string | undefined): NodeJS.ReadableStream {
  if (file === undefined || file === '-') return process.stdin;
  return createReadStream(file);
}

export async function policyEval(opts: { policies?: string; request?: string }): Promise<number> {
  const policy = loadPolicies(opts.policies);
  await initFacts();
  const input = inputStream(opts.request);
  const rl = createInterface({ input, crlfDelay: Infinity });
  let n = 0;
  const out: string[] = [];
  const flush = () => {
    if (out.length) process.stdout.write(out.join('\n') + '\n');
    out.length = 0;
  };
  for await (const line of rl) {
    n++;
    if (line.trim() === '') continue;
    const p = parseRequestLine(line, n);
    if (!p.ok) out.push(JSON.stringify({ error: p.error }));
    else {
      try {
        out.push(decisionJson(decide(policy, p.request)));
      } catch (e) {
        out.push(JSON.stringify({ error: { code: 'internal_error', message: `line ${n}: ${(e as Error).message}` } }));
      }
    }
    if (out.length >= 256) flush();
  }
  flush();
  return EXIT.OK;
}

export async function policyExplain(opts: { policies?: string; request?: string }): Promise<number> {
  const policy = loadPolicies(opts.policies);
  if (!opts.request) throw new UsageError('--request FILE (or -) is required');
  await initFacts();
  const text = opts.request === '-' ? readFileSync(0, 'utf8') : readFileSync(opts.request, 'utf8');
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  let n = 0;
  for (const line of lines) {
    n++;
    const p = parseRequestLine(line, n);
    if (lines.length > 1) process.stdout.write(`# request ${n}\n`);
    if (!p.ok) {
      process.stdout.write(`error (${p.error.code}): ${p.error.message}\n`);
      continue;
    }
    process.stdout.write(explain(policy, p.request) + '\n');
    if (n < lines.length) process.stdout.write('\n');
  }
  return EXIT.OK;
}

export async function policyTest(opts: { policies?: string; tests: string[]; verbose?: boolean }): Promise<number> {
  const policy = loadPolicies(opts.policies);
  await initFacts();
  const files = opts.tests.length ? opts.tests : defaultTestFiles(opts.policies as string);
  if (files.length === 0) throw new UsageError(`no test files: give TESTS or put them in ${opts.policies}/tests/*.yaml`);
  let pass = 0;
  let fail = 0;
  for (const f of files) {
    for (const r of runPolicyTestFile(policy, f)) {
      if (r.ok) {
        pass++;
        if (opts.verbose) process.stdout.write(`ok   ${r.file}:${r.line} ${r.name}\n`);
      } else {
        fail++;
        process.stdout.write(`FAIL ${r.file}:${r.line} ${r.name}\n`);
        for (const d of r.diff) process.stdout.write(`       ${d}\n`);
        process.stdout.write(`       decision: ${decisionJson(r.decision)}\n`);
      }
    }
  }
  process.stdout.write(`${pass} passed, ${fail} failed\n`);
  return fail === 0 ? EXIT.OK : EXIT.FAILED;
}
