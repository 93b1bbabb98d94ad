// PostgreSQL types for masking: which category a type OID falls in, how to read a cell's value in
// text or binary format, and how to produce a masked value that is valid for the column's type.
//
// Two modes decide what happens when a strategy's output does not fit the type:
// - 'preserve' (default): the column keeps its type; a masked value the type cannot hold becomes
//   NULL (an int4 column under `redact` reads as NULL; under `hash` it reads as a deterministic
//   integer; a uuid under `hash` as a deterministic uuid; dates always NULL).
// - 'text': the proxy advertises `text` (OID 25) in RowDescription for such columns, and the
//   masked string forms are sent (`[REDACTED:ssn]` in an int column).
// `maskedTypeFor` tells the proxy which OID to advertise.

import type { MaskStrategy } from '../policy/types.js';
import { maskString, requireHasher, type Hasher } from './strategies.js';
import type { StrategySpec, TypeCategory } from './types.js';

export const TEXT_OID = 25;

export type TypeMode = 'preserve' | 'text';

const CATEGORY_BY_OID = new Map<number, TypeCategory>([
  [16, 'bool'],
  [17, 'bytea'],
  [18, 'char'],
  [19, 'text'], // name
  [20, 'int8'],
  [21, 'int2'],
  [22, 'array_other'], // int2vector
  [23, 'int4'],
  [24, 'oid'], // regproc
  [25, 'text'],
  [26, 'oid'],
  [27, 'other'], // tid
  [28, 'oid'], // xid
  [29, 'oid'], // cid
  [30, 'array_other'], // oidvector
  [114, 'json'],
  [142, 'xml'],
  [194, 'text'], // pg_node_tree
  [199, 'array_text'], // json[]
  [143, 'array_text'], // xml[]
  [600, 'other'],
  [601, 'other'],
  [602, 'other'],
  [603, 'other'],
  [604, 'other'],
  [628, 'other'],
  [718, 'other'],
  [650, 'inet'], // cidr
  [651, 'array_other'],
  [700, 'float4'],
  [701, 'float8'],
  [705, 'text'], // unknown (literals)
  [774, 'other'], // macaddr8
  [790, 'money'],
  [791, 'array_num'],
  [829, 'other'], // macaddr
  [869, 'inet'],
  [1000, 'array_other'], // bool[]
  [1001, 'array_other'], // bytea[]
  [1002, 'array_text'], // char[]
  [1003, 'array_text'], // name[]
  [1005, 'array_other'], // int2[]
  [1007, 'array_other'], // int4[]
  [1009, 'array_text'], // text[]
  [1014, 'array_text'], // bpchar[]
  [1015, 'array_text'], // varchar[]
  [1016, 'array_num'], // int8[]
  [1021, 'array_num'], // float4[]
  [1022, 'array_num'], // float8[]
  [1028, 'array_other'], // oid[]
  [1033, 'other'], // aclitem
  [1034, 'array_other'], // aclitem[]
  [1041, 'array_other'], // inet[]
  [1042, 'text'], // bpchar
  [1043, 'text'], // varchar
  [1082, 'datetime'], // date
  [1083, 'datetime'], // time
  [1114, 'datetime'], // timestamp
  [1115, 'array_other'],
  [1182, 'array_other'],
  [1183, 'array_other'],
  [1184, 'datetime'], // timestamptz
  [1185, 'array_other'],
  [1186, 'datetime'], // interval
  [1187, 'array_other'],
  [1231, 'array_num'], // numeric[]
  [1263, 'array_text'], // cstring[]
  [1266, 'datetime'], // timetz
  [1270, 'array_other'],
  [1560, 'other'], // bit
  [1562, 'other'], // varbit
  [1700, 'numeric'],
  [1790, 'text'], // refcursor
  [2202, 'oid'],
  [2203, 'oid'],
  [2204, 'oid'],
  [2205, 'oid'],
  [2206, 'oid'],
  [2950, 'uuid'],
  [2951, 'array_other'],
  [3220, 'other'], // pg_lsn
  [3614, 'unknown'], // tsvector: words, scanned as text
  [3615, 'unknown'], // tsquery
  [3734, 'oid'],
  [3769, 'oid'],
  [3802, 'jsonb'],
  [3807, 'array_text'], // jsonb[]
  [4072, 'unknown'], // jsonpath
  [4089, 'oid'],
  [4096, 'oid'],
  [5069, 'other'], // xid8
]);

/** The category of a type OID; `textOids` are extra OIDs to treat as text (citext, text domains). */
export function categoryOf(typeOid: number, textOids?: ReadonlySet<number>): TypeCategory {
  if (textOids?.has(typeOid)) return 'text';
  return CATEGORY_BY_OID.get(typeOid) ?? 'unknown';
}

/** Categories whose masked values are strings of the type itself (no NULL fallback needed). */
const STRING_VALUED: ReadonlySet<TypeCategory> = new Set<TypeCategory>(['text', 'json', 'jsonb', 'bytea']);

const INT_RE = /^-?\d+$/;
const NUM_RE = /^-?\d+(?:\.\d+)?$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const BOOL_VALUES = new Map([
  ['t', true],
  ['true', true],
  ['f', false],
  ['false', false],
]);

const INT_LIMITS: Partial<Record<TypeCategory, [bigint, bigint]>> = {
  int2: [-32768n, 32767n],
  int4: [-2147483648n, 2147483647n],
  int8: [-9223372036854775808n, 9223372036854775807n],
  oid: [0n, 4294967295n],
};

function fixedFits(category: TypeCategory, value: string): boolean {
  const lim = INT_LIMITS[category];
  if (lim) {
    if (!INT_RE.test(value)) return false;
    const v = BigInt(value);
    return v >= lim[0] && v <= lim[1];
  }
  switch (category) {
    case 'numeric':
      return NUM_RE.test(value) && value.length < 1000;
    case 'float4':
    case 'float8':
      return NUM_RE.test(value);
    case 'bool':
      return BOOL_VALUES.has(value.toLowerCase());
    case 'uuid':
      return UUID_RE.test(value);
    default:
      return false;
  }
}

/** Can a column of this category carry the strategy's output natively? */
export function nativeFits(category: TypeCategory, spec: StrategySpec | MaskStrategy): boolean {
  const s: StrategySpec = typeof spec === 'string' ? { strategy: spec } : spec;
  if (s.strategy === 'null') return true;
  if (STRING_VALUED.has(category)) return true;
  switch (category) {
    case 'int2':
    case 'int4':
    case 'int8':
    case 'oid':
    case 'numeric':
    case 'float4':
    case 'float8':
    case 'uuid':
      return s.strategy === 'hash' || (s.strategy === 'fixed' && fixedFits(category, s.value ?? ''));
    case 'bool':
      return s.strategy === 'fixed' && fixedFits(category, s.value ?? '');
    default:
      return false;
  }
}

/**
 * The type OID RowDescription must advertise for a column of `typeOid` masked with `spec`.
 * In 'preserve' mode only `"char"` (one byte) becomes text; in 'text' mode every column whose
 * type cannot hold the masked form becomes text (25).
 */
export function maskedTypeFor(
  typeOid: number,
  spec: StrategySpec | MaskStrategy,
  mode: TypeMode = 'preserve',
  textOids?: ReadonlySet<number>,
): number {
  const category = categoryOf(typeOid, textOids);
  const strategy = typeof spec === 'string' ? spec : spec.strategy;
  if (category === 'char') return strategy === 'null' ? typeOid : TEXT_OID;
  if (mode === 'preserve') return typeOid;
  return nativeFits(category, spec) ? typeOid : TEXT_OID;
}

// ---------------------------------------------------------------------------------------------
// reading cells

/** Decodes PostgreSQL's binary numeric to its text form. */
export function numericFromBinary(b: Buffer): string {
  if (b.length < 8) throw new RangeError('numeric: short value');
  const ndigits = b.readInt16BE(0);
  const weight = b.readInt16BE(2);
  const sign = b.readUInt16BE(4);
  const dscale = b.readInt16BE(6);
  if (sign === 0xc000) return 'NaN';
  if (sign === 0xd000) return 'Infinity';
  if (sign === 0xf000) return '-Infinity';
  if (ndigits < 0 || b.length < 8 + 2 * ndigits || dscale < 0 || dscale > 16383) throw new RangeError('numeric: malformed value');
  const digit = (i: number): number => (i >= 0 && i < ndigits ? b.readInt16BE(8 + 2 * i) : 0);
  let int = '';
  if (weight >= 0) {
    for (let i = 0; i <= weight; i++) int += i === 0 ? String(digit(i)) : String(digit(i)).padStart(4, '0');
  } else {
    int = '0';
  }
  let frac = '';
  for (let i = weight + 1; frac.length < dscale; i++) frac += String(digit(i)).padStart(4, '0');
  frac = frac.slice(0, dscale);
  const neg = sign === 0x4000 && /[1-9]/.test(int + frac);
  return (neg ? '-' : '') + int + (dscale > 0 ? '.' + frac : '');
}

/** Encodes a plain decimal string (`-12.345`) as PostgreSQL's binary numeric. */
export function numericToBinary(value: string): Buffer {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(value);
  if (!m) throw new RangeError(`numeric: not a plain decimal: ${value}`);
  const neg = m[1] === '-';
  const intPart = m[2]!.replace(/^0+/, '');
  const fracPart = m[3] ?? '';
  const dscale = fracPart.length;
  const intPadded = intPart.padStart(Math.ceil(intPart.length / 4) * 4, '0');
  const fracPadded = fracPart.padEnd(Math.ceil(fracPart.length / 4) * 4, '0');
  let digits: number[] = [];
  for (let i = 0; i < intPadded.length; i += 4) digits.push(Number(intPadded.slice(i, i + 4)));
  let weight = digits.length - 1;
  for (let i = 0; i < fracPadded.length; i += 4) digits.push(Number(fracPadded.slice(i, i + 4)));
  while (digits.length > 0 && digits[0] === 0) {
    digits.shift();
    weight--;
  }
  while (digits.length > 0 && digits[digits.length - 1] === 0) digits.pop();
  if (digits.length === 0) weight = 0;
  digits = digits.slice(0, 10000);
  const b = Buffer.alloc(8 + 2 * digits.length);
  b.writeInt16BE(digits.length, 0);
  b.writeInt16BE(weight, 2);
  b.writeUInt16BE(neg && digits.length > 0 ? 0x4000 : 0, 4);
  b.writeInt16BE(dscale, 6);
  digits.forEach((d, i) => b.writeInt16BE(d, 8 + 2 * i));
  return b;
}

function uuidFromBytes(b: Buffer): string {
  const h = b.toString('hex', 0, 16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function inetFromBinary(b: Buffer): string {
  const family = b[0];
  const bits = b[1]!;
  const isCidr = b[2] === 1;
  const nb = b[3]!;
  const addr = b.subarray(4, 4 + nb);
  let s: string;
  if (family === 2 && nb === 4) {
    s = Array.from(addr).join('.');
    if (isCidr || bits !== 32) s += `/${bits}`;
  } else if (family === 3 && nb === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(addr.readUInt16BE(i).toString(16));
    s = groups.join(':');
    if (isCidr || bits !== 128) s += `/${bits}`;
  } else {
    throw new RangeError('inet: malformed value');
  }
  return s;
}

/** Decodes a bytea text-format value (`\x…` hex or the escape format) to its bytes. */
export function byteaFromText(s: string): Buffer {
  if (s.startsWith('\\x')) return Buffer.from(s.slice(2), 'hex');
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 92) {
      if (s.charCodeAt(i + 1) === 92) {
        out.push(92);
        i++;
      } else {
        out.push(parseInt(s.slice(i + 1, i + 4), 8) & 0xff);
        i += 3;
      }
    } else {
      out.push(c & 0xff);
    }
  }
  return Buffer.from(out);
}

export function byteaToText(b: Buffer): string {
  return '\\x' + b.toString('hex');
}

/**
 * The canonical text form of a cell (what the text format would carry), or null when the binary
 * format of this category is not decoded (arrays, unknown types, dates: nothing to detect there).
 */
export function cellText(category: TypeCategory, binary: boolean, cell: Buffer): string | null {
  if (!binary) {
    return category === 'char' ? cell.toString('latin1') : cell.toString('utf8');
  }
  switch (category) {
    case 'text':
    case 'json':
    case 'xml':
      return cell.toString('utf8');
    case 'char':
      return cell.toString('latin1');
    case 'jsonb':
      if (cell.length < 1 || cell[0] !== 1) return null;
      return cell.toString('utf8', 1);
    case 'int2':
      return cell.length === 2 ? String(cell.readInt16BE(0)) : null;
    case 'int4':
      return cell.length === 4 ? String(cell.readInt32BE(0)) : null;
    case 'int8':
      return cell.length === 8 ? cell.readBigInt64BE(0).toString() : null;
    case 'oid':
      return cell.length === 4 ? String(cell.readUInt32BE(0)) : null;
    case 'float4':
      return cell.length === 4 ? String(cell.readFloatBE(0)) : null;
    case 'float8':
      return cell.length === 8 ? String(cell.readDoubleBE(0)) : null;
    case 'money':
      return cell.length === 8 ? cell.readBigInt64BE(0).toString() : null;
    case 'numeric':
      return numericFromBinary(cell);
    case 'bool':
      return cell.length === 1 ? (cell[0] ? 't' : 'f') : null;
    case 'uuid':
      return cell.length === 16 ? uuidFromBytes(cell) : null;
    case 'bytea':
      return byteaToText(cell);
    case 'inet':
      return inetFromBinary(cell);
    default:
      return null;
  }
}

/** Bytes of a bytea cell (either format). */
export function byteaBytes(binary: boolean, cell: Buffer): Buffer {
  return binary ? cell : byteaFromText(cell.toString('latin1'));
}

// ---------------------------------------------------------------------------------------------
// writing masked cells

function intFromDigest(d: Buffer, category: TypeCategory): bigint {
  switch (category) {
    case 'int2':
      return BigInt(d.readUInt16BE(0) & 0x7fff);
    case 'int4':
      return BigInt(d.readUInt32BE(0) & 0x7fffffff);
    case 'oid':
      return BigInt(d.readUInt32BE(0));
    case 'int8':
      return d.readBigUInt64BE(0) & 0x7fffffffffffffffn;
    case 'float4':
      return BigInt(d.readUIntBE(0, 3)); // < 2^24: exact in float4
    default:
      return BigInt(d.readUIntBE(0, 6)); // < 2^48: exact in float8 and numeric
  }
}

function encodeNumber(category: TypeCategory, binary: boolean, text: string): Buffer {
  if (!binary) return Buffer.from(text, 'latin1');
  switch (category) {
    case 'int2': {
      const b = Buffer.alloc(2);
      b.writeInt16BE(Number(text));
      return b;
    }
    case 'int4': {
      const b = Buffer.alloc(4);
      b.writeInt32BE(Number(text));
      return b;
    }
    case 'oid': {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(Number(text));
      return b;
    }
    case 'int8': {
      const b = Buffer.alloc(8);
      b.writeBigInt64BE(BigInt(text));
      return b;
    }
    case 'float4': {
      const b = Buffer.alloc(4);
      b.writeFloatBE(Number(text));
      return b;
    }
    case 'float8': {
      const b = Buffer.alloc(8);
      b.writeDoubleBE(Number(text));
      return b;
    }
    default:
      return numericToBinary(text);
  }
}

function encodeUuid(binary: boolean, uuid: string): Buffer {
  return binary ? Buffer.from(uuid.replace(/-/g, ''), 'hex') : Buffer.from(uuid.toLowerCase(), 'latin1');
}

function encodeString(category: TypeCategory, binary: boolean, s: string): Buffer {
  switch (category) {
    case 'json':
      return Buffer.from(JSON.stringify(s), 'utf8');
    case 'jsonb': {
      const j = Buffer.from(JSON.stringify(s), 'utf8');
      return binary ? Buffer.concat([Buffer.from([1]), j]) : j;
    }
    case 'bytea': {
      const raw = Buffer.from(s, 'utf8');
      return binary ? raw : Buffer.from(byteaToText(raw), 'latin1');
    }
    default:
      return Buffer.from(s, 'utf8');
  }
}

/** Thrown (as a value) when a strategy needs the value but the cell could not be read. */
export const NEED_VALUE = Symbol('need-value');

/**
 * Masks a whole cell for a column of `category`, returning bytes valid for the advertised type
 * (see maskedTypeFor) in the cell's format, or null for SQL NULL. `text` is the cell's canonical
 * text form, or null when it could not be decoded (then only value-independent strategies work
 * and NEED_VALUE is returned otherwise).
 */
export function maskCell(
  category: TypeCategory,
  binary: boolean,
  text: string | null,
  spec: StrategySpec,
  label: string,
  hasher: Hasher | undefined,
  mode: TypeMode,
): Buffer | null | typeof NEED_VALUE {
  const strategy = spec.strategy;
  if (strategy === 'null') return null;
  const valueNeeded = strategy === 'partial' || strategy === 'last4' || strategy === 'hash';
  if (valueNeeded && text === null) return NEED_VALUE;
  const asString = (): string | null => maskString(text ?? '', spec, label, 'auto', hasher);
  if (STRING_VALUED.has(category) || category === 'char') {
    if (category === 'bytea' && strategy === 'hash') {
      const d = requireHasher(hasher, label).digest(text ?? '').subarray(0, 8);
      return binary ? Buffer.from(d) : Buffer.from(byteaToText(d), 'latin1');
    }
    const s = asString();
    return s === null ? null : encodeString(category, binary, s);
  }
  if (nativeFits(category, spec)) {
    if (strategy === 'hash') {
      const d = requireHasher(hasher, label).digest(text ?? '');
      if (category === 'uuid') {
        const b = Buffer.from(d.subarray(0, 16));
        b[6] = (b[6]! & 0x0f) | 0x80; // version 8 (custom)
        b[8] = (b[8]! & 0x3f) | 0x80; // RFC 4122 variant
        return encodeUuid(binary, uuidFromBytes(b));
      }
      return encodeNumber(category, binary, intFromDigest(d, category).toString());
    }
    if (strategy === 'fixed') {
      const v = spec.value ?? '';
      if (category === 'uuid') return encodeUuid(binary, v);
      if (category === 'bool') {
        const t = BOOL_VALUES.get(v.toLowerCase()) === true;
        return binary ? Buffer.from([t ? 1 : 0]) : Buffer.from(t ? 't' : 'f', 'latin1');
      }
      return encodeNumber(category, binary, v);
    }
  }
  if (mode === 'text') {
    const s = asString();
    return s === null ? null : Buffer.from(s, 'utf8');
  }
  return null;
}
