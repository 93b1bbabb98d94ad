import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { withPostgres } from './harness/pg.js';
import { tempDir } from './harness/tmp.js';
import { freePort, portIsFree } from './harness/ports.js';
import { findPgBinDir, startLocalPostgres } from '../src/demo/localpg.js';
import { generateCustomers, generateOrders, luhnCheckDigit } from '../src/demo/seed.js';
import { PortcullisError } from '../src/policy/types.js';

/** Independent Luhn check (not the generator's). */
function luhnValid(number: string): boolean {
  if (!/^\d+$/.test(number)) return false;
  let sum = 0;
  let double = false;
  for (let i = number.length - 1; i >= 0; i--) {
    let d = Number(number[i]);
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

describe('withPostgres: a seeded shop database', () => {
  const db = withPostgres({ logStatements: true });

  test('customers, orders, daily_sales and scratch over TCP', async () => {
    const c = await db.connect();
    assert.equal(db.host, '127.0.0.1');
    const customers = await c.query<{ n: string }>('select count(*) as n from customers');
    assert.equal(customers.rows[0].n, '1000');
    const orders = await c.query<{ n: string; bad: string }>(
      'select count(*) as n, count(*) filter (where customer_id not between 1 and 1000) as bad from public.orders',
    );
    assert.equal(orders.rows[0].n, '3000');
    assert.equal(orders.rows[0].bad, '0');
    const daily = await c.query<{ n: string; total_ok: boolean }>(
      `select count(*) as n,
              sum(total) = (select sum(amount) from public.orders where status <> 'cancelled') as total_ok
         from analytics.daily_sales`,
    );
    assert.ok(Number(daily.rows[0].n) > 300, `daily_sales rows: ${daily.rows[0].n}`);
    assert.equal(daily.rows[0].total_ok, true);
    const scratch = await c.query<{ n: string }>(
      `select (select count(*) from pg_namespace where nspname = 'scratch')
            + (select count(*) from pg_class k join pg_namespace n on n.oid = k.relnamespace where n.nspname = 'scratch') * 100 as n`,
    );
    assert.equal(scratch.rows[0].n, '1', 'schema scratch exists and is empty');
    assert.deepEqual(db.seed, { ...db.seed, customers: 1000, orders: 3000 });
  });

  test('every card_number passes Luhn, has 13-19 digits and a real IIN', async () => {
    const c = await db.connect();
    const { rows } = await c.query<{ card_number: string }>('select card_number from customers order by id');
    assert.equal(rows.length, 1000);
    const brands = { visa: 0, mastercard: 0, amex: 0, discover: 0 };
    for (const { card_number: card } of rows) {
      assert.ok(luhnValid(card), `Luhn fails: ${card}`);
      assert.ok(card.length >= 13 && card.length <= 19, `length: ${card}`);
      if (/^4/.test(card)) brands.visa++;
      else if (/^(5[1-5]|222[1-9]|22[3-9]\d|2[3-6]\d\d|27[01]\d|2720)/.test(card)) brands.mastercard++;
      else if (/^3[47]\d{13}$/.test(card)) brands.amex++;
      else if (/^(6011|65)/.test(card)) brands.discover++;
      else assert.fail(`unknown IIN: ${card}`);
    }
    for (const [brand, n] of Object.entries(brands)) assert.ok(n > 20, `${brand}: ${n}`);
  });

  test('SSNs, emails and phones look valid', async () => {
    const c = await db.connect();
    const { rows } = await c.query<{ name: string; email: string; phone: string; ssn: string }>(
      'select name, email, phone, ssn from customers',
    );
    for (const r of rows) {
      const m = /^(\d{3})-(\d{2})-(\d{4})$/.exec(r.ssn);
      assert.ok(m, `ssn format: ${r.ssn}`);
      const area = Number(m[1]);
      assert.ok(area >= 1 && area < 900 && area !== 666, `ssn area: ${r.ssn}`);
      assert.notEqual(m[2], '00');
      assert.notEqual(m[3], '0000');
      const [first, last] = r.name.toLowerCase().split(' ');
      assert.match(r.email, new RegExp(`^${first}\\.${last}\\d*@example\\.com$`));
      assert.match(r.phone, /^\+1-\d{3}-555-01\d{2}$/);
    }
  });

  test('the statement log shows what ran, and not what did not', async () => {
    const c = await db.connect();
    const marker = `harness-marker-${process.pid}-${Date.now()}`;
    await c.query(`select '${marker}' as m`);
    assert.equal(await db.serverLogContains(marker), true);
    assert.equal(await db.serverLogContains(`${marker}-never-sent`), false);
    const log = await db.server.serverLog();
    assert.match(log, new RegExp(`statement: select '${marker}'`));
  });

  test('seeding is deterministic: a second database seeded the same way is identical', async () => {
    await db.server.createDatabase('shop_again');
    const { seedShop } = await import('../src/demo/seed.js');
    await seedShop(db.connectionString('shop_again'));
    const digest = async (name: string): Promise<string> => {
      const c = await db.connect(name);
      const r = await c.query<{ d: string }>(
        `select md5((select string_agg(concat_ws('|', id, name, email, phone, card_number, ssn), ',' order by id) from customers)
                 || (select string_agg(concat_ws('|', id, customer_id, amount, status, created_at), ',' order by id) from orders)) as d`,
      );
      return r.rows[0].d;
    };
    assert.equal(await digest('shop_again'), await digest('shop'));
    // And the generators agree with what is stored.
    const c = await db.connect();
    const first = await c.query<{ email: string; card_number: string }>('select email, card_number from customers where id = 1');
    assert.equal(first.rows[0].email, generateCustomers()[0].email);
    assert.equal(first.rows[0].card_number, generateCustomers()[0].card_number);
    assert.equal(generateOrders().length, 3000);
  });

  test('password authentication is enforced (scram-sha-256)', async () => {
    const bad = new pg.Client({ host: db.host, port: db.port, user: db.user, password: 'wrong-password', database: 'shop' });
    await assert.rejects(bad.connect(), /password authentication failed/);
    const c = await db.connect();
    const r = await c.query<{ method: string }>(`select rolpassword like 'SCRAM-SHA-256$%' as method from pg_authid where rolname = current_user`);
    assert.equal(String(r.rows[0].method), 'true');
  });

  test('listens on loopback only, socket inside its directory, runs as postgres when we are root', async () => {
    const c = await db.connect();
    const listen = await c.query<{ listen_addresses: string }>('show listen_addresses');
    assert.equal(listen.rows[0].listen_addresses, '127.0.0.1');
    const sock = await c.query<{ unix_socket_directories: string }>('show unix_socket_directories');
    assert.equal(sock.rows[0].unix_socket_directories, db.server.socketDir);
    assert.ok(db.server.socketDir.startsWith(db.server.dir + path.sep));
    assert.ok(fs.existsSync(path.join(db.server.socketDir, `.s.PGSQL.${db.port}`)));
    if (isRoot) {
      const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
      assert.equal(fs.statSync(db.server.dataDir).uid, uid);
      const pid = Number(fs.readFileSync(path.join(db.server.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s`, 'm'));
    }
  });
});

describe('startLocalPostgres lifecycle', () => {
  test('stop() stops the server, frees the port, and is safe to call twice; a restart reuses the cluster', async () => {
    const tmp = await tempDir('portcullis-pg-life-');
    try {
      const port = await freePort();
      const server = await startLocalPostgres({ dir: tmp.path, port, superPassword: 'life-secret' });
      assert.equal(server.port, port);
      assert.equal(await portIsFree(port), false);
      const c = new pg.Client({ connectionString: server.connectionString() });
      await c.connect();
      await c.query('create table kept (v text)');
      await c.query('insert into kept values ($1)', ['still here']);
      await c.end();
      await server.stop();
      assert.equal(await portIsFree(port), true, 'port free after stop');
      assert.equal(fs.existsSync(path.join(server.dataDir, 'postmaster.pid')), false);
      await server.stop(); // second call: no error
      const after = new pg.Client({ connectionString: server.connectionString(), connectionTimeoutMillis: 2000 });
      await assert.rejects(after.connect());

      // Same dir again: the cluster and its password are reused; a new port is picked.
      const again = await startLocalPostgres({ dir: tmp.path });
      try {
        assert.equal(again.password, 'life-secret');
        const c2 = new pg.Client({ connectionString: again.connectionString() });
        await c2.connect();
        const r = await c2.query<{ v: string }>('select v from kept');
        assert.deepEqual(r.rows, [{ v: 'still here' }]);
        await c2.end();
      } finally {
        await again.stop();
      }
      assert.equal(await portIsFree(again.port), true);
    } finally {
      await tmp.remove();
    }
    assert.equal(fs.existsSync(tmp.path), false, 'temp dir removed');
  });

  test('refuses a non-loopback host', async () => {
    await assert.rejects(
      startLocalPostgres({ dir: '/nonexistent-portcullis', host: '0.0.0.0' }),
      (err: unknown) => err instanceof PortcullisError && err.code === 'pg_bad_option',
    );
  });

  test('pg_not_installed when no initdb can be found', () => {
    assert.throws(
      () => findPgBinDir({ pgConfig: null, libRoot: '/nonexistent-portcullis/lib', pathEnv: '/nonexistent-portcullis/bin' }),
      (err: unknown) => err instanceof PortcullisError && err.code === 'pg_not_installed' && /initdb/.test(err.message),
    );
    assert.throws(
      () => findPgBinDir({ pgConfig: '/nonexistent-portcullis/pg_config', libRoot: '/nonexistent', pathEnv: '' }),
      (err: unknown) => err instanceof PortcullisError && err.code === 'pg_not_installed',
    );
    // And on this machine the real search finds a directory with initdb.
    const dir = findPgBinDir();
    assert.ok(fs.existsSync(path.join(dir, 'initdb')));
  });

  test('Luhn check digits of the generator', () => {
    assert.equal(luhnCheckDigit('7992739871'), 3); // the classic example 79927398713
    assert.ok(luhnValid('79927398713'));
    assert.ok(!luhnValid('79927398710'));
  });
});

describe('the Kubernetes API stand-in (test/harness/kubeapi.ts)', () => {
  test('a watch from a listed resourceVersion replays what changed since; one older than the window is 410 Gone', async () => {
    const { startKubeApi } = await import('./harness/kubeapi.js');
    const https = await import('node:https');
    const api = await startKubeApi();
    const get = (p: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const req = https.get(`${api.url}${p}`, { ca: api.ca, headers: { authorization: `Bearer ${api.token}` } }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve(body));
        });
        req.on('error', reject);
        req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
      });
    try {
      api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'before', namespace: 'default' }, stringData: { a: 'b' } });
      const listed = JSON.parse(await get('/api/v1/namespaces/default/secrets')) as { metadata: { resourceVersion: string } };
      // changed between the list and the watch (a client's list-then-watch gap)
      api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'between', namespace: 'default' }, stringData: { a: 'c' } });
      api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'other-kind', namespace: 'default' }, data: { a: 'd' } });
      const events = (await get(`/api/v1/namespaces/default/secrets?watch=1&timeoutSeconds=1&resourceVersion=${listed.metadata.resourceVersion}`))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { type: string; object: { metadata: { name: string } } });
      assert.deepEqual(events.map((e) => `${e.type} ${e.object.metadata.name}`), ['ADDED between']);
      for (let i = 0; i < 1001; i++) api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `churn-${i}`, namespace: 'default' }, data: {} });
      const gone = JSON.parse((await get(`/api/v1/namespaces/default/secrets?watch=1&timeoutSeconds=1&resourceVersion=${listed.metadata.resourceVersion}`)).trim()) as { type: string; object: { code: number; reason: string } };
      assert.equal(gone.type, 'ERROR');
      assert.equal(gone.object.code, 410);
      assert.equal(gone.object.reason, 'Expired');
    } finally {
      await api.close();
    }
  });
});
