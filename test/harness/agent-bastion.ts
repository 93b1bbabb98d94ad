// A real bastion core + PostgreSQL proxy (+ control socket) for the agent-native outcome tests:
// the reference policy (examples/policies) plus extra policy files, a data dir of its own, API
// tokens for any subjects, and helpers to run psql / node-postgres through it. The PostgreSQL
// server comes from withPostgres (test/harness/pg.ts).
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startControlServer } from '../../src/control/server.js';
import { Core, type CoreOptions } from '../../src/core/core.js';
import { createLogger } from '../../src/core/log.js';
import { IdentityError } from '../../src/identity/errors.js';
import { createApiToken, verifyApiToken } from '../../src/identity/tokens.js';
import { startPostgresProxy, type PostgresProxy } from '../../src/proxy/postgres/index.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import type { PgHarness } from './pg.js';

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface AgentBastion {
  root: string;
  dataDir: string;
  policiesDir: string;
  socket: string;
  store: Store;
  core: Core;
  proxy: PostgresProxy;
  /** An API token for the subject (group agents unless given), created once per subject. */
  token(subject?: string, groups?: string[]): Promise<string>;
  psql(sql: string, o?: { subject?: string; env?: Record<string, string>; args?: string[]; timeoutMs?: number }): Promise<Run>;
  client(subject?: string): Promise<pg.Client>;
  /** Stop the proxy, control socket and core (not the store's files): `restart()` opens them again. */
  stop(): Promise<void>;
  restart(): Promise<void>;
  close(): Promise<void>;
}

const log = createLogger('error', () => undefined);

export async function startAgentBastion(db: PgHarness, extraPolicies: Record<string, string> = {}, coreOpts: Partial<CoreOptions> = {}): Promise<AgentBastion> {
  const root = mkdtempSync(join(tmpdir(), 'pc-agent-'));
  const dataDir = join(root, 'data');
  const policiesDir = join(root, 'policies');
  mkdirSync(dataDir, { recursive: true });
  cpSync('examples/policies', policiesDir, { recursive: true });
  for (const [name, text] of Object.entries(extraPolicies)) writeFileSync(join(policiesDir, name), text);
  const socket = join(root, 'control.sock');
  const tokens = new Map<string, string>();
  const clients = new Set<pg.Client>();
  let store!: Store;
  let core!: Core;
  let proxy!: PostgresProxy;
  let control!: { close(): Promise<void> };

  const open = async () => {
    store = await openStore(dataDir);
    core = await Core.open({ dataDir, policiesDir, audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 1000 }, store, log, approvalTimeoutMs: 20_000, ...coreOpts });
    proxy = await startPostgresProxy(core, {
      port: 0,
      allowPlaintext: true,
      dataDir,
      log,
      authenticate: async (user, password) => {
        const rec = await verifyApiToken(store, password, Date.now());
        if (rec.subject !== user) throw new IdentityError('subject_mismatch', `the token belongs to ${rec.subject}, not ${user}`);
        return { subject: rec.subject, groups: rec.groups, authMethod: 'api-token' };
      },
      targets: (name) => (name === 'shop' ? { host: db.host, port: db.port, database: 'shop', user: db.user, password: db.password } : undefined),
    });
    control = await startControlServer(core, { socket, log });
  };
  const stop = async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    clients.clear();
    await control.close();
    await proxy.close();
    await core.close();
    await store.close();
  };
  await open();

  const b: AgentBastion = {
    root,
    dataDir,
    policiesDir,
    socket,
    get store() {
      return store;
    },
    get core() {
      return core;
    },
    get proxy() {
      return proxy;
    },
    async token(subject = 'demo-agent', groups = ['agents']) {
      let t = tokens.get(subject);
      if (!t) {
        t = (await createApiToken(store, { subject, groups }, Date.now())).token;
        tokens.set(subject, t);
      }
      return t;
    },
    async psql(sql, o = {}) {
      const subject = o.subject ?? 'demo-agent';
      const password = await b.token(subject);
      return new Promise((resolve, reject) => {
        const child = spawn('psql', ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(proxy.port), '-U', subject, '-d', 'shop', ...(o.args ?? []), '-c', sql], {
          env: { PATH: process.env.PATH ?? '', PGPASSWORD: password, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '10', ...o.env },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 30_000);
        child.on('error', reject);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code, stdout, stderr });
        });
      });
    },
    async client(subject = 'demo-agent') {
      const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: subject, password: await b.token(subject), database: 'shop' });
      c.on('error', () => undefined);
      await c.connect();
      clients.add(c);
      c.once('end', () => clients.delete(c));
      return c;
    },
    stop,
    async restart() {
      await open();
    },
    async close() {
      await stop().catch(() => undefined);
      rmSync(root, { recursive: true, force: true });
    },
  };
  return b;
}

/** The outcome JSON in a PostgreSQL error's or notice's DETAIL. */
export function detailOutcome(e: { detail?: string } | undefined): Record<string, unknown> {
  if (!e?.detail) throw new Error('no DETAIL');
  return JSON.parse(e.detail) as Record<string, unknown>;
}

/** The DETAIL line of psql's stderr (the last one), parsed. */
export function psqlOutcome(stderr: string): Record<string, unknown> {
  const lines = stderr.split('\n').filter((l) => l.startsWith('DETAIL:  {'));
  if (lines.length === 0) throw new Error(`no outcome DETAIL in: ${stderr}`);
  return JSON.parse(lines[lines.length - 1]!.slice('DETAIL:  '.length)) as Record<string, unknown>;
}

export async function rejection(p: Promise<unknown>): Promise<Error & { code?: string; detail?: string; hint?: string }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string; detail?: string };
  }
  throw new Error('expected the query to fail');
}

export async function waitFor(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}
