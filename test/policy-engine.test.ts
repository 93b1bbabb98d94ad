// Policy engine: loading (errors with file:line:field), precedence, default deny, fail closed,
// masks, explain, reload keeping the old snapshot. Uses the real SQL/shell/kube fact extractors.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../src/config/source.js';
import { initFacts } from '../src/policy/actions.js';
import { loadPolicyDir } from '../src/policy/compile.js';
import { decide, evaluate, explain } from '../src/policy/engine.js';
import type { PolicyRequest } from '../src/policy/types.js';

const agent = { subject: 'demo-agent', groups: ['agents'] };
const pg = (sql: string, extra: Partial<PolicyRequest> = {}): PolicyRequest => ({ protocol: 'postgres', identity: agent, target: 'shop', sql, ...extra });
const sh = (command: string): PolicyRequest => ({ protocol: 'ssh', identity: agent, target: 'sandbox', command });

let dir: string;
function policyDir(files: Record<string, string>): string {
  const d = mkdtempSync(join(dir, 'p-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
  return d;
}
function loadError(files: Record<string, string>): ConfigError {
  const d = policyDir(files);
  try {
    loadPolicyDir(d);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected the policy to be rejected');
}

before(async () => {
  await initFacts();
  dir = mkdtempSync(join(tmpdir(), 'pc-policy-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('reference policy (examples/policies)', () => {
  test('contract example decisions', () => {
    const p = loadPolicyDir('examples/policies');
    const d = decide(p, pg('DELETE FROM customers'));
    assert.deepEqual(d, {
      effect: 'deny',
      rule: 'examples/policies/postgres.yaml:no-unbounded-writes',
      reason: 'UPDATE/DELETE without WHERE on public.customers',
      remedy: 'add a WHERE clause',
      masks: [],
    });
    assert.equal(decide(p, sh('ls -la; rm -rf /srv')).effect, 'deny');
    assert.equal(
      decide(p, { protocol: 'kubernetes', identity: agent, target: 'demo-cluster', http: { method: 'DELETE', path: '/api/v1/namespaces/default/pods/web-1' } }).effect,
      'review',
    );
  });

  test('masks carry the rule that asked for them', () => {
    const p = loadPolicyDir('examples/policies');
    const d = decide(p, pg('SELECT email, card_number FROM customers'));
    assert.equal(d.effect, 'allow');
    const email = d.masks.find((m) => m.column === 'public.customers.email');
    assert.deepEqual(email, { column: 'public.customers.email', strategy: 'partial', rule: 'examples/policies/postgres.yaml:mask-customers' });
    assert.ok(d.masks.some((m) => m.detector === 'card' && m.strategy === 'last4'));
    assert.deepEqual(decide(p, pg('SELECT * FROM orders')).masks.map((m) => m.detector ?? m.column), ['card']);
  });

  test('every statement of a string must be allowed; the worst wins', () => {
    const p = loadPolicyDir('examples/policies');
    assert.equal(decide(p, pg('SELECT 1; SELECT 2')).effect, 'allow');
    assert.equal(decide(p, pg('SELECT 1; DELETE FROM customers WHERE id = 1')).effect, 'review');
    assert.equal(decide(p, pg('DELETE FROM customers WHERE id = 1; DROP TABLE orders')).rule, 'examples/policies/postgres.yaml:no-ddl-outside-scratch');
  });

  test('unparseable requests are denied, never allowed', () => {
    const p = loadPolicyDir('examples/policies');
    for (const r of [pg('SELEC 1'), sh("echo 'x"), { protocol: 'kubernetes', identity: agent, target: 'demo-cluster', http: { method: 'GET', path: '/api/v1/../secrets' } } as PolicyRequest]) {
      const d = decide(p, r);
      assert.equal(d.effect, 'deny');
      assert.equal(d.rule, 'default-deny');
      assert.match(d.reason, /^cannot decide: /);
    }
    const noSql = decide(p, { protocol: 'postgres', identity: agent, target: 'shop' });
    assert.equal(noSql.effect, 'deny');
    assert.match(noSql.reason, /no "sql"/);
  });

  test('explain names every rule tried and why it did not match', () => {
    const p = loadPolicyDir('examples/policies');
    const text = explain(p, pg('DELETE FROM customers'));
    assert.match(text, /action 1: sql delete public\.customers \(no WHERE\)/);
    assert.match(text, /match deny {3}examples\/policies\/postgres\.yaml:no-unbounded-writes/);
    assert.match(text, /- {3}allow {2}examples\/policies\/postgres\.yaml:reads {2}\(sql\.action: expected read\)/);
    assert.match(text, /decision: deny by examples\/policies\/postgres\.yaml:no-unbounded-writes/);
    assert.match(text, /ssh\.yaml:commands {2}\(protocol: postgres not in \[ssh\]\)/);
  });
});

describe('semantics', () => {
  test('precedence deny > review > allow, regardless of file or rule order', () => {
    const d = policyDir({
      'a.yaml': 'rules:\n  - id: allow-all\n    effect: allow\n    shell: { program: "*" }\n',
      'b.yaml': 'rules:\n  - id: hold-sudo\n    effect: review\n    shell: { program: sudo }\n  - id: no-rm\n    effect: deny\n    shell: { program: rm }\n',
    });
    const p = loadPolicyDir(d);
    assert.equal(decide(p, sh('ls')).effect, 'allow');
    assert.equal(decide(p, sh('sudo ls')).effect, 'review');
    assert.equal(decide(p, sh('sudo rm x')).effect, 'deny');
    assert.match(decide(p, sh('sudo rm x')).rule, /b\.yaml:no-rm$/);
  });

  test('no matching allow rule → default-deny naming the action', () => {
    const p = loadPolicyDir(policyDir({ 'a.yaml': 'rules:\n  - id: ls\n    effect: allow\n    shell: { program: ls }\n' }));
    const d = decide(p, sh('ls; cat /etc/shadow'));
    assert.equal(d.rule, 'default-deny');
    assert.match(d.reason, /no rule allows exec cat \/etc\/shadow/);
  });

  test('an allow rule without facts never allows an unparseable request; a review rule can hold it', () => {
    const p = loadPolicyDir(policyDir({ 'a.yaml': 'rules:\n  - id: everything\n    effect: allow\n    when: { groups: [agents] }\n' }));
    assert.equal(decide(p, sh('ls')).effect, 'allow');
    assert.equal(decide(p, pg('SELEC 1')).effect, 'deny');
    const q = loadPolicyDir(policyDir({ 'a.yaml': 'rules:\n  - id: hold-unparseable\n    effect: review\n    unparseable: true\n' }));
    const d = decide(q, pg('SELEC 1'));
    assert.equal(d.effect, 'review');
    assert.match(d.rule, /hold-unparseable$/);
  });

  test('identity, target, protocol and time conditions', () => {
    const p = loadPolicyDir(
      policyDir({
        'a.yaml': [
          'scope: { groups: [deployers], targets: ["prod-*"] }',
          'rules:',
          '  - id: office-hours',
          '    effect: allow',
          '    when: { subjects: ["ci-*"], auth_methods: [oidc], time: { days: [mon, tue, wed, thu, fri], hours: "08:00-18:00", tz: Europe/Berlin } }',
          '    shell: { program: deploy }',
        ].join('\n'),
      }),
    );
    const who = { subject: 'ci-repo-x', groups: ['deployers'], authMethod: 'oidc' };
    const base: PolicyRequest = { protocol: 'ssh', identity: who, target: 'prod-web', command: 'deploy', time: Date.parse('2026-11-25T10:00:00+01:00') };
    assert.equal(decide(p, base).effect, 'allow');
    assert.equal(decide(p, { ...base, time: Date.parse('2026-11-25T19:30:00+01:00') }).effect, 'deny');
    assert.equal(decide(p, { ...base, time: Date.parse('2026-11-29T10:00:00+01:00') }).effect, 'deny', 'a Sunday');
    assert.equal(decide(p, { ...base, target: 'staging' }).effect, 'deny');
    assert.equal(decide(p, { ...base, identity: { ...who, authMethod: 'api-token' } }).effect, 'deny');
    assert.equal(decide(p, { ...base, identity: { ...who, groups: ['agents'] } }).effect, 'deny');
  });

  test('search_path is followed for unqualified names', () => {
    const p = loadPolicyDir('examples/policies');
    assert.equal(decide(p, pg('DROP TABLE t', { searchPath: ['scratch'] })).effect, 'allow');
    assert.equal(decide(p, pg('DROP TABLE t', { searchPath: ['scratch', 'public'] })).effect, 'deny');
    assert.equal(decide(p, pg('DROP TABLE t')).effect, 'deny');
  });

  test('evaluate returns the actions it decided', () => {
    const p = loadPolicyDir('examples/policies');
    const ev = evaluate(p, pg('SELECT * FROM customers c JOIN orders o ON o.customer_id = c.id'));
    const rels = ev.actions.filter((a) => a.kind === 'sql').map((a) => (a.kind === 'sql' ? a.sql.relation : ''));
    assert.deepEqual(rels.sort(), ['public.customers', 'public.orders']);
  });
});

describe('policy load errors name file, line and field', () => {
  test('unknown key', () => {
    const e = loadError({ 'p.yaml': 'rules:\n  - id: x\n    effect: allow\n    shel: { program: ls }\n' });
    assert.equal(e.problems.length, 1);
    const [pr] = e.problems;
    assert.match(pr.file, /p\.yaml$/);
    assert.equal(pr.line, 4);
    assert.equal(pr.col, 5);
    assert.equal(pr.field, 'rules[0].shel');
    assert.match(pr.message, /unknown key "shel"/);
  });

  test('bad enum value', () => {
    const e = loadError({ 'p.yaml': 'rules:\n  - id: x\n    effect: allow\n    sql:\n      action: raed\n' });
    const pr = e.problems.find((x) => x.field === 'rules[0].sql.action');
    assert.ok(pr, JSON.stringify(e.problems));
    assert.equal(pr.line, 5);
    assert.match(pr.message, /expected one of/);
  });

  test('missing required key and duplicate ids', () => {
    const e = loadError({ 'p.yaml': 'rules:\n  - effect: allow\n    shell: { program: ls }\n  - id: a\n    effect: deny\n  - id: a\n    effect: deny\n' });
    assert.ok(e.problems.some((p) => p.field === 'rules[0]' && /missing required key "id"/.test(p.message) && p.line === 2));
    const e2 = loadError({ 'p.yaml': 'rules:\n  - id: a\n    effect: deny\n  - id: a\n    effect: deny\n' });
    assert.ok(e2.problems.some((p) => p.field === 'rules[1].id' && p.line === 4 && /duplicate rule id/.test(p.message)));
  });

  test('YAML syntax error', () => {
    const e = loadError({ 'p.yaml': 'rules:\n  - id: [x\n' });
    assert.match(e.message, /p\.yaml:\d+:\d+: YAML syntax/);
  });

  test('semantic errors: facts of another protocol, allow for unparseable, fixed without value', () => {
    const e = loadError({
      'p.yaml': [
        'rules:',
        '  - id: a',
        '    effect: allow',
        '    when: { protocol: ssh }',
        '    sql: { action: read }',
        '  - id: b',
        '    effect: allow',
        '    unparseable: true',
        '  - id: c',
        '    effect: mask',
        '    masks: [{ column: public.t.c, strategy: fixed }]',
      ].join('\n'),
    });
    const msgs = e.problems.map((p) => `${p.line} ${p.field}: ${p.message}`);
    assert.ok(msgs.some((m) => /^5 rules\[0\]\.sql: "sql" facts only occur with protocol postgres/.test(m)), msgs.join('\n'));
    assert.ok(msgs.some((m) => /^7 rules\[1\]\.effect: an unparseable request can never be allowed/.test(m)), msgs.join('\n'));
    assert.ok(msgs.some((m) => /rules\[2\]\.masks\[0\]\.strategy: strategy "fixed" needs "value"/.test(m)), msgs.join('\n'));
  });

  test('errors of several files are all reported; nothing is half-loaded', () => {
    const e = loadError({ 'a.yaml': 'rules: 3\n', 'b.yaml': 'rules:\n  - id: ok\n    effect: nope\n' });
    assert.ok(e.problems.some((p) => /a\.yaml$/.test(p.file)));
    assert.ok(e.problems.some((p) => /b\.yaml$/.test(p.file) && p.field === 'rules[0].effect'));
  });

  test('an empty policy directory is an error, not allow-nothing silently', () => {
    const d = mkdtempSync(join(dir, 'empty-'));
    mkdirSync(join(d, 'tests'));
    assert.throws(() => loadPolicyDir(d), /no policy files/);
  });
});
