// Masking strategies on string values: redact, partial, last4, hash, null, fixed.
//
// - redact  → `[REDACTED:<label>]` (label = detector id, or the column name)
// - partial → keep the first / last n: emails as `j***@example.com`; digit-shaped values (cards,
//             phones, IBANs…) keep their separators and replace each hidden letter or digit with
//             `*` (`**** **** **** 4242`); anything else as `<first>***<last>`. When the kept
//             characters would be all of the value, everything is hidden.
// - last4   → every letter and digit replaced by `*` except the last 4 digits (separators kept);
//             at most half of the digits are ever kept (a `*` counts as a hidden digit, so
//             masking twice changes nothing), so short values are hidden entirely.
// - hash    → HMAC-SHA-256 under the bastion key, hex, first 16 characters: equal inputs give
//             equal outputs (joins and comparisons keep working), without the key nothing leaks.
// - null    → SQL NULL for cells; the empty string inside text.
// - fixed   → the rule's `value`.

import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';
import { PortcullisError } from '../policy/types.js';
import type { DetectorStyle, StrategySpec } from './types.js';

/** HMAC-SHA-256 under the bastion's masking key. */
export class Hasher {
  private readonly key: KeyObject;

  constructor(key: string | Buffer) {
    const buf = typeof key === 'string' ? Buffer.from(key, 'utf8') : key;
    if (buf.length < 16) {
      throw new PortcullisError('mask_hmac_key_short', `masking HMAC key is ${buf.length} bytes; at least 16 are required`, {
        length: buf.length,
      });
    }
    this.key = createSecretKey(Buffer.from(buf));
  }

  digest(value: string | Buffer): Buffer {
    return createHmac('sha256', this.key).update(value).digest();
  }

  /** The first 16 hex characters of the HMAC: stable across calls and processes with the same key. */
  hex16(value: string | Buffer): string {
    return this.digest(value).toString('hex', 0, 8);
  }
}

export function requireHasher(hasher: Hasher | undefined, label: string): Hasher {
  if (!hasher) {
    throw new PortcullisError('mask_no_hmac_key', `mask for ${label} uses strategy hash but no HMAC key was configured`, {
      label,
    });
  }
  return hasher;
}

export function redactMarker(label: string): string {
  return `[REDACTED:${label}]`;
}

function isAsciiAlnum(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

const LETTER_OR_NUMBER = /^[\p{L}\p{N}]$/u;

/** A letter or digit in any script (code point string). */
function isAlnumChar(ch: string): boolean {
  const c = ch.charCodeAt(0);
  if (c < 128) return isAsciiAlnum(c);
  return LETTER_OR_NUMBER.test(ch);
}

function isDigitChar(ch: string): boolean {
  const c = ch.charCodeAt(0);
  return c >= 48 && c <= 57;
}

/**
 * Replaces letters and digits by `*` except the first `keepFirst` and last `keepLast` of them;
 * every other character (separators) is kept. If nothing would be hidden, everything is.
 */
export function maskAlnum(value: string, keepFirst: number, keepLast: number): string {
  const chars = Array.from(value);
  let count = 0;
  for (const ch of chars) if (isAlnumChar(ch)) count++;
  if (keepFirst + keepLast >= count) {
    keepFirst = 0;
    keepLast = 0;
  }
  let idx = 0;
  let out = '';
  for (const ch of chars) {
    if (isAlnumChar(ch)) {
      out += idx < keepFirst || idx >= count - keepLast ? ch : '*';
      idx++;
    } else {
      out += ch;
    }
  }
  return out;
}

// eslint-disable-next-line no-control-regex -- ASCII test
const ASCII = /^[\x00-\x7f]*$/;

/** Every letter and digit becomes `*` except the last four digits (at most half of the digits). */
export function maskLast4(value: string): string {
  if (ASCII.test(value)) return maskLast4Bytes(Buffer.from(value, 'latin1'))!.toString('latin1');
  const chars = Array.from(value);
  let digits = 0;
  for (const ch of chars) if (isDigitChar(ch) || ch === '*') digits++;
  let keep = Math.min(4, Math.floor(digits / 2));
  const out: string[] = new Array<string>(chars.length);
  for (let i = chars.length - 1; i >= 0; i--) {
    const ch = chars[i]!;
    if (isDigitChar(ch) && keep > 0) {
      out[i] = ch;
      keep--;
    } else {
      out[i] = isAlnumChar(ch) ? '*' : ch;
    }
  }
  return out.join('');
}

/** maskLast4 on the bytes of an ASCII value (a row cell), or null when the value is not ASCII. */
export function maskLast4Bytes(cell: Buffer): Buffer | null {
  const n = cell.length;
  let digits = 0;
  for (let i = 0; i < n; i++) {
    const c = cell[i]!;
    if (c >= 0x80) return null;
    if ((c >= 48 && c <= 57) || c === 42) digits++; // '*': a digit hidden by an earlier mask
  }
  let keep = Math.min(4, digits >> 1);
  const out = Buffer.allocUnsafe(n);
  for (let i = n - 1; i >= 0; i--) {
    const c = cell[i]!;
    if (c >= 48 && c <= 57 && keep > 0) {
      out[i] = c;
      keep--;
    } else {
      out[i] = isAsciiAlnum(c) ? 42 : c;
    }
  }
  return out;
}

const EMAIL_SHAPE = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
const DIGITS_SHAPE = /^[\d\s().+\-/]*\d[\d\s().+\-/]*$/;

/** How to apply `partial` to a value whose detector is not known (column rules). */
export function inferStyle(value: string): DetectorStyle {
  if (EMAIL_SHAPE.test(value)) return 'email';
  if (DIGITS_SHAPE.test(value)) return 'digits';
  return 'token';
}

export function maskPartial(value: string, style: DetectorStyle, keepFirst: number | undefined, keepLast: number | undefined): string {
  if (style === 'email') {
    const at = value.lastIndexOf('@');
    if (at > 0) {
      const kf = keepFirst ?? 1;
      const localStr = value.slice(0, at);
      if (ASCII.test(localStr)) return `${localStr.length > kf ? localStr.slice(0, kf) : ''}***${value.slice(at)}`;
      const local = Array.from(localStr);
      const kept = local.length > kf ? local.slice(0, kf).join('') : '';
      return `${kept}***${value.slice(at)}`;
    }
    style = 'token';
  }
  if (style === 'digits') return maskAlnum(value, keepFirst ?? 0, keepLast ?? 4);
  const chars = Array.from(value);
  const kf = keepFirst ?? 1;
  const kl = keepLast ?? 0;
  if (chars.length <= kf + kl || kf + kl === 0) return '***';
  return chars.slice(0, kf).join('') + '***' + (kl > 0 ? chars.slice(chars.length - kl).join('') : '');
}

/**
 * Applies a strategy to a string value. `style` tells `partial` how the value is shaped ('auto'
 * infers it); `defaults` are the detector's keepFirst/keepLast when the rule gives none.
 * Returns null for strategy `null`.
 */
export function maskString(
  value: string,
  spec: StrategySpec,
  label: string,
  style: DetectorStyle | 'auto',
  hasher: Hasher | undefined,
  defaults?: { keepFirst: number; keepLast: number },
): string | null {
  switch (spec.strategy) {
    case 'redact':
      return redactMarker(label);
    case 'partial': {
      const st = style === 'auto' ? inferStyle(value) : style;
      const useDefaults = style !== 'auto' && defaults !== undefined;
      return maskPartial(
        value,
        st,
        spec.keepFirst ?? (useDefaults ? defaults.keepFirst : undefined),
        spec.keepLast ?? (useDefaults ? defaults.keepLast : undefined),
      );
    }
    case 'last4':
      return maskLast4(value);
    case 'hash':
      return requireHasher(hasher, label).hex16(value);
    case 'null':
      return null;
    case 'fixed':
      return spec.value ?? '';
    default: {
      const s: never = spec.strategy;
      throw new PortcullisError('mask_bad_strategy', `unknown masking strategy ${String(s)} for ${label}`, { label });
    }
  }
}

/** Does this strategy keep the value's length (so a tail of it can continue a masked prefix)? */
export function lengthPreserving(spec: StrategySpec, style: DetectorStyle): boolean {
  return spec.strategy === 'last4' || (spec.strategy === 'partial' && style === 'digits');
}
