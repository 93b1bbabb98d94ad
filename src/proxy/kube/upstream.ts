// The bastion's side of a Kubernetes target: TLS to the API server with the target's CA, the
// target's credentials (bearer token or client certificate) and, when configured, the agent's
// identity as Impersonate-User / Impersonate-Group. HTTP/2 when the server offers it (ALPN), one
// multiplexed connection per target; HTTP/1.1 keep-alive otherwise. WebSocket upgrades (exec,
// attach, port-forward) always go over HTTP/1.1, as the API server requires.
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import https from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { isIP } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import tls from 'node:tls';
import WebSocket from 'ws';
import type { Logger } from '../../core/log.js';
import { PortcullisError, type Identity } from '../../policy/types.js';

/** A Kubernetes target as the proxy uses it (secrets already resolved). */
export interface KubeTarget {
  name: string;
  /** https://host:port, optionally with a path prefix. */
  server: string;
  /** PEM of the API server's CA (default: the system's CAs). */
  ca?: string;
  token?: string;
  clientCert?: string;
  clientKey?: string;
  /** Send Impersonate-User / Impersonate-Group with the agent's identity. */
  impersonate: boolean;
  /** Use HTTP/2 when the server offers it (default true). */
  http2?: boolean;
}

export interface UpstreamResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Readable;
  httpVersion: '1.1' | '2';
}

/** Request headers never passed to the API server as the client sent them. */
const DROP_REQUEST = new Set(['host', 'connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'authorization', 'http2-settings', 'x-portcullis-reason']);

/** Headers the agent may not send: only the bastion speaks for who is asking. */
export function forbiddenRequestHeader(name: string): boolean {
  return name.startsWith('impersonate-') || name.startsWith('x-remote-');
}

export class KubeUpstream {
  private readonly url: URL;
  private readonly basePath: string;
  private readonly tlsOpts: tls.ConnectionOptions;
  private readonly agent: https.Agent;
  private mode: 'h2' | 'h1' | null = null;
  private probing: Promise<void> | null = null;
  private h2: ClientHttp2Session | null = null;
  private closed = false;

  constructor(
    readonly target: KubeTarget,
    private readonly log: Logger,
    private readonly connectTimeoutMs = 10_000,
  ) {
    let u: URL;
    try {
      u = new URL(target.server);
    } catch {
      throw new PortcullisError('kube_target_server', `target ${target.name}: server ${JSON.stringify(target.server)} is not a URL`);
    }
    if (u.protocol !== 'https:') throw new PortcullisError('kube_target_server', `target ${target.name}: server must be https:// (got ${u.protocol})`);
    this.url = u;
    this.basePath = u.pathname.replace(/\/+$/, '');
    this.tlsOpts = {
      host: u.hostname.replace(/^\[|\]$/g, ''),
      port: Number(u.port || 443),
      ...(isIP(u.hostname.replace(/^\[|\]$/g, '')) ? {} : { servername: u.hostname }),
      ...(target.ca ? { ca: target.ca } : {}),
      ...(target.clientCert && target.clientKey ? { cert: target.clientCert, key: target.clientKey } : {}),
      rejectUnauthorized: true,
    };
    this.agent = new https.Agent({ ...this.tlsOpts, keepAlive: true, maxSockets: 256, scheduling: 'lifo' } as https.AgentOptions);
  }

  /** The credential and identity headers the bastion adds. */
  authHeaders(identity: Identity): Record<string, string | string[]> {
    const h: Record<string, string | string[]> = {};
    if (this.target.token) h['authorization'] = `Bearer ${this.target.token}`;
    if (this.target.impersonate) {
      h['impersonate-user'] = identity.subject;
      if (identity.groups.length) h['impersonate-group'] = [...identity.groups];
    }
    return h;
  }

  /** Headers for the API server: the client's, minus hop-by-hop and credentials, plus ours. */
  headersFor(client: IncomingHttpHeaders, identity: Identity, override: Record<string, string | undefined> = {}): OutgoingHttpHeaders {
    const out: OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(client)) {
      if (v === undefined || k.startsWith(':') || DROP_REQUEST.has(k) || forbiddenRequestHeader(k)) continue;
      out[k] = v;
    }
    for (const [k, v] of Object.entries(override)) {
      if (v === undefined) delete out[k];
      else out[k] = v;
    }
    Object.assign(out, this.authHeaders(identity));
    return out;
  }

  private async ensureMode(): Promise<void> {
    if (this.mode === 'h1' || (this.mode === 'h2' && this.h2 && !this.h2.closed && !this.h2.destroyed)) return;
    this.probing ??= this.probe().finally(() => (this.probing = null));
    await this.probing;
  }

  /** Connects once with ALPN h2/http/1.1; an h2 answer becomes the shared HTTP/2 session. */
  private probe(): Promise<void> {
    if (this.target.http2 === false) {
      this.mode = 'h1';
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const sock = tls.connect({ ...this.tlsOpts, ALPNProtocols: ['h2', 'http/1.1'] });
      sock.setNoDelay(true);
      const timer = setTimeout(() => sock.destroy(new Error(`connect timeout after ${this.connectTimeoutMs} ms`)), this.connectTimeoutMs);
      sock.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      sock.once('secureConnect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        if (sock.alpnProtocol !== 'h2') {
          sock.destroy();
          this.mode = 'h1';
          resolve();
          return;
        }
        this.mode = 'h2';
        const session = http2.connect(this.url.origin, { createConnection: () => sock, settings: { initialWindowSize: 8 << 20 } });
        session.on('error', (e) => this.log.debug('kube upstream: http2 session error', { target: this.target.name, error: e.message }));
        session.on('connect', () => session.setLocalWindowSize(64 << 20));
        session.on('close', () => {
          if (this.h2 === session) this.h2 = null;
        });
        session.on('goaway', () => {
          if (this.h2 === session) this.h2 = null;
        });
        session.unref();
        this.h2 = session;
        resolve();
      });
    });
  }

  /** Sends one request; resolves with the response head (the body streams). */
  async request(method: string, path: string, headers: OutgoingHttpHeaders, body: Readable | null, signal: AbortSignal): Promise<UpstreamResponse> {
    if (this.closed) throw new PortcullisError('kube_upstream_closed', 'the proxy is stopping');
    await this.ensureMode();
    const fullPath = this.basePath + path;
    if (this.mode === 'h2' && this.h2) return this.requestH2(this.h2, method, fullPath, headers, body, signal);
    return this.requestH1(method, fullPath, headers, body, signal);
  }

  private requestH2(session: ClientHttp2Session, method: string, path: string, headers: OutgoingHttpHeaders, body: Readable | null, signal: AbortSignal): Promise<UpstreamResponse> {
    return new Promise<UpstreamResponse>((resolve, reject) => {
      const h: OutgoingHttpHeaders = { ...headers, ':method': method, ':path': path, ':authority': this.url.host };
      // HTTP/2 has no chunked encoding; content-length stays when the client sent it.
      let stream: ClientHttp2Stream;
      try {
        stream = session.request(h, { endStream: body === null });
      } catch (e) {
        this.h2 = null;
        reject(e as Error);
        return;
      }
      const onAbort = () => stream.close(http2.constants.NGHTTP2_CANCEL);
      signal.addEventListener('abort', onAbort, { once: true });
      stream.once('close', () => signal.removeEventListener('abort', onAbort));
      stream.once('error', reject);
      stream.once('response', (rh) => {
        stream.off('error', reject);
        stream.on('error', () => undefined);
        const hs: IncomingHttpHeaders = {};
        for (const [k, v] of Object.entries(rh)) if (!k.startsWith(':')) hs[k] = v as string | string[];
        resolve({ status: Number(rh[':status']), headers: hs, body: stream, httpVersion: '2' });
      });
      if (body) {
        body.pipe(stream);
        body.once('error', () => stream.close(http2.constants.NGHTTP2_CANCEL));
      }
    });
  }

  private requestH1(method: string, path: string, headers: OutgoingHttpHeaders, body: Readable | null, signal: AbortSignal): Promise<UpstreamResponse> {
    return new Promise<UpstreamResponse>((resolve, reject) => {
      const req = https.request({ agent: this.agent, ...this.tlsOpts, method, path, headers, signal });
      req.once('error', reject);
      req.once('response', (res: IncomingMessage) => {
        req.off('error', reject);
        req.on('error', () => undefined);
        res.on('error', () => undefined);
        resolve({ status: res.statusCode ?? 502, headers: res.headers, body: res, httpVersion: '1.1' });
      });
      if (body) {
        body.pipe(req);
        body.once('error', () => req.destroy());
      } else req.end();
    });
  }

  /**
   * Opens a WebSocket to the API server offering `protocols`. Resolves with the open socket, or
   * with the server's refusal (a non-101 answer, whose body is usually a Status).
   */
  websocket(path: string, headers: OutgoingHttpHeaders, protocols: string[]): Promise<{ ws: WebSocket } | { refused: UpstreamResponse }> {
    return new Promise((resolve, reject) => {
      const url = `wss://${this.url.host}${this.basePath}${path}`;
      const h: Record<string, string> = {};
      for (const [k, v] of Object.entries(headers)) {
        if (v === undefined || k.startsWith('sec-websocket-')) continue;
        h[k] = Array.isArray(v) ? v.join(', ') : String(v);
      }
      const ws = new WebSocket(url, protocols, {
        ...(this.tlsOpts as https.RequestOptions),
        headers: h,
        perMessageDeflate: false,
        handshakeTimeout: this.connectTimeoutMs,
        maxPayload: 64 << 20,
      });
      let settled = false;
      ws.once('open', () => {
        settled = true;
        resolve({ ws });
      });
      ws.once('unexpected-response', (req, res: IncomingMessage) => {
        settled = true;
        res.once('end', () => req.destroy());
        res.once('close', () => req.destroy());
        resolve({ refused: { status: res.statusCode ?? 502, headers: res.headers, body: res, httpVersion: '1.1' } });
      });
      // After the handshake, errors are the bridge's to handle (it listens too); never unhandled.
      ws.on('error', (e) => {
        if (!settled) {
          settled = true;
          reject(e);
        }
      });
    });
  }

  /**
   * An HTTP/1.1 upgrade relayed as bytes (port-forward: kubectl's `SPDY/3.1+portforward.k8s.io`
   * subprotocol is not a valid WebSocket token for WebSocket libraries, and the frames are never
   * inspected). The client's Sec-WebSocket-Key goes through unchanged, so the server's
   * Sec-WebSocket-Accept is right for the client. Resolves with the upgraded socket and the raw
   * response head, or with the server's refusal.
   */
  rawUpgrade(path: string, headers: OutgoingHttpHeaders): Promise<{ socket: Duplex; responseHead: string; head: Buffer } | { refused: UpstreamResponse }> {
    return new Promise((resolve, reject) => {
      const req = https.request({ ...this.tlsOpts, agent: false, method: 'GET', path: this.basePath + path, headers: { ...headers, connection: 'Upgrade', upgrade: 'websocket' }, timeout: this.connectTimeoutMs });
      req.once('timeout', () => req.destroy(new Error(`upgrade timeout after ${this.connectTimeoutMs} ms`)));
      req.once('error', reject);
      req.once('upgrade', (res: IncomingMessage, socket: Duplex, head: Buffer) => {
        req.setTimeout(0);
        const lines = [`HTTP/1.1 ${res.statusCode ?? 101} ${res.statusMessage ?? 'Switching Protocols'}`];
        for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) lines.push(`${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}`);
        resolve({ socket, responseHead: lines.join('\r\n') + '\r\n\r\n', head });
      });
      req.once('response', (res: IncomingMessage) => {
        res.on('error', () => undefined);
        resolve({ refused: { status: res.statusCode ?? 502, headers: res.headers, body: res, httpVersion: '1.1' } });
      });
      req.end();
    });
  }

  close(): void {
    this.closed = true;
    this.h2?.close();
    this.h2 = null;
    this.agent.destroy();
  }
}
