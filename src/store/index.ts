// The store entry point: `openStore(dataDir)` gives the embedded default (nedb, under
// <dataDir>/db/). Everything else imports the `Store` interface from here, never a backend.

import { openNedbStore, type NedbStoreOptions } from './nedb.js';
import type { Store } from './types.js';

export type * from './types.js';
export { COLLECTIONS } from './types.js';
export type StoreOptions = NedbStoreOptions;

/** Open (creating if needed) the store under `<dataDir>/db/`. Close it with `store.close()`. */
export async function openStore(dataDir: string, opts: StoreOptions = {}): Promise<Store> {
  return openNedbStore(dataDir, opts);
}
