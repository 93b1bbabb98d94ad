// Shadow mode and policy simulation on recorded history, through the real PostgreSQL proxy and
// the real CLI: a shadow rule is audited as "would deny" without blocking and `audit search
// --shadow` lists exactly those requests; `policy simulate` replays the recorded audit log
// against a candidate policy and finds exactly the decisions that change.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initFacts } from '../src/policy/actions.js';
import { loadPolicyDir } from '../src/policy/compile.js';
import { evaluate } from '../src/policy/engine.js';
import type { SimulationReport } from '../src/policy/simulate.js';
import { withPostgres } from './harness/pg.js';
import { startAgentBastion, type AgentBastion, type Run } from './harness/agent-bastion.js';

const db = withPostgres({ logStatements: true });

function cli(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['dist/src/cli/main.js', ...args], { timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const SHADOW = `
version: 1
mode: shadow
description: candidate rules, audited only
scope: { protocol: postgres, targets: [shop], groups: [agents] }
rules:
  - id: no-reads-of-orders
    effect: deny
    sql: { action: read, relation: public.orders }
    reason: reading orders would be denied
`;

interface Ev {
  seq: number;
  type: string;
  request?: { sql?: string };
  decision?: { effect: string; rule: string };
  data?: { shadow?: { effect: string; rule: string } };
}

describe('shadow mode and policy simulation', () => {
  let b: AgentBastion;
  before(async () => {
    await initFacts();
    b = await startAgentBastion(db, { 'zz-shadow.yaml': SHADOW });
  });
  after(async () => {
    await b?.close();
  });

  const audit = (): Ev[] => readFileSync(join(b.dataDir, 'audit', 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Ev);

  test('a shadow rule is evaluated and audited as "would deny" but does not block; audit search --shadow lists it', async () => {
    const r = await b.psql('SELECT count(*) FROM orders');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), '3000');
    const c = await b.client();
    assert.equal((await c.query('SELECT id FROM orders ORDER BY id LIMIT 2')).rowCount, 2);
    assert.equal((await c.query('SELECT count(*) FROM customers')).rowCount, 1);
    assert.ok(await db.serverLogContains('SELECT count(*) FROM orders'), 'the statement reached the server');

    const shadowed = audit().filter((e) => e.type === 'request' && e.data?.shadow);
    assert.deepEqual(shadowed.map((e) => e.request?.sql), ['SELECT count(*) FROM orders', 'SELECT id FROM orders ORDER BY id LIMIT 2']);
    for (const e of shadowed) {
      assert.equal(e.decision?.effect, 'allow');
      assert.equal(e.data?.shadow?.effect, 'deny');
      assert.match(String(e.data?.shadow?.rule), /zz-shadow\.yaml:no-reads-of-orders$/);
    }
    const found = await cli(['audit', 'search', '--data-dir', b.dataDir, '--shadow']);
    assert.equal(found.code, 0, found.stderr);
    const lines = found.stdout.trim().split('\n');
    assert.equal(lines.length, 2);
    assert.match(lines[0]!, /allow \S+postgres\.yaml:\S+ \(shadow: would deny by \S+zz-shadow\.yaml:no-reads-of-orders\)\s+SELECT count\(\*\) FROM orders/);
    assert.match(found.stderr, /^2 events/);
    const json = await cli(['audit', 'search', '--data-dir', b.dataDir, '--shadow', '--json']);
    assert.deepEqual(json.stdout.trim().split('\n').map((l) => (JSON.parse(l) as Ev).seq), shadowed.map((e) => e.seq));

    // policy explain says it too.
    const req = join(b.root, 'req.json');
    writeFileSync(req, JSON.stringify({ protocol: 'postgres', identity: { subject: 'demo-agent', groups: ['agents'] }, target: 'shop', sql: 'SELECT * FROM orders' }));
    const ex = await cli(['policy', 'explain', '--policies', b.policiesDir, '--request', req]);
    assert.match(ex.stdout, /decision: allow by \S+postgres\.yaml:reads/);
    assert.match(ex.stdout, /shadow: would deny by \S+zz-shadow\.yaml:no-reads-of-orders/);
  });

  test('policy simulate replays the recorded audit log and finds exactly the changed decisions', async () => {
    // More history: writes, a held-and-approved delete, a denial.
    const c = await b.client();
    await c.query("INSERT INTO orders (customer_id, amount, status, created_at) VALUES (7, 9.5, 'sim', now())");
    await c.query("UPDATE orders SET amount = 10 WHERE status = 'sim'");
    await assert.rejects(c.query('DELETE FROM orders'), { code: '42501' });
    let held!: (id: string) => void;
    const heldP = new Promise<string>((r) => (held = r));
    b.core.approvals.once('created', (rec) => held(rec.id));
    const del = c.query('DELETE FROM customers WHERE id = 970');
    await b.core.approvals.decide(await heldP, 'approved', 'demo-oncall');
    await del;
    await b.psql('SELECT count(*) FROM orders WHERE amount > 5');

    // The candidate: the shadow file enforced, and deletes of customers no longer need approval.
    const cand = join(b.root, 'candidate');
    cpSync(b.policiesDir, cand, { recursive: true });
    writeFileSync(join(cand, 'zz-shadow.yaml'), SHADOW.replace('mode: shadow', 'mode: enforce'));
    const pgYaml = readFileSync(join(cand, 'postgres.yaml'), 'utf8');
    const edited = pgYaml.replace(/(- id: delete-customers-needs-approval\n\s+effect: )review/, '$1allow');
    assert.notEqual(edited, pgYaml);
    writeFileSync(join(cand, 'postgres.yaml'), edited);

    // What must change, computed from the audit log with the engine directly.
    const candidate = loadPolicyDir(cand);
    const requests = audit().filter((e) => e.type === 'request');
    const expected = requests.filter((e) => /\bFROM orders\b/i.test(e.request?.sql ?? '') && /^SELECT/i.test(e.request?.sql ?? ''));
    const expectedDel = requests.filter((e) => e.request?.sql === 'DELETE FROM customers WHERE id = 970');
    assert.equal(expected.length, 3);
    assert.equal(expectedDel.length, 1);
    for (const e of expected) assert.equal(evaluate(candidate, { protocol: 'postgres', identity: { subject: 'demo-agent', groups: ['agents'] }, target: 'shop', sql: e.request!.sql! }).decision.effect, 'deny');

    const r = await cli(['policy', 'simulate', '--policies', cand, '--data-dir', b.dataDir, '--since', '1h']);
    assert.equal(r.code, 1, `an allowed read would now be denied: exit 1\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, new RegExp(`replayed ${requests.length} audited request`));
    assert.match(r.stdout, /changed: 4 /);
    assert.match(r.stdout, /allow → deny: 3/);
    assert.match(r.stdout, /review → allow: 1/);
    assert.match(r.stdout, /3 request\(s\) that were allowed would now be denied; re-run with --accept/);
    assert.match(r.stdout, /allow \(\S+postgres\.yaml:reads\) → deny \(\S+zz-shadow\.yaml:no-reads-of-orders\)/);

    const j = await cli(['policy', 'simulate', '--policies', cand, '--data-dir', b.dataDir, '--since', '1h', '--json', '--accept']);
    assert.equal(j.code, 0, j.stderr);
    const report = JSON.parse(j.stdout) as SimulationReport;
    assert.equal(report.replayed, requests.length);
    assert.equal(report.notReplayable.length, 0);
    assert.deepEqual(report.changes.map((x) => x.seq).sort((x, y) => x - y), [...expected, ...expectedDel].map((e) => e.seq).sort((x, y) => x - y));
    assert.equal(report.unchanged, requests.length - 4);
    assert.equal(report.newlyDenied, 3);

    // The live policy against its own history: nothing changes, exit 0.
    const same = await cli(['policy', 'simulate', '--policies', b.policiesDir, '--data-dir', b.dataDir]);
    assert.equal(same.code, 0, same.stdout);
    assert.match(same.stdout, /unchanged: \d+ {3}changed: 0 /);
  });
});
