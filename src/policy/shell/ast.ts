// The bash parser (mvdan-sh, a GopherJS build of mvdan.cc/sh/v3/syntax) behind one small surface:
// parse a string into a plain JavaScript AST, or throw PortcullisError('shell_parse_error') with
// line and column.
//
// Why a plain AST: every property read through the package's public wrappers converts Go values
// to JavaScript again (reading `file.Stmts` of a two-command line costs ~100 µs; walking it, ms).
// So the tree is copied once, from the Go values behind the wrappers (`__internal_object__`),
// into plain objects `{ type: 'CallExpr', Args: [...], ... }` with the Go field names. That
// layout belongs to this pinned build; `checkLayout` verifies it at load time against the public
// API, and this module refuses to load rather than read a tree it does not understand.
//
// Operator fields are numeric Go tokens; their meaning is read off a calibration parse at load
// time as well (OPS), so no token number is hard-coded.

import sh from 'mvdan-sh';
import type { ParseError, Parser } from 'mvdan-sh';
import { PortcullisError } from '../types.js';

const syntax = sh.syntax;

// ---------------------------------------------------------------------------------------------
// The plain AST (only the node types and fields the extractor reads are typed; every node keeps
// all its Go fields, and `walk` visits all of them).
// ---------------------------------------------------------------------------------------------

/** A source position: byte offset, 1-based line and column (0 when unknown). */
export interface Pos {
  offset: number;
  line: number;
  col: number;
}

export interface Node {
  type: string;
  [field: string]: unknown;
}

export interface File extends Node {
  type: 'File';
  Stmts: Stmt[];
}
export interface Stmt extends Node {
  type: 'Stmt';
  Cmd: Node | null;
  Redirs: Redirect[];
  Position: Pos;
}
export interface Lit extends Node {
  type: 'Lit';
  Value: string;
}
export interface Word extends Node {
  type: 'Word';
  Parts: Node[];
}
export interface SglQuoted extends Node {
  type: 'SglQuoted';
  Value: string;
  Dollar: boolean;
}
export interface DblQuoted extends Node {
  type: 'DblQuoted';
  Parts: Node[];
  Dollar: boolean;
}
export interface CmdSubst extends Node {
  type: 'CmdSubst';
  Stmts: Stmt[];
  Backquotes: boolean;
}
export interface ProcSubst extends Node {
  type: 'ProcSubst';
  Op: number;
  Stmts: Stmt[];
}
export interface Expansion extends Node {
  type: 'Expansion';
  Op: number;
  Word: Word | null;
}
export interface ParamExp extends Node {
  type: 'ParamExp';
  Param: Lit | null;
  Exp: Expansion | null;
}
export interface Assign extends Node {
  type: 'Assign';
  Name: Lit | null;
  Value: Word | null;
  Index: Node | null;
  Array: Node | null;
  Naked: boolean;
  Append: boolean;
}
export interface CallExpr extends Node {
  type: 'CallExpr';
  Assigns: Assign[];
  Args: Word[];
}
export interface Redirect extends Node {
  type: 'Redirect';
  Op: number;
  N: Lit | null;
  Word: Word | null;
  Hdoc: Word | null;
}
export interface BinaryCmd extends Node {
  type: 'BinaryCmd';
  Op: number;
  X: Stmt;
  Y: Stmt;
}
export interface Subshell extends Node {
  type: 'Subshell';
  Stmts: Stmt[];
}
export interface Block extends Node {
  type: 'Block';
  Stmts: Stmt[];
}
export interface FuncDecl extends Node {
  type: 'FuncDecl';
  Name: Lit;
  Body: Stmt;
}
export interface TimeClause extends Node {
  type: 'TimeClause';
  Stmt: Stmt | null;
  PosixFormat: boolean;
}
export interface DeclClause extends Node {
  type: 'DeclClause';
  Variant: Lit;
  Args: Assign[];
}

export function nodeType(node: Node): string {
  return node.type;
}

function isNode(v: unknown): v is Node {
  return typeof v === 'object' && v !== null && typeof (v as { type?: unknown }).type === 'string';
}

function isPos(v: unknown): v is Pos {
  return typeof v === 'object' && v !== null && !('type' in v) && typeof (v as { line?: unknown }).line === 'number';
}

/**
 * Visits every node below `node` (not `node` itself), depth first in field order; `visit`
 * returning false skips that node's children.
 */
export function walk(node: Node, visit: (n: Node) => boolean): void {
  for (const key in node) {
    const v = node[key];
    if (Array.isArray(v)) {
      for (const el of v) if (isNode(el) && visit(el)) walk(el, visit);
    } else if (isNode(v) && visit(v)) walk(v, visit);
  }
}

/** Where a position is in the parsed text, 1-based. */
export interface LineCol {
  line: number;
  column: number;
}

/** The start of a node: its earliest known position field, else that of its first child. */
export function posOf(node: Node): LineCol {
  let best: Pos | null = null;
  for (const key in node) {
    const v = node[key];
    if (isPos(v) && v.line > 0 && (best === null || v.offset < best.offset)) best = v;
  }
  if (best !== null) return { line: best.line, column: best.col };
  for (const key in node) {
    const v = node[key];
    const child = Array.isArray(v) ? v.find(isNode) : isNode(v) ? v : undefined;
    if (child !== undefined) return posOf(child);
  }
  return { line: 1, column: 1 };
}

// ---------------------------------------------------------------------------------------------
// Copying the Go values into plain objects
// ---------------------------------------------------------------------------------------------

/** Column bits of the packed `lineCol` of a Go syntax.Pos in this build (checked by checkLayout). */
const COL_BITS = 14;

interface GoValue {
  [field: string]: unknown;
}

function goTypeName(v: GoValue): string | null {
  const ctor = v.constructor as { string?: unknown; nil?: unknown } | undefined;
  if (ctor === undefined || typeof ctor.string !== 'string') return null; // a nil interface
  if (ctor.nil === v) return null; // a nil pointer
  return ctor.string;
}

function hasNonAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return true;
  return false;
}

/** Go strings are kept as UTF-8 bytes, one per UTF-16 unit. */
function goString(s: string): string {
  return hasNonAscii(s) ? Buffer.from(s, 'latin1').toString('utf8') : s;
}

type ColumnMap = ((line: number, byteCol: number) => number) | null;

/**
 * The parser counts columns in UTF-8 bytes; positions here count characters (UTF-16 units, as
 * JavaScript strings do). Null for ASCII text, where both agree.
 */
function columnMap(src: string): ColumnMap {
  if (!hasNonAscii(src)) return null;
  const lines = src.split('\n');
  return (line, byteCol) => {
    const text = lines[line - 1];
    if (text === undefined || byteCol < 1) return byteCol;
    return Buffer.from(text, 'utf8').subarray(0, byteCol - 1).toString('utf8').length + 1;
  };
}

function plain(v: unknown, cols: ColumnMap): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') return goString(v);
  if (typeof v === 'number' || typeof v === 'boolean') return v;
  if (typeof v !== 'object') return null;
  const g = v as GoValue;
  const arr = g['$array'];
  if (arr !== undefined) {
    // A slice: a window on a backing array that the parser reuses (the offset matters).
    const off = g['$offset'] as number;
    const len = g['$length'] as number;
    const out: unknown[] = new Array(len);
    for (let i = 0; i < len; i++) out[i] = plain((arr as unknown[])[off + i], cols);
    return out;
  }
  const tname = goTypeName(g);
  if (tname === null) return null;
  const name = tname.startsWith('*') ? tname.slice(1) : tname;
  const short = name.startsWith('syntax.') ? name.slice(7) : name;
  if (short === 'Pos') {
    const lineCol = g['lineCol'] as number;
    const line = lineCol >>> COL_BITS;
    const col = lineCol & ((1 << COL_BITS) - 1);
    return { offset: g['offs'] as number, line, col: cols === null || line === 0 ? col : cols(line, col) } satisfies Pos;
  }
  const out: Node = { type: short };
  for (const key of Object.keys(g)) {
    if (key === '$val') continue;
    out[key] = plain(g[key], cols);
  }
  return out;
}

function toPlainFile(wrapper: unknown, src: string): File {
  const internal = (wrapper as { __internal_object__?: unknown }).__internal_object__;
  const file = plain(internal, columnMap(src));
  if (!isNode(file) || file.type !== 'File' || !Array.isArray(file['Stmts'])) {
    throw new Error('mvdan-sh: the parsed file does not have the expected internal layout');
  }
  return file as File;
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

let parser: Parser | null = null;

function getParser(): Parser {
  if (parser === null) parser = syntax.NewParser(syntax.KeepComments(false));
  return parser;
}

function isParseError(e: unknown): e is ParseError {
  if (typeof e !== 'object' || e === null) return false;
  const rec = e as Record<string, unknown>;
  return typeof rec['Text'] === 'string' && typeof rec['Pos'] === 'object' && rec['Pos'] !== null;
}

/** Message and position of whatever the parser threw (its errors are not Error instances). */
export function describeParserThrow(e: unknown): { message: string; line: number; column: number; incomplete: boolean } {
  if (isParseError(e)) {
    let line = 1;
    let column = 1;
    try {
      line = e.Pos.Line();
      column = e.Pos.Col();
    } catch {
      // position unavailable: keep 1:1
    }
    return { message: e.Text, line, column, incomplete: e.Incomplete === true };
  }
  if (e instanceof Error) return { message: e.message, line: 1, column: 1, incomplete: false };
  if (typeof e === 'object' && e !== null) {
    const errFn = (e as Record<string, unknown>)['Error'];
    if (typeof errFn === 'function') {
      const text: unknown = errFn.call(e);
      if (typeof text === 'string') return { message: text, line: 1, column: 1, incomplete: false };
    }
  }
  return { message: String(e), line: 1, column: 1, incomplete: false };
}

/**
 * Parses a whole (possibly multi-line) bash string. Throws shell_parse_error on a syntax error or
 * incomplete input (unterminated quote, `if` without `fi`, unclosed here-document).
 */
export function parseShell(src: string, what = 'command line'): File {
  const nul = src.indexOf('\u0000');
  if (nul >= 0) {
    const before = src.slice(0, nul);
    const line = before.split('\n').length;
    const column = nul - before.lastIndexOf('\n');
    throw new PortcullisError('shell_parse_error', `${what}: contains a NUL byte at ${line}:${column}`, { line, column });
  }
  let wrapper: unknown;
  try {
    wrapper = getParser().Parse(src, 'command');
  } catch (e) {
    const d = describeParserThrow(e);
    // A failed parse may leave the parser in an odd state: use a fresh one next time.
    parser = null;
    const cols = columnMap(src);
    const column = cols === null ? d.column : cols(d.line, d.column);
    throw new PortcullisError('shell_parse_error', `${what}: ${d.line}:${column}: ${d.message}`, {
      line: d.line,
      column,
      incomplete: d.incomplete,
    });
  }
  return toPlainFile(wrapper, src);
}

// ---------------------------------------------------------------------------------------------
// Load-time checks: internal layout and operator tokens
// ---------------------------------------------------------------------------------------------

/** Compares the plain copy with the public API on a small tree (positions, strings, nesting). */
function checkLayout(): void {
  const src = 'a é\n  "b$(c)" >x';
  const wrapper = syntax.NewParser().Parse(src, 'layout') as unknown as {
    Stmts: { Cmd: { Args: { Parts: { Pos(): { Line(): number; Col(): number; Offset(): number }; Value?: string }[] }[] } }[];
  };
  const file = toPlainFile(wrapper, src);
  const publicLit = wrapper.Stmts[1]!.Cmd.Args[0]!.Parts[0]!;
  const st = file.Stmts[1];
  const call = st?.Cmd as CallExpr | undefined;
  const dq = call?.Args[0]?.Parts[0] as DblQuoted | undefined;
  const pos = dq === undefined ? null : posOf(dq);
  const e = (file.Stmts[0]?.Cmd as CallExpr | undefined)?.Args[1]?.Parts[0] as Lit | undefined;
  const cs = dq?.Parts[1] as CmdSubst | undefined;
  const ok =
    file.Stmts.length === 2 &&
    call?.type === 'CallExpr' &&
    dq?.type === 'DblQuoted' &&
    pos !== null &&
    pos.line === publicLit.Pos().Line() &&
    pos.column === publicLit.Pos().Col() &&
    e?.Value === 'é' &&
    cs?.type === 'CmdSubst' &&
    cs.Stmts.length === 1 &&
    st?.Redirs.length === 1;
  if (!ok) throw new Error('mvdan-sh: internal AST layout not recognized (this module reads the GopherJS values of mvdan-sh 0.10.x)');
}

export interface OperatorTables {
  binary: Map<number, '&&' | '||' | '|' | '|&'>;
  redirect: Map<number, string>;
  procSubst: Map<number, '<(' | '>('>;
  /** The `@` operator of `${x@P}` (prompt expansion, which runs command substitutions in the value). */
  paramAt: number;
}

function calibrate(): OperatorTables {
  const bin = parseShell('a && b\na || b\na | b\na |& b\n', 'calibration');
  const binOps = ['&&', '||', '|', '|&'] as const;
  const binary = new Map<number, (typeof binOps)[number]>();
  bin.Stmts.forEach((st, i) => {
    const cmd = st.Cmd;
    if (cmd === null || cmd.type !== 'BinaryCmd') throw new Error(`calibration: statement ${i} is not a BinaryCmd`);
    binary.set((cmd as BinaryCmd).Op, binOps[i]!);
  });

  const redirOps = ['>', '>>', '<', '<>', '<&', '>&', '>|', '<<<', '&>', '&>>', '<<', '<<-'];
  const red = parseShell('a >b >>b <b <>b <&0 >&1 >|b <<<b &>b &>>b <<E <<-F\nE\n\tF\n', 'calibration');
  const redirs = red.Stmts[0]?.Redirs ?? [];
  if (redirs.length !== redirOps.length) throw new Error(`calibration: expected ${redirOps.length} redirections, got ${redirs.length}`);
  const redirect = new Map<number, string>();
  redirs.forEach((r, i) => redirect.set(r.Op, redirOps[i]!));

  const ps = parseShell('a <(b) >(c)\n', 'calibration');
  const psArgs = (ps.Stmts[0]?.Cmd as CallExpr | null)?.Args ?? [];
  const procSubst = new Map<number, '<(' | '>('>();
  const psOps = ['<(', '>('] as const;
  psArgs.slice(1).forEach((w, i) => {
    const part = w.Parts[0];
    if (part === undefined || part.type !== 'ProcSubst') throw new Error('calibration: process substitution not found');
    procSubst.set((part as ProcSubst).Op, psOps[i]!);
  });

  const at = parseShell('a ${x@P}\n', 'calibration');
  const atPart = (at.Stmts[0]?.Cmd as CallExpr | null)?.Args[1]?.Parts[0];
  const paramAt = atPart !== undefined && atPart.type === 'ParamExp' ? (atPart as ParamExp).Exp?.Op : undefined;
  if (paramAt === undefined) throw new Error('calibration: ${x@P} not found');

  if (binary.size !== 4 || redirect.size !== redirOps.length || procSubst.size !== 2) {
    throw new Error('calibration: operator tokens are not distinct');
  }
  return { binary, redirect, procSubst, paramAt };
}

checkLayout();
export const OPS: OperatorTables = calibrate();
