// Detectors: find sensitive values in text, validated rather than merely pattern-shaped.
//
// Every detector works on a JS string whose characters are either UTF-16 text or bytes decoded
// as latin1 (the stream and row maskers decode that way so that string offsets are byte offsets).
// Matches only ever consist of ASCII characters, except secret values (secret_assignment), whose
// spans are aligned to UTF-8 character boundaries by the callers that work on bytes.
//
// A detector reports complete matches with `sink.found(start, end)`; when asked (`wantTails`, the
// stream masker) it also reports trailing candidates that later input could complete: `weak` while
// the candidate carries nothing distinctive yet (up to 5 digits, a word without `@`, a token's
// literal prefix), `strong` once it does. See stream.ts for how the hold-back uses them.

import { isIPv6 } from 'node:net';
import type { DetectorId, DetectorStyle, ScanSink, TypeCategory } from './types.js';

export interface Detector {
  readonly id: DetectorId;
  readonly title: string;
  /** What this detector is known to flag wrongly (or miss), for policy authors. */
  readonly falsePositives: string;
  /** Runs when masking is applied without an explicit detector list (logs, audit, recordings). */
  readonly defaultOn: boolean;
  readonly style: DetectorStyle;
  /** `partial` defaults when a rule gives no keepFirst / keepLast. */
  readonly keepFirst: number;
  readonly keepLast: number;
  /** PostgreSQL type categories whose values this detector inspects. */
  readonly scans: ReadonlySet<TypeCategory>;
  /** Fewest ASCII digits a match contains (a cheap pre-filter for row cells); 0 = no bound. */
  readonly minDigits: number;
  /** A byte every match contains (pre-filter), or -1. */
  readonly needsByte: number;
  /**
   * How the detector finds candidates (see Scanner): `anchor` lists regex fragments (first
   * character class, rest; no flags, no capture groups) for where a candidate starts; all
   * detectors' anchors are searched in one pass, grouped by first character, and
   * `atAnchor` is called at each; `inWindow` is called for windows around runs of 9+ digits;
   * `own` scans the whole text itself (indexOf-based); `tail` reports trailing candidates.
   */
  readonly anchor?: readonly (readonly [first: string, rest: string])[];
  readonly atAnchor?: (text: string, at: number, sink: ScanSink) => void;
  readonly inWindow?: (text: string, from: number, to: number, sink: ScanSink, slice: string) => void;
  readonly own?: (text: string, sink: ScanSink) => void;
  readonly tail?: (text: string, sink: ScanSink) => void;
  /** Scans a text with this detector alone. */
  scan(text: string, sink: ScanSink): void;
  /**
   * Stream continuation after a candidate was masked while still incomplete: how far
   * `text[from..]` continues it. `done` when a character that cannot belong to it was reached.
   */
  continueRun(text: string, from: number): { end: number; done: boolean };
}

/** Anchor fragments: [first character (class), rest of the regex]. */
type Anchor = readonly (readonly [string, string])[];

// ---------------------------------------------------------------------------------------------
// character helpers

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}
function isUpper(c: number): boolean {
  return c >= 65 && c <= 90;
}
function isLower(c: number): boolean {
  return c >= 97 && c <= 122;
}
function isAlpha(c: number): boolean {
  return isUpper(c) || isLower(c);
}
function isAlnum(c: number): boolean {
  return isDigit(c) || isAlpha(c);
}
function isHex(c: number): boolean {
  return isDigit(c) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
}
function isB64url(c: number): boolean {
  return isAlnum(c) || c === 45 /* - */ || c === 95 /* _ */;
}
function isB64(c: number): boolean {
  return isAlnum(c) || c === 43 /* + */ || c === 47 /* / */;
}

/** The longest run of characters satisfying `ok` that ends at `end`, scanned back at most `max`. */
function runStart(text: string, end: number, ok: (c: number) => boolean, max: number): number {
  let j = end;
  const stop = Math.max(0, end - max);
  while (j > stop && ok(text.charCodeAt(j - 1))) j--;
  return j;
}

/**
 * Runs a global regex over text[from, to) and calls `on` with absolute match offsets. A match at
 * the very start of a window that does not start the text is skipped: its lookbehind could not
 * see the real preceding character (windows have margins, so real candidates start later).
 */
function eachInWindow(
  re: RegExp,
  text: string,
  from: number,
  to: number,
  on: (start: number, m: RegExpExecArray) => number | void,
  slice?: string,
): void {
  const s = slice ?? text.slice(from, to);
  re.lastIndex = 0;
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    if (m.index === 0 && from > 0) {
      re.lastIndex = 1;
      continue;
    }
    const next = on(from + m.index, m);
    if (typeof next === 'number') re.lastIndex = next - from;
    if (re.lastIndex === m.index) re.lastIndex++;
  }
}

function continueWhile(text: string, from: number, ok: (c: number) => boolean): { end: number; done: boolean } {
  let i = from;
  const n = text.length;
  while (i < n && ok(text.charCodeAt(i))) i++;
  return { end: i, done: i < n };
}

// ---------------------------------------------------------------------------------------------
// payment cards

/** Issuer identification ranges: [low prefix, high prefix, min length, max length]. */
const IIN_RANGES: readonly (readonly [string, string, number, number])[] = [
  ['4', '4', 13, 19], // Visa, Visa Electron
  ['51', '55', 16, 16], // Mastercard
  ['2221', '2720', 16, 16], // Mastercard 2-series
  ['34', '34', 15, 15], // American Express
  ['37', '37', 15, 15],
  ['6011', '6011', 16, 19], // Discover
  ['644', '649', 16, 19],
  ['65', '65', 16, 19], // Discover, RuPay, Troy
  ['3528', '3589', 16, 19], // JCB
  ['300', '305', 14, 19], // Diners Club
  ['3095', '3095', 14, 19],
  ['36', '36', 14, 19],
  ['38', '39', 16, 19],
  ['62', '62', 16, 19], // UnionPay (and Discover co-brands 622126-622925)
  ['81', '81', 16, 19], // UnionPay 81xx
  ['50', '50', 13, 19], // Maestro
  ['56', '58', 13, 19],
  ['6304', '6304', 13, 19],
  ['6759', '6759', 13, 19],
  ['676', '676', 13, 19],
  ['67', '67', 13, 19],
  ['2200', '2204', 16, 19], // Mir
  ['60', '60', 16, 19], // RuPay
  ['508', '508', 16, 16],
  ['82', '82', 16, 16],
  ['353', '353', 16, 16],
  ['356', '356', 16, 16],
  ['637', '639', 16, 16], // InstaPayment
  ['9792', '9792', 16, 16], // Troy
];

/** Luhn (mod 10) check over a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return digits.length > 0 && sum % 10 === 0;
}

/** The digits are a known issuer's range with a length that issuer uses. */
export function iinValid(digits: string): boolean {
  const len = digits.length;
  for (const [lo, hi, min, max] of IIN_RANGES) {
    if (len < min || len > max) continue;
    const p = digits.slice(0, lo.length);
    if (p >= lo && p <= hi) return true;
  }
  return false;
}

/** Some issuer's range starts with these (possibly few) digits. */
export function iinPlausiblePrefix(digits: string): boolean {
  const dl = digits.length;
  for (const [lo, hi] of IIN_RANGES) {
    if (dl >= lo.length) {
      const p = digits.slice(0, lo.length);
      if (p >= lo && p <= hi) return true;
    } else if (digits >= lo.slice(0, dl) && digits <= hi.slice(0, dl)) {
      return true;
    }
  }
  return false;
}

/** A 13–19 digit string that passes Luhn and belongs to a known issuer range. */
export function isCardNumber(digits: string): boolean {
  return digits.length >= 13 && digits.length <= 19 && iinValid(digits) && luhnValid(digits);
}

function isCardSep(c: number): boolean {
  return c === 32 || c === 45;
}

const CARD_RUN = /(?<!\d)\d(?:[ -]?\d){12,}/g;

/**
 * Group lengths of a separated card: first 4–6, middle 3–6, last 1–6 (4-4-4-4, 4-6-5, 4-6-4,
 * 4-4-4-4-3, 4-4-4-1…). `groups` holds [start, end) pairs; checks groups a..b inclusive.
 */
function cardGroupsOk(groups: number[], a: number, b: number): boolean {
  if (a === b) return true;
  for (let k = a; k <= b; k++) {
    const len = groups[2 * k + 1]! - groups[2 * k]!;
    if (k === a) {
      if (len < 4 || len > 6) return false;
    } else if (k === b) {
      if (len < 1 || len > 6) return false;
    } else if (len < 3 || len > 6) {
      return false;
    }
  }
  return true;
}

function digitsIn(text: string, from: number, to: number): string {
  let s = '';
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (isDigit(c)) s += text[i];
  }
  return s;
}

function cardsInRun(text: string, s: number, e: number, sink: ScanSink): void {
  const groups: number[] = [];
  let i = s;
  while (i < e) {
    const gs = i;
    while (i < e && isDigit(text.charCodeAt(i))) i++;
    groups.push(gs, i);
    i++; // the single separator
  }
  const n = groups.length / 2;
  for (let a = 0; a < n; ) {
    let digits = 0;
    let best = -1;
    for (let b = a; b < n; b++) {
      digits += groups[2 * b + 1]! - groups[2 * b]!;
      if (digits > 19) break;
      if (digits >= 13 && cardGroupsOk(groups, a, b) && isCardNumber(digitsIn(text, groups[2 * a]!, groups[2 * b + 1]!))) {
        best = b;
      }
    }
    if (best >= 0) {
      sink.found(groups[2 * a]!, groups[2 * best + 1]!, 'card');
      a = best + 1;
    } else {
      a++;
    }
  }
}

function cardTail(text: string, sink: ScanSink): void {
  const n = text.length;
  let i = n;
  if (i >= 2 && isCardSep(text.charCodeAt(i - 1)) && isDigit(text.charCodeAt(i - 2))) i--;
  if (i === 0 || !isDigit(text.charCodeAt(i - 1))) return;
  // groups, last first
  const gs: number[] = [];
  const ge: number[] = [];
  let j = i;
  let total = 0;
  for (let guard = 0; guard < 24; guard++) {
    const end = j;
    while (j > 0 && isDigit(text.charCodeAt(j - 1)) && end - j < 20) j--;
    if (end - j >= 20) break; // a group of 20+ digits: no card starts at or before it
    gs.push(j);
    ge.push(end);
    total += end - j;
    if (total > 19) break;
    if (j >= 2 && isCardSep(text.charCodeAt(j - 1)) && isDigit(text.charCodeAt(j - 2))) {
      j--;
      continue;
    }
    break;
  }
  let digits = 0;
  let weak = -1;
  let strong = -1;
  // candidate starting at group k (k = gs.length-1 is the earliest) covers groups k..0
  const sums: number[] = [];
  for (let k = 0; k < gs.length; k++) {
    digits += ge[k]! - gs[k]!;
    sums.push(digits);
  }
  for (let k = gs.length - 1; k >= 0; k--) {
    if (sums[k]! > 19) continue;
    if (k > 0) {
      const first = ge[k]! - gs[k]!;
      if (first < 4 || first > 6) continue;
      let ok = true;
      for (let t = k - 1; t >= 1; t--) {
        const len = ge[t]! - gs[t]!;
        if (len < 3 || len > 6) ok = false;
      }
      if (ge[0]! - gs[0]! > 6) ok = false;
      if (!ok) continue;
    }
    if (weak < 0) weak = gs[k]!;
    if (strong < 0 && sums[k]! >= 6 && iinPlausiblePrefix(digitsIn(text, gs[k]!, gs[k]! + 12).slice(0, 6))) {
      strong = gs[k]!;
    }
  }
  if (strong >= 0) sink.tail(strong, true, 'card');
  if (weak >= 0 && weak !== strong) sink.tail(weak, false, 'card');
}

function cardWindow(text: string, from: number, to: number, sink: ScanSink, slice?: string): void {
  eachInWindow(CARD_RUN, text, from, to, (start, m) => cardsInRun(text, start, start + m[0].length, sink), slice);
}

// ---------------------------------------------------------------------------------------------
// fixed-layout tails (SSN, national phone numbers): is text[p..] a prefix of a template?
// Template characters: 'D' a digit, anything else itself.

function templateTail(
  text: string,
  templates: readonly string[],
  strongDigits: number,
  id: DetectorId,
  sink: ScanSink,
  boundaryOk: (c: number) => boolean,
): void {
  const n = text.length;
  if (n === 0) return;
  const last = text.charCodeAt(n - 1);
  if (!(isDigit(last) || last === 32 || last === 40 || last === 41 || last === 45 || last === 46)) return;
  let maxLen = 0;
  for (const t of templates) maxLen = Math.max(maxLen, t.length);
  for (let p = Math.max(0, n - maxLen); p < n; p++) {
    if (p > 0 && !boundaryOk(text.charCodeAt(p - 1))) continue;
    for (const t of templates) {
      if (n - p > t.length) continue;
      let ok = true;
      let digits = 0;
      for (let k = 0; k < n - p; k++) {
        const c = text.charCodeAt(p + k);
        const tc = t.charCodeAt(k);
        if (tc === 68 /* D */) {
          if (!isDigit(c)) {
            ok = false;
            break;
          }
          digits++;
        } else if (c !== tc) {
          ok = false;
          break;
        }
      }
      if (ok) {
        sink.tail(p, digits >= strongDigits, id);
        return;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// US social security numbers

const SSN_RE = /(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?!\d|-\d)/g;

/** Area 001–899 except 666, group 01–99, serial 0001–9999. */
export function ssnValid(area: string, group: string, serial: string): boolean {
  return area !== '000' && area !== '666' && area[0] !== '9' && group !== '00' && serial !== '0000';
}

function ssnWindow(text: string, from: number, to: number, sink: ScanSink, slice?: string): void {
  eachInWindow(
    SSN_RE,
    text,
    from,
    to,
    (start, m) => {
      if (ssnValid(m[1]!, m[2]!, m[3]!)) sink.found(start, start + 11, 'ssn');
    },
    slice,
  );
}

function ssnTail(text: string, sink: ScanSink): void {
  templateTail(text, ['DDD-DD-DDDD'], 4, 'ssn', sink, (c) => !isDigit(c) && c !== 45);
}

// ---------------------------------------------------------------------------------------------
// phone numbers

const NANP_RE =
  /(?<![\w+.-])(?:1[-. ])?(?:\([2-9]\d{2}\) ?\d{3}[-. ]\d{4}|[2-9]\d{2}([-.])\d{3}\1\d{4})(?![\w-]|\.\d)/g;

/** Parses an E.164-style number at `p` (a '+'); returns [end, digits, reachedEnd]. */
function parseIntlPhone(text: string, p: number): [number, number, boolean] {
  const n = text.length;
  let i = p + 1;
  let digits = 0;
  let lastDigitEnd = -1;
  let prevSep = true;
  let parenOpen = false;
  let parenAt = -1;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (isDigit(c)) {
      if (digits === 0 && c === 48) break;
      digits++;
      i++;
      lastDigitEnd = i;
      prevSep = false;
      if (digits > 15) return [-1, digits, false];
    } else if ((c === 32 || c === 45 || c === 46) && !prevSep && digits > 0) {
      i++;
      prevSep = true;
    } else if (c === 40 && !parenOpen && digits > 0) {
      parenOpen = true;
      parenAt = i;
      i++;
      prevSep = true;
    } else if (c === 41 && parenOpen && !prevSep) {
      parenOpen = false;
      i++;
      prevSep = false;
    } else {
      break;
    }
  }
  const reachedEnd = i >= n;
  if (parenOpen && parenAt < lastDigitEnd) return [-1, digits, reachedEnd];
  return [lastDigitEnd, digits, reachedEnd];
}

function intlPhoneStart(text: string, p: number): boolean {
  if (p > 0) {
    const b = text.charCodeAt(p - 1);
    if (isAlnum(b) || b === 43 || b === 95) return false;
  }
  const c = text.charCodeAt(p + 1);
  return p + 1 < text.length && isDigit(c) && c !== 48;
}

function phoneOwn(text: string, sink: ScanSink): void {
  const n = text.length;
  for (let p = text.indexOf('+'); p !== -1; p = text.indexOf('+', p + 1)) {
    if (!intlPhoneStart(text, p)) continue;
    const [end, digits] = parseIntlPhone(text, p);
    if (end > 0 && digits >= 8 && digits <= 15 && !(end < n && isAlnum(text.charCodeAt(end)))) {
      sink.found(p, end, 'phone');
      p = end - 1;
    }
  }
}

function phoneWindow(text: string, from: number, to: number, sink: ScanSink, slice?: string): void {
  eachInWindow(NANP_RE, text, from, to, (start, m) => sink.found(start, start + m[0].length, 'phone'), slice);
}

function phoneTail(text: string, sink: ScanSink): void {
  const n = text.length;
  const from = Math.max(0, n - 32);
  const rel = text.slice(from).lastIndexOf('+');
  const p = rel === -1 ? -1 : from + rel;
  if (p !== -1 && intlPhoneStart(text, p)) {
    const [, digits, reachedEnd] = parseIntlPhone(text, p);
    if (reachedEnd && digits <= 15) sink.tail(p, digits >= 6, 'phone');
  }
  templateTail(
    text,
    ['(DDD) DDD-DDDD', '(DDD)DDD-DDDD', '(DDD) DDD DDDD', '(DDD) DDD.DDDD', 'DDD-DDD-DDDD', 'DDD.DDD.DDDD',
      '1-DDD-DDD-DDDD', '1.DDD.DDD.DDDD', '1 (DDD) DDD-DDDD'],
    6,
    'phone',
    sink,
    (c) => !(isAlnum(c) || c === 95 || c === 43 || c === 46 || c === 45),
  );
}

// ---------------------------------------------------------------------------------------------
// email addresses

function isLocalChar(c: number): boolean {
  return isAlnum(c) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45; // . _ % + -
}
function isDomainChar(c: number): boolean {
  return isAlnum(c) || c === 46 || c === 45;
}

function domainValid(text: string, s: number, e: number): boolean {
  if (e - s < 4 || e - s > 253) return false;
  let labelStart = s;
  let labels = 0;
  for (let i = s; i <= e; i++) {
    if (i === e || text.charCodeAt(i) === 46) {
      const len = i - labelStart;
      if (len < 1 || len > 63) return false;
      if (text.charCodeAt(labelStart) === 45 || text.charCodeAt(i - 1) === 45) return false;
      labels++;
      if (i === e) {
        // top-level domain: letters only, 2+ (or an IDN xn-- label)
        const tld = text.slice(labelStart, e);
        if (!/^(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{2,59})$/.test(tld)) return false;
      }
      labelStart = i + 1;
    }
  }
  return labels >= 2;
}

/** Is position `s` inside the authority of a URL (after `scheme://`, before any `/`)? */
function inUrlAuthority(text: string, s: number): boolean {
  for (let i = s - 1; i >= 2 && s - i < 256; i--) {
    const c = text.charCodeAt(i);
    if (c === 47 /* / */) return text.charCodeAt(i - 1) === 47 && text.charCodeAt(i - 2) === 58;
    if (c <= 32 || isQuote(c) || c === 60 || c === 62) return false;
  }
  return false;
}

/** Finds the email around the '@' at `at`: [start, end], or null. */
function emailAt(text: string, at: number): [number, number] | null {
  const n = text.length;
  let s = at;
  while (s > 0 && at - s <= 64 && isLocalChar(text.charCodeAt(s - 1))) s--;
  if (at - s > 64) return null;
  while (s < at && text.charCodeAt(s) === 46) s++;
  if (s === at || text.charCodeAt(at - 1) === 46) return null;
  if (inUrlAuthority(text, s)) return null; // scheme://user:pass@host is userinfo (secret_assignment)
  let e = at + 1;
  while (e < n && e - at <= 254 && isDomainChar(text.charCodeAt(e))) e++;
  while (e > at + 1 && (text.charCodeAt(e - 1) === 46 || text.charCodeAt(e - 1) === 45)) e--;
  for (let i = s + 1; i < at; i++) if (text.charCodeAt(i) === 46 && text.charCodeAt(i - 1) === 46) return null;
  if (!domainValid(text, at + 1, e)) return null;
  return [s, e];
}

function emailOwn(text: string, sink: ScanSink): void {
  for (let at = text.indexOf('@'); at !== -1; ) {
    const m = emailAt(text, at);
    if (m) {
      sink.found(m[0], m[1], 'email');
      at = text.indexOf('@', m[1]);
    } else {
      at = text.indexOf('@', at + 1);
    }
  }
}

function emailTail(text: string, sink: ScanSink): void {
  const n = text.length;
  const j = runStart(text, n, (c) => isLocalChar(c) || c === 64, 330);
  if (j === n) return;
  let at = n - 1;
  while (at >= j && text.charCodeAt(at) !== 64) at--;
  if (at >= j) {
    let ls = at;
    while (ls > j && text.charCodeAt(ls - 1) !== 64 && at - ls <= 64) ls--;
    if (at - ls <= 64 && ls < at) sink.tail(ls, true, 'email');
    // what follows the last '@' may also be the local part of an address still to come
    if (n - at - 1 > 0 && n - at - 1 <= 64) sink.tail(at + 1, false, 'email');
  } else if (n - j <= 64) {
    sink.tail(j, false, 'email');
  }
}

// ---------------------------------------------------------------------------------------------
// IBAN

/** Length of the IBAN per country (SWIFT IBAN registry). */
export const IBAN_LENGTHS: Readonly<Record<string, number>> = {
  AD: 24, AE: 23, AL: 28, AT: 20, AZ: 28, BA: 20, BE: 16, BG: 22, BH: 22, BI: 27, BR: 29, BY: 28,
  CH: 21, CR: 22, CY: 28, CZ: 24, DE: 22, DJ: 27, DK: 18, DO: 28, EE: 20, EG: 29, ES: 24, FI: 18,
  FK: 18, FO: 18, FR: 27, GB: 22, GE: 22, GI: 23, GL: 18, GR: 27, GT: 28, HR: 21, HU: 28, IE: 22,
  IL: 23, IQ: 23, IS: 26, IT: 27, JO: 30, KW: 30, KZ: 20, LB: 28, LC: 32, LI: 21, LT: 20, LU: 20,
  LV: 21, LY: 25, MC: 27, MD: 24, ME: 22, MK: 19, MN: 20, MR: 27, MT: 31, MU: 30, NI: 28, NL: 18,
  NO: 15, OM: 23, PK: 24, PL: 28, PS: 29, PT: 25, QA: 29, RO: 24, RS: 22, RU: 33, SA: 24, SC: 31,
  SD: 18, SE: 24, SI: 19, SK: 24, SM: 27, SO: 23, ST: 25, SV: 28, TL: 23, TN: 24, TR: 26, UA: 29,
  VA: 22, VG: 24, XK: 20, YE: 30,
};

/** ISO 13616 check: the rearranged number, letters as 10–35, is 1 mod 97. */
export function ibanMod97(iban: string): boolean {
  const s = iban.slice(4) + iban.slice(0, 4);
  let r = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (isDigit(c)) {
      r = (r * 10 + (c - 48)) % 97;
    } else if (isUpper(c)) {
      r = (r * 100 + (c - 55)) % 97;
    } else {
      return false;
    }
  }
  return r === 1;
}

export function ibanValid(compact: string): boolean {
  const iban = compact.toUpperCase();
  const len = IBAN_LENGTHS[iban.slice(0, 2)];
  return len !== undefined && iban.length === len && /^[A-Z]{2}\d{2}[A-Z0-9]+$/.test(iban) && ibanMod97(iban);
}

const IBAN_RE = /(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}/g;

function ibanWindow(text: string, from: number, to: number, sink: ScanSink, slice?: string): void {
  const n = text.length;
  eachInWindow(IBAN_RE, text, from, to, (s): number | undefined => {
    const len = IBAN_LENGTHS[text.slice(s, s + 2).toUpperCase()];
    if (len === undefined) return undefined;
    let count = 0;
    let i = s;
    let compact = '';
    while (i < n && count < len) {
      const c = text.charCodeAt(i);
      if (isAlnum(c)) {
        compact += text[i];
        count++;
        i++;
      } else if (c === 32 && count > 0 && i + 1 < n && isAlnum(text.charCodeAt(i + 1))) {
        i++;
      } else {
        break;
      }
    }
    if (count === len && !(i < n && isAlnum(text.charCodeAt(i))) && ibanValid(compact)) {
      sink.found(s, i, 'iban');
      return i;
    }
    return s + 1;
  }, slice);
}

function ibanTail(text: string, sink: ScanSink): void {
  const n = text.length;
  for (let p = Math.max(0, n - 42); p < n; p++) {
    if (!isAlpha(text.charCodeAt(p)) || (p > 0 && isAlnum(text.charCodeAt(p - 1)))) continue;
    if (p + 1 < n && !isAlpha(text.charCodeAt(p + 1))) continue;
    let count = 0;
    let ok = true;
    let prevSpace = false;
    for (let i = p; i < n && ok; i++) {
      const c = text.charCodeAt(i);
      if (c === 32) {
        if (prevSpace || count < 4) ok = false;
        prevSpace = true;
        continue;
      }
      prevSpace = false;
      if (count < 2 ? !isAlpha(c) : count < 4 ? !isDigit(c) : !isAlnum(c)) ok = false;
      count++;
      if (count === 2 && IBAN_LENGTHS[text.slice(p, p + 2).toUpperCase()] === undefined) ok = false;
    }
    if (!ok || count === 0) continue;
    const len = IBAN_LENGTHS[text.slice(p, p + 2).toUpperCase()];
    if (len !== undefined && count > len) continue;
    sink.tail(p, count >= 6, 'iban');
    return;
  }
}

// ---------------------------------------------------------------------------------------------
// IP addresses (off by default)

const IPV4_RE =
  /(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d|\.\d)/g;

function ipv4Own(text: string, sink: ScanSink): void {
  const re = IPV4_RE;
  re.lastIndex = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) sink.found(m.index, re.lastIndex, 'ipv4');
}

function ipv4Tail(text: string, sink: ScanSink): void {
  const n = text.length;
  const j = runStart(text, n, (c) => isDigit(c) || c === 46, 16);
  if (j === n || (j > 0 && (isDigit(text.charCodeAt(j - 1)) || text.charCodeAt(j - 1) === 46))) return;
  const run = text.slice(j);
  if (/^\d{1,3}(?:\.\d{0,3}){0,3}$/.test(run)) sink.tail(j, (run.match(/\./g) ?? []).length >= 2, 'ipv4');
}

const IPV6_RE = /(?<![0-9A-Za-z:.])[0-9A-Fa-f]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*/g;

function ipv6Own(text: string, sink: ScanSink): void {
  const re = IPV6_RE;
  re.lastIndex = 0;
  const n = text.length;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    let s = m[0];
    while (s.length > 0 && (s.endsWith('.') || (s.endsWith(':') && !s.endsWith('::')))) s = s.slice(0, -1);
    const end = m.index + s.length;
    if (end < n && isAlnum(text.charCodeAt(end))) continue;
    const colons = s.split(':').length - 1;
    const hasHex = /[0-9A-Fa-f]/.test(s);
    if (hasHex && (colons >= 7 || (s.includes('::') && colons >= 2)) && isIPv6(s)) sink.found(m.index, end, 'ipv6');
  }
}

function ipv6Tail(text: string, sink: ScanSink): void {
  const n = text.length;
  const j = runStart(text, n, (c) => isHex(c) || c === 58 || c === 46, 46);
  if (j === n || (j > 0 && isAlnum(text.charCodeAt(j - 1)))) return;
  const colons = text.slice(j).split(':').length - 1;
  if (colons >= 1) sink.tail(j, colons >= 2, 'ipv6');
}

// ---------------------------------------------------------------------------------------------
// JSON Web Tokens

const JWT_ANCHOR: Anchor = [['e', 'yJ'], ['e', 'yAi'], ['e', 'wo'], ['e', 'w0K']];
const JWT_Y = /e[wy][A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+)?/y;

/** The base64url header decodes to a JSON object with a string `alg`. */
export function jwtHeaderValid(b64: string): boolean {
  try {
    const json: unknown = JSON.parse(Buffer.from(b64, 'base64url').toString('utf8'));
    return typeof json === 'object' && json !== null && typeof (json as { alg?: unknown }).alg === 'string';
  } catch {
    return false;
  }
}

function jwtAt(text: string, at: number, sink: ScanSink): void {
  if (at > 0 && isB64url(text.charCodeAt(at - 1))) return;
  JWT_Y.lastIndex = at;
  const m = JWT_Y.exec(text);
  if (!m) return;
  const dot = text.indexOf('.', at);
  if (jwtHeaderValid(text.slice(at, dot))) sink.found(at, at + m[0].length, 'jwt');
}

function jwtTail(text: string, sink: ScanSink): void {
  const n = text.length;
  const j = runStart(text, n, (c) => isB64url(c) || c === 46, 65536);
  if (j === n || text.charCodeAt(j) !== 101 /* e */) return;
  if (n - j >= 2 && text.charCodeAt(j + 1) !== 119 && text.charCodeAt(j + 1) !== 121) return;
  const dot = text.indexOf('.', j);
  if (dot === -1) {
    sink.tail(j, false, 'jwt');
  } else if (jwtHeaderValid(text.slice(j, dot))) {
    sink.tail(j, true, 'jwt');
  }
}

// ---------------------------------------------------------------------------------------------
// PEM private keys

const PEM_BEGIN = '-----BEGIN ';
const PEM_LABEL = /^(?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?$/;

/**
 * Consumes PEM body lines from `from` (base64 lines, `Header: value` lines, blank lines; lines
 * separated by real newlines or by the two characters `\n` as in JSON strings). Returns the end of
 * the last body line consumed and whether the text ended inside the body.
 */
function pemBody(text: string, from: number): { end: number; open: boolean } {
  const n = text.length;
  let i = from;
  let end = from;
  for (let guard = 0; guard < 100000 && i < n; guard++) {
    // one line: up to '\n' or the two characters '\' 'n'
    const lineStart = i;
    let sawColon = false;
    let ok = true;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 10) break;
      if (c === 92 /* \ */ && i + 1 < n && (text.charCodeAt(i + 1) === 110 || text.charCodeAt(i + 1) === 114)) break;
      if (c === 45 && text.startsWith('-----END ', i)) {
        // the END line belongs to the block
        const close = text.indexOf('-----', i + 9);
        if (close === -1) return { end: n, open: true };
        return { end: close + 5, open: false };
      }
      if (isB64(c) || c === 61 || c === 13 || c === 32 || c === 9) {
        // base64 body characters
      } else if (c === 58 || c === 44 || c === 45) {
        sawColon = sawColon || c === 58;
      } else {
        ok = false;
        break;
      }
      i++;
    }
    if (!ok) return { end, open: false };
    const line = text.slice(lineStart, i);
    if (line.includes(',') && !sawColon) return { end, open: false };
    if (i >= n) return { end: n, open: true };
    // consume the line separator
    if (text.charCodeAt(i) === 10) i++;
    else i += 2;
    end = i;
  }
  return { end, open: i >= n };
}

function pemAt(text: string, b: number, sink: ScanSink): void {
  const n = text.length;
  const le = text.indexOf('-----', b + PEM_BEGIN.length);
  if (le === -1 || le - b > 80) {
    // a BEGIN line cut short at the end of the text
    if (le === -1 && sink.wantTails && n - b <= 80 && /^[A-Z0-9 ]*-{0,4}$/.test(text.slice(b + PEM_BEGIN.length))) {
      sink.tail(b, false, 'pem_private_key');
    }
    return;
  }
  if (!PEM_LABEL.test(text.slice(b + PEM_BEGIN.length, le))) return;
  const body = pemBody(text, le + 5);
  if (body.open && !sink.final) {
    if (sink.wantTails) sink.tail(b, true, 'pem_private_key');
    return;
  }
  sink.found(b, body.end, 'pem_private_key');
}

/** A partial "-----BEGIN " at the very end (a cut BEGIN line is reported by pemAt). */
function pemTail(text: string, sink: ScanSink): void {
  const n = text.length;
  const j = runStart(text, n, (c) => c === 45 || isUpper(c) || c === 32, PEM_BEGIN.length);
  for (let p = j; p < n; p++) {
    if (text.charCodeAt(p) !== 45) continue;
    if (p > 0 && (isAlnum(text.charCodeAt(p - 1)) || text.charCodeAt(p - 1) === 45)) continue;
    if (PEM_BEGIN.startsWith(text.slice(p))) {
      sink.tail(p, false, 'pem_private_key');
      return;
    }
  }
}

function pemContinue(text: string, from: number): { end: number; done: boolean } {
  const body = pemBody(text, from);
  return { end: body.end, done: !body.open };
}

// ---------------------------------------------------------------------------------------------
// literal-prefix tokens (AWS key ids, GitHub, GitLab, Slack)

/**
 * Tail for tokens that start with one of `literals` and continue with `body` characters: weak
 * while the trailing run is a prefix of a literal, strong once it has a literal and more.
 */
function literalTail(
  text: string,
  literals: readonly string[],
  body: (c: number) => boolean,
  boundaryOk: (c: number) => boolean,
  maxLen: number,
  id: DetectorId,
  sink: ScanSink,
): void {
  const n = text.length;
  const j = runStart(text, n, body, maxLen);
  if (j === n) return;
  if (j > 0 && !boundaryOk(text.charCodeAt(j - 1))) {
    // the run may still contain the token after an inner boundary (e.g. "x-" before "xoxb-")
    return;
  }
  const run = text.slice(j, Math.min(n, j + 16));
  for (const lit of literals) {
    if (run.length < lit.length ? lit.startsWith(run) : run.startsWith(lit)) {
      sink.tail(j, run.length > lit.length, id);
      return;
    }
  }
}

const AWS_KEY_ANCHOR: Anchor = [['A', '(?:KIA|SIA|BIA|CCA)']];
const AWS_KEY_Y = /(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])/y;
const AWS_KEY_PREFIXES = ['AKIA', 'ASIA', 'ABIA', 'ACCA'];

function awsKeyAt(text: string, at: number, sink: ScanSink): void {
  if (at > 0 && isAlnum(text.charCodeAt(at - 1))) return;
  AWS_KEY_Y.lastIndex = at;
  if (AWS_KEY_Y.test(text)) sink.found(at, at + 20, 'aws_access_key');
}

function awsKeyTail(text: string, sink: ScanSink): void {
  const n = text.length;
  const j = runStart(text, n, isAlnum, 21);
  if (j < n && n - j <= 20 && !(j > 0 && isAlnum(text.charCodeAt(j - 1)))) {
    const run = text.slice(j);
    if (/^[A-Z0-9]*$/.test(run)) {
      for (const lit of AWS_KEY_PREFIXES) {
        if (run.length < 4 ? lit.startsWith(run) : run.startsWith(lit)) {
          sink.tail(j, run.length > 4, 'aws_access_key');
          break;
        }
      }
    }
  }
}

const AWS_SECRET_RE = /(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])/g;
const AWS_CONTEXT_RE = /aws|amazon|secret_?access|(?:AKIA|ASIA)[A-Z0-9]{16}/i;

function awsContextBefore(text: string, at: number): boolean {
  return AWS_CONTEXT_RE.test(text.slice(Math.max(0, at - 256), at));
}

function mixedCase(s: string): boolean {
  return /[a-z]/.test(s) && /[A-Z]/.test(s);
}

/** Mentions of AWS after which a 40-character secret is looked for (within 256 characters). */
const AWS_CONTEXT_ANCHOR: Anchor = [
  ['[Aa]', '[Ww][Ss]'],
  ['[Aa]', '[Mm][Aa][Zz][Oo][Nn]'],
  ['[Ss]', '[Ee][Cc][Rr][Ee][Tt]_?[Aa][Cc][Cc][Ee][Ss][Ss]'],
  ['A', '(?:KIA|SIA)[A-Z0-9]{16}'],
];

function awsSecretAt(text: string, at: number, sink: ScanSink): void {
  const to = Math.min(text.length, at + 256 + 41);
  eachInWindow(AWS_SECRET_RE, text, at, to, (start, m) => {
    if (mixedCase(m[0])) sink.found(start, start + 40, 'aws_secret_key');
  });
}

function awsSecretTail(text: string, sink: ScanSink): void {
  const n = text.length;
  const j = runStart(text, n, isB64, 41);
  if (j < n && n - j <= 40 && !(j > 0 && (isB64(text.charCodeAt(j - 1)) || text.charCodeAt(j - 1) === 61))) {
    if (awsContextBefore(text, j)) sink.tail(j, n - j >= 8, 'aws_secret_key');
  }
}

const GITHUB_ANCHOR: Anchor = [['g', 'h[pousr]_'], ['g', 'ithub_pat_']];
const GITHUB_Y = /(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})(?![A-Za-z0-9_])/y;
const GITHUB_PREFIXES = ['ghp_', 'gho_', 'ghu_', 'ghs_', 'ghr_', 'github_pat_'];
function isWordChar(c: number): boolean {
  return isAlnum(c) || c === 95;
}

function githubAt(text: string, at: number, sink: ScanSink): void {
  if (at > 0 && isWordChar(text.charCodeAt(at - 1))) return;
  GITHUB_Y.lastIndex = at;
  const m = GITHUB_Y.exec(text);
  if (m) sink.found(at, at + m[0].length, 'github_token');
}

function githubTail(text: string, sink: ScanSink): void {
  literalTail(text, GITHUB_PREFIXES, isWordChar, (c) => !isWordChar(c), 400, 'github_token', sink);
}

const GITLAB_ANCHOR: Anchor = [['g', 'l(?:pat|dt|rt|ptt|ft|imt|oas|cbt|soat|agent|ffct|ddt)-']];
const GITLAB_Y = /gl(?:pat|dt|rt|ptt|ft|imt|oas|cbt|soat|agent|ffct|ddt)-[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]+)*/y;
const GITLAB_PREFIXES = ['glpat-', 'gldt-', 'glrt-', 'glptt-', 'glft-', 'glimt-', 'gloas-', 'glcbt-', 'glsoat-', 'glagent-', 'glffct-', 'glddt-'];
function isGitlabChar(c: number): boolean {
  return isB64url(c) || c === 46;
}

function gitlabAt(text: string, at: number, sink: ScanSink): void {
  if (at > 0 && isB64url(text.charCodeAt(at - 1))) return;
  GITLAB_Y.lastIndex = at;
  const m = GITLAB_Y.exec(text);
  if (m) sink.found(at, at + m[0].length, 'gitlab_token');
}

function gitlabTail(text: string, sink: ScanSink): void {
  literalTail(text, GITLAB_PREFIXES, isGitlabChar, (c) => !isB64url(c), 400, 'gitlab_token', sink);
}

const SLACK_ANCHOR: Anchor = [['x', 'ox[abposre]-'], ['x', 'app-'], ['h', 'ooks\\.slack\\.com/']];
const SLACK_Y = /(?:xox[abposre]-[A-Za-z0-9-]{10,}|xapp-\d-[A-Za-z0-9-]{10,})/y;
const SLACK_HOOK_Y = /hooks\.slack\.com\/((?:services|workflows|triggers)\/[A-Za-z0-9/_-]{10,})/y;
const SLACK_PREFIXES = ['xoxa-', 'xoxb-', 'xoxp-', 'xoxo-', 'xoxr-', 'xoxs-', 'xoxe-', 'xapp-'];
function isSlackChar(c: number): boolean {
  return isAlnum(c) || c === 45;
}

function slackAt(text: string, at: number, sink: ScanSink): void {
  if (text.charCodeAt(at) === 104 /* h */) {
    SLACK_HOOK_Y.lastIndex = at;
    const m = SLACK_HOOK_Y.exec(text);
    if (m) sink.found(at + m[0].length - m[1]!.length, at + m[0].length, 'slack_token');
    return;
  }
  if (at > 0 && isSlackChar(text.charCodeAt(at - 1))) return;
  SLACK_Y.lastIndex = at;
  const m = SLACK_Y.exec(text);
  if (m) sink.found(at, at + m[0].length, 'slack_token');
}

function slackTail(text: string, sink: ScanSink): void {
  literalTail(text, SLACK_PREFIXES, isSlackChar, (c) => !isSlackChar(c), 400, 'slack_token', sink);
  const n = text.length;
  const h = n > 400 ? text.slice(n - 400).lastIndexOf('hooks.slack.com/') + (n - 400) : text.lastIndexOf('hooks.slack.com/');
  if (h >= 0 && h >= n - 400) {
    const p = h + 'hooks.slack.com/'.length;
    if (runStart(text, n, (c) => isSlackChar(c) || c === 47 || c === 95, n - p) === p) sink.tail(p, true, 'slack_token');
  }
}

// ---------------------------------------------------------------------------------------------
// generic secret assignments: password=…, "client_secret": "…", token: …, --password …,
// Authorization: Bearer …, and URL userinfo scheme://user:pass@host

/** Key words of secret assignments; the anchor is case-insensitive through character classes. */
const SECRET_KEY_ANCHOR: Anchor = [
  ['[Pp]', '[Aa][Ss][Ss]'],
  ['[Pp]', '[Ww][Dd]'],
  ['[Pp]', '[Rr][Ii][Vv][Aa][Tt][Ee][_-]?[Kk][Ee][Yy]'],
  ['[Ss]', '[Ee][Cc][Rr][Ee][Tt]'],
  ['[Tt]', '[Oo][Kk][Ee][Nn]'],
  ['[Aa]', '[Pp][Ii][_-]?[Kk][Ee][Yy]'],
  ['[Aa]', '[Cc][Cc][Ee][Ss][Ss][_-]?[Kk][Ee][Yy]'],
  ['[Aa]', '[Uu][Tt][Hh]'],
  ['[Cc]', '[Rr][Ee][Dd][Ee][Nn][Tt][Ii][Aa][Ll]'],
  ['-', '(?:u|-user|-proxy-user)'],
];
const SECRET_KEY_Y =
  /pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?|authorization|auth/iy;
const NOT_SECRET_VALUES = new Set(['null', 'true', 'false', 'none', 'nil', 'undefined']);

function isKeyChar(c: number): boolean {
  return isAlnum(c) || c === 95 || c === 45 || c === 46;
}
function isQuote(c: number): boolean {
  return c === 34 || c === 39 || c === 96;
}
/** Characters of an unquoted value after `=` (env, query strings, flags). */
function isBareValueChar(c: number): boolean {
  return !(c <= 32 || isQuote(c) || c === 44 || c === 59 || c === 38 || c === 60 || c === 62 || c === 41 || c === 93 || c === 125);
}
/** Characters of an unquoted JSON value. */
function isJsonBareChar(c: number): boolean {
  return !(c <= 32 || c === 44 || c === 125 || c === 93);
}
function isSecretContinueChar(c: number): boolean {
  return c > 32 && !isQuote(c);
}

function secretAt(text: string, ks: number, sink: ScanSink): void {
  if (text.charCodeAt(ks) === 45 /* - */) {
    userFlagAt(text, ks, sink);
    return;
  }
  SECRET_KEY_Y.lastIndex = ks;
  if (!SECRET_KEY_Y.test(text)) return;
  const ke = SECRET_KEY_Y.lastIndex;
  const n = text.length;
  // the keyword must be a word part: not inside a longer lower-case word
  const before = ks > 0 ? text.charCodeAt(ks - 1) : 0;
  const after = ke < n ? text.charCodeAt(ke) : 0;
  const firstUpper = isUpper(text.charCodeAt(ks));
  const lastLower = isLower(text.charCodeAt(ke - 1));
  if (isAlpha(before) && !(isLower(before) && firstUpper)) return;
  if (isAlpha(after) && !(lastLower && isUpper(after))) return;
  secretAfterKey(text, ks, ke, sink);
}

/** Parses `key<sep>value` around the keyword [ks, ke); reports the value; returns where it ended. */
function secretAfterKey(text: string, ks: number, ke: number, sink: ScanSink): number {
  const n = text.length;
  let keyStart = ks;
  while (keyStart > 0 && ks - keyStart < 64 && isKeyChar(text.charCodeAt(keyStart - 1))) keyStart--;
  let i = ke;
  while (i < n && i - ke < 64 && isKeyChar(text.charCodeAt(i)) && text.charCodeAt(i) !== 46) i++;
  // a dotted key such as `spring.datasource.password` ends at the keyword's word
  const key = text.slice(keyStart, i).toLowerCase();
  if (key === 'pwd' || key === 'oldpwd' || key === '$pwd') return i;
  const isFlag = key.startsWith('-');
  let quotedKey = false;
  if (i < n && isQuote(text.charCodeAt(i)) && keyStart > 0 && text.charCodeAt(keyStart - 1) === text.charCodeAt(i)) {
    quotedKey = true;
    i++;
  }
  const afterKey = i;
  while (i < n && (text.charCodeAt(i) === 32 || text.charCodeAt(i) === 9)) i++;
  if (i >= n) return i;
  let sep: '=' | ':' | ' ';
  const c = text.charCodeAt(i);
  if (c === 61 /* = */) {
    if (i + 1 < n && text.charCodeAt(i + 1) === 61) return i; // ==
    sep = '=';
    i += i + 1 < n && text.charCodeAt(i + 1) === 62 ? 2 : 1; // =>
  } else if (c === 58 /* : */) {
    if (i + 1 < n && text.charCodeAt(i + 1) === 58) return i; // ::
    if (i + 1 < n && text.charCodeAt(i + 1) === 61) {
      sep = '=';
      i += 2; // :=
    } else {
      sep = ':';
      i++;
    }
  } else if (i > afterKey && (isFlag || (isQuote(c) && !quotedKey))) {
    sep = ' '; // `--password value`, SQL `PASSWORD 'value'`
  } else {
    return i;
  }
  while (i < n && (text.charCodeAt(i) === 32 || text.charCodeAt(i) === 9)) i++;
  if (i >= n) return i;
  // Authorization: <scheme> <credentials>
  if (key.endsWith('authorization')) {
    const sm = /^[A-Za-z][A-Za-z0-9-]* (?=\S)/.exec(text.slice(i, i + 40));
    if (sm) i += sm[0].length;
  }
  const q = text.charCodeAt(i);
  let vs: number;
  let ve: number;
  let open = false;
  if (isQuote(q)) {
    vs = i + 1;
    let k = vs;
    const limit = Math.min(n, vs + 8192);
    while (k < limit) {
      const ch = text.charCodeAt(k);
      if (ch === 92 /* \ */) {
        k += 2;
        continue;
      }
      if (ch === q || (ch < 32 && ch !== 9)) break;
      k++;
    }
    if (k >= n) {
      ve = n;
      open = true;
    } else {
      ve = Math.min(k, n);
    }
  } else if (text.startsWith('[REDACTED:', i) && text.indexOf(']', i) !== -1 && text.indexOf(']', i) - i < 64) {
    // an already-masked value: keep it whole, so that masking twice changes nothing
    vs = i;
    ve = text.indexOf(']', i) + 1;
  } else {
    vs = i;
    let k = i;
    if (quotedKey) {
      while (k < n && isJsonBareChar(text.charCodeAt(k))) k++;
    } else if (sep === ':') {
      // YAML / header style: to the end of the line, or to a flow delimiter inside { } / [ ]
      const back = Math.max(0, ks - 1024);
      const lineStart = back + text.slice(back, ks).lastIndexOf('\n') + 1;
      const flow = /[{[]/.test(text.slice(lineStart, ks));
      while (k < n) {
        const ch = text.charCodeAt(k);
        if (ch < 32 && ch !== 9) break;
        if (flow && (ch === 44 || ch === 125 || ch === 93)) break;
        if (isQuote(ch) && k > vs) break;
        k++;
      }
      while (k > vs && (text.charCodeAt(k - 1) === 32 || text.charCodeAt(k - 1) === 9)) k--;
    } else {
      while (k < n && isBareValueChar(text.charCodeAt(k))) k++;
    }
    ve = k;
    open = k >= n;
  }
  if (open && sink.wantTails && !sink.final && ve > vs) sink.tail(vs, true, 'secret_assignment');
  if (open && !sink.final) return ve;
  if (ve > vs && !NOT_SECRET_VALUES.has(text.slice(vs, ve).toLowerCase())) sink.found(vs, ve, 'secret_assignment');
  return ve;
}

function isAuthorityEnd(c: number): boolean {
  return c <= 32 || c === 47 || c === 63 || c === 35 || isQuote(c) || c === 60 || c === 62;
}

/** `curl -u user:pass`, `--user=user:pass`, `--proxy-user user:pass`: the part after the colon. */
const USER_FLAG_Y = /-(?:u|-user|-proxy-user)(?:[ =]+|(?=[^\s-]))(['"]?)([^\s:'"]+):/y;

function userFlagAt(text: string, at: number, sink: ScanSink): void {
  if (at > 0) {
    const b = text.charCodeAt(at - 1);
    if (!(b <= 32 || isQuote(b))) return;
  }
  USER_FLAG_Y.lastIndex = at;
  if (!USER_FLAG_Y.test(text)) return;
  const n = text.length;
  const vs = USER_FLAG_Y.lastIndex;
  let ve = vs;
  while (ve < n && isSecretContinueChar(text.charCodeAt(ve))) ve++;
  if (ve >= n && !sink.final) {
    if (sink.wantTails && ve > vs) sink.tail(vs, true, 'secret_assignment');
  } else if (ve > vs) {
    sink.found(vs, ve, 'secret_assignment');
  }
}

function userinfoOwn(text: string, sink: ScanSink): void {
  const n = text.length;
  for (let p = text.indexOf('://'); p !== -1; p = text.indexOf('://', p + 3)) {
    if (p === 0 || !isAlnum(text.charCodeAt(p - 1))) continue;
    const hs = p + 3;
    let i = hs;
    while (i < n && i - hs < 1024 && !isAuthorityEnd(text.charCodeAt(i))) i++;
    const authority = text.slice(hs, i);
    const atRel = authority.lastIndexOf('@');
    const at = atRel === -1 ? -1 : hs + atRel;
    const colonRel = authority.indexOf(':');
    const colon = colonRel === -1 ? -1 : hs + colonRel;
    if (at >= hs) {
      if (colon !== -1 && colon < at && at - colon > 1) sink.found(colon + 1, at, 'secret_assignment');
      continue;
    }
    if (i >= n && sink.wantTails && colon !== -1 && colon < n - 1) {
      // the authority is still open: `user:pa` may be a password that an '@' will confirm
      const after = text.slice(colon + 1);
      sink.tail(colon + 1, !/^\d*$/.test(after), 'secret_assignment');
    }
  }
}

// ---------------------------------------------------------------------------------------------
// the registry

const TEXTLIKE: readonly TypeCategory[] = ['text', 'char', 'json', 'jsonb', 'xml', 'unknown', 'array_text', 'bytea'];

function det(
  d: Omit<Detector, 'scans' | 'minDigits' | 'needsByte' | 'keepFirst' | 'keepLast' | 'scan'> & {
    scans?: readonly TypeCategory[];
    minDigits?: number;
    needsByte?: number;
    keepFirst?: number;
    keepLast?: number;
  },
): Detector {
  let alone: Scanner | null = null;
  const detector: Detector = {
    ...d,
    scans: new Set(d.scans ?? TEXTLIKE),
    minDigits: d.minDigits ?? 0,
    needsByte: d.needsByte ?? -1,
    keepFirst: d.keepFirst ?? (d.style === 'digits' ? 0 : 1),
    keepLast: d.keepLast ?? (d.style === 'digits' ? 4 : 0),
    scan(text: string, sink: ScanSink): void {
      alone ??= scannerFor([detector]);
      alone.scan(text, sink);
    },
  };
  return detector;
}

function isCardRunChar(c: number): boolean {
  return isDigit(c) || isCardSep(c);
}

/** Every detector, by id. */
export const DETECTORS: Readonly<Record<DetectorId, Detector>> = {
  /**
   * Payment cards. False positives: 13–19 digit numbers that pass Luhn (1 in 10) and start like a
   * card issuer (order or tracking numbers, some IDs). Misses: cards split by other separators
   * (dots, newlines), UATP cards (prefix 1), numbers glued to other digits.
   */
  card: det({
    id: 'card',
    title: 'payment card number (13–19 digits, Luhn, known IIN ranges)',
    falsePositives:
      '13–19 digit numbers that pass Luhn (1 in 10) and begin like an issuer range, e.g. some order or tracking numbers; not flagged: numbers failing Luhn, unknown prefixes (UATP 1…), cards separated by dots or line breaks',
    defaultOn: true,
    style: 'digits',
    scans: [...TEXTLIKE, 'int8', 'numeric', 'float4', 'float8', 'money', 'array_num'],
    minDigits: 13,
    inWindow: cardWindow,
    tail: cardTail,
    continueRun: (t, f) => continueWhile(t, f, isCardRunChar),
  }),
  /**
   * IBAN. False positives: practically none (country length table + mod-97). Misses: IBANs with
   * separators other than single spaces, national account numbers without IBAN.
   */
  iban: det({
    id: 'iban',
    title: 'IBAN (country length table, ISO 13616 mod-97)',
    falsePositives: 'rare: a code that matches a country length and passes mod-97 (1 in 97); not flagged: IBANs split by dashes or dots',
    defaultOn: true,
    style: 'digits',
    minDigits: 2,
    inWindow: ibanWindow,
    tail: ibanTail,
    continueRun: (t, f) => continueWhile(t, f, (c) => isAlnum(c) || c === 32),
  }),
  /**
   * US SSN written ddd-dd-dddd. False positives: other numbers in that layout (some part numbers).
   * Misses: SSNs without dashes (too many 9-digit numbers look alike), invalid areas by design.
   */
  ssn: det({
    id: 'ssn',
    title: 'US social security number (ddd-dd-dddd, area/group/serial rules)',
    falsePositives: 'other numbers in the ddd-dd-dddd layout (part or case numbers); not flagged: SSNs written without dashes, area 000/666/9xx, group 00, serial 0000',
    defaultOn: true,
    style: 'digits',
    minDigits: 9,
    needsByte: 45,
    inWindow: ssnWindow,
    tail: ssnTail,
    continueRun: (t, f) => continueWhile(t, f, (c) => isDigit(c) || c === 45),
  }),
  /**
   * Email addresses. False positives: `user@host.tld` shapes that are not mailboxes
   * (`git@github.com`, package scopes with a dot). Misses: internationalized (non-ASCII) addresses,
   * quoted local parts.
   */
  email: det({
    id: 'email',
    title: 'email address',
    falsePositives: 'address-shaped strings that are not mailboxes, e.g. git@github.com:org/repo; not flagged: non-ASCII (internationalized) addresses, quoted local parts, hosts without a dot',
    defaultOn: true,
    style: 'email',
    needsByte: 64,
    own: emailOwn,
    tail: emailTail,
    continueRun: (t, f) => continueWhile(t, f, (c) => isLocalChar(c) || c === 64),
  }),
  /**
   * Phone numbers: E.164 (`+` and 8–15 digits) and North American layouts (`(555) 123-4567`,
   * `555-123-4567`, `555.123.4567`). False positives: other numbers in those layouts. Misses:
   * national formats elsewhere without `+` (`020 7946 0958`), bare 10-digit numbers.
   */
  phone: det({
    id: 'phone',
    title: 'phone number (E.164, North American layouts)',
    falsePositives: 'numbers in the ddd-ddd-dddd / (ddd) ddd-dddd layouts or +digits that are not phones; not flagged: national formats without + outside North America, bare digit strings',
    defaultOn: true,
    style: 'digits',
    minDigits: 8,
    own: phoneOwn,
    inWindow: phoneWindow,
    tail: phoneTail,
    continueRun: (t, f) => continueWhile(t, f, (c) => isDigit(c) || c === 32 || c === 45 || c === 46 || c === 40 || c === 41),
  }),
  /** IPv4 addresses with valid octets. False positives: version strings such as 1.2.3.4. */
  ipv4: det({
    id: 'ipv4',
    title: 'IPv4 address (octets 0–255)',
    falsePositives: 'four-part version numbers (1.2.3.4), OIDs; off by default',
    defaultOn: false,
    style: 'digits',
    keepFirst: 0,
    keepLast: 0,
    scans: [...TEXTLIKE, 'inet'],
    minDigits: 4,
    needsByte: 46,
    own: ipv4Own,
    tail: ipv4Tail,
    continueRun: (t, f) => continueWhile(t, f, (c) => isDigit(c) || c === 46),
  }),
  /** IPv6 addresses (validated by node:net). False positives: hex words around `::` (C++ `Bad::Add`). */
  ipv6: det({
    id: 'ipv6',
    title: 'IPv6 address',
    falsePositives: 'hex-looking words joined by :: (C++ scopes such as Bad::Add); off by default',
    defaultOn: false,
    style: 'token',
    keepFirst: 0,
    scans: [...TEXTLIKE, 'inet'],
    needsByte: 58,
    own: ipv6Own,
    tail: ipv6Tail,
    continueRun: (t, f) => continueWhile(t, f, (c) => isHex(c) || c === 58 || c === 46),
  }),
  /**
   * JWTs (JWS and JWE compact form). False positives: none known (the header must decode to JSON
   * with `alg`). Misses: tokens whose header does not start with `{`.
   */
  jwt: det({
    id: 'jwt',
    title: 'JSON Web Token (base64url parts, header is JSON with alg)',
    falsePositives: 'practically none: the header must decode to a JSON object with alg; not flagged: dotted base64 that is not a JWT',
    defaultOn: true,
    style: 'token',
    keepFirst: 0,
    needsByte: 46,
    anchor: JWT_ANCHOR,
    atAnchor: jwtAt,
    tail: jwtTail,
    continueRun: (t, f) => continueWhile(t, f, (c) => isB64url(c) || c === 46),
  }),
  /**
   * PEM private key blocks, masked whole (BEGIN line to END line). Without an END line the body
   * lines are masked up to the first line that is not base64 or a PEM header.
   */
  pem_private_key: det({
    id: 'pem_private_key',
    title: 'PEM private key block (whole block)',
    falsePositives: 'none known; a BEGIN line without END masks the following base64-looking lines',
    defaultOn: true,
    style: 'block',
    keepFirst: 0,
    needsByte: 45,
    anchor: [['-', '----BEGIN ']],
    atAnchor: pemAt,
    tail: pemTail,
    continueRun: pemContinue,
  }),
  /** AWS access key ids (AKIA… long-term, ASIA… temporary, ABIA, ACCA). */
  aws_access_key: det({
    id: 'aws_access_key',
    title: 'AWS access key id (AKIA/ASIA/ABIA/ACCA + 16)',
    falsePositives: 'none known: a 20-character upper-case id with an AWS key prefix; not flagged: other AWS ids (AIDA…, AROA…), which are not credentials',
    defaultOn: true,
    style: 'token',
    keepFirst: 4,
    needsByte: 65,
    anchor: AWS_KEY_ANCHOR,
    atAnchor: awsKeyAt,
    tail: awsKeyTail,
    continueRun: (t, f) => continueWhile(t, f, isAlnum),
  }),
  /**
   * AWS secret access keys: 40 base64 characters with upper and lower case, only when an AWS
   * context (`aws`, `secret_access`, an access key id…) appears in the 256 characters before.
   */
  aws_secret_key: det({
    id: 'aws_secret_key',
    title: 'AWS secret access key (40 chars, in AWS context)',
    falsePositives: 'other 40-character mixed-case base64 strings that follow an AWS mention; not flagged: secrets with no AWS context before them (secret_assignment may still catch them)',
    defaultOn: true,
    style: 'token',
    keepFirst: 0,
    anchor: AWS_CONTEXT_ANCHOR,
    atAnchor: awsSecretAt,
    tail: awsSecretTail,
    continueRun: (t, f) => continueWhile(t, f, isB64),
  }),
  /** GitHub tokens: ghp_, gho_, ghu_, ghs_, ghr_ (36+ chars) and fine-grained github_pat_. */
  github_token: det({
    id: 'github_token',
    title: 'GitHub token (ghp_/gho_/ghu_/ghs_/ghr_/github_pat_)',
    falsePositives: 'none known (the checksum is not verified, so made-up tokens of the right shape are masked too)',
    defaultOn: true,
    style: 'token',
    keepFirst: 4,
    needsByte: 95,
    anchor: GITHUB_ANCHOR,
    atAnchor: githubAt,
    tail: githubTail,
    continueRun: (t, f) => continueWhile(t, f, isWordChar),
  }),
  /** GitLab tokens: glpat- and the other gl…- token prefixes. */
  gitlab_token: det({
    id: 'gitlab_token',
    title: 'GitLab token (glpat-, glrt-, gldt-…)',
    falsePositives: 'none known (tokens of the right shape are masked without checking them); not flagged: legacy tokens without a gl…- prefix, runner registration tokens',
    defaultOn: true,
    style: 'token',
    keepFirst: 6,
    needsByte: 45,
    anchor: GITLAB_ANCHOR,
    atAnchor: gitlabAt,
    tail: gitlabTail,
    continueRun: (t, f) => continueWhile(t, f, isGitlabChar),
  }),
  /** Slack tokens (xoxa/b/p/o/r/s/e-, xapp-) and incoming-webhook paths. */
  slack_token: det({
    id: 'slack_token',
    title: 'Slack token (xox?-, xapp-) or webhook path',
    falsePositives: 'none known (tokens of the right shape are masked without checking them); not flagged: signing secrets and app-level secrets without a prefix',
    defaultOn: true,
    style: 'token',
    keepFirst: 5,
    needsByte: 45,
    anchor: SLACK_ANCHOR,
    atAnchor: slackAt,
    tail: slackTail,
    continueRun: (t, f) => continueWhile(t, f, (c) => isSlackChar(c) || c === 47 || c === 95),
  }),
  /**
   * Generic assignments whose key names a secret (password, passwd, pwd, secret, token, api_key,
   * access_key, private_key, credentials, auth, Authorization) in env, YAML, JSON, query strings,
   * command-line flags and SQL (`PASSWORD '…'`), the password of URL userinfo and of
   * `curl -u user:pass`. Only the value is masked.
   */
  secret_assignment: det({
    id: 'secret_assignment',
    title: 'secret assignment (password=, secret:, token=, api_key, URL user:pass@)',
    falsePositives: 'values of keys that merely contain a secret word (password_file=, next_page_token=), log text after "password:", the text after the colon of any -u/--user argument; not flagged: secrets under other key names',
    defaultOn: true,
    style: 'token',
    keepFirst: 0,
    anchor: SECRET_KEY_ANCHOR,
    atAnchor: secretAt,
    own: userinfoOwn,
    continueRun: (t, f) => continueWhile(t, f, isSecretContinueChar),
  }),
};

export const ALL_DETECTORS: readonly Detector[] = Object.values(DETECTORS);
export const DEFAULT_DETECTORS: readonly Detector[] = ALL_DETECTORS.filter((d) => d.defaultOn);

// ---------------------------------------------------------------------------------------------
// the scanner: one pass for every detector's anchor, one strided pass for digit runs

const WINDOW_LEFT = 26; // an IBAN's country code and letters can precede its digits
const WINDOW_RIGHT = 4;
/**
 * Seeds of digit windows: 9+ digits joined by gaps of up to two of ` .()/-`, starting with three
 * digits (every card, SSN, North American phone number and IBAN has such a run). Starting with
 * `\d\d\d` lets the regex engine skip quickly over text with only short numbers.
 */
const DIGIT_SEED = /(?<![0-9])\d\d\d(?:[ .()/-]{0,2}\d){6}/g;
/** DIGIT_SEED without the look-behind (the reference the tests compare digitWindows with). */
export const DIGIT_SEED_ANYWHERE = /\d\d\d(?:[ .()/-]{0,2}\d){6}/g;

function isRunGap(c: number): boolean {
  return c === 32 || c === 45 || c === 46 || c === 40 || c === 41 || c === 47;
}

/**
 * Windows [from, to) around runs of 9 or more digits, with margins, merged. Cards (13+ digits),
 * SSNs (9), North American phone numbers (10) and IBANs can only occur inside them.
 *
 * The seed starts only where a digit does not follow another: a run that has a seed somewhere
 * has one at the start of that block of digits too (and the window is the whole run either way),
 * and the regex no longer retries at every digit of every number (measured 10–20 % faster on
 * log text; a character loop measured half as fast as the regex).
 */
export function digitWindows(text: string, re: RegExp = DIGIT_SEED): number[] {
  const n = text.length;
  const out: number[] = [];
  re.lastIndex = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    let s = m.index;
    for (;;) {
      if (s > 0 && isDigit(text.charCodeAt(s - 1))) s--;
      else if (s > 1 && isRunGap(text.charCodeAt(s - 1)) && isDigit(text.charCodeAt(s - 2))) s -= 2;
      else if (s > 2 && isRunGap(text.charCodeAt(s - 1)) && isRunGap(text.charCodeAt(s - 2)) && isDigit(text.charCodeAt(s - 3))) s -= 3;
      else break;
    }
    let i = re.lastIndex;
    for (;;) {
      if (i < n && isDigit(text.charCodeAt(i))) i++;
      else if (i + 1 < n && isRunGap(text.charCodeAt(i)) && isDigit(text.charCodeAt(i + 1))) i += 2;
      else if (i + 2 < n && isRunGap(text.charCodeAt(i)) && isRunGap(text.charCodeAt(i + 1)) && isDigit(text.charCodeAt(i + 2))) i += 3;
      else break;
    }
    re.lastIndex = i;
    const from = Math.max(0, s - WINDOW_LEFT);
    const to = Math.min(n, i + WINDOW_RIGHT);
    if (out.length > 0 && from <= out[out.length - 1]!) out[out.length - 1] = to;
    else out.push(from, to);
  }
  return out;
}

/** For an anchor's first-character fragment, which ASCII codes it matches (computed once per fragment). */
const firstCharCache = new Map<string, boolean[]>();
function firstChars(fragment: string): boolean[] {
  let set = firstCharCache.get(fragment);
  if (!set) {
    const re = new RegExp(`^(?:${fragment})$`);
    set = [];
    for (let c = 0; c < 128; c++) set.push(re.test(String.fromCharCode(c)));
    firstCharCache.set(fragment, set);
  }
  return set;
}

const scanners = new Map<string, Scanner>();

/**
 * The Scanner for a set of detectors, shared: a Scanner holds no state between scan() calls
 * (its regexes' lastIndex is set before every use, and scan() never yields), and building one
 * compiles every anchor (milliseconds), which a session or a mask change should not pay again.
 */
export function scannerFor(detectors: readonly Detector[]): Scanner {
  const key = detectors.map((d) => d.id).join(',');
  const s = scanners.get(key);
  // Same ids, same detector objects (a caller could build its own detector under a known id).
  if (s && s.detectors.length === detectors.length && s.detectors.every((d, i) => d === detectors[i])) return s;
  const fresh = new Scanner(detectors);
  if (!s) scanners.set(key, fresh);
  return fresh;
}

/** Runs a set of detectors over texts: shared passes, then each detector's own work. */
export class Scanner {
  private readonly anchorRe: RegExp | null;
  private readonly anchored: { d: Detector; sticky: RegExp }[];
  /** For each first character code (< 128), the anchored detectors whose anchor can start with it. */
  private readonly byChar: { d: Detector; sticky: RegExp }[][];
  private readonly windowed: Detector[];
  private readonly owners: Detector[];
  private readonly tailers: Detector[];

  constructor(readonly detectors: readonly Detector[]) {
    const withAnchor = detectors.filter((d) => d.anchor && d.atAnchor);
    this.anchored = withAnchor.map((d) => ({ d, sticky: new RegExp(d.anchor!.map(([f, r]) => f + r).join('|'), 'y') }));
    // one alternation grouped by first character: much faster than a flat list of alternatives
    const byFirst = new Map<string, string[]>();
    for (const d of withAnchor) {
      for (const [f, r] of d.anchor!) {
        const list = byFirst.get(f) ?? [];
        if (!list.includes(r)) list.push(r);
        byFirst.set(f, list);
      }
    }
    const source = [...byFirst].map(([f, rs]) => (rs.length === 1 ? f + rs[0] : `${f}(?:${rs.join('|')})`)).join('|');
    this.anchorRe = source ? new RegExp(source, 'g') : null;
    this.byChar = [];
    const starts = this.anchored.map((a) => a.d.anchor!.map(([f]) => firstChars(f)));
    for (let c = 0; c < 128; c++) {
      this.byChar.push(this.anchored.filter((_, i) => starts[i]!.some((set) => set[c])));
    }
    this.windowed = detectors.filter((d) => d.inWindow);
    this.owners = detectors.filter((d) => d.own);
    this.tailers = detectors.filter((d) => d.tail);
  }

  scan(text: string, sink: ScanSink): void {
    const re = this.anchorRe;
    if (re) {
      re.lastIndex = 0;
      for (let m = re.exec(text); m !== null; m = re.exec(text)) {
        const at = m.index;
        const list = this.byChar[text.charCodeAt(at)] ?? this.anchored;
        for (let k = 0; k < list.length; k++) {
          const a = list[k]!;
          a.sticky.lastIndex = at;
          if (a.sticky.test(text)) a.d.atAnchor!(text, at, sink);
        }
      }
    }
    if (this.windowed.length > 0) {
      const w = digitWindows(text);
      for (let k = 0; k < w.length; k += 2) {
        const slice = text.slice(w[k]!, w[k + 1]!);
        for (const d of this.windowed) d.inWindow!(text, w[k]!, w[k + 1]!, sink, slice);
      }
    }
    for (const d of this.owners) d.own!(text, sink);
    if (sink.wantTails) for (const d of this.tailers) d.tail!(text, sink);
  }
}
