#!/usr/bin/env node
// A minimal agent loop on top of Portcullis' machine-readable outcomes (docs/outcome.schema.json).
// It runs statements through the bastion with node-postgres, reads the outcome the bastion puts in
// an error's (or a hold notice's) DETAIL, and reacts:
//   policy_denied by no-unbounded-writes → adds the task's WHERE clause and runs it again;
//   approval_required → waits (up to AGENT_WAIT_S on the held statement), then disconnects and
//                       retries the exact same statement after retry_after_s: the bastion binds
//                       approvals to the exact request, so the retry runs once it is approved;
//   budget_exceeded   → waits retry_after_s when that is short, else gives up;
//   anything else     → gives up and says why.
//
// usage: PGHOST=127.0.0.1 PGPORT=6432 PGUSER=demo-agent PGPASSWORD=$PORTCULLIS_DEMO_TOKEN PGDATABASE=shop \
//          node examples/agent-loop/agent.mjs tasks.json
// tasks.json: [{ "sql": "DELETE FROM orders", "where": "status = 'test'", "reason": "clean up test orders" }, ...]
// Every step is printed as one JSON line on stdout. Exit 0 when every task ran.
import { readFileSync } from 'node:fs';
import pg from 'pg';

const WAIT_S = Number(process.env.AGENT_WAIT_S ?? 30);
const MAX_TRIES = Number(process.env.AGENT_MAX_TRIES ?? 20);
const MAX_BACKOFF_S = Number(process.env.AGENT_MAX_BACKOFF_S ?? 60);

const log = (event, fields = {}) => process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The bastion's outcome in a DETAIL, or null (an ordinary PostgreSQL error). */
function outcomeOf(detail) {
  if (typeof detail !== 'string' || !detail.startsWith('{')) return null;
  try {
    const o = JSON.parse(detail);
    return typeof o.code === 'string' && typeof o.rule === 'string' ? o : null;
  } catch {
    return null;
  }
}

const literal = (s) => "'" + s.replace(/'/g, "''") + "'";

/** One attempt on a fresh connection: { ok, result } or { ok: false, outcome, error }. */
async function attempt(sql, reason) {
  const client = new pg.Client();
  client.on('error', () => undefined);
  let held = null;
  let timer = null;
  client.on('notice', (n) => {
    const o = outcomeOf(n.detail);
    if (o?.code === 'approval_required') {
      held = o;
      log('held', { approval_id: o.approval_id, rule: o.rule, reason: o.reason, waiting_s: WAIT_S });
      // Do not wait forever: give the connection up; the approval stays pending for the retry.
      timer = setTimeout(() => void client.end().catch(() => undefined), WAIT_S * 1000);
    }
  });
  try {
    await client.connect();
    if (reason) await client.query(`SET portcullis.reason = ${literal(reason)}`);
    const result = await client.query(sql);
    return { ok: true, result };
  } catch (e) {
    const o = outcomeOf(e.detail);
    if (o) return { ok: false, outcome: o, error: e.message };
    if (held) return { ok: false, outcome: { ...held, retry_after_s: held.retry_after_s ?? 5 }, error: e.message };
    return { ok: false, outcome: null, error: e.message };
  } finally {
    if (timer) clearTimeout(timer);
    await client.end().catch(() => undefined);
  }
}

function addWhere(sql, where) {
  return sql.replace(/[\s;]+$/, '') + ' WHERE ' + where;
}

async function runTask(task, i) {
  let sql = task.sql;
  for (let tries = 1; tries <= MAX_TRIES; tries++) {
    log('run', { task: i, try: tries, sql });
    const r = await attempt(sql, task.reason);
    if (r.ok) {
      log('done', { task: i, sql, command: r.result.command, rows: r.result.rowCount });
      return true;
    }
    const o = r.outcome;
    if (!o) {
      log('failed', { task: i, error: r.error });
      return false;
    }
    log('refused', { task: i, outcome: o });
    switch (o.code) {
      case 'policy_denied':
        if (o.rule.endsWith(':no-unbounded-writes') && task.where && !/\bwhere\b/i.test(sql)) {
          sql = addWhere(sql, task.where);
          log('rewrote', { task: i, sql, because: o.remedy ?? o.reason });
          continue;
        }
        break;
      case 'approval_required':
        await sleep(Math.min(o.retry_after_s ?? 5, MAX_BACKOFF_S) * 1000);
        continue;
      case 'budget_exceeded':
        if (o.retry_after_s !== undefined && o.retry_after_s <= MAX_BACKOFF_S) {
          await sleep(o.retry_after_s * 1000);
          continue;
        }
        break;
      default:
        break;
    }
    log('gave_up', { task: i, code: o.code, reason: o.reason, remedy: o.remedy ?? null });
    return false;
  }
  log('gave_up', { task: i, code: 'too_many_tries' });
  return false;
}

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node agent.mjs TASKS.json   (connection from PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE)\n');
  process.exit(2);
}
const tasks = JSON.parse(readFileSync(file, 'utf8'));
let ok = true;
for (let i = 0; i < tasks.length; i++) ok = (await runTask(tasks[i], i)) && ok;
process.exit(ok ? 0 : 1);
