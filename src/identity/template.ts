// Mapping templates: `"gh:{repository}:{ref}"` → a string built from claims (OIDC) or certificate
// fields (`{principal}`, `{key_id}`). A field name may be a dotted path into nested claims; keys that
// themselves contain dots (Kubernetes' `kubernetes.io`) are found by trying the longest key first.
// A field holding a list expands into one value per element (for groups), bounded.

export interface Template {
  readonly source: string;
  readonly parts: readonly (string | { field: string })[];
  readonly fields: readonly string[];
}

/** Most values one template may expand into (lists multiply). */
export const MAX_EXPANSION = 64;
/** Longest value a field may contribute. */
export const MAX_FIELD_LENGTH = 512;

const FIELD = /^[A-Za-z_][A-Za-z0-9_.:/-]*$/;

/** Compile a template; returns an error message for a malformed one. */
export function compileTemplate(source: string): Template | string {
  const parts: (string | { field: string })[] = [];
  const fields: string[] = [];
  let lit = '';
  for (let i = 0; i < source.length; i++) {
    const ch = source[i];
    if (ch === '{') {
      const end = source.indexOf('}', i + 1);
      if (end < 0) return `unclosed "{" at offset ${i}`;
      const field = source.slice(i + 1, end).trim();
      if (!FIELD.test(field)) return `"{${field}}" is not a field name (letters, digits, _ . : / -)`;
      if (lit) parts.push(lit);
      lit = '';
      parts.push({ field });
      fields.push(field);
      i = end;
    } else if (ch === '}') {
      return `unmatched "}" at offset ${i}`;
    } else lit += ch;
  }
  if (lit) parts.push(lit);
  return { source, parts, fields };
}

/** Look `path` up in `obj`: `a.b.c` tries key `a.b.c`, then `a.b` → `c`, then `a` → `b.c`, … */
export function lookupPath(obj: unknown, path: string, depth = 0): unknown {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj) || depth > 8) return undefined;
  const rec = obj as Record<string, unknown>;
  if (Object.prototype.hasOwnProperty.call(rec, path)) return rec[path];
  for (let i = path.lastIndexOf('.'); i > 0; i = path.lastIndexOf('.', i - 1)) {
    const head = path.slice(0, i);
    if (Object.prototype.hasOwnProperty.call(rec, head)) {
      const v = lookupPath(rec[head], path.slice(i + 1), depth + 1);
      if (v !== undefined) return v;
    }
  }
  return undefined;
}

export type RenderResult =
  | { ok: true; values: string[] }
  | { ok: false; reason: 'missing' | 'invalid'; field: string };

function scalar(v: unknown): string | undefined {
  if (typeof v === 'string') return v === '' ? undefined : v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'bigint') return v.toString();
  return undefined;
}

// eslint-disable-next-line no-control-regex -- refusing control characters is the point
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Render with `lookup`. A missing (or empty) field gives `missing`; a value that is not a scalar
 * (or a list of scalars), holds control characters or is too long gives `invalid`.
 */
export function renderTemplate(t: Template, lookup: (field: string) => unknown): RenderResult {
  let acc: string[] = [''];
  for (const p of t.parts) {
    if (typeof p === 'string') {
      acc = acc.map((a) => a + p);
      continue;
    }
    const raw = lookup(p.field);
    const list = Array.isArray(raw) ? raw : [raw];
    if (raw === undefined || raw === null || list.length === 0) return { ok: false, reason: 'missing', field: p.field };
    const vals: string[] = [];
    for (const item of list) {
      const s = scalar(item);
      if (s === undefined) return { ok: false, reason: item === '' ? 'missing' : 'invalid', field: p.field };
      if (s.length > MAX_FIELD_LENGTH || CONTROL.test(s)) return { ok: false, reason: 'invalid', field: p.field };
      vals.push(s);
    }
    if (acc.length * vals.length > MAX_EXPANSION) return { ok: false, reason: 'invalid', field: p.field };
    const next: string[] = [];
    for (const a of acc) for (const v of vals) next.push(a + v);
    acc = next;
  }
  return { ok: true, values: acc };
}
