// The masks one PostgreSQL session applies, and the row maskers built from them.
//
// A result can come from a statement decided earlier than the one that returns it (PREPARE then
// EXECUTE, DECLARE then FETCH, a protocol-level statement parsed once and executed many times), so
// the masks applied to any result are the union of every decision's masks in the session so far.
// Column masks name their columns (`schema.table.column`), so applying one to a result that does
// not contain that column changes nothing: the union is never wrong, only complete.
//
// A result column with no known origin (an expression such as `lower(email)`) cannot be matched
// to a column rule by origin; when the session has column rules, such results are also scanned by
// the default detectors (email, ssn, card, phone, secrets…, redact) — fail closed.

import { DEFAULT_DETECTORS, Masker, categoryOf, type ColumnDescriptor, type RowMasker, type TypeMode } from '../../masking/index.js';
import type { MaskSpec } from '../../policy/types.js';
import type { FieldDescription } from './codec.js';
import { encodeRowDescription } from './codec.js';

export const DERIVED_COLUMN_RULE = 'portcullis:derived-column';
const TEXTUAL = new Set(['text', 'char', 'json', 'jsonb', 'xml', 'unknown', 'array_text', 'bytea']);
const MAX_CACHED_MASKERS = 256;

function specKey(m: MaskSpec): string {
  return JSON.stringify([m.column ?? null, m.detector ?? null, m.resource ?? null, m.field ?? null, m.strategy, m.keepFirst ?? null, m.keepLast ?? null, m.value ?? null]);
}

/**
 * How masked values meet column types. 'result' (result sets): a column under a column rule whose
 * type cannot hold the masked form is advertised as `text` (RowDescription is rewritten); a value
 * a detector finds in a column whose type cannot hold the masked form (a card number in an int8)
 * becomes NULL, so that ordinary numeric columns keep their types. 'copy-text': masked strings
 * everywhere (COPY text/CSV has no types). 'copy-binary': types kept, NULL where they cannot hold
 * the mask (binary COPY rows are decoded by the client with the table's types).
 */
export type MaskUse = 'result' | 'copy-text' | 'copy-binary';

export class SessionMasks {
  private readonly specs: MaskSpec[] = [];
  private readonly keys = new Set<string>();
  private readonly seen = new WeakSet<MaskSpec>();
  private revision = 0;
  private readonly maskers = new Map<string, Masker>();
  private readonly cache = new Map<string, RowMasker>();

  constructor(
    private readonly hmacKey: string | Buffer | undefined,
    /** 'text' (default): masked columns advertise text where needed; 'preserve': NULL instead. */
    private readonly typeMode: TypeMode,
  ) {}

  get masks(): readonly MaskSpec[] {
    return this.specs;
  }

  /** Changes whenever masks are added (row maskers built earlier are stale). */
  get version(): number {
    return this.revision;
  }

  get empty(): boolean {
    return this.specs.length === 0;
  }

  get hasColumnRules(): boolean {
    return this.specs.some((m) => m.column !== undefined);
  }

  /**
   * Checks that a decision's masks can be applied (valid strategies, an HMAC key for `hash`)
   * without adding them. Throws PortcullisError (the caller refuses the statement).
   */
  check(masks: readonly MaskSpec[]): void {
    if (masks.every((m) => this.seen.has(m))) return;
    const fresh = masks.filter((m) => !this.keys.has(specKey(m)));
    if (fresh.length === 0) return;
    new Masker({ masks: [...this.specs, ...fresh], hmacKey: this.hmacKey, typeMode: this.typeMode });
  }

  /** Adds a decision's masks (already checked). */
  add(masks: readonly MaskSpec[]): void {
    let changed = false;
    for (const m of masks) {
      // The policy hands out the same spec objects decision after decision: known ones are cheap.
      if (this.seen.has(m)) continue;
      this.seen.add(m);
      if (m.resource !== undefined && m.column === undefined && m.detector === undefined) continue;
      const k = specKey(m);
      if (this.keys.has(k)) continue;
      this.keys.add(k);
      this.specs.push(m);
      changed = true;
    }
    if (changed) {
      this.revision++;
      this.maskers.clear();
      this.cache.clear();
    }
  }

  /** A Masker over a subset of the masks: 'all', 'columns' or 'detectors' (+ the defaults when `derived`). */
  private masker(part: 'all' | 'columns' | 'detectors', derived: boolean, mode: TypeMode): Masker {
    const key = `${part}|${derived ? 1 : 0}|${mode}`;
    let m = this.maskers.get(key);
    if (!m) {
      let specs = part === 'all' ? this.specs : part === 'columns' ? this.specs.filter((x) => x.column !== undefined) : this.specs.filter((x) => x.detector !== undefined);
      if (derived) {
        const named = new Set(this.specs.filter((x) => x.detector !== undefined).map((x) => x.detector));
        const extra: MaskSpec[] = DEFAULT_DETECTORS.filter((d) => !named.has(d.id)).map((d) => ({ detector: d.id, strategy: 'redact', rule: DERIVED_COLUMN_RULE }));
        specs = [...specs, ...extra];
      }
      m = new Masker({ masks: specs, hmacKey: this.hmacKey, typeMode: mode });
      this.maskers.set(key, m);
    }
    return m;
  }

  /** Masks free text (error messages, notices, parameters) with the detectors, defaults included. */
  maskText(s: string): string {
    return this.masker('all', false, this.typeMode).maskText(s);
  }

  /** The row masker for a result's columns (cached per column set and mask version). */
  rowMasker(cols: readonly ColumnDescriptor[], use: MaskUse = 'result'): RowMasker {
    const derived = this.hasColumnRules && cols.some((c) => c.table === undefined && TEXTUAL.has(categoryOf(c.typeOid)));
    let key = `${this.revision}|${derived ? 1 : 0}|${use}`;
    for (const c of cols) key += `|${c.table ?? ''}.${c.column}:${c.typeOid}:${c.format === 'binary' ? 1 : 0}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    let rm: RowMasker;
    if (use !== 'result') {
      rm = this.masker('all', derived, use === 'copy-text' ? 'text' : 'preserve').rowMasker(cols);
    } else {
      // Column rules first (in the session's type mode), then the detectors on what that left,
      // keeping types (a detector hit in a type that cannot hold the mask becomes NULL).
      const byColumn = this.masker('columns', false, this.typeMode).rowMasker(cols);
      const after = cols.map((c, i) => (byColumn.advertisedTypes[i] === c.typeOid ? c : { ...c, typeOid: byColumn.advertisedTypes[i]! }));
      const byDetector = this.masker('detectors', derived, 'preserve').rowMasker(after);
      if (byColumn.passthrough) rm = byDetector;
      else if (byDetector.passthrough) rm = byColumn;
      else {
        const fn = (row: (Buffer | null)[]): (Buffer | null)[] => byDetector(byColumn(row));
        rm = Object.assign(fn, {
          advertisedTypes: byDetector.advertisedTypes,
          passthrough: false,
          plan: byColumn.plan.map((p, i) => (p.action === 'pass' ? byDetector.plan[i]! : p)),
        });
      }
    }
    if (this.cache.size >= MAX_CACHED_MASKERS) this.cache.clear();
    this.cache.set(key, rm);
    return rm;
  }
}

/** RowDescription advertising the masked types (text where the type cannot hold the mask), or null when unchanged. */
export function rewriteRowDescription(fields: readonly FieldDescription[], masker: RowMasker): Buffer | null {
  const adv = masker.advertisedTypes;
  let changed = false;
  for (let i = 0; i < fields.length; i++) if (adv[i] !== fields[i]!.typeOid) changed = true;
  if (!changed) return null;
  return encodeRowDescription(fields.map((f, i) => (adv[i] === f.typeOid ? f : { ...f, typeOid: adv[i]!, typlen: -1, typmod: -1 })));
}
