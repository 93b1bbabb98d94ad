// Column origins for masking: RowDescription names a result column's source by table OID and
// attribute number; the masking rules name `schema.table.column`. A bastion-owned connection per
// target (the target's own credentials, node-postgres) asks pg_catalog and caches the answer.
// Entries expire after `ttlMs` (a rename done outside the bastion is picked up) and a target's
// cache is dropped whenever the proxy forwards DDL that succeeded.

import pg from 'pg';
import type { PgTargetConfig } from './upstream.js';

export interface TableInfo {
  schema: string;
  table: string;
  /** attnum → column name (dropped columns absent). */
  columns: Map<number, string>;
}

interface Entry {
  info: TableInfo | null;
  at: number;
}

export interface CatalogOptions {
  /** Cache entry lifetime (default 60 s). */
  ttlMs?: number;
  /** Most tables kept per target (default 10,000). */
  maxEntries?: number;
  /** Per-query timeout (default 10 s). */
  queryTimeoutMs?: number;
}

const QUERY = `SELECT c.oid::int8 AS oid, n.nspname, c.relname, a.attnum, a.attname
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  WHERE c.oid = ANY($1::oid[])`;

function tlsOption(t: PgTargetConfig['tls']): pg.ClientConfig['ssl'] {
  if (!t) return false;
  if (t.mode === 'prefer' || t.mode === 'require') return { rejectUnauthorized: false };
  const name = t.servername ?? undefined;
  return {
    rejectUnauthorized: true,
    ...(t.ca !== undefined ? { ca: t.ca } : {}),
    ...(name !== undefined ? { servername: name } : {}),
    ...(t.mode === 'verify-ca' ? { checkServerIdentity: () => undefined } : {}),
  };
}

/** The catalog of one target. */
export class TargetCatalog {
  private client: pg.Client | null = null;
  private connecting: Promise<pg.Client> | null = null;
  private readonly cache = new Map<number, Entry>();
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly queryTimeoutMs: number;
  private closed = false;
  /** Lookups done against the server (for tests and metrics). */
  queries = 0;

  constructor(
    private readonly target: PgTargetConfig,
    opts: CatalogOptions = {},
  ) {
    this.ttlMs = opts.ttlMs ?? 60_000;
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.queryTimeoutMs = opts.queryTimeoutMs ?? 10_000;
  }

  private connect(): Promise<pg.Client> {
    if (this.client) return Promise.resolve(this.client);
    if (!this.connecting) {
      const c = new pg.Client({
        host: this.target.host,
        port: this.target.port,
        database: this.target.database,
        user: this.target.user,
        password: this.target.password,
        ssl: tlsOption(this.target.tls),
        application_name: 'portcullis-catalog',
        connectionTimeoutMillis: this.queryTimeoutMs,
        query_timeout: this.queryTimeoutMs,
      });
      c.on('error', () => {
        if (this.client === c) this.client = null;
      });
      c.on('end', () => {
        if (this.client === c) this.client = null;
      });
      this.connecting = c.connect().then(
        () => {
          this.connecting = null;
          if (this.closed) {
            void c.end().catch(() => undefined);
            throw new Error('catalog closed');
          }
          this.client = c;
          return c;
        },
        (e: unknown) => {
          this.connecting = null;
          throw e;
        },
      );
    }
    return this.connecting;
  }

  /** Bumped whenever the cache is dropped: anything derived from it earlier is stale. */
  epoch = 0;

  /** Until when (ms since 1970) the cached answers for all these OIDs stay fresh; 0 when one is missing. */
  freshUntil(oids: Iterable<number>, now = Date.now()): number {
    let until = Infinity;
    for (const o of oids) {
      if (o === 0) continue;
      const e = this.cache.get(o);
      if (!e || now - e.at > this.ttlMs) return 0;
      until = Math.min(until, e.at + this.ttlMs);
    }
    return until;
  }

  /** Cached tables only (no I/O); undefined for OIDs not cached or expired. */
  cached(oid: number, now = Date.now()): TableInfo | null | undefined {
    const e = this.cache.get(oid);
    if (!e || now - e.at > this.ttlMs) return undefined;
    return e.info;
  }

  /** True when every OID is cached and fresh. */
  hasAll(oids: Iterable<number>): boolean {
    const now = Date.now();
    for (const o of oids) if (o !== 0 && this.cached(o, now) === undefined) return false;
    return true;
  }

  /**
   * Tables for the OIDs (0 is skipped). OIDs that are not tables (or vanished) map to null.
   * Throws when the catalog cannot be read (the caller masks fail-closed).
   */
  async resolve(oids: Iterable<number>): Promise<Map<number, TableInfo | null>> {
    const now = Date.now();
    const out = new Map<number, TableInfo | null>();
    const missing: number[] = [];
    for (const o of oids) {
      if (o === 0 || out.has(o)) continue;
      const c = this.cached(o, now);
      if (c === undefined) missing.push(o);
      else out.set(o, c);
    }
    if (missing.length === 0) return out;
    const client = await this.connect();
    this.queries++;
    const res = await client.query<{ oid: string; nspname: string; relname: string; attnum: number | null; attname: string | null }>(QUERY, [missing]);
    const found = new Map<number, TableInfo>();
    for (const r of res.rows) {
      const oid = Number(r.oid);
      let t = found.get(oid);
      if (!t) {
        t = { schema: r.nspname, table: r.relname, columns: new Map() };
        found.set(oid, t);
      }
      if (r.attnum !== null && r.attname !== null) t.columns.set(r.attnum, r.attname);
    }
    const at = Date.now();
    for (const o of missing) {
      const info = found.get(o) ?? null;
      this.cache.set(o, { info, at });
      out.set(o, info);
    }
    if (this.cache.size > this.maxEntries) {
      const drop = this.cache.size - this.maxEntries;
      let i = 0;
      for (const k of this.cache.keys()) {
        if (i++ >= drop) break;
        this.cache.delete(k);
      }
    }
    return out;
  }

  invalidate(): void {
    this.epoch++;
    this.cache.clear();
  }

  async close(): Promise<void> {
    this.closed = true;
    const c = this.client;
    this.client = null;
    if (c) await c.end().catch(() => undefined);
  }
}
