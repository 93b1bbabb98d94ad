// The PostgreSQL listener: accepts agent connections, runs one PgSession each, owns what sessions
// share (cancel keys, per-identity connection counts, one catalog connection per target).

import { EventEmitter } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import type { Core } from '../../core/core.js';
import type { Logger } from '../../core/log.js';
import { initFacts } from '../../policy/actions.js';
import { PortcullisError, type Identity } from '../../policy/types.js';
import { TargetCatalog, type CatalogOptions } from './catalog.js';
import { DEFAULT_MAX_MESSAGE } from './codec.js';
import { PgSession, type SessionLimits } from './session.js';
import type { StatementEntry } from './transcript.js';
import type { StatementSummary } from '../../core/events.js';
import type { PgTargetConfig } from './upstream.js';

export interface PostgresProxyOptions {
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** Listen port (default 6432; 0 picks a free one). */
  port?: number;
  /** The PostgreSQL targets by name (the agent's `dbname`, or `target@dbname`). */
  targets: (name: string) => PgTargetConfig | undefined;
  /**
   * Verifies the agent's password (an API token or an OIDC token; user name = subject). Throws a
   * PortcullisError whose message is safe to show the agent. `ctx.remote` is the peer's IP
   * address (no port). serve wires: (user, pw, ctx) => identity.verifyBearer(pw, { remote:
   * ctx.remote, protocol: 'postgres', userHint: user }).
   */
  authenticate: (user: string, password: string, ctx: { remote: string }) => Promise<Identity>;
  /** The bastion's TLS certificate and key (PEM): SSLRequest is answered 'S'. */
  tls?: { key: string | Buffer; cert: string | Buffer; ca?: string | Buffer };
  /** Accept connections without TLS (the password then travels in clear). Default false. */
  allowPlaintext?: boolean;
  /** Data directory: transcripts go to `<dataDir>/recordings/<session>.pg.jsonl`. Absent: no transcripts. */
  dataDir?: string;
  /** The bastion's masking HMAC key (needed by masks with strategy `hash`). */
  hmacKey?: string | Buffer;
  /** Masked columns whose type cannot hold the mask: 'text' advertises text (default), 'preserve' sends NULL. */
  typeMode?: 'text' | 'preserve';
  /** Concurrent connections per identity (subject); default 32. */
  maxConnectionsPerIdentity?: number;
  /** Concurrent connections in all; default 1000. */
  maxConnections?: number;
  /** Largest client message accepted (bytes); default 256 MiB. */
  maxMessageBytes?: number;
  /** Time allowed for TLS + login + upstream login; default 30 s. */
  startupTimeoutMs?: number;
  /** Upstream connect + login timeout; default 10 s. */
  upstreamTimeoutMs?: number;
  catalog?: CatalogOptions;
  /** Session limits (config `session:`): idle timeout, maximum duration, credential revalidation. */
  session?: SessionLimits;
  log: Logger;
}

/** The core event carrying PostgreSQL statement transcript entries. */
export const CORE_STATEMENT_EVENT = 'session.statement';

export interface PostgresProxyEvents {
  /** One per statement (simple Query) or execution (extended protocol), already masked. */
  statement: [StatementEntry];
}

export interface PostgresProxy {
  readonly host: string;
  readonly port: number;
  /** Per-statement transcript entries (also written to the recordings). */
  readonly events: EventEmitter<PostgresProxyEvents>;
  /** Open agent connections. */
  connections(): number;
  /**
   * Stops listening and closes every connection. With `graceMs`, a session running a statement
   * may finish it (up to graceMs) and is then ended with FATAL 57P01, as PostgreSQL's own
   * shutdown does; without it, sessions are ended at once.
   */
  close(opts?: { graceMs?: number }): Promise<void>;
}

function validate(opts: PostgresProxyOptions): void {
  if (typeof opts.targets !== 'function') throw new PortcullisError('pg_proxy_option', 'postgres proxy: option targets must be a function (name) => target config');
  if (typeof opts.authenticate !== 'function') throw new PortcullisError('pg_proxy_option', 'postgres proxy: option authenticate must be a function (user, password, ctx) => Promise<Identity>');
  if (opts.port !== undefined && (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535)) throw new PortcullisError('pg_proxy_option', `postgres proxy: option port must be 0..65535, got ${String(opts.port)}`);
  for (const k of ['maxConnectionsPerIdentity', 'maxConnections', 'maxMessageBytes', 'startupTimeoutMs', 'upstreamTimeoutMs'] as const) {
    const v = opts[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new PortcullisError('pg_proxy_option', `postgres proxy: option ${k} must be a positive integer, got ${String(v)}`);
  }
  for (const k of ['idleTimeoutMs', 'maxDurationMs', 'revalidateMs'] as const) {
    const v = opts.session?.[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new PortcullisError('pg_proxy_option', `postgres proxy: option session.${k} must be a positive integer (ms), got ${String(v)}`);
  }
  if (opts.session?.revalidateMs !== undefined && typeof opts.session.revalidate !== 'function') {
    throw new PortcullisError('pg_proxy_option', 'postgres proxy: option session.revalidateMs needs session.revalidate (identity) => Promise<{ ok }>');
  }
  if (opts.typeMode !== undefined && opts.typeMode !== 'text' && opts.typeMode !== 'preserve') throw new PortcullisError('pg_proxy_option', `postgres proxy: option typeMode must be text or preserve`);
  if (!opts.tls && !opts.allowPlaintext) {
    throw new PortcullisError('pg_proxy_option', 'postgres proxy: without a TLS certificate (option tls) connections can only be accepted with allowPlaintext: true');
  }
}

/** Starts the PostgreSQL proxy. Resolves once it listens. */
export async function startPostgresProxy(core: Core, opts: PostgresProxyOptions): Promise<PostgresProxy> {
  validate(opts);
  await initFacts();
  const host = opts.host ?? '127.0.0.1';
  const log = opts.log;
  const secureContext = opts.tls ? tls.createSecureContext({ key: opts.tls.key, cert: opts.tls.cert, ...(opts.tls.ca ? { ca: opts.tls.ca } : {}) }) : undefined;
  const events = new EventEmitter<PostgresProxyEvents>();
  const sessions = new Set<PgSession>();
  const cancelKeys = new Map<string, PgSession>();
  const perIdentity = new Map<string, number>();
  const catalogs = new Map<string, { cfg: string; catalog: TargetCatalog }>();
  const maxPer = opts.maxConnectionsPerIdentity ?? 32;
  const maxAll = opts.maxConnections ?? 1000;
  const keyOf = (pid: number, secret: Buffer): string => `${pid}:${secret.toString('hex')}`;

  const env = {
    core,
    log,
    targets: opts.targets,
    authenticate: opts.authenticate,
    secureContext,
    allowPlaintext: opts.allowPlaintext === true,
    recordingsDir: opts.dataDir ? path.join(opts.dataDir, 'recordings') : undefined,
    hmacKey: opts.hmacKey,
    typeMode: opts.typeMode ?? 'text',
    maxMessageBytes: opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE,
    startupTimeoutMs: opts.startupTimeoutMs ?? 30_000,
    upstreamTimeoutMs: opts.upstreamTimeoutMs ?? 10_000,
    catalogFor(target: string, cfg: PgTargetConfig): TargetCatalog {
      const sig = JSON.stringify([cfg.host, cfg.port, cfg.database, cfg.user]);
      const hit = catalogs.get(target);
      if (hit && hit.cfg === sig) return hit.catalog;
      if (hit) void hit.catalog.close();
      const catalog = new TargetCatalog(cfg, opts.catalog);
      catalogs.set(target, { cfg: sig, catalog });
      return catalog;
    },
    acquire(subject: string): boolean {
      const n = perIdentity.get(subject) ?? 0;
      if (n >= maxPer) return false;
      perIdentity.set(subject, n + 1);
      return true;
    },
    release(subject: string): void {
      const n = (perIdentity.get(subject) ?? 1) - 1;
      if (n <= 0) perIdentity.delete(subject);
      else perIdentity.set(subject, n);
    },
    registerCancel(pid: number, secret: Buffer, s: PgSession): void {
      cancelKeys.set(keyOf(pid, secret), s);
    },
    unregisterCancel(pid: number, secret: Buffer): void {
      cancelKeys.delete(keyOf(pid, secret));
    },
    cancel(pid: number, secret: Buffer): void {
      const s = cancelKeys.get(keyOf(pid, secret));
      if (s) s.cancel();
      else log.debug('postgres proxy: cancel request with an unknown key');
    },
    onStatement(e: StatementEntry): void {
      events.emit('statement', e);
      // Also on the core's bus, for the console and the control socket. CoreEvents has no entry
      // for it yet (src/core is not this module's): emitted untyped until it does.
      core.events.emit(CORE_STATEMENT_EVENT, e as unknown as StatementSummary);
    },
    onClosed(s: PgSession): void {
      sessions.delete(s);
    },
    limits: opts.session ?? {},
  };

  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    if (sessions.size >= maxAll) {
      socket.destroy();
      log.warn('postgres proxy: connection limit reached', { limit: maxAll });
      return;
    }
    const s = new PgSession(socket, env);
    sessions.add(s);
    void s.run();
  });
  server.on('error', (e) => log.error('postgres proxy: listener error', { error: e.message }));

  await new Promise<void>((resolve, reject) => {
    const onErr = (e: Error): void => reject(new PortcullisError('pg_proxy_listen', `postgres proxy: cannot listen on ${host}:${opts.port ?? 6432}: ${e.message}`));
    server.once('error', onErr);
    server.listen(opts.port ?? 6432, host, () => {
      server.off('error', onErr);
      resolve();
    });
  });
  const addr = server.address() as net.AddressInfo;
  log.info('postgres proxy listening', { host, port: addr.port, tls: Boolean(secureContext) });

  let closing: Promise<void> | null = null;
  return {
    host,
    port: addr.port,
    events,
    connections: () => sessions.size,
    close(o: { graceMs?: number } = {}): Promise<void> {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        if (o.graceMs && o.graceMs > 0) await Promise.all([...sessions].map((s) => s.drain(o.graceMs!)));
        await Promise.all([...sessions].map((s) => s.terminate('bastion stopping')));
        await stopped;
        await Promise.all([...catalogs.values()].map((c) => c.catalog.close()));
      })();
      return closing;
    },
  };
}
