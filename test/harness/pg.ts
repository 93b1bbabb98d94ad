// A real PostgreSQL for node:test suites: one server per test file, in a temp dir, with database
// `shop` seeded (src/demo/seed.ts). Use at the top level of a test file (or in a describe):
//
//   const db = withPostgres({ logStatements: true });
//   test('…', async () => { const c = await db.connect(); … });
//
// The server starts in before() and stops (and its directory is removed) in after().

import { before, after } from 'node:test';
import pg from 'pg';
import { startLocalPostgres, type LocalPostgres, type LocalPostgresOptions } from '../../src/demo/localpg.js';
import { seedShop, type SeedResult } from '../../src/demo/seed.js';
import { tempDir, type TempDir } from './tmp.js';

export interface ShopPostgres {
  server: LocalPostgres;
  tmp: TempDir;
  seed: SeedResult | undefined;
  /** Stops the server and removes its directory; safe to call twice. */
  close(): Promise<void>;
}

export interface ShopPostgresOptions extends Omit<LocalPostgresOptions, 'dir'> {
  /** Seed database shop (default true). */
  seed?: boolean;
}

/** Starts a server in a fresh temp dir and creates (and seeds) database `shop`. */
export async function startShopPostgres(opts: ShopPostgresOptions = {}): Promise<ShopPostgres> {
  const tmp = await tempDir('portcullis-pg-');
  let server: LocalPostgres | undefined;
  try {
    const { seed: doSeed = true, ...serverOpts } = opts;
    server = await startLocalPostgres({ ...serverOpts, dir: tmp.path });
    await server.createDatabase('shop');
    const seed = doSeed ? await seedShop(server.connectionString('shop')) : undefined;
    const started = server;
    let closing: Promise<void> | undefined;
    return {
      server: started,
      tmp,
      seed,
      close(): Promise<void> {
        closing ??= (async () => {
          try {
            await started.stop();
          } finally {
            await tmp.remove();
          }
        })();
        return closing;
      },
    };
  } catch (err) {
    await server?.stop().catch(() => undefined);
    await tmp.remove();
    throw err;
  }
}

export interface PgHarness {
  readonly server: LocalPostgres;
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly database: 'shop';
  readonly seed: SeedResult | undefined;
  connectionString(db?: string): string;
  /** A connected client (db defaults to shop), ended in after(). */
  connect(db?: string): Promise<pg.Client>;
  serverLogContains(text: string): Promise<boolean>;
}

/** Registers before()/after() hooks that start and stop one seeded server for this test file. */
export function withPostgres(opts: ShopPostgresOptions = {}): PgHarness {
  let shop: ShopPostgres | undefined;
  const clients = new Set<pg.Client>();
  const started = (): ShopPostgres => {
    if (shop === undefined) throw new Error('withPostgres: the server is not started (use it inside tests, after before())');
    return shop;
  };

  before(async () => {
    shop = await startShopPostgres(opts);
  });
  after(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    clients.clear();
    await shop?.close();
  });

  return {
    get server() {
      return started().server;
    },
    get host() {
      return started().server.host;
    },
    get port() {
      return started().server.port;
    },
    get user() {
      return started().server.superuser;
    },
    get password() {
      return started().server.password;
    },
    database: 'shop',
    get seed() {
      return started().seed;
    },
    connectionString(db = 'shop') {
      return started().server.connectionString(db);
    },
    async connect(db = 'shop') {
      const client = new pg.Client({ connectionString: started().server.connectionString(db) });
      await client.connect();
      clients.add(client);
      client.once('end', () => clients.delete(client));
      return client;
    },
    serverLogContains(text: string) {
      return started().server.serverLogContains(text);
    },
  };
}
