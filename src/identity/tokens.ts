// API tokens: `pcat_<16 hex id>_<43 base64url secret>` (a 256-bit random secret). The store keeps
// only `sha256:<hex>` of the secret, found by the id; the comparison is constant-time, and an
// unknown id costs the same as a wrong secret (and reads the same: "API token not recognized").
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Store, TokenRecord } from '../store/types.js';
import { IdentityError, iso } from './errors.js';

export const API_TOKEN_PREFIX = 'pcat_';
const TOKEN_RE = /^pcat_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const ID_RE = /^(?:pcat_)?([0-9a-f]{4,16})$/;
const NAME_RE = /^[^\s\u0000-\u001f\u007f]{1,256}$/; // eslint-disable-line no-control-regex -- refusing control characters is the point

export type TokenStatus = 'active' | 'expired' | 'revoked';

/** A token record as shown to operators: never the hash. */
export interface TokenInfo {
  id: string;
  subject: string;
  groups: string[];
  createdAt: number;
  expiresAt?: number;
  revokedAt?: number;
  status: TokenStatus;
}

export interface CreatedToken {
  /** The full token: shown once, never stored. */
  token: string;
  record: TokenInfo;
}

export interface CreateTokenInput {
  subject: string;
  groups?: string[];
  /** Lifetime in ms; null or undefined: never expires (callers apply their default first). */
  ttlMs?: number | null;
}

export function looksLikeApiToken(s: string): boolean {
  return s.startsWith(API_TOKEN_PREFIX);
}

export function parseApiToken(s: string): { id: string; secret: string } | null {
  const m = TOKEN_RE.exec(s);
  return m ? { id: m[1], secret: m[2] } : null;
}

export function hashSecret(secret: string): string {
  return 'sha256:' + createHash('sha256').update(secret, 'utf8').digest('hex');
}

const DUMMY = Buffer.alloc(32);

function digestOf(stored: string): Buffer | null {
  const m = /^sha256:([0-9a-f]{64})$/.exec(stored);
  return m ? Buffer.from(m[1], 'hex') : null;
}

export function tokenStatus(r: Pick<TokenRecord, 'expiresAt' | 'revokedAt'>, now: number): TokenStatus {
  if (r.revokedAt !== undefined) return 'revoked';
  if (r.expiresAt !== undefined && r.expiresAt <= now) return 'expired';
  return 'active';
}

export function tokenInfo(r: TokenRecord, now: number): TokenInfo {
  const info: TokenInfo = { id: r.id, subject: r.subject, groups: [...r.groups], createdAt: r.createdAt, status: tokenStatus(r, now) };
  if (r.expiresAt !== undefined) info.expiresAt = r.expiresAt;
  if (r.revokedAt !== undefined) info.revokedAt = r.revokedAt;
  return info;
}

function checkName(v: string, what: string): void {
  if (!NAME_RE.test(v)) throw new IdentityError('token_malformed', `${what} "${v.slice(0, 64)}" must be 1–256 printable characters without spaces`, { field: what });
}

export async function createApiToken(store: Store, input: CreateTokenInput, now: number): Promise<CreatedToken> {
  checkName(input.subject, 'subject');
  const groups = [...new Set(input.groups ?? [])];
  for (const g of groups) checkName(g, 'group');
  if (input.ttlMs !== undefined && input.ttlMs !== null && (!Number.isFinite(input.ttlMs) || input.ttlMs <= 0)) {
    throw new IdentityError('token_malformed', 'ttl must be positive', { field: 'ttl' });
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const record: TokenRecord = { id, hash: hashSecret(secret), subject: input.subject, groups, createdAt: now };
    if (input.ttlMs !== undefined && input.ttlMs !== null) record.expiresAt = now + input.ttlMs;
    try {
      await store.tokens.insert(record);
    } catch (e) {
      if ((e as { code?: string }).code === 'store_duplicate_id') continue;
      throw e;
    }
    return { token: `${API_TOKEN_PREFIX}${id}_${secret}`, record: tokenInfo(record, now) };
  }
  throw new IdentityError('token_malformed', 'could not allocate a token id');
}

export async function listApiTokens(store: Store, now: number): Promise<TokenInfo[]> {
  const all = await store.tokens.find({}, { sort: { createdAt: 1 } });
  return all.map((r) => tokenInfo(r, now));
}

/** Find one token by id, `pcat_<id>`, a unique id prefix (≥ 4 hex), or the full token. */
export async function findApiToken(store: Store, idOrPrefix: string): Promise<TokenRecord> {
  const full = parseApiToken(idOrPrefix.trim());
  const m = full ? [idOrPrefix, full.id] : ID_RE.exec(idOrPrefix.trim().toLowerCase());
  if (!m) throw new IdentityError('token_unknown', `"${idOrPrefix.slice(0, 32)}" is not a token id (16 hex digits, or a unique prefix of at least 4)`);
  const want = m[1];
  if (want.length === 16) {
    const r = await store.tokens.get(want);
    if (!r) throw new IdentityError('token_unknown', `no token with id ${want}`);
    return r;
  }
  const hits = (await store.tokens.find({})).filter((r) => r.id.startsWith(want));
  if (hits.length === 0) throw new IdentityError('token_unknown', `no token id starts with ${want}`);
  if (hits.length > 1) throw new IdentityError('token_unknown', `${hits.length} token ids start with ${want}; give more digits`, { ambiguous: hits.map((h) => h.id) });
  return hits[0];
}

/** Revoke; `already` when it was revoked before (the first revocation time is kept). */
export async function revokeApiToken(store: Store, idOrPrefix: string, now: number): Promise<{ info: TokenInfo; already: boolean }> {
  const r = await findApiToken(store, idOrPrefix);
  if (r.revokedAt !== undefined) return { info: tokenInfo(r, now), already: true };
  const updated = await store.tokens.update(r.id, { revokedAt: now }, { where: { revokedAt: null } });
  if (!updated) {
    const again = await store.tokens.get(r.id);
    if (!again) throw new IdentityError('token_unknown', `no token with id ${r.id}`);
    return { info: tokenInfo(again, now), already: true };
  }
  return { info: tokenInfo(updated, now), already: false };
}

/** Verify a presented API token; returns its record or throws an IdentityError. */
export async function verifyApiToken(store: Store, token: string, now: number): Promise<TokenRecord> {
  const p = parseApiToken(token);
  if (!p) throw new IdentityError('token_malformed', 'malformed API token (expected pcat_<id>_<secret>)');
  const r = await store.tokens.get(p.id);
  const presented = createHash('sha256').update(p.secret, 'utf8').digest();
  const stored = (r && digestOf(r.hash)) ?? DUMMY;
  const equal = timingSafeEqual(presented, stored);
  if (!r || !equal) throw new IdentityError('token_unknown', 'API token not recognized');
  if (r.revokedAt !== undefined) throw new IdentityError('token_revoked', `token revoked at ${iso(r.revokedAt)}`, { id: r.id, revokedAt: r.revokedAt });
  if (r.expiresAt !== undefined && r.expiresAt <= now) throw new IdentityError('token_expired', `token expired at ${iso(r.expiresAt)}`, { id: r.id, expiresAt: r.expiresAt });
  return r;
}
