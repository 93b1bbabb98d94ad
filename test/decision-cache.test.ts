// The decision cache in front of the policy engine (src/core/decision-cache.ts): a hit gives the
// same evaluation as the engine; every request field takes part in the key; time windows and
// explicit times are never cached; a reloaded policy starts with an empty cache.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decisionCacheStats, evaluateCached } from '../src/core/decision-cache.js';
import { initFacts } from '../src/policy/actions.js';
import { loadPolicyDir } from '../src/policy/compile.js';
import { evaluate } from '../src/policy/engine.js';
import type { PolicyRequest } from '../src/policy/types.js';

const agent = { subject: 'demo-agent', groups: ['agents'] };
const pg = (sql: string, extra: Partial<PolicyRequest> = {}): PolicyRequest => ({ protocol: 'postgres', identity: agent, target: 'shop', sql, ...extra });

let dir: string;
before(async () => {
  await initFacts();
  dir = mkdtempSync(join(tmpdir(), 'pc-dcache-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('decision cache', () => {
  test('repeated requests hit and decide exactly as the engine', () => {
    const p = loadPolicyDir('examples/policies');
    const requests: PolicyRequest[] = [
      pg('SELECT * FROM customers WHERE id = 1'),
      pg('DELETE FROM customers'),
      pg('DELETE FROM customers WHERE id = 7'),
      pg('SELECT * FROM customers WHERE id = 1', { searchPath: ['scratch', 'public'] }),
      pg('SELECT * FROM customers WHERE id = 1', { identity: { subject: 'other', groups: ['nobody'] } }),
      pg('SELECT * FROM customers WHERE id = 1', { target: 'elsewhere' }),
      pg('SELECT pg_read_file($$/etc/passwd$$)'),
      pg('this is not sql'),
      { protocol: 'ssh', identity: agent, target: 'sandbox', command: 'rm -rf /srv' },
      { protocol: 'ssh', identity: agent, target: 'sandbox', command: 'ls -la' },
    ];
    for (let round = 0; round < 3; round++) {
      for (const r of requests) {
        const cached = evaluateCached(p, r);
        const fresh = evaluate(p, r);
        assert.deepEqual(cached.decision, fresh.decision, `${round}: ${JSON.stringify(r)}`);
        assert.deepEqual(cached.actions, fresh.actions);
      }
    }
    const st = decisionCacheStats(p);
    // Admission: evaluated when first seen, cached when seen again, served from the cache after.
    assert.equal(st.misses, requests.length * 2);
    assert.equal(st.hits, requests.length);
    assert.equal(st.entries, requests.length);
    // Different effects for requests that differ in one field only: the key holds every field.
    assert.notEqual(evaluateCached(p, requests[1]!).decision.effect, evaluateCached(p, requests[2]!).decision.effect);
  });

  test('a stream of unique statements is evaluated, not kept', () => {
    const p = loadPolicyDir('examples/policies');
    for (let i = 0; i < 1000; i++) {
      const r = pg(`SELECT * FROM customers c${i} WHERE id = ${i}`);
      assert.deepEqual(evaluateCached(p, r).decision, evaluate(p, r).decision);
    }
    assert.deepEqual(decisionCacheStats(p), { entries: 0, hits: 0, misses: 1000 });
  });

  test('statements that differ only in literal values share one evaluation', () => {
    const p = loadPolicyDir('examples/policies');
    const shapes = [
      (i: number) => pg(`SELECT abalance FROM pgbench_accounts WHERE aid = ${i}`),
      (i: number) => pg(`DELETE FROM orders WHERE id = ${i} AND note = 'n${i}'`),
      (i: number) => pg(`DELETE FROM customers WHERE id = ${i}`),
      (i: number) => pg(`SELECT * FROM customers WHERE email = 'u${i}@example.com'`, { searchPath: ['scratch', 'public'] }),
    ];
    for (let i = 0; i < 50; i++) {
      for (const shape of shapes) {
        const r = shape(i);
        const cached = evaluateCached(p, r);
        const fresh = evaluate(p, r);
        assert.deepEqual(cached.decision, fresh.decision, r.sql);
        assert.deepEqual(cached.actions.map((a) => (a.kind === 'sql' ? a.sql : a)), fresh.actions.map((a) => (a.kind === 'sql' ? a.sql : a)));
      }
    }
    // Per shape: a miss when first seen, a miss when seen again (then cached), hits after.
    assert.deepEqual(decisionCacheStats(p), { entries: shapes.length, hits: shapes.length * 48, misses: shapes.length * 2 });
    // A setting's value is a literal the decision depends on: such statements keep their exact text as key.
    assert.equal(evaluateCached(p, pg("SET standard_conforming_strings = 'off'")).decision.effect, 'deny');
    assert.equal(evaluateCached(p, pg("SET standard_conforming_strings = 'off'")).decision.effect, 'deny');
    assert.equal(evaluateCached(p, pg("SET application_name = 'off'")).decision.effect, 'allow');
  });

  test('a reason that quotes the statement is never shared between literal values', () => {
    const d = mkdtempSync(join(dir, 'q-'));
    writeFileSync(join(d, 'a.yaml'), ['rules:', '  - id: quoted', '    effect: deny', '    reason: "refused: {statement}"', '    sql: { action: delete }'].join('\n'));
    const p = loadPolicyDir(d);
    for (let i = 0; i < 5; i++) {
      const r = pg(`DELETE FROM t WHERE id = ${i}`);
      const cached = evaluateCached(p, r).decision;
      assert.equal(cached.reason, `refused: DELETE FROM t WHERE id = ${i}`);
      assert.deepEqual(cached, evaluate(p, r).decision);
    }
    assert.equal(decisionCacheStats(p).entries, 0);
  });

  test('a hit hands out its own decision object', () => {
    const p = loadPolicyDir('examples/policies');
    const r = pg('SELECT email FROM customers');
    evaluateCached(p, r);
    evaluateCached(p, r);
    const a = evaluateCached(p, r).decision;
    a.reason = 'changed by a caller';
    a.masks.length = 0;
    const b = evaluateCached(p, r).decision;
    assert.deepEqual(b, evaluate(p, r).decision);
    assert.ok(b.masks.length > 0, 'the reference policy masks customers.email');
  });

  test('time windows and explicit times are not cached; a reloaded policy starts afresh', () => {
    const d = mkdtempSync(join(dir, 'p-'));
    writeFileSync(
      join(d, 'a.yaml'),
      ['rules:', '  - id: office-hours', '    effect: allow', '    when: { time: { hours: "08:00-18:00", tz: UTC } }', '    shell: { program: deploy }', '  - id: ls', '    effect: allow', '    sql: { action: read }'].join('\n'),
    );
    const p = loadPolicyDir(d);
    const sh: PolicyRequest = { protocol: 'ssh', identity: agent, target: 'web', command: 'deploy' };
    for (let i = 0; i < 3; i++) evaluateCached(p, sh);
    for (let i = 0; i < 3; i++) evaluateCached(p, pg('SELECT 1', { time: Date.parse('2026-01-01T10:00:00Z') }));
    assert.deepEqual(decisionCacheStats(p), { entries: 0, hits: 0, misses: 0 });
    assert.equal(evaluateCached(p, pg('SELECT 1', { time: Date.parse('2026-01-01T10:00:00Z') })).decision.effect, 'allow');
    // Protocols without time windows are cached (from the second sighting on).
    for (let i = 0; i < 3; i++) evaluateCached(p, pg('SELECT 1'));
    assert.deepEqual(decisionCacheStats(p), { entries: 1, hits: 1, misses: 2 });
    const reloaded = loadPolicyDir(d);
    assert.deepEqual(decisionCacheStats(reloaded), { entries: 0, hits: 0, misses: 0 });
  });
});
