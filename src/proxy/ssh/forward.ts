// Port forwarding through the bastion (`ssh -L`, `ssh -R`), each decided by the policy with a
// `forward` fact before anything is connected or bound:
//   -L (`direct-tcpip` that is not a ProxyJump, see jump.ts): {direction: local, host, port} of the
//      destination. Allowed: connected from the target's side — for a local target that is the
//      bastion's own machine (a TCP connection from the bastion), for a remote target the
//      connection is opened by the target's sshd (ssh2 `forwardOut` over the upstream login), so
//      `127.0.0.1:5432` means the target's own loopback in both cases.
//   -R (`tcpip-forward` global request): {direction: remote, host: bind address, port: bind port}.
//      Allowed, local target: the bastion listens on that address and hands each incoming
//      connection to the agent (`forwarded-tcpip`). Remote target: the target's sshd listens
//      (ssh2 `forwardIn` over the upstream login); each connection it reports is relayed to the
//      agent (`forwardOut` on the agent's connection) as a core session of its own (audited with
//      byte counts); `cancel-tcpip-forward` → `unforwardIn`.
// The decision names the connection's target (identity+target or the default target); without a
// target nothing is forwarded. `review` holds the channel open request until an operator decides.
// Every allowed forward is a core session (audited open/close with byte counts, listed by
// `portcullis sessions`, killable). The bytes are not masked: a forward carries an arbitrary
// protocol the bastion cannot parse — which is why the reference policy allows only listed ports.
import { createServer, type Server as NetServer } from 'node:net';
import type { Duplex } from 'node:stream';
import type { AcceptConnection, Connection, RejectConnection, ServerChannel, TcpipBindInfo, TcpipRequestInfo } from 'ssh2';
import type { Core } from '../../core/core.js';
import type { Logger } from '../../core/log.js';
import type { Decision, ForwardInfo, Identity, PolicyRequest } from '../../policy/types.js';
import type { ForwardedConnection, Upstream } from './upstream.js';

export interface ForwardContext {
  core: Core;
  log: Logger;
  identity: Identity;
  /** The connection's target (named or default); undefined: no forwarding at all. */
  target: string | undefined;
  remote: string;
  connectionId: string;
  /** The target's upstream of this connection. */
  upstream(): Upstream;
  targetKind: 'local' | 'remote' | undefined;
  client: Connection;
  onConnectionClose(fn: () => void): void;
}

async function decideForward(ctx: ForwardContext, fwd: ForwardInfo): Promise<Decision> {
  const req: PolicyRequest = { protocol: 'ssh', identity: ctx.identity, target: ctx.target!, forward: fwd };
  const { decision } = await ctx.core.decide(null, req);
  if (decision.effect !== 'review') return decision;
  try {
    const out = await ctx.core.hold(null, req, decision, (id) => ctx.log.info('ssh forward held for approval', { approval: id, forward: `${fwd.direction} ${fwd.host}:${fwd.port}` }));
    return out.state === 'approved' ? { ...decision, effect: 'allow' } : { ...decision, effect: 'deny', reason: `${decision.reason}; approval ${out.state}` };
  } catch (e) {
    return { effect: 'deny', rule: decision.rule, reason: `could not be held for approval (${(e as Error).message})`, masks: [] };
  }
}

/** Pipe two streams both ways; resolves with the byte counts once both sides are done. */
function splice(a: Duplex, b: Duplex): Promise<{ toTarget: number; toAgent: number }> {
  let toTarget = 0;
  let toAgent = 0;
  a.on('data', (d: Buffer) => (toTarget += d.length));
  b.on('data', (d: Buffer) => (toAgent += d.length));
  a.pipe(b);
  b.pipe(a);
  return new Promise((res) => {
    let done = false;
    const end = () => {
      if (done) return;
      done = true;
      a.destroy();
      b.destroy();
      res({ toTarget, toAgent });
    };
    a.on('close', end);
    b.on('close', end);
    a.on('error', end);
    b.on('error', end);
  });
}

/** `direct-tcpip` that is a port forward (-L). */
export async function localForward(ctx: ForwardContext, info: TcpipRequestInfo, accept: AcceptConnection<ServerChannel>, reject: RejectConnection): Promise<void> {
  const dest = `${info.destIP}:${info.destPort}`;
  if (ctx.target === undefined) {
    ctx.log.info('ssh: port forward refused (no target for this connection)', { remote: ctx.remote, subject: ctx.identity.subject, dest });
    return reject();
  }
  const d = await decideForward(ctx, { direction: 'local', host: info.destIP, port: info.destPort });
  if (d.effect !== 'allow') {
    ctx.log.info('ssh: port forward denied', { remote: ctx.remote, subject: ctx.identity.subject, dest, rule: d.rule });
    return reject();
  }
  let session: string;
  try {
    session = (
      await ctx.core.openSession({
        protocol: 'ssh',
        target: ctx.target,
        identity: ctx.identity,
        remote: ctx.remote,
        meta: { connection: ctx.connectionId, channel: 'direct-tcpip', destination: dest, originator: `${info.srcIP}:${info.srcPort}` },
        kill: () => stream?.destroy(),
      })
    ).id;
  } catch (e) {
    ctx.log.error('ssh forward session could not be opened', { error: (e as Error).message });
    return reject();
  }
  let stream: Duplex | undefined;
  try {
    stream = await ctx.upstream().forwardOut!({ host: info.srcIP, port: info.srcPort }, { host: info.destIP, port: info.destPort });
  } catch (e) {
    ctx.log.info('ssh: port forward could not connect', { dest, error: (e as Error).message });
    reject();
    return ctx.core.closeSession(session, `cannot connect: ${(e as Error).message}`).catch(() => undefined);
  }
  const ch = accept();
  const bytes = await splice(ch, stream);
  await ctx.core.closeSession(session, 'closed', { bytes }).catch(() => undefined);
}

/** `tcpip-forward` / `cancel-tcpip-forward` (-R). */
export function remoteForwardRequest(
  ctx: ForwardContext,
  listeners: Map<string, { server?: NetServer; close(): void }>,
  accept: ((port?: number) => void) | undefined,
  reject: (() => void) | undefined,
  name: string,
  info: TcpipBindInfo,
): void {
  const key = `${info.bindAddr}:${info.bindPort}`;
  if (name === 'cancel-tcpip-forward') {
    const l = listeners.get(key);
    if (!l) return reject?.();
    l.close();
    listeners.delete(key);
    return accept?.();
  }
  void (async () => {
    if (ctx.target === undefined) {
      ctx.log.info('ssh: remote forward refused', { remote: ctx.remote, subject: ctx.identity.subject, bind: key, why: 'no target' });
      return reject?.();
    }
    const d = await decideForward(ctx, { direction: 'remote', host: info.bindAddr, port: info.bindPort });
    if (d.effect !== 'allow') {
      ctx.log.info('ssh: remote forward denied', { remote: ctx.remote, subject: ctx.identity.subject, bind: key, rule: d.rule });
      return reject?.();
    }
    if (ctx.targetKind === 'remote') return remoteTargetForward(ctx, listeners, accept, reject, info);
    const host = info.bindAddr === 'localhost' || info.bindAddr === '' ? '127.0.0.1' : info.bindAddr;
    const server = createServer();
    try {
      await new Promise<void>((res, rej) => {
        server.once('error', rej);
        server.listen(info.bindPort, host, () => {
          server.off('error', rej);
          res();
        });
      });
    } catch (e) {
      ctx.log.info('ssh: remote forward cannot listen', { bind: key, error: (e as Error).message });
      return reject?.();
    }
    const port = (server.address() as { port: number }).port;
    const session = await ctx.core
      .openSession({ protocol: 'ssh', target: ctx.target, identity: ctx.identity, remote: ctx.remote, meta: { connection: ctx.connectionId, channel: 'tcpip-forward', bind: `${host}:${port}` }, kill: () => close() })
      .catch(() => null);
    if (!session) {
      server.close();
      return reject?.();
    }
    let connections = 0;
    const socks = new Set<Duplex>();
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      server.close();
      for (const s of socks) s.destroy();
      void ctx.core.closeSession(session.id, 'closed', { connections }).catch(() => undefined);
    };
    server.on('connection', (sock) => {
      connections++;
      socks.add(sock);
      sock.on('close', () => socks.delete(sock));
      sock.on('error', () => undefined);
      ctx.client.forwardOut(info.bindAddr, port, sock.remoteAddress ?? '127.0.0.1', sock.remotePort ?? 0, (err, ch) => {
        if (err) return sock.destroy();
        void splice(sock, ch);
      });
    });
    listeners.set(`${info.bindAddr}:${port}`, { server, close });
    ctx.onConnectionClose(close);
    accept?.(port);
  })().catch((e: unknown) => {
    ctx.log.error('ssh remote forward failed', { error: String(e) });
    reject?.();
  });
}

/** -R for a remote target: the target's sshd binds; each connection goes back to the agent. */
async function remoteTargetForward(
  ctx: ForwardContext,
  listeners: Map<string, { server?: NetServer; close(): void }>,
  accept: ((port?: number) => void) | undefined,
  reject: (() => void) | undefined,
  info: TcpipBindInfo,
): Promise<void> {
  const target = ctx.target!;
  const up = ctx.upstream();
  if (!up.forwardIn) return reject?.();
  const conns = new Set<Duplex>();
  let connections = 0;
  let bind = `${info.bindAddr}:${info.bindPort}`;
  let closeListener = () => undefined as void;
  let closed = false;
  let session: string | null = null;
  const close = () => {
    if (closed) return;
    closed = true;
    closeListener();
    for (const c of conns) c.destroy();
    if (session) void ctx.core.closeSession(session, 'closed', { connections }).catch(() => undefined);
  };
  const onConnection = (c: ForwardedConnection) => {
    if (closed) return c.reject();
    connections++;
    const originator = `${c.srcIP}:${c.srcPort}`;
    void (async () => {
      let id: string;
      let stream: Duplex | undefined;
      try {
        id = (
          await ctx.core.openSession({
            protocol: 'ssh',
            target,
            identity: ctx.identity,
            remote: ctx.remote,
            meta: { connection: ctx.connectionId, channel: 'forwarded-tcpip', bind, originator },
            kill: () => stream?.destroy(),
          })
        ).id;
      } catch (e) {
        ctx.log.error('ssh forwarded connection could not be opened as a session', { error: (e as Error).message });
        return c.reject();
      }
      const [addr, port] = [info.bindAddr, Number(bind.slice(bind.lastIndexOf(':') + 1))];
      ctx.client.forwardOut(addr, port, c.srcIP, c.srcPort, (err, agentCh) => {
        if (err || closed) {
          c.reject();
          agentCh?.destroy();
          void ctx.core.closeSession(id, err ? `the agent refused the connection: ${err.message}` : 'forward cancelled').catch(() => undefined);
          return;
        }
        stream = c.accept();
        conns.add(stream);
        void splice(stream, agentCh).then((bytes) => {
          conns.delete(stream!);
          // toTarget/toAgent as seen from the target's side: what the target sent reaches the agent
          return ctx.core.closeSession(id, 'closed', { bytes: { toTarget: bytes.toAgent, toAgent: bytes.toTarget } });
        }).catch(() => undefined);
      });
    })();
  };
  let bound: { port: number; close(): void };
  try {
    bound = await up.forwardIn(info.bindAddr, info.bindPort, onConnection);
  } catch (e) {
    ctx.log.info('ssh: remote forward cannot listen on the target', { bind, error: (e as Error).message });
    return reject?.();
  }
  bind = `${info.bindAddr}:${bound.port}`;
  closeListener = () => bound.close();
  try {
    session = (await ctx.core.openSession({ protocol: 'ssh', target, identity: ctx.identity, remote: ctx.remote, meta: { connection: ctx.connectionId, channel: 'tcpip-forward', bind }, kill: () => close() })).id;
  } catch (e) {
    ctx.log.error('ssh remote forward session could not be opened', { error: (e as Error).message });
    close();
    return reject?.();
  }
  listeners.set(bind, { close });
  ctx.onConnectionClose(close);
  accept?.(bound.port);
}
