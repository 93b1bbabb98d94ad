// examples/agent-loop/agent.mjs against a real bastion (core + PostgreSQL proxy, reference
// policy) and a real PostgreSQL: it reads the outcomes in DETAIL and reacts — adds a WHERE after
// no-unbounded-writes, waits for an approval and retries the same statement after giving up the
// connection, gives up on a denial.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initFacts } from '../src/policy/actions.js';
import { withPostgres } from './harness/pg.js';
import { startAgentBastion, waitFor, type AgentBastion } from './harness/agent-bastion.js';

const db = withPostgres();

interface Step {
  event: string;
  task?: number;
  sql?: string;
  approval_id?: string;
  outcome?: { code: string; rule: string; approval_id?: string };
  command?: string;
  rows?: number;
  code?: string;
}

function runAgent(b: AgentBastion, token: string, tasks: unknown[], env: Record<string, string> = {}): { done: Promise<{ code: number | null; steps: Step[]; stderr: string }>; steps: Step[] } {
  const file = join(b.root, `tasks-${Date.now()}.json`);
  writeFileSync(file, JSON.stringify(tasks));
  const child = spawn(process.execPath, ['examples/agent-loop/agent.mjs', file], {
    env: { PATH: process.env.PATH ?? '', PGHOST: '127.0.0.1', PGPORT: String(b.proxy.port), PGUSER: 'demo-agent', PGPASSWORD: token, PGDATABASE: 'shop', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const steps: Step[] = [];
  let buf = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      steps.push(JSON.parse(buf.slice(0, nl)) as Step);
      buf = buf.slice(nl + 1);
    }
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const done = new Promise<{ code: number | null; steps: Step[]; stderr: string }>((resolve) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, steps, stderr });
    }),
  );
  return { done, steps };
}

describe('examples/agent-loop', () => {
  let b: AgentBastion;
  before(async () => {
    await initFacts();
    b = await startAgentBastion(db);
  });
  after(async () => {
    await b?.close();
  });

  test('adds a WHERE after no-unbounded-writes; waits for an approval, gives the connection up, retries the same statement and it runs', async () => {
    const direct = await db.connect();
    await direct.query("INSERT INTO orders (customer_id, amount, status, created_at) SELECT 1, 1, 'agent-loop', now() FROM generate_series(1, 3)");
    const token = await b.token();
    const run = runAgent(
      b,
      token,
      [
        { sql: 'DELETE FROM orders', where: "status = 'agent-loop'" },
        { sql: 'DELETE FROM customers WHERE id = 990', reason: 'erasure request 990' },
      ],
      { AGENT_WAIT_S: '1', AGENT_MAX_BACKOFF_S: '1' },
    );
    // The operator approves only after the agent gave up waiting once and came back.
    await waitFor('the agent to be held twice', () => run.steps.filter((s) => s.event === 'held').length >= 2, 60_000);
    const held = run.steps.filter((s) => s.event === 'held');
    assert.equal(held[0]!.approval_id, held[1]!.approval_id, 'the retry picked up the same pending approval');
    await b.core.approvals.decide(held[0]!.approval_id!, 'approved', 'demo-oncall', 'ok');
    const { code, steps, stderr } = await run.done;
    assert.equal(code, 0, `${stderr}\n${JSON.stringify(steps)}`);

    const t0 = steps.filter((s) => s.task === 0);
    assert.equal(t0.find((s) => s.event === 'refused')?.outcome?.code, 'policy_denied');
    assert.match(String(t0.find((s) => s.event === 'refused')?.outcome?.rule), /:no-unbounded-writes$/);
    assert.equal(t0.find((s) => s.event === 'rewrote')?.sql, "DELETE FROM orders WHERE status = 'agent-loop'");
    assert.deepEqual(t0.filter((s) => s.event === 'done').map((s) => [s.command, s.rows]), [['DELETE', 3]]);

    const t1 = steps.filter((s) => s.task === 1);
    assert.ok(t1.some((s) => s.event === 'refused' && s.outcome?.code === 'approval_required'), 'the agent saw approval_required');
    assert.deepEqual(t1.filter((s) => s.event === 'done').map((s) => [s.command, s.rows]), [['DELETE', 1]]);
    assert.equal((await direct.query("SELECT count(*)::int AS n FROM orders WHERE status = 'agent-loop'")).rows[0].n, 0);
    assert.equal((await direct.query('SELECT count(*)::int AS n FROM customers WHERE id = 990')).rows[0].n, 0);
    const rec = await b.core.approvals.get(held[0]!.approval_id!);
    assert.equal(rec?.justification, 'erasure request 990');
    assert.equal(rec?.uses, 1);
  });

  test('gives up with the reason when a request is denied outright or its approval is denied', async () => {
    const token = await b.token();
    const run = runAgent(b, token, [{ sql: 'DROP TABLE customers' }, { sql: 'DELETE FROM customers WHERE id = 991' }], { AGENT_WAIT_S: '30' });
    await waitFor('the agent to be held', () => run.steps.some((s) => s.event === 'held'), 60_000);
    await b.core.approvals.decide(run.steps.find((s) => s.event === 'held')!.approval_id!, 'denied', 'demo-oncall', 'no');
    const { code, steps } = await run.done;
    assert.equal(code, 1);
    assert.deepEqual(
      steps.filter((s) => s.event === 'gave_up').map((s) => [s.task, s.code]),
      [
        [0, 'policy_denied'],
        [1, 'approval_denied'],
      ],
    );
  });
});
