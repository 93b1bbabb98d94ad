// The policy and core side of agent-native outcomes, for every protocol (no proxy): policy
// options (mode: shadow, require_reason, approvers, approval_timeout, budgets) with errors that
// name file:line:field; decision codes and the outcome mapping; request bindings; approvals
// (grants survive a restart, pending ones do not); budgets across protocols and restarts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { ConfigError } from '../src/config/source.js';
import { requestBinding } from '../src/core/binding.js';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { outcomeOf } from '../src/core/outcome.js';
import { initFacts } from '../src/policy/actions.js';
import { loadPolicyDir } from '../src/policy/compile.js';
import { evaluate, explain } from '../src/policy/engine.js';
import { runPolicyTestFile } from '../src/policy/testing.js';
import type { PolicyRequest } from '../src/policy/types.js';
import { openStore } from '../src/store/index.js';

const agent = { subject: 'demo-agent', groups: ['agents'] };
const pgReq = (sql: string, extra: Partial<PolicyRequest> = {}): PolicyRequest => ({ protocol: 'postgres', identity: agent, target: 'shop', sql, ...extra });
const log = createLogger('error', () => undefined);
const validateOutcome = new Ajv({ allErrors: true, strict: true, strictRequired: false }).compile(JSON.parse(readFileSync('docs/outcome.schema.json', 'utf8')) as object);

let dir: string;
function policyDir(files: Record<string, string>, withReference = false): string {
  const d = mkdtempSync(join(dir, 'p-'));
  if (withReference) cpSync('examples/policies', d, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
  return d;
}
function loadError(files: Record<string, string>): string[] {
  try {
    loadPolicyDir(policyDir(files));
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    return e.message.split('\n');
  }
  assert.fail('expected the policy to be rejected');
}

before(async () => {
  await initFacts();
  dir = mkdtempSync(join(tmpdir(), 'pc-agentpol-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('policy options', () => {
  test('errors name file:line:field', () => {
    const msgs = loadError({
      'a.yaml': [
        'rules:',
        '  - id: r1',
        '    effect: allow',
        '    require_reason: true',
        '  - id: r2',
        '    effect: review',
        '    approvers: 9',
        '  - id: r3',
        '    effect: review',
        '    mode: loud',
        'budgets:',
        '  - id: b1',
        '    limits: { rows_deleted: -1, rows_eaten: 3 }',
      ].join('\n'),
    });
    const text = msgs.join('\n');
    assert.match(text, /a\.yaml:7:\d+: rules\[1\]\.approvers: /);
    assert.match(text, /a\.yaml:10:\d+: rules\[2\]\.mode: expected one of "enforce", "shadow"/);
    assert.match(text, /a\.yaml:13:\d+: budgets\[0\]\.limits\.rows_eaten: unknown key "rows_eaten"/);
    const semantic = loadError({ 'b.yaml': 'rules:\n  - id: r1\n    effect: allow\n    require_reason: true\nbudgets:\n  - id: r1\n    limits: { rows_deleted: 1 }\n' });
    assert.ok(semantic.some((m) => /b\.yaml:4:\d+: rules\[0\]\.require_reason: "require_reason" applies to review rules only/.test(m)), semantic.join('\n'));
    assert.ok(semantic.some((m) => /b\.yaml:6:\d+: budgets\[0\]\.id: duplicate id "r1"/.test(m)), semantic.join('\n'));
  });

  test('require_reason, approvers and approval_timeout shape the review decision', () => {
    const p = loadPolicyDir(
      policyDir(
        {
          'aa.yaml': [
            'scope: { protocol: postgres, groups: [agents] }',
            'rules:',
            '  - id: two-person',
            '    effect: review',
            '    sql: { action: update, relation: public.customers }',
            '    approvers: 2',
            '    approval_timeout: 90s',
            '    require_reason: { min_length: 8 }',
          ].join('\n'),
        },
        true,
      ),
    );
    const none = evaluate(p, pgReq('UPDATE customers SET name = 1 WHERE id = 1')).decision;
    assert.equal(none.effect, 'deny');
    assert.equal(none.code, 'reason_required');
    assert.match(none.rule, /aa\.yaml:two-person$/);
    assert.equal(evaluate(p, pgReq('UPDATE customers SET name = 1 WHERE id = 1', { reason: ' short  ' })).decision.code, 'reason_required');
    const ok = evaluate(p, pgReq('UPDATE customers SET name = 1 WHERE id = 1', { reason: 'ticket 4242 says so' })).decision;
    assert.equal(ok.effect, 'review');
    assert.deepEqual(ok.approval, { approvers: 2, timeoutMs: 90_000 });
    assert.equal(ok.code, undefined);
    // The reference meanings stay: deleting customers needs one approver, no reason required.
    const ref = evaluate(p, pgReq('DELETE FROM customers WHERE id = 3')).decision;
    assert.equal(ref.effect, 'review');
    assert.equal(ref.approval, undefined);
  });

  test('shadow rules and shadow files never change a decision; the evaluation says what they would do', () => {
    const p = loadPolicyDir(
      policyDir(
        {
          'zz-rule.yaml': 'scope: { protocol: postgres }\nrules:\n  - id: no-orders\n    effect: deny\n    mode: shadow\n    sql: { relation: public.orders }\n',
          'zz-file.yaml': 'mode: shadow\nscope: { protocol: ssh }\nrules:\n  - id: no-ls\n    effect: review\n    shell: { program: ls }\n',
        },
        true,
      ),
    );
    const e = evaluate(p, pgReq('SELECT * FROM orders'));
    assert.equal(e.decision.effect, 'allow');
    assert.equal(e.shadow?.effect, 'deny');
    assert.match(String(e.shadow?.rule), /zz-rule\.yaml:no-orders$/);
    assert.equal(evaluate(p, pgReq('SELECT * FROM customers')).shadow, undefined);
    const s = evaluate(p, { protocol: 'ssh', identity: agent, target: 'sandbox', command: 'ls -la' });
    assert.equal(s.decision.effect, 'allow');
    assert.equal(s.shadow?.effect, 'review');
    // A shadow deny never hides a live deny, and a live deny shows no shadow difference.
    assert.equal(evaluate(p, pgReq('DELETE FROM orders')).shadow, undefined);
    assert.match(explain(p, pgReq('SELECT * FROM orders')), /shadow: would deny by \S+zz-rule\.yaml:no-orders/);
    assert.match(explain(p, pgReq('SELECT * FROM orders')), /no-orders \(shadow\)/);
  });

  test('policy test files can state the reason and expect a code', () => {
    const d = policyDir(
      { 'aa.yaml': 'scope: { protocol: postgres, groups: [agents] }\nrules:\n  - id: why\n    effect: review\n    sql: { action: delete, relation: public.orders }\n    require_reason: true\n' },
      true,
    );
    mkdirSync(join(d, 'extra'));
    const f = join(d, 'extra', 't.yaml');
    writeFileSync(
      f,
      [
        'defaults: { protocol: postgres, target: shop, identity: { subject: demo-agent, groups: [agents] } }',
        'tests:',
        '  - { name: no reason, sql: "DELETE FROM orders WHERE id = 1", expect: { effect: deny, code: reason_required, rule: why } }',
        '  - { name: a reason, sql: "DELETE FROM orders WHERE id = 1", reason: cleanup, expect: { effect: review, rule: why } }',
        '  - { name: unparseable, sql: "SELEC 1", expect: { effect: deny, code: unparseable } }',
      ].join('\n'),
    );
    const results = runPolicyTestFile(loadPolicyDir(d), f);
    assert.deepEqual(
      results.map((r) => [r.name, r.ok, r.diff]),
      [
        ['no reason', true, []],
        ['a reason', true, []],
        ['unparseable', true, []],
      ],
    );
  });
});

describe('outcomes and bindings', () => {
  test('every code maps from a decision and validates against docs/outcome.schema.json', () => {
    const base = { rule: 'p.yaml:r', reason: 'because', masks: [] };
    const cases: [ReturnType<typeof outcomeOf>, string][] = [
      [outcomeOf({ ...base, effect: 'deny' }), 'policy_denied'],
      [outcomeOf({ ...base, effect: 'deny', code: 'unparseable' }), 'unparseable'],
      [outcomeOf({ ...base, effect: 'deny', code: 'reason_required', remedy: 'say why' }), 'reason_required'],
      [outcomeOf({ ...base, effect: 'deny', code: 'budget_exceeded', retryAfterS: 30 }), 'budget_exceeded'],
      [outcomeOf({ ...base, effect: 'review' }, { approvalId: 'abcdefghjk' }), 'approval_required'],
      [outcomeOf({ ...base, effect: 'review', code: 'budget_exceeded' }, { approvalId: 'abcdefghjk', hold: 'pending' }), 'approval_required'],
      [outcomeOf({ ...base, effect: 'review' }, { approvalId: 'abcdefghjk', hold: 'denied' }), 'approval_denied'],
      [outcomeOf({ ...base, effect: 'review' }, { approvalId: 'abcdefghjk', hold: 'expired' }), 'approval_expired'],
      [outcomeOf({ ...base, effect: 'deny', rule: 'identity' }, { code: 'identity_rejected' }), 'identity_rejected'],
    ];
    for (const [o, code] of cases) {
      assert.equal(o.code, code);
      assert.ok(validateOutcome(o), `${JSON.stringify(o)}: ${JSON.stringify(validateOutcome.errors)}`);
    }
    assert.equal(cases[3]![0].retry_after_s, 30);
    assert.equal(cases[6]![0].effect, 'deny');
    assert.equal(validateOutcome({ code: 'approval_denied', effect: 'deny', rule: 'x', reason: 'y' }), false, 'an approval code needs approval_id');
    assert.equal(validateOutcome({ code: 'policy_denied', effect: 'allow', rule: 'x', reason: 'y' }), false);
  });

  test('a binding covers identity + target + the exact request', () => {
    const a = requestBinding(pgReq('DELETE FROM customers WHERE id = 1'));
    assert.equal(requestBinding(pgReq('  DELETE FROM customers WHERE id = 1 ;\n')), a, 'surrounding blanks and trailing semicolons do not matter');
    assert.notEqual(requestBinding(pgReq('DELETE FROM customers WHERE id = 2')), a);
    assert.notEqual(requestBinding(pgReq("DELETE FROM customers WHERE name = 'a  b'")), requestBinding(pgReq("DELETE FROM customers WHERE name = 'a b'")));
    assert.notEqual(requestBinding(pgReq('DELETE FROM customers WHERE id = 1', { searchPath: ['scratch', 'public'] })), a);
    assert.notEqual(requestBinding(pgReq('DELETE FROM customers WHERE id = 1', { target: 'other' })), a);
    assert.notEqual(requestBinding(pgReq('DELETE FROM customers WHERE id = 1', { identity: { subject: 'demo-agent', groups: ['agents'], issuer: 'https://idp' } })), a);
    const k = (method: string, path: string) => requestBinding({ protocol: 'kubernetes', identity: agent, target: 'c', http: { method, path } });
    assert.equal(k('delete', '/api/v1/namespaces/default/pods/web-1'), k('DELETE', '/api/v1/namespaces/default/pods/web-1'));
    assert.notEqual(k('DELETE', '/api/v1/namespaces/default/pods/web-1'), k('DELETE', '/api/v1/namespaces/default/pods/web-2'));
  });
});

describe('approvals and budgets in the core (any protocol)', () => {
  const open = async (dataDir: string, policiesDir: string) => {
    const store = await openStore(dataDir);
    const core = await Core.open({ dataDir, policiesDir, audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 100 }, store, log, approvalTimeoutMs: 30_000 });
    return { store, core, close: async () => (await core.close(), await store.close()) };
  };

  test('an approved grant survives a restart and a retry uses it; a pending approval expires on restart', async () => {
    const dataDir = mkdtempSync(join(dir, 'd-'));
    const policies = policyDir({}, true);
    const req: PolicyRequest = { protocol: 'ssh', identity: agent, target: 'sandbox', command: 'sudo systemctl restart nginx', reason: 'deploy' };
    let a = await open(dataDir, policies);
    const { decision } = await a.core.decide(null, req);
    assert.equal(decision.effect, 'review');
    const ac = new AbortController();
    let id = '';
    const first = await a.core.hold(null, req, decision, (x) => ((id = x), ac.abort()), ac.signal);
    assert.equal(first.withdrawn, true);
    await a.core.approvals.decide(id, 'approved', 'demo-oncall', 'go', { scope: 'once', forMs: 60_000 });
    const pendingOther = await a.core.approvals.create({ protocol: 'ssh', target: 'sandbox', identity: agent, request: { command: 'sudo reboot' }, rule: decision.rule, reason: 'x' });
    // Crash: no orderly close of the approvals.
    await a.core.audit.close();
    await a.store.close();
    a = await open(dataDir, policies);
    assert.equal((await a.core.approvals.get(pendingOther.id))?.state, 'expired');
    let held = false;
    const retry = await a.core.hold(null, req, decision, () => (held = true));
    assert.deepEqual([retry.state, retry.reused, retry.approvalId, held], ['approved', true, id, false]);
    const again = a.core.hold(null, req, decision, (x) => void a.core.approvals.decide(x, 'denied', 'demo-oncall'));
    assert.equal((await again).state, 'denied', 'scope once: used up');
    await a.close();
  });

  test('an approval records the session\'s recording offset', async () => {
    const dataDir = mkdtempSync(join(dir, 'd-'));
    const a = await open(dataDir, policyDir({}, true));
    const s = await a.core.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent });
    const rec = a.core.record(s.id, { width: 80, height: 24 });
    rec.output(Buffer.from('$ sudo reboot\r\n'));
    await new Promise((r) => setTimeout(r, 30));
    const req: PolicyRequest = { protocol: 'ssh', identity: agent, target: 'sandbox', command: 'sudo reboot' };
    const { decision } = await a.core.decide(s.id, req);
    const out = await a.core.hold(s.id, req, decision, (id) => void a.core.approvals.decide(id, 'denied', 'demo-oncall'));
    const stored = await a.core.approvals.get(out.approvalId);
    assert.equal(typeof stored?.recordingOffset, 'number');
    assert.ok((stored?.recordingOffset ?? -1) >= 0.02, String(stored?.recordingOffset));
    assert.match(readFileSync(join(dataDir, 'audit', 'audit.jsonl'), 'utf8'), /"type":"approval.requested"/);
    assert.match(readFileSync(join(dataDir, 'audit', 'audit.jsonl'), 'utf8'), /"recordingOffset":0\.\d+/);
    await a.close();
  });

  test('budgets: counted from what requests did, checked before the next one, for any protocol; they survive a restart', async () => {
    const dataDir = mkdtempSync(join(dir, 'd-'));
    const policies = policyDir(
      {
        'zz-budgets.yaml': [
          'budgets:',
          '  - id: kube-deletes',
          '    when: { protocol: kubernetes, groups: [agents] }',
          '    limits: { rows_deleted: 2 }',
          '    effect: review',
          '  - id: ssh-rate',
          '    when: { protocol: ssh }',
          '    per: session',
          '    limits: { statements_per_minute: 2, session_minutes: 1000 }',
          'rules:',
          '  - { id: placeholder, effect: deny, when: { subjects: [nobody] } }',
        ].join('\n'),
      },
      true,
    );
    let a = await open(dataDir, policies);
    const kube = await a.core.openSession({ protocol: 'kubernetes', target: 'demo-cluster', identity: agent });
    const del: PolicyRequest = { protocol: 'kubernetes', identity: agent, target: 'demo-cluster', http: { method: 'GET', path: '/api/v1/namespaces/default/pods' } };
    assert.equal((await a.core.decide(kube.id, del)).decision.effect, 'allow');
    await a.core.budgets.consume(kube.id, { rows_deleted: 2 });
    // A read is not concerned by a deleted-rows budget; a delete is (review: held, code kept in the audit).
    assert.equal((await a.core.decide(kube.id, del)).decision.effect, 'allow');
    const d = (await a.core.decide(kube.id, { ...del, http: { method: 'DELETE', path: '/api/v1/namespaces/default/pods/web-1' } })).decision;
    assert.equal(d.effect, 'review');
    assert.equal(d.code, 'budget_exceeded');
    assert.match(d.rule, /zz-budgets\.yaml:kube-deletes$/);

    const ssh = await a.core.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent });
    const cmd: PolicyRequest = { protocol: 'ssh', identity: agent, target: 'sandbox', command: 'ls' };
    const minuteLeft = 60_000 - (Date.now() % 60_000);
    if (minuteLeft < 5000) await new Promise((r) => setTimeout(r, minuteLeft + 50));
    assert.equal((await a.core.decide(ssh.id, cmd)).decision.effect, 'allow');
    assert.equal((await a.core.decide(ssh.id, cmd)).decision.effect, 'allow');
    const third = (await a.core.decide(ssh.id, cmd)).decision;
    assert.deepEqual([third.effect, third.code], ['deny', 'budget_exceeded']);
    assert.ok((third.retryAfterS ?? 0) >= 1 && (third.retryAfterS ?? 0) <= 60);
    const snap = a.core.budgets.snapshot();
    assert.equal(snap.find((x) => x.budget.endsWith(':kube-deletes'))?.used.rows_deleted, 2);
    assert.equal(snap.find((x) => x.budget.endsWith(':ssh-rate'))?.used.statements_per_minute, 2);
    const audit = readFileSync(join(dataDir, 'audit', 'audit.jsonl'), 'utf8');
    assert.match(audit, /"code":"budget_exceeded","engine":\{"effect":"review","rule":"[^"]+kubernetes\.yaml:[^"]+"\}/);

    await a.close();
    a = await open(dataDir, policies);
    const kube2 = await a.core.openSession({ protocol: 'kubernetes', target: 'demo-cluster', identity: agent });
    const d2 = (await a.core.decide(kube2.id, { ...del, http: { method: 'DELETE', path: '/api/v1/namespaces/default/pods/web-2' } })).decision;
    assert.equal(d2.code, 'budget_exceeded', 'the daily counter survived the restart');
    // Fail closed: a counter the store cannot give refuses what its budget limits.
    const other = { subject: 'other-agent', groups: ['agents'] };
    const kube3 = await a.core.openSession({ protocol: 'kubernetes', target: 'demo-cluster', identity: other });
    await a.store.close();
    const d3 = (await a.core.decide(kube3.id, { ...del, identity: other, http: { method: 'DELETE', path: '/api/v1/namespaces/default/pods/web-3' } })).decision;
    assert.deepEqual([d3.effect, d3.code], ['deny', 'budget_exceeded']);
    assert.match(d3.reason, /counter cannot be read .*fail closed/);
    await a.core.close();
  });
});
