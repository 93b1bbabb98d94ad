// Detector masking of Kubernetes JSON as a text stream, without parsing whole objects: for the
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
  readonly re: RegExp;
  readonly byKey: Map<string, Target>;
  /** `"key"` of every target, to recognize a key cut off at the end of the input. */
  readonly quoted: string[];
  constructor(readonly targets: Target[]) {
    this.re = new RegExp(`"(${targets.map((t) => escapeRe(t.key)).join('|')})"`, 'g');
    this.byKey = new Map(targets.map((t) => [t.key, t]));
    this.quoted = targets.map((t) => `"${t.key}"`);
  }
}

const PLANS = { pods: new Plan(POD_TARGETS), configmaps: new Plan(CONFIGMAP_TARGETS) };

/** Which fields a resource's objects are masked in (null: not a detector-only resource). */
function planFor(masker: Masker, resource: string, detectorResources: ReadonlySet<string>): Plan | null {
  if (!detectorResources.has(resource) || masker.masksResource(resource)) return null;
  return resource === 'configmaps' ? PLANS.configmaps : PLANS.pods;
}

const INCOMPLETE = -2;

/** Index of the quote closing the string opened at `open`, or -1 if it has not arrived. */
function stringEnd(s: string, open: number): number {
  let i = open + 1;
  for (;;) {
    const q = s.indexOf('"', i);
    if (q === -1) return -1;
    let bs = 0;
    for (let j = q - 1; j > open && s.charCodeAt(j) === 0x5c; j--) bs++;
    if (bs % 2 === 0) return q;
    i = q + 1;
  }
}

/** End (exclusive) of the JSON value of `kind` starting at `open`; -1 malformed; INCOMPLETE. */
function valueEnd(s: string, open: number, kind: Kind): number {
  const c = s.charCodeAt(open);
  if (kind === 'json-string') {
    if (c !== 0x22) return -1;
    const q = stringEnd(s, open);
    return q === -1 ? INCOMPLETE : q + 1;
  }
  if (c !== (kind === 'array' ? 0x5b : 0x7b)) return -1;
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const d = s.charCodeAt(i);
    if (d === 0x22) {
      const q = stringEnd(s, i);
      if (q === -1) return INCOMPLETE;
      i = q;
    } else if (d === 0x5b || d === 0x7b) depth++;
    else if (d === 0x5d || d === 0x7d) {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return INCOMPLETE;
}

/** Index of the first non-whitespace character at or after i (s.length if none). */
function skipWs(s: string, i: number): number {
  while (i < s.length) {
    const c = s.charCodeAt(i);
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return i;
    i++;
  }
  return i;
}

/** Most fields one rewriter remembers, and most characters of their texts and masked forms. */
const CACHE_MAX_FIELDS = 10_000;
const CACHE_MAX_CHARS = 4 * 1024 * 1024;

export class KubeFieldRewriter {
  private buf = '';
  /**
   * Masked field by target and text. Per target: the same text is masked differently as `data`
   * (plain) and as `binaryData` (base64), so a hit under one key must never answer for the other.
   */
  private readonly cache = new Map<Target, Map<string, string>>();
  private cached = 0;
  private cachedChars = 0;

  /**
   * `out` receives the masked text. Use `KubeFieldRewriter.for()` to get one only for the
   * resources it can handle.
   */
  private constructor(
    private readonly masker: Masker,
    private readonly resource: string,
    private readonly plan: Plan,
    private readonly out: (text: string) => void,
  ) {}

  /** A rewriter for `resource`, or null when its objects must be parsed whole (resource masks). */
  static for(masker: Masker, resource: string, detectorResources: ReadonlySet<string>, out: (text: string) => void): KubeFieldRewriter | null {
    const plan = planFor(masker, resource, detectorResources);
    return plan ? new KubeFieldRewriter(masker, resource, plan, out) : null;
  }

  write(text: string): void {
    this.buf += text;
    this.process(false);
  }

  /** Emits the rest; throws if a field is still incomplete (the body was cut off). */
  end(): void {
    this.process(true);
  }

  private process(final: boolean): void {
    const s = this.buf;
    const re = this.plan.re;
    let at = 0; // everything before `at` is emitted
    let out = '';
    re.lastIndex = 0;
    for (;;) {
      const m = re.exec(s);
      if (!m) break;
      const target = this.plan.byKey.get(m[1]!)!;
      const colon = skipWs(s, m.index + m[0].length);
      if (colon >= s.length) {
        if (final) break;
        return this.hold(out, s, at, m.index);
      }
      if (s.charCodeAt(colon) !== 0x3a) continue; // a value, not a key
      const open = skipWs(s, colon + 1);
      if (open >= s.length) {
        if (final) break;
        return this.hold(out, s, at, m.index);
      }
      const end = valueEnd(s, open, target.kind);
      if (end === -1) continue; // another shape (e.g. "data": null): nothing to mask
      if (end === INCOMPLETE) {
        if (final) throw new SyntaxError(`the body ended inside "${target.key}"`);
        return this.hold(out, s, at, m.index);
      }
      const field = s.slice(open, end);
      const masked = this.maskField(target, field);
      if (masked !== field) {
        out += s.slice(at, open) + masked;
        at = end;
      }
      re.lastIndex = end;
    }
    if (final) {
      this.buf = '';
      this.out(out + s.slice(at));
      return;
    }
    // Keep a trailing fragment that could be the start of a key ("en, "kubectl.kub…).
    const q = s.lastIndexOf('"');
    let keep = s.length;
    if (q >= at) {
      const tail = s.slice(q);
      if (this.plan.quoted.some((k) => k.length > tail.length && k.startsWith(tail))) keep = q;
    }
    this.hold(out, s, at, keep);
  }

  /** Emits what is done and keeps s[from…] for later. */
  private hold(out: string, s: string, at: number, from: number): void {
    const emit = out + s.slice(at, from);
    this.buf = s.slice(from);
    if (emit) this.out(emit);
  }

  private maskField(t: Target, text: string): string {
    let cache = this.cache.get(t);
    if (!cache) this.cache.set(t, (cache = new Map()));
    const hit = cache.get(text);
    if (hit !== undefined) return hit;
    const masked = this.maskFieldUncached(t, text);
    if (this.cached < CACHE_MAX_FIELDS && this.cachedChars + text.length + masked.length <= CACHE_MAX_CHARS) {
      // A copy of the key: `text` is a slice of a whole input chunk, which a cached slice would
      // keep alive for as long as the response (a watch: hours).
      cache.set(Buffer.from(text, 'utf8').toString('utf8'), masked);
      this.cached++;
      this.cachedChars += text.length + masked.length;
    }
    return masked;
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
