// COPY … TO STDOUT with masking. COPY's output carries no column descriptions, so before such a
// statement is forwarded the proxy asks the server to describe the equivalent query (the COPY's
// own query, or `SELECT <columns> FROM ONLY <table>`) and masks the rows with the same row masker
// as a result set: text and CSV rows are split into fields (PostgreSQL's escaping rules, the
// statement's DELIMITER / NULL / QUOTE / ESCAPE / HEADER options), binary rows into values.
// Pure functions and a streaming row splitter; no I/O.

import { scanSync } from 'libpg-query';
import { parseStatements } from '../../policy/sql/parser.js';
import { PortcullisError } from '../../policy/types.js';

export type CopyFormat = 'text' | 'csv' | 'binary';

export interface CopyOptions {
  format: CopyFormat;
  delimiter: string;
  null: string;
  quote: string;
  escape: string;
  header: boolean;
}

export interface CopyOutPlan {
  /** Index of the statement in the string. */
  index: number;
  /** A query with the same columns as the COPY's output, to Describe. */
  describeSql: string;
  options: CopyOptions;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function strVal(v: unknown): string | undefined {
  if (!isObj(v)) return undefined;
  const s = v['String'];
  if (isObj(s) && typeof s['sval'] === 'string') return s['sval'];
  const b = v['Boolean'];
  if (isObj(b)) return b['boolval'] === true ? 'true' : 'false';
  const i = v['Integer'];
  if (isObj(i)) return String(typeof i['ival'] === 'number' ? i['ival'] : 0);
  return undefined;
}

function quoteIdent(s: string): string {
  return '"' + s.replace(/"/g, '""') + '"';
}

function truthy(v: string | undefined): boolean {
  if (v === undefined) return true; // HEADER alone means true
  return ['true', 'on', '1', 'yes'].includes(v.toLowerCase());
}

function copyOptions(options: unknown): CopyOptions {
  let format: CopyFormat = 'text';
  const raw = new Map<string, string | undefined>();
  if (Array.isArray(options)) {
    for (const o of options) {
      const d = isObj(o) ? o['DefElem'] : undefined;
      if (!isObj(d) || typeof d['defname'] !== 'string') continue;
      raw.set(d['defname'], strVal(d['arg']));
    }
  }
  const f = raw.get('format');
  if (f !== undefined) {
    const fl = f.toLowerCase();
    if (fl === 'csv' || fl === 'binary' || fl === 'text') format = fl;
  }
  const csv = format === 'csv';
  const quote = raw.get('quote') ?? '"';
  return {
    format,
    delimiter: raw.get('delimiter') ?? (csv ? ',' : '\t'),
    null: raw.get('null') ?? (csv ? '' : '\\N'),
    quote,
    escape: raw.get('escape') ?? quote,
    header: raw.has('header') ? truthy(raw.get('header')) : false,
  };
}

/** The text of the parenthesized query right after COPY in a statement, or null. */
function copyQueryText(stmtText: string): string | null {
  const bytes = Buffer.from(stmtText, 'utf8');
  const tokens = scanSync(stmtText).tokens;
  if (tokens.length < 2 || tokens[1]!.text !== '(') return null;
  let depth = 0;
  for (let i = 1; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t.text === '(') depth++;
    else if (t.text === ')') {
      depth--;
      if (depth === 0) return bytes.subarray(tokens[1]!.end, t.start).toString('utf8');
    }
  }
  return null;
}

/**
 * The COPY … TO STDOUT statements of a string, with what to describe for each. Throws
 * PortcullisError when a COPY's columns cannot be determined (the caller refuses fail-closed).
 */
export function copyOutPlans(sql: string): CopyOutPlan[] {
  const out: CopyOutPlan[] = [];
  const raw = parseStatements(sql);
  raw.forEach((r, index) => {
    const node = isObj(r.stmt) ? r.stmt['CopyStmt'] : undefined;
    if (!isObj(node)) return;
    if (node['is_from'] === true || node['is_program'] === true || node['filename'] !== undefined) return;
    const options = copyOptions(node['options']);
    const rel = node['relation'];
    if (isObj(rel) && typeof rel['relname'] === 'string') {
      const name = (typeof rel['schemaname'] === 'string' ? quoteIdent(rel['schemaname']) + '.' : '') + quoteIdent(rel['relname']);
      const cols = Array.isArray(node['attlist']) ? node['attlist'].map((a) => strVal(a)).filter((s): s is string => s !== undefined) : [];
      const list = cols.length > 0 ? cols.map(quoteIdent).join(', ') : '*';
      out.push({ index, describeSql: `SELECT ${list} FROM ONLY ${name}`, options });
      return;
    }
    const q = copyQueryText(sql.slice(r.start, r.end));
    if (q === null) throw new PortcullisError('pg_copy_unresolvable', `statement ${index + 1}: cannot find the query of COPY (…) TO STDOUT`);
    out.push({ index, describeSql: q, options });
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Text format

function decodeTextField(s: string): string {
  if (!s.includes('\\')) return s;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c !== '\\' || i + 1 >= s.length) {
      out += c;
      continue;
    }
    const n = s[++i]!;
    switch (n) {
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'v':
        out += '\v';
        break;
      case 'x': {
        const m = /^[0-9a-fA-F]{1,2}/.exec(s.slice(i + 1));
        if (m) {
          out += String.fromCharCode(parseInt(m[0], 16));
          i += m[0].length;
        } else out += 'x';
        break;
      }
      default:
        if (n >= '0' && n <= '7') {
          const m = /^[0-7]{1,3}/.exec(s.slice(i))!;
          out += String.fromCharCode(parseInt(m[0], 8) & 0xff);
          i += m[0].length - 1;
        } else out += n;
    }
  }
  return out;
}

function encodeTextField(s: string, delimiter: string): string {
  let out = '';
  // PostgreSQL's CopyAttributeOutText: control characters by letter, then the delimiter.
  const byLetter: Record<string, string> = { '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\v': '\\v', '\\': '\\\\' };
  for (const c of s) {
    const l = byLetter[c];
    if (l !== undefined) out += l;
    else if (c === delimiter) out += '\\' + c;
    else out += c;
  }
  return out;
}

export function splitTextRow(line: string, o: CopyOptions): (string | null)[] {
  const parts = line.split(o.delimiter);
  return parts.map((p) => (p === o.null ? null : decodeTextField(p)));
}

export function joinTextRow(values: readonly (string | null)[], o: CopyOptions): string {
  return values.map((v) => (v === null ? o.null : encodeTextField(v, o.delimiter))).join(o.delimiter) + '\n';
}

// ---------------------------------------------------------------------------------------------
// CSV format

export function splitCsvRow(line: string, o: CopyOptions): (string | null)[] {
  const out: (string | null)[] = [];
  let i = 0;
  const n = line.length;
  for (let guard = 0; guard <= n + 1; guard++) {
    let value = '';
    let quoted = false;
    if (line.startsWith(o.quote, i)) {
      quoted = true;
      i += o.quote.length;
      for (;;) {
        if (i >= n) break;
        if (o.escape !== o.quote && line.startsWith(o.escape, i) && line.startsWith(o.quote, i + o.escape.length)) {
          value += o.quote;
          i += o.escape.length + o.quote.length;
          continue;
        }
        if (line.startsWith(o.quote, i)) {
          if (o.escape === o.quote && line.startsWith(o.quote, i + o.quote.length)) {
            value += o.quote;
            i += 2 * o.quote.length;
            continue;
          }
          i += o.quote.length;
          break;
        }
        value += line[i]!;
        i++;
      }
    }
    // unquoted part (or what follows a closing quote up to the delimiter)
    let j = line.indexOf(o.delimiter, i);
    if (j < 0) j = n;
    value += line.slice(i, j);
    out.push(!quoted && value === o.null ? null : value);
    if (j >= n) break;
    i = j + o.delimiter.length;
  }
  return out;
}

export function joinCsvRow(values: readonly (string | null)[], o: CopyOptions): string {
  return (
    values
      .map((v) => {
        if (v === null) return o.null;
        const needs = v === o.null || v.includes(o.delimiter) || v.includes(o.quote) || v.includes('\n') || v.includes('\r') || v.startsWith('\\.');
        if (!needs) return v;
        const esc = o.escape === o.quote ? o.quote + o.quote : o.escape + o.quote;
        let body = v.split(o.quote).join(esc);
        if (o.escape !== o.quote) body = body.split(o.escape).join(o.escape + o.escape).split(o.escape + o.escape + o.quote).join(esc);
        return o.quote + body + o.quote;
      })
      .join(o.delimiter) + '\n'
  );
}

// ---------------------------------------------------------------------------------------------
// Streaming: CopyData payloads in, whole masked rows out

const BINARY_SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
export const MAX_COPY_ROW = 256 * 1024 * 1024;

/** Masks one row given as cells (text: UTF-8 text values; binary: binary values). */
export type CellMasker = (row: (Buffer | null)[]) => (Buffer | null)[];

/**
 * Splits COPY output into rows and masks each one. Rows may span CopyData messages (and one
 * message may hold several rows); output is one payload per complete row (plus the header).
 */
export class CopyOutMasker {
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private headerDone = false;
  private inQuote = false;
  private scanPos = 0;
  rows = 0;
  readonly sample: (string | null)[][] = [];

  constructor(
    private readonly o: CopyOptions,
    private readonly mask: CellMasker,
    private readonly sampleRows = 3,
  ) {}

  private buffer(): Buffer {
    if (this.pending.length > 1) this.pending = [Buffer.concat(this.pending, this.pendingLen)];
    return this.pending[0] ?? Buffer.alloc(0);
  }

  private consume(n: number): void {
    const b = this.buffer();
    const rest = b.subarray(n);
    this.pending = rest.length > 0 ? [rest] : [];
    this.pendingLen = rest.length;
    this.scanPos = 0;
    this.inQuote = false;
  }

  push(data: Buffer): Buffer[] {
    this.pending.push(data);
    this.pendingLen += data.length;
    if (this.pendingLen > MAX_COPY_ROW) throw new PortcullisError('pg_copy_row_too_large', `a COPY row exceeds ${MAX_COPY_ROW} bytes`);
    return this.o.format === 'binary' ? this.binaryRows() : this.textRows();
  }

  /** Whatever is left when the server says CopyDone (normally nothing). */
  end(): Buffer[] {
    if (this.pendingLen === 0) return [];
    if (this.o.format === 'binary') throw new PortcullisError('pg_copy_truncated', 'binary COPY output ended inside a row');
    const line = this.buffer().toString('utf8');
    this.consume(this.pendingLen);
    return [this.maskLine(line)];
  }

  private textRows(): Buffer[] {
    const out: Buffer[] = [];
    const csv = this.o.format === 'csv';
    const q = this.o.quote.charCodeAt(0);
    const esc = this.o.escape.charCodeAt(0);
    for (let guard = 0; guard < 1_000_000; guard++) {
      const b = this.buffer();
      let end = -1;
      if (!csv) {
        end = b.indexOf(0x0a, this.scanPos);
        if (end < 0) this.scanPos = b.length;
      } else {
        let i = this.scanPos;
        for (; i < b.length; i++) {
          const c = b[i]!;
          if (this.inQuote && esc !== q && c === esc) {
            if (i + 1 >= b.length) break; // the escaped byte has not arrived yet
            i++;
            continue;
          }
          if (c === q) this.inQuote = !this.inQuote;
          else if (c === 0x0a && !this.inQuote) {
            end = i;
            break;
          }
        }
        if (end < 0) this.scanPos = i;
      }
      if (end < 0) break;
      let line = b.toString('utf8', 0, end);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      this.consume(end + 1);
      if (this.o.header && !this.headerDone) {
        this.headerDone = true;
        out.push(Buffer.from(line + '\n', 'utf8'));
        continue;
      }
      out.push(this.maskLine(line));
    }
    return out;
  }

  private maskLine(line: string): Buffer {
    const csv = this.o.format === 'csv';
    const values = csv ? splitCsvRow(line, this.o) : splitTextRow(line, this.o);
    const cells = values.map((v) => (v === null ? null : Buffer.from(v, 'utf8')));
    const masked = this.mask(cells);
    const strings = masked.map((c) => (c === null ? null : c.toString('utf8')));
    this.rows++;
    if (this.sample.length < this.sampleRows) this.sample.push(strings);
    return Buffer.from(csv ? joinCsvRow(strings, this.o) : joinTextRow(strings, this.o), 'utf8');
  }

  private binaryRows(): Buffer[] {
    const out: Buffer[] = [];
    for (let guard = 0; guard < 1_000_000; guard++) {
      const b = this.buffer();
      let pos = 0;
      const head: Buffer[] = [];
      if (!this.headerDone) {
        if (b.length < 19) break;
        if (!b.subarray(0, 11).equals(BINARY_SIGNATURE)) throw new PortcullisError('pg_copy_bad_binary', 'binary COPY output without its signature');
        const extLen = b.readInt32BE(15);
        if (extLen < 0 || b.length < 19 + extLen) break;
        pos = 19 + extLen;
        head.push(b.subarray(0, pos));
      }
      if (b.length < pos + 2) {
        if (head.length) {
          this.headerDone = true;
          out.push(Buffer.from(head[0]!));
          this.consume(pos);
        }
        break;
      }
      const count = b.readInt16BE(pos);
      if (count === -1) {
        out.push(Buffer.concat([...head, b.subarray(pos, pos + 2)]));
        this.headerDone = true;
        this.consume(pos + 2);
        continue;
      }
      if (count < 0) throw new PortcullisError('pg_copy_bad_binary', `binary COPY row with ${count} fields`);
      let p = pos + 2;
      const cells: (Buffer | null)[] = [];
      let complete = true;
      for (let i = 0; i < count; i++) {
        if (b.length < p + 4) {
          complete = false;
          break;
        }
        const len = b.readInt32BE(p);
        p += 4;
        if (len === -1) {
          cells.push(null);
          continue;
        }
        if (len < 0) throw new PortcullisError('pg_copy_bad_binary', `binary COPY field length ${len}`);
        if (b.length < p + len) {
          complete = false;
          break;
        }
        cells.push(b.subarray(p, p + len));
        p += len;
      }
      if (!complete) break;
      const masked = this.mask(cells);
      this.rows++;
      if (this.sample.length < this.sampleRows) this.sample.push(masked.map((c) => (c === null ? null : `<binary ${c.length} bytes>`)));
      let size = 2;
      for (const c of masked) size += 4 + (c === null ? 0 : c.length);
      const row = Buffer.allocUnsafe(size);
      row.writeInt16BE(masked.length, 0);
      let w = 2;
      for (const c of masked) {
        if (c === null) {
          row.writeInt32BE(-1, w);
          w += 4;
        } else {
          row.writeInt32BE(c.length, w);
          c.copy(row, w + 4);
          w += 4 + c.length;
        }
      }
      out.push(head.length ? Buffer.concat([head[0]!, row]) : row);
      this.headerDone = true;
      this.consume(p);
    }
    return out;
  }
}
