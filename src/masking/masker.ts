// The one path out: a Masker is built once from a decision's (or a policy's) mask specs and the
// bastion's HMAC key, and everything that leaves the bastion — rows and byte streams to the
// agent, and the audit writer, the recorder, the live-view fan-out and log lines — goes through it.
//
// Which detectors run where:
// - rows (rowMasker): exactly the policy's masks (column rules and detector rules);
// - text, streams, logs (maskText, streamMasker, maskForLog): the policy's detector rules plus,
//   unless `defaultDetectors: false`, every detector that is on by default, with `redact`, for
//   those the policy does not name.

import { PortcullisError, type MaskSpec } from '../policy/types.js';
import { DETECTORS, DEFAULT_DETECTORS } from './detectors.js';
import { categoryOf, maskCell, NEED_VALUE, type TypeMode } from './pgtypes.js';
import { columnMatches, createRowMasker, splitMasks, validateStrategy, type ColumnDescriptor, type RowMasker, type RowMaskerOptions, type UninspectablePolicy } from './row.js';
import { Hasher, maskString, redactMarker } from './strategies.js';
import { StreamMasker, type StreamMaskerOptions } from './stream.js';
import { Collector, RuleSet } from './text.js';
import type { DetectorId, DetectorRule, Finding } from './types.js';
import { maskCounts } from './stats.js';

export interface MaskerOptions {
  /** The masks of a decision or policy (column, detector and Kubernetes resource masks). */
  masks: readonly MaskSpec[];
  /** The bastion's masking key (≥ 16 bytes); required when a mask uses `hash`. */
  hmacKey?: string | Buffer;
  /** Also run the default-on detectors (redact) in text, stream and log masking (default true). */
  defaultDetectors?: boolean;
  onUninspectable?: UninspectablePolicy;
  maxCellBytes?: number;
  typeMode?: TypeMode;
  textTypeOids?: readonly number[];
  /** Defaults for streamMasker(). */
  stream?: Omit<StreamMaskerOptions, 'rules' | 'onOutput'>;
}

export interface TextFinding extends Finding {
  strategy: string;
  rule: string;
}

const MARKER_ERROR = redactMarker('masking-error');
const MAX_LOG_DEPTH = 32;
const MAX_LOG_NODES = 10000;
const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

export class Masker {
  readonly masks: readonly MaskSpec[];
  private readonly hasher: Hasher | undefined;
  private readonly columnMasks: MaskSpec[];
  private readonly rowDetectorRules: DetectorRule[];
  /** Detector rules for text, streams and logs. */
  readonly textRules: RuleSet;
  private readonly resourceMasks: MaskSpec[];
  private readonly opts: MaskerOptions;

  constructor(opts: MaskerOptions) {
    this.opts = opts;
    this.masks = opts.masks;
    this.hasher = opts.hmacKey !== undefined ? new Hasher(opts.hmacKey) : undefined;
    const split = splitMasks(opts.masks, this.hasher);
    this.columnMasks = split.columns;
    this.rowDetectorRules = split.detectors;
    this.resourceMasks = opts.masks.filter((m) => m.resource !== undefined && m.field !== undefined);
    for (const m of opts.masks) {
      if (m.column === undefined && m.detector === undefined && (m.resource === undefined || m.field === undefined)) {
        throw new PortcullisError('mask_bad_option', `mask ${m.rule || '(no rule)'}: needs column, detector, or resource and field`, { rule: m.rule });
      }
    }
    const named = new Set<DetectorId>(split.detectors.map((r) => r.detector));
    const rules: DetectorRule[] = [...split.detectors];
    if (opts.defaultDetectors !== false) {
      for (const d of DEFAULT_DETECTORS) {
        if (!named.has(d.id)) rules.push({ detector: d.id, strategy: 'redact', rule: `default:${d.id}` });
      }
    }
    this.textRules = new RuleSet(rules, this.hasher);
  }

  /** Findings in a text with the strategy and rule that masks each (for reports). */
  findings(text: string): TextFinding[] {
    return this.textRules.find(text).map((f) => {
      const r = this.textRules.rule(f.detector);
      return { ...f, strategy: f.merged ? 'redact' : r.strategy, rule: r.rule ?? '' };
    });
  }

  /** Masks every detected value in a text. Fails closed: on an internal error the whole text is replaced. */
  maskText(text: string): string {
    try {
      const findings = this.textRules.find(text);
      maskCounts.text += findings.length;
      return this.textRules.maskUnsafe(text, findings);
    } catch {
      return MARKER_ERROR;
    }
  }

  /**
   * Masks one value: with the column rule when `at.column` (`schema.table.column`) has one
   * (type-aware when `at.typeOid` is given; the text form is returned), else with the detectors.
   */
  maskValue(value: string | null, at: { column?: string; typeOid?: number } = {}): string | null {
    if (value === null) return null;
    try {
      if (at.column !== undefined) {
        const parts = at.column.split('.');
        const desc = { column: parts[parts.length - 1]!, ...(parts.length > 1 ? { table: parts.slice(0, -1).join('.') } : {}) };
        const rule = this.columnMasks.find((m) => columnMatches(m.column!, desc));
        if (rule) {
          const label = desc.column;
          if (at.typeOid === undefined) return maskString(value, rule, label, 'auto', this.hasher);
          const out = maskCell(categoryOf(at.typeOid), false, value, rule, label, this.hasher, this.opts.typeMode ?? 'preserve');
          if (out === NEED_VALUE || out === null) return null;
          return out.toString('utf8');
        }
      }
      return this.textRules.maskUnsafe(value);
    } catch {
      return at.typeOid !== undefined ? null : MARKER_ERROR;
    }
  }

  /** A row masker for one RowDescription (see row.ts). */
  rowMasker(columns: readonly ColumnDescriptor[], opts: Omit<RowMaskerOptions, 'hasher' | 'hmacKey'> = {}): RowMasker {
    const masks: MaskSpec[] = [...this.columnMasks, ...this.rowDetectorRules.map((r) => ({ ...r, rule: r.rule ?? '' }))];
    return createRowMasker(columns, masks, {
      hasher: this.hasher,
      ...(this.opts.onUninspectable !== undefined ? { onUninspectable: this.opts.onUninspectable } : {}),
      ...(this.opts.maxCellBytes !== undefined ? { maxCellBytes: this.opts.maxCellBytes } : {}),
      ...(this.opts.typeMode !== undefined ? { typeMode: this.opts.typeMode } : {}),
      ...(this.opts.textTypeOids !== undefined ? { textTypeOids: this.opts.textTypeOids } : {}),
      ...opts,
    });
  }

  /** A stream masker for a terminal or HTTP byte stream. */
  streamMasker(opts: Omit<StreamMaskerOptions, 'rules'>): StreamMasker {
    return new StreamMasker({ ...this.opts.stream, ...opts, rules: this.textRules });
  }

  /** Is this object key a secret's name (password, api_key, Authorization…)? */
  private secretKey(key: string): boolean {
    if (!this.textRules.detectors.some((d) => d.id === 'secret_assignment')) return false;
    if (key.length > 128) return false;
    const sink = new Collector(false, true);
    DETECTORS.secret_assignment.scan(`${key}=v`, sink);
    return sink.findings.length > 0;
  }

  /**
   * Deep-masks an object for an audit summary or a log line: strings through the detectors,
   * values under secret-named keys redacted whole, numbers that are card numbers masked.
   * Never throws and never returns raw input: cycles, depth > 32 and more than 10,000 nodes are
   * replaced by markers.
   */
  maskForLog(value: unknown): unknown {
    const seen = new WeakSet<object>();
    let nodes = 0;
    const secretMarker = redactMarker('secret_assignment');
    const walk = (v: unknown, depth: number): unknown => {
      if (++nodes > MAX_LOG_NODES) return '[TRUNCATED]';
      if (typeof v === 'string') return this.maskText(v);
      if (typeof v === 'number' || typeof v === 'bigint') {
        const s = String(v);
        const m = this.maskText(s);
        return m === s ? v : m;
      }
      if (v === null || v === undefined || typeof v === 'boolean') return v;
      if (typeof v === 'function' || typeof v === 'symbol') return undefined;
      if (depth >= MAX_LOG_DEPTH) return '[TRUNCATED]';
      if (Buffer.isBuffer(v) || v instanceof Uint8Array) return this.maskText(Buffer.from(v).toString('utf8'));
      if (v instanceof Date) return Number.isNaN(v.getTime()) ? null : v.toISOString();
      if (typeof v !== 'object') return undefined;
      if (seen.has(v)) return '[CIRCULAR]';
      seen.add(v);
      try {
        if (Array.isArray(v)) return v.map((x) => walk(x, depth + 1));
        if (v instanceof Error) {
          const e: Record<string, unknown> = { name: v.name, message: this.maskText(v.message) };
          const code = (v as { code?: unknown }).code;
          if (code !== undefined) e['code'] = walk(code, depth + 1);
          return e;
        }
        if (v instanceof Map) return walk(Object.fromEntries(v), depth);
        if (v instanceof Set) return walk([...v], depth);
        const out: Record<string, unknown> = {};
        for (const [k, x] of Object.entries(v)) {
          const key = this.maskText(k);
          out[key] = this.secretKey(k) && (typeof x === 'string' || typeof x === 'number') && x !== '' ? secretMarker : walk(x, depth + 1);
        }
        return out;
      } finally {
        seen.delete(v);
      }
    };
    try {
      return walk(value, 0);
    } catch {
      return MARKER_ERROR;
    }
  }

  /** Does a response for this Kubernetes resource (plural, e.g. `secrets`) need masking? */
  masksResource(resource: string): boolean {
    return this.resourceMasks.some((m) => m.resource === resource || m.resource === '*');
  }

  /**
   * Masks a decoded Kubernetes response for `resource` (a single object, a List, a watch event or
   * a Table): in every object with `metadata`, each `resource`+`field` mask replaces the field's
   * values (`data` values are base64: the masked value is base64-encoded again, so clients still
   * decode it), and the last-applied-configuration annotation is masked the same way.
   * Returns a new value; the input is not modified.
   */
  maskKubeObject(resource: string, obj: unknown): unknown {
    const masks = this.resourceMasks.filter((m) => m.resource === resource || m.resource === '*');
    if (masks.length === 0) return obj;
    const maskLeaf = (v: unknown, m: MaskSpec, base64: boolean): unknown => {
      if (typeof v !== 'string') return v === null || v === undefined ? v : redactMarker(m.field!);
      const plain = base64 ? Buffer.from(v, 'base64').toString('utf8') : v;
      const masked = maskString(plain, m, m.field!, 'auto', this.hasher);
      if (masked === null) return null;
      return base64 ? Buffer.from(masked, 'utf8').toString('base64') : masked;
    };
    const applyField = (o: Record<string, unknown>, m: MaskSpec): void => {
      const path = m.field!.split('.');
      let cur: unknown = o;
      for (let i = 0; i < path.length - 1; i++) {
        if (typeof cur !== 'object' || cur === null) return;
        cur = (cur as Record<string, unknown>)[path[i]!];
      }
      if (typeof cur !== 'object' || cur === null) return;
      const holder = cur as Record<string, unknown>;
      const key = path[path.length - 1]!;
      const val = holder[key];
      if (val === undefined) return;
      const base64 = key === 'data' || key === 'binaryData';
      if (typeof val === 'object' && val !== null && !Array.isArray(val)) {
        const out: Record<string, unknown> = {};
        for (const [k, x] of Object.entries(val)) out[k] = maskLeaf(x, m, base64);
        holder[key] = out;
      } else {
        holder[key] = maskLeaf(val, m, base64);
      }
    };
    const walk = (v: unknown, depth: number): unknown => {
      if (depth > 64 || typeof v !== 'object' || v === null) return v;
      if (Array.isArray(v)) return v.map((x) => walk(x, depth + 1));
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) o[k] = walk(x, depth + 1);
      if (typeof o['metadata'] === 'object' && o['metadata'] !== null) {
        for (const m of masks) applyField(o, m);
        const md = o['metadata'] as Record<string, unknown>;
        const ann = md['annotations'];
        if (typeof ann === 'object' && ann !== null && typeof (ann as Record<string, unknown>)[LAST_APPLIED] === 'string') {
          const a = { ...(ann as Record<string, unknown>) };
          try {
            a[LAST_APPLIED] = JSON.stringify(walk(JSON.parse(a[LAST_APPLIED] as string), depth + 1));
          } catch {
            a[LAST_APPLIED] = redactMarker('last-applied-configuration');
          }
          md['annotations'] = a;
        }
      }
      return o;
    };
    try {
      return walk(obj, 0);
    } catch {
      return { kind: 'Status', status: 'Failure', message: MARKER_ERROR };
    }
  }
}

/** Every detector's id, default and false-positive note (for `--help` and docs). */
export function describeDetectors(): { id: DetectorId; title: string; defaultOn: boolean; falsePositives: string }[] {
  return Object.values(DETECTORS).map((d) => ({ id: d.id, title: d.title, defaultOn: d.defaultOn, falsePositives: d.falsePositives }));
}

export { validateStrategy };
