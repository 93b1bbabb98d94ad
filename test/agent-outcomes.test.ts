// Agent-native outcomes end to end, through the real PostgreSQL proxy with real clients (psql,
// node-postgres) against a real PostgreSQL, a real core, the real control socket and CLI:
// machine-readable outcomes in DETAIL (validated against docs/outcome.schema.json), required
// reasons, statement-bound approvals (reuse within the expiry, held again after), the two-person
// rule, approval webhooks (a real local HTTP server), damage budgets.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import type pg from 'pg';
import { initFacts } from '../src/policy/actions.js';
import type { ApprovalRecord } from '../src/store/types.js';
import { withPostgres } from './harness/pg.js';
import { detailOutcome, psqlOutcome, rejection, startAgentBastion, waitFor, type AgentBastion, type Run } from './harness/agent-bastion.js';

const db = withPostgres({ logStatements: true });
const schema = JSON.parse(readFileSync('docs/outcome.schema.json', 'utf8')) as object;
const validateOutcome = new Ajv({ allErrors: true, strict: true, strictRequired: false }).compile(schema);

function valid(o: Record<string, unknown>): Record<string, unknown> {
  assert.ok(validateOutcome(o), `outcome ${JSON.stringify(o)} does not match the schema: ${JSON.stringify(validateOutcome.errors)}`);
  return o;
}

function cli(args: string[], timeoutMs = 30_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['dist/src/cli/main.js', ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Runs a query on a fresh client; resolves with the hold notice's outcome as soon as it is held. */
async function heldQuery(b: AgentBastion, sql: string, subject = 'demo-agent', setup: string[] = []): Promise<{ client: pg.Client; result: Promise<pg.QueryResult>; outcome: Record<string, unknown> }> {
  const client = await b.client(subject);
  for (const s of setup) await client.query(s);
  let onHeld!: (o: Record<string, unknown>) => void;
  const held = new Promise<Record<string, unknown>>((r) => (onHeld = r));
  client.on('notice', (n) => {
    if (n.detail?.startsWith('{')) onHeld(JSON.parse(n.detail) as Record<string, unknown>);
  });
  const result = client.query(sql);
  result.catch(() => undefined);
  const outcome = await Promise.race([held, result.then(() => assert.fail(`"${sql}" was not held`))]);
  return { client, result, outcome };
}

async function approvalCount(b: AgentBastion): Promise<number> {
  return (await b.core.approvals.list()).length;
}

const EXTRAS = {
  // Sorted before postgres.yaml: its review rules are the ones the engine picks first.
  'aa-extras.yaml': `
version: 1
scope: { protocol: postgres, targets: [shop], groups: [agents] }
rules:
  - id: orders-delete-needs-reason
    effect: review
    when: { subjects: [demo-agent] }
    sql: { action: delete, relation: public.orders }
    require_reason: { min_length: 10 }
    reason: deleting orders needs an on-call approval
  - id: customers-update-two-person
    effect: review
    sql: { action: update, relation: public.customers }
    approvers: 2
    reason: changing customers needs two approvers
  - id: analytics-delete-quick
    effect: review
    sql: { action: delete, schema: analytics }
    approval_timeout: 1s
    reason: deleting analytics needs a quick approval
budgets:
  - id: budget-agent-deletes
    when: { subjects: [budget-agent] }
    per: day
    limits: { rows_deleted: 10 }
    effect: deny
  - id: rate-agent-rate
    when: { subjects: [rate-agent] }
    per: session
    limits: { statements_per_minute: 3 }
  - id: reader-bytes
    when: { subjects: [reader-agent] }
    per: day
    limits: { bytes_returned: 1000 }
`,
};

describe('outcomes, reasons, approvals and budgets through PostgreSQL', () => {
  let b: AgentBastion;
  let hooks: Server;
  const deliveries: { headers: Record<string, string | string[] | undefined>; body: string }[] = [];
  const seenIds = new Set<string>();

  before(async () => {
    await initFacts();
    // The approval webhook: a real HTTP server that fails each delivery's first attempt.
    hooks = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        deliveries.push({ headers: req.headers, body });
        const id = String(req.headers['x-portcullis-delivery']);
        if (!seenIds.has(id)) {
          seenIds.add(id);
          res.writeHead(503).end('try again');
        } else res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => hooks.listen(0, '127.0.0.1', () => r()));
    const port = (hooks.address() as AddressInfo).port;
    b = await startAgentBastion(db, EXTRAS, { webhook: { url: `http://127.0.0.1:${port}/hooks/portcullis?token=not-logged`, secret: 'hook-secret' } });
  });
  after(async () => {
    await b?.close();
    await new Promise<void>((r) => hooks.close(() => r()));
  });

  test('webhook: created and decided approvals are POSTed as signed JSON, retried after a failure', async () => {
    const h = await heldQuery(b, 'DELETE FROM customers WHERE id = 907');
    const id = String(h.outcome.approval_id);
    await b.core.approvals.decide(id, 'denied', 'demo-oncall', 'no');
    await rejection(h.result);
    const mine = () => deliveries.filter((d) => (JSON.parse(d.body) as { approval: { id: string } }).approval.id === id);
    await waitFor('both notifications delivered after a retry', () => mine().length === 4, 20_000);
    const got = mine();
    for (const d of got) {
      const sig = createHmac('sha256', 'hook-secret').update(d.body).digest('hex');
      assert.equal(d.headers['x-portcullis-signature'], `sha256=${sig}`);
      assert.equal(d.headers['content-type'], 'application/json');
    }
    const bodies = got.map((d) => JSON.parse(d.body) as { type: string; id: string; text: string; approval: Record<string, unknown> });
    const created = bodies.filter((x) => x.type === 'approval.created');
    const decided = bodies.filter((x) => x.type === 'approval.decided');
    assert.equal(created.length, 2, 'first attempt failed (503), second delivered');
    assert.equal(created[0]!.id, created[1]!.id, 'a retry is the same delivery');
    assert.equal(decided.length, 2);
    assert.equal(decided[1]!.approval.state, 'denied');
    assert.equal(decided[1]!.approval.decidedBy, 'demo-oncall');
    assert.match(created[1]!.text, /demo-agent → shop \(postgres\) asks to run `DELETE FROM customers WHERE id = 907`/);
    assert.equal((created[1]!.approval.identity as { subject: string }).subject, 'demo-agent');
  });

  test('denials carry a schema-valid outcome in DETAIL (node-postgres and psql); MESSAGE stays human', async () => {
    const c = await b.client();
    const e = await rejection(c.query('DELETE FROM orders'));
    assert.equal(e.code, '42501');
    assert.match(e.message, /^blocked by policy \S+postgres\.yaml:no-unbounded-writes: UPDATE\/DELETE without WHERE on public\.orders$/);
    const o = valid(detailOutcome(e));
    assert.equal(o.code, 'policy_denied');
    assert.equal(o.effect, 'deny');
    assert.match(String(o.rule), /postgres\.yaml:no-unbounded-writes$/);
    assert.equal(o.remedy, 'add a WHERE clause');

    const u = await rejection(c.query('SELEC 1 FROM orders'));
    const uo = valid(detailOutcome(u));
    assert.equal(uo.code, 'unparseable');
    assert.equal(uo.rule, 'default-deny');

    const r = await b.psql('DROP TABLE orders');
    assert.notEqual(r.code, 0);
    const po = valid(psqlOutcome(r.stderr));
    assert.equal(po.code, 'policy_denied');
    assert.match(String(po.rule), /no-ddl-outside-scratch$/);
    assert.equal((await (await db.connect()).query("SELECT to_regclass('public.orders') IS NOT NULL AS ok")).rows[0].ok, true);
  });

  test('holds: the notice says approval_required; denied and expired holds say approval_denied / approval_expired', async () => {
    const h = await heldQuery(b, 'DELETE FROM customers WHERE id = 901');
    valid(h.outcome);
    assert.equal(h.outcome.code, 'approval_required');
    assert.equal(h.outcome.effect, 'review');
    assert.match(String(h.outcome.approval_id), /^[a-z2-9]{10}$/);
    await b.core.approvals.decide(String(h.outcome.approval_id), 'denied', 'demo-oncall', 'not today');
    const e = await rejection(h.result);
    const o = valid(detailOutcome(e));
    assert.equal(o.code, 'approval_denied');
    assert.equal(o.effect, 'deny');
    assert.equal(o.approval_id, h.outcome.approval_id);
    assert.match(e.message, /was denied by demo-oncall: not today/);

    const x = await heldQuery(b, 'DELETE FROM analytics.daily_sales WHERE day < now()');
    const xe = await rejection(x.result);
    const xo = valid(detailOutcome(xe));
    assert.equal(xo.code, 'approval_expired');
    assert.equal(xo.approval_id, x.outcome.approval_id);
    assert.equal((await b.core.approvals.get(String(x.outcome.approval_id)))?.state, 'expired');
  });

  test('a hold without the required reason is refused (reason_required); with one it is held, audited and shown to approvers', async () => {
    const before = await approvalCount(b);
    const c = await b.client();
    const e = await rejection(c.query('DELETE FROM orders WHERE id = 11'));
    const o = valid(detailOutcome(e));
    assert.equal(o.code, 'reason_required');
    assert.equal(o.effect, 'deny');
    assert.match(String(o.rule), /aa-extras\.yaml:orders-delete-needs-reason$/);
    assert.match(String(o.remedy), /SET portcullis\.reason/);
    await c.query("SET portcullis.reason = 'short'");
    const e2 = await rejection(c.query('DELETE FROM orders WHERE id = 11'));
    assert.equal(valid(detailOutcome(e2)).code, 'reason_required');
    assert.match(String(detailOutcome(e2).reason), /at least 10 characters, got 5/);
    assert.equal(await approvalCount(b), before, 'no approval was created');

    // SET portcullis.reason, then the statement: held, the reason is on the approval and in the audit.
    const h = await heldQuery(b, 'DELETE FROM orders WHERE id = 12', 'demo-agent', ["SET portcullis.reason = 'archiving a duplicate order'"]);
    const id = String(h.outcome.approval_id);
    assert.equal((await b.core.approvals.get(id))?.justification, 'archiving a duplicate order');
    const listed = await cli(['approvals', '--socket', b.socket]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, new RegExp(`${id}\\s+pending.*\\n.*\\n\\s+agent's reason: archiving a duplicate order`));
    const ok = await cli(['approve', id, '--socket', b.socket, '--reason', 'fine']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((await h.result).rowCount, 1);

    // The startup option (PGOPTIONS) works as well.
    const created = new Promise<ApprovalRecord>((r) => b.core.approvals.once('created', r));
    const run = b.psql('DELETE FROM orders WHERE id = 13', { env: { PGOPTIONS: '-c portcullis.reason=duplicate\\ order\\ 13' } });
    const rec = await created;
    assert.equal(rec.justification, 'duplicate order 13');
    await b.core.approvals.decide(rec.id, 'approved', 'demo-oncall');
    const r = await run;
    assert.equal(r.code, 0, r.stderr);
    const audit = readFileSync(join(b.dataDir, 'audit', 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string; request?: { sql?: string; reason?: string } });
    assert.ok(audit.some((ev) => ev.type === 'request' && ev.request?.sql === 'DELETE FROM orders WHERE id = 12' && ev.request.reason === 'archiving a duplicate order'));
    assert.ok(audit.some((ev) => ev.type === 'request' && ev.request?.sql === 'DELETE FROM orders WHERE id = 13' && ev.request.reason === 'duplicate order 13'));
  });

  test('statement-bound approvals: an agent that gave up retries the exact statement and it runs once; a second retry is held again', async () => {
    const sql = 'DELETE FROM customers WHERE id = 902';
    const h = await heldQuery(b, sql);
    const id = String(h.outcome.approval_id);
    // The agent stops waiting (client-side timeout): the approval stays pending.
    await h.client.end();
    await rejection(h.result);
    await waitFor('the approval to be detached', async () => (await b.core.approvals.get(id))?.detachedAt !== undefined);
    const ok = await cli(['approve', id, '--socket', b.socket]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`${id} approved by \\S+ \\(once, usable until `));
    const count = await approvalCount(b);
    const retry = await b.client();
    const res = await retry.query(sql);
    assert.equal(res.rowCount, 1);
    assert.equal(await approvalCount(b), count, 'the retry used the approval: no new hold');
    assert.equal((await b.core.approvals.get(id))?.uses, 1);
    assert.equal((await (await db.connect()).query('SELECT count(*)::int AS n FROM customers WHERE id = 902')).rows[0].n, 0);

    // Another statement is not covered by it.
    const other = await heldQuery(b, 'DELETE FROM customers WHERE id = 903');
    assert.notEqual(other.outcome.approval_id, id);
    await b.core.approvals.decide(String(other.outcome.approval_id), 'denied', 'demo-oncall');
    await rejection(other.result);
    // Scope once: the same statement again is held again, under a new approval.
    const again = await heldQuery(b, sql);
    assert.notEqual(again.outcome.approval_id, id);
    await b.core.approvals.decide(String(again.outcome.approval_id), 'denied', 'demo-oncall');
    assert.equal(valid(detailOutcome(await rejection(again.result))).code, 'approval_denied');
    const audit = readFileSync(join(b.dataDir, 'audit', 'audit.jsonl'), 'utf8');
    assert.match(audit, new RegExp(`"data":\\{"approval":"${id}"[^\\n]*"type":"approval.used"`));
  });

  test('scope same-request --for: retries run without a hold until the approval expires, then they are held again', async () => {
    const rsql = 'DELETE FROM customers WHERE id = 905';
    const h = await heldQuery(b, rsql);
    const id = String(h.outcome.approval_id);
    const ok = await cli(['approve', id, '--socket', b.socket, '--scope', 'same-request', '--for', '3s']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /same-request, usable until/);
    assert.equal((await h.result).rowCount, 1);
    const count = await approvalCount(b);
    for (let i = 0; i < 2; i++) {
      const c = await b.client();
      assert.equal((await c.query(rsql)).rowCount, 0, 'the retry ran (the row is already gone)');
      await c.end();
    }
    assert.equal(await approvalCount(b), count);
    assert.equal((await b.core.approvals.get(id))?.uses, 3);
    const rec = await b.core.approvals.get(id);
    await new Promise((r) => setTimeout(r, Math.max(0, (rec?.validUntil ?? 0) - Date.now() + 50)));
    const late = await heldQuery(b, rsql);
    assert.notEqual(late.outcome.approval_id, id, 'after the expiry the retry is held again');
    await b.core.approvals.decide(String(late.outcome.approval_id), 'denied', 'demo-oncall', 'expired grant');
    assert.equal(valid(detailOutcome(await rejection(late.result))).code, 'approval_denied');
  });

  test('two-person rule: two distinct approvers, never the requester, each counted once', async () => {
    const h = await heldQuery(b, "UPDATE customers SET name = 'Two Person' WHERE id = 906");
    const id = String(h.outcome.approval_id);
    const first = await b.core.approvals.decide(id, 'approved', 'demo-oncall', 'ok from me');
    assert.equal(first.state, 'pending');
    assert.equal(first.voteCount, 1);
    await assert.rejects(b.core.approvals.decide(id, 'approved', 'demo-oncall'), { code: 'approval_duplicate_approver' });
    await assert.rejects(b.core.approvals.decide(id, 'approved', 'demo-agent'), { code: 'approval_self' });
    const listed = await cli(['approvals', '--socket', b.socket]);
    assert.match(listed.stdout, new RegExp(`${id}[^\\n]*\\n[^\\n]*1/2 approvals \\(demo-oncall\\)`));
    const second = await cli(['approve', id, '--socket', b.socket, '--reason', 'second pair of eyes']);
    assert.equal(second.code, 0, second.stderr);
    assert.equal((await h.result).rowCount, 1);
    const rec = await b.core.approvals.get(id);
    assert.equal(rec?.state, 'approved');
    assert.deepEqual(rec?.votes?.map((v) => v.by).sort(), ['demo-oncall', (await import('node:os')).userInfo().username].sort());
  });

  test('webhook failures never block a hold', async () => {
    const dead = await startAgentBastion(db, {}, { webhook: { url: 'http://127.0.0.1:9/unreachable' } });
    try {
      const h = await heldQuery(dead, 'DELETE FROM customers WHERE id = 908');
      await dead.core.approvals.decide(String(h.outcome.approval_id), 'approved', 'demo-oncall');
      assert.equal((await h.result).rowCount, 1);
    } finally {
      await dead.close();
    }
  });

  test('a budget of 10 deleted rows stops the 11th (simple and prepared re-executions); counters survive a restart', async () => {
    const direct = await db.connect();
    const ids = (await direct.query("INSERT INTO orders (customer_id, amount, status, created_at) SELECT 1, 1, 'budget-test', now() FROM generate_series(1, 12) RETURNING id")).rows.map((r: { id: number }) => r.id);
    // 5 through psql (each statement decided), 5 through a named prepared statement (re-executions re-checked).
    for (const id of ids.slice(0, 5)) {
      const r = await b.psql(`DELETE FROM orders WHERE id = ${id}`, { subject: 'budget-agent' });
      assert.equal(r.code, 0, r.stderr);
    }
    const c = await b.client('budget-agent');
    for (const id of ids.slice(5, 10)) assert.equal((await c.query({ name: 'del', text: 'DELETE FROM orders WHERE id = $1', values: [id] })).rowCount, 1);
    const e = await rejection(c.query({ name: 'del', text: 'DELETE FROM orders WHERE id = $1', values: [ids[10]] }));
    const o = valid(detailOutcome(e));
    assert.equal(o.code, 'budget_exceeded');
    assert.match(String(o.rule), /aa-extras\.yaml:budget-agent-deletes$/);
    assert.match(String(o.reason), /rows_deleted 10 of 10 per day/);
    assert.ok(typeof o.retry_after_s === 'number' && o.retry_after_s > 0 && o.retry_after_s <= 86_400);
    const r11 = await b.psql(`DELETE FROM orders WHERE id = ${ids[10]}`, { subject: 'budget-agent' });
    assert.notEqual(r11.code, 0);
    assert.equal(valid(psqlOutcome(r11.stderr)).code, 'budget_exceeded');
    const left = (await direct.query("SELECT count(*)::int AS n FROM orders WHERE status = 'budget-test'")).rows[0].n;
    assert.equal(left, 2, 'the 11th and 12th rows are still there');
    // Reads are not concerned by a deleted-rows budget.
    assert.equal((await c.query('SELECT count(*) FROM orders')).rowCount, 1);
    const shown = await cli(['budgets', '--socket', b.socket]);
    assert.match(shown.stdout, /budget-agent-deletes\s+budget-agent → shop\s+day:\d{4}-\d\d-\d\d\s+rows_deleted 10\/10\s+\[deny\]/);
    const snap = b.core.budgets.snapshot().find((x) => x.budget.endsWith(':budget-agent-deletes'));
    assert.equal(snap?.used.rows_deleted, 10);

    await b.stop();
    await b.restart();
    const after = await b.psql(`DELETE FROM orders WHERE id = ${ids[11]}`, { subject: 'budget-agent' });
    assert.notEqual(after.code, 0);
    assert.equal(psqlOutcome(after.stderr).code, 'budget_exceeded', 'the counter survived the restart');
    assert.equal(await db.serverLogContains(`DELETE FROM orders WHERE id = ${ids[11]}`), false, 'never reached the server');
  });

  test('statements_per_minute and bytes_returned budgets', async () => {
    // Stay inside one clock minute.
    const intoMinute = Date.now() % 60_000;
    if (intoMinute > 50_000) await new Promise((r) => setTimeout(r, 60_000 - intoMinute + 100));
    const c = await b.client('rate-agent');
    for (let i = 0; i < 3; i++) await c.query('SELECT 1');
    await c.query('BEGIN');
    await c.query('ROLLBACK');
    const e = await rejection(c.query('SELECT 2'));
    const o = valid(detailOutcome(e));
    assert.equal(o.code, 'budget_exceeded');
    assert.match(String(o.reason), /statements_per_minute 3 of 3 per minute/);
    assert.ok(Number(o.retry_after_s) >= 1 && Number(o.retry_after_s) <= 60);

    const r = await b.client('reader-agent');
    const big = await r.query('SELECT email FROM customers ORDER BY id LIMIT 100');
    assert.equal(big.rowCount, 100);
    const e2 = await rejection(r.query('SELECT 1'));
    assert.equal(valid(detailOutcome(e2)).code, 'budget_exceeded');
    assert.match(String(detailOutcome(e2).reason), /bytes_returned \d+ of 1000 per day/);
  });
});
