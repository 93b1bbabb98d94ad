// Row masker for PostgreSQL results: compiled once per RowDescription, applied to every DataRow.
//
// For each column the plan is one of:
// - pass:   no column rule and no detector can match this type → the cell is returned as is
//           (the same Buffer object: no allocation);
// - column: a column rule (`schema.table.column`) masks the whole value, type-aware (pgtypes.ts);
// - scan:   detector rules inspect the value; only matches are masked. Text-like values are
//           scanned as text; int8/numeric/float/money values are checked whole as card numbers
//           (a card can sit in a numeric column); inet/cidr by the IP detectors; bytea decoded.
//           Types that cannot contain any detected value (int2/int4, bool, dates, uuid…) pass.
// Fail closed: a cell that cannot be inspected (binary format of an undecoded type, over
// `maxCellBytes`) is masked whole or the row is refused (`onUninspectable`); an exception inside
// a detector or strategy makes the cell NULL.

import { PortcullisError, type MaskSpec } from '../policy/types.js';
import { DETECTORS, isCardNumber, iinValid, type Detector } from './detectors.js';
import { byteaBytes, byteaToText, categoryOf, cellText, maskCell, maskedTypeFor, nativeFits, NEED_VALUE, TEXT_OID, type TypeMode } from './pgtypes.js';
import { Hasher, maskLast4Bytes, maskString, redactMarker, requireHasher } from './strategies.js';
import { alignUtf8, outsideJsonStrings, RuleSet } from './text.js';
import { isDetectorId, type DetectorRule, type StrategySpec, type TypeCategory } from './types.js';
import { maskCounts } from './stats.js';

export interface ColumnDescriptor {
  /** `schema.table` (or `table`) the column comes from; absent for expressions or when unknown. */
  table?: string;
  column: string;
  typeOid: number;
  format: 'text' | 'binary';
}

export type UninspectablePolicy = 'null' | 'redact' | 'refuse';

export interface RowMaskerOptions {
  /** The bastion's masking key (or a Hasher built from it); needed by `hash` masks. */
  hmacKey?: string | Buffer;
  hasher?: Hasher;
  /** What to do with a cell that cannot be inspected (default 'null'); 'refuse' throws mask_refused. */
  onUninspectable?: UninspectablePolicy;
  /** Cells larger than this are not inspected (default 1 MiB): masked whole or refused. */
  maxCellBytes?: number;
  /** 'preserve' (default) keeps column types (NULL where a type cannot hold the mask); 'text' advertises text. */
  typeMode?: TypeMode;
  /** Extra type OIDs whose values are plain text (citext, domains over text): masked as text. */
  textTypeOids?: readonly number[];
}

export interface ColumnPlanInfo {
  column: string;
  action: 'pass' | 'column' | 'scan';
  /** The column rule (action 'column') or the detectors that scan it (action 'scan'). */
  rule?: string;
  detectors?: string[];
  advertisedType: number;
}

export interface RowMasker {
  (row: (Buffer | null)[]): (Buffer | null)[];
  /** The type OID each column must be advertised with in RowDescription. */
  readonly advertisedTypes: readonly number[];
  /** True when no column needs masking: the proxy may skip calling the masker. */
  readonly passthrough: boolean;
  readonly plan: readonly ColumnPlanInfo[];
}

export const DEFAULT_MAX_CELL_BYTES = 1024 * 1024;

const TEXT_SCANNED: ReadonlySet<TypeCategory> = new Set<TypeCategory>(['text', 'char', 'xml', 'unknown', 'array_text', 'json', 'jsonb']);
const NUMERIC_CARD: ReadonlySet<TypeCategory> = new Set<TypeCategory>(['int8', 'numeric', 'float4', 'float8', 'money']);
/** Categories whose masked output may be a plain string (for onUninspectable 'redact'). */
const STRINGY: ReadonlySet<TypeCategory> = new Set<TypeCategory>(['text', 'char', 'xml', 'unknown', 'array_text']);

interface PassPlan {
  kind: 'pass';
}
interface ColumnPlan {
  kind: 'column';
  spec: StrategySpec;
  label: string;
  /** The output when it does not depend on the value (redact, fixed, null), else undefined. */
  constant: Buffer | null | undefined;
}
interface ScanPlan {
  kind: 'scan';
  rules: RuleSet;
  detectors: Detector[];
  /** Untouched binary cells must be re-sent as text (column advertised as text in 'text' mode). */
  reencode: boolean;
}
type Plan = (PassPlan | ColumnPlan | ScanPlan) & { category: TypeCategory; binary: boolean; desc: ColumnDescriptor };

/** Does a column spec (`schema.table.column`, `table.column`, `column`; `*` per part) name this column? */
export function columnMatches(spec: string, desc: Pick<ColumnDescriptor, 'table' | 'column'>): boolean {
  const parts = spec.toLowerCase().split('.');
  const last = parts[parts.length - 1];
  if (last !== '*' && last !== desc.column.toLowerCase()) return false;
  if (parts.length === 1 || desc.table === undefined) return true; // unknown source: match by name (fail closed)
  const t = desc.table.toLowerCase().split('.');
  const specTable = parts[parts.length - 2];
  if (specTable !== '*' && specTable !== t[t.length - 1]) return false;
  if (parts.length >= 3 && t.length >= 2) {
    const specSchema = parts[parts.length - 3];
    if (specSchema !== '*' && specSchema !== t[t.length - 2]) return false;
  }
  return true;
}

export function validateStrategy(spec: StrategySpec, where: string): void {
  const ok = ['redact', 'partial', 'last4', 'hash', 'null', 'fixed'];
  if (!ok.includes(spec.strategy)) {
    throw new PortcullisError('mask_bad_strategy', `${where}: unknown strategy "${String(spec.strategy)}" (expected ${ok.join(', ')})`, {
      where,
      strategy: spec.strategy,
    });
  }
  for (const k of ['keepFirst', 'keepLast'] as const) {
    const v = spec[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 64)) {
      throw new PortcullisError('mask_bad_option', `${where}: ${k} must be an integer 0–64, got ${String(v)}`, { where, [k]: v });
    }
  }
  if (spec.strategy === 'fixed' && typeof spec.value !== 'string') {
    throw new PortcullisError('mask_bad_option', `${where}: strategy fixed needs a string value`, { where });
  }
}

/** Splits policy masks into column rules and detector rules, validating them. */
export function splitMasks(masks: readonly MaskSpec[], hasher: Hasher | undefined): { columns: MaskSpec[]; detectors: DetectorRule[] } {
  const columns: MaskSpec[] = [];
  const detectors: DetectorRule[] = [];
  for (const m of masks) {
    const where = `mask ${m.rule || '(no rule)'} ${m.column ?? m.detector ?? `${m.resource ?? ''}.${m.field ?? ''}`}`;
    validateStrategy(m, where);
    if (m.strategy === 'hash') requireHasher(hasher, where);
    if (m.column !== undefined) columns.push(m);
    if (m.detector !== undefined) {
      if (!isDetectorId(m.detector)) {
        throw new PortcullisError('mask_unknown_detector', `${where}: unknown detector "${m.detector}"`, { where, detector: m.detector });
      }
      detectors.push({ ...m, detector: m.detector });
    }
  }
  return { columns, detectors };
}

function labelOf(column: string): string {
  const parts = column.split('.');
  return parts[parts.length - 1] || column;
}

function countDigits(b: Buffer, from: number): number {
  let n = 0;
  for (let i = from; i < b.length; i++) {
    const c = b[i]!;
    if (c >= 48 && c <= 57) n++;
  }
  return n;
}

/** Can any of the detectors match these bytes? (cheap pre-filter: digit counts and required bytes) */
function mayMatch(detectors: readonly Detector[], cell: Buffer, from: number): boolean {
  let digits = -1;
  for (const d of detectors) {
    if (d.needsByte >= 0 && cell.indexOf(d.needsByte, from) === -1) continue;
    if (d.minDigits > 0) {
      if (digits < 0) digits = countDigits(cell, from);
      if (digits < d.minDigits) continue;
    }
    return true;
  }
  return false;
}

/** The integer digits of a numeric text form; `approx` when a float lost precision. */
function integerDigits(category: TypeCategory, text: string, binary: boolean): { digits: string; approx: boolean } {
  if (category === 'money') {
    if (binary) {
      const cents = BigInt(text);
      return { digits: (cents < 0n ? -cents : cents).toString().slice(0, -2) || '0', approx: false };
    }
    const t = text.replace(/[.,]\d{1,2}$/, '');
    return { digits: t.replace(/\D/g, ''), approx: false };
  }
  if (/[eE]/.test(text) || category === 'float4' || category === 'float8') {
    const x = Math.abs(Number(text));
    if (!Number.isFinite(x)) return { digits: '', approx: false };
    return { digits: BigInt(Math.trunc(x)).toString(), approx: x > Number.MAX_SAFE_INTEGER };
  }
  const m = /^-?(\d+)/.exec(text);
  return { digits: m ? m[1]! : '', approx: false };
}

export function createRowMasker(columns: readonly ColumnDescriptor[], masks: readonly MaskSpec[], opts: RowMaskerOptions = {}): RowMasker {
  const hasher = opts.hasher ?? (opts.hmacKey !== undefined ? new Hasher(opts.hmacKey) : undefined);
  const onUninspectable = opts.onUninspectable ?? 'null';
  const maxCell = opts.maxCellBytes ?? DEFAULT_MAX_CELL_BYTES;
  const mode: TypeMode = opts.typeMode ?? 'preserve';
  const textOids = new Set(opts.textTypeOids ?? []);
  if (!['null', 'redact', 'refuse'].includes(onUninspectable)) {
    throw new PortcullisError('mask_bad_option', `onUninspectable must be null, redact or refuse, got ${String(onUninspectable)}`, {});
  }
  const split = splitMasks(masks, hasher);
  const allRules = new RuleSet(split.detectors, hasher);

  const plans: Plan[] = columns.map((desc) => {
    const category = categoryOf(desc.typeOid, textOids);
    const binary = desc.format === 'binary';
    const colRule = split.columns.find((m) => columnMatches(m.column!, desc));
    if (colRule) {
      const label = labelOf(colRule.column!);
      const valueFree = colRule.strategy === 'redact' || colRule.strategy === 'fixed' || colRule.strategy === 'null';
      let constant: Buffer | null | undefined;
      if (valueFree) {
        const r = maskCell(category, binary, null, colRule, label, hasher, mode);
        constant = r === NEED_VALUE ? undefined : r;
      }
      return { kind: 'column', spec: colRule, label, constant, category, binary, desc };
    }
    const detectors = allRules.detectors.filter((d) => d.scans.has(category));
    if (detectors.length === 0) return { kind: 'pass', category, binary, desc };
    const rules = new RuleSet(
      detectors.map((d) => allRules.rule(d.id)),
      hasher,
    );
    const advertised = scanAdvertised(category, desc.typeOid, rules);
    const reencode = binary && advertised === TEXT_OID && desc.typeOid !== TEXT_OID && !TEXT_SCANNED.has(category);
    return { kind: 'scan', rules, detectors, reencode, category, binary, desc };
  });

  function scanAdvertised(category: TypeCategory, typeOid: number, rules: RuleSet): number {
    if (mode === 'preserve') return typeOid;
    if (TEXT_SCANNED.has(category) || category === 'bytea') return category === 'char' ? TEXT_OID : typeOid;
    if (category === 'array_num') return TEXT_OID;
    return rules.rules.every((r) => nativeFits(category, r)) ? typeOid : TEXT_OID;
  }

  const advertisedTypes = plans.map((p) => {
    if (p.kind === 'column') return maskedTypeFor(p.desc.typeOid, p.spec, mode, textOids);
    if (p.kind === 'scan') return scanAdvertised(p.category, p.desc.typeOid, p.rules);
    return p.desc.typeOid;
  });
  const planInfo: ColumnPlanInfo[] = plans.map((p, i) => ({
    column: p.desc.table ? `${p.desc.table}.${p.desc.column}` : p.desc.column,
    action: p.kind,
    ...(p.kind === 'column' ? { rule: p.spec.rule ?? '' } : {}),
    ...(p.kind === 'scan' ? { detectors: p.detectors.map((d) => d.id) } : {}),
    advertisedType: advertisedTypes[i]!,
  }));
  const active = plans.map((p, i) => (p.kind === 'pass' ? -1 : i)).filter((i) => i >= 0);

  function uninspectable(p: Plan, reason: string): Buffer | null {
    if (onUninspectable === 'refuse') {
      throw new PortcullisError(
        'mask_refused',
        `column ${p.desc.column} (type ${p.desc.typeOid}, ${p.desc.format} format) cannot be inspected for masking: ${reason}`,
        { column: p.desc.column, table: p.desc.table, typeOid: p.desc.typeOid, format: p.desc.format, reason },
      );
    }
    if (onUninspectable === 'redact' && STRINGY.has(p.category)) return Buffer.from(redactMarker(p.desc.column), 'utf8');
    return null;
  }

  function maskColumn(p: ColumnPlan & Plan, cell: Buffer): Buffer | null {
    if (p.constant !== undefined) return p.constant;
    if (cell.length > maxCell) return uninspectable(p, `value of ${cell.length} bytes exceeds maxCellBytes ${maxCell}`);
    if (p.spec.strategy === 'last4' && p.category === 'text') {
      const fast = maskLast4Bytes(cell); // text values are UTF-8 in both formats
      if (fast) return fast;
    }
    const text = cellText(p.category, p.binary, cell);
    const r = maskCell(p.category, p.binary, text, p.spec, p.label, hasher, mode);
    if (r === NEED_VALUE) return uninspectable(p, `binary format of type ${p.desc.typeOid} is not decoded`);
    return r;
  }

  /** Replaces findings inside bytes whose latin1 decoding (from `from`) was scanned. */
  function replaceInBytes(p: ScanPlan & Plan, bytes: Buffer, from: number, s: string, json: boolean): Buffer | null {
    const findings = p.rules.find(s);
    if (findings.length === 0) return null;
    maskCounts.detector++;
    const outside = json ? outsideJsonStrings(s, findings) : null;
    const parts: Buffer[] = [];
    let pos = 0;
    findings.forEach((f, k) => {
      const [a0, b] = alignUtf8(bytes, from + f.start, from + f.end);
      const a = Math.max(a0, pos);
      parts.push(bytes.subarray(pos, a));
      let rep = p.rules.replacement(bytes.toString('utf8', a, b), f);
      if (json) rep = outside![k] ? JSON.stringify(rep) : JSON.stringify(rep).slice(1, -1);
      parts.push(Buffer.from(rep, 'utf8'));
      pos = b;
    });
    parts.push(bytes.subarray(pos));
    return Buffer.concat(parts);
  }

  function scanCell(p: ScanPlan & Plan, cell: Buffer): Buffer | null {
    const cat = p.category;
    if (cell.length > maxCell) return uninspectable(p, `value of ${cell.length} bytes exceeds maxCellBytes ${maxCell}`);
    if (TEXT_SCANNED.has(cat)) {
      let from = 0;
      if (p.binary) {
        if (cat === 'jsonb') {
          if (cell[0] !== 1) return uninspectable(p, 'unknown jsonb binary version');
          from = 1;
        } else if (cat === 'unknown' || cat === 'array_text') {
          return uninspectable(p, `binary format of type ${p.desc.typeOid} is not decoded`);
        }
      }
      if (!mayMatch(p.detectors, cell, from)) return cell;
      const s = cell.toString('latin1', from);
      const json = cat === 'json' || cat === 'jsonb';
      const out = replaceInBytes(p, cell, from, s, json);
      return out ?? cell;
    }
    if (cat === 'bytea') {
      const bytes = byteaBytes(p.binary, cell);
      if (!mayMatch(p.detectors, bytes, 0)) return cell;
      const out = replaceInBytes(p, bytes, 0, bytes.toString('latin1'), false);
      if (!out) return cell;
      return p.binary ? out : Buffer.from(byteaToText(out), 'latin1');
    }
    if (NUMERIC_CARD.has(cat)) {
      const text = cellText(cat, p.binary, cell);
      if (text === null) return uninspectable(p, `binary format of type ${p.desc.typeOid} is not decoded`);
      const { digits, approx } = integerDigits(cat, text, p.binary);
      const hit = digits.length >= 13 && digits.length <= 19 && (isCardNumber(digits) || (approx && iinValid(digits)));
      if (hit) {
        maskCounts.detector++;
        const rule = p.rules.rule('card');
        if (mode === 'text' && !nativeFits(cat, rule)) {
          const s = maskString(digits, rule, 'card', 'digits', hasher, DETECTORS.card);
          return s === null ? null : Buffer.from(s, 'utf8');
        }
        const r = maskCell(cat, p.binary, text, rule, 'card', hasher, mode);
        return r === NEED_VALUE ? null : r;
      }
      return p.reencode ? Buffer.from(text, 'utf8') : cell;
    }
    if (cat === 'array_num' || cat === 'inet') {
      const text = cellText(cat, p.binary, cell);
      if (text === null) return uninspectable(p, `binary format of type ${p.desc.typeOid} is not decoded`);
      const findings = p.rules.find(text);
      if (findings.length === 0) return p.reencode ? Buffer.from(text, 'utf8') : cell;
      maskCounts.detector++;
      if (mode === 'preserve') return null;
      if (cat === 'array_num') return Buffer.from(p.rules.maskUnsafe(text, findings), 'utf8');
      const r = maskCell(cat, p.binary, text, p.rules.rule(findings[0]!.detector), findings[0]!.detector, hasher, mode);
      return r === NEED_VALUE ? null : r;
    }
    return cell;
  }

  function maskOne(p: Plan, cell: Buffer): Buffer | null {
    try {
      if (p.kind === 'column') {
        maskCounts.column++;
        return maskColumn(p, cell);
      }
      if (p.kind === 'scan') return scanCell(p, cell);
      return cell;
    } catch (err) {
      if (err instanceof PortcullisError && err.code === 'mask_refused') throw err;
      return null; // fail closed: a masker error never lets the value through
    }
  }

  const n = columns.length;
  const fn = (row: (Buffer | null)[]): (Buffer | null)[] => {
    if (row.length !== n) {
      throw new PortcullisError('mask_row_shape', `row has ${row.length} values but the row description has ${n} columns`, {
        values: row.length,
        columns: n,
      });
    }
    let out: (Buffer | null)[] | null = null;
    for (let k = 0; k < active.length; k++) {
      const i = active[k]!;
      const cell = row[i];
      if (cell === null || cell === undefined) continue;
      const m = maskOne(plans[i]!, cell);
      if (m !== cell) {
        if (out === null) out = row.slice();
        out[i] = m;
      }
    }
    return out ?? row;
  };
  return Object.assign(fn, {
    advertisedTypes,
    passthrough: active.length === 0,
    plan: planInfo,
  });
}

