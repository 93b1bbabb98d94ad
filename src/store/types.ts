// The storage interface shared by the core (sessions, approvals, API tokens). The embedded default
// lives in nedb.ts; a PostgreSQL implementation for HA can follow the same interface. No backend
// type leaks out of src/store/.
//
// Times are Unix milliseconds (as Identity.expiresAt). Documents are JSON values: nested objects
// (meta, request summaries, identities) may have any keys, including ones with dots or `$`.

import type { Identity, Protocol } from '../policy/types.js';

/** A JSON-serializable value. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export interface SessionRecord {
  id: string;
  protocol: Protocol;
  target: string;
  identity: Identity;
  openedAt: number;
  closedAt?: number;
  meta: Record<string, unknown>;
}

export type ApprovalState = 'pending' | 'approved' | 'denied' | 'expired';

export interface ApprovalRecord {
  id: string;
  state: ApprovalState;
  /** The request summary, already masked. */
  request: Record<string, unknown>;
  /** file:id of the rule that asked for review. */
  rule: string;
  identity: Identity;
  /** Why review was asked (the decision's reason). */
  reason: string;
  createdAt: number;
  decidedAt?: number;
  /** Subject of who approved or denied. */
  decidedBy?: string;
  /** The approver's note (`approve ID --reason …`). */
  decisionReason?: string;
  expiresAt: number;
  session?: string;
  target?: string;
  protocol?: Protocol;
}

export interface TokenRecord {
  id: string;
  /** Hash of the secret (never the secret). */
  hash: string;
  subject: string;
  groups: string[];
  createdAt: number;
  expiresAt?: number;
  revokedAt?: number;
}

/** Values a query can compare a field with. */
export type QueryScalar = string | number | boolean | null;

/** The scalar part of a field's type, plus `null` for an optional field (meaning "absent"). */
type FieldScalar<V> = Extract<V, QueryScalar> | (undefined extends V ? null : never);

/** What one field of a query may hold: a value, or `{ $in: [...] }`. */
export type FieldQuery<V> = [Extract<V, QueryScalar>] extends [never] ? never : FieldScalar<V> | { $in: FieldScalar<V>[] };

/**
 * Equality on top-level fields, or membership with `$in`. `null` matches a field that is absent
 * (or null). Only fields with scalar values can be queried; an `undefined` value is refused at
 * run time (rather than silently matching everything).
 */
export type Query<T> = { [K in keyof T]?: FieldQuery<T[K]> };

export interface FindOptions<T> {
  /** Sort by top-level fields: 1 ascending, -1 descending. */
  sort?: { [K in keyof T]?: 1 | -1 };
  limit?: number;
  skip?: number;
}

/**
 * A patch: fields to set. A field given as `undefined` is removed (e.g. clearing `revokedAt`).
 * `id` cannot be changed.
 */
export type Patch<T> = { [K in Exclude<keyof T, 'id'>]?: T[K] | undefined };

export interface UpdateOptions<T> {
  /** Compare-and-set: update only when the document also matches this query (e.g. `{ state: 'pending' }`). */
  where?: Query<T>;
}

export interface Collection<T extends { id: string }> {
  /** Insert a new document; `store_duplicate_id` when the id exists. Returns the stored document. */
  insert(doc: T): Promise<T>;
  /** The document with this id, or null. */
  get(id: string): Promise<T | null>;
  /**
   * Apply `patch` to the document with this id, atomically. Returns the updated document, or null
   * when there is no such document or it does not match `opts.where`.
   */
  update(id: string, patch: Patch<T>, opts?: UpdateOptions<T>): Promise<T | null>;
  /** Documents matching every field of `query` (all when empty). */
  find(query?: Query<T>, opts?: FindOptions<T>): Promise<T[]>;
  /** Number of documents matching `query`. */
  count(query?: Query<T>): Promise<number>;
  /** Remove the document; true when it existed. */
  remove(id: string): Promise<boolean>;
}

export interface Store {
  readonly sessions: Collection<SessionRecord>;
  readonly approvals: Collection<ApprovalRecord>;
  readonly tokens: Collection<TokenRecord>;
  /** Compact the data files and stop background work. The store is unusable afterwards. */
  close(): Promise<void>;
}

export const COLLECTIONS = ['sessions', 'approvals', 'tokens'] as const;
export type CollectionName = (typeof COLLECTIONS)[number];
