// One agent connection through the PostgreSQL proxy: startup (TLS, the agent's token, the
// target), then every client message decoded, every statement decided by the core before it is
// forwarded, and every result masked before it is sent back.
//
// How a refusal stays faithful to PostgreSQL: the refused statement is never forwarded; in its
// place the proxy forwards a statement that fails at parse time (`portcullis refused this
// statement`: a syntax error, no side effect) and rewrites the server's error into the policy's
// 42501 error. The server itself therefore goes through exactly what a failing statement causes:
// in a transaction block the transaction is aborted (the client then sees 25P02 until ROLLBACK);
// in an extended-protocol pipeline the server discards everything up to Sync and rolls back the
// pipeline's implicit transaction (earlier writes of that pipeline do not commit); ReadyForQuery
// carries the server's own transaction status; responses stay in order.
//
// Response bookkeeping: every message forwarded upstream that the server answers pushes an entry
// on a queue; server messages are matched against the queue's head. The server-side state the
// proxy needs (prepared statements and portals with their result columns) is mirrored when the
// server acknowledges it (ParseComplete, BindComplete, …), so the mirror is exactly the server's.

import net from 'node:net';
import tls from 'node:tls';
import { randomBytes, randomInt } from 'node:crypto';
import type { Core } from '../../core/core.js';
import type { SessionInfo } from '../../core/events.js';
import type { Logger } from '../../core/log.js';
import { summarizeRequest } from '../../core/summary.js';
import { outcomeJson, outcomeOf } from '../../core/outcome.js';
import type { BudgetCounters } from '../../policy/budgets.js';
import type { ColumnDescriptor, RowMasker } from '../../masking/index.js';
import { sqlFactsCached } from '../../policy/sql/index.js';
import { parseStatements } from '../../policy/sql/parser.js';
import { PortcullisError, type Decision, type Identity, type PolicyRequest, type SqlFacts } from '../../policy/types.js';
import type { TargetCatalog, TableInfo } from './catalog.js';
import {
  AUTH_CLEARTEXT,
  AUTH_OK,
  B,
  FrameReader,
  PgProtocolError,
  SYNC,
  TERMINATE,
  decodeClientMessage,
  decodeCommandComplete,
  decodeCopyResponse,
  decodeDataRow,
  decodeNoticeFields,
  decodeNotification,
  decodeParameterStatus,
  decodePasswordMessage,
  decodeReadyForQuery,
  decodeRowDescription,
  decodeStartupPacket,
  encodeAuthentication,
  encodeBackendKeyData,
  encodeClose,
  encodeCopyData,
  encodeDataRow,
  encodeDescribe,
  encodeErrorResponse,
  encodeNegotiateProtocolVersion,
  encodeNoticeFields,
  encodeNoticeResponse,
  encodeNotification,
  encodeParameterStatus,
  encodeParse,
  encodeQuery,
  encodeReadyForQuery,
  errorFields,
  noticeField,
  tagRowCount,
  type ClientMessage,
  type ErrorInfo,
  type FieldDescription,
  type Frame,
  type NoticeFields,
  type StartupPacket,
} from './codec.js';
import { CopyOutMasker, copyOutPlans, type CopyOutPlan } from './copy.js';
import { SessionMasks, rewriteRowDescription } from './maskstate.js';
import { clipCell, clipStatement, MAX_SAMPLE_ROWS, TranscriptWriter, type StatementEntry } from './transcript.js';
import { connectUpstream, sendCancel, UpstreamError, type PgTargetConfig } from './upstream.js';

/** The statement forwarded in place of a refused one: fails at parse time, changes nothing. */
export const POISON_SQL = 'portcullis refused this statement';
const REFRESH_PATH_SQL = 'SELECT pg_catalog.array_to_json(pg_catalog.current_schemas(false))::text';
const PATH_SAVEPOINT = 'portcullis_search_path';
/** Client bytes buffered while a decision is pending before the socket is paused. */
const CLIENT_BUFFER_LIMIT = 4 * 1024 * 1024;
/** Server bytes buffered for the client before the upstream is paused. */
const CLIENT_OUT_FLUSH = 256 * 1024;
/** Encodings whose multi-byte characters can contain ASCII bytes (quote, backslash): refused. */
const UNSAFE_ENCODINGS = new Set(['sjis', 'shiftjis', 'shiftjis2004', 'mskanji', 'big5', 'gbk', 'uhc', 'gb18030', 'johab', 'win932', 'win936', 'win949', 'win950', 'cp932', 'cp936', 'cp949', 'cp950']);
/** Startup parameters that are not run-time settings. */
const NON_GUC_PARAMS = new Set(['user', 'database', 'options', 'replication']);

export interface SessionEnv {
  core: Core;
  log: Logger;
  targets: (name: string) => PgTargetConfig | undefined;
  authenticate: (user: string, password: string, ctx: { remote: string }) => Promise<Identity>;
  secureContext: tls.SecureContext | undefined;
  allowPlaintext: boolean;
  recordingsDir: string | undefined;
  hmacKey: string | Buffer | undefined;
  typeMode: 'text' | 'preserve';
  maxMessageBytes: number;
  startupTimeoutMs: number;
  upstreamTimeoutMs: number;
  catalogFor(target: string, cfg: PgTargetConfig): TargetCatalog;
  acquire(subject: string): boolean;
  release(subject: string): void;
  registerCancel(pid: number, secret: Buffer, s: PgSession): void;
  unregisterCancel(pid: number, secret: Buffer): void;
  cancel(pid: number, secret: Buffer): void;
  onStatement(e: StatementEntry): void;
  onClosed(s: PgSession): void;
  limits: SessionLimits;
}

export interface SessionLimits {
  /** Close a session that sent nothing for this long (no statement running or held). */
  idleTimeoutMs?: number;
  /** Close a session this long after it opened. */
  maxDurationMs?: number;
  /** Re-check the agent's credential this often (with `revalidate`); a refused one closes the session. */
  revalidateMs?: number;
  revalidate?: (identity: Identity) => Promise<{ ok: true } | { ok: false; message: string }>;
}

/** A statement as the server holds it (protocol-level prepared statement), mirrored. */
interface StmtState {
  audited: string;
  /** The statement text (budgets re-check re-executions of prepared statements). */
  sql?: string;
  /** Executions started (the first one was decided with the Parse). */
  runs?: number;
  decision: { effect: string; rule: string; reason: string };
  seq: number | null;
  approval?: StatementEntry['approval'];
  /** Result columns (text formats): undefined until described, null when the statement returns none. */
  cols: ColumnDescriptor[] | null | undefined;
  fields: FieldDescription[] | null | undefined;
  copy?: { plan: CopyOutPlan; cols: ColumnDescriptor[] | null };
}

interface PortalState {
  stmt: StmtState | undefined;
  formats: number[];
  params: (string | null)[];
  cols: ColumnDescriptor[] | null | undefined;
  masker?: RowMasker;
  maskVersion?: number;
}

interface Refusal {
  fields: NoticeFields;
}

interface ResultCtx {
  start: number;
  rows: number;
  tags: string[];
  sample: (string | null)[][];
  columns?: string[];
  masker?: RowMasker | null;
  /** Fail closed: columns unknown, every value NULL. */
  blind?: boolean;
  binaryCols?: boolean[];
  copy?: CopyOutMasker;
  /** Simple protocol: a RowDescription announced the current result set. */
  described?: boolean;
  error?: { code: string; message: string };
  suspended?: boolean;
  /** Bytes of rows sent to the client and not yet counted against budgets. */
  bytes?: number;
  /** A COPY FROM STDIN is running (its row count is written rows). */
  copyIn?: boolean;
}

/** A result context with every field present from the start (one object shape for V8's inline caches). */
function newResultCtx(): ResultCtx {
  return { start: performance.now(), rows: 0, tags: [], sample: [], columns: undefined, masker: undefined, blind: undefined, binaryCols: undefined, copy: undefined, described: undefined, error: undefined, suspended: undefined, bytes: undefined, copyIn: undefined };
}

/**
 * The last simple-protocol RowDescription and what it resolved to: a statement sent again with
 * other literal values describes the same columns, so its description is decoded, resolved
 * against the catalog and given a row masker once. Valid while the catalog has not been dropped
 * (epoch) and its answers are fresh (until), for the masks it was built with (masksVersion).
 */
interface DescMemo {
  body: Buffer;
  epoch: number;
  until: number;
  masksVersion: number;
  columns: string[];
  binaryCols: boolean[];
  masker: RowMasker | null;
  /** The RowDescription sent to the client, when the masks change the advertised types. */
  rewritten: Buffer | null;
}

interface Record0 {
  audited: string;
  decision: { effect: string; rule: string; reason: string };
  seq: number | null;
  approval?: StatementEntry['approval'];
}

type Entry = { batch: number; done?: (() => void)[]; /** A bastion-only batch: its errors are not the client's. */ silent?: boolean } & (
  | { k: 'parse'; name: string; stmt: StmtState; internal: boolean; refusal?: Refusal }
  | { k: 'descS'; name: string; internal: boolean; copyFor?: { stmtName: string | null; plan: CopyOutPlan; query?: QueryEntry; index: number } }
  | { k: 'bind'; portal: string; statement: string; formats: number[]; params: (string | null)[] }
  | { k: 'descP'; portal: string; internal: boolean }
  | { k: 'exec'; portal: string; ctx: ResultCtx }
  | { k: 'close'; target: 'S' | 'P'; name: string; internal: boolean }
  | { k: 'sync'; internal: boolean }
  | QueryEntry
  | { k: 'internal'; rows: string[][]; resolve: (rows: string[][]) => void; reject: (e: Error) => void; error?: string }
  | { k: 'refuse'; refusal: Refusal }
);

interface QueryEntry {
  k: 'query';
  batch: number;
  done?: (() => void)[];
  rec: Record0;
  ctx: ResultCtx;
  refusal?: Refusal;
  copyPlans: CopyOutPlan[];
  copyCols: (ColumnDescriptor[] | null)[];
  copySeen: number;
}

function clientParamsToSettings(params: [string, string][]): { settings: [string, string][]; error?: string } {
  const settings: [string, string][] = [];
  for (const [k, v] of params) {
    if (NON_GUC_PARAMS.has(k)) continue;
    if (k.startsWith('_pq_.')) continue;
    settings.push([k, v]);
  }
  const options = params.find(([k]) => k === 'options')?.[1];
  if (options !== undefined && options.trim() !== '') {
    const words = splitOptions(options);
    for (let i = 0; i < words.length; i++) {
      const w = words[i]!;
      let kv: string | undefined;
      if (w === '-c') kv = words[++i];
      else if (w.startsWith('-c')) kv = w.slice(2);
      else if (w.startsWith('--')) kv = w.slice(2);
      else return { settings, error: `startup option ${JSON.stringify(w)} is not supported through the bastion (only -c name=value)` };
      if (kv === undefined) return { settings, error: 'startup option -c without a setting' };
      const eq = kv.indexOf('=');
      if (eq <= 0) return { settings, error: `startup option -c ${JSON.stringify(kv)} is not of the form name=value` };
      settings.push([kv.slice(0, eq).replace(/-/g, '_'), kv.slice(eq + 1)]);
    }
  }
  return { settings };
}

/** PostgreSQL's pg_split_opts: whitespace-separated words, backslash escapes the next character. */
export function splitOptions(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let has = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && i + 1 < s.length) {
      cur += s[++i]!;
      has = true;
    } else if (/\s/.test(c)) {
      if (has) out.push(cur);
      cur = '';
      has = false;
    } else {
      cur += c;
      has = true;
    }
  }
  if (has) out.push(cur);
  return out;
}

function sqlIdent(name: string): string {
  return /^[a-z_][a-z0-9_$]*(\.[a-z_][a-z0-9_$]*)*$/.test(name) ? name : '"' + name.replace(/"/g, '""') + '"';
}

function sqlLiteral(v: string): string {
  return "'" + v.replace(/'/g, "''") + "'";
}

function normEncoding(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]/g, '');
}

/**
 * The proxy's own bookkeeping (search_path, portcullis.reason, prepared statements and portals,
 * COPY, the parser-integrity checks) only concerns statements containing one of these keywords
 * (a keyword cannot be written any other way; a function name can, with U&"…" escapes, hence
 * `u&`). Statements without any skip the proxy's fact extraction (the core still decides them).
 */
const STATE_KEYWORDS =
  /(?<![A-Za-z0-9_$])(set|reset|discard|set_config|role|authorization|schema|commit|rollback|abort|end|prepare|savepoint|release|deallocate|close|copy|begin|start)(?![A-Za-z0-9_$])|u&/i;

/** Settings that change how the server reads statements (the bastion parses with the defaults). */
const LEXER_SETTINGS = new Set(['standard_conforming_strings', 'backslash_quote', 'client_encoding']);

/**
 * The first set_config() call in the statements whose (literal) setting name changes how the
 * server reads statements, or null. (A non-literal name is refused by the fact extractor already.)
 */
export function lexerSettingCalls(sql: string, facts: SqlFacts): string | null {
  if (!facts.statements.some((st) => st.actions.some((a) => a.action === 'call' && (a.function ?? '').endsWith('set_config')))) return null;
  let raw: unknown[];
  try {
    raw = parseStatements(sql).map((r) => r.stmt);
  } catch {
    return 'unknown';
  }
  const stack: unknown[] = [...raw];
  for (let n = 0; stack.length > 0 && n < 1_000_000; n++) {
    const v = stack.pop();
    if (Array.isArray(v)) {
      for (const x of v) stack.push(x);
      continue;
    }
    if (typeof v !== 'object' || v === null) continue;
    const o = v as Record<string, unknown>;
    const fc = o['FuncCall'];
    if (typeof fc === 'object' && fc !== null) {
      const f = fc as { funcname?: unknown; args?: unknown };
      const names = Array.isArray(f.funcname) ? f.funcname : [];
      const last = names[names.length - 1] as { String?: { sval?: unknown } } | undefined;
      if (last?.String?.sval === 'set_config' && Array.isArray(f.args)) {
        const a0 = f.args[0] as { A_Const?: { sval?: { sval?: unknown } } } | undefined;
        const name = a0?.A_Const?.sval?.sval;
        if (typeof name !== 'string') return 'unknown';
        if (LEXER_SETTINGS.has(name.toLowerCase())) return name;
      }
    }
    for (const k of Object.keys(o)) stack.push(o[k]);
  }
  return null;
}

function samePath(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** `SET portcullis.reason = '…'` earlier in the same statement string: the reason for the rest. */
function inlineReason(facts: SqlFacts | null): string | undefined {
  if (!facts) return undefined;
  let reason: string | undefined;
  for (const st of facts.statements) {
    if (!st.actions.every((a) => a.action === 'set' || a.action === 'reset')) break;
    for (const a of st.actions) {
      if (a.action === 'set' && a.setting === 'portcullis.reason') reason = (a.value ?? '').replace(/^'(.*)'$/s, '$1').replace(/''/g, "'");
    }
  }
  return reason;
}

function decisionInfo(d: Decision): { effect: string; rule: string; reason: string } {
  return { effect: d.effect, rule: d.rule, reason: d.reason };
}

export class PgSession {
  readonly remote: string;
  private client: net.Socket;
  private readonly clientReader: FrameReader;
  private up: net.Socket | null = null;
  private upReader: FrameReader | null = null;
  private info: SessionInfo | null = null;
  private identity: Identity | null = null;
  private targetName = '';
  private target: PgTargetConfig | null = null;
  private catalog: TargetCatalog | null = null;
  private descMemo: DescMemo | null = null;
  private acquired: string | null = null;
  private cancelKey: { pid: number; secret: Buffer } | null = null;
  private upKey: { pid: number; secret: Buffer } | null = null;
  private transcript: TranscriptWriter | null = null;
  private closed = false;
  private ready = false;
  private database = '';
  private applicationName = '';

  // policy state
  // search_path: `path` is what the policy resolves names with. It follows the SETs the proxy
  // forwards, optimistically; but a SET may fail, be rolled back (an error, ROLLBACK, ROLLBACK TO,
  // the implicit transaction of a failed statement) or end with its transaction (SET LOCAL), and
  // pipelined statements are decided before the ones ahead of them have run. So after any change
  // the path is *uncertain* until it is read back from the server at the next quiet point (no
  // response outstanding; inside a transaction under a savepoint). A statement decided while it is
  // uncertain is decided under every path the session may be on, and the most restrictive
  // decision wins.
  private path: string[] = ['public'];
  private confirmedPath: string[] = ['public'];
  /** Paths the session may have been on since the last confirmation outside a transaction. */
  private pathCandidates: string[][] = [];
  private pathUncertain = false;
  /** A change not yet confirmed outside a transaction (the transaction's end may revert it). */
  private changedInTx = false;
  private rollbackSeen = false;
  private errorSeen = false;
  private reason: string | undefined;
  /** A reason SET earlier in the statement string being decided. */
  private inlineReason: string | undefined;
  /** Client view: the statement each portal was bound to, and the portals that started executing. */
  private readonly portalStmt = new Map<string, string>();
  private readonly portalRan = new Set<string>();
  private readonly masks: SessionMasks;

  // protocol state
  private readonly q: Entry[] = [];
  private qHead = 0;
  private batch = 0;
  private failedBatch = -1;
  private discardUntilSync = false;
  private openBatch = false;
  private status: 'I' | 'T' | 'E' = 'I';
  private readonly stmts = new Map<string, StmtState>();
  private readonly portals = new Map<string, PortalState>();
  private readonly knownStmts = new Map<string, StmtState>();
  private readonly knownPortals = new Set<string>();
  private idleWaiters: (() => void)[] = [];

  // I/O state
  private clientOut: Buffer[] = [];
  private clientOutLen = 0;
  private upOut: Buffer[] = [];
  private clientPumping = false;
  private upPumping = false;
  private upPausedAsync = false;
  private upPausedDrain = false;
  private clientPausedBuffer = false;
  private clientPausedDrain = false;
  private hold: AbortController | null = null;
  private cancelRequested = false;
  private startupWaiter: (() => void) | null = null;
  private startupTimer: NodeJS.Timeout | null = null;
  private readonly timers: NodeJS.Timeout[] = [];
  private lastActivity = Date.now();

  constructor(
    socket: net.Socket,
    private readonly env: SessionEnv,
  ) {
    this.client = socket;
    this.remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.clientReader = new FrameReader(env.maxMessageBytes);
    this.masks = new SessionMasks(env.hmacKey, env.typeMode);
    socket.setNoDelay(true);
  }

  get id(): string | undefined {
    return this.info?.id;
  }

  get subject(): string | undefined {
    return this.identity?.subject;
  }

  // -------------------------------------------------------------------------------------------
  // startup

  private readonly onClientDataStartup = (d: Buffer): void => {
    this.clientReader.push(d);
    const w = this.startupWaiter;
    this.startupWaiter = null;
    w?.();
  };

  private readonly onClientGone = (): void => {
    void this.terminate('client disconnected');
  };

  private waitClient(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.closed) return reject(new PortcullisError('pg_client_gone', 'client disconnected'));
      this.startupWaiter = () => (this.closed ? reject(new PortcullisError('pg_client_gone', 'client disconnected')) : resolve());
    });
  }

  private async nextStartupPacket(): Promise<StartupPacket> {
    for (;;) {
      const f = this.clientReader.nextStartup();
      if (f) return decodeStartupPacket(f.body);
      await this.waitClient();
    }
  }

  private async nextClientMessage(): Promise<ClientMessage> {
    for (;;) {
      const f = this.clientReader.next();
      if (f) return decodeClientMessage(f.type, f.body);
      await this.waitClient();
    }
  }

  private attachStartup(sock: net.Socket): void {
    sock.on('data', this.onClientDataStartup);
    sock.on('close', this.onClientGone);
    sock.on('error', () => undefined);
  }

  private detachStartup(sock: net.Socket): void {
    sock.off('data', this.onClientDataStartup);
  }

  /** Runs the connection; resolves when it is closed. Never throws. */
  async run(): Promise<void> {
    this.attachStartup(this.client);
    this.startupTimer = setTimeout(() => void this.fatal({ code: '08006', message: 'startup did not complete in time' }), this.env.startupTimeoutMs);
    try {
      await this.startup();
    } catch (e) {
      if (this.closed) return;
      if (e instanceof PgProtocolError) await this.fatal({ code: e.sqlstate, message: e.message });
      else if (e instanceof PortcullisError && e.code === 'pg_client_gone') await this.terminate('client disconnected');
      else {
        this.env.log.error('postgres proxy: startup failed', { remote: this.remote, error: (e as Error).message });
        await this.fatal({ code: 'XX000', message: `internal error in the bastion: ${(e as Error).message}` });
      }
    } finally {
      if (this.startupTimer) clearTimeout(this.startupTimer);
      this.startupTimer = null;
    }
  }

  private async startup(): Promise<void> {
    let tlsOn = false;
    let startup: Extract<StartupPacket, { kind: 'startup' }> | null = null;
    for (let i = 0; i < 4 && !startup; i++) {
      const p = await this.nextStartupPacket();
      if (p.kind === 'cancel') {
        this.env.cancel(p.pid, p.secret);
        await this.terminate('cancel request');
        return;
      }
      if (p.kind === 'gssenc') {
        this.client.write(Buffer.from('N'));
        continue;
      }
      if (p.kind === 'ssl') {
        if (tlsOn || !this.env.secureContext) {
          this.client.write(Buffer.from('N'));
          continue;
        }
        if (this.clientReader.buffered > 0) throw new PgProtocolError('received unencrypted data after SSL request');
        this.detachStartup(this.client);
        this.client.off('close', this.onClientGone);
        this.client.write(Buffer.from('S'));
        const raw = this.client;
        const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: this.env.secureContext });
        await new Promise<void>((resolve, reject) => {
          secure.once('secure', () => resolve());
          secure.once('error', (e) => reject(new PortcullisError('pg_client_gone', `TLS handshake failed: ${e.message}`)));
          secure.once('close', () => reject(new PortcullisError('pg_client_gone', 'client disconnected during the TLS handshake')));
        });
        this.client = secure;
        this.attachStartup(secure);
        tlsOn = true;
        continue;
      }
      startup = p;
    }
    if (!startup) throw new PgProtocolError('too many startup negotiation packets');

    const params = startup.params;
    const get = (k: string): string | undefined => params.find(([n]) => n === k)?.[1];
    const unknownPq = params.map(([k]) => k).filter((k) => k.startsWith('_pq_.'));
    if (startup.minor > 0 || unknownPq.length > 0) this.client.write(encodeNegotiateProtocolVersion(0, unknownPq));

    const user = get('user') ?? '';
    if (user === '') return this.fatal({ code: '28000', message: 'no PostgreSQL user name specified in startup packet' });
    if (get('replication') !== undefined && get('replication') !== 'false' && get('replication') !== '0') {
      return this.fatal({ code: '42501', message: 'replication connections are not allowed through the bastion' });
    }
    if (!tlsOn && !this.env.allowPlaintext) {
      return this.fatal({
        code: '28000',
        message: `connection without TLS refused for user "${user}"`,
        detail: 'the bastion requires TLS (sslmode=require or verify-full)',
        hint: this.env.secureContext ? 'connect with sslmode=require' : 'the bastion has no TLS certificate configured; set allow_plaintext for local use',
      });
    }
    this.database = get('database') ?? user;
    this.applicationName = get('application_name') ?? '';

    // --- the agent's credential ---
    this.client.write(encodeAuthentication(AUTH_CLEARTEXT));
    const pm = await this.nextClientMessage();
    if (pm.type !== 'Password') throw new PgProtocolError(`expected a password message, got ${pm.type}`);
    const password = decodePasswordMessage(pm.data);
    let identity: Identity;
    try {
      // The peer's address without the port: rate limiting counts failures per source.
      identity = await this.env.authenticate(user, password, { remote: this.client.remoteAddress ?? this.remote });
    } catch (e) {
      const safe = e instanceof PortcullisError ? e.message : 'the credential was not accepted';
      this.env.log.info('postgres proxy: authentication failed', { remote: this.remote, user, code: e instanceof PortcullisError ? e.code : 'error' });
      return this.fatal({ code: '28P01', message: `password authentication failed for user "${user}"`, detail: safe });
    }
    this.identity = identity;

    // --- the target ---
    const at = this.database.indexOf('@');
    this.targetName = at > 0 ? this.database.slice(0, at) : this.database;
    const cfg = this.env.targets(this.targetName);
    if (!cfg) {
      return this.fatal({ code: '3D000', message: `database "${this.database}" does not exist`, detail: `no PostgreSQL target named "${this.targetName}" is configured on the bastion` });
    }
    this.target = at > 0 ? { ...cfg, database: this.database.slice(at + 1) } : cfg;
    if (!this.env.acquire(identity.subject)) {
      return this.fatal({ code: '53300', message: `too many connections for identity "${identity.subject}"` });
    }
    this.acquired = identity.subject;

    const conv = clientParamsToSettings(params);
    if (conv.error) return this.fatal({ code: '0A000', message: conv.error });
    for (const [k, v] of conv.settings) {
      const kl = k.toLowerCase();
      if (kl === 'client_encoding' && UNSAFE_ENCODINGS.has(normEncoding(v))) {
        return this.fatal({ code: '0A000', message: `client_encoding ${v} is not supported through the bastion`, hint: 'use UTF8' });
      }
      if (kl === 'standard_conforming_strings' && !['on', 'true', '1', 'yes'].includes(v.toLowerCase())) {
        return this.fatal({ code: '0A000', message: 'standard_conforming_strings must stay on through the bastion' });
      }
      if (kl === 'portcullis.reason') this.reason = v;
    }

    this.info = await this.env.core.openSession({
      protocol: 'postgres',
      target: this.targetName,
      identity,
      remote: this.remote,
      meta: { database: this.target.database, application_name: this.applicationName, tls: tlsOn ? 'yes' : 'no' },
    });
    if (this.env.recordingsDir) {
      try {
        this.transcript = new TranscriptWriter(this.env.recordingsDir, this.info.id, (e) => this.env.log.error('postgres proxy: transcript write failed', { session: this.info?.id, error: e.message }));
        this.transcript.write({
          type: 'session',
          v: 1,
          session: this.info.id,
          protocol: 'postgres',
          target: this.targetName,
          identity,
          remote: this.remote,
          database: this.target.database,
          applicationName: this.applicationName,
          time: new Date().toISOString(),
        });
      } catch (e) {
        this.env.log.error('postgres proxy: cannot open the transcript', { error: (e as Error).message });
      }
    }

    // --- the startup settings are statements too: decided like SET ---
    if (conv.settings.length > 0) {
      const sql = conv.settings.map(([k, v]) => `SET ${sqlIdent(k.toLowerCase())} TO ${sqlLiteral(v)}`).join('; ');
      const { decision, seq } = await this.env.core.decide(this.info.id, this.request(sql));
      this.record({ protocol: 'startup', statement: this.audited(sql), decision: decisionInfo(decision), seq });
      if (decision.effect !== 'allow') {
        const r = this.policyError(decision);
        return this.fatal({ ...r, severity: 'FATAL' });
      }
      this.masks.add(decision.masks);
    }

    // --- upstream ---
    this.catalog = this.env.catalogFor(this.targetName, this.target);
    let upc;
    try {
      upc = await connectUpstream(this.target, conv.settings, { timeoutMs: this.env.upstreamTimeoutMs });
    } catch (e) {
      const msg = e instanceof UpstreamError ? e.message : (e as Error).message;
      this.env.log.warn('postgres proxy: upstream login failed', { session: this.info.id, target: this.targetName, error: msg });
      if (e instanceof UpstreamError && e.fields && e.code === 'pg_upstream_error') {
        // A settings error (invalid value for a parameter …) is the agent's to see.
        const code = noticeField(e.fields, 'C') ?? '08006';
        if (!code.startsWith('28') && !code.startsWith('08')) {
          return this.fatal({ code, message: noticeField(e.fields, 'M') ?? msg, detail: noticeField(e.fields, 'D') });
        }
      }
      return this.fatal({ code: '08006', message: `target ${this.targetName} unreachable: ${msg}` });
    }
    if (this.closed) {
      upc.socket.destroy();
      return;
    }
    const scs = upc.params.find(([k]) => k === 'standard_conforming_strings')?.[1];
    if (scs !== undefined && scs !== 'on') {
      upc.socket.destroy();
      return this.fatal({ code: '0A000', message: `target ${this.targetName} runs with standard_conforming_strings = ${scs}; the bastion requires on` });
    }
    this.up = upc.socket;
    this.upReader = upc.reader;
    this.upKey = upc.backendKey;
    this.status = upc.status;
    const events = this.env.core.events;
    this.up.on('data', (d: Buffer) => {
      events.emit('session.bytes', { protocol: 'postgres', direction: 'out', bytes: d.length });
      this.upReader!.push(d);
      void this.pumpUpstream();
    });
    this.up.on('close', () => void this.upstreamGone());
    this.up.on('error', (e) => this.env.log.debug('postgres proxy: upstream socket error', { session: this.info?.id, error: e.message }));
    this.up.on('drain', () => {
      if (this.clientPausedDrain) {
        this.clientPausedDrain = false;
        this.updateClientFlow();
      }
    });

    // The client's socket switches to the message pump.
    this.detachStartup(this.client);
    this.client.on('data', (d: Buffer) => {
      events.emit('session.bytes', { protocol: 'postgres', direction: 'in', bytes: d.length });
      this.clientReader.push(d);
      if (this.clientPumping && !this.clientPausedBuffer && this.clientReader.buffered > CLIENT_BUFFER_LIMIT) {
        // A decision or a hold is pending: stop reading until the pump catches up.
        this.clientPausedBuffer = true;
        this.updateClientFlow();
      }
      void this.pumpClient();
    });
    this.client.on('drain', () => {
      if (this.upPausedDrain) {
        this.upPausedDrain = false;
        this.updateUpFlow();
      }
    });
    this.client.on('end', this.onClientGone);
    this.up.resume();

    // The search path the policy resolves names with: ask the server.
    try {
      await this.refreshPath();
    } catch (e) {
      this.env.log.warn('postgres proxy: cannot read search_path', { session: this.info.id, error: (e as Error).message });
    }
    if (this.closed) return;

    const key = { pid: randomInt(1, 0x7fffffff), secret: randomBytes(4) };
    this.cancelKey = key;
    this.env.registerCancel(key.pid, key.secret, this);
    const out: Buffer[] = [encodeAuthentication(AUTH_OK)];
    for (const [k, v] of upc.params) out.push(encodeParameterStatus(k, v));
    for (const n of upc.notices) out.push(this.maskNotice(n.subarray(5), 'N').buf);
    out.push(encodeBackendKeyData(key.pid, key.secret));
    out.push(encodeReadyForQuery(this.status));
    this.client.write(Buffer.concat(out));
    this.ready = true;
    if (this.startupTimer) clearTimeout(this.startupTimer);
    this.startupTimer = null;
    this.armLimits();
    void this.pumpClient();
  }

  private armLimits(): void {
    const l = this.env.limits;
    if (l.maxDurationMs) {
      const t = setTimeout(() => void this.fatal({ code: '57P01', message: `terminating connection: the session reached its maximum duration (${Math.round(l.maxDurationMs! / 1000)} s)` }), l.maxDurationMs);
      t.unref();
      this.timers.push(t);
    }
    if (l.idleTimeoutMs) {
      const idle = l.idleTimeoutMs;
      const t = setInterval(() => {
        if (this.queueEmpty && !this.hold && Date.now() - this.lastActivity >= idle) {
          void this.fatal({ code: '57P05', message: `terminating connection due to idle-session timeout (${Math.round(idle / 1000)} s)` });
        }
      }, Math.max(250, Math.min(10_000, Math.floor(idle / 4))));
      t.unref();
      this.timers.push(t);
    }
    if (l.revalidateMs && l.revalidate) {
      const check = l.revalidate;
      const t = setInterval(() => {
        void check(this.identity!).then(
          (r) => {
            if (!r.ok) void this.fatal({ code: '28000', message: `terminating connection: the credential is no longer valid: ${r.message}` });
          },
          (e: unknown) => this.env.log.warn('postgres proxy: credential revalidation failed', { session: this.info?.id, error: (e as Error).message }),
        );
      }, l.revalidateMs);
      t.unref();
      this.timers.push(t);
    }
  }

  // -------------------------------------------------------------------------------------------
  // helpers

  private request(sql: string, searchPath: string[] = this.path): PolicyRequest {
    const r: PolicyRequest = { protocol: 'postgres', identity: this.identity!, target: this.targetName, sql, searchPath };
    const reason = this.inlineReason ?? this.reason;
    if (reason !== undefined) r.reason = reason;
    return r;
  }

  /** Whether damage budgets apply to this session (the proxy then feeds them). */
  private budgetsOn(): boolean {
    return this.info !== null && this.env.core.budgets.enabledFor(this.info.id);
  }

  /** What a statement did, for the damage budgets: rows from its CommandComplete tag, bytes of the rows sent. */
  private feedBudgets(tag: string | null, ctx: ResultCtx): void {
    const bytes = ctx.bytes ?? 0;
    ctx.bytes = 0;
    if (!this.budgetsOn()) return;
    const amounts: BudgetCounters = {};
    if (tag !== null) {
      const verb = tag.split(' ')[0];
      const n = tagRowCount(tag) ?? 0;
      // MERGE's count mixes inserted, updated and deleted rows: it counts as both (fail closed).
      if (verb === 'DELETE' || verb === 'MERGE') amounts.rows_deleted = n;
      if (verb === 'DELETE' || verb === 'MERGE' || verb === 'INSERT' || verb === 'UPDATE' || (verb === 'COPY' && ctx.copyIn)) amounts.rows_written = n;
    }
    if (bytes > 0) amounts.bytes_returned = bytes;
    if (!amounts.rows_deleted && !amounts.rows_written && !amounts.bytes_returned) return;
    void this.env.core.budgets.consume(this.info!.id, amounts).catch((e: unknown) => this.env.log.error('postgres proxy: budget accounting failed', { session: this.info?.id, error: String(e) }));
  }

  private audited(sql: string): string {
    return clipStatement(summarizeRequest({ protocol: 'postgres', identity: this.identity!, target: this.targetName, sql }).sql ?? '');
  }

  /** The paths to decide under: the current one, or every possible one while uncertain. */
  private decisionPaths(): string[][] {
    if (!this.pathUncertain) return [this.path];
    const out: string[][] = [];
    for (const p of [this.path, this.confirmedPath, ...this.pathCandidates]) if (!out.some((q) => samePath(q, p))) out.push(p);
    return out;
  }

  private record(e: Omit<StatementEntry, 'type' | 'time' | 'session'>): void {
    if (!this.info) return;
    const entry: StatementEntry = { type: 'statement', time: new Date().toISOString(), session: this.info.id, ...e };
    this.transcript?.write(entry);
    try {
      this.env.onStatement(entry);
    } catch {
      // a listener's failure is not the session's
    }
  }

  /**
   * The 42501 error for a refusal: MESSAGE for humans, DETAIL the machine-readable outcome
   * (core/outcome.ts, docs/outcome.schema.json), HINT the remedy.
   */
  private policyError(d: Decision, hold?: { state: 'denied' | 'expired'; approvalId: string; why: string }): ErrorInfo {
    const reason = this.masks.maskText(d.reason);
    const remedy = d.remedy ? this.masks.maskText(d.remedy) : undefined;
    const o = outcomeOf({ ...d, reason, remedy }, hold ? { hold: hold.state, approvalId: hold.approvalId } : {});
    return {
      code: '42501',
      message: `blocked by policy ${d.rule}: ${reason}${hold ? `; ${hold.why}` : ''}`,
      detail: outcomeJson(o),
      ...(remedy ? { hint: remedy } : {}),
    };
  }

  /** DETAIL of a held statement's notice, and of a held statement the client cancelled: approval_required. */
  private heldOutcome(d: Decision, approvalId: string, retryAfterS?: number): string {
    const reason = this.masks.maskText(d.reason);
    const remedy = d.remedy ? this.masks.maskText(d.remedy) : undefined;
    return outcomeJson(outcomeOf({ ...d, reason, remedy }, { hold: 'pending', approvalId, ...(retryAfterS !== undefined ? { retryAfterS } : {}) }));
  }

  private sendClient(b: Buffer): void {
    this.clientOut.push(b);
    this.clientOutLen += b.length;
    if (this.clientOutLen >= CLIENT_OUT_FLUSH) this.flushClient();
  }

  private flushClient(): void {
    if (this.clientOut.length === 0 || this.closed) {
      this.clientOut = [];
      this.clientOutLen = 0;
      return;
    }
    const data = this.clientOut.length === 1 ? this.clientOut[0]! : Buffer.concat(this.clientOut, this.clientOutLen);
    this.clientOut = [];
    this.clientOutLen = 0;
    if (!this.client.write(data) && !this.upPausedDrain) {
      this.upPausedDrain = true;
      this.updateUpFlow();
    }
  }

  private sendUp(b: Buffer): void {
    this.upOut.push(b);
  }

  private flushUp(): void {
    if (this.upOut.length === 0 || !this.up || this.closed) {
      this.upOut = [];
      return;
    }
    const data = this.upOut.length === 1 ? this.upOut[0]! : Buffer.concat(this.upOut);
    this.upOut = [];
    if (!this.up.write(data) && !this.clientPausedDrain) {
      this.clientPausedDrain = true;
      this.updateClientFlow();
    }
  }

  private updateUpFlow(): void {
    if (!this.up) return;
    if (this.upPausedAsync || this.upPausedDrain) this.up.pause();
    else this.up.resume();
  }

  private updateClientFlow(): void {
    if (this.clientPausedBuffer || this.clientPausedDrain) this.client.pause();
    else this.client.resume();
  }

  private push(e: Entry): void {
    this.q.push(e);
  }

  private get queueEmpty(): boolean {
    return this.qHead >= this.q.length;
  }

  private pop(): void {
    const e = this.q[this.qHead];
    this.q[this.qHead] = undefined as unknown as Entry;
    this.qHead++;
    if (this.qHead > 1024 && this.qHead * 2 > this.q.length) {
      this.q.splice(0, this.qHead);
      this.qHead = 0;
    }
    if (e?.done) for (const f of e.done) f();
    // Entries the server will never answer (it discards everything after an error until Sync).
    while (this.qHead < this.q.length) {
      const n = this.q[this.qHead]!;
      if (n.batch !== this.failedBatch || n.k === 'sync') break;
      this.q[this.qHead] = undefined as unknown as Entry;
      this.qHead++;
      if (n.k === 'internal') n.reject(new PortcullisError('pg_internal_query', 'discarded by the server after an error'));
      if (n.done) for (const f of n.done) f();
    }
    if (this.queueEmpty && this.idleWaiters.length) {
      const ws = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of ws) w();
    }
  }

  /** The head entry, dropping those the server discards (after an error, until Sync). */
  private head(): Entry | undefined {
    while (this.qHead < this.q.length) {
      const e = this.q[this.qHead]!;
      if (e.batch === this.failedBatch && e.k !== 'sync') {
        this.pop();
        continue;
      }
      return e;
    }
    return undefined;
  }

  private whenIdle(): Promise<void> {
    if (this.queueEmpty) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  // -------------------------------------------------------------------------------------------
  // client → upstream

  private async pumpClient(): Promise<void> {
    if (this.clientPumping || !this.ready || this.closed) return;
    this.clientPumping = true;
    try {
      for (let guard = 0; !this.closed; guard++) {
        let f: Frame | null;
        try {
          f = this.clientReader.next();
        } catch (e) {
          this.flushUp();
          await this.fatal({ code: e instanceof PgProtocolError ? e.sqlstate : '08P01', message: (e as Error).message });
          return;
        }
        if (!f) break;
        this.lastActivity = Date.now();
        let m: ClientMessage;
        try {
          m = decodeClientMessage(f.type, f.body);
        } catch (e) {
          this.flushUp();
          await this.fatal({ code: e instanceof PgProtocolError ? e.sqlstate : '08P01', message: (e as Error).message });
          return;
        }
        const r = this.onClientMessage(m, f.raw);
        if (r) {
          this.flushUp();
          this.flushClient();
          this.clientPausedBuffer = this.clientReader.buffered > CLIENT_BUFFER_LIMIT;
          this.updateClientFlow();
          await r;
        }
        if (guard % 256 === 255) {
          this.flushUp();
          this.flushClient();
        }
      }
      this.flushUp();
      this.flushClient();
    } catch (e) {
      this.env.log.error('postgres proxy: client message handling failed', { session: this.info?.id, error: (e as Error).message, stack: (e as Error).stack });
      await this.fatal({ code: 'XX000', message: `internal error in the bastion: ${(e as Error).message}` });
    } finally {
      this.clientPumping = false;
      if (this.clientPausedBuffer) {
        this.clientPausedBuffer = false;
        this.updateClientFlow();
      }
    }
  }

  private onClientMessage(m: ClientMessage, raw: Buffer): Promise<void> | void {
    if (this.discardUntilSync && m.type !== 'Sync' && m.type !== 'Terminate') return;
    switch (m.type) {
      case 'Query':
        return this.onQuery(m.sql, raw);
      case 'Parse':
        return this.onParse(m, raw);
      case 'Bind': {
        this.openBatch = true;
        this.sendUp(raw);
        const params = m.params.map((p, i) => {
          if (p === null) return null;
          const fmt = m.paramFormats.length === 0 ? 0 : m.paramFormats.length === 1 ? m.paramFormats[0]! : m.paramFormats[i]!;
          return fmt === 1 ? `<binary ${p.length} bytes>` : clipCell(this.masks.maskText(p.toString('utf8')));
        });
        this.push({ k: 'bind', batch: this.batch, portal: m.portal, statement: m.statement, formats: m.resultFormats, params });
        this.knownPortals.add(m.portal);
        this.portalStmt.set(m.portal, m.statement);
        this.portalRan.delete(m.portal);
        if (!this.knownStmts.has(m.statement)) {
          this.sendUp(encodeDescribe('P', m.portal));
          this.push({ k: 'descP', batch: this.batch, portal: m.portal, internal: true });
        }
        return;
      }
      case 'Describe':
        this.openBatch = true;
        if (m.target === 'P' && !this.knownPortals.has(m.name)) this.knownPortals.add(m.name);
        this.sendUp(raw);
        this.push(m.target === 'S' ? { k: 'descS', batch: this.batch, name: m.name, internal: false } : { k: 'descP', batch: this.batch, portal: m.name, internal: false });
        return;
      case 'Execute': {
        this.openBatch = true;
        const gate = this.budgetGate(m.portal);
        if (gate) {
          return gate.then((ok) => {
            if (ok) this.sendExecute(m, raw);
          });
        }
        this.sendExecute(m, raw);
        return;
      }
      case 'Close':
        this.openBatch = true;
        this.sendUp(raw);
        if (m.target === 'S') this.knownStmts.delete(m.name);
        else this.knownPortals.delete(m.name);
        this.push({ k: 'close', batch: this.batch, target: m.target, name: m.name, internal: false });
        return;
      case 'Sync':
        this.sendUp(raw);
        this.push({ k: 'sync', batch: this.batch, internal: false });
        this.batch++;
        this.discardUntilSync = false;
        this.openBatch = false;
        return;
      case 'Flush':
        this.sendUp(raw);
        return;
      case 'Terminate':
        this.flushUp();
        void this.terminate('client terminated');
        return;
      case 'CopyData':
      case 'CopyDone':
      case 'CopyFail':
        this.sendUp(raw);
        return;
      case 'FunctionCall':
        this.forwardRefusal({
          fields: errorFields({ code: '42501', message: 'the fast-path function call protocol is not allowed through the bastion', hint: 'call the function in a SELECT' }),
        });
        return;
      case 'Password':
        throw new PgProtocolError('unexpected password message');
    }
  }

  private sendExecute(m: Extract<ClientMessage, { type: 'Execute' }>, raw: Buffer): void {
    if (!this.knownPortals.has(m.portal)) {
      this.sendUp(encodeDescribe('P', m.portal));
      this.push({ k: 'descP', batch: this.batch, portal: m.portal, internal: true });
      this.knownPortals.add(m.portal);
    }
    this.sendUp(raw);
    this.push({ k: 'exec', batch: this.batch, portal: m.portal, ctx: newResultCtx() });
  }

  /**
   * A prepared statement executed again is not decided again; its damage budgets are (Core.recheck).
   * Null: run it now. Else a promise of whether it may run (a refusal fails the pipeline to Sync).
   */
  private budgetGate(portal: string): Promise<boolean> | null {
    if (!this.budgetsOn() || this.portalRan.has(portal)) return null; // a suspended portal continues
    this.portalRan.add(portal);
    const name = this.portalStmt.get(portal);
    const stmt = name === undefined ? undefined : this.knownStmts.get(name);
    if (!stmt?.sql) return null;
    const runs = stmt.runs ?? 0;
    stmt.runs = runs + 1;
    if (runs === 0) return null; // decided with its Parse
    const sql = stmt.sql;
    return this.env.core.recheck(this.info!.id, this.request(sql, this.path)).then((r) => {
      if (this.closed) return false;
      if (!r) return true;
      const refusal: Refusal = { fields: errorFields(this.policyError(r.decision)) };
      this.forwardRefusal(refusal, true, '__portcullis_budget');
      this.record({ protocol: 'extended', statement: stmt.audited, decision: decisionInfo(r.decision), seq: r.seq, error: { code: '42501', message: noticeField(refusal.fields, 'M') ?? 'refused' } });
      return false;
    });
  }

  /** Forwards the poison statement as a simple Query; its error becomes `refusal`. */
  private forwardRefusal(refusal: Refusal, extended = false, statementName = ''): void {
    if (extended) {
      // Same statement slot as the refused Parse: a failed Parse of the unnamed statement drops
      // the previous unnamed one, a failed Parse of a named one changes nothing — as on a server.
      this.sendUp(encodeParse(statementName === '' ? '' : '__portcullis_refused', POISON_SQL));
      this.push({ k: 'refuse', batch: this.batch, refusal });
      this.discardUntilSync = true;
      return;
    }
    this.sendUp(encodeQuery(POISON_SQL));
    const e: QueryEntry = {
      k: 'query',
      batch: this.batch,
      rec: { audited: '', decision: { effect: 'deny', rule: '', reason: '' }, seq: null },
      ctx: newResultCtx(),
      refusal,
      copyPlans: [],
      copyCols: [],
      copySeen: 0,
    };
    this.push(e);
  }

  /** Before deciding: refresh the search path from the server when it may have diverged. */
  private async beforeDecide(): Promise<void> {
    // Not in an aborted transaction (nothing but its end can run there anyway).
    const blocked = (): boolean => this.closed || !this.pathUncertain || this.openBatch || this.status === 'E';
    if (blocked()) return;
    await this.whenIdle();
    if (blocked()) return;
    try {
      await this.refreshPath();
    } catch (e) {
      this.env.log.debug('postgres proxy: search_path refresh failed', { session: this.info?.id, error: (e as Error).message });
    }
  }

  private async refreshPath(): Promise<void> {
    let rows: string[][];
    if (this.status === 'T') {
      // Inside the client's transaction: under a savepoint, so that even a failure (a tiny
      // statement_timeout …) leaves the client's transaction exactly as it was.
      try {
        rows = await this.internalQuery(`SAVEPOINT ${PATH_SAVEPOINT}; ${REFRESH_PATH_SQL}; RELEASE SAVEPOINT ${PATH_SAVEPOINT}`);
      } catch (e) {
        if (this.closed) throw e;
        try {
          await this.internalQuery(`ROLLBACK TO SAVEPOINT ${PATH_SAVEPOINT}; RELEASE SAVEPOINT ${PATH_SAVEPOINT}`);
        } catch (e2) {
          await this.fatal({ code: 'XX000', message: `the bastion could not restore the transaction after reading search_path: ${(e2 as Error).message}` });
        }
        throw e;
      }
    } else {
      rows = await this.internalQuery(REFRESH_PATH_SQL);
    }
    const v = rows[0]?.[0];
    if (typeof v !== 'string') throw new PortcullisError('pg_search_path', 'no search_path in the answer');
    const parsed: unknown = JSON.parse(v);
    if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) throw new PortcullisError('pg_search_path', `unexpected search_path answer ${v}`);
    this.path = parsed.length > 0 ? (parsed as string[]) : ['pg_catalog'];
    this.confirmedPath = this.path;
    this.pathUncertain = false;
    if (this.status === 'I') {
      this.changedInTx = false;
      this.pathCandidates = [];
    }
  }

  private internalQuery(sql: string): Promise<string[][]> {
    return new Promise<string[][]>((resolve, reject) => {
      this.sendUp(encodeQuery(sql));
      this.push({ k: 'internal', batch: this.batch, rows: [], resolve, reject });
      this.flushUp();
    });
  }

  /** Facts for our own bookkeeping (the core computes its own; this hits the same cache). */
  private facts(sql: string, path: string[]): SqlFacts | null {
    if (!STATE_KEYWORDS.test(sql)) return null;
    try {
      return sqlFactsCached(sql, { searchPath: path });
    } catch {
      return null;
    }
  }

  /**
   * core.decide under every path the session may be on (one audit event each); the most
   * restrictive decision wins (deny > review > allow), with the masks of all of them.
   */
  private async decideUnderPaths(sql: string): Promise<{ decision: Decision; seq: number | null }> {
    const paths = this.decisionPaths();
    if (paths.length === 1) return this.env.core.decide(this.info!.id, this.request(sql, paths[0]));
    let best: { decision: Decision; seq: number | null } | null = null;
    const masks = [];
    const rank = { allow: 0, review: 1, deny: 2 } as const;
    for (const p of paths) {
      const r = await this.env.core.decide(this.info!.id, this.request(sql, p));
      masks.push(...r.decision.masks);
      if (!best || rank[r.decision.effect] > rank[best.decision.effect]) best = r;
      if (r.decision.effect === 'deny') break;
    }
    return { decision: { ...best!.decision, masks }, seq: best!.seq };
  }

  /**
   * Decides a statement string; on review, tells the client and holds it. Returns the final
   * outcome, with the refusal to send when it is not allowed.
   */
  private async decide(sql: string): Promise<{ ok: boolean; decision: Decision; seq: number | null; refusal?: Refusal; approval?: StatementEntry['approval']; facts: SqlFacts | null; path: string[] }> {
    await this.beforeDecide();
    // Damage budgets count what statements did: let those in flight report before deciding.
    if (!this.openBatch && !this.queueEmpty && this.budgetsOn()) await this.whenIdle();
    const path = this.path;
    const facts = this.facts(sql, path);
    this.inlineReason = inlineReason(facts);
    const req = this.request(sql, path);
    let decided: { decision: Decision; seq: number | null };
    try {
      decided = await this.decideUnderPaths(sql);
    } finally {
      this.inlineReason = undefined;
    }
    const { decision, seq } = decided;
    if (decision.effect === 'deny') return { ok: false, decision, seq, refusal: { fields: errorFields(this.policyError(decision)) }, facts, path };
    let approval: StatementEntry['approval'];
    if (decision.effect === 'review') {
      const ac = new AbortController();
      this.hold = ac;
      this.cancelRequested = false;
      const out = await this.env.core.hold(
        this.info!.id,
        req,
        decision,
        (id) => {
          this.sendClient(
            encodeNoticeResponse({
              code: '00000',
              message: `portcullis: held for approval ${id} (${decision.rule}): ${this.masks.maskText(decision.reason)}`,
              detail: this.heldOutcome(decision, id),
              hint: decision.remedy ? this.masks.maskText(decision.remedy) : undefined,
            }),
          );
          this.flushClient();
        },
        ac.signal,
      );
      this.hold = null;
      approval = { id: out.approvalId, state: out.state, ...(out.by !== undefined ? { by: out.by } : {}) };
      if (this.closed) return { ok: false, decision, seq, approval, facts, path };
      if (out.state !== 'approved') {
        if (this.cancelRequested) {
          // The approval stays pending: once approved, the same statement sent again runs.
          return {
            ok: false,
            decision,
            seq,
            approval,
            facts,
            path,
            refusal: { fields: errorFields({ code: '57014', message: `canceling statement due to user request; approval ${out.approvalId} stays pending: send the same statement again once it is approved`, detail: this.heldOutcome(decision, out.approvalId, 5) }) },
          };
        }
        const why = out.state === 'denied' ? `approval ${out.approvalId} was denied${out.by ? ` by ${out.by}` : ''}${out.reason ? `: ${out.reason}` : ''}` : `approval ${out.approvalId} expired${out.reason ? ` (${out.reason})` : ''}`;
        return { ok: false, decision, seq, approval, facts, path, refusal: { fields: errorFields(this.policyError(decision, { state: out.state === 'denied' ? 'denied' : 'expired', approvalId: out.approvalId, why: this.masks.maskText(why) })) } };
      }
    }
    // Allowed (or approved). Integrity checks the parser's view depends on, then the masks.
    const integrity = this.integrityRefusal(facts, sql);
    if (integrity) return { ok: false, decision, seq, approval, facts, path, refusal: { fields: errorFields(integrity) } };
    try {
      this.masks.check(decision.masks);
    } catch (e) {
      return { ok: false, decision, seq, approval, facts, path, refusal: { fields: errorFields({ code: '42501', message: `refused: the policy's masks cannot be applied: ${(e as Error).message}` }) } };
    }
    this.masks.add(decision.masks);
    return { ok: true, decision, seq, approval, facts, path };
  }

  /**
   * The proxy parses statements as PostgreSQL does with standard_conforming_strings on and a
   * client encoding whose multi-byte characters never contain ASCII bytes. Statements that would
   * change either are refused (they would let a later statement be read differently by the
   * bastion and by the server).
   */
  private integrityRefusal(facts: SqlFacts | null, sql: string): ErrorInfo | null {
    if (!facts) return null;
    const lexer = lexerSettingCalls(sql, facts);
    if (lexer) return { code: '0A000', message: `set_config('${lexer}', …) is not allowed through the bastion: it changes how later statements are parsed` };
    for (const st of facts.statements) {
      for (const a of st.actions) {
        if (a.action !== 'set') continue;
        const v = (a.value ?? '').replace(/^'(.*)'$/, '$1');
        if (a.setting === 'standard_conforming_strings' && !['on', 'true', '1', 'yes', 'default'].includes(v.toLowerCase())) {
          return { code: '0A000', message: 'standard_conforming_strings must stay on through the bastion' };
        }
        if (a.setting === 'client_encoding' && UNSAFE_ENCODINGS.has(normEncoding(v))) {
          return { code: '0A000', message: `client_encoding ${v} is not supported through the bastion`, hint: 'use UTF8' };
        }
      }
    }
    return null;
  }

  /** What an allowed statement does to the session's state (optimistically, before it runs). */
  private afterAllowed(facts: SqlFacts | null, path: string[]): void {
    if (!facts) return;
    const after = facts.searchPathAfter;
    if (!samePath(after, path)) {
      this.path = after;
      this.pathCandidates.push(after);
      this.pathUncertain = true;
      this.changedInTx = true;
    }
    if (this.changedInTx && facts.statements.some((st) => st.actions.some((a) => a.action === 'transaction'))) this.pathUncertain = true;
    for (const st of facts.statements) {
      for (const a of st.actions) {
        if (a.action === 'set' && a.setting === 'portcullis.reason') this.reason = (a.value ?? '').replace(/^'(.*)'$/, '$1');
        if (a.action === 'reset' && (a.setting === 'portcullis.reason' || a.setting === 'all')) this.reason = undefined;
        if (a.action === 'discard') this.reason = undefined;
        if (a.action === 'deallocate' || a.action === 'discard') this.knownStmts.clear();
        if (a.action === 'close' || a.action === 'discard') this.knownPortals.clear();
      }
    }
  }

  private async onQuery(sql: string, _raw: Buffer): Promise<void> {
    const d = await this.decide(sql);
    if (this.closed) return;
    const rec: Record0 = { audited: this.audited(sql), decision: decisionInfo(d.decision), seq: d.seq, ...(d.approval ? { approval: d.approval } : {}) };
    if (!d.ok) {
      this.forwardRefusal(d.refusal ?? { fields: errorFields(this.policyError(d.decision)) });
      const e = this.q[this.q.length - 1] as QueryEntry;
      e.rec = rec;
      this.flushUp();
      return;
    }
    this.afterAllowed(d.facts, d.path);
    // COPY … TO STDOUT: describe its columns first (needs a sync point of its own).
    let plans: CopyOutPlan[] = [];
    if (!this.masks.empty && d.facts?.statements.some((s) => s.actions.some((a) => a.action === 'copy' && a.copy?.direction === 'to'))) {
      try {
        plans = copyOutPlans(sql);
      } catch {
        plans = [];
      }
    }
    const entry: QueryEntry = { k: 'query', batch: this.batch, rec, ctx: newResultCtx(), copyPlans: plans, copyCols: plans.map(() => null), copySeen: 0 };
    if (plans.length > 0 && !this.openBatch) {
      plans.forEach((plan, index) => {
        this.sendUp(encodeParse('__portcullis_copy', plan.describeSql));
        this.push({ k: 'parse', batch: this.batch, name: '__portcullis_copy', internal: true, silent: true, stmt: this.blankStmt() });
        this.sendUp(encodeDescribe('S', '__portcullis_copy'));
        this.push({ k: 'descS', batch: this.batch, name: '__portcullis_copy', internal: true, silent: true, copyFor: { stmtName: null, plan, query: entry, index } });
        this.sendUp(encodeClose('S', '__portcullis_copy'));
        this.push({ k: 'close', batch: this.batch, target: 'S', name: '__portcullis_copy', internal: true, silent: true });
      });
      this.sendUp(SYNC);
      this.push({ k: 'sync', batch: this.batch, internal: true, silent: true });
      this.batch++;
      entry.batch = this.batch;
    }
    entry.ctx.start = performance.now();
    this.sendUp(encodeQuery(sql));
    this.push(entry);
    this.knownPortals.delete('');
    this.knownStmts.delete('');
    this.flushUp();
  }

  private blankStmt(): StmtState {
    return { audited: '', decision: { effect: 'allow', rule: '', reason: '' }, seq: null, cols: undefined, fields: undefined };
  }

  private async onParse(m: Extract<ClientMessage, { type: 'Parse' }>, raw: Buffer): Promise<void> {
    this.openBatch = true;
    const d = await this.decide(m.sql);
    if (this.closed) return;
    if (!d.ok) {
      this.forwardRefusal(d.refusal ?? { fields: errorFields(this.policyError(d.decision)) }, true, m.name);
      this.record({ protocol: 'extended', statement: this.audited(m.sql), decision: decisionInfo(d.decision), seq: d.seq, ...(d.approval ? { approval: d.approval } : {}), error: { code: noticeField(d.refusal?.fields ?? [], 'C') ?? '42501', message: noticeField(d.refusal?.fields ?? [], 'M') ?? 'refused' } });
      this.flushUp();
      return;
    }
    this.afterAllowed(d.facts, d.path);
    const stmt: StmtState = { audited: this.audited(m.sql), sql: m.sql, runs: 0, decision: decisionInfo(d.decision), seq: d.seq, ...(d.approval ? { approval: d.approval } : {}), cols: undefined, fields: undefined };
    this.sendUp(raw);
    this.push({ k: 'parse', batch: this.batch, name: m.name, internal: false, stmt });
    this.sendUp(encodeDescribe('S', m.name));
    this.push({ k: 'descS', batch: this.batch, name: m.name, internal: true });
    this.knownStmts.set(m.name, stmt);
    if (!this.masks.empty && d.facts?.statements.some((s) => s.actions.some((a) => a.action === 'copy' && a.copy?.direction === 'to'))) {
      let plan: CopyOutPlan | undefined;
      try {
        plan = copyOutPlans(m.sql)[0];
      } catch {
        plan = undefined;
      }
      if (plan) {
        this.sendUp(encodeParse('__portcullis_copy', plan.describeSql));
        this.push({ k: 'parse', batch: this.batch, name: '__portcullis_copy', internal: true, stmt: this.blankStmt() });
        this.sendUp(encodeDescribe('S', '__portcullis_copy'));
        this.push({ k: 'descS', batch: this.batch, name: '__portcullis_copy', internal: true, copyFor: { stmtName: m.name, plan, index: 0 } });
        this.sendUp(encodeClose('S', '__portcullis_copy'));
        this.push({ k: 'close', batch: this.batch, target: 'S', name: '__portcullis_copy', internal: true });
      }
    }
    this.flushUp();
  }

  // -------------------------------------------------------------------------------------------
  // upstream → client

  private async pumpUpstream(): Promise<void> {
    if (this.upPumping || this.closed || !this.upReader) return;
    this.upPumping = true;
    try {
      for (let guard = 0; !this.closed; guard++) {
        const f = this.upReader.next();
        if (!f) break;
        const r = this.onUpstreamFrame(f);
        if (r) {
          this.flushClient();
          this.upPausedAsync = true;
          this.updateUpFlow();
          try {
            await r;
          } finally {
            this.upPausedAsync = false;
            this.updateUpFlow();
          }
        }
      }
      this.flushClient();
    } catch (e) {
      this.env.log.error('postgres proxy: upstream message handling failed', { session: this.info?.id, error: (e as Error).message, stack: (e as Error).stack });
      await this.fatal({ code: e instanceof PgProtocolError ? '08P01' : 'XX000', message: `the bastion lost track of the target's responses: ${(e as Error).message}` });
    } finally {
      this.upPumping = false;
    }
  }

  private maskNotice(body: Buffer, type: 'E' | 'N'): { fields: NoticeFields; buf: Buffer } {
    const fields = decodeNoticeFields(body, type === 'E' ? 'ErrorResponse' : 'NoticeResponse');
    const masked: NoticeFields = fields.map(([c, v]) => (['M', 'D', 'H', 'W', 'q', 'P'].includes(c) ? [c, this.masks.maskText(v)] : [c, v]));
    return { fields: masked, buf: encodeNoticeFields(type, masked) };
  }

  private onUpstreamFrame(f: Frame): Promise<void> | void {
    switch (f.type) {
      case B.NoticeResponse:
        this.sendClient(this.maskNotice(f.body, 'N').buf);
        return;
      case B.ParameterStatus: {
        const p = decodeParameterStatus(f.body);
        if (p.name === 'standard_conforming_strings' && p.value !== 'on') {
          return this.fatal({ code: '0A000', message: 'standard_conforming_strings was turned off: the bastion closes the connection' });
        }
        if (p.name === 'client_encoding' && UNSAFE_ENCODINGS.has(normEncoding(p.value))) {
          return this.fatal({ code: '0A000', message: `client_encoding ${p.value} is not supported through the bastion` });
        }
        if (p.name === 'application_name') this.applicationName = p.value;
        this.sendClient(f.raw);
        return;
      }
      case B.NotificationResponse: {
        const n = decodeNotification(f.body);
        this.sendClient(encodeNotification(this.cancelKey?.pid ?? n.pid, n.channel, this.masks.maskText(n.payload)));
        return;
      }
    }
    if (f.type === B.ErrorResponse) this.errorSeen = true;
    const e = this.head();
    if (!e) {
      if (f.type === B.ErrorResponse) {
        // A FATAL error the server sends on its own (terminated by an administrator …).
        this.sendClient(this.maskNotice(f.body, 'E').buf);
        return;
      }
      throw new PgProtocolError(`unexpected message from the target: ${String.fromCharCode(f.type)} with no request outstanding`);
    }
    switch (e.k) {
      case 'query':
        return this.onQueryResponse(e, f);
      case 'internal':
        return this.onInternalResponse(e, f);
      case 'parse':
        if (f.type === B.ParseComplete) {
          if (!e.internal) {
            this.stmts.set(e.name, e.stmt);
            this.sendClient(f.raw);
          } else this.stmts.set(e.name, e.stmt);
          this.pop();
          return;
        }
        return this.onExtendedError(e, f);
      case 'refuse':
        if (f.type === B.ErrorResponse) {
          this.sendClient(encodeNoticeFields('E', e.refusal.fields));
          this.failedBatch = e.batch;
          this.pop();
          return;
        }
        throw new PgProtocolError(`unexpected message ${String.fromCharCode(f.type)} for a refused statement`);
      case 'descS':
        return this.onDescribeStatement(e, f);
      case 'bind':
        if (f.type === B.BindComplete) {
          const stmt = this.stmts.get(e.statement);
          this.portals.set(e.portal, { stmt, formats: e.formats, params: e.params, cols: stmt?.cols ? this.withFormats(stmt.cols, e.formats) : stmt?.cols === null ? null : undefined });
          this.sendClient(f.raw);
          this.pop();
          return;
        }
        return this.onExtendedError(e, f);
      case 'descP':
        return this.onDescribePortal(e, f);
      case 'exec':
        return this.onExecResponse(e, f);
      case 'close':
        if (f.type === B.CloseComplete) {
          if (e.target === 'S') this.stmts.delete(e.name);
          else this.portals.delete(e.name);
          if (!e.internal) this.sendClient(f.raw);
          this.pop();
          return;
        }
        return this.onExtendedError(e, f);
      case 'sync':
        if (f.type === B.ReadyForQuery) {
          this.onReady(decodeReadyForQuery(f.body));
          if (this.failedBatch === e.batch) this.failedBatch = -1;
          if (!e.internal) this.sendClient(f.raw);
          this.pop();
          return;
        }
        if (f.type === B.ErrorResponse) {
          // An error at Sync (a deferred constraint at the implicit commit …).
          if (!e.silent) this.sendClient(this.maskNotice(f.body, 'E').buf);
          return;
        }
        throw new PgProtocolError(`unexpected message ${String.fromCharCode(f.type)} before ReadyForQuery`);
    }
  }

  private onExtendedError(e: Entry, f: Frame): void {
    if (f.type !== B.ErrorResponse) throw new PgProtocolError(`unexpected message ${String.fromCharCode(f.type)} for ${e.k}`);
    // An error of a message injected into the client's batch is the client's too (the server
    // now discards the rest of that batch); one of a bastion-only batch is not.
    if (!e.silent) this.sendClient(this.maskNotice(f.body, 'E').buf);
    this.failedBatch = e.batch;
    this.pop();
  }

  private onReady(status: 'I' | 'T' | 'E'): void {
    this.status = status;
    if (this.changedInTx && (status === 'I' || this.rollbackSeen || this.errorSeen)) this.pathUncertain = true;
    this.rollbackSeen = false;
    this.errorSeen = false;
    if (status === 'I') {
      this.portals.clear();
      this.knownPortals.clear();
    }
  }

  private withFormats(cols: ColumnDescriptor[], formats: number[]): ColumnDescriptor[] {
    return cols.map((c, i) => {
      const f = formats.length === 0 ? 0 : formats.length === 1 ? formats[0]! : (formats[i] ?? 0);
      return f === 1 ? { ...c, format: 'binary' as const } : c.format === 'text' ? c : { ...c, format: 'text' as const };
    });
  }

  /** Column descriptors for a RowDescription (origins from the catalog); a promise when it must ask. */
  private resolveColumns(fields: FieldDescription[]): ColumnDescriptor[] | Promise<ColumnDescriptor[]> {
    const oids = new Set<number>();
    for (const f of fields) if (f.tableOid !== 0) oids.add(f.tableOid);
    const build = (tables: Map<number, TableInfo | null> | null): ColumnDescriptor[] =>
      fields.map((f) => {
        const t = f.tableOid !== 0 && tables ? tables.get(f.tableOid) : null;
        const format = f.format === 1 ? ('binary' as const) : ('text' as const);
        if (t) return { table: `${t.schema}.${t.table}`, column: t.columns.get(f.attnum) ?? f.name, typeOid: f.typeOid, format };
        return { column: f.name, typeOid: f.typeOid, format };
      });
    if (oids.size === 0 || !this.catalog) return build(null);
    if (this.catalog.hasAll(oids)) {
      const m = new Map<number, TableInfo | null>();
      for (const o of oids) m.set(o, this.catalog.cached(o) ?? null);
      return build(m);
    }
    return this.catalog.resolve(oids).then(
      (m) => build(m),
      (e: unknown) => {
        this.env.log.warn('postgres proxy: catalog lookup failed; masking by column name and detectors', { session: this.info?.id, error: (e as Error).message });
        return build(null);
      },
    );
  }

  private onDescribeStatement(e: Extract<Entry, { k: 'descS' }>, f: Frame): Promise<void> | void {
    if (f.type === B.ParameterDescription) {
      if (!e.internal) this.sendClient(f.raw);
      return;
    }
    if (f.type === B.NoData) {
      const st = this.stmts.get(e.name);
      if (st) {
        st.cols = null;
        st.fields = null;
      }
      if (e.copyFor) this.setCopyCols(e, null);
      if (!e.internal) this.sendClient(f.raw);
      this.pop();
      return;
    }
    if (f.type === B.RowDescription) {
      const fields = decodeRowDescription(f.body);
      const finish = (cols: ColumnDescriptor[]): void => {
        if (e.copyFor) {
          this.setCopyCols(e, cols);
        } else {
          const st = this.stmts.get(e.name);
          if (st) {
            st.cols = cols;
            st.fields = fields;
          }
        }
        if (!e.internal) {
          const rm = this.masks.empty ? null : this.masks.rowMasker(cols);
          const rewritten = rm ? rewriteRowDescription(fields, rm) : null;
          this.sendClient(rewritten ?? f.raw);
        }
        this.pop();
      };
      const cols = this.resolveColumns(fields);
      if (cols instanceof Promise) return cols.then(finish);
      finish(cols);
      return;
    }
    return this.onExtendedError(e, f);
  }

  private setCopyCols(e: Extract<Entry, { k: 'descS' }>, cols: ColumnDescriptor[] | null): void {
    const c = e.copyFor!;
    if (c.query) c.query.copyCols[c.index] = cols;
    else if (c.stmtName !== null) {
      const st = this.stmts.get(c.stmtName);
      if (st) st.copy = { plan: c.plan, cols };
    }
  }

  private onDescribePortal(e: Extract<Entry, { k: 'descP' }>, f: Frame): Promise<void> | void {
    if (f.type === B.NoData) {
      const p = this.portals.get(e.portal);
      if (p) p.cols = null;
      if (!e.internal) this.sendClient(f.raw);
      this.pop();
      return;
    }
    if (f.type === B.RowDescription) {
      const fields = decodeRowDescription(f.body);
      const finish = (cols: ColumnDescriptor[]): void => {
        let p = this.portals.get(e.portal);
        if (!p) {
          // A portal the proxy did not see bound (a SQL cursor): described now.
          p = { stmt: undefined, formats: [], params: [], cols };
          this.portals.set(e.portal, p);
        }
        p.cols = cols;
        p.masker = undefined;
        if (!e.internal) {
          const rm = this.masks.empty ? null : this.masks.rowMasker(cols);
          const rewritten = rm ? rewriteRowDescription(fields, rm) : null;
          this.sendClient(rewritten ?? f.raw);
        }
        this.pop();
      };
      const cols = this.resolveColumns(fields);
      if (cols instanceof Promise) return cols.then(finish);
      finish(cols);
      return;
    }
    return this.onExtendedError(e, f);
  }

  private maskRow(ctx: ResultCtx, f: Frame): void {
    ctx.rows++;
    ctx.bytes = (ctx.bytes ?? 0) + f.raw.length;
    if (ctx.blind) {
      const values = decodeDataRow(f.body);
      this.sendClient(encodeDataRow(values.map(() => null)));
      return;
    }
    const masker = ctx.masker;
    if (!masker || masker.passthrough) {
      this.sendClient(f.raw);
      if (ctx.sample.length < MAX_SAMPLE_ROWS) this.sampleRow(ctx, decodeDataRow(f.body));
      return;
    }
    const values = decodeDataRow(f.body);
    let out: (Buffer | null)[];
    try {
      out = masker(values);
    } catch (err) {
      // mask_refused (or a shape mismatch): never send the raw row.
      this.env.log.warn('postgres proxy: row refused by the masker', { session: this.info?.id, error: (err as Error).message });
      out = values.map(() => null);
    }
    this.sendClient(out === values ? f.raw : encodeDataRow(out));
    if (ctx.sample.length < MAX_SAMPLE_ROWS) this.sampleRow(ctx, out);
  }

  private sampleRow(ctx: ResultCtx, values: (Buffer | null)[]): void {
    ctx.sample.push(values.map((v, i) => (v === null ? null : ctx.binaryCols?.[i] ? `<binary ${v.length} bytes>` : clipCell(v.toString('utf8')))));
  }

  /** Keeps what a RowDescription resolved to for the next identical one (DescMemo). */
  private rememberDesc(body: Buffer, fields: FieldDescription[], epoch: number, ctx: ResultCtx, rewritten: Buffer | null): void {
    const oids: number[] = [];
    for (const fd of fields) if (fd.tableOid !== 0) oids.push(fd.tableOid);
    // Columns resolved without the catalog (none, or its lookup failed) are not kept: asked again next time.
    const until = oids.length === 0 ? Infinity : this.catalog ? this.catalog.freshUntil(oids) : 0;
    if (until === 0 || epoch !== (this.catalog?.epoch ?? 0) || ctx.columns === undefined || ctx.binaryCols === undefined || ctx.masker === undefined) {
      this.descMemo = null;
      return;
    }
    this.descMemo = { body: Buffer.from(body), epoch, until, masksVersion: this.masks.version, columns: ctx.columns, binaryCols: ctx.binaryCols, masker: ctx.masker, rewritten };
  }

  private startResult(ctx: ResultCtx, cols: ColumnDescriptor[] | null | undefined, fields: FieldDescription[] | null): void {
    ctx.copy = undefined;
    if (cols === undefined) {
      ctx.blind = true;
      ctx.masker = null;
      return;
    }
    ctx.blind = false;
    if (cols === null) {
      ctx.masker = null;
      return;
    }
    ctx.columns = cols.map((c, i) => fields?.[i]?.name ?? c.column);
    ctx.binaryCols = cols.map((c) => c.format === 'binary');
    ctx.masker = this.masks.empty ? null : this.masks.rowMasker(cols);
  }

  private copyMasker(ctx: ResultCtx, f: Frame, plan: CopyOutPlan | undefined, cols: ColumnDescriptor[] | null | undefined): void {
    const resp = decodeCopyResponse(f.body);
    if (this.masks.empty) {
      ctx.copy = undefined;
      return;
    }
    const opts = plan?.options ?? { format: resp.format === 1 ? ('binary' as const) : ('text' as const), delimiter: '\t', null: '\\N', quote: '"', escape: '"', header: false };
    const binary = opts.format === 'binary';
    let mask: (row: (Buffer | null)[]) => (Buffer | null)[];
    if (cols && cols.length === resp.columnFormats.length) {
      const descs = cols.map((c) => ({ ...c, format: binary ? ('binary' as const) : ('text' as const) }));
      const rm = this.masks.rowMasker(descs, binary ? 'copy-binary' : 'copy-text');
      mask = (row) => (row.length === descs.length ? rm(row) : row.map((v) => (v === null ? null : binary ? null : Buffer.from('[REDACTED]'))));
    } else {
      mask = (row) => row.map((v) => (v === null ? null : binary ? null : Buffer.from('[REDACTED]')));
    }
    ctx.copy = new CopyOutMasker(opts, mask, MAX_SAMPLE_ROWS);
  }

  private copyData(ctx: ResultCtx, f: Frame): void {
    ctx.bytes = (ctx.bytes ?? 0) + f.raw.length;
    if (!ctx.copy) {
      this.sendClient(f.raw);
      return;
    }
    for (const row of ctx.copy.push(Buffer.from(f.body))) this.sendClient(encodeCopyData(row));
  }

  private copyDone(ctx: ResultCtx, f: Frame): void {
    if (ctx.copy) {
      for (const row of ctx.copy.end()) this.sendClient(encodeCopyData(row));
      ctx.rows += ctx.copy.rows;
      for (const s of ctx.copy.sample) if (ctx.sample.length < MAX_SAMPLE_ROWS) ctx.sample.push(s);
      ctx.copy = undefined;
    }
    this.sendClient(f.raw);
  }

  private afterCommand(tag: string): void {
    const verb = tag.split(' ')[0]!;
    if (['CREATE', 'ALTER', 'DROP', 'TRUNCATE', 'COMMENT', 'GRANT', 'REVOKE'].includes(verb)) this.catalog?.invalidate();
    if (tag === 'ROLLBACK') this.rollbackSeen = true;
    if (verb === 'DEALLOCATE' || tag === 'DISCARD ALL') {
      this.stmts.clear();
      this.knownStmts.clear();
    }
    if (tag.startsWith('CLOSE CURSOR') || tag === 'DISCARD ALL') {
      this.portals.clear();
      this.knownPortals.clear();
    }
  }

  private onQueryResponse(e: QueryEntry, f: Frame): Promise<void> | void {
    const ctx = e.ctx;
    switch (f.type) {
      case B.RowDescription: {
        const memo = this.descMemo;
        if (memo && memo.masksVersion === this.masks.version && memo.epoch === (this.catalog?.epoch ?? 0) && Date.now() <= memo.until && memo.body.equals(f.body)) {
          ctx.copy = undefined;
          ctx.blind = false;
          ctx.columns = memo.columns;
          ctx.binaryCols = memo.binaryCols;
          ctx.masker = memo.masker;
          ctx.described = true;
          this.sendClient(memo.rewritten ?? f.raw);
          return;
        }
        const fields = decodeRowDescription(f.body);
        const epoch = this.catalog?.epoch ?? 0;
        const finish = (cols: ColumnDescriptor[]): void => {
          this.startResult(ctx, cols, fields);
          ctx.described = true;
          const rewritten = ctx.masker ? rewriteRowDescription(fields, ctx.masker) : null;
          this.sendClient(rewritten ?? f.raw);
          this.rememberDesc(f.body, fields, epoch, ctx, rewritten);
        };
        const cols = this.resolveColumns(fields);
        if (cols instanceof Promise) return cols.then(finish);
        finish(cols);
        return;
      }
      case B.DataRow:
        if (!ctx.described) ctx.blind = true; // rows without a description: fail closed
        this.maskRow(ctx, f);
        return;
      case B.CommandComplete: {
        const tag = decodeCommandComplete(f.body);
        ctx.tags.push(tag);
        ctx.described = false;
        ctx.blind = false;
        if (!tag.startsWith('SELECT') && !tag.startsWith('COPY') && !tag.startsWith('FETCH')) {
          const n = tagRowCount(tag);
          if (n !== null) ctx.rows += n;
        }
        ctx.masker = null;
        this.afterCommand(tag);
        this.feedBudgets(tag, ctx);
        ctx.copyIn = false;
        const ap = e.rec.approval;
        // Tell the agent who released its held statement and what it did (visible under psql -q too).
        if (ap?.state === 'approved') this.sendClient(encodeNoticeResponse({ code: '00000', message: `portcullis: approval ${ap.id} granted by ${ap.by ?? 'an operator'}; the held statement ran: ${tag}` }));
        this.sendClient(f.raw);
        return;
      }
      case B.EmptyQueryResponse:
        this.sendClient(f.raw);
        return;
      case B.ErrorResponse: {
        if (e.refusal) {
          this.sendClient(encodeNoticeFields('E', e.refusal.fields));
          ctx.error = { code: noticeField(e.refusal.fields, 'C') ?? '42501', message: noticeField(e.refusal.fields, 'M') ?? '' };
        } else {
          const m = this.maskNotice(f.body, 'E');
          ctx.error = { code: noticeField(m.fields, 'C') ?? '', message: noticeField(m.fields, 'M') ?? '' };
          this.sendClient(m.buf);
        }
        return;
      }
      case B.CopyOutResponse: {
        const i = e.copySeen++;
        this.copyMasker(ctx, f, e.copyPlans[i], e.copyPlans[i] ? e.copyCols[i] : undefined);
        this.sendClient(f.raw);
        return;
      }
      case B.CopyData:
        this.copyData(ctx, f);
        return;
      case B.CopyDone:
        this.copyDone(ctx, f);
        return;
      case B.CopyInResponse:
        ctx.copyIn = true;
        this.sendClient(f.raw);
        return;
      case B.ReadyForQuery: {
        this.onReady(decodeReadyForQuery(f.body));
        if (ctx.bytes) this.feedBudgets(null, ctx);
        // A simple Query destroys the unnamed statement and portal.
        this.stmts.delete('');
        this.portals.delete('');
        this.sendClient(f.raw);
        this.pop();
        this.recordQuery(e, ctx.error);
        return;
      }
      case B.CopyBothResponse:
        return this.fatal({ code: '0A000', message: 'replication (COPY BOTH) is not supported through the bastion' });
      default:
        throw new PgProtocolError(`unexpected message ${String.fromCharCode(f.type)} in a query response`);
    }
  }

  /** The transcript line of a simple-protocol statement (not of the bastion's own queries). */
  private recordQuery(e: QueryEntry, error: { code: string; message: string } | undefined): void {
    if (e.rec.audited === '' && e.rec.decision.rule === '') return;
    const ctx = e.ctx;
    this.record({
      protocol: 'simple',
      statement: e.rec.audited,
      decision: e.rec.decision,
      seq: e.rec.seq,
      ...(e.rec.approval ? { approval: e.rec.approval } : {}),
      ...(ctx.tags.length ? { command: ctx.tags.join('; ') } : {}),
      rows: ctx.rows,
      durationMs: Math.round((performance.now() - ctx.start) * 1000) / 1000,
      ...(ctx.columns ? { columns: ctx.columns } : {}),
      ...(ctx.sample.length ? { sample: ctx.sample } : {}),
      ...(error ? { error } : {}),
    });
  }

  /**
   * Statements still in flight when the session ends are recorded as far as they got: a refusal
   * whose ReadyForQuery the client did not wait for (drivers report the error on ErrorResponse
   * and may hang up at once), a result the client left in the middle of.
   */
  private recordUnfinished(reason: string): void {
    for (let i = this.qHead; i < this.q.length; i++) {
      const e = this.q[i];
      if (!e || e.k !== 'query') continue;
      const refused = e.refusal ? { code: noticeField(e.refusal.fields, 'C') ?? '42501', message: noticeField(e.refusal.fields, 'M') ?? '' } : undefined;
      this.recordQuery(e, e.ctx.error ?? refused ?? { code: '08006', message: `the session ended before the statement finished (${reason})` });
    }
  }

  private onExecResponse(e: Extract<Entry, { k: 'exec' }>, f: Frame): Promise<void> | void {
    const ctx = e.ctx;
    const portal = this.portals.get(e.portal);
    const finish = (tag: string | null, suspended: boolean, error?: { code: string; message: string }): void => {
      this.pop();
      const stmt = portal?.stmt;
      this.record({
        protocol: 'extended',
        statement: stmt?.audited ?? `(portal ${JSON.stringify(e.portal)})`,
        ...(portal && portal.params.length ? { params: portal.params } : {}),
        decision: stmt?.decision ?? { effect: 'allow', rule: '(prepared outside the protocol)', reason: 'decided when it was prepared (PREPARE / DECLARE)' },
        seq: stmt?.seq ?? null,
        ...(stmt?.approval ? { approval: stmt.approval } : {}),
        ...(tag !== null ? { command: tag } : {}),
        rows: ctx.rows,
        durationMs: Math.round((performance.now() - ctx.start) * 1000) / 1000,
        ...(ctx.columns ? { columns: ctx.columns } : {}),
        ...(ctx.sample.length ? { sample: ctx.sample } : {}),
        ...(error ? { error } : {}),
        ...(suspended ? { suspended: true } : {}),
      });
    };
    switch (f.type) {
      case B.DataRow:
        if (ctx.masker === undefined && !ctx.blind) {
          if (portal && portal.cols !== undefined && portal.cols !== null) {
            if (!portal.masker || portal.maskVersion !== this.masks.version) {
              portal.masker = this.masks.empty ? undefined : this.masks.rowMasker(portal.cols);
              portal.maskVersion = this.masks.version;
            }
            ctx.masker = portal.masker ?? null;
            ctx.columns = portal.stmt?.fields?.map((x) => x.name) ?? portal.cols.map((c) => c.column);
            ctx.binaryCols = portal.cols.map((c) => c.format === 'binary');
          } else {
            ctx.blind = true;
            this.env.log.warn('postgres proxy: rows for a portal with unknown columns; sending NULLs', { session: this.info?.id, portal: e.portal });
          }
        }
        this.maskRow(ctx, f);
        return;
      case B.CommandComplete: {
        const tag = decodeCommandComplete(f.body);
        if (!tag.startsWith('SELECT') && !tag.startsWith('COPY') && !tag.startsWith('FETCH')) ctx.rows = tagRowCount(tag) ?? ctx.rows;
        this.afterCommand(tag);
        this.feedBudgets(tag, ctx);
        this.sendClient(f.raw);
        finish(tag, false);
        return;
      }
      case B.PortalSuspended:
        this.feedBudgets(null, ctx);
        this.sendClient(f.raw);
        finish(null, true);
        return;
      case B.EmptyQueryResponse:
        this.sendClient(f.raw);
        finish(null, false);
        return;
      case B.ErrorResponse: {
        const m = this.maskNotice(f.body, 'E');
        this.sendClient(m.buf);
        this.failedBatch = e.batch;
        finish(null, false, { code: noticeField(m.fields, 'C') ?? '', message: noticeField(m.fields, 'M') ?? '' });
        return;
      }
      case B.CopyOutResponse:
        this.copyMasker(ctx, f, portal?.stmt?.copy?.plan, portal?.stmt?.copy ? portal.stmt.copy.cols : undefined);
        this.sendClient(f.raw);
        return;
      case B.CopyData:
        this.copyData(ctx, f);
        return;
      case B.CopyDone:
        this.copyDone(ctx, f);
        return;
      case B.CopyInResponse:
        ctx.copyIn = true;
        this.sendClient(f.raw);
        return;
      case B.CopyBothResponse:
        return this.fatal({ code: '0A000', message: 'replication (COPY BOTH) is not supported through the bastion' });
      default:
        throw new PgProtocolError(`unexpected message ${String.fromCharCode(f.type)} in an Execute response`);
    }
  }

  private onInternalResponse(e: Extract<Entry, { k: 'internal' }>, f: Frame): void {
    switch (f.type) {
      case B.RowDescription:
      case B.CommandComplete:
      case B.EmptyQueryResponse:
        return;
      case B.DataRow:
        e.rows.push(decodeDataRow(f.body).map((v) => (v === null ? '' : v.toString('utf8'))));
        return;
      case B.ErrorResponse:
        e.error = noticeField(decodeNoticeFields(f.body), 'M') ?? 'error';
        return;
      case B.ReadyForQuery:
        this.status = decodeReadyForQuery(f.body);
        this.pop();
        if (e.error !== undefined) e.reject(new PortcullisError('pg_internal_query', e.error));
        else e.resolve(e.rows);
        return;
      default:
        throw new PgProtocolError(`unexpected message ${String.fromCharCode(f.type)} for an internal query`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // cancel and close

  /** A CancelRequest with this session's key arrived. */
  cancel(): void {
    if (this.hold) {
      this.cancelRequested = true;
      this.hold.abort();
      return;
    }
    if (this.upKey && this.target && !this.queueEmpty) void sendCancel(this.target, this.upKey.pid, this.upKey.secret);
  }

  private async upstreamGone(): Promise<void> {
    if (this.closed) return;
    this.flushClient();
    await this.fatal({ code: '08006', message: `the connection to target ${this.targetName} was lost` });
  }

  /** Sends a FATAL error to the client and closes the session. */
  async fatal(e: ErrorInfo): Promise<void> {
    if (this.closed) return;
    this.flushClient();
    try {
      this.client.write(encodeErrorResponse({ ...e, severity: 'FATAL', message: e.message }));
    } catch {
      // the client may be gone
    }
    await this.terminate(`fatal: ${e.code} ${e.message}`);
  }

  /**
   * Shutdown: let the statements in flight finish (up to `graceMs`; a held one is refused when
   * the core expires its approval), then end the session with FATAL 57P01 (admin_shutdown).
   */
  async drain(graceMs: number): Promise<void> {
    const deadline = Date.now() + graceMs;
    // Busy: statements sent upstream and not answered, or one being decided or held (the pump).
    for (let i = 0; i < 1_000_000 && !this.closed && this.ready && (!this.queueEmpty || this.clientPumping); i++) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      let timer: NodeJS.Timeout | undefined;
      const tick = new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.min(50, left))));
      // A held or undecided statement leaves the queue empty: then only the tick wakes us.
      await (this.queueEmpty ? tick : Promise.race([this.whenIdle(), tick]));
      clearTimeout(timer);
    }
    if (this.closed) return;
    await this.fatal({ code: '57P01', message: 'terminating connection: the bastion is shutting down' });
  }

  /** Closes both sides and the core session; safe to call more than once. */
  async terminate(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    for (const t of this.timers) clearTimeout(t);
    this.hold?.abort();
    const w = this.startupWaiter;
    this.startupWaiter = null;
    w?.();
    for (let i = this.qHead; i < this.q.length; i++) {
      const e = this.q[i];
      if (e && e.k === 'internal') e.reject(new PortcullisError('pg_client_gone', reason));
    }
    const busy = !this.queueEmpty;
    if (this.up) {
      if (busy && this.upKey && this.target) void sendCancel(this.target, this.upKey.pid, this.upKey.secret);
      try {
        this.up.write(TERMINATE);
      } catch {
        // gone
      }
      this.up.end();
      const up = this.up;
      setTimeout(() => up.destroy(), 1000).unref();
    }
    this.client.end();
    const client = this.client;
    setTimeout(() => client.destroy(), 1000).unref();
    if (this.cancelKey) this.env.unregisterCancel(this.cancelKey.pid, this.cancelKey.secret);
    if (this.acquired) this.env.release(this.acquired);
    this.acquired = null;
    if (this.info) {
      this.recordUnfinished(reason);
      this.transcript?.write({ type: 'end', time: new Date().toISOString(), session: this.info.id, reason });
      await this.transcript?.close();
      await this.env.core.closeSession(this.info.id, reason).catch((err: unknown) => this.env.log.error('postgres proxy: closing the session failed', { error: (err as Error).message }));
    }
    this.env.onClosed(this);
  }
}
