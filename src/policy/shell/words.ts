// Words → argv fields, the way bash would see them before running the command, as far as that is
// knowable without running anything: quotes removed, escapes resolved ($'…' included), brace
// expansion performed ({rm,-rf,/} is three fields). Anything computed at run time (parameter,
// command, arithmetic and process substitution, extended globs) makes the field dynamic.

import type { BraceExp, DblQuoted, Lit, Node, SglQuoted, Word } from 'mvdan-sh';
import { nodeType, posOf, syntax, type LineCol } from './ast.js';

/** The value given for a word that is not a literal. */
export const DYNAMIC = '\u0000dynamic';

/** Most fields one word may expand into (brace expansion); beyond it the word counts as dynamic. */
export const MAX_BRACE_FIELDS = 256;

export interface Field {
  /** The literal value, or DYNAMIC. */
  value: string;
  literal: boolean;
  /** Has unquoted pathname-expansion characters (`*`, `?`, `[`): the value may change at run time. */
  glob: boolean;
  /** Where the word starts in the text it was parsed from. */
  pos: LineCol;
  /** The word is (or holds) a process substitution `<(…)`: a path to the output of commands. */
  procSubst?: boolean;
}

interface Piece {
  value: string;
  literal: boolean;
  glob: boolean;
  quoted: boolean;
}

const EMPTY_PIECE: Piece = { value: '', literal: true, glob: false, quoted: false };
const DYNAMIC_PIECE: Piece = { value: '', literal: false, glob: false, quoted: false };

function concat(a: Piece, b: Piece): Piece {
  return {
    value: a.value + b.value,
    literal: a.literal && b.literal,
    glob: a.glob || b.glob,
    quoted: a.quoted || b.quoted,
  };
}

/**
 * Unquoted text: `\x` → `x`, backslash-newline removed. Reports unquoted glob characters (`*`,
 * `?`, and `[` when a `]` follows it: a lone `[` is not a pattern, so `[ -d x ]` stays literal).
 */
export function unescapeUnquoted(raw: string): { value: string; glob: boolean } {
  let out = '';
  let glob = false;
  let openBracket = false;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === '\\') {
      const next = raw[i + 1];
      if (next === undefined) break;
      i++;
      if (next !== '\n') out += next;
      continue;
    }
    if (c === '*' || c === '?') glob = true;
    else if (c === '[') openBracket = true;
    else if (c === ']' && openBracket) glob = true;
    out += c;
  }
  return { value: out, glob };
}

/** Inside double quotes a backslash only escapes `$`, `` ` ``, `"`, `\` and newline. */
export function unescapeDouble(raw: string): string {
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === '\\') {
      const next = raw[i + 1];
      if (next === '$' || next === '`' || next === '"' || next === '\\') {
        out += next;
        i++;
        continue;
      }
      if (next === '\n') {
        i++;
        continue;
      }
    }
    out += c;
  }
  return out;
}

/** Unquoted here-document body: like double quotes, except `"` is not special. */
export function unescapeHeredoc(raw: string): string {
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === '\\') {
      const next = raw[i + 1];
      if (next === '$' || next === '`' || next === '\\') {
        out += next;
        i++;
        continue;
      }
      if (next === '\n') {
        i++;
        continue;
      }
    }
    out += c;
  }
  return out;
}

/**
 * Inside `…` bash first removes a backslash before `$`, `` ` `` and `\\`, then parses. The parser
 * does that (for one level) for unquoted and double-quoted text but keeps single-quoted text as
 * written, so single-quoted values are unescaped here once per enclosing backquote level. Inside
 * two or more levels the parser's unquoted/double-quoted text with backslashes is not what bash
 * sees (checked against bash): such words count as dynamic (fail closed) rather than guessed.
 */
export function unBackquote(raw: string, levels: number): string {
  let s = raw;
  for (let n = 0; n < levels && s.includes('\\'); n++) s = s.replace(/\\([$`\\])/g, '$1');
  return s;
}

const SIMPLE_ESCAPES: Record<string, string> = {
  a: '\u0007',
  b: '\b',
  e: '\u001b',
  E: '\u001b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
  v: '\v',
  '\\': '\\',
  "'": "'",
  '"': '"',
  '?': '?',
};

function readDigits(raw: string, start: number, max: number, re: RegExp): string {
  let s = '';
  for (let j = start; j < raw.length && s.length < max && re.test(raw[j]!); j++) s += raw[j]!;
  return s;
}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes the body of `$'…'` as bash does (in a UTF-8 locale): `\xHH` and octal escapes are raw
 * bytes, `\u`/`\U` code points, a NUL ends the string (bash truncates there). Returns null when
 * the bytes are not valid UTF-8: such a value cannot be given as a string, so it counts as dynamic.
 */
export function decodeAnsiC(raw: string): string | null {
  const bytes: number[] = [];
  const text = (s: string): void => {
    for (const b of utf8.encode(s)) bytes.push(b);
  };
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c !== '\\' || i + 1 >= raw.length) {
      text(c);
      continue;
    }
    const e = raw[i + 1]!;
    const simple = SIMPLE_ESCAPES[e];
    if (simple !== undefined) {
      text(simple);
      i++;
      continue;
    }
    if (/[0-7]/.test(e)) {
      const digits = readDigits(raw, i + 1, 3, /[0-7]/);
      const byte = parseInt(digits, 8) & 0xff;
      i += digits.length;
      if (byte === 0) break;
      bytes.push(byte);
    } else if (e === 'x') {
      const digits = readDigits(raw, i + 2, 2, /[0-9a-fA-F]/);
      if (digits.length === 0) {
        text('\\x');
        i++;
        continue;
      }
      const byte = parseInt(digits, 16);
      i += 1 + digits.length;
      if (byte === 0) break;
      bytes.push(byte);
    } else if (e === 'u' || e === 'U') {
      const digits = readDigits(raw, i + 2, e === 'u' ? 4 : 8, /[0-9a-fA-F]/);
      if (digits.length === 0) {
        text('\\' + e);
        i++;
        continue;
      }
      const code = parseInt(digits, 16);
      i += 1 + digits.length;
      if (code === 0) break;
      if (code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return null;
      text(String.fromCodePoint(code));
    } else if (e === 'c' && i + 2 < raw.length) {
      const byte = raw.charCodeAt(i + 2) & 0x1f;
      i += 2;
      if (byte === 0) break;
      bytes.push(byte);
    } else {
      text('\\' + e);
      i++;
    }
  }
  try {
    return strictUtf8.decode(Uint8Array.from(bytes));
  } catch {
    return null;
  }
}

class Overflow extends Error {}

function sequence(elems: string[]): string[] | null {
  const [a, b, stepRaw] = elems;
  if (a === undefined || b === undefined) return null;
  let step = 1;
  if (stepRaw !== undefined) {
    if (!/^[+-]?\d+$/.test(stepRaw)) return null;
    step = Math.abs(parseInt(stepRaw, 10)) || 1;
  }
  const out: string[] = [];
  if (/^[+-]?\d+$/.test(a) && /^[+-]?\d+$/.test(b)) {
    const x = parseInt(a, 10);
    const y = parseInt(b, 10);
    const pad = /^[+-]?0\d/.test(a) || /^[+-]?0\d/.test(b) ? Math.max(a.length, b.length) : 0;
    const dir = x <= y ? 1 : -1;
    for (let v = x, n = 0; dir > 0 ? v <= y : v >= y; v += dir * step, n++) {
      if (n >= MAX_BRACE_FIELDS) throw new Overflow('brace sequence too long');
      let s = String(Math.abs(v));
      const width = pad - (v < 0 ? 1 : 0);
      while (s.length < width) s = '0' + s;
      out.push((v < 0 ? '-' : '') + s);
    }
    return out;
  }
  if (a.length === 1 && b.length === 1) {
    const x = a.charCodeAt(0);
    const y = b.charCodeAt(0);
    const dir = x <= y ? 1 : -1;
    for (let v = x, n = 0; dir > 0 ? v <= y : v >= y; v += dir * step, n++) {
      if (n >= MAX_BRACE_FIELDS) throw new Overflow('brace sequence too long');
      out.push(String.fromCharCode(v));
    }
    return out;
  }
  return null;
}

function product(acc: Piece[], alts: Piece[]): Piece[] {
  if (acc.length * alts.length > MAX_BRACE_FIELDS) throw new Overflow('brace expansion too large');
  const out: Piece[] = [];
  for (const a of acc) for (const b of alts) out.push(concat(a, b));
  return out;
}

function expandParts(parts: Node[], bq: number): Piece[] {
  let acc: Piece[] = [EMPTY_PIECE];
  for (const part of parts) acc = product(acc, partAlternatives(part, bq));
  return acc;
}

function partAlternatives(part: Node, bq: number): Piece[] {
  switch (nodeType(part)) {
    case 'Lit': {
      const raw = (part as Lit).Value;
      if (bq >= 2 && raw.includes('\\')) return [DYNAMIC_PIECE];
      const u = unescapeUnquoted(raw);
      return [{ value: u.value, literal: true, glob: u.glob, quoted: false }];
    }
    case 'SglQuoted': {
      const q = part as SglQuoted;
      const raw = unBackquote(q.Value, bq);
      const value = q.Dollar ? decodeAnsiC(raw) : raw;
      if (value === null) return [DYNAMIC_PIECE];
      return [{ value, literal: true, glob: false, quoted: true }];
    }
    case 'DblQuoted': {
      let value = '';
      let literal = true;
      for (const inner of (part as DblQuoted).Parts) {
        const raw = nodeType(inner) === 'Lit' ? (inner as Lit).Value : null;
        if (raw !== null && !(bq >= 2 && raw.includes('\\'))) value += unescapeDouble(raw);
        else literal = false;
      }
      return [{ value: literal ? value : '', literal, glob: false, quoted: true }];
    }
    case 'BraceExp': {
      const be = part as BraceExp;
      if (be.Sequence) {
        const bounds: string[] = [];
        for (const w of be.Elems) {
          const v = wordLiteral(w, bq);
          if (v === null) return [DYNAMIC_PIECE];
          bounds.push(v);
        }
        const seq = sequence(bounds);
        if (seq === null) return [{ value: `{${bounds.join('..')}}`, literal: true, glob: false, quoted: false }];
        return seq.map((value) => ({ value, literal: true, glob: false, quoted: false }));
      }
      const out: Piece[] = [];
      for (const w of be.Elems) {
        out.push(...expandParts(w.Parts, bq));
        if (out.length > MAX_BRACE_FIELDS) throw new Overflow('brace expansion too large');
      }
      return out;
    }
    default:
      // ParamExp, CmdSubst, ArithmExp, ProcSubst, ExtGlob: computed at run time.
      return [DYNAMIC_PIECE];
  }
}

function hasUnquotedBrace(word: Word): boolean {
  for (const part of word.Parts) {
    if (nodeType(part) === 'Lit' && (part as Lit).Value.includes('{')) return true;
  }
  return false;
}

/**
 * The argv fields one word becomes. Brace expansion is applied (it can turn one word into
 * several, and into flags); an unquoted word that expands to nothing is dropped, as bash does.
 */
export function expandWord(word: Word, bq = 0): Field[] {
  const pos = posOf(word);
  if (hasUnquotedBrace(word)) syntax.SplitBraces(word);
  let pieces: Piece[];
  try {
    pieces = expandParts(word.Parts, bq);
  } catch (e) {
    if (e instanceof Overflow) return [{ value: DYNAMIC, literal: false, glob: false, pos }];
    throw e;
  }
  const procSubst = word.Parts.some((p: Node) => nodeType(p) === 'ProcSubst');
  const out: Field[] = [];
  for (const p of pieces) {
    if (p.literal && p.value === '' && !p.quoted) continue;
    const f: Field = { value: p.literal ? p.value : DYNAMIC, literal: p.literal, glob: p.glob, pos };
    if (procSubst) f.procSubst = true;
    out.push(f);
  }
  return out;
}

/**
 * The value of a word as one literal string (no brace expansion), or null when not literal. `bq`:
 * how many backquote substitutions enclose the word (see unBackquote); the same for the others.
 */
export function wordLiteral(word: Word, bq = 0): string | null {
  let out = '';
  for (const part of word.Parts) {
    let alts: Piece[];
    try {
      alts = partAlternatives(part, bq);
    } catch (e) {
      if (e instanceof Overflow) return null;
      throw e;
    }
    if (alts.length !== 1 || !alts[0]!.literal) return null;
    out += alts[0]!.value;
  }
  return out;
}

/** One field for a word taken as a whole (redirection targets, here-strings). */
export function wordField(word: Word, bq = 0): Field {
  const v = wordLiteral(word, bq);
  return { value: v ?? DYNAMIC, literal: v !== null, glob: false, pos: posOf(word) };
}
