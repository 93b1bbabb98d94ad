// Canonical JSON: object keys sorted by UTF-16 code unit order, no whitespace, JSON's own
// formatting for strings and numbers. Used to hash audit events: the same value always gives the
// same bytes, and `canonicalJson(JSON.parse(canonicalJson(v))) === canonicalJson(v)` for every
// value it accepts (so a line read back from disk hashes exactly as it did when written).
//
// Follows JSON.stringify's rules for what it cannot represent: `undefined`, functions and symbols
// are dropped from objects and become `null` in arrays; non-finite numbers become `null`; objects
// with `toJSON` (Date) are replaced by its result. BigInt and cycles are refused.

import { PortcullisError } from '../policy/types.js';

const MAX_DEPTH = 256;

export function canonicalJson(value: unknown): string {
  const out = encode(value, 0, new Set<object>());
  if (out === undefined) {
    throw new PortcullisError('canonical_json_unsupported', `canonical JSON: top-level value of type ${typeof value} has no JSON form`);
  }
  return out;
}

function encode(value: unknown, depth: number, seen: Set<object>): string | undefined {
  if (depth > MAX_DEPTH) {
    throw new PortcullisError('canonical_json_too_deep', `canonical JSON: nesting deeper than ${MAX_DEPTH} levels`);
  }
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? JSON.stringify(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
    case 'bigint':
      throw new PortcullisError('canonical_json_unsupported', 'canonical JSON: BigInt values are not supported');
    case 'object':
      break;
  }
  if (value === null) return 'null';
  const obj = value as object;
  const withToJson = obj as { toJSON?: unknown };
  if (typeof withToJson.toJSON === 'function') {
    return encode((withToJson.toJSON as () => unknown).call(obj), depth + 1, seen);
  }
  if (seen.has(obj)) {
    throw new PortcullisError('canonical_json_cycle', 'canonical JSON: the value contains a cycle');
  }
  seen.add(obj);
  try {
    // String concatenation rather than arrays + join: this runs for every audit event.
    if (Array.isArray(obj)) {
      const arr = obj as unknown[];
      let out = '[';
      for (let i = 0; i < arr.length; i++) {
        if (i > 0) out += ',';
        out += encode(arr[i], depth + 1, seen) ?? 'null';
      }
      return `${out}]`;
    }
    const record = obj as Record<string, unknown>;
    const keys = Object.keys(record).sort();
    let out = '{';
    let first = true;
    for (const key of keys) {
      const encoded = encode(record[key], depth + 1, seen);
      if (encoded === undefined) continue;
      out += first ? `${JSON.stringify(key)}:${encoded}` : `,${JSON.stringify(key)}:${encoded}`;
      first = false;
    }
    return `${out}}`;
  } finally {
    seen.delete(obj);
  }
}
