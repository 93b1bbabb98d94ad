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

export class SessionMasks {
  private readonly specs: MaskSpec[] = [];
  private readonly keys = new Set<string>();
  private readonly seen = new WeakSet<MaskSpec>();
  private revision = 0;
  private base: Masker | null = null;
  private derived: Masker | null = null;
  private readonly cache = new Map<string, RowMasker>();

  constructor(
    private readonly hmacKey: string | Buffer | undefined,
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
      this.base = null;
      this.derived = null;
      this.cache.clear();
    }
  }

  private baseMasker(): Masker {
    this.base ??= new Masker({ masks: this.specs, hmacKey: this.hmacKey, typeMode: this.typeMode });
    return this.base;
  }

  private derivedMasker(): Masker {
    if (!this.derived) {
      const named = new Set(this.specs.filter((m) => m.detector !== undefined).map((m) => m.detector));
      const extra: MaskSpec[] = DEFAULT_DETECTORS.filter((d) => !named.has(d.id)).map((d) => ({ detector: d.id, strategy: 'redact', rule: DERIVED_COLUMN_RULE }));
      this.derived = new Masker({ masks: [...this.specs, ...extra], hmacKey: this.hmacKey, typeMode: this.typeMode });
    }
    return this.derived;
  }

  /** Masks free text (error messages, notices, parameters) with the detectors, defaults included. */
  maskText(s: string): string {
    return this.baseMasker().maskText(s);
  }

  /**
   * The row masker for a result's columns (cached). `typeMode` overrides the session's (binary
   * COPY keeps types: 'preserve').
   */
  rowMasker(cols: readonly ColumnDescriptor[], typeMode?: TypeMode): RowMasker {
    const derived = this.hasColumnRules && cols.some((c) => c.table === undefined && TEXTUAL.has(categoryOf(c.typeOid)));
    let key = `${this.revision}|${derived ? 1 : 0}|${typeMode ?? ''}`;
    for (const c of cols) key += `|${c.table ?? ''}.${c.column}:${c.typeOid}:${c.format === 'binary' ? 1 : 0}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const masker = derived ? this.derivedMasker() : this.baseMasker();
    const rm = masker.rowMasker(cols, typeMode !== undefined ? { typeMode } : {});
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
