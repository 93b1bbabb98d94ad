// The PostgreSQL proxy: extended protocol (named statements re-executed with Bind/Execute only,
// row limits and PortalSuspended, binary results), pipelines with a refused statement, review
// holds, cancel, COPY out, search_path tracking, startup options. Real PostgreSQL, the reference
// policy, real psql / pgbench / node-postgres, and a raw protocol client for what no driver here
// does exactly (JDBC-style re-execution without Describe, row-limited Execute).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
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
import { startPostgresProxy, type PostgresProxy } from '../src/proxy/postgres/index.js';
import {
  B,
  FrameReader,
  SYNC,
  decodeCommandComplete,
  decodeDataRow,
  decodeNoticeFields,
  encodeBind,
  encodeCancelRequest,
  encodeCopyData,
  encodeDescribe,
  encodeExecute,
  encodeParse,
  encodePasswordMessage,
  encodeQuery,
  encodeStartupMessage,
  emptyBackendMessage,
  noticeField,
  type Frame,
} from '../src/proxy/postgres/codec.js';
import { withPostgres } from './harness/pg.js';

const db = withPostgres({ logStatements: true });
const log = createLogger('error', () => undefined);

let root: string;
let dataDir: string;
let store: Store;
let core: Core;
let proxy: PostgresProxy;
let token: string;

before(async () => {
  await initFacts();
  root = mkdtempSync(join(tmpdir(), 'pc-pgproxy-ext-'));
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
    authenticate: async (user, password) => {
      const rec = await verifyApiToken(store, password, Date.now());
      if (rec.subject !== user) throw new IdentityError('subject_mismatch', `the token belongs to ${rec.subject}, not ${user}`);
      return { subject: rec.subject, groups: rec.groups, authMethod: 'api-token' };
    },
    targets: (name) => (name === 'shop' ? { host: db.host, port: db.port, database: 'shop', user: db.user, password: db.password } : undefined),
  });
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

function run(cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 60_000, onSpawn?: (kill: (sig: NodeJS.Signals) => void) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { PATH: process.env.PATH ?? '', PGPASSWORD: token, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '10', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    onSpawn?.((sig) => child.kill(sig));
  });
}

function psql(sql: string, env: Record<string, string> = {}, onSpawn?: (kill: (sig: NodeJS.Signals) => void) => void): Promise<Run> {
  return run('psql', ['-X', '-A', '-t', '-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'demo-agent', '-d', 'shop', '-c', sql], env, 60_000, onSpawn);
}

async function direct<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: db.connectionString() });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function withAgent<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'demo-agent', password: token, database: 'shop' });
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function rejects(p: Promise<unknown>): Promise<Error & { code?: string; detail?: string }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string };
  }
  assert.fail('expected the query to fail');
}

/** A minimal protocol client over the codec: send frames, read frames. */
class Raw {
  private readonly reader = new FrameReader();
  private waiters: (() => void)[] = [];
  closed = false;
  key: { pid: number; secret: Buffer } | null = null;
  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.reader.push(d);
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    sock.on('error', () => undefined);
  }
  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
  static async connect(params: [string, string][] = []): Promise<Raw> {
    const sock = net.connect({ host: '127.0.0.1', port: proxy.port });
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', () => resolve());
      sock.once('error', reject);
    });
    const r = new Raw(sock);
    sock.write(encodeStartupMessage([['user', 'demo-agent'], ['database', 'shop'], ...params]));
    const auth = await r.next();
    assert.equal(auth.type, B.Authentication);
    sock.write(encodePasswordMessage(token));
    const login = await r.until(B.ReadyForQuery);
    const k = login.find((f) => f.type === B.BackendKeyData);
    if (k) r.key = { pid: k.body.readInt32BE(0), secret: Buffer.from(k.body.subarray(4)) };
    return r;
  }
  async next(timeoutMs = 20_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.reader.next();
      if (f) return { type: f.type, body: Buffer.from(f.body), raw: Buffer.from(f.raw) };
      if (this.closed) throw new Error('connection closed');
      if (Date.now() > deadline) throw new Error('timed out waiting for a message');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 100);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
  /** Frames up to and including the first of type `type`. */
  async until(type: number): Promise<Frame[]> {
    const out: Frame[] = [];
    for (let i = 0; i < 100_000; i++) {
      const f = await this.next();
      out.push(f);
      if (f.type === type) return out;
    }
    throw new Error('too many frames');
  }
  send(...bufs: Buffer[]): void {
    this.sock.write(Buffer.concat(bufs));
  }
  close(): void {
    this.sock.destroy();
  }
}

const types = (fs: Frame[]): string => fs.map((f) => String.fromCharCode(f.type)).join('');
const errorOf = (fs: Frame[]): { code?: string; message?: string } => {
  const e = fs.find((f) => f.type === B.ErrorResponse);
  if (!e) return {};
  const fields = decodeNoticeFields(e.body);
  return { code: noticeField(fields, 'C'), message: noticeField(fields, 'M') };
};

describe('extended protocol', () => {
  test('a denied statement (node-postgres, Parse) → 42501, then the same connection works', async () => {
    await withAgent(async (c) => {
      const e = await rejects(c.query('UPDATE orders SET status = $1', ['ext-denied']));
      assert.equal(e.code, '42501');
      assert.match(e.message, /no-unbounded-writes/);
      const r = await c.query('SELECT $1::int + 1 AS n', [41]);
      assert.equal(r.rows[0].n, 42);
    });
    assert.equal(await db.serverLogContains('UPDATE orders SET status = $1'), false);
  });

  test('a named statement re-executed with Bind/Execute only (binary results) stays masked', async () => {
    const real = await direct(async (c) => (await c.query('SELECT email, card_number FROM customers WHERE id = 7')).rows[0]);
    const r = await Raw.connect();
    try {
      r.send(encodeParse('S_1', 'SELECT id, email, card_number FROM customers WHERE id = $1', [23]), encodeDescribe('S', 'S_1'), SYNC);
      const described = await r.until(B.ReadyForQuery);
      assert.equal(types(described), '1tTZ');
      for (let round = 0; round < 3; round++) {
        const p = Buffer.alloc(4);
        p.writeInt32BE(7);
        r.send(encodeBind('', 'S_1', [p], [1], [1]), encodeExecute('', 0), SYNC);
        const fs = await r.until(B.ReadyForQuery);
        assert.equal(types(fs), '2DCZ', `round ${round}`);
        const row = decodeDataRow(fs[1]!.body);
        assert.equal(row[0]!.readInt32BE(0), 7);
        const email = row[1]!.toString('utf8');
        const card = row[2]!.toString('utf8');
        assert.notEqual(email, real.email);
        assert.match(email, /^[^@*]\*+@/);
        assert.ok(card.endsWith(real.card_number.slice(-4)) && !card.includes(real.card_number.slice(0, 6)));
      }
    } finally {
      r.close();
    }
  });

  test("JDBC's first statement (SET application_name, extended protocol) runs and is reported", async () => {
    const r = await Raw.connect();
    try {
      r.send(encodeParse('', "SET application_name = 'PostgreSQL JDBC Driver'"), encodeBind('', ''), encodeExecute('', 1), SYNC);
      const fs = await r.until(B.ReadyForQuery);
      assert.match(types(fs), /^12CS?Z$/);
      r.send(encodeQuery("SELECT current_setting('application_name')"));
      const q = await r.until(B.ReadyForQuery);
      assert.equal(decodeDataRow(q.find((f) => f.type === B.DataRow)!.body)[0]!.toString(), 'PostgreSQL JDBC Driver');
    } finally {
      r.close();
    }
  });

  test('column types stay valid: a card number found in an int8 is NULL, other int8 columns keep their type', async () => {
    await withAgent(async (c) => {
      for (const binary of [false, true]) {
        const r = await c.query({ text: 'SELECT 4111111111111111::int8 AS card, 42::int8 AS n, $1::text AS t', values: ['x'], binary } as pg.QueryConfig);
        assert.equal(r.fields[0]!.dataTypeID, 20);
        assert.equal(r.fields[1]!.dataTypeID, 20);
        assert.equal(r.rows[0].card, null, `binary ${binary}`);
        assert.equal(String(r.rows[0].n), '42');
      }
      const text = await c.query("SELECT 'card 4111111111111111 here' AS note");
      assert.equal(text.rows[0].note, 'card ************1111 here');
    });
  });

  test('a cursor fetched in chunks (Execute with a row limit, PortalSuspended) is masked in every chunk', async () => {
    const real = await direct(async (c) => (await c.query('SELECT email FROM customers WHERE id <= 5 ORDER BY id')).rows.map((x) => x.email as string));
    const r = await Raw.connect();
    try {
      r.send(encodeQuery('BEGIN'));
      await r.until(B.ReadyForQuery);
      r.send(encodeParse('', 'SELECT email FROM customers WHERE id <= 5 ORDER BY id'), encodeBind('c1', '', [], [], [0]), encodeDescribe('P', 'c1'), encodeExecute('c1', 2), SYNC);
      const first = await r.until(B.ReadyForQuery);
      assert.equal(types(first), '12TDDsZ');
      r.send(encodeExecute('c1', 2), SYNC);
      const second = await r.until(B.ReadyForQuery);
      assert.equal(types(second), 'DDsZ');
      r.send(encodeExecute('c1', 2), SYNC);
      const third = await r.until(B.ReadyForQuery);
      assert.equal(types(third), 'DCZ');
      assert.equal(decodeCommandComplete(third[1]!.body), 'SELECT 1');
      const emails = [...first, ...second, ...third].filter((f) => f.type === B.DataRow).map((f) => decodeDataRow(f.body)[0]!.toString('utf8'));
      assert.equal(emails.length, 5);
      emails.forEach((e, i) => {
        assert.notEqual(e, real[i]);
        assert.match(e, /^[^@*]\*+@/);
      });
      r.send(encodeQuery('COMMIT'));
      await r.until(B.ReadyForQuery);
    } finally {
      r.close();
    }
  });

  test('a pipeline whose 2nd statement is refused leaves the database unchanged (pgbench \\startpipeline)', async () => {
    const script = join(root, 'pipeline.sql');
    writeFileSync(
      script,
      [
        '\\startpipeline',
        "INSERT INTO orders (customer_id, amount, status, created_at) VALUES (1, 1, 'pipe-first', now());",
        'DELETE FROM orders;',
        "INSERT INTO orders (customer_id, amount, status, created_at) VALUES (1, 1, 'pipe-third', now());",
        '\\endpipeline',
        '',
      ].join('\n'),
    );
    const r = await run('pgbench', ['-n', '-t', '1', '-M', 'extended', '-f', script, '-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'demo-agent', 'shop']);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, /blocked by policy \S*:no-unbounded-writes/);
    const n = await direct(async (c) => (await c.query("SELECT count(*)::int AS n FROM orders WHERE status IN ('pipe-first', 'pipe-third')")).rows[0].n as number);
    assert.equal(n, 0, 'nothing of the pipeline committed');
    assert.equal(await db.serverLogContains('DELETE FROM orders;'), false);
    // the first statement did reach the server (and was rolled back with the pipeline)
    assert.equal(await db.serverLogContains("VALUES (1, 1, 'pipe-first'"), true);
  });

  test('raw pipeline: after the refused statement the error state lasts until Sync, then the connection works', async () => {
    const r = await Raw.connect();
    try {
      r.send(
        encodeParse('', "INSERT INTO orders (customer_id, amount, status, created_at) VALUES (2, 2, 'raw-pipe', now())"),
        encodeBind('', ''),
        encodeExecute(''),
        encodeParse('', 'UPDATE customers SET name = name'),
        encodeBind('', ''),
        encodeExecute(''),
        encodeParse('', 'SELECT 1'),
        encodeBind('', ''),
        encodeExecute(''),
        SYNC,
      );
      const fs = await r.until(B.ReadyForQuery);
      assert.equal(types(fs), '12CEZ');
      assert.equal(errorOf(fs).code, '42501');
      assert.equal(fs[fs.length - 1]!.body.toString('latin1'), 'I');
      r.send(encodeQuery("SELECT count(*) FROM orders WHERE status = 'raw-pipe'"));
      const after2 = await r.until(B.ReadyForQuery);
      assert.equal(decodeDataRow(after2.find((f) => f.type === B.DataRow)!.body)[0]!.toString(), '0');
    } finally {
      r.close();
    }
  });
});

describe('review holds', () => {
  test('review → held → approved → runs', async () => {
    const id = await direct(async (c) => (await c.query("INSERT INTO customers (name, email) VALUES ('held-approve', 'h@example.com') RETURNING id")).rows[0].id as number);
    const created = new Promise<string>((resolve) => core.approvals.once('created', (rec) => resolve(rec.id)));
    const notices: string[] = [];
    await withAgent(async (c) => {
      c.on('notice', (n) => notices.push(n.message ?? ''));
      await c.query("SET portcullis.reason = 'cleanup of test customer'");
      const q = c.query('DELETE FROM customers WHERE id = $1', [id]);
      const approvalId = await created;
      const rec = await store.approvals.get(approvalId);
      assert.equal((rec as unknown as { justification?: string }).justification, 'cleanup of test customer');
      await core.approvals.decide(approvalId, 'approved', 'oncall-user');
      const res = await q;
      assert.equal(res.rowCount, 1);
      assert.ok(notices.some((n) => n.startsWith(`portcullis: held for approval ${approvalId} (`) && n.includes('delete-customers-needs-approval')), notices.join('\n'));
    });
    const left = await direct(async (c) => (await c.query('SELECT count(*)::int AS n FROM customers WHERE id = $1', [id])).rows[0].n as number);
    assert.equal(left, 0);
  });

  test('review → denied → 42501, nothing reaches the server', async () => {
    const id = await direct(async (c) => (await c.query("INSERT INTO customers (name, email) VALUES ('held-deny', 'd@example.com') RETURNING id")).rows[0].id as number);
    const created = new Promise<string>((resolve) => core.approvals.once('created', (rec) => resolve(rec.id)));
    const sql = `DELETE FROM customers WHERE id = ${id} AND name = 'held-deny'`;
    const p = psql(sql, { PGOPTIONS: '-c portcullis.reason=testing\\ denial' });
    const approvalId = await created;
    const rec = await store.approvals.get(approvalId);
    assert.equal((rec as unknown as { justification?: string }).justification, 'testing denial');
    await core.approvals.decide(approvalId, 'denied', 'oncall-user', 'not now');
    const r = await p;
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /ERROR: {2}blocked by policy \S*:delete-customers-needs-approval/);
    assert.match(r.stderr, new RegExp(`approval ${approvalId} was denied by oncall-user: not now`));
    assert.equal(await db.serverLogContains("name = 'held-deny'"), false);
    const left = await direct(async (c) => (await c.query('SELECT count(*)::int AS n FROM customers WHERE id = $1', [id])).rows[0].n as number);
    assert.equal(left, 1);
  });
});

describe('more protocol paths', () => {
  test('COPY … FROM STDIN through the bastion', async () => {
    const r = await Raw.connect();
    try {
      r.send(encodeQuery('COPY orders (customer_id, amount, status, created_at) FROM STDIN'));
      const start = await r.until(B.CopyInResponse);
      assert.equal(types(start), 'G');
      r.send(encodeCopyData(Buffer.from('3\t9.99\tcopy-in\t2024-01-01\n3\t1.00\tcopy-in\t2024-01-02\n')), emptyBackendMessage(0x63));
      const done = await r.until(B.ReadyForQuery);
      assert.equal(decodeCommandComplete(done.find((f) => f.type === B.CommandComplete)!.body), 'COPY 2');
    } finally {
      r.close();
    }
    const n = await direct(async (c) => (await c.query("SELECT count(*)::int AS n FROM orders WHERE status = 'copy-in'")).rows[0].n as number);
    assert.equal(n, 2);
  });

  test('COPY … TO STDOUT in the extended protocol is masked too', async () => {
    const real = await direct(async (c) => (await c.query('SELECT email FROM customers ORDER BY id LIMIT 3')).rows.map((x) => x.email as string));
    const r = await Raw.connect();
    try {
      r.send(encodeParse('', 'COPY (SELECT email FROM customers ORDER BY id LIMIT 3) TO STDOUT'), encodeBind('', ''), encodeExecute(''), SYNC);
      const fs = await r.until(B.ReadyForQuery);
      assert.equal(types(fs), '12HdddcCZ');
      const lines = fs.filter((f) => f.type === B.CopyData).map((f) => f.body.toString('utf8').trim());
      lines.forEach((l, i) => {
        assert.notEqual(l, real[i]);
        assert.match(l, /^[^@*]\*+@/);
      });
    } finally {
      r.close();
    }
  });

  test('cancel while held for approval: 57014 with approval_required; the approval stays pending for a retry', async () => {
    const created = new Promise<string>((resolve) => core.approvals.once('created', (rec) => resolve(rec.id)));
    const r = await Raw.connect();
    try {
      r.send(encodeQuery('DELETE FROM customers WHERE id = 424242'));
      const id = await created;
      const c = net.connect({ host: '127.0.0.1', port: proxy.port });
      await new Promise<void>((resolve) => c.once('connect', () => resolve()));
      c.end(encodeCancelRequest(r.key!.pid, r.key!.secret));
      const fs = await r.until(B.ReadyForQuery);
      assert.equal(errorOf(fs).code, '57014');
      const pending = await store.approvals.get(id);
      assert.equal(pending?.state, 'pending');
      assert.ok(pending?.detachedAt, 'marked as not waited for');
      await core.approvals.decide(id, 'denied', 'demo-oncall', 'test clean-up');
      r.send(encodeQuery('SELECT 1'));
      assert.equal(types(await r.until(B.ReadyForQuery)), 'TDCZ');
    } finally {
      r.close();
    }
  });

  test('GSSENCRequest is declined and a 3.2 startup is negotiated down to 3.0', async () => {
    const sock = net.connect({ host: '127.0.0.1', port: proxy.port });
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    const reader = new FrameReader();
    const got: Buffer[] = [];
    sock.on('data', (d: Buffer) => got.push(d));
    const gss = Buffer.alloc(8);
    gss.writeInt32BE(8, 0);
    gss.writeInt32BE(80877104, 4);
    sock.write(gss);
    for (let i = 0; i < 50 && got.length === 0; i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(Buffer.concat(got).toString('latin1'), 'N');
    got.length = 0;
    const startup = encodeStartupMessage([['user', 'demo-agent'], ['database', 'shop'], ['_pq_.test_option', 'x']]);
    startup.writeInt32BE((3 << 16) | 2, 4);
    sock.write(startup);
    for (let i = 0; i < 50 && got.length === 0; i++) await new Promise((res) => setTimeout(res, 20));
    reader.push(Buffer.concat(got));
    const v = reader.next()!;
    assert.equal(String.fromCharCode(v.type), 'v');
    assert.equal(v.body.readInt32BE(0), 0);
    assert.equal(v.body.readInt32BE(4), 1);
    assert.equal(v.body.toString('utf8', 8, v.body.length - 1), '_pq_.test_option');
    const auth = reader.next()!;
    assert.equal(auth.type, B.Authentication);
    sock.destroy();
  });
});

describe('cancel, COPY, search_path, startup settings', () => {
  test('psql ^C cancels a long pg_sleep through the bastion', async () => {
    const started = Date.now();
    let kill: ((s: NodeJS.Signals) => void) | undefined;
    const p = psql('SELECT pg_sleep(30)', {}, (k) => (kill = k));
    // wait until the statement runs upstream
    for (let i = 0; i < 100; i++) {
      const running = await direct(async (c) => (await c.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")).rows[0].n as number);
      if (running > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    kill!('SIGINT');
    const r = await p;
    assert.match(r.stderr, /canceling statement due to user request/);
    assert.ok(Date.now() - started < 20_000);
  });

  test('COPY customers TO STDOUT (text and CSV with header) is masked', async () => {
    const real = await direct(async (c) => (await c.query('SELECT email, card_number, ssn FROM customers ORDER BY id LIMIT 50')).rows);
    const text = await psql('COPY (SELECT id, email, card_number, ssn FROM customers ORDER BY id LIMIT 50) TO STDOUT');
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trim().split('\n');
    assert.equal(lines.length, 50);
    lines.forEach((l, i) => {
      const [, email, card, ssn] = l.split('\t');
      assert.match(email!, /^[^@*]\*+@/);
      assert.ok(card!.endsWith(real[i].card_number.slice(-4)) && card !== real[i].card_number);
      assert.notEqual(ssn, real[i].ssn);
    });
    const csv = await psql('COPY customers (id, email, card_number) TO STDOUT WITH (FORMAT csv, HEADER true)');
    assert.equal(csv.code, 0, csv.stderr);
    const rows = csv.stdout.trim().split('\n');
    assert.equal(rows[0], 'id,email,card_number');
    const all = await direct(async (c) => (await c.query('SELECT email, card_number FROM customers')).rows);
    for (const row of all) {
      assert.ok(!csv.stdout.includes(row.email), `email ${row.email} leaked`);
      assert.ok(!csv.stdout.includes(row.card_number), `card leaked`);
    }
    // a COPY that fails reports its error once (the bastion's describe of it stays silent)
    const bad = await psql('COPY (SELECT nosuchcol FROM customers) TO STDOUT');
    assert.notEqual(bad.code, 0);
    assert.equal(bad.stderr.match(/column "nosuchcol" does not exist/g)?.length, 1, bad.stderr);
  });

  test('search_path is followed: scratch DDL allowed, and a rolled-back SET does not fool the policy', async () => {
    await withAgent(async (c) => {
      await c.query('SET search_path = scratch');
      await c.query('CREATE TABLE sp_ok (x int)');
      await c.query('RESET search_path');
      await c.query('BEGIN');
      await c.query('SAVEPOINT a');
      await c.query('SET search_path = scratch');
      await c.query('ROLLBACK TO a');
      const e = await rejects(c.query('CREATE TABLE sp_bad (x int)'));
      assert.equal(e.code, '42501', 'the real search_path is back to public');
      await c.query('ROLLBACK');
      // inside a transaction, a SET that succeeded is followed exactly
      await c.query('BEGIN');
      await c.query('SET search_path = scratch');
      await c.query('CREATE TABLE sp_tx (x int)');
      await c.query('COMMIT');
      // SET LOCAL ends with its transaction
      await c.query('RESET search_path');
      await c.query('BEGIN');
      await c.query('SET LOCAL search_path = scratch');
      await c.query('COMMIT');
      const e2 = await rejects(c.query('CREATE TABLE sp_local (x int)'));
      assert.equal(e2.code, '42501', 'after COMMIT the SET LOCAL is gone');
      // a path confirmed inside a transaction does not survive its ROLLBACK
      await c.query('BEGIN');
      await c.query('SAVEPOINT b');
      await c.query('SET search_path = scratch');
      await c.query('RELEASE SAVEPOINT b');
      await c.query('SAVEPOINT c');
      await c.query('ROLLBACK TO SAVEPOINT c');
      await c.query('CREATE TABLE sp_in_tx (x int)');
      await c.query('ROLLBACK');
      const e3 = await rejects(c.query('CREATE TABLE sp_after_rollback (x int)'));
      assert.equal(e3.code, '42501', 'after ROLLBACK the path is public again');
    });
    const where = await direct(async (c) => (await c.query("SELECT table_name, table_schema FROM information_schema.tables WHERE table_name IN ('sp_ok', 'sp_bad', 'sp_tx', 'sp_local') ORDER BY 1")).rows.map((r) => `${r.table_schema}.${r.table_name}`));
    assert.deepEqual(where, ['scratch.sp_ok', 'scratch.sp_tx']);
  });

  test('pipelined statements after a search_path change are decided safely', async () => {
    const r = await Raw.connect();
    try {
      // simple protocol: the SET is rolled back with its failing string; the next one waits for that
      r.send(encodeQuery('SET search_path = scratch; SELECT 1/0'), encodeQuery('CREATE TABLE pipe_sp (x int)'));
      assert.equal(errorOf(await r.until(B.ReadyForQuery)).code, '22012');
      assert.equal(errorOf(await r.until(B.ReadyForQuery)).code, '42501');
      // extended protocol, one pipeline: decided under both possible paths, the stricter wins
      r.send(encodeParse('', 'SET search_path = scratch'), encodeBind('', ''), encodeExecute(''), encodeParse('', 'CREATE TABLE pipe_sp2 (x int)'), encodeBind('', ''), encodeExecute(''), SYNC);
      const fs = await r.until(B.ReadyForQuery);
      assert.equal(errorOf(fs).code, '42501');
    } finally {
      r.close();
    }
    const n = await direct(async (c) => (await c.query("SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name IN ('pipe_sp', 'pipe_sp2')")).rows[0].n as number);
    assert.equal(n, 0);
  });

  test('startup settings are decided like SET: -c role=… refuses the connection', async () => {
    const r = await psql('SELECT 1', { PGOPTIONS: '-c role=postgres' });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /FATAL: {2}blocked by policy \S*:no-role-switch/);
  });

  test('standard_conforming_strings cannot be turned off (the bastion parses with it on)', async () => {
    const r = await psql('SET standard_conforming_strings = off');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /no-lexer-settings|standard_conforming_strings must stay on/);
    const r2 = await psql('SELECT 1', { PGOPTIONS: '-c standard_conforming_strings=off' });
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /standard_conforming_strings must stay on/);
    // set_config() is a function call, not a SET: refused by the proxy itself, even pipelined
    // with a statement that the server would read differently once the setting is off.
    const raw = await Raw.connect();
    try {
      raw.send(encodeQuery("SELECT set_config('standard_conforming_strings', 'off', false)"), encodeQuery("SELECT '\\'\n'; DROP TABLE orders; --'"));
      const first = await raw.until(B.ReadyForQuery);
      assert.equal(errorOf(first).code, '0A000');
      const second = await raw.until(B.ReadyForQuery);
      assert.equal(errorOf(second).code, undefined);
    } finally {
      raw.close();
    }
    const orders = await direct(async (c) => (await c.query("SELECT to_regclass('public.orders') IS NOT NULL AS ok")).rows[0].ok as boolean);
    assert.equal(orders, true);
    assert.equal(await db.serverLogContains("set_config('standard_conforming_strings'"), false);
  });
});

describe('pgbench through the bastion', () => {
  test('pgbench -S, simple and -M prepared, 2 clients, bounded by -t', async () => {
    const init = await run('pgbench', ['-i', '-s', '1', '-q', db.connectionString()], { PGPASSWORD: db.password });
    assert.equal(init.code, 0, init.stderr);
    for (const mode of ['simple', 'prepared']) {
      const r = await run('pgbench', ['-n', '-S', '-M', mode, '-c', '2', '-j', '2', '-t', '300', '-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'demo-agent', 'shop']);
      assert.equal(r.code, 0, `${mode}: ${r.stderr}`);
      assert.match(r.stdout, /number of transactions actually processed: 600\/600/);
      assert.match(r.stdout, /number of failed transactions: 0/);
    }
  });
});
