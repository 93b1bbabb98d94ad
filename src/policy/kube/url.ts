// Path and query decoding for Kubernetes requests, with the semantics of Go's net/url (what the
// API server reads), and a strict canonical-form check on the path.

import { PortcullisError } from '../types.js';

/** A path made only of RFC 3986 pchar characters and `/` (escapes are checked separately). */
const RAW_PATH = /^[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$/;
const UTF8 = new TextDecoder('utf-8', { fatal: true });
const UTF8_LENIENT = new TextDecoder('utf-8');

function noncanonical(path: string, why: string): PortcullisError {
  return new PortcullisError('kube_noncanonical_path', `kubernetes request: path ${JSON.stringify(path)} is not canonical: ${why}`, { path, why });
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

/**
 * Percent-decodes `s` into bytes. `plusIsSpace` for query components. Returns null on a malformed
 * escape (as Go's url.PathUnescape / QueryUnescape fail).
 */
function percentDecode(s: string, plusIsSpace: boolean): Uint8Array | null {
  const raw = Buffer.from(s, 'utf8');
  const out = new Uint8Array(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === 0x25 /* % */) {
      if (i + 2 >= raw.length) return null;
      const hi = hexValue(raw[i + 1]);
      const lo = hexValue(raw[i + 2]);
      if (hi < 0 || lo < 0) return null;
      out[n++] = hi * 16 + lo;
      i += 2;
    } else if (c === 0x2b /* + */ && plusIsSpace) {
      out[n++] = 0x20;
    } else {
      out[n++] = c;
    }
  }
  return out.subarray(0, n);
}

/**
 * Splits an absolute request path into decoded segments, refusing anything that is not in
 * canonical form: not starting with `/`; an empty segment (`//`, a trailing `/`); a `.` or `..`
 * segment, raw or percent-encoded; an encoded `/` or `\` (`%2f`, `%5c`); a raw `\`; NUL or any
 * other control character, raw or encoded; a malformed escape or one that is not UTF-8; a raw
 * character outside RFC 3986 `pchar`. `/` alone gives no segments.
 */
export function decodePathSegments(path: string): string[] {
  if (!path.startsWith('/')) throw noncanonical(path, 'it does not start with /');
  if (path === '/') return [];
  if (!RAW_PATH.test(path)) {
    if (path.includes('\\')) throw noncanonical(path, 'it contains a backslash');
    if (path.includes('\u0000')) throw noncanonical(path, 'it contains NUL');
    const ch = [...path].find((c) => !RAW_PATH.test(c)) ?? '';
    throw noncanonical(path, `it contains the raw character ${JSON.stringify(ch)}`);
  }
  const rawSegments = path.slice(1).split('/');
  const segments: string[] = [];
  for (const raw of rawSegments) {
    if (raw === '') throw noncanonical(path, 'it has an empty segment (// or a trailing /)');
    if (!raw.includes('%')) {
      if (raw === '.' || raw === '..') throw noncanonical(path, `it has a ${JSON.stringify(raw)} segment`);
      segments.push(raw);
      continue;
    }
    if (/%(2f|5c|00)/i.test(raw)) throw noncanonical(path, `segment ${JSON.stringify(raw)} has an encoded slash, backslash or NUL`);
    const bytes = percentDecode(raw, false);
    if (bytes === null) throw noncanonical(path, `segment ${JSON.stringify(raw)} has a malformed percent escape`);
    let seg: string;
    try {
      seg = UTF8.decode(bytes);
    } catch {
      throw noncanonical(path, `segment ${JSON.stringify(raw)} does not decode to UTF-8`);
    }
    if (seg === '.' || seg === '..') throw noncanonical(path, `it has a ${JSON.stringify(seg)} segment`);
    // eslint-disable-next-line no-control-regex -- refusing control characters is the point
    if (/[\u0000-\u001f\u007f\\/]/.test(seg)) throw noncanonical(path, `segment ${JSON.stringify(raw)} decodes to a control character, slash or backslash`);
    segments.push(seg);
  }
  return segments;
}

/** Go's url.QueryUnescape; null on a malformed escape. Invalid UTF-8 becomes U+FFFD. */
function queryUnescape(s: string): string | null {
  if (!s.includes('%') && !s.includes('+')) return s;
  const bytes = percentDecode(s, true);
  return bytes === null ? null : UTF8_LENIENT.decode(bytes);
}

/**
 * Parses a query string as Go's url.ParseQuery (which the API server uses through URL.Query()):
 * pairs split on `&`; a pair containing `;` is dropped; `+` is a space; a pair with a malformed
 * escape is dropped; a key without `=` has the value "". Values keep their order.
 */
export function parseQuery(raw: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  if (raw.startsWith('?')) raw = raw.slice(1);
  if (raw === '') return out;
  const pairs = raw.split('&');
  for (const pair of pairs) {
    if (pair === '' || pair.includes(';')) continue;
    const eq = pair.indexOf('=');
    const rawKey = eq === -1 ? pair : pair.slice(0, eq);
    const rawValue = eq === -1 ? '' : pair.slice(eq + 1);
    const key = queryUnescape(rawKey);
    const value = queryUnescape(rawValue);
    if (key === null || value === null) continue;
    if (Object.prototype.hasOwnProperty.call(out, key)) {
      out[key].push(value);
    } else {
      // defineProperty: a key such as `__proto__` becomes an own property, not the prototype.
      Object.defineProperty(out, key, { value: [value], enumerable: true, writable: true, configurable: true });
    }
  }
  return out;
}
