// The PostgreSQL parser (libpg-query: PostgreSQL's own grammar compiled to WASM), wrapped so that
// a failure is always a PortcullisError and statement boundaries come back as character offsets.

import { loadModule, parseSync } from 'libpg-query';
import { PortcullisError } from '../types.js';
import { isObj, list } from './ast.js';

let loading: Promise<void> | null = null;
let ready = false;

/** Load the WASM parser once; later calls return the same promise. */
export function initSqlParser(): Promise<void> {
  if (!loading) {
    loading = loadModule().then(
      () => {
        ready = true;
      },
      (e: unknown) => {
        loading = null; // let a later call try again
        throw e;
      },
    );
  }
  return loading;
}

export function sqlParserReady(): boolean {
  return ready;
}

export interface RawStatement {
  /** The statement node (`{"SelectStmt": {...}}`). */
  stmt: unknown;
  /** Character offsets of the statement's own text in the input, whitespace trimmed. */
  start: number;
  end: number;
}

function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

/** Parse a string of zero or more statements. */
export function parseStatements(sql: string): RawStatement[] {
  if (!ready) {
    throw new PortcullisError('sql_parser_not_ready', 'the SQL parser is not loaded: call initSqlParser() first');
  }
  if (sql.includes('\u0000')) {
    const at = sql.indexOf('\u0000');
    throw new PortcullisError('sql_parse_error', `NUL character in statement at position ${at + 1}`, { position: at + 1 });
  }
  let onlySpace = true;
  for (let i = 0; i < sql.length; i++) {
    if (!isSpace(sql.charCodeAt(i))) {
      onlySpace = false;
      break;
    }
  }
  if (onlySpace) return []; // an empty query (PostgreSQL answers EmptyQueryResponse)

  const byteLen = Buffer.byteLength(sql, 'utf8');
  if (byteLen !== sql.length && !isWellFormed(sql)) {
    // A lone surrogate has no UTF-8 form: what the parser saw and what would be sent could differ.
    throw new PortcullisError('sql_parse_error', 'statement is not well-formed Unicode (lone surrogate)', {});
  }
  let tree: unknown;
  try {
    tree = parseSync(sql);
  } catch (e) {
    throw toParseError(e);
  }
  const stmts = isObj(tree) ? list(tree.stmts) : [];
  // Locations are byte offsets into the UTF-8 text; map them to string offsets.
  const toChar = byteLen === sql.length ? (b: number) => b : byteToCharMapper(sql);

  const out: RawStatement[] = [];
  for (const raw of stmts) {
    if (!isObj(raw)) continue;
    const loc = typeof raw.stmt_location === 'number' ? raw.stmt_location : 0;
    const len = typeof raw.stmt_len === 'number' && raw.stmt_len > 0 ? raw.stmt_len : byteLen - loc;
    let start = toChar(loc);
    let end = toChar(Math.min(byteLen, loc + len));
    while (start < end && isSpace(sql.charCodeAt(start))) start++;
    while (end > start && isSpace(sql.charCodeAt(end - 1))) end--;
    out.push({ stmt: raw.stmt, start, end });
  }
  return out;
}

function isWellFormed(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    if (c >= 0xdc00) return false;
    const d = s.charCodeAt(i + 1);
    if (!(d >= 0xdc00 && d <= 0xdfff)) return false;
    i++;
  }
  return true;
}

/**
 * Byte offset → string offset, for offsets asked in increasing order (one pass over the string).
 * (The string is well-formed UTF-16 here: lone surrogates are refused before parsing.)
 */
function byteToCharMapper(sql: string): (byteOff: number) => number {
  let ci = 0;
  let bi = 0;
  return (byteOff: number): number => {
    if (byteOff < bi) {
      ci = 0;
      bi = 0;
    }
    while (bi < byteOff && ci < sql.length) {
      const c = sql.charCodeAt(ci);
      if (c < 0x80) {
        bi += 1;
        ci += 1;
      } else if (c < 0x800) {
        bi += 2;
        ci += 1;
      } else if (c >= 0xd800 && c <= 0xdbff) {
        bi += 4;
        ci += 2;
      } else {
        bi += 3;
        ci += 1;
      }
    }
    return ci;
  };
}

function toParseError(e: unknown): PortcullisError {
  if (e instanceof PortcullisError) return e;
  const err = e as { message?: unknown; sqlDetails?: { cursorPosition?: unknown } };
  const message = typeof err?.message === 'string' ? err.message : String(e);
  const cursor = err?.sqlDetails?.cursorPosition;
  if (typeof cursor === 'number' && cursor >= 0) {
    // libpg-query gives a 0-based character offset; PostgreSQL reports 1-based positions.
    const position = cursor + 1;
    return new PortcullisError('sql_parse_error', `${message} at position ${position}`, { position });
  }
  if (e instanceof RangeError) {
    return new PortcullisError('sql_parse_error', `statement too deeply nested to parse (${message})`, {});
  }
  return new PortcullisError('sql_parse_error', message, {});
}
