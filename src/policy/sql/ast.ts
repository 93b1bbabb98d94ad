// Narrowing helpers over the JSON parse tree that libpg-query returns.
//
// The tree is protobuf-JSON: a field typed `Node` holds a one-key wrapper (`{"RangeVar": {...}}`),
// a field typed as a specific struct holds the struct itself (`"relation": {"relname": ...}`), and
// fields at their default value (false, 0, "", empty list) are left out. Everything here works on
// `unknown` and narrows, so that an unexpected shape is walked generically instead of trusted.

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `{"TypeName": {...}}` → ['TypeName', {...}]; anything else → null. */
export function asNode(v: unknown): [string, Obj] | null {
  if (!isObj(v)) return null;
  let key: string | undefined;
  for (const k in v) {
    if (key !== undefined) return null; // more than one key: a bare struct
    key = k;
  }
  if (key === undefined) return null;
  const c = key.charCodeAt(0);
  if (c < 65 || c > 90) return null; // node type names start with an upper-case letter
  const body = v[key];
  return isObj(body) ? [key, body] : null;
}

/** The body of a node of the given type, whether wrapped (`{"RangeVar": {...}}`) or bare. */
export function nodeBody(v: unknown, type: string): Obj | null {
  if (!isObj(v)) return null;
  const n = asNode(v);
  if (n) return n[0] === type ? n[1] : null;
  return v;
}

export function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

export function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

/** A `String` node's value (`{"String": {"sval": "x"}}`), or undefined. */
export function stringNode(v: unknown): string | undefined {
  const n = asNode(v);
  if (!n || n[0] !== 'String') return undefined;
  return str(n[1].sval) ?? ''; // protobuf leaves out an empty sval
}

/**
 * A qualified name given as a list of `String` nodes (`["s", "t"]`), or as a `List` node holding
 * one. Returns null when an element is not a plain string (e.g. `A_Star`).
 */
export function nameList(v: unknown): string[] | null {
  const n = asNode(v);
  if (n && n[0] === 'List') return nameList(n[1].items ?? []);
  if (!Array.isArray(v)) return null;
  const out: string[] = [];
  for (const item of v) {
    const s = stringNode(item);
    if (s === undefined) return null;
    out.push(s);
  }
  return out;
}

/** A RangeVar struct is recognised by its `relname` (no other raw parse node has one). */
export function isRangeVar(o: Obj): boolean {
  return typeof o.relname === 'string' && !('polname' in o);
}

/** The constant of an `A_Const` node (wrapped or bare): its text, or null for NULL. */
export function constValue(v: unknown): { value: string | null } | undefined {
  const body = nodeBody(v, 'A_Const');
  if (!body) return undefined;
  if (body.isnull === true) return { value: null };
  const s = body.sval;
  if (isObj(s)) return { value: str(s.sval) ?? '' };
  const i = body.ival;
  if (isObj(i)) return { value: String(typeof i.ival === 'number' ? i.ival : 0) };
  const f = body.fval;
  if (isObj(f)) return { value: str(f.fval) ?? '0' };
  const b = body.boolval;
  if (isObj(b)) return { value: b.boolval === true ? 'true' : 'false' };
  const bs = body.bsval;
  if (isObj(bs)) return { value: str(bs.bsval) ?? '' };
  return undefined;
}

/** A string constant, looking through a cast (`'x'::text`). undefined when not a constant. */
export function stringConst(v: unknown): { value: string | null } | undefined {
  const direct = constValue(v);
  if (direct) return direct;
  const cast = nodeBody(v, 'TypeCast');
  if (cast && asNode(v)) return constValue(cast.arg);
  return undefined;
}
