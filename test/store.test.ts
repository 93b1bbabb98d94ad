// The embedded store (nedb under <dataDir>/db/): CRUD on every collection, queries, compare-and-set
// updates, unique ids, odd keys in nested objects, persistence across close/reopen.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStore, type ApprovalRecord, type SessionRecord, type Store, type TokenRecord } from '../src/store/index.js';
import { PortcullisError } from '../src/policy/types.js';

const made: string[] = [];
function tmpDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pc-store-'));
  made.push(dir);
  return dir;
}
after(() => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

const agent = { subject: 'demo-agent', groups: ['agents'], authMethod: 'api-token' };

function session(id: string, over: Partial<SessionRecord> = {}): SessionRecord {
  return { id, protocol: 'postgres', target: 'shop', identity: agent, openedAt: 1_700_000_000_000, meta: { client: 'psql' }, ...over };
}

function approval(id: string, over: Partial<ApprovalRecord> = {}): ApprovalRecord {
  return {
    id,
    state: 'pending',
    request: { sql: 'DELETE FROM customers WHERE id = 1' },
    rule: 'examples/policies/postgres.yaml:review-customer-deletes',
    identity: agent,
    reason: 'DELETE on public.customers needs review',
    createdAt: 1_700_000_000_000,
    expiresAt: 1_700_000_600_000,
    ...over,
  };
}

function token(id: string, over: Partial<TokenRecord> = {}): TokenRecord {
  return { id, hash: `sha256:${id}`, subject: 'demo-agent', groups: ['agents'], createdAt: 1_700_000_000_000, ...over };
}

async function withStore<R>(fn: (store: Store, dir: string) => Promise<R>): Promise<R> {
  const dir = tmpDir();
  const store = await openStore(dir);
  try {
    return await fn(store, dir);
  } finally {
    await store.close();
  }
}

function isCode(code: string) {
  return (err: unknown) => err instanceof PortcullisError && err.code === code;
}

describe('store: sessions', () => {
  test('insert, get, update, find, remove', async () => {
    await withStore(async (store, dir) => {
      const s = await store.sessions.insert(session('s1'));
      assert.deepEqual(s, session('s1'));
      assert.ok(fs.existsSync(path.join(dir, 'db', 'sessions.db')));
      await store.sessions.insert(session('s2', { protocol: 'ssh', target: 'sandbox' }));
      await store.sessions.insert(session('s3', { protocol: 'ssh', target: 'sandbox', closedAt: 1_700_000_100_000 }));

      assert.deepEqual(await store.sessions.get('s2'), session('s2', { protocol: 'ssh', target: 'sandbox' }));
      assert.equal(await store.sessions.get('nope'), null);

      // open sessions: closedAt absent
      const open = await store.sessions.find({ closedAt: null }, { sort: { id: 1 } });
      assert.deepEqual(open.map((x) => x.id), ['s1', 's2']);
      const ssh = await store.sessions.find({ protocol: 'ssh' }, { sort: { id: -1 } });
      assert.deepEqual(ssh.map((x) => x.id), ['s3', 's2']);
      const some = await store.sessions.find({ id: { $in: ['s1', 's3', 'zz'] } }, { sort: { id: 1 } });
      assert.deepEqual(some.map((x) => x.id), ['s1', 's3']);
      assert.equal(await store.sessions.count({ target: 'sandbox' }), 2);
      assert.equal((await store.sessions.find({}, { sort: { id: 1 }, skip: 1, limit: 1 }))[0]!.id, 's2');

      const closed = await store.sessions.update('s1', { closedAt: 1_700_000_200_000, meta: { client: 'psql', rows: 3 } });
      assert.equal(closed?.closedAt, 1_700_000_200_000);
      assert.deepEqual(closed?.meta, { client: 'psql', rows: 3 });
      assert.deepEqual(await store.sessions.get('s1'), closed);
      assert.equal(await store.sessions.update('missing', { closedAt: 1 }), null);

      assert.equal(await store.sessions.remove('s2'), true);
      assert.equal(await store.sessions.remove('s2'), false);
      assert.equal(await store.sessions.get('s2'), null);
      assert.equal(await store.sessions.count(), 2);
    });
  });

  test('nested keys with dots, dollars, percent signs and __proto__ round-trip', async () => {
    await withStore(async (store) => {
      const meta = JSON.parse('{"labels":{"app.kubernetes.io/name":"web","$where":"x","50%":"half","%2E":"literal","__proto__":{"polluted":true}},"list":[{"a.b":1},null,"s"]}') as Record<string, unknown>;
      await store.sessions.insert(session('odd', { meta }));
      const back = await store.sessions.get('odd');
      assert.deepEqual(JSON.stringify(back?.meta), JSON.stringify(meta));
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
    });
  });
});

describe('store: approvals', () => {
  test('CRUD and compare-and-set state transitions', async () => {
    await withStore(async (store) => {
      await store.approvals.insert(approval('a1'));
      await store.approvals.insert(approval('a2'));
      assert.equal((await store.approvals.find({ state: 'pending' })).length, 2);

      // Approve only while pending: the first decision wins, a late "expire" does nothing.
      const approved = await store.approvals.update('a1', { state: 'approved', decidedAt: 1_700_000_001_000, decidedBy: 'demo-oncall', decisionReason: 'ok' }, { where: { state: 'pending' } });
      assert.equal(approved?.state, 'approved');
      assert.equal(approved?.decidedBy, 'demo-oncall');
      const late = await store.approvals.update('a1', { state: 'expired' }, { where: { state: 'pending' } });
      assert.equal(late, null);
      assert.equal((await store.approvals.get('a1'))?.state, 'approved');

      // Concurrent deciders: exactly one wins.
      const results = await Promise.all([
        store.approvals.update('a2', { state: 'approved', decidedBy: 'x' }, { where: { state: 'pending' } }),
        store.approvals.update('a2', { state: 'denied', decidedBy: 'y' }, { where: { state: 'pending' } }),
        store.approvals.update('a2', { state: 'expired' }, { where: { state: 'pending' } }),
      ]);
      assert.equal(results.filter((r) => r !== null).length, 1);

      const decided = await store.approvals.find({ state: { $in: ['approved', 'denied', 'expired'] } });
      assert.equal(decided.length, 2);
      assert.deepEqual((await store.approvals.get('a1'))?.request, { sql: 'DELETE FROM customers WHERE id = 1' });
      assert.equal(await store.approvals.remove('a1'), true);
      assert.equal(await store.approvals.count(), 1);
    });
  });
});

describe('store: tokens', () => {
  test('CRUD, revoke and un-revoke (a patch field given as undefined is removed)', async () => {
    await withStore(async (store) => {
      await store.tokens.insert(token('t1'));
      await store.tokens.insert(token('t2', { subject: 'other', groups: ['oncall'], expiresAt: 1_800_000_000_000 }));
      const byHash = await store.tokens.find({ hash: 'sha256:t2' });
      assert.deepEqual(byHash, [token('t2', { subject: 'other', groups: ['oncall'], expiresAt: 1_800_000_000_000 })]);

      const revoked = await store.tokens.update('t1', { revokedAt: 1_700_000_005_000 });
      assert.equal(revoked?.revokedAt, 1_700_000_005_000);
      assert.deepEqual((await store.tokens.find({ revokedAt: null })).map((t) => t.id), ['t2']);
      const unrevoked = await store.tokens.update('t1', { revokedAt: undefined });
      assert.equal(unrevoked !== null && 'revokedAt' in unrevoked, false);
      assert.equal((await store.tokens.find({ subject: 'demo-agent', revokedAt: null })).length, 1);
      assert.equal(await store.tokens.remove('t1'), true);
      assert.equal(await store.tokens.get('t1'), null);
    });
  });
});

describe('store: integrity', () => {
  test('ids are unique per collection', async () => {
    await withStore(async (store) => {
      await store.tokens.insert(token('dup'));
      await assert.rejects(store.tokens.insert(token('dup', { subject: 'someone-else' })), isCode('store_duplicate_id'));
      assert.equal((await store.tokens.get('dup'))?.subject, 'demo-agent');
      // the same id in another collection is fine
      await store.sessions.insert(session('dup'));
      assert.equal(await store.tokens.count(), 1);
    });
  });

  test('bad queries, patches and values are refused with a typed error', async () => {
    await withStore(async (store) => {
      await store.tokens.insert(token('t'));
      // undefined would otherwise match everything
      await assert.rejects(store.tokens.find({ subject: undefined }), isCode('store_bad_query'));
      await assert.rejects(store.tokens.find(JSON.parse('{"$where":"1"}') as object), isCode('store_bad_field'));
      await assert.rejects(store.tokens.find({ subject: { $ne: 'x' } } as unknown as object), isCode('store_bad_query'));
      await assert.rejects(store.tokens.update('t', { id: 'other' } as unknown as object), isCode('store_bad_field'));
      await assert.rejects(store.tokens.insert(token('', {})), isCode('store_bad_id'));
      await assert.rejects(store.sessions.insert(session('f', { meta: { f: () => 1 } })), isCode('store_bad_value'));
      await assert.rejects(store.sessions.insert(session('n', { openedAt: Number.NaN })), isCode('store_bad_value'));
      assert.equal(await store.tokens.count(), 1);
    });
  });

  test('data persists across close and reopen; the closed store refuses use', async () => {
    const dir = tmpDir();
    const store = await openStore(dir);
    await store.sessions.insert(session('s1'));
    await store.approvals.insert(approval('a1'));
    await store.tokens.insert(token('t1'));
    await store.approvals.update('a1', { state: 'denied', decidedBy: 'demo-oncall' });
    await store.tokens.remove('t1');
    await store.close();
    await assert.rejects(store.sessions.get('s1'), isCode('store_closed'));

    const again = await openStore(dir);
    try {
      assert.deepEqual(await again.sessions.get('s1'), session('s1'));
      const a = await again.approvals.get('a1');
      assert.equal(a?.state, 'denied');
      assert.equal(a?.decidedBy, 'demo-oncall');
      assert.equal(await again.tokens.get('t1'), null);
      // the unique index survives reopening too
      await assert.rejects(again.sessions.insert(session('s1')), isCode('store_duplicate_id'));
      // compaction on close left one line per live document
      const lines = fs.readFileSync(path.join(dir, 'db', 'approvals.db'), 'utf8').split('\n').filter((l) => l !== '' && !l.includes('$$indexCreated'));
      assert.equal(lines.length, 1);
    } finally {
      await again.close();
    }
  });

  test('an in-memory store writes nothing under the data dir', async () => {
    const dir = tmpDir();
    const store = await openStore(dir, { inMemory: true });
    await store.sessions.insert(session('m'));
    assert.equal((await store.sessions.get('m'))?.id, 'm');
    await store.close();
    assert.deepEqual(fs.readdirSync(dir), []);
  });
});
