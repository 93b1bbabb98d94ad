// Load a YAML file, keep source positions, validate against a JSON schema, and report every
// problem as `file:line:col: field: message`. Used by the bastion config and the policy files.
import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import { PortcullisError } from '../policy/types.js';

export interface SourceProblem {
  file: string;
  line: number;
  col: number;
  /** Dotted path of the field, e.g. `rules[3].sql.action`. Empty for the document itself. */
  field: string;
  message: string;
}

export function formatProblem(p: SourceProblem): string {
  return `${p.file}:${p.line}:${p.col}: ${p.field ? p.field + ': ' : ''}${p.message}`;
}

/** A config or policy error: carries every problem found, each naming file, line and field. */
export class ConfigError extends PortcullisError {
  constructor(readonly problems: SourceProblem[]) {
    super('config_invalid', problems.map(formatProblem).join('\n'), { problems });
    this.name = 'ConfigError';
  }
}

export type PathSeg = string | number;

export function fieldName(path: readonly PathSeg[]): string {
  let s = '';
  for (const seg of path) s += typeof seg === 'number' ? `[${seg}]` : s ? `.${seg}` : seg;
  return s;
}

/** A parsed YAML file that can say where any value came from. */
export class YamlSource {
  private constructor(
    readonly file: string,
    readonly doc: Document.Parsed,
    private readonly lines: LineCounter,
  ) {}

  static parse(file: string, text: string): YamlSource {
    const lines = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
    const src = new YamlSource(file, doc, lines);
    if (doc.errors.length > 0) {
      throw new ConfigError(
        doc.errors.map((e) => {
          const pos = e.linePos?.[0] ?? { line: 1, col: 1 };
          return { file, line: pos.line, col: pos.col, field: '', message: `YAML syntax: ${e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}` };
        }),
      );
    }
    return src;
  }

  static read(file: string): YamlSource {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new ConfigError([{ file, line: 1, col: 1, field: '', message: `cannot read: ${(e as Error).message}` }]);
    }
    return YamlSource.parse(file, text);
  }

  value(): unknown {
    return this.doc.toJS({ maxAliasCount: 100 });
  }

  /** Position of the value at `path` (or of its key when `key` is true), falling back to the nearest parent. */
  position(path: readonly PathSeg[], key = false): { line: number; col: number } {
    let node: unknown = this.doc.contents;
    let best: Node | null = (this.doc.contents as Node | null) ?? null;
    let keyNode: Node | null = null;
    for (const seg of path) {
      keyNode = null;
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
        if (!pair) break;
        keyNode = pair.key as Node;
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number') {
        node = node.items[seg];
      } else break;
      if (node && typeof node === 'object' && 'range' in node) best = node as Node;
    }
    const target = key && keyNode ? keyNode : best;
    const offset = target?.range?.[0] ?? 0;
    const p = this.lines.linePos(offset);
    return { line: p.line, col: p.col };
  }

  problem(path: readonly PathSeg[], message: string, key = false): SourceProblem {
    const { line, col } = this.position(path, key);
    return { file: this.file, line, col, field: fieldName(path), message };
  }
}

const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
const compiled = new WeakMap<object, ValidateFunction>();

function describeAjvError(e: ErrorObject): { path: PathSeg[]; message: string; key: boolean } {
  const path: PathSeg[] = e.instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
  const params = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties': {
      const extra = String(params.additionalProperty);
      return { path: [...path, extra], message: `unknown key "${extra}"`, key: true };
    }
    case 'required':
      return { path, message: `missing required key "${String(params.missingProperty)}"`, key: false };
    case 'enum':
      return { path, message: `expected one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`, key: false };
    case 'type':
      return { path, message: `expected ${String(params.type)}`, key: false };
    case 'pattern':
      return { path, message: `does not match the expected form ${String(params.pattern)}`, key: false };
    default:
      return { path, message: e.message ?? e.keyword, key: false };
  }
}

/**
 * Validate `value` (the JS form of `src`) against `schema`. Returns the problems, with the
 * positions of the offending fields. Errors of `anyOf`/`oneOf` branches are collapsed to the
 * most specific message.
 */
export function validateAgainst(src: YamlSource, value: unknown, schema: object): SourceProblem[] {
  let validate = compiled.get(schema);
  if (!validate) {
    validate = ajv.compile(schema);
    compiled.set(schema, validate);
  }
  if (validate(value)) return [];
  const seen = new Set<string>();
  const out: SourceProblem[] = [];
  const errors = (validate.errors ?? []).filter((e) => e.keyword !== 'anyOf' && e.keyword !== 'oneOf' && e.keyword !== 'if');
  for (const e of errors) {
    const d = describeAjvError(e);
    const p = src.problem(d.path, d.message, d.key);
    const k = formatProblem(p);
    if (!seen.has(k)) {
      seen.add(k);
      out.push(p);
    }
  }
  return out;
}

/** Resolve a secret reference: `env:NAME`, `file:PATH`, or a literal. Never logs the value. */
export function resolveSecret(ref: string, where: () => SourceProblem): string {
  if (ref.startsWith('env:')) {
    const name = ref.slice(4);
    const v = process.env[name];
    if (v === undefined) {
      const p = where();
      throw new ConfigError([{ ...p, message: `environment variable ${name} is not set` }]);
    }
    return v;
  }
  if (ref.startsWith('file:')) {
    const path = ref.slice(5);
    try {
      return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
    } catch (e) {
      const p = where();
      throw new ConfigError([{ ...p, message: `cannot read secret file ${path}: ${(e as NodeJS.ErrnoException).code ?? 'error'}` }]);
    }
  }
  return ref;
}
