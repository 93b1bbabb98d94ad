// Detector masking of Kubernetes JSON as a byte stream, without parsing whole objects: for the
// detector resources (src/masking/kube.ts: pods and pod templates, ConfigMaps) the values the
// detectors look at live in a few fields — `env` arrays, ConfigMap `data` / `binaryData` maps, and
// the last-applied-configuration annotation (a JSON document inside a string) — so the stream is
// copied through as it comes, and only those fields are cut out, parsed, masked and put back.
// Lists, Tables and watch streams are all the same to it.
//
// Sound as long as object keys are written literally (`"env"`, not `"\u0065nv"`): Go's
// encoding/json, which the API server uses, always writes them so. A key inside a string value
// cannot match: its quotes would be escaped. Bytes are held back only while a field (or a key that
// may start one) is incomplete at the end of what has arrived, so a watch event is passed on
// as soon as it is complete.
//
// It works on the bytes as they arrive (UTF-8: every byte of a multi-byte character is ≥ 0x80, so
// quotes, backslashes, brackets and the ASCII keys are found bytewise): keys are searched in a
// latin1 view of each chunk (one character per byte, so offsets are byte offsets), unchanged
// stretches go out as the input chunks or slices of them (no UTF-8 decode and re-encode of the
// whole body), and only a field that the masking changes is replaced. A field cut by a chunk
// boundary is scanned on from where it stopped, not from its start again.
import { LAST_APPLIED, maskKube, maskMap } from './kube.js';
import type { Masker } from './masker.js';

type Kind = 'array' | 'map' | 'map64' | 'json-string';

interface Target {
  key: string;
  kind: Kind;
}

const POD_TARGETS: Target[] = [
  { key: 'env', kind: 'array' },
  { key: LAST_APPLIED, kind: 'json-string' },
];
const CONFIGMAP_TARGETS: Target[] = [
  { key: 'data', kind: 'map' },
  { key: 'binaryData', kind: 'map64' },
  { key: LAST_APPLIED, kind: 'json-string' },
];

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

class Plan {
  /**
   * Any target's `"key"`: a plain alternation, which V8 searches several times faster than
   * indexOf('"env"') (whose first character, the quote, is everywhere in JSON).
   */
  readonly re: RegExp;
  readonly byKey: Map<string, Target>;
  /** `"key"` of every target, to recognize a key cut off at the end of the input. */
  readonly quoted: string[];
  constructor(readonly targets: Target[]) {
    this.re = new RegExp(targets.map((t) => `"${escapeRe(t.key)}"`).join('|'), 'g');
    this.byKey = new Map(targets.map((t) => [`"${t.key}"`, t]));
    this.quoted = targets.map((t) => `"${t.key}"`);
  }
}

const PLANS = { pods: new Plan(POD_TARGETS), configmaps: new Plan(CONFIGMAP_TARGETS) };

/** Which fields a resource's objects are masked in (null: not a detector-only resource). */
function planFor(masker: Masker, resource: string, detectorResources: ReadonlySet<string>): Plan | null {
  if (!detectorResources.has(resource) || masker.masksResource(resource)) return null;
  return resource === 'configmaps' ? PLANS.configmaps : PLANS.pods;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Index of the first non-whitespace character at or after i (t.length if none). */
function skipWs(t: string, i: number): number {
  while (i < t.length) {
    const c = t.charCodeAt(i);
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return i;
    i++;
  }
  return i;
}

/**
 * Where a field's value scan stands: resumable, so that a value cut by a chunk boundary is not
 * scanned again from its start when the next chunk comes (offsets are into `held`).
 */
interface Scan {
  target: Target;
  /** Offset of the value's first byte. */
  open: number;
  /** Next byte to look at. */
  pos: number;
  depth: number;
  inStr: boolean;
  /** The last byte seen was a backslash inside a string (the next one is escaped). */
  esc: boolean;
}

/** Scans on; returns the value's end (exclusive) or -1 when more bytes are needed (state kept in `st`). */
function scanValue(t: string, st: Scan): number {
  let i = st.pos;
  const n = t.length;
  const stringOnly = st.target.kind === 'json-string';
  while (i < n) {
    if (st.inStr) {
      if (st.esc) {
        st.esc = false;
        i++;
        continue;
      }
      const q = t.indexOf('"', i);
      if (q === -1) {
        // No closing quote yet: is the string's last byte an unpaired backslash?
        let bs = 0;
        for (let j = n - 1; j >= i && t.charCodeAt(j) === BACKSLASH; j--) bs++;
        st.esc = bs % 2 === 1;
        i = n;
        break;
      }
      let bs = 0;
      for (let j = q - 1; j >= i && t.charCodeAt(j) === BACKSLASH; j--) bs++;
      i = q + 1;
      if (bs % 2 === 1) continue; // an escaped quote
      st.inStr = false;
      if (stringOnly) {
        st.pos = i;
        return i;
      }
      continue;
    }
    const c = t.charCodeAt(i);
    if (c === QUOTE) st.inStr = true;
    else if (c === 0x5b || c === 0x7b) st.depth++;
    else if (c === 0x5d || c === 0x7d) {
      st.depth--;
      if (st.depth === 0) {
        st.pos = i + 1;
        return i + 1;
      }
    }
    i++;
  }
  st.pos = i;
  return -1;
}

/** The character that opens a value of `kind`. */
function opener(kind: Kind): number {
  return kind === 'json-string' ? QUOTE : kind === 'array' ? 0x5b : 0x7b;
}

/** Most distinct fields remembered per response. */
const CACHE_MAX = 10_000;

export class KubeFieldRewriter {
  /** Bytes not passed on yet: from the start of a key (or key prefix) whose field is incomplete. */
  private held: Buffer | null = null;
  /** The value scan in progress at the start of `held`, if it got that far. */
  private scan: Scan | null = null;
  /**
   * Masked field by target and bytes (as latin1: one character per byte, exact); null: unchanged.
   * Per target: the same bytes are masked differently as `data` (text) and as `binaryData`
   * (base64), so a hit under one key must never answer for the other.
   */
  private readonly cache = new Map<Target, Map<string, Buffer | null>>();
  private cached = 0;
  /** The last field masked, and as which target. */
  private last: { target: Target; key: string; out: Buffer | null } | null = null;

  /**
   * `out` receives the masked bytes (the input chunks themselves, or slices of them, where nothing
   * changed). Use `KubeFieldRewriter.for()` to get one only for the resources it can handle.
   */
  private constructor(
    private readonly masker: Masker,
    private readonly resource: string,
    private readonly plan: Plan,
    private readonly out: (chunk: Buffer) => void,
  ) {}

  /** A rewriter for `resource`, or null when its objects must be parsed whole (resource masks). */
  static for(masker: Masker, resource: string, detectorResources: ReadonlySet<string>, out: (chunk: Buffer) => void): KubeFieldRewriter | null {
    const plan = planFor(masker, resource, detectorResources);
    return plan ? new KubeFieldRewriter(masker, resource, plan, out) : null;
  }

  write(chunk: Buffer): void {
    if (chunk.length === 0) return;
    const s = this.held ? Buffer.concat([this.held, chunk]) : chunk;
    this.held = null;
    this.process(s, false);
  }

  /** Emits the rest; throws if a field is still incomplete (the body was cut off). */
  end(): void {
    const s = this.held;
    this.held = null;
    if (s) this.process(s, true);
  }

  /**
   * Masks the fields of `s` (bytes) and passes the rest on. The search and the value scans run on
   * `t`, the same bytes as a latin1 string (index for index), which V8 searches faster than
   * Buffer.indexOf can be called from JavaScript.
   */
  private process(s: Buffer, final: boolean): void {
    const t = s.toString('latin1');
    const re = this.plan.re;
    let at = 0; // everything before `at` is passed on
    let parts: Buffer[] | null = null;
    let st = this.scan;
    this.scan = null;
    let keyAt = 0;
    let holdAt = -1;
    re.lastIndex = 0;
    for (;;) {
      if (!st) {
        const m = re.exec(t);
        if (!m) break;
        keyAt = m.index;
        const target = this.plan.byKey.get(m[0])!;
        const colon = skipWs(t, keyAt + m[0].length);
        if (colon >= t.length) {
          if (!final) holdAt = keyAt;
          break;
        }
        if (t.charCodeAt(colon) !== 0x3a) continue; // a value, not a key
        const open = skipWs(t, colon + 1);
        if (open >= t.length) {
          if (!final) holdAt = keyAt;
          break;
        }
        if (t.charCodeAt(open) !== opener(target.kind)) continue; // another shape (e.g. "data": null): nothing to mask
        st = { target, open, pos: target.kind === 'json-string' ? open + 1 : open, depth: 0, inStr: target.kind === 'json-string', esc: false };
      }
      const end = scanValue(t, st);
      if (end === -1) {
        if (final) throw new SyntaxError(`the body ended inside "${st.target.key}"`);
        // Keep the field from its key on; the scan goes on there (offsets rebased onto `held`).
        this.scan = { ...st, open: st.open - keyAt, pos: st.pos - keyAt };
        holdAt = keyAt;
        break;
      }
      const masked = this.maskField(st.target, s, t, st.open, end);
      if (masked) {
        parts ??= [];
        if (st.open > at) parts.push(s.subarray(at, st.open));
        parts.push(masked);
        at = end;
      }
      re.lastIndex = end;
      st = null;
    }
    if (holdAt < 0 && !final) {
      // Keep a trailing fragment that could be the start of a key ("en, "kubectl.kub…).
      const q = t.lastIndexOf('"');
      if (q >= at) {
        const tail = t.slice(q);
        if (this.plan.quoted.some((k) => k.length > tail.length && k.startsWith(tail))) holdAt = q;
      }
    }
    const until = holdAt < 0 ? s.length : holdAt;
    if (holdAt >= 0) this.held = s.subarray(holdAt);
    if (!parts) {
      if (until === s.length) this.out(s);
      else if (until > 0) this.out(s.subarray(0, until));
      return;
    }
    if (until > at) parts.push(s.subarray(at, until));
    this.out(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
  }

  /** The masked bytes of the field s[open, end), or null when the masking leaves it as it is. */
  private maskField(target: Target, s: Buffer, t: string, open: number, end: number): Buffer | null {
    // The last field seen first: neighbours in a list (the pods of one ReplicaSet) mostly share
    // their env, and comparing is cheaper than hashing the field for the map.
    const last = this.last;
    if (last && last.target === target && last.key.length === end - open && t.startsWith(last.key, open)) return last.out;
    let cache = this.cache.get(target);
    if (!cache) this.cache.set(target, (cache = new Map()));
    const key = t.slice(open, end);
    const hit = cache.get(key);
    if (hit !== undefined) {
      this.last = { target, key, out: hit };
      return hit;
    }
    const text = s.toString('utf8', open, end);
    const masked = this.maskFieldUncached(target, text);
    const out = masked === text ? null : Buffer.from(masked, 'utf8');
    // The key is copied out of `t`: a slice would keep the whole chunk's string alive.
    const copy = s.toString('latin1', open, end);
    if (this.cached < CACHE_MAX) {
      cache.set(copy, out);
      this.cached++;
    }
    this.last = { target, key: copy, out };
    return out;
  }

  private maskFieldUncached(t: Target, text: string): string {
    const v = JSON.parse(text) as unknown;
    switch (t.kind) {
      case 'array': {
        if (!Array.isArray(v)) return text;
        let changed = false;
        for (const e of v) {
          if (typeof e !== 'object' || e === null || typeof (e as Record<string, unknown>)['value'] !== 'string') continue;
          const rec = e as Record<string, string>;
          const m = this.masker.maskText(rec['value']!);
          if (m !== rec['value']) {
            rec['value'] = m;
            changed = true;
          }
        }
        return changed ? JSON.stringify(v) : text;
      }
      case 'map':
      case 'map64': {
        const before = JSON.stringify(v);
        maskMap(this.masker, v, t.kind === 'map64');
        const after = JSON.stringify(v);
        return after === before ? text : after;
      }
      case 'json-string': {
        if (typeof v !== 'string') return text;
        // The annotation is the applied object itself: masked whole (parsed: it is small).
        let inner: string;
        try {
          inner = JSON.stringify(maskKube(this.masker, this.resource, JSON.parse(v), true, true));
        } catch {
          inner = '[REDACTED:last-applied-configuration]';
        }
        return inner === v ? text : JSON.stringify(inner);
      }
    }
  }
}
