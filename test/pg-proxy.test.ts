// The PostgreSQL proxy end to end with real components: a real PostgreSQL (test/harness/pg.ts,
// log_statement=all), the real core with the reference policy (examples/policies), real API
// tokens (src/identity/tokens.ts), and real clients: psql (simple protocol) and node-postgres
// (extended protocol for parameterized queries, binary results on request).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { createApiToken, verifyApiToken } from '../src/identity/tokens.js';
import { IdentityError } from '../src/identity/errors.js';
import { initFacts } from '../src/policy/actions.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { CORE_STATEMENT_EVENT, startPostgresProxy, type PostgresProxy } from '../src/proxy/postgres/index.js';
import { readTranscript, type StatementEntry } from '../src/proxy/postgres/transcript.js';
import { TERMINATE, encodeQuery } from '../src/proxy/postgres/codec.js';
import { rawLogin } from './harness/pgraw.js';
import { withPostgres } from './harness/pg.js';

const db = withPostgres({ logStatements: true });
const log = createLogger('error', () => undefined);

let root: string;
let dataDir: string;
let store: Store;
let core: Core;
let proxy: PostgresProxy;
let token: string;
const statements: StatementEntry[] = [];
const coreStatements: StatementEntry[] = [];

async function authenticate(user: string, password: string): Promise<{ subject: string; groups: string[]; authMethod: string }> {
  const rec = await verifyApiToken(store, password, Date.now());
  if (rec.subject !== user) throw new IdentityError('subject_mismatch', `the token belongs to ${rec.subject}, not ${user}`);
  return { subject: rec.subject, groups: rec.groups, authMethod: 'api-token' };
}

before(async () => {
  await initFacts();
  root = mkdtempSync(join(tmpdir(), 'pc-pgproxy-'));
  dataDir = join(root, 'data');
  const policiesDir = join(root, 'policies');
  cpSync('examples/policies', policiesDir, { recursive: true });
  store = await openStore(dataDir);
  core = await Core.open({ dataDir, policiesDir, audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 1000 }, store, log, approvalTimeoutMs: 20_000 });
  token = (await createApiToken(store, { subject: 'demo-agent', groups: ['agents'] }, Date.now())).token;
  proxy = await startPostgresProxy(core, {
    port: 0,
    allowPlaintext: true,
    dataDir,
    log,
    authenticate,
    targets: (name) => (name === 'shop' ? { host: db.host, port: db.port, database: 'shop', user: db.user, password: db.password } : undefined),
  });
  proxy.events.on('statement', (e) => statements.push(e));
  (core.events as unknown as EventEmitter).on(CORE_STATEMENT_EVENT, (e: StatementEntry) => coreStatements.push(e));
});

after(async () => {
  await proxy?.close();
  await core?.close();
  await store?.close();
  rmSync(root, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function psql(sql: string, extra: { env?: Record<string, string>; args?: string[]; timeoutMs?: number; password?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn('psql', ['-X', '-A', '-t', '-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'demo-agent', '-d', 'shop', ...(extra.args ?? []), '-c', sql], {
      env: { PATH: process.env.PATH ?? '', PGPASSWORD: extra.password ?? token, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '10', ...extra.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), extra.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function agentClient(opts: Partial<pg.ClientConfig> = {}): pg.Client {
  return new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'demo-agent', password: token, database: 'shop', ...opts });
}

async function withAgent<T>(fn: (c: pg.Client) => Promise<T>, opts: Partial<pg.ClientConfig> = {}): Promise<T> {
  const c = agentClient(opts);
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function rejects(p: Promise<unknown>): Promise<Error & { code?: string; detail?: string; hint?: string }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string };
  }
  assert.fail('expected the query to fail');
}

const EMAIL_MASKED = /^[^@*]\*+@/;

describe('allowed reads, masked', () => {
  test('psql reads customers: email partial, card last 4, ssn redacted', async () => {
    const r = await psql('SELECT id, name, email, card_number, ssn FROM customers ORDER BY id LIMIT 3');
    assert.equal(r.code, 0, r.stderr);
    const rows = r.stdout.trim().split('\n').map((l) => l.split('|'));
    assert.equal(rows.length, 3);
    const real = (await (await db.connect()).query('SELECT id, name, email, card_number, ssn FROM customers ORDER BY id LIMIT 3')).rows;
    rows.forEach((row, i) => {
      assert.equal(row[0], String(real[i].id));
      assert.equal(row[1], real[i].name);
      assert.notEqual(row[2], real[i].email);
      assert.match(row[2]!, EMAIL_MASKED);
      assert.ok(row[2]!.endsWith(real[i].email.slice(real[i].email.indexOf('@'))), `${row[2]} keeps the domain of ${real[i].email}`);
      assert.notEqual(row[3], real[i].card_number);
      assert.ok(row[3]!.endsWith(real[i].card_number.slice(-4)));
      assert.ok(!row[3]!.includes(real[i].card_number.slice(0, 6)));
      assert.notEqual(row[4], real[i].ssn);
      assert.ok(!row[4]!.includes(real[i].ssn));
    });
  });

  test('an alias or an expression does not unmask a column', async () => {
    const real = (await (await db.connect()).query('SELECT email, ssn FROM customers WHERE id = 1')).rows[0];
    const r = await psql('SELECT email AS e, lower(email) AS l, ssn || \'\' AS s FROM customers WHERE id = 1');
    assert.equal(r.code, 0, r.stderr);
    const [e, l, s] = r.stdout.trim().split('|');
    assert.notEqual(e, real.email);
    assert.match(e!, EMAIL_MASKED);
    assert.ok(!l!.includes(real.email.split('@')[0]), `lower(email) leaked: ${l}`);
    assert.ok(!s!.includes(real.ssn), `ssn || '' leaked: ${s}`);
  });

  test('node-postgres, text and binary results: masked, and every value decodes', async () => {
    const real = (await (await db.connect()).query('SELECT email, card_number, ssn FROM customers WHERE id = $1', [2])).rows[0];
    await withAgent(async (c) => {
      const text = await c.query('SELECT id, email, card_number, ssn FROM customers WHERE id = $1', [2]);
      assert.equal(text.rows[0].id, 2);
      assert.match(text.rows[0].email, EMAIL_MASKED);
      assert.ok(text.rows[0].card_number.endsWith(real.card_number.slice(-4)));
      assert.notEqual(text.rows[0].ssn, real.ssn);
      const bin = await c.query({ text: 'SELECT id, email, card_number, ssn, phone FROM customers WHERE id = $1', values: [2], binary: true } as pg.QueryConfig);
      assert.equal(bin.rows[0].id, 2);
      assert.match(bin.rows[0].email, EMAIL_MASKED);
      assert.ok(bin.rows[0].card_number.endsWith(real.card_number.slice(-4)));
      assert.notEqual(bin.rows[0].ssn, real.ssn);
    });
  });

  test("psql's \\d (catalog queries) works through the bastion", async () => {
    const r = await psql('\\d customers');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /card_number\|text/);
    const l = await psql('\\dt');
    assert.equal(l.code, 0, l.stderr);
    assert.match(l.stdout, /public\|customers\|table/);
  });

  test('a statement repeated with new literals on one connection is masked every time, also after a catalog drop', async () => {
    // The second and later results reuse the first one's resolved columns and row masker (DescMemo
    // in session.ts); DDL through the bastion drops the catalog cache, and with it that reuse.
    const real = new Map<number, { email: string; card_number: string; ssn: string }>();
    for (const r of (await (await db.connect()).query('SELECT id, email, card_number, ssn FROM customers WHERE id <= 12')).rows) real.set(r.id, r);
    await withAgent(async (c) => {
      for (let id = 1; id <= 12; id++) {
        if (id === 7) await c.query('CREATE TABLE IF NOT EXISTS scratch.memo_probe (a int)');
        const row = (await c.query(`SELECT id, email, card_number, ssn FROM customers WHERE id = ${id}`)).rows[0];
        const r = real.get(id)!;
        assert.equal(row.id, id);
        assert.match(row.email, EMAIL_MASKED, `id ${id}`);
        assert.notEqual(row.email, r.email);
        assert.ok(row.card_number.endsWith(r.card_number.slice(-4)) && row.card_number !== r.card_number, `id ${id}: ${row.card_number}`);
        assert.ok(!row.ssn.includes(r.ssn), `id ${id}: ${row.ssn}`);
      }
    });
  });

  test('the catalog cache tells how long its answers stay fresh, and a drop starts a new epoch', async () => {
    const { TargetCatalog } = await import('../src/proxy/postgres/catalog.js');
    const cat = new TargetCatalog({ host: db.host, port: db.port, database: 'shop', user: db.user, password: db.password }, { ttlMs: 5_000 });
    try {
      const oid = Number((await (await db.connect()).query("SELECT 'public.customers'::regclass::oid AS oid")).rows[0].oid);
      assert.equal(cat.freshUntil([oid]), 0, 'nothing cached yet');
      const t0 = Date.now();
      const m = await cat.resolve([oid]);
      assert.equal(m.get(oid)?.table, 'customers');
      const until = cat.freshUntil([oid, 0]);
      assert.ok(until >= t0 + 5_000 && until <= Date.now() + 5_000, `${until - t0}`);
      assert.equal(cat.freshUntil([oid], until + 1), 0, 'expired after the ttl');
      const epoch = cat.epoch;
      cat.invalidate();
      assert.equal(cat.epoch, epoch + 1);
      assert.equal(cat.freshUntil([oid]), 0);
    } finally {
      await cat.close();
    }
  });

  test('a card number anywhere (not a known column) is masked by the detector', async () => {
    const card = (await (await db.connect()).query('SELECT card_number FROM customers WHERE id = 3')).rows[0].card_number as string;
    const r = await psql(`SELECT 'paid with ${card} yesterday' AS note`);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.includes(card), r.stdout);
    assert.ok(r.stdout.includes(card.slice(-4)));
  });
});

describe('denials through the wire', () => {
  const cases: [string, string, string][] = [
    ['DELETE FROM orders', 'no-unbounded-writes', 'DELETE FROM orders'],
    ['UPDATE customers SET name = name', 'no-unbounded-writes', 'UPDATE customers SET name = name'],
    ['WITH d AS (DELETE FROM orders RETURNING 1) SELECT count(*) FROM d', 'no-unbounded-writes', 'WITH d AS (DELETE FROM orders'],
    ['DROP TABLE orders', 'no-ddl-outside-scratch', 'DROP TABLE orders'],
    ['TRUNCATE orders', 'no-ddl-outside-scratch', 'TRUNCATE orders'],
    ["COPY customers TO PROGRAM 'cat > /tmp/x'", 'no-copy-program', "TO PROGRAM 'cat"],
    ["SELECT pg_read_file('/etc/passwd')", 'no-server-file-functions', "pg_read_file('/etc/passwd')"],
    ['SET ROLE postgres', 'no-role-switch', 'SET ROLE postgres'],
    ["DO $$BEGIN PERFORM 1; END$$", 'no-server-escapes', 'PERFORM 1'],
    ["ALTER SYSTEM SET work_mem = '1GB'", 'no-server-escapes', "ALTER SYSTEM SET work_mem"],
    ['SELECT 1; SELECT 2; DELETE FROM orders', 'no-unbounded-writes', 'SELECT 2; DELETE FROM orders'],
  ];
  for (const [sql, rule, marker] of cases) {
    test(`${sql} → 42501 ${rule}, never reaches the server`, async () => {
      await withAgent(async (c) => {
        const e = await rejects(c.query(sql));
        assert.equal(e.code, '42501', e.message);
        assert.match(e.message, new RegExp(`^blocked by policy \\S*postgres\\.yaml:${rule}: `));
        assert.ok(e.detail && e.detail.length > 0);
        // the connection stays usable
        const ok = await c.query('SELECT 1 AS one');
        assert.equal(ok.rows[0].one, 1);
      });
      assert.equal(await db.serverLogContains(marker), false, `the server log shows ${marker}`);
    });
  }

  test('a multi-statement string whose 3rd statement is denied runs nothing', async () => {
    const before = (await (await db.connect()).query("SELECT count(*)::int AS n FROM orders WHERE status = 'proxy-multi'")).rows[0].n;
    const r = await psql("INSERT INTO orders (customer_id, amount, status, created_at) VALUES (1, 1, 'proxy-multi', now()); SELECT 1; UPDATE orders SET status = 'x'");
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /ERROR: {2}blocked by policy \S*postgres\.yaml:no-unbounded-writes/);
    // DETAIL carries the machine-readable outcome (docs/outcome.schema.json).
    assert.match(r.stderr, /DETAIL: {2}\{"code":"policy_denied","effect":"deny","rule":"[^"]*no-unbounded-writes","reason":"UPDATE\/DELETE without WHERE/);
    assert.match(r.stderr, /HINT: {2}add a WHERE clause/);
    const afterN = (await (await db.connect()).query("SELECT count(*)::int AS n FROM orders WHERE status = 'proxy-multi'")).rows[0].n;
    assert.equal(afterN, before);
    assert.equal(await db.serverLogContains("VALUES (1, 1, 'proxy-multi'"), false);
  });

  test('inside BEGIN, a denied statement aborts the transaction exactly like PostgreSQL (25P02 until ROLLBACK)', async () => {
    await withAgent(async (c) => {
      await c.query('BEGIN');
      await c.query("INSERT INTO orders (customer_id, amount, status, created_at) VALUES (1, 1, 'proxy-tx', now())");
      const e = await rejects(c.query('DELETE FROM orders'));
      assert.equal(e.code, '42501');
      const e2 = await rejects(c.query('SELECT 1'));
      assert.equal(e2.code, '25P02');
      await c.query('ROLLBACK');
      const n = await c.query("SELECT count(*)::int AS n FROM orders WHERE status = 'proxy-tx'");
      assert.equal(n.rows[0].n, 0);
    });
  });
});

describe('the session is recorded', () => {
  test('extended protocol: one entry per execution, bound parameters masked', async () => {
    const card = (await (await db.connect()).query('SELECT card_number FROM customers WHERE id = 4')).rows[0].card_number as string;
    await withAgent(async (c) => {
      const r = await c.query('SELECT id FROM customers WHERE card_number = $1', [card]);
      assert.equal(r.rows[0].id, 4);
    });
    const entry = statements.find((s) => s.protocol === 'extended' && s.statement.includes('card_number = $1'));
    assert.ok(entry, 'an extended-protocol statement event');
    assert.equal(entry.rows, 1);
    assert.equal(entry.params?.length, 1);
    assert.ok(!entry.params![0]!.includes(card), `the card number leaked into the transcript: ${entry.params![0]}`);
    assert.ok(entry.params![0]!.endsWith(card.slice(-4)));
  });

  test('statements the client hangs up on stay in the transcript: a refusal, a result left in the middle', async () => {
    // Drivers report an ErrorResponse at once and may send Terminate before the ReadyForQuery that
    // follows it; the bastion then closes the session while the statement is still in flight.
    const hangUp = async (sql: string): Promise<void> => {
      const { sock } = await rawLogin(proxy.port, token);
      const closed = new Promise<void>((r) => sock.once('close', () => r()));
      sock.write(Buffer.concat([encodeQuery(sql), TERMINATE])); // no wait for the answer
      await closed;
    };
    const find = async (sql: string): Promise<StatementEntry> => {
      for (let i = 0; i < 100; i++) {
        const e = statements.find((x) => x.statement === sql);
        if (e) return e;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.fail(`no transcript line for ${sql}`);
    };
    await hangUp('DELETE FROM orders');
    const refused = await find('DELETE FROM orders');
    assert.equal(refused.decision.effect, 'deny');
    assert.match(refused.decision.rule, /no-unbounded-writes/);
    assert.equal(refused.error?.code, '42501');
    assert.match(refused.error?.message ?? '', /blocked by policy/);
    await hangUp('SELECT pg_sleep(1)');
    const cut = await find('SELECT pg_sleep(1)');
    assert.equal(cut.decision.effect, 'allow');
    assert.equal(cut.error?.code, '08006');
    assert.match(cut.error?.message ?? '', /ended before the statement finished/);
  });

  test('transcript lines: statements as audited, decisions, row counts, masked samples', async () => {
    const real = (await (await db.connect()).query('SELECT email FROM customers WHERE id = 5')).rows[0].email as string;
    const r = await psql('SELECT id, email FROM customers WHERE id = 5');
    assert.equal(r.code, 0, r.stderr);
    const entry = statements.find((s) => s.statement.includes('WHERE id = 5') && s.protocol === 'simple');
    assert.ok(entry, 'a statement event');
    assert.ok(coreStatements.includes(entry), 'also on the core event bus');
    assert.equal(entry.decision.effect, 'allow');
    assert.equal(entry.rows, 1);
    assert.ok(entry.sample && entry.sample.length === 1);
    assert.equal(entry.sample[0]![0], '5');
    assert.notEqual(entry.sample[0]![1], real);
    const file = join(dataDir, 'recordings', `${entry.session}.pg.jsonl`);
    // the session closes (and its transcript ends) shortly after psql exits
    for (let i = 0; i < 200 && !(existsSync(file) && readTranscript(file).some((l) => l.type === 'end')); i++) await new Promise((r2) => setTimeout(r2, 50));
    const lines = readTranscript(file);
    assert.equal(lines[0]!.type, 'session');
    assert.ok(lines.some((l) => l.type === 'statement' && l.statement.includes('WHERE id = 5')));
    assert.equal(lines[lines.length - 1]!.type, 'end');
    assert.ok(!readFileSync(file, 'utf8').includes(real), 'no unmasked email in the recording');
  });
});
