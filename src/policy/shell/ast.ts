// The bash parser (mvdan-sh) behind one small surface: parse a string into an AST or throw a
// PortcullisError('shell_parse_error') with line/column, name node types, and map the parser's
// numeric operator tokens to their spelling.
//
// The operator numbers are Go token values of the mvdan.cc/sh build that was transpiled. Rather
// than hard-coding them, this module parses a calibration line at load time and reads them off the
// AST, so an upgraded parser cannot silently change what `|` or `<<<` means to the extractor.

import sh from 'mvdan-sh';
import type { BinaryCmd, CallExpr, File, Node, ParamExp, ParseError, Parser, ProcSubst, Redirect, Stmt } from 'mvdan-sh';
import { PortcullisError } from '../types.js';

export const syntax = sh.syntax;

let parser: Parser | null = null;

function getParser(): Parser {
  if (parser === null) parser = syntax.NewParser(syntax.KeepComments(false));
  return parser;
}

export function nodeType(node: Node): string {
  return syntax.NodeType(node);
}

/** Where a position is in the parsed text, 1-based. */
export interface LineCol {
  line: number;
  column: number;
}

export function posOf(node: Node): LineCol {
  const p = node.Pos();
  return { line: p.Line(), column: p.Col() };
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
  try {
    return getParser().Parse(src, 'command');
  } catch (e) {
    const d = describeParserThrow(e);
    // A failed parse may leave the parser in an odd state: use a fresh one next time.
    parser = null;
    throw new PortcullisError('shell_parse_error', `${what}: ${d.line}:${d.column}: ${d.message}`, {
      line: d.line,
      column: d.column,
      incomplete: d.incomplete,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Operator calibration
// ---------------------------------------------------------------------------------------------

export interface OperatorTables {
  binary: Map<number, '&&' | '||' | '|' | '|&'>;
  redirect: Map<number, string>;
  procSubst: Map<number, '<(' | '>('>;
  /** The `@` operator of `${x@P}` (prompt expansion, which runs command substitutions in the value). */
  paramAt: number;
}

function calibrate(): OperatorTables {
  const p = syntax.NewParser();
  const bin = p.Parse('a && b\na || b\na | b\na |& b\n', 'calibration');
  const binOps = ['&&', '||', '|', '|&'] as const;
  const binary = new Map<number, (typeof binOps)[number]>();
  bin.Stmts.forEach((st: Stmt, i: number) => {
    const cmd = st.Cmd;
    if (cmd === null || nodeType(cmd) !== 'BinaryCmd') throw new Error(`calibration: statement ${i} is not a BinaryCmd`);
    binary.set((cmd as BinaryCmd).Op, binOps[i]!);
  });

  const redirOps = ['>', '>>', '<', '<>', '<&', '>&', '>|', '<<<', '&>', '&>>', '<<', '<<-'];
  const red = p.Parse('a >b >>b <b <>b <&0 >&1 >|b <<<b &>b &>>b <<E <<-F\nE\n\tF\n', 'calibration');
  const redirs: Redirect[] = red.Stmts[0]?.Redirs ?? [];
  if (redirs.length !== redirOps.length) throw new Error(`calibration: expected ${redirOps.length} redirections, got ${redirs.length}`);
  const redirect = new Map<number, string>();
  redirs.forEach((r, i) => redirect.set(r.Op, redirOps[i]!));

  const ps = p.Parse('a <(b) >(c)\n', 'calibration');
  const psArgs = (ps.Stmts[0]?.Cmd as CallExpr | null)?.Args ?? [];
  const procSubst = new Map<number, '<(' | '>('>();
  const psOps = ['<(', '>('] as const;
  psArgs.slice(1).forEach((w, i) => {
    const part = w.Parts[0];
    if (part === undefined || nodeType(part) !== 'ProcSubst') throw new Error('calibration: process substitution not found');
    procSubst.set((part as ProcSubst).Op, psOps[i]!);
  });

  const at = p.Parse('a ${x@P}\n', 'calibration');
  const atPart = (at.Stmts[0]?.Cmd as CallExpr | null)?.Args[1]?.Parts[0];
  const paramAt = atPart !== undefined && nodeType(atPart) === 'ParamExp' ? (atPart as ParamExp).Exp?.Op : undefined;
  if (paramAt === undefined) throw new Error('calibration: ${x@P} not found');

  if (binary.size !== 4 || redirect.size !== redirOps.length || procSubst.size !== 2) {
    throw new Error('calibration: operator tokens are not distinct');
  }
  return { binary, redirect, procSubst, paramAt };
}

export const OPS: OperatorTables = calibrate();
