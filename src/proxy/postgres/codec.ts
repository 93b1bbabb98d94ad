// The PostgreSQL wire protocol (v3.0), both directions, as pure functions: bytes → typed messages
// and typed messages → bytes. No I/O here; `FrameReader` only splits a byte stream into frames.
// Every malformed input is reported as a `PgProtocolError` (SQLSTATE 08P01 towards the client),
// never as a RangeError or a hang: the fuzz test (test/pg-proxy-codec.test.ts) holds us to it.
//
// Frames are kept as `raw` subarrays of the input so that the proxy can forward a message it does
// not change without re-encoding it.

import { PortcullisError } from '../../policy/types.js';

/** A malformed or unsupported protocol message. `sqlstate` is what the peer is told. */
export class PgProtocolError extends PortcullisError {
  readonly sqlstate: string;
  constructor(message: string, details: Record<string, unknown> = {}, sqlstate = '08P01') {
    super('pg_protocol_violation', message, details);
    this.name = 'PgProtocolError';
    this.sqlstate = sqlstate;
  }
}

export const PROTOCOL_3_0 = 196608; // 3 << 16
export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;
export const CANCEL_REQUEST_CODE = 80877102;
/** PostgreSQL's MAX_STARTUP_PACKET_LENGTH. */
export const MAX_STARTUP_LENGTH = 10000;
/** Default cap on one message (PostgreSQL's own limit for most messages is 1 GB - 1). */
export const DEFAULT_MAX_MESSAGE = 256 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Framing

export interface Frame {
  /** The message type byte (e.g. 0x51 'Q'). */
  type: number;
  /** The message body (after the type byte and the length). */
  body: Buffer;
  /** The whole message as received (type, length, body). */
  raw: Buffer;
}

export interface StartupFrame {
  /** The packet after its length word. */
  body: Buffer;
  raw: Buffer;
}

/**
 * Splits a byte stream into protocol frames. Bytes are pushed as they arrive; `next()` returns a
 * complete frame or null. A frame inside one pushed chunk is returned as a subarray of it (no
 * copy); a frame spanning chunks is assembled once it is complete. The declared length is checked
 * as soon as it is known, so an absurd length fails at once instead of waiting for bytes.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private off = 0;
  private total = 0;

  constructor(private readonly maxMessage: number = DEFAULT_MAX_MESSAGE) {}

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** Bytes received and not yet returned as frames. */
  get buffered(): number {
    return this.total;
  }

  /** Makes the first `n` buffered bytes contiguous in chunks[0] (from `off`); needs total >= n. */
  private contiguous(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length - this.off >= n) return first;
    const parts: Buffer[] = [first.subarray(this.off)];
    let got = parts[0]!.length;
    let i = 1;
    while (got < n) {
      const c = this.chunks[i++]!;
      parts.push(c);
      got += c.length;
    }
    const merged = Buffer.concat(parts, got);
    this.chunks.splice(0, i, merged);
    this.off = 0;
    return merged;
  }

  private take(n: number): Buffer {
    const buf = this.contiguous(n);
    const out = buf.subarray(this.off, this.off + n);
    this.off += n;
    this.total -= n;
    if (this.off === buf.length) {
      this.chunks.shift();
      this.off = 0;
    }
    return out;
  }

  /** The next regular message (type byte + int32 length + body), or null when incomplete. */
  next(): Frame | null {
    if (this.total < 5) return null;
    const hdr = this.contiguous(5);
    const type = hdr[this.off]!;
    const len = hdr.readInt32BE(this.off + 1);
    if (len < 4) throw new PgProtocolError(`invalid message length ${len} for message type ${typeName(type)}`, { type, length: len });
    if (len > this.maxMessage) {
      throw new PgProtocolError(`message type ${typeName(type)} of ${len} bytes exceeds the limit of ${this.maxMessage} bytes`, { type, length: len }, '54000');
    }
    if (this.total < len + 1) return null;
    const raw = this.take(len + 1);
    return { type, body: raw.subarray(5), raw };
  }

  /** The next startup-phase packet (int32 length + body, no type byte), or null when incomplete. */
  nextStartup(): StartupFrame | null {
    if (this.total < 4) return null;
    const hdr = this.contiguous(4);
    const len = hdr.readInt32BE(this.off);
    if (len < 8 || len > MAX_STARTUP_LENGTH) throw new PgProtocolError(`invalid startup packet length ${len}`, { length: len });
    if (this.total < len) return null;
    const raw = this.take(len);
    return { body: raw.subarray(4), raw };
  }
}

export function typeName(type: number): string {
  return type >= 0x20 && type < 0x7f ? `'${String.fromCharCode(type)}'` : `0x${type.toString(16).padStart(2, '0')}`;
}

// ---------------------------------------------------------------------------------------------
// Reading

/** Bounds-checked reader over one message body; every failure is a PgProtocolError. */
export class BodyReader {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    private readonly what: string,
  ) {}

  private need(n: number): void {
    if (n < 0 || this.pos + n > this.buf.length) {
      throw new PgProtocolError(`${this.what}: message too short (needs ${n} more bytes at offset ${this.pos} of ${this.buf.length})`);
    }
  }

  int8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }

  int16(): number {
    this.need(2);
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  int32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  uint32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  cstring(): string {
    const end = this.buf.indexOf(0, this.pos);
    if (end < 0) throw new PgProtocolError(`${this.what}: unterminated string at offset ${this.pos}`);
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }

  bytes(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  rest(): Buffer {
    const b = this.buf.subarray(this.pos);
    this.pos = this.buf.length;
    return b;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  /** A count that cannot be negative and cannot exceed what the remaining bytes can hold. */
  count(perItem: number): number {
    const n = this.int16() & 0xffff;
    if (n * perItem > this.remaining) throw new PgProtocolError(`${this.what}: count ${n} exceeds the message size`);
    return n;
  }

  end(): void {
    if (this.pos !== this.buf.length) throw new PgProtocolError(`${this.what}: ${this.buf.length - this.pos} unexpected trailing bytes`);
  }
}

// ---------------------------------------------------------------------------------------------
// Startup-phase packets (client → server)

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; pid: number; secret: Buffer }
  | { kind: 'startup'; major: number; minor: number; params: [string, string][] };

export function decodeStartupPacket(body: Buffer): StartupPacket {
  const r = new BodyReader(body, 'startup packet');
  const code = r.int32();
  if (code === SSL_REQUEST_CODE) {
    r.end();
    return { kind: 'ssl' };
  }
  if (code === GSSENC_REQUEST_CODE) {
    r.end();
    return { kind: 'gssenc' };
  }
  if (code === CANCEL_REQUEST_CODE) {
    const pid = r.int32();
    const secret = Buffer.from(r.rest());
    if (secret.length < 4 || secret.length > 256) throw new PgProtocolError(`CancelRequest: invalid key length ${secret.length}`);
    return { kind: 'cancel', pid, secret };
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3) {
    throw new PgProtocolError(`unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`, { major, minor }, '0A000');
  }
  const params: [string, string][] = [];
  for (let i = 0; i < 1000; i++) {
    const name = r.cstring();
    if (name === '') {
      r.end();
      return { kind: 'startup', major, minor, params };
    }
    const value = r.cstring();
    params.push([name, value]);
  }
  throw new PgProtocolError('startup packet has too many parameters');
}

// ---------------------------------------------------------------------------------------------
// Client messages (after startup)

export type ClientMessage =
  | { type: 'Query'; sql: string }
  | { type: 'Parse'; name: string; sql: string; paramTypes: number[] }
  | { type: 'Bind'; portal: string; statement: string; paramFormats: number[]; params: (Buffer | null)[]; resultFormats: number[] }
  | { type: 'Describe'; target: 'S' | 'P'; name: string }
  | { type: 'Execute'; portal: string; maxRows: number }
  | { type: 'Close'; target: 'S' | 'P'; name: string }
  | { type: 'Sync' }
  | { type: 'Flush' }
  | { type: 'Terminate' }
  | { type: 'CopyData'; data: Buffer }
  | { type: 'CopyDone' }
  | { type: 'CopyFail'; message: string }
  | { type: 'FunctionCall'; oid: number }
  /** 'p': PasswordMessage, SASLInitialResponse or SASLResponse — which one depends on the auth state. */
  | { type: 'Password'; data: Buffer };

export const T = {
  Query: 0x51, // Q
  Parse: 0x50, // P
  Bind: 0x42, // B
  Describe: 0x44, // D (client) / DataRow (server)
  Execute: 0x45, // E (client) / ErrorResponse (server)
  Close: 0x43, // C (client) / CommandComplete (server)
  Sync: 0x53, // S (client) / ParameterStatus (server)
  Flush: 0x48, // H (client) / CopyOutResponse (server)
  Terminate: 0x58, // X
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyFail: 0x66, // f
  FunctionCall: 0x46, // F
  Password: 0x70, // p
} as const;

export const B = {
  Authentication: 0x52, // R
  ParameterStatus: 0x53, // S
  BackendKeyData: 0x4b, // K
  ReadyForQuery: 0x5a, // Z
  RowDescription: 0x54, // T
  DataRow: 0x44, // D
  CommandComplete: 0x43, // C
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  NoticeResponse: 0x4e, // N
  ParseComplete: 0x31, // 1
  BindComplete: 0x32, // 2
  CloseComplete: 0x33, // 3
  NoData: 0x6e, // n
  ParameterDescription: 0x74, // t
  PortalSuspended: 0x73, // s
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  CopyBothResponse: 0x57, // W
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  NotificationResponse: 0x41, // A
  FunctionCallResponse: 0x56, // V
  NegotiateProtocolVersion: 0x76, // v
} as const;

function describeTarget(r: BodyReader, what: string): 'S' | 'P' {
  const t = r.int8();
  if (t === 0x53) return 'S';
  if (t === 0x50) return 'P';
  throw new PgProtocolError(`${what}: invalid target type ${typeName(t)} (expected 'S' or 'P')`);
}

function formatCodes(r: BodyReader, what: string): number[] {
  const n = r.count(2);
  const out: number[] = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const f = r.int16();
    if (f !== 0 && f !== 1) throw new PgProtocolError(`${what}: invalid format code ${f}`);
    out[i] = f;
  }
  return out;
}

/** Decodes one client message (type byte + body). Unknown types are a protocol violation. */
export function decodeClientMessage(type: number, body: Buffer): ClientMessage {
  switch (type) {
    case T.Query: {
      const r = new BodyReader(body, 'Query');
      const sql = r.cstring();
      r.end();
      return { type: 'Query', sql };
    }
    case T.Parse: {
      const r = new BodyReader(body, 'Parse');
      const name = r.cstring();
      const sql = r.cstring();
      const n = r.count(4);
      const paramTypes: number[] = new Array<number>(n);
      for (let i = 0; i < n; i++) paramTypes[i] = r.uint32();
      r.end();
      return { type: 'Parse', name, sql, paramTypes };
    }
    case T.Bind: {
      const r = new BodyReader(body, 'Bind');
      const portal = r.cstring();
      const statement = r.cstring();
      const paramFormats = formatCodes(r, 'Bind');
      const n = r.count(4);
      const params: (Buffer | null)[] = new Array<Buffer | null>(n);
      for (let i = 0; i < n; i++) {
        const len = r.int32();
        if (len === -1) params[i] = null;
        else if (len < 0) throw new PgProtocolError(`Bind: invalid parameter length ${len}`);
        else params[i] = r.bytes(len);
      }
      if (paramFormats.length > 1 && paramFormats.length !== n) {
        throw new PgProtocolError(`Bind: ${paramFormats.length} parameter format codes for ${n} parameters`);
      }
      const resultFormats = formatCodes(r, 'Bind');
      r.end();
      return { type: 'Bind', portal, statement, paramFormats, params, resultFormats };
    }
    case T.Describe: {
      const r = new BodyReader(body, 'Describe');
      const target = describeTarget(r, 'Describe');
      const name = r.cstring();
      r.end();
      return { type: 'Describe', target, name };
    }
    case T.Execute: {
      const r = new BodyReader(body, 'Execute');
      const portal = r.cstring();
      const maxRows = r.int32();
      r.end();
      return { type: 'Execute', portal, maxRows: maxRows < 0 ? 0 : maxRows };
    }
    case T.Close: {
      const r = new BodyReader(body, 'Close');
      const target = describeTarget(r, 'Close');
      const name = r.cstring();
      r.end();
      return { type: 'Close', target, name };
    }
    case T.Sync:
      if (body.length !== 0) throw new PgProtocolError('Sync: unexpected body');
      return { type: 'Sync' };
    case T.Flush:
      if (body.length !== 0) throw new PgProtocolError('Flush: unexpected body');
      return { type: 'Flush' };
    case T.Terminate:
      if (body.length !== 0) throw new PgProtocolError('Terminate: unexpected body');
      return { type: 'Terminate' };
    case T.CopyData:
      return { type: 'CopyData', data: body };
    case T.CopyDone:
      if (body.length !== 0) throw new PgProtocolError('CopyDone: unexpected body');
      return { type: 'CopyDone' };
    case T.CopyFail: {
      const r = new BodyReader(body, 'CopyFail');
      const message = r.cstring();
      r.end();
      return { type: 'CopyFail', message };
    }
    case T.FunctionCall: {
      const r = new BodyReader(body, 'FunctionCall');
      const oid = r.uint32();
      return { type: 'FunctionCall', oid };
    }
    case T.Password:
      return { type: 'Password', data: body };
    default:
      throw new PgProtocolError(`invalid frontend message type ${typeName(type)}`, { type });
  }
}

/** PasswordMessage body: the password (NUL-terminated). */
export function decodePasswordMessage(data: Buffer): string {
  const r = new BodyReader(data, 'PasswordMessage');
  const s = r.cstring();
  r.end();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Backend messages (server → client): decoders for the ones the proxy looks into

export interface FieldDescription {
  name: string;
  tableOid: number;
  attnum: number;
  typeOid: number;
  typlen: number;
  typmod: number;
  /** 0 text, 1 binary. */
  format: number;
}

export function decodeRowDescription(body: Buffer): FieldDescription[] {
  const r = new BodyReader(body, 'RowDescription');
  const n = r.count(19);
  const out: FieldDescription[] = new Array<FieldDescription>(n);
  for (let i = 0; i < n; i++) {
    const name = r.cstring();
    const tableOid = r.uint32();
    const attnum = r.int16();
    const typeOid = r.uint32();
    const typlen = r.int16();
    const typmod = r.int32();
    const format = r.int16();
    out[i] = { name, tableOid, attnum, typeOid, typlen, typmod, format };
  }
  r.end();
  return out;
}

export function decodeDataRow(body: Buffer): (Buffer | null)[] {
  // Hot path (every row of every result): a plain loop instead of a BodyReader.
  const len = body.length;
  if (len < 2) throw new PgProtocolError('DataRow: message too short');
  const n = body.readUInt16BE(0);
  if (n * 4 > len - 2) throw new PgProtocolError(`DataRow: count ${n} exceeds the message size`);
  const out: (Buffer | null)[] = new Array<Buffer | null>(n);
  let pos = 2;
  for (let i = 0; i < n; i++) {
    if (pos + 4 > len) throw new PgProtocolError('DataRow: message too short');
    const l = body.readInt32BE(pos);
    pos += 4;
    if (l === -1) {
      out[i] = null;
    } else {
      if (l < 0 || pos + l > len) throw new PgProtocolError(`DataRow: invalid value length ${l}`);
      out[i] = body.subarray(pos, pos + l);
      pos += l;
    }
  }
  if (pos !== len) throw new PgProtocolError(`DataRow: ${len - pos} unexpected trailing bytes`);
  return out;
}

/** ErrorResponse / NoticeResponse fields in wire order: [field code, value]. */
export type NoticeFields = [string, string][];

export function decodeNoticeFields(body: Buffer, what = 'ErrorResponse'): NoticeFields {
  const r = new BodyReader(body, what);
  const out: NoticeFields = [];
  for (let i = 0; i < 256; i++) {
    const code = r.int8();
    if (code === 0) return out;
    out.push([String.fromCharCode(code), r.cstring()]);
  }
  throw new PgProtocolError(`${what}: too many fields`);
}

export function noticeField(fields: NoticeFields, code: string): string | undefined {
  for (const [c, v] of fields) if (c === code) return v;
  return undefined;
}

export function decodeCommandComplete(body: Buffer): string {
  const r = new BodyReader(body, 'CommandComplete');
  const tag = r.cstring();
  return tag;
}

export function decodeReadyForQuery(body: Buffer): 'I' | 'T' | 'E' {
  if (body.length !== 1) throw new PgProtocolError('ReadyForQuery: invalid length');
  const s = String.fromCharCode(body[0]!);
  if (s !== 'I' && s !== 'T' && s !== 'E') throw new PgProtocolError(`ReadyForQuery: invalid status ${typeName(body[0]!)}`);
  return s;
}

export function decodeParameterStatus(body: Buffer): { name: string; value: string } {
  const r = new BodyReader(body, 'ParameterStatus');
  const name = r.cstring();
  const value = r.cstring();
  return { name, value };
}

export function decodeBackendKeyData(body: Buffer): { pid: number; secret: Buffer } {
  const r = new BodyReader(body, 'BackendKeyData');
  const pid = r.int32();
  const secret = Buffer.from(r.rest());
  if (secret.length < 4 || secret.length > 256) throw new PgProtocolError(`BackendKeyData: invalid key length ${secret.length}`);
  return { pid, secret };
}

export function decodeAuthentication(body: Buffer): { code: number; data: Buffer } {
  const r = new BodyReader(body, 'Authentication');
  const code = r.int32();
  return { code, data: r.rest() };
}

/** AuthenticationSASL: the mechanism names. */
export function decodeSaslMechanisms(data: Buffer): string[] {
  const r = new BodyReader(data, 'AuthenticationSASL');
  const out: string[] = [];
  for (let i = 0; i < 64; i++) {
    const m = r.cstring();
    if (m === '') return out;
    out.push(m);
  }
  throw new PgProtocolError('AuthenticationSASL: too many mechanisms');
}

export function decodeCopyResponse(body: Buffer): { format: number; columnFormats: number[] } {
  const r = new BodyReader(body, 'CopyResponse');
  const format = r.int8();
  const n = r.count(2);
  const columnFormats: number[] = new Array<number>(n);
  for (let i = 0; i < n; i++) columnFormats[i] = r.int16();
  return { format, columnFormats };
}

export function decodeNotification(body: Buffer): { pid: number; channel: string; payload: string } {
  const r = new BodyReader(body, 'NotificationResponse');
  const pid = r.int32();
  const channel = r.cstring();
  const payload = r.cstring();
  return { pid, channel, payload };
}

/** Affected/returned row count of a CommandComplete tag (`SELECT 3`, `INSERT 0 1`), or null. */
export function tagRowCount(tag: string): number | null {
  const m = /\s(\d+)$/.exec(tag);
  return m ? Number(m[1]) : null;
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** A growable writer for one message. */
class Writer {
  private buf: Buffer;
  private pos = 0;
  constructor(size = 256) {
    this.buf = Buffer.allocUnsafe(size);
  }
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  int8(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v & 0xff;
    return this;
  }
  int16(v: number): this {
    this.ensure(2);
    this.buf.writeInt16BE(v, this.pos);
    this.pos += 2;
    return this;
  }
  int32(v: number): this {
    this.ensure(4);
    this.buf.writeInt32BE(v | 0, this.pos);
    this.pos += 4;
    return this;
  }
  uint32(v: number): this {
    this.ensure(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }
  cstring(s: string): this {
    const n = Buffer.byteLength(s, 'utf8');
    this.ensure(n + 1);
    this.buf.write(s, this.pos, 'utf8');
    this.pos += n;
    this.buf[this.pos++] = 0;
    return this;
  }
  bytes(b: Buffer): this {
    this.ensure(b.length);
    b.copy(this.buf, this.pos);
    this.pos += b.length;
    return this;
  }
  /** A regular message: type byte + length + what was written. */
  message(type: number): Buffer {
    const out = Buffer.allocUnsafe(this.pos + 5);
    out[0] = type;
    out.writeInt32BE(this.pos + 4, 1);
    this.buf.copy(out, 5, 0, this.pos);
    return out;
  }
  /** A startup-phase packet: length + what was written. */
  packet(): Buffer {
    const out = Buffer.allocUnsafe(this.pos + 4);
    out.writeInt32BE(this.pos + 4, 0);
    this.buf.copy(out, 4, 0, this.pos);
    return out;
  }
}

function emptyMessage(type: number): Buffer {
  const b = Buffer.allocUnsafe(5);
  b[0] = type;
  b.writeInt32BE(4, 1);
  return b;
}

// --- frontend messages (the proxy is the client of the upstream) ---

export function encodeStartupMessage(params: [string, string][]): Buffer {
  const w = new Writer().int32(PROTOCOL_3_0);
  for (const [k, v] of params) w.cstring(k).cstring(v);
  return w.int8(0).packet();
}

export function encodeSslRequest(): Buffer {
  return new Writer(8).int32(SSL_REQUEST_CODE).packet();
}

export function encodeCancelRequest(pid: number, secret: Buffer): Buffer {
  return new Writer(16).int32(CANCEL_REQUEST_CODE).int32(pid).bytes(secret).packet();
}

export function encodePasswordMessage(password: string): Buffer {
  return new Writer().cstring(password).message(T.Password);
}

export function encodeSaslInitialResponse(mechanism: string, data: Buffer): Buffer {
  return new Writer().cstring(mechanism).int32(data.length).bytes(data).message(T.Password);
}

export function encodeSaslResponse(data: Buffer): Buffer {
  return new Writer().bytes(data).message(T.Password);
}

export function encodeQuery(sql: string): Buffer {
  return new Writer(Buffer.byteLength(sql) + 8).cstring(sql).message(T.Query);
}

export function encodeParse(name: string, sql: string, paramTypes: readonly number[] = []): Buffer {
  const w = new Writer(Buffer.byteLength(sql) + name.length + 16).cstring(name).cstring(sql).int16(paramTypes.length);
  for (const t of paramTypes) w.uint32(t);
  return w.message(T.Parse);
}

export function encodeDescribe(target: 'S' | 'P', name: string): Buffer {
  return new Writer().int8(target.charCodeAt(0)).cstring(name).message(T.Describe);
}

export function encodeExecute(portal: string, maxRows = 0): Buffer {
  return new Writer().cstring(portal).int32(maxRows).message(T.Execute);
}

export function encodeClose(target: 'S' | 'P', name: string): Buffer {
  return new Writer().int8(target.charCodeAt(0)).cstring(name).message(T.Close);
}

export function encodeBind(portal: string, statement: string, params: readonly (Buffer | null)[] = [], paramFormats: readonly number[] = [], resultFormats: readonly number[] = []): Buffer {
  const w = new Writer().cstring(portal).cstring(statement).int16(paramFormats.length);
  for (const f of paramFormats) w.int16(f);
  w.int16(params.length);
  for (const p of params) {
    if (p === null) w.int32(-1);
    else w.int32(p.length).bytes(p);
  }
  w.int16(resultFormats.length);
  for (const f of resultFormats) w.int16(f);
  return w.message(T.Bind);
}

export const SYNC = emptyMessage(T.Sync);
export const FLUSH = emptyMessage(T.Flush);
export const TERMINATE = emptyMessage(T.Terminate);

export function encodeCopyData(data: Buffer): Buffer {
  return new Writer(data.length + 8).bytes(data).message(T.CopyData);
}

// --- backend messages (the proxy is the server of the agent) ---

export const AUTH_OK = 0;
export const AUTH_CLEARTEXT = 3;
export const AUTH_MD5 = 5;
export const AUTH_SASL = 10;
export const AUTH_SASL_CONTINUE = 11;
export const AUTH_SASL_FINAL = 12;

export function encodeAuthentication(code: number, extra?: Buffer): Buffer {
  const w = new Writer(16).int32(code);
  if (extra) w.bytes(extra);
  return w.message(B.Authentication);
}

export function encodeParameterStatus(name: string, value: string): Buffer {
  return new Writer().cstring(name).cstring(value).message(B.ParameterStatus);
}

export function encodeBackendKeyData(pid: number, secret: Buffer): Buffer {
  return new Writer(16).int32(pid).bytes(secret).message(B.BackendKeyData);
}

export function encodeReadyForQuery(status: 'I' | 'T' | 'E'): Buffer {
  return new Writer(8).int8(status.charCodeAt(0)).message(B.ReadyForQuery);
}

export function encodeNoticeFields(type: 'E' | 'N', fields: NoticeFields): Buffer {
  const w = new Writer();
  for (const [code, value] of fields) w.int8(code.charCodeAt(0)).cstring(value);
  return w.int8(0).message(type === 'E' ? B.ErrorResponse : B.NoticeResponse);
}

export interface ErrorInfo {
  severity?: 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'DEBUG' | 'INFO' | 'LOG';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

export function errorFields(e: ErrorInfo): NoticeFields {
  const sev = e.severity ?? 'ERROR';
  const f: NoticeFields = [
    ['S', sev],
    ['V', sev],
    ['C', e.code],
    ['M', e.message],
  ];
  if (e.detail !== undefined && e.detail !== '') f.push(['D', e.detail]);
  if (e.hint !== undefined && e.hint !== '') f.push(['H', e.hint]);
  return f;
}

export function encodeErrorResponse(e: ErrorInfo): Buffer {
  return encodeNoticeFields('E', errorFields(e));
}

export function encodeNoticeResponse(e: ErrorInfo): Buffer {
  return encodeNoticeFields('N', errorFields({ ...e, severity: e.severity ?? 'NOTICE' }));
}

export function encodeRowDescription(fields: readonly FieldDescription[]): Buffer {
  const w = new Writer(fields.length * 32 + 8).int16(fields.length);
  for (const f of fields) {
    w.cstring(f.name).uint32(f.tableOid).int16(f.attnum).uint32(f.typeOid).int16(f.typlen).int32(f.typmod).int16(f.format);
  }
  return w.message(B.RowDescription);
}

export function encodeDataRow(values: readonly (Buffer | null)[]): Buffer {
  let size = 2;
  for (const v of values) size += 4 + (v === null ? 0 : v.length);
  const out = Buffer.allocUnsafe(size + 5);
  out[0] = B.DataRow;
  out.writeInt32BE(size + 4, 1);
  out.writeInt16BE(values.length, 5);
  let pos = 7;
  for (const v of values) {
    if (v === null) {
      out.writeInt32BE(-1, pos);
      pos += 4;
    } else {
      out.writeInt32BE(v.length, pos);
      pos += 4;
      v.copy(out, pos);
      pos += v.length;
    }
  }
  return out;
}

export function encodeCommandComplete(tag: string): Buffer {
  return new Writer().cstring(tag).message(B.CommandComplete);
}

export function encodeNotification(pid: number, channel: string, payload: string): Buffer {
  return new Writer().int32(pid).cstring(channel).cstring(payload).message(B.NotificationResponse);
}

/** NegotiateProtocolVersion: the newest minor version supported and the options not recognized. */
export function encodeNegotiateProtocolVersion(minor: number, unrecognized: readonly string[]): Buffer {
  const w = new Writer().int32(minor).int32(unrecognized.length);
  for (const o of unrecognized) w.cstring(o);
  return w.message(B.NegotiateProtocolVersion);
}

export function emptyBackendMessage(type: number): Buffer {
  return emptyMessage(type);
}
