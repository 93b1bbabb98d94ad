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
  /** The agent's stated reason (`portcullis.reason`, PORTCULLIS_REASON, X-Portcullis-Reason). */
  justification?: string;
  /** SHA-256 binding identity + target + the exact request (src/core/binding.ts). */
  binding?: string;
  /** Distinct approvers needed (two-person rule); default 1. */
  required?: number;
  /** Approvals given so far (the last one settles the record). */
  votes?: ApprovalVote[];
  /** votes.length, for compare-and-set. */
  voteCount?: number;
  /** Once approved: single use (`once`) or any retry of the same request (`same-request`) until validUntil. */
  scope?: 'once' | 'same-request';
  validUntil?: number;
  /** How many times the approved request has run under this approval. */
  uses?: number;
  /** Seconds into the session's recording when the request was held. */
  recordingOffset?: number;
  /** Set while the requester is not waiting (it went away; a retry of the same request picks the approval up). */
  detachedAt?: number;
}

export interface ApprovalVote {
  by: string;
  at: number;
  reason?: string;
  scope?: 'once' | 'same-request';
  forMs?: number;
}

/** A damage budget counter (src/core/budgets.ts): one per budget, identity (or group), target and window. */
export interface BudgetRecord {
  /** `${budget}|${who}|${target}|${window}`. */
  id: string;
  /** file:id of the budget. */
  budget: string;
  /** Subject, or `*` for a budget shared by its group. */
  who: string;
  target: string;
  /** `day:YYYY-MM-DD` (UTC) or `session:<id>`. */
  window: string;
  counters: Record<string, number>;
  updatedAt: number;
  /** When the window is over and the record may be removed. */
  expiresAt: number;
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
  readonly budgets: Collection<BudgetRecord>;
  /** Compact the data files and stop background work. The store is unusable afterwards. */
  close(): Promise<void>;
}

export const COLLECTIONS = ['sessions', 'approvals', 'tokens', 'budgets'] as const;
export type CollectionName = (typeof COLLECTIONS)[number];
