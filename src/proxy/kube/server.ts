// The Kubernetes API front: an HTTPS listener (HTTP/2 and HTTP/1.1, the bastion's certificate)
// that kubectl, k9s and client-go talk to as if it were the API server. Every request:
// route to a target → authenticate the bearer token (src/identity) → session → decide with the
// Kubernetes request attributes (Core.decide: audited before anything is forwarded) → deny: a
// Status 403 naming the rule; review: held (Core.hold) for at most `holdWaitMs`, then a Status 429
// naming the approval, and the same request passes once approved → forward with the target's
// credentials → mask the response in flight → audit the response code.
import { createHash } from 'node:crypto';
import http2, { type Http2SecureServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Core } from '../../core/core.js';
import type { Logger } from '../../core/log.js';
import { outcomeOf, type Outcome } from '../../core/outcome.js';
import { Masker } from '../../masking/masker.js';
import { initFacts } from '../../policy/actions.js';
import { kubeFacts } from '../../policy/kube/index.js';
import { PortcullisError, type Decision, type Identity, type KubeFacts, type PolicyRequest } from '../../policy/types.js';
import { pipeBody, planResponse, recompress, responseHeaders, unmaskable, upstreamOverrides, type WriteHead } from './response.js';
import { KubeSessions, type KubeSession, type KubeSessionLimits } from './sessions.js';
import { kubeStatus, sendStatus, sendStatusOnSocket, type KubeStatus } from './status.js';
import { bridge, CHANNEL_PROTOCOLS } from './streams.js';
import { forbiddenRequestHeader, KubeUpstream, type KubeTarget, type UpstreamResponse } from './upstream.js';

export interface KubeProxyOptions {
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** Listen port (default 6443; 0 picks a free one). */
  port?: number;
  /** The bastion's TLS certificate and key (PEM). */
  tls: { cert: string | Buffer; key: string | Buffer };
  /** The Kubernetes targets by name, secrets resolved (called on use, so config changes apply). */
  targets: (name: string) => KubeTarget | undefined;
  /**
   * The target of requests without a `/targets/<name>` path prefix (kubeconfig `server:
   * https://<listen>`): usually the only Kubernetes target. Absent: the prefix is required.
   */
  defaultTarget?: string;
  /** Verifies a bearer token (API token or OIDC JWT); throws an error whose message the agent may see. */
  authenticate: (token: string, ctx: { remote: string }) => Promise<Identity>;
  /** The bastion's masking HMAC key (masks with strategy `hash`). */
  hmacKey?: string | Buffer;
  /** How long a held request waits for its approval before it is answered 429 (default 40 s). */
  holdWaitMs?: number;
  session?: KubeSessionLimits;
  /** Upstream connect / WebSocket handshake timeout (default 10 s). */
  connectTimeoutMs?: number;
  log: Logger;
}

export interface KubeProxy {
  readonly host: string;
  readonly port: number;
  /** https://host:port */
  readonly url: string;
  /** Live API sessions. */
  sessions(): number;
  close(): Promise<void>;
}

const TARGET_PREFIX = /^\/targets\/([A-Za-z0-9][A-Za-z0-9._-]*)(?=\/|\?|$)/;
/** How long a WebSocket refusal is replayed to kubectl's SPDY fallback for the same request. */
const FALLBACK_MEMORY_MS = 15_000;

type Res = ServerResponse | Http2ServerResponse;
type Req = IncomingMessage | Http2ServerRequest;

interface Admitted {
  ok: true;
  identity: Identity;
  target: KubeTarget;
  session: KubeSession;
  request: PolicyRequest;
  facts: KubeFacts | null;
  decision: Decision;
  seq: number | null;
  path: string;
}
type Admission = Admitted | { ok: false; status: KubeStatus; session?: KubeSession; identity?: Identity; target?: string };

interface Refusal {
  status: number;
  contentType: string;
  body: Buffer;
  until: number;
}

function validate(opts: KubeProxyOptions): void {
  const bad = (m: string) => new PortcullisError('kube_proxy_option', `kubernetes proxy: ${m}`);
  if (!opts.tls?.cert || !opts.tls?.key) throw bad('needs the bastion TLS certificate and key (config `tls`): the Kubernetes front is HTTPS only');
  if (typeof opts.targets !== 'function') throw bad('option targets must be a function (name) => target');
  if (typeof opts.authenticate !== 'function') throw bad('option authenticate must be a function (token, ctx) => Promise<Identity>');
  if (opts.port !== undefined && (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535)) throw bad(`option port must be 0..65535, got ${String(opts.port)}`);
  for (const k of ['holdWaitMs', 'connectTimeoutMs'] as const) {
    const v = opts[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw bad(`option ${k} must be a positive integer (ms), got ${String(v)}`);
  }
}

export async function startKubeProxy(core: Core, opts: KubeProxyOptions): Promise<KubeProxy> {
  validate(opts);
  await initFacts();
  const log = opts.log;
  const host = opts.host ?? '127.0.0.1';
  const holdWaitMs = opts.holdWaitMs ?? 40_000;
  const sessions = new KubeSessions(core, log, opts.session);
  const upstreams = new Map<string, { sig: string; up: KubeUpstream }>();
  const maskers = new Map<string, Masker>();
  const refusals = new Map<string, Refusal>();
  const wsProtocol = new WeakMap<IncomingMessage, string>();
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 64 << 20, handleProtocols: (_p, req) => wsProtocol.get(req) ?? false });
  const sockets = new Set<Duplex>();

  const upstreamFor = (t: KubeTarget): KubeUpstream => {
    const sig = createHash('sha256').update(JSON.stringify(t)).digest('hex');
    const hit = upstreams.get(t.name);
    if (hit && hit.sig === sig) return hit.up;
    hit?.up.close();
    const up = new KubeUpstream(t, log, opts.connectTimeoutMs ?? 10_000);
    upstreams.set(t.name, { sig, up });
    return up;
  };

  const maskerFor = (d: Decision): Masker => {
    const key = JSON.stringify(d.masks);
    let m = maskers.get(key);
    if (!m) {
      m = new Masker({ masks: d.masks, ...(opts.hmacKey !== undefined ? { hmacKey: opts.hmacKey } : {}), defaultDetectors: true });
      if (maskers.size > 256) maskers.clear();
      maskers.set(key, m);
    }
    return m;
  };

  const refusalKey = (subject: string, target: string, path: string) => JSON.stringify([subject, target, path]);
  const rememberRefusal = (key: string, r: Omit<Refusal, 'until'>) => {
    const now = Date.now();
    for (const [k, v] of refusals) if (v.until < now) refusals.delete(k);
    if (refusals.size < 10_000) refusals.set(key, { ...r, until: now + FALLBACK_MEMORY_MS });
  };

  /** The `response` audit event of an API call: its status code (and size, time, masking). */
  const auditResponse = (a: Admission, data: Record<string, unknown>): void => {
    const target = a.ok ? a.target.name : a.target;
    const seq = a.ok ? a.seq : null;
    core.audit
      .append(
        {
          type: 'response',
          ...(a.session ? { session: a.session.id } : {}),
          ...(a.identity ? { identity: a.identity } : {}),
          ...(target ? { target } : {}),
          protocol: 'kubernetes',
          data: { ...(seq !== null ? { request_seq: seq } : {}), ...data },
        },
        { durable: false },
      )
      .catch((e: unknown) => log.error('kube proxy: response audit event failed', { error: String(e) }));
  };

  /** Who, which target, which session, and the decision (audited) — everything before forwarding. */
  async function admit(method: string, rawUrl: string, headers: IncomingHttpHeaders, remote: string): Promise<Admission> {
    let path = rawUrl;
    let targetName = opts.defaultTarget;
    const m = TARGET_PREFIX.exec(rawUrl);
    if (m) {
      targetName = m[1];
      path = rawUrl.slice(m[0].length) || '/';
      if (!path.startsWith('/')) path = '/' + path;
    }
    const auth = headers['authorization'];
    const token = typeof auth === 'string' && /^Bearer\s+\S/i.test(auth) ? auth.replace(/^Bearer\s+/i, '').trim() : null;
    const idOutcome = (reason: string): Outcome => ({ code: 'identity_rejected', effect: 'deny', rule: 'identity', reason });
    if (!token) {
      const msg = 'portcullis: a bearer token is required (an API token pcat_… or an OIDC token; `portcullis kubeconfig` writes one into a kubeconfig)';
      return { ok: false, status: kubeStatus(401, msg, { outcome: idOutcome('no bearer token') }) };
    }
    let identity: Identity;
    try {
      identity = await opts.authenticate(token, { remote });
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      return { ok: false, status: kubeStatus(401, `portcullis: ${msg}`, { outcome: idOutcome(msg) }) };
    }
    for (const h of Object.keys(headers)) {
      if (forbiddenRequestHeader(h)) {
        const msg = `portcullis: the ${h} header is not allowed through the bastion (it speaks for the agent itself)`;
        return { ok: false, identity, status: kubeStatus(403, msg, { outcome: { code: 'policy_denied', effect: 'deny', rule: 'impersonation', reason: msg } }) };
      }
    }
    if (!targetName) return { ok: false, identity, status: kubeStatus(404, 'portcullis: no target named: use a server URL https://<bastion>/targets/<target>') };
    let target: KubeTarget | undefined;
    try {
      target = opts.targets(targetName);
    } catch (e) {
      log.error('kube proxy: target config unusable', { target: targetName, error: (e as Error).message });
      return { ok: false, identity, target: targetName, status: kubeStatus(503, `portcullis: target ${targetName} is misconfigured on the bastion`) };
    }
    if (!target) return { ok: false, identity, status: kubeStatus(404, `portcullis: no Kubernetes target named ${JSON.stringify(targetName)}`) };
    const session = await sessions.acquire(identity, target.name, remote, typeof headers['user-agent'] === 'string' ? headers['user-agent'] : undefined);
    const stated = statedReason(headers[REASON_HEADER]);
    const request: PolicyRequest = { protocol: 'kubernetes', identity, target: target.name, http: { method, path }, ...(stated ? { reason: stated } : {}) };
    let facts: KubeFacts | null;
    try {
      facts = kubeFacts(method, path);
    } catch {
      facts = null; // decided fail-closed by the engine with the same error
    }
    const { decision, seq } = await core.decide(session.id, request);
    return { ok: true, identity, target, session, request, facts, decision, seq, path };
  }

  function denialStatus(a: Admitted, extra: { approvalId?: string; hold?: 'denied' | 'expired'; by?: string; why?: string } = {}): KubeStatus {
    const d = a.decision;
    const masker = maskerFor(d);
    const what = a.facts?.isResourceRequest ? `${a.facts.verb} ${a.facts.subresource ? `${a.facts.resource}/${a.facts.subresource}` : a.facts.resource}${a.facts.name ? ` ${a.facts.name}` : ''}` : `${a.request.http!.method} ${a.facts?.path ?? 'request'}`;
    const reason = masker.maskText(d.reason);
    let msg: string;
    if (extra.hold === 'denied') msg = `portcullis: approval ${extra.approvalId} for ${what} was denied${extra.by ? ` by ${extra.by}` : ''}${extra.why ? `: ${masker.maskText(extra.why)}` : ''} (rule ${d.rule})`;
    else if (extra.hold === 'expired') msg = `portcullis: approval ${extra.approvalId} for ${what} expired without a decision${extra.why ? ` (${extra.why})` : ''} (rule ${d.rule})`;
    else if (d.rule === 'audit-unavailable') msg = `portcullis: refused (fail closed): ${reason}`;
    else msg = `portcullis: ${what} denied by policy rule ${d.rule}: ${reason}${d.remedy ? ` (${masker.maskText(d.remedy)})` : ''}`;
    const outcome = outcomeOf({ ...d, reason }, { ...(extra.approvalId ? { approvalId: extra.approvalId } : {}), ...(extra.hold ? { hold: extra.hold } : {}) });
    return kubeStatus(d.rule === 'audit-unavailable' ? 503 : 403, msg, { outcome, facts: a.facts });
  }

  function pendingStatus(a: Admitted, approvalId: string, expiresAt: number | undefined): KubeStatus {
    const d = a.decision;
    const masker = maskerFor(d);
    const until = expiresAt ? ` before ${new Date(expiresAt).toISOString()}` : '';
    const msg = `portcullis: held for approval ${approvalId} (rule ${d.rule}: ${masker.maskText(d.reason)}); no decision within ${Math.round(holdWaitMs / 1000)}s. Ask on-call to run \`portcullis approve ${approvalId}\`, then run the same command again${until}`;
    const outcome = outcomeOf({ ...d, reason: masker.maskText(d.reason) }, { approvalId, hold: 'pending' });
    return kubeStatus(429, msg, { outcome, facts: a.facts });
  }

  /**
   * Holds a request under review. Resolves with null when it may go on, or the Status to answer.
   */
  async function hold(a: Admitted, signal: AbortSignal): Promise<KubeStatus | null> {
    let out;
    try {
      out = await core.hold(a.session.id, a.request, a.decision, () => undefined, signal, { waitMs: holdWaitMs });
    } catch (e) {
      log.error('kube proxy: hold failed; refusing', { error: String(e) });
      return kubeStatus(503, `portcullis: the request needs an approval and the approval could not be recorded (${(e as Error).message}); refusing (fail closed)`, { facts: a.facts });
    }
    if (out.state === 'approved') return null;
    if (out.state === 'pending') return pendingStatus(a, out.approvalId, out.expiresAt);
    return denialStatus(a, { approvalId: out.approvalId, hold: out.state, ...(out.by ? { by: out.by } : {}), ...(out.reason ? { why: out.reason } : {}) });
  }

  // ---- plain requests ---------------------------------------------------------------------------------

  async function onRequest(req: Req, res: Res): Promise<void> {
    const t0 = Date.now();
    const remote = req.socket?.remoteAddress ?? '';
    const method = (req.method ?? 'GET').toUpperCase();
    const ac = new AbortController();
    res.once('close', () => {
      if (!res.writableFinished) ac.abort();
    });
    req.pause();
    let a: Admission;
    try {
      a = await admit(method, req.url ?? '/', req.headers as IncomingHttpHeaders, remote);
    } catch (e) {
      log.error('kube proxy: admission failed', { error: String(e) });
      if (!res.headersSent) sendStatus(res, kubeStatus(503, `portcullis: ${(e as Error).message}; refusing (fail closed)`));
      return;
    }
    if (!a.ok) {
      sendStatus(res, a.status);
      if (a.session || a.identity) auditResponse(a, { status: a.status.code, ms: Date.now() - t0 });
      return;
    }
    const done = a.session.begin((reason) => {
      ac.abort();
      if (!res.headersSent) sendStatus(res, kubeStatus(503, `portcullis: session ended: ${reason}`));
      else res.destroy();
    });
    try {
      await forward(a, req, res, ac.signal, t0);
    } finally {
      done();
    }
  }

  async function forward(a: Admitted, req: Req, res: Res, signal: AbortSignal, t0: number): Promise<void> {
    const finish = (status: number, extra: Record<string, unknown> = {}) => auditResponse(a, { status, ms: Date.now() - t0, ...extra });
    if (a.decision.effect === 'deny') {
      const st = denialStatus(a);
      sendStatus(res, st);
      return finish(st.code);
    }
    if (a.decision.effect === 'review') {
      const st = await hold(a, signal);
      if (signal.aborted) return finish(499, { error: 'client went away while held' });
      if (st) {
        sendStatus(res, st);
        return finish(st.code);
      }
    }
    const masker = maskerFor(a.decision);
    const plan = planResponse(a.facts, masker);
    const up = upstreamFor(a.target);
    const headers = up.headersFor(req.headers as IncomingHttpHeaders, a.identity, upstreamOverrides(plan, req.headers as IncomingHttpHeaders));
    const method = a.request.http!.method;
    const hasBody = !(method === 'GET' || method === 'HEAD') || req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    let resp: UpstreamResponse;
    try {
      resp = await up.request(method, a.path, headers, hasBody ? (req as Readable) : null, signal);
    } catch (e) {
      if (signal.aborted) return finish(499, { error: 'client went away' });
      const msg = (e as Error).message;
      log.warn('kube proxy: upstream request failed', { target: a.target.name, error: msg });
      const st = kubeStatus(503, `portcullis: the API server of target ${a.target.name} cannot be reached: ${msg}`);
      if (!res.headersSent) sendStatus(res, st);
      return finish(st.code, { error: msg });
    }
    const why = unmaskable(plan, resp);
    if (why) {
      resp.body.destroy();
      const msg = `portcullis: ${plan.resource} must be masked and ${why}; refusing the response (fail closed)`;
      log.warn('kube proxy: unmaskable response refused', { target: a.target.name, resource: plan.resource, why });
      const st = kubeStatus(502, msg, { facts: a.facts });
      sendStatus(res, st);
      return finish(st.code, { upstream_status: resp.status, error: why });
    }
    const rewritten = plan.mode !== 'none';
    const head = responseHeaders(resp.headers, rewritten);
    // A masked body the agent may get compressed: headers once its size says whether it is (as the API server would).
    const deferred: WriteHead | undefined = recompress(plan, req.headers as IncomingHttpHeaders)
      ? (gzip) => {
          const vary = [head['vary']].flat().filter((v): v is string => typeof v === 'string' && v !== '');
          (res as ServerResponse).writeHead(resp.status, gzip ? { ...head, 'content-encoding': 'gzip', vary: [...vary, 'Accept-Encoding'].join(', ') } : head);
        }
      : undefined;
    if (!deferred) {
      (res as ServerResponse).writeHead(resp.status, head);
      // Watches and log follows: the client gets the headers now, not with the first event.
      if ((a.facts?.verb === 'watch' || a.facts?.query['follow']?.[0] === 'true') && 'flushHeaders' in res) res.flushHeaders();
    }
    const r = await pipeBody(resp, res, plan, deferred);
    if (r.error) log.warn('kube proxy: response cut', { target: a.target.name, error: r.error });
    finish(resp.status, { bytes: r.bytes, upstream: resp.httpVersion, ...(rewritten ? { masked: plan.mode } : {}), ...(r.encoding ? { encoding: r.encoding } : {}), ...(r.error ? { error: r.error } : {}) });
  }

  // ---- upgrades: exec / attach / port-forward -------------------------------------------------------

  async function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const t0 = Date.now();
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const remote = req.socket?.remoteAddress ?? '';
    const method = (req.method ?? 'GET').toUpperCase();
    const upgrade = String(req.headers['upgrade'] ?? '').toLowerCase();
    const ac = new AbortController();
    socket.once('close', () => ac.abort());
    let a: Admission;
    try {
      a = await admit(method, req.url ?? '/', req.headers, remote);
    } catch (e) {
      log.error('kube proxy: admission failed', { error: String(e) });
      return sendStatusOnSocket(socket, kubeStatus(503, `portcullis: ${(e as Error).message}; refusing (fail closed)`));
    }
    if (!a.ok) {
      sendStatusOnSocket(socket, a.status);
      if (a.session || a.identity) auditResponse(a, { status: a.status.code, ms: Date.now() - t0 });
      return;
    }
    const finish = (status: number, extra: Record<string, unknown> = {}) => auditResponse(a, { status, ms: Date.now() - t0, upgrade, ...extra });
    const rkey = refusalKey(a.identity.subject, a.target.name, a.path);
    const refuse = (st: KubeStatus) => {
      const body = Buffer.from(JSON.stringify(st));
      if (upgrade === 'websocket') rememberRefusal(rkey, { status: st.code, contentType: 'application/json', body });
      sendStatusOnSocket(socket, st);
      finish(st.code);
    };
    const done = a.session.begin((reason) => {
      ac.abort();
      socket.destroy();
      void reason;
    });
    try {
      if (a.decision.effect === 'deny') return refuse(denialStatus(a));
      const sub = a.facts?.subresource ?? '';
      const streamable = a.facts?.isResourceRequest && a.facts.resource === 'pods' && (sub === 'exec' || sub === 'attach' || sub === 'portforward');
      if (upgrade !== 'websocket') {
        // kubectl falls back to SPDY when its WebSocket upgrade is refused: answer the fallback
        // with the refusal the WebSocket attempt got, so that the agent sees the real reason.
        const prior = refusals.get(rkey);
        if (prior && prior.until > Date.now()) {
          const text = prior.status === 429 ? 'Too Many Requests' : prior.status === 403 ? 'Forbidden' : 'Error';
          socket.write(`HTTP/1.1 ${prior.status} ${text}\r\nContent-Type: ${prior.contentType}\r\nContent-Length: ${prior.body.length}\r\nConnection: close\r\n\r\n`);
          socket.end(prior.body);
          return finish(prior.status, { fallback: true });
        }
        sendStatusOnSocket(socket, kubeStatus(400, `portcullis: ${upgrade || 'this'} upgrade is not supported; the bastion streams exec, attach and port-forward over WebSocket (kubectl ≥ 1.31 uses it unless KUBECTL_REMOTE_COMMAND_WEBSOCKETS or KUBECTL_PORT_FORWARD_WEBSOCKETS is false)`, { facts: a.facts }));
        return finish(400);
      }
      if (!streamable) return refuse(kubeStatus(400, 'portcullis: WebSocket upgrades are supported for pods/exec, pods/attach and pods/portforward only', { facts: a.facts }));
      if (a.decision.effect === 'review') {
        const st = await hold(a, ac.signal);
        if (ac.signal.aborted) return finish(499, { error: 'client went away while held' });
        if (st) return refuse(st);
      }
      const offered = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
      const protocols = sub === 'portforward' ? offered : offered.filter((p) => CHANNEL_PROTOCOLS.includes(p));
      if (protocols.length === 0) return refuse(kubeStatus(400, `portcullis: no supported WebSocket subprotocol offered (${CHANNEL_PROTOCOLS.join(', ')})`, { facts: a.facts }));
      const up = upstreamFor(a.target);
      const masker = maskerFor(a.decision);
      if (sub === 'portforward') return await relayUpgrade(a, req, socket, head, up, masker, finish, refuse, rkey, t0);
      let opened;
      try {
        opened = await up.websocket(a.path, up.headersFor(req.headers, a.identity), protocols);
      } catch (e) {
        const msg = (e as Error).message;
        return refuse(kubeStatus(503, `portcullis: the API server of target ${a.target.name} cannot be reached: ${msg}`));
      }
      if ('refused' in opened) {
        const r = opened.refused;
        return await relayRefusal(r, socket, masker, rkey, finish);
      }
      const upstreamWs = opened.ws;
      upstreamWs.pause();
      if (ac.signal.aborted || socket.destroyed) {
        upstreamWs.terminate();
        return finish(499, { error: 'client went away' });
      }
      wsProtocol.set(req, upstreamWs.protocol);
      const client = await new Promise<WebSocket>((resolve) => wss.handleUpgrade(req, socket, head, (ws) => resolve(ws)));
      client.pause();
      finish(101, { protocol: upstreamWs.protocol });
      let result;
      try {
        result = await bridge({ core, log, parent: a.session.id, identity: a.identity, target: a.target.name, remote, facts: a.facts!, masker, client, upstream: upstreamWs });
      } catch (e) {
        // e.g. the stream's session could not be audited: nothing more passes (fail closed).
        client.close(1011, 'portcullis: the stream could not be recorded');
        upstreamWs.terminate();
        log.error('kube proxy: stream refused', { error: String(e) });
        return auditResponse(a, { stream: sub, error: String(e) });
      }
      auditResponse(a, { stream: sub, ms: Date.now() - t0, bytes_in: result.bytesIn, bytes_out: result.bytesOut, ...(result.session ? { stream_session: result.session } : {}), ...(result.exitCode !== undefined ? { exit_code: result.exitCode } : {}), close_code: result.closeCode ?? null });
    } catch (e) {
      log.error('kube proxy: stream failed', { error: String(e) });
      if (!socket.destroyed) sendStatusOnSocket(socket, kubeStatus(500, `portcullis: ${(e as Error).message}`));
      finish(500, { error: String(e) });
    } finally {
      done();
    }
  }

  /** Answers an upgrade with the API server's refusal (a Status, masked) and remembers it for the SPDY fallback. */
  async function relayRefusal(r: UpstreamResponse, socket: Duplex, masker: Masker, rkey: string, finish: (status: number, extra?: Record<string, unknown>) => void): Promise<void> {
    const body = await readAll(r.body, 64 * 1024);
    const ct = String(r.headers['content-type'] ?? 'text/plain');
    const safe = /json/i.test(ct) ? safeJson(masker, body) : Buffer.from(masker.maskText(body.toString('utf8')));
    rememberRefusal(rkey, { status: r.status, contentType: ct, body: safe });
    socket.write(`HTTP/1.1 ${r.status} ${r.status === 404 ? 'Not Found' : 'Error'}\r\nContent-Type: ${ct}\r\nContent-Length: ${safe.length}\r\nConnection: close\r\n\r\n`);
    socket.end(safe);
    finish(r.status, { upstream_refused: true });
  }

  /** Port-forward: the upgrade and every byte after it relayed as they are (counted, not parsed). */
  async function relayUpgrade(
    a: Admitted,
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    up: KubeUpstream,
    masker: Masker,
    finish: (status: number, extra?: Record<string, unknown>) => void,
    refuse: (st: KubeStatus) => void,
    rkey: string,
    t0: number,
  ): Promise<void> {
    let opened;
    try {
      opened = await up.rawUpgrade(a.path, up.headersFor(req.headers, a.identity));
    } catch (e) {
      return refuse(kubeStatus(503, `portcullis: the API server of target ${a.target.name} cannot be reached: ${(e as Error).message}`));
    }
    if ('refused' in opened) return relayRefusal(opened.refused, socket, masker, rkey, finish);
    const upSock = opened.socket;
    if (socket.destroyed) {
      upSock.destroy();
      return finish(499, { error: 'client went away' });
    }
    finish(101, { relay: true });
    let bytesIn = 0;
    let bytesOut = 0;
    socket.write(opened.responseHead);
    if (opened.head.length) {
      bytesOut += opened.head.length;
      socket.write(opened.head);
    }
    if (head.length) {
      bytesIn += head.length;
      upSock.write(head);
    }
    await new Promise<void>((resolve) => {
      upSock.on('data', (d: Buffer) => (bytesOut += d.length));
      socket.on('data', (d: Buffer) => (bytesIn += d.length));
      upSock.pipe(socket);
      socket.pipe(upSock);
      const end = () => {
        upSock.destroy();
        socket.destroy();
        resolve();
      };
      upSock.once('close', end);
      socket.once('close', end);
      upSock.on('error', () => undefined);
    });
    auditResponse(a, { stream: 'portforward', ms: Date.now() - t0, bytes_in: bytesIn, bytes_out: bytesOut });
  }

  const server: Http2SecureServer = http2.createSecureServer({ cert: opts.tls.cert, key: opts.tls.key, allowHTTP1: true, settings: { initialWindowSize: 8 << 20 } });
  server.on('request', (req: Req, res: Res) => {
    onRequest(req, res).catch((e: unknown) => {
      log.error('kube proxy: request failed', { error: String(e) });
      if (!res.headersSent) sendStatus(res, kubeStatus(500, 'portcullis: internal error'));
      else res.destroy();
    });
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => void onUpgrade(req, socket, head));
  server.on('session', (s) => {
    s.on('error', () => undefined);
    s.on('connect', () => s.setLocalWindowSize(64 << 20));
  });
  server.on('sessionError', () => undefined);
  server.on('tlsClientError', () => undefined);
  server.on('secureConnection', (s: TLSSocket) => {
    s.setNoDelay(true);
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => undefined);
  });
  server.setTimeout(0);

  await new Promise<void>((resolve, reject) => {
    const onErr = (e: Error) => reject(new PortcullisError('kube_proxy_listen', `kubernetes proxy: cannot listen on ${host}:${opts.port ?? 6443}: ${e.message}`));
    server.once('error', onErr);
    server.listen(opts.port ?? 6443, host, () => {
      server.off('error', onErr);
      resolve();
    });
  });
  server.on('error', (e) => log.error('kube proxy: listener error', { error: e.message }));
  const port = (server.address() as AddressInfo).port;
  const url = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  log.info('kubernetes proxy listening', { url });

  let closing: Promise<void> | null = null;
  return {
    host,
    port,
    url,
    sessions: () => sessions.list().length,
    close(): Promise<void> {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        await sessions.closeAll('bastion stopping');
        for (const s of sockets) s.destroy();
        for (const c of wss.clients) c.terminate();
        for (const { up } of upstreams.values()) up.close();
        await stopped;
      })();
      return closing;
    },
  };
}

function readAll(r: Readable, max: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let n = 0;
    r.on('data', (c: Buffer) => {
      if (n < max) chunks.push(c.subarray(0, max - n));
      n += c.length;
    });
    r.once('end', () => resolve(Buffer.concat(chunks)));
    r.once('error', () => resolve(Buffer.concat(chunks)));
    r.once('close', () => resolve(Buffer.concat(chunks)));
  });
}

/** An upstream error body (a Status) with its message through the detectors. */
function safeJson(masker: Masker, body: Buffer): Buffer {
  try {
    const st = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    if (typeof st['message'] === 'string') st['message'] = masker.maskText(st['message']);
    return Buffer.from(JSON.stringify(st));
  } catch {
    return Buffer.from(masker.maskText(body.toString('utf8')));
  }
}

/** The agent's stated reason: HTTP header X-Portcullis-Reason (lower-cased by node); never forwarded upstream. */
export const REASON_HEADER = 'x-portcullis-reason';

/** One reason: the header's value trimmed (repeated headers joined with "; "), at most 1024 characters; none when empty. */
export function statedReason(v: string | string[] | undefined): string | undefined {
  const s = (Array.isArray(v) ? v.join('; ') : (v ?? '')).trim().slice(0, 1024);
  return s === '' ? undefined : s;
}
