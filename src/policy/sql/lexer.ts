// Literal normalization for the facts cache: the statement text with the *values* of its
// constants replaced by one marker per constant class, everything else kept verbatim.
//
// Why a small JS lexer and not libpg-query's scanSync / normalizeSync / fingerprintSync: measured
// by bench/sql.bench.ts (p50 for a 37-char / a 167-char SELECT, on a 2-CPU machine): this lexer
// ~1.7 / ~3.5 µs; normalizeSync ~10 / ~30 µs (p99 30 / 70 µs); fingerprintSync ~15 / ~42 µs;
// scanSync ~37 / ~200 µs. Each libpg-query call crosses into WASM and builds and parses a result
// string, so none of them fits in front of a < 20 µs p99 cache hit. normalizeSync would also be
// a wrong key: it numbers literals as $n after the existing parameters, so `SELECT $2, $1` and
// `SELECT 5, $1` get the same text; and fingerprints are made to group similar queries (they
// drop aliases, collapse IN lists), not to keep every token that decides a fact.
//
// Why it is safe (the key may be shared only by statements whose facts are equal):
// - Only literal *values* are replaced; identifiers, keywords, operators, whitespace and comments
//   are kept as written, so two texts share a key only if they differ inside literals alone.
// - The markers are control characters U+0001..U+0004; a text containing any of them (or NUL)
//   gets no key, so a marker in a key can only stand for a replaced literal.
// - A literal is replaced only where this lexer's token boundaries provably match PostgreSQL's
//   (scan.l): plain '…' strings, E'…' strings without a backslash, $tag$…$tag$ strings, decimal
//   integers of at most 9 digits (always ICONST) and plain decimals (FCONST). E'…' strings with
//   escapes stay verbatim in the key (their escapes are validated by the scanner). Anything
//   where a value can change the token structure — U&'…' / U&"…" and UESCAPE, B'…' / X'…' /
//   N'…', numbers with exponents, underscores, radix prefixes or trailing junk, a string followed
//   by a quote (string continuation), an unterminated literal or comment — makes the whole text
//   fall back to an exact-text key (null here).
// - Statements whose *facts* depend on a literal value (SET, set_config, EXPLAIN option values,
//   SQL function bodies, …) are flagged by the extractor and cached under their exact text.
// - A grammar rule that checks a number's value would let a cached sibling answer for a text
//   that does not parse: the one known (float(p): float(0) is a syntax error) is kept verbatim.
//   Any other would still get the facts of the same statement shape, and PostgreSQL would
//   reject the statement when it runs: no fail-open.
// test/sql-facts.test.ts checks the literal boundaries against PostgreSQL's own scanner.

export const MARK_STRING = '\u0001';
export const MARK_INT = '\u0002';
export const MARK_DECIMAL = '\u0003';
export const MARK_DOLLAR = '\u0004';

export interface Normalized {
  key: string;
  /** Replacements as flat quadruples [srcStart, srcEnd, keyStart, keyEnd], in order. */
  map: number[];
}

function isIdentStart(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c >= 0x80;
}

function isIdentCont(c: number): boolean {
  return isIdentStart(c) || (c >= 48 && c <= 57) || c === 36;
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

/** After a string literal ending at `j`: does another quote follow across whitespace/`--` comments? */
function quoteFollows(sql: string, j: number): boolean {
  const n = sql.length;
  while (j < n) {
    const c = sql.charCodeAt(j);
    if (isSpace(c)) j++;
    else if (c === 45 && sql.charCodeAt(j + 1) === 45) {
      while (j < n && sql.charCodeAt(j) !== 10 && sql.charCodeAt(j) !== 13) j++;
    } else return c === 39;
  }
  return false;
}

/** Normalize; null when the text must be keyed exactly. */
export function normalizeLiterals(sql: string): Normalized | null {
  const n = sql.length;
  let out = '';
  let last = 0; // end of the verbatim part already copied
  let keyLen = 0;
  const map: number[] = [];
  const replace = (start: number, end: number, mark: string) => {
    out += sql.slice(last, start);
    keyLen += start - last;
    map.push(start, end, keyLen, keyLen + 1);
    out += mark;
    keyLen += 1;
    last = end;
  };

  let i = 0;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (c <= 4) return null; // NUL or a marker character
    if (isSpace(c)) {
      i++;
      continue;
    }
    const d = i + 1 < n ? sql.charCodeAt(i + 1) : -1;
    if (c === 45 && d === 45) {
      // -- comment to end of line
      i += 2;
      while (i < n) {
        const e = sql.charCodeAt(i);
        if (e === 10 || e === 13) break;
        if (e <= 4) return null;
        i++;
      }
      continue;
    }
    if (c === 47 && d === 42) {
      // /* comment */, nested
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        const e = sql.charCodeAt(i);
        if (e <= 4) return null;
        if (e === 47 && sql.charCodeAt(i + 1) === 42) {
          depth++;
          i += 2;
        } else if (e === 42 && sql.charCodeAt(i + 1) === 47) {
          depth--;
          i += 2;
        } else i++;
      }
      if (depth > 0) return null;
      continue;
    }
    if (c === 39) {
      // '…' with '' for a quote (standard_conforming_strings = on, as the parser assumes)
      let j = i + 1;
      for (;;) {
        if (j >= n) return null;
        const e = sql.charCodeAt(j);
        if (e <= 4) return null;
        if (e === 39) {
          if (sql.charCodeAt(j + 1) === 39) {
            j += 2;
            continue;
          }
          break;
        }
        j++;
      }
      j++;
      if (quoteFollows(sql, j)) return null;
      replace(i, j, MARK_STRING);
      i = j;
      continue;
    }
    if (c === 34) {
      // "quoted identifier": verbatim
      let j = i + 1;
      for (;;) {
        if (j >= n) return null;
        const e = sql.charCodeAt(j);
        if (e <= 4) return null;
        if (e === 34) {
          if (sql.charCodeAt(j + 1) === 34) {
            j += 2;
            continue;
          }
          break;
        }
        j++;
      }
      i = j + 1;
      continue;
    }
    if (isIdentStart(c)) {
      if (d === 39) {
        if (c === 101 || c === 69) {
          // E'…': backslash escapes; replaced only when it has none
          let j = i + 2;
          let escapes = false;
          for (;;) {
            if (j >= n) return null;
            const e = sql.charCodeAt(j);
            if (e <= 4) return null;
            if (e === 92) {
              escapes = true;
              j += 2;
              continue;
            }
            if (e === 39) {
              if (sql.charCodeAt(j + 1) === 39) {
                j += 2;
                continue;
              }
              break;
            }
            j++;
          }
          j++;
          if (quoteFollows(sql, j)) return null;
          if (!escapes) replace(i, j, MARK_STRING);
          i = j;
          continue;
        }
        if (c === 98 || c === 66 || c === 120 || c === 88 || c === 110 || c === 78) return null; // B'' X'' N''
      }
      if ((c === 117 || c === 85) && d === 38) return null; // U&'…' / U&"…"
      let j = i + 1;
      while (j < n && isIdentCont(sql.charCodeAt(j))) j++;
      if (j - i === 7 && sql.slice(i, j).toLowerCase() === 'uescape') return null;
      i = j;
      continue;
    }
    if (c === 36) {
      // $n parameter, or $tag$…$tag$
      if (isDigit(d)) {
        let j = i + 1;
        while (j < n && isDigit(sql.charCodeAt(j))) j++;
        if (j < n && isIdentCont(sql.charCodeAt(j))) return null;
        i = j;
        continue;
      }
      if (d === 36 || (d !== -1 && isIdentStart(d))) {
        let j = i + 1;
        while (j < n && sql.charCodeAt(j) !== 36) {
          const e = sql.charCodeAt(j);
          if (!isIdentStart(e) && !isDigit(e)) return null; // `$abc ` is no delimiter
          j++;
        }
        if (j >= n) return null;
        const tag = sql.slice(i, j + 1);
        const close = sql.indexOf(tag, j + 1);
        if (close < 0) return null;
        const end = close + tag.length;
        for (let k = j + 1; k < close; k++) if (sql.charCodeAt(k) <= 4) return null;
        replace(i, end, MARK_DOLLAR);
        i = end;
        continue;
      }
      i++;
      continue;
    }
    if (c === 46 && d === 46) {
      i += 2; // `..` is one token (DOT_DOT): `..1` is `..` then `1`, not `.` then `.1`
      continue;
    }
    if (isDigit(c) || (c === 46 && isDigit(d))) {
      let j = i;
      let decimal = false;
      if (c === 46) {
        decimal = true;
        j = i + 1;
        while (j < n && isDigit(sql.charCodeAt(j))) j++;
      } else {
        while (j < n && isDigit(sql.charCodeAt(j))) j++;
        if (j < n && sql.charCodeAt(j) === 46) {
          if (!isDigit(sql.charCodeAt(j + 1))) return null; // `1.`, `1..2`
          decimal = true;
          j++;
          while (j < n && isDigit(sql.charCodeAt(j))) j++;
        } else if (j - i > 9) {
          return null; // may or may not fit an int4 (ICONST vs FCONST)
        }
      }
      if (j < n) {
        const e = sql.charCodeAt(j);
        if (isIdentCont(e) || e === 46) return null; // exponent, `_`, radix prefix, junk, `1.5.`
      }
      // float(p): the grammar itself checks p (float(0) is a syntax error): keep it verbatim.
      if (!decimal && afterFloatParen(sql, i)) {
        i = j;
        continue;
      }
      replace(i, j, decimal ? MARK_DECIMAL : MARK_INT);
      i = j;
      continue;
    }
    i++; // operator or punctuation: verbatim
  }
  if (map.length === 0) return { key: sql, map };
  out += sql.slice(last);
  return { key: out, map };
}

/** Is position `i` just after `float (` (an identifier `float`, any case, spaces allowed)? */
function afterFloatParen(sql: string, i: number): boolean {
  let k = i - 1;
  while (k >= 0 && isSpace(sql.charCodeAt(k))) k--;
  if (k < 0 || sql.charCodeAt(k) !== 40) return false;
  k--;
  while (k >= 0 && isSpace(sql.charCodeAt(k))) k--;
  if (k < 4) return false;
  if (sql.slice(k - 4, k + 1).toLowerCase() !== 'float') return false;
  return k - 5 < 0 || !isIdentCont(sql.charCodeAt(k - 5));
}

/** A source offset (at a token boundary) → the same place in the key. */
export function srcToKey(map: readonly number[], p: number): number {
  let delta = 0;
  for (let q = 0; q < map.length; q += 4) {
    if (map[q + 1]! > p) break;
    delta = map[q + 3]! - map[q + 1]!;
  }
  return p + delta;
}

/** A key offset (at a token boundary) → the same place in the source. */
export function keyToSrc(map: readonly number[], p: number): number {
  let delta = 0;
  for (let q = 0; q < map.length; q += 4) {
    if (map[q + 3]! > p) break;
    delta = map[q + 1]! - map[q + 3]!;
  }
  return p + delta;
}
