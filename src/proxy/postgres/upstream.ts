// The upstream side of a session: connect to the target's PostgreSQL (TCP, optionally TLS), log
// in with the target's own credentials (SCRAM-SHA-256, md5 or cleartext, whichever the server
// asks for), collect ParameterStatus / BackendKeyData up to the first ReadyForQuery, and hand the
// socket over. Also: CancelRequest to an upstream backend.

import net from 'node:net';
import tls from 'node:tls';
import { PortcullisError } from '../../policy/types.js';
import {
  AUTH_CLEARTEXT,
  AUTH_MD5,
  AUTH_OK,
  AUTH_SASL,
  AUTH_SASL_CONTINUE,
  AUTH_SASL_FINAL,
  B,
  FrameReader,
  decodeAuthentication,
  decodeBackendKeyData,
  decodeNoticeFields,
  decodeParameterStatus,
  decodeReadyForQuery,
  decodeSaslMechanisms,
  encodeCancelRequest,
  encodePasswordMessage,
  encodeSaslInitialResponse,
  encodeSaslResponse,
  encodeSslRequest,
  encodeStartupMessage,
  noticeField,
  typeName,
  type Frame,
  type NoticeFields,
} from './codec.js';
import { md5PasswordResponse, ScramClient, SCRAM_MECHANISM } from './scram.js';

/** How the bastion reaches one PostgreSQL target (from the bastion config). */
export interface PgTargetConfig {
  host: string;
  port: number;
  database: string;
  user: string;
  /** For SCRAM-SHA-256, md5 or cleartext, whichever the server asks for. */
  password?: string;
  /**
   * TLS to the upstream, as libpq's sslmode: absent/false = plain TCP; 'prefer' = TLS when the
   * server offers it, no certificate checks; 'require' = TLS, no certificate checks; 'verify-ca'
   * = the chain is checked against `ca` (or the system roots); 'verify-full' = and the host name
   * (`servername`, default `host`) too.
   */
  tls?: false | PgTargetTls;
}

export interface PgTargetTls {
  mode: 'prefer' | 'require' | 'verify-ca' | 'verify-full';
  /** PEM of the CA(s) that sign the server certificate (default: the system roots). */
  ca?: string | Buffer;
  servername?: string;
}

export interface UpstreamConnection {
  socket: net.Socket;
  /** Holds whatever the server sent after the first ReadyForQuery (normally nothing). */
  reader: FrameReader;
  params: [string, string][];
  backendKey: { pid: number; secret: Buffer } | null;
  status: 'I' | 'T' | 'E';
  /** NoticeResponse frames received during login (raw), to pass on. */
  notices: Buffer[];
}

export class UpstreamError extends PortcullisError {
  constructor(
    code: 'pg_upstream_unreachable' | 'pg_upstream_auth' | 'pg_upstream_error',
    message: string,
    /** The server's ErrorResponse fields, when it sent one. */
    readonly fields?: NoticeFields,
  ) {
    super(code, message, {});
    this.name = 'UpstreamError';
  }
}

/** Reads frames from a socket during a request/response exchange, with a deadline. */
class ExchangeReader {
  readonly reader = new FrameReader();
  private waiting: { resolve: (f: Frame) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  private readonly onData = (d: Buffer): void => {
    this.reader.push(d);
    this.wake();
  };
  private readonly onEnd = (): void => this.fail(new UpstreamError('pg_upstream_unreachable', 'the server closed the connection during login'));
  private readonly onError = (e: Error): void => this.fail(new UpstreamError('pg_upstream_unreachable', e.message));

  constructor(private socket: net.Socket) {
    this.attach();
  }

  private attach(): void {
    this.socket.on('data', this.onData);
    this.socket.on('end', this.onEnd);
    this.socket.on('close', this.onEnd);
    this.socket.on('error', this.onError);
  }

  detach(): void {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
  }

  /** Switch to another socket (after the TLS upgrade). */
  replace(socket: net.Socket): void {
    this.detach();
    this.socket = socket;
    this.attach();
  }

  private fail(e: Error): void {
    if (!this.failure) this.failure = e;
    this.wake();
  }

  private wake(): void {
    const w = this.waiting;
    if (!w) return;
    if (this.failure) {
      this.waiting = null;
      w.reject(this.failure);
      return;
    }
    let f: Frame | null;
    try {
      f = this.reader.next();
    } catch (e) {
      this.waiting = null;
      w.reject(e as Error);
      return;
    }
    if (f) {
      this.waiting = null;
      w.resolve(f);
    }
  }

  next(): Promise<Frame> {
    return new Promise<Frame>((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.wake();
    });
  }

  /** The single-byte answer to SSLRequest. */
  byte(): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const onData = (d: Buffer): void => {
        cleanup();
        if (d.length > 1) {
          reject(new UpstreamError('pg_upstream_error', 'unexpected data after the SSL response (possible man-in-the-middle)'));
          return;
        }
        resolve(d[0]!);
      };
      const onErr = (): void => {
        cleanup();
        reject(this.failure ?? new UpstreamError('pg_upstream_unreachable', 'the server closed the connection'));
      };
      const cleanup = (): void => {
        this.socket.off('data', onData);
        this.socket.off('close', onErr);
        this.socket.on('data', this.onData);
      };
      this.socket.off('data', this.onData);
      this.socket.on('data', onData);
      this.socket.once('close', onErr);
    });
  }
}

function connectTcp(host: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    sock.setNoDelay(true);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new UpstreamError('pg_upstream_unreachable', `connect to ${host}:${port} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const onAbort = (): void => {
      clearTimeout(timer);
      sock.destroy();
      reject(new UpstreamError('pg_upstream_unreachable', 'connection attempt aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    sock.once('connect', () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve(sock);
    });
    sock.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      reject(new UpstreamError('pg_upstream_unreachable', `connect to ${host}:${port} failed: ${e.code ?? e.message}`));
    });
  });
}

function upgradeTls(sock: net.Socket, target: PgTargetConfig, t: PgTargetTls): Promise<tls.TLSSocket> {
  const name = t.servername ?? target.host;
  const opts: tls.ConnectionOptions = { socket: sock };
  if (!net.isIP(name)) opts.servername = name;
  if (t.mode === 'prefer' || t.mode === 'require') {
    opts.rejectUnauthorized = false;
  } else {
    opts.rejectUnauthorized = true;
    if (t.ca !== undefined) opts.ca = t.ca;
    opts.checkServerIdentity = t.mode === 'verify-full' ? (_h, cert) => tls.checkServerIdentity(name, cert) : () => undefined;
  }
  return new Promise((resolve, reject) => {
    const s = tls.connect(opts);
    s.once('secureConnect', () => resolve(s));
    s.once('error', (e) => reject(new UpstreamError('pg_upstream_unreachable', `TLS to ${target.host}:${target.port} failed: ${e.message}`)));
  });
}

function serverError(f: Frame, during: string): UpstreamError {
  let fields: NoticeFields = [];
  try {
    fields = decodeNoticeFields(f.body);
  } catch {
    // keep empty
  }
  const msg = noticeField(fields, 'M') ?? 'unknown error';
  const code = noticeField(fields, 'C') ?? '';
  const auth = code.startsWith('28');
  return new UpstreamError(auth ? 'pg_upstream_auth' : 'pg_upstream_error', `${during}: ${msg}${code ? ` (SQLSTATE ${code})` : ''}`, fields);
}

/**
 * Connects and logs in. `params` are the startup parameters besides user and database (GUCs
 * such as application_name, client_encoding). Throws UpstreamError.
 */
export async function connectUpstream(
  target: PgTargetConfig,
  params: [string, string][],
  opts: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<UpstreamConnection> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  let sock: net.Socket = await connectTcp(target.host, target.port, timeoutMs, opts.signal);
  const ex = new ExchangeReader(sock);
  const deadline = setTimeout(() => sock.destroy(new Error(`login did not complete within ${timeoutMs} ms`)), timeoutMs);
  try {
    if (target.tls) {
      sock.write(encodeSslRequest());
      const answer = await ex.byte();
      if (answer === 0x53) {
        ex.detach();
        sock = await upgradeTls(sock, target, target.tls);
        ex.replace(sock);
      } else if (answer !== 0x4e || target.tls.mode !== 'prefer') {
        throw new UpstreamError('pg_upstream_error', `the server refused TLS (answered ${typeName(answer)}) and the target requires it (${target.tls.mode})`);
      }
    }
    sock.write(encodeStartupMessage([['user', target.user], ['database', target.database], ...params]));
    const out: UpstreamConnection = { socket: sock, reader: ex.reader, params: [], backendKey: null, status: 'I', notices: [] };
    let scram: ScramClient | null = null;
    const password = (): string => {
      if (target.password === undefined) throw new UpstreamError('pg_upstream_auth', 'the server asks for a password but the target has none configured');
      return target.password;
    };
    for (let i = 0; i < 10_000; i++) {
      const f = await ex.next();
      switch (f.type) {
        case B.Authentication: {
          const a = decodeAuthentication(f.body);
          if (a.code === AUTH_OK) break;
          if (a.code === AUTH_CLEARTEXT) {
            sock.write(encodePasswordMessage(password()));
          } else if (a.code === AUTH_MD5) {
            if (a.data.length !== 4) throw new UpstreamError('pg_upstream_error', 'md5 authentication request without a 4-byte salt');
            sock.write(encodePasswordMessage(md5PasswordResponse(target.user, password(), a.data)));
          } else if (a.code === AUTH_SASL) {
            const mechs = decodeSaslMechanisms(a.data);
            if (!mechs.includes(SCRAM_MECHANISM)) throw new UpstreamError('pg_upstream_auth', `the server offers SASL mechanisms ${mechs.join(', ')}; only ${SCRAM_MECHANISM} is supported`);
            scram = new ScramClient(password());
            sock.write(encodeSaslInitialResponse(SCRAM_MECHANISM, scram.clientFirst()));
          } else if (a.code === AUTH_SASL_CONTINUE) {
            if (!scram) throw new UpstreamError('pg_upstream_error', 'SASLContinue without SASL');
            sock.write(encodeSaslResponse(await scram.clientFinal(a.data.toString('utf8'))));
          } else if (a.code === AUTH_SASL_FINAL) {
            if (!scram) throw new UpstreamError('pg_upstream_error', 'SASLFinal without SASL');
            scram.verifyServerFinal(a.data.toString('utf8'));
          } else {
            throw new UpstreamError('pg_upstream_auth', `unsupported authentication method ${a.code} requested by the server`);
          }
          break;
        }
        case B.ParameterStatus: {
          const p = decodeParameterStatus(f.body);
          out.params.push([p.name, p.value]);
          break;
        }
        case B.BackendKeyData:
          out.backendKey = decodeBackendKeyData(f.body);
          break;
        case B.NoticeResponse:
          out.notices.push(Buffer.from(f.raw));
          break;
        case B.NegotiateProtocolVersion:
          break;
        case B.ErrorResponse:
          throw serverError(f, 'login failed');
        case B.ReadyForQuery:
          out.status = decodeReadyForQuery(f.body);
          ex.detach();
          sock.pause();
          return out;
        default:
          throw new UpstreamError('pg_upstream_error', `unexpected message ${typeName(f.type)} during login`);
      }
    }
    throw new UpstreamError('pg_upstream_error', 'login did not finish');
  } catch (e) {
    ex.detach();
    sock.destroy();
    if (e instanceof UpstreamError) throw e;
    if (e instanceof PortcullisError) throw new UpstreamError(e.code === 'pg_upstream_auth' ? 'pg_upstream_auth' : 'pg_upstream_error', e.message);
    throw new UpstreamError('pg_upstream_unreachable', (e as Error).message);
  } finally {
    clearTimeout(deadline);
  }
}

/** Sends a CancelRequest for an upstream backend (best effort, like libpq's PQcancel). */
export function sendCancel(target: PgTargetConfig, pid: number, secret: Buffer, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: target.host, port: target.port });
    const done = (): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    sock.once('connect', () => {
      sock.write(encodeCancelRequest(pid, secret));
      sock.end();
    });
    sock.once('error', done);
    sock.once('close', done);
  });
}
