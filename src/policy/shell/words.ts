// Words → argv fields, the way bash would see them before running the command, as far as that is
// knowable without running anything: quotes removed, escapes resolved ($'…' included), brace
// expansion performed ({rm,-rf,/} is three fields). Anything computed at run time (parameter,
// command, arithmetic and process substitution, extended globs) makes the field dynamic.

import { nodeType, posOf, type DblQuoted, type LineCol, type Lit, type Node, type SglQuoted, type Word } from './ast.js';

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

const DYNAMIC_PIECE: Piece = { value: '', literal: false, glob: false, quoted: false };

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

/** The values of a bash sequence expression `{a..b[..step]}`, or null when it is not one. */
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
    if (!Number.isSafeInteger(x) || !Number.isSafeInteger(y)) return null;
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

/** One part of a word that is not a brace-expansion character of its own. */
function partPiece(part: Node, bq: number): Piece {
  switch (nodeType(part)) {
    case 'Lit': {
      const raw = (part as Lit).Value;
      if (bq >= 2 && raw.includes('\\')) return DYNAMIC_PIECE;
      const u = unescapeUnquoted(raw);
      return { value: u.value, literal: true, glob: u.glob, quoted: false };
    }
    case 'SglQuoted': {
      const q = part as SglQuoted;
      const raw = unBackquote(q.Value, bq);
      const value = q.Dollar ? decodeAnsiC(raw) : raw;
      return value === null ? DYNAMIC_PIECE : { value, literal: true, glob: false, quoted: true };
    }
    case 'DblQuoted': {
      let value = '';
      let literal = true;
      for (const inner of (part as DblQuoted).Parts) {
        const raw = nodeType(inner) === 'Lit' ? (inner as Lit).Value : null;
        if (raw !== null && !(bq >= 2 && raw.includes('\\'))) value += unescapeDouble(raw);
        else literal = false;
      }
      return { value: literal ? value : '', literal, glob: false, quoted: true };
    }
    default:
      // ParamExp, CmdSubst, ArithmExp, ProcSubst, ExtGlob: computed at run time.
      return DYNAMIC_PIECE;
  }
}

// --- Brace expansion, ported from bash's braces.c (brace_expand, brace_gobbler, expand_amble,
// expand_seqterm) over atoms: a plain unquoted character (the only kind that can be special), an
// escaped character, or an opaque piece (quoted text, $…, `…`).

type Atom = { kind: 'char'; c: string } | { kind: 'esc'; c: string } | { kind: 'piece'; piece: Piece };

function atomsOf(parts: Node[], bq: number): Atom[] {
  const atoms: Atom[] = [];
  for (const part of parts) {
    if (nodeType(part) !== 'Lit' || (bq >= 2 && (part as Lit).Value.includes('\\'))) {
      atoms.push({ kind: 'piece', piece: partPiece(part, bq) });
      continue;
    }
    const raw = (part as Lit).Value;
    for (let i = 0; i < raw.length; i++) {
      const c = raw[i]!;
      if (c === '\\' && i + 1 < raw.length) {
        const next = raw[++i]!;
        if (next !== '\n') atoms.push({ kind: 'esc', c: next });
      } else if (c !== '\\') atoms.push({ kind: 'char', c });
    }
  }
  return atoms;
}

const isChar = (a: Atom | undefined, c: string): boolean => a !== undefined && a.kind === 'char' && a.c === c;
const isSpace = (a: Atom | undefined): boolean => a !== undefined && a.kind !== 'piece' && (a.c === ' ' || a.c === '\t' || a.c === '\n');

/**
 * brace_gobbler: index of the first plain `satisfy` at nesting level 0 from `start`, or -1. A `}`
 * only closes once a `,` or a `..` not followed by `}` was seen at level 0.
 */
function gobble(atoms: Atom[], start: number, satisfy: '{' | '}' | ','): number {
  let level = 0;
  let commas = satisfy === '}' ? 0 : 1;
  for (let i = start; i < atoms.length; i++) {
    const a = atoms[i]!;
    if (a.kind !== 'char') continue;
    const c = a.c;
    if (c === satisfy && level === 0 && commas > 0) {
      // bash ignores a `{` at the start (or after whitespace) that is followed by `}`.
      if (c === '{' && (i === 0 || isSpace(atoms[i - 1])) && isChar(atoms[i + 1], '}')) continue;
      return i;
    }
    if (c === '{') level++;
    else if (c === '}' && level > 0) level--;
    else if (satisfy === '}' && level === 0) {
      if (c === ',') commas++;
      else if (c === '.' && isChar(atoms[i + 1], '.') && !isChar(atoms[i + 2], '}')) commas++;
    }
  }
  return -1;
}

function charAtoms(s: string): Atom[] {
  return [...s].map((c) => ({ kind: 'char', c }) as Atom);
}

/** expand_seqterm: `{x..y[..incr]}` with integers or single characters, or null if not one. */
function seqTerm(amble: Atom[]): Atom[][] | null {
  if (!amble.every((a) => a.kind === 'char')) return null;
  const text = amble.map((a) => (a as { c: string }).c).join('');
  const m = /^(.*?)\.\.(.*?)(?:\.\.(.*))?$/s.exec(text);
  if (m === null) return null;
  const [, a, b, step] = m;
  const isInt = (v: string | undefined): boolean => v !== undefined && /^[+-]?\d+$/.test(v);
  if (step !== undefined && !isInt(step)) return null;
  if (!(isInt(a) && isInt(b)) && !(a!.length === 1 && b!.length === 1 && !isInt(a) && !isInt(b))) return null;
  const seq = sequence(step === undefined ? [a!, b!] : [a!, b!, step]);
  return seq === null ? null : seq.map(charAtoms);
}

function cross(left: Atom[][], right: Atom[][]): Atom[][] {
  if (left.length * right.length > MAX_BRACE_FIELDS) throw new Overflow('brace expansion too large');
  const out: Atom[][] = [];
  for (const l of left) for (const r of right) out.push([...l, ...r]);
  return out;
}

/** expand_amble: the comma-separated elements, each brace-expanded. */
function expandAmble(amble: Atom[], depth: number): Atom[][] {
  const out: Atom[][] = [];
  let start = 0;
  while (start <= amble.length) {
    let end = gobble(amble, start, ',');
    if (end < 0) end = amble.length;
    out.push(...braceExpand(amble.slice(start, end), depth + 1));
    if (out.length > MAX_BRACE_FIELDS) throw new Overflow('brace expansion too large');
    start = end + 1;
  }
  return out;
}

/** brace_expand: the words one word's atoms expand into. */
function braceExpand(text: Atom[], depth = 0): Atom[][] {
  if (depth > 64) throw new Overflow('brace expansion nested too deep');
  let open = -1;
  let close = -1;
  for (let i = 0; i < text.length; ) {
    const o = gobble(text, i, '{');
    if (o < 0) break;
    const c = gobble(text, o + 1, '}');
    if (c >= 0) {
      open = o;
      close = c;
      break;
    }
    i = o + 1;
  }
  if (open < 0) return [text];
  const preamble = text.slice(0, open);
  const amble = text.slice(open + 1, close);
  const postamble = text.slice(close + 1);
  let tack: Atom[][];
  // bash looks for any unescaped comma here, quoted or not; inside a piece it is not known.
  const comma = amble.some((a) => isChar(a, ',') || (a.kind === 'piece' && (!a.piece.literal || a.piece.value.includes(','))));
  if (comma) {
    if (amble.some((a) => a.kind === 'piece' && !a.piece.literal) && !amble.some((a) => isChar(a, ','))) {
      throw new Overflow('cannot tell whether a computed part holds a comma');
    }
    tack = expandAmble(amble, depth);
  } else {
    const seq = seqTerm(amble);
    if (seq !== null) tack = seq;
    else if (postamble.length > 0) tack = [text.slice(open, close + 1)];
    else return [text];
  }
  let result = tack.map((t) => [...preamble, ...t]);
  if (postamble.length > 0) result = cross(result, braceExpand(postamble, depth + 1));
  if (result.length > MAX_BRACE_FIELDS) throw new Overflow('brace expansion too large');
  return result;
}

function atomsPiece(atoms: Atom[]): Piece {
  let value = '';
  let literal = true;
  let quoted = false;
  let glob = false;
  let openBracket = false;
  for (const a of atoms) {
    if (a.kind === 'piece') {
      value += a.piece.value;
      literal &&= a.piece.literal;
      quoted ||= a.piece.quoted;
      glob ||= a.piece.glob;
      continue;
    }
    value += a.c;
    if (a.kind === 'char') {
      if (a.c === '*' || a.c === '?') glob = true;
      else if (a.c === '[') openBracket = true;
      else if (a.c === ']' && openBracket) glob = true;
    }
  }
  return { value: literal ? value : '', literal, glob, quoted };
}

/**
 * The argv fields one word becomes. Brace expansion is applied as bash does it (it can turn one
 * word into several, and into flags); an unquoted word that expands to nothing is dropped.
 */
export function expandWord(word: Word, bq = 0): Field[] {
  const pos = posOf(word);
  let pieces: Piece[];
  try {
    pieces = braceExpand(atomsOf(word.Parts, bq)).map(atomsPiece);
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
    const p = partPiece(part, bq);
    if (!p.literal) return null;
    out += p.value;
  }
  return out;
}

/** One field for a word taken as a whole (redirection targets, here-strings). */
export function wordField(word: Word, bq = 0): Field {
  const v = wordLiteral(word, bq);
  return { value: v ?? DYNAMIC, literal: v !== null, glob: false, pos: posOf(word) };
}
