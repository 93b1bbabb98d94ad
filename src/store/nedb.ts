// The embedded default store on nedb-promises: one file per collection under <dataDir>/db/,
// a unique index on `id`, periodic compaction. This is the only module that imports nedb.
//
// nedb refuses field names with dots or a leading `$`, and a key `__proto__` would be lost in its
// copies; nested objects (meta, request summaries) may have such keys (`app.kubernetes.io/name`),
// so keys below the top level are escaped on the way in (`%` → %25, `.` → %2E, `$` → %24,
// `__proto__` → %5F_proto__) and unescaped on the way out. Top-level fields are the typed schema
// fields and are stored as they are, so that queries and updates on them stay atomic in nedb.

import { promises as fsp } from 'node:fs';
import path from 'node:path';
import Datastore from 'nedb-promises';
import { PortcullisError } from '../policy/types.js';
import {
  COLLECTIONS,
  type ApprovalRecord,
  type BudgetRecord,
  type Collection,
  type CollectionName,
  type FindOptions,
  type Patch,
  type Query,
  type SessionRecord,
  type Store,
  type TokenRecord,
  type UpdateOptions,
} from './types.js';

type Nedb = ReturnType<typeof Datastore.create>;
type Doc = Record<string, unknown>;

/**
 * Methods of the underlying @seald-io/nedb datastore that nedb-promises does not type. They are
 * called on `__original` itself: through nedb-promises' Proxy, assigning null to the interval id
 * fails its `set` trap.
 */
interface NedbMaintenance {
  setAutocompactionInterval(ms: number): void;
  stopAutocompaction(): void;
  compactDatafileAsync(): Promise<void>;
}

export interface NedbStoreOptions {
  /** Rewrite each data file this often, ms (nedb enforces at least 5000). Default 10 minutes. */
  compactionIntervalMs?: number;
  /** Keep everything in memory (tests of other modules); nothing is written under dataDir. */
  inMemory?: boolean;
}

function maintenance(ds: Nedb): NedbMaintenance {
  const original = (ds as unknown as { __original?: NedbMaintenance }).__original;
  if (!original || typeof original.stopAutocompaction !== 'function') {
    throw new PortcullisError('store_backend', 'store: nedb-promises no longer exposes its datastore (__original); check the installed version');
  }
  return original;
}

const MAX_DEPTH = 100;
const DEFAULT_COMPACTION_MS = 10 * 60 * 1000;

function isPlainObject(v: unknown): v is Doc {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

function escapeKey(k: string): string {
  if (k === '__proto__') return '%5F_proto__';
  return k.replace(/[%.$]/g, (c) => (c === '%' ? '%25' : c === '.' ? '%2E' : '%24'));
}

function unescapeKey(k: string): string {
  return k.replace(/%(25|2E|24|5F)/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
}

function setOwn(target: Doc, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function badValue(collection: string, where: string, message: string): PortcullisError {
  return new PortcullisError('store_bad_value', `store: ${collection}: ${where}: ${message}`, { collection, field: where });
}

/** A JSON value with nested keys escaped for nedb. `undefined` in an object drops the key. */
function encodeValue(v: unknown, collection: string, where: string, depth: number): unknown {
  if (depth > MAX_DEPTH) throw badValue(collection, where, `nested deeper than ${MAX_DEPTH} levels`);
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw badValue(collection, where, 'not a finite number');
    return v;
  }
  if (Array.isArray(v)) return v.map((x, i) => (x === undefined ? null : encodeValue(x, collection, `${where}[${i}]`, depth + 1)));
  if (isPlainObject(v)) {
    const out: Doc = {};
    for (const k of Object.keys(v)) {
      const x = v[k];
      if (x !== undefined) setOwn(out, escapeKey(k), encodeValue(x, collection, `${where}.${k}`, depth + 1));
    }
    return out;
  }
  if (typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
    return encodeValue((v as { toJSON: () => unknown }).toJSON(), collection, where, depth + 1);
  }
  throw badValue(collection, where, `a ${typeof v} cannot be stored (JSON values only)`);
}

function decodeValue(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(decodeValue);
  if (typeof v === 'object' && v !== null && !(v instanceof Date)) {
    const out: Doc = {};
    for (const k of Object.keys(v)) setOwn(out, unescapeKey(k), decodeValue((v as Doc)[k]));
    return out;
  }
  return v;
}

function checkTopKey(collection: string, k: string): void {
  if (k === '_id' || k === '' || k.startsWith('$') || k.includes('.') || k === '__proto__') {
    throw new PortcullisError('store_bad_field', `store: ${collection}: "${k}" is not a valid field name`, { collection, field: k });
  }
}

function checkId(collection: string, id: unknown): asserts id is string {
  if (typeof id !== 'string' || id === '') {
    throw new PortcullisError('store_bad_id', `store: ${collection}: id must be a non-empty string`, { collection });
  }
}

function isScalar(v: unknown): v is string | number | boolean | null {
  return v === null || typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));
}

/** Our query language (equality, `$in`, null = absent) → a nedb query. */
function translateQuery(collection: string, q: unknown): Doc {
  if (q === undefined) return {};
  if (!isPlainObject(q)) throw new PortcullisError('store_bad_query', `store: ${collection}: the query must be an object`, { collection });
  const clauses: Doc[] = [];
  for (const k of Object.keys(q)) {
    checkTopKey(collection, k);
    const v = q[k];
    if (v === undefined) {
      throw new PortcullisError('store_bad_query', `store: ${collection}: query field "${k}" is undefined (use null to match an absent field)`, { collection, field: k });
    }
    if (isScalar(v)) {
      clauses.push(v === null ? { [k]: { $exists: false } } : { [k]: v });
      continue;
    }
    if (isPlainObject(v) && Object.keys(v).length === 1 && Array.isArray(v.$in)) {
      const values = v.$in as unknown[];
      if (!values.every(isScalar)) {
        throw new PortcullisError('store_bad_query', `store: ${collection}: query field "${k}": $in takes strings, numbers, booleans or null`, { collection, field: k });
      }
      const nonNull = values.filter((x) => x !== null);
      clauses.push(values.includes(null) ? { $or: [{ [k]: { $in: nonNull } }, { [k]: { $exists: false } }] } : { [k]: { $in: nonNull } });
      continue;
    }
    throw new PortcullisError('store_bad_query', `store: ${collection}: query field "${k}" must be a string, number, boolean, null or { $in: [...] }`, { collection, field: k });
  }
  if (clauses.length === 0) return {};
  if (clauses.length === 1) return clauses[0]!;
  return { $and: clauses };
}

interface StoreState {
  closed: boolean;
}

class NedbCollection<T extends { id: string }> implements Collection<T> {
  constructor(
    private readonly ds: Nedb,
    readonly name: string,
    private readonly state: StoreState,
  ) {}

  private checkOpen(): void {
    if (this.state.closed) throw new PortcullisError('store_closed', `store: ${this.name}: the store is closed`, { collection: this.name });
  }

  private encodeDoc(doc: unknown): Doc {
    if (!isPlainObject(doc)) throw badValue(this.name, '(document)', 'a document must be a plain object');
    checkId(this.name, doc.id);
    const out: Doc = {};
    for (const k of Object.keys(doc)) {
      checkTopKey(this.name, k);
      const v = doc[k];
      // Top-level undefined and null both mean "absent".
      if (v !== undefined && v !== null) out[k] = encodeValue(v, this.name, k, 1);
    }
    return out;
  }

  private decodeDoc(d: Doc): T {
    const out: Doc = {};
    for (const k of Object.keys(d)) {
      if (k !== '_id') out[k] = decodeValue(d[k]);
    }
    return out as T;
  }

  async insert(doc: T): Promise<T> {
    this.checkOpen();
    const enc = this.encodeDoc(doc);
    try {
      const stored = (await this.ds.insert(enc)) as unknown as Doc;
      return this.decodeDoc(stored);
    } catch (err) {
      if ((err as { errorType?: string }).errorType === 'uniqueViolated') {
        throw new PortcullisError('store_duplicate_id', `store: ${this.name}: a document with id "${doc.id}" already exists`, { collection: this.name, id: doc.id });
      }
      throw err;
    }
  }

  async get(id: string): Promise<T | null> {
    this.checkOpen();
    checkId(this.name, id);
    const d = (await this.ds.findOne({ id })) as unknown as Doc | null;
    return d ? this.decodeDoc(d) : null;
  }

  async update(id: string, patch: Patch<T>, opts: UpdateOptions<T> = {}): Promise<T | null> {
    this.checkOpen();
    checkId(this.name, id);
    if (!isPlainObject(patch)) throw badValue(this.name, '(patch)', 'a patch must be a plain object');
    const $set: Doc = {};
    const $unset: Doc = {};
    for (const k of Object.keys(patch)) {
      checkTopKey(this.name, k);
      if (k === 'id') throw new PortcullisError('store_bad_field', `store: ${this.name}: id cannot be changed`, { collection: this.name, field: 'id' });
      const v = (patch as Doc)[k];
      if (v === undefined || v === null) $unset[k] = true;
      else $set[k] = encodeValue(v, this.name, k, 1);
    }
    const where = translateQuery(this.name, opts.where);
    const query: Doc = Object.keys(where).length > 0 ? { $and: [{ id }, where] } : { id };
    const mod: Doc = {};
    if (Object.keys($set).length > 0) mod.$set = $set;
    if (Object.keys($unset).length > 0) mod.$unset = $unset;
    if (Object.keys(mod).length === 0) {
      const d = (await this.ds.findOne(query)) as unknown as Doc | null;
      return d ? this.decodeDoc(d) : null;
    }
    const res = (await this.ds.update(query, mod, { multi: false, returnUpdatedDocs: true })) as unknown as Doc | null | undefined;
    return res ? this.decodeDoc(res) : null;
  }

  async find(query?: Query<T>, opts: FindOptions<T> = {}): Promise<T[]> {
    this.checkOpen();
    let cursor = this.ds.find(translateQuery(this.name, query));
    if (opts.sort) {
      const sort: Doc = {};
      for (const k of Object.keys(opts.sort)) {
        checkTopKey(this.name, k);
        const dir = (opts.sort as Doc)[k];
        if (dir !== 1 && dir !== -1) throw new PortcullisError('store_bad_query', `store: ${this.name}: sort.${k} must be 1 or -1`, { collection: this.name, field: k });
        sort[k] = dir;
      }
      cursor = cursor.sort(sort);
    }
    for (const k of ['skip', 'limit'] as const) {
      const n = opts[k];
      if (n !== undefined && (!Number.isInteger(n) || n < 0)) {
        throw new PortcullisError('store_bad_query', `store: ${this.name}: ${k} must be a non-negative integer`, { collection: this.name, field: k });
      }
    }
    if (opts.skip) cursor = cursor.skip(opts.skip);
    if (opts.limit !== undefined) {
      if (opts.limit === 0) return [];
      cursor = cursor.limit(opts.limit);
    }
    const docs = (await cursor.exec()) as unknown as Doc[];
    return docs.map((d) => this.decodeDoc(d));
  }

  async count(query?: Query<T>): Promise<number> {
    this.checkOpen();
    return this.ds.count(translateQuery(this.name, query));
  }

  async remove(id: string): Promise<boolean> {
    this.checkOpen();
    checkId(this.name, id);
    const n = await this.ds.remove({ id }, { multi: false });
    return n > 0;
  }
}

class NedbStore implements Store {
  constructor(
    readonly sessions: NedbCollection<SessionRecord>,
    readonly approvals: NedbCollection<ApprovalRecord>,
    readonly tokens: NedbCollection<TokenRecord>,
    readonly budgets: NedbCollection<BudgetRecord>,
    private readonly stores: Nedb[],
    private readonly persistent: boolean,
    private readonly state: StoreState,
  ) {}

  async close(): Promise<void> {
    if (this.state.closed) return;
    this.state.closed = true;
    for (const ds of this.stores) {
      const m = maintenance(ds);
      m.stopAutocompaction();
      if (this.persistent) await m.compactDatafileAsync();
    }
  }
}

/** Open (creating if needed) the embedded store under `<dataDir>/db/`. */
export async function openNedbStore(dataDir: string, opts: NedbStoreOptions = {}): Promise<Store> {
  const interval = opts.compactionIntervalMs ?? DEFAULT_COMPACTION_MS;
  if (!Number.isInteger(interval) || interval < 5000) {
    throw new PortcullisError('store_bad_option', `store: compactionIntervalMs must be an integer >= 5000 (got ${String(interval)})`, { option: 'compactionIntervalMs' });
  }
  const dir = path.join(dataDir, 'db');
  if (!opts.inMemory) await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const open = async (name: CollectionName): Promise<Nedb> => {
    const file = path.join(dir, `${name}.db`);
    const ds = Datastore.create(opts.inMemory ? { inMemoryOnly: true } : { filename: file });
    try {
      await ds.load();
      await ds.ensureIndex({ fieldName: 'id', unique: true });
    } catch (err) {
      throw new PortcullisError('store_open_failed', `store: cannot open ${opts.inMemory ? `in-memory ${name}` : file}: ${(err as Error).message}`, { collection: name, path: file });
    }
    if (!opts.inMemory) maintenance(ds).setAutocompactionInterval(interval);
    return ds;
  };
  const stores: Nedb[] = [];
  try {
    for (const name of COLLECTIONS) stores.push(await open(name));
  } catch (err) {
    for (const ds of stores) maintenance(ds).stopAutocompaction();
    throw err;
  }
  const [s, a, t, b] = stores as [Nedb, Nedb, Nedb, Nedb];
  const state: StoreState = { closed: false };
  return new NedbStore(
    new NedbCollection<SessionRecord>(s, 'sessions', state),
    new NedbCollection<ApprovalRecord>(a, 'approvals', state),
    new NedbCollection<TokenRecord>(t, 'tokens', state),
    new NedbCollection<BudgetRecord>(b, 'budgets', state),
    stores,
    !opts.inMemory,
    state,
  );
}
