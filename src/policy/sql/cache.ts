// The facts cache: a bounded LRU in front of extractSqlFacts.
//
// Key: the options (search path, user, default path) + the statement text with its literal values
// replaced (lexer.ts), so `… WHERE id = 1` and `… WHERE id = 2` share one entry — but only when
// the extractor says no fact depends on a literal value; such statements (SET, set_config, EXPLAIN
// option values, SQL function bodies …) are cached under their exact text. A hit for a text that
// differs in literals gets the cached facts with its own statement texts (sliced through the
// literal map). Cached facts are frozen: callers share them.

import type { SqlFacts, SqlStatementFacts } from '../types.js';
import { extractSqlFacts, type SqlFactsOptions } from './extract.js';
import { keyToSrc, normalizeLiterals, srcToKey } from './lexer.js';

export const CACHE_MAX_ENTRIES = 10_000;
/** Longer statements are not cached (bounds the memory: ≤ 10,000 × 16 KiB of keys). */
export const CACHE_MAX_SQL_LENGTH = 16 * 1024;

interface Entry {
  facts: SqlFacts;
  /** The text the facts were computed from. */
  text: string;
  /** Statement spans in key coordinates (normalized entries) or text coordinates (exact ones). */
  spans: [number, number][];
}

const cache = new Map<string, Entry>();
let hits = 0;
let misses = 0;

/** Facts of a statement string (uncached). Throws PortcullisError sql_parse_error / sql_unresolvable. */
export function sqlFacts(sql: string, opts: SqlFactsOptions = {}): SqlFacts {
  return extractSqlFacts(sql, opts).facts;
}

function optionsKey(opts: SqlFactsOptions): string {
  return JSON.stringify([opts.searchPath ?? null, opts.user ?? null, opts.defaultSearchPath ?? null]);
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
    Object.freeze(v);
  }
  return v;
}

function lookup(key: string): Entry | undefined {
  const e = cache.get(key);
  if (e) {
    cache.delete(key); // most recently used goes last
    cache.set(key, e);
  }
  return e;
}

function store(key: string, e: Entry): void {
  cache.set(key, e);
  if (cache.size > CACHE_MAX_ENTRIES) {
    const oldest = cache.keys().next();
    if (!oldest.done) cache.delete(oldest.value);
  }
}

/** Same result as sqlFacts, from a bounded LRU (frozen objects: do not mutate). */
export function sqlFactsCached(sql: string, opts: SqlFactsOptions = {}): SqlFacts {
  if (sql.length > CACHE_MAX_SQL_LENGTH) {
    misses++;
    return sqlFacts(sql, opts);
  }
  const ok = optionsKey(opts);
  const norm = normalizeLiterals(sql);
  const nkey = norm ? `N${ok}\u0000${norm.key}` : null;
  if (nkey !== null && norm) {
    const e = lookup(nkey);
    if (e) {
      hits++;
      if (e.text === sql) return e.facts;
      // Same statement, other literal values: the cached facts with this text's statement texts.
      const statements: SqlStatementFacts[] = e.facts.statements.map((s, i) => {
        const [ks, ke] = e.spans[i]!;
        return Object.freeze({ ...s, text: sql.slice(keyToSrc(norm.map, ks), keyToSrc(norm.map, ke)) });
      });
      return Object.freeze({ statements: Object.freeze(statements) as SqlStatementFacts[], searchPathAfter: e.facts.searchPathAfter });
    }
  }
  const xkey = `X${ok}\u0000${sql}`;
  const x = lookup(xkey);
  if (x) {
    hits++;
    return x.facts;
  }
  misses++;
  const r = extractSqlFacts(sql, opts); // errors are not cached
  const facts = deepFreeze(r.facts);
  if (nkey !== null && norm && !r.literalSensitive) {
    store(nkey, { facts, text: sql, spans: r.spans.map(([a, b]) => [srcToKey(norm.map, a), srcToKey(norm.map, b)]) });
  } else {
    store(xkey, { facts, text: sql, spans: r.spans });
  }
  return facts;
}

/**
 * The literal-insensitive identity of a statement string under these options, when the cache
 * holds facts for it that hold whatever its literal values (a normalized entry), else null.
 * Strings with the same key have the same facts but for their statement texts, so whatever is
 * derived from the facts alone (a policy decision that quotes no statement text) is theirs too.
 * A lookup only: it neither computes facts nor changes the LRU order.
 */
export function sqlShapeKey(sql: string, opts: SqlFactsOptions = {}): string | null {
  if (sql.length > CACHE_MAX_SQL_LENGTH) return null;
  const norm = normalizeLiterals(sql);
  if (!norm) return null;
  const nkey = `N${optionsKey(opts)}\u0000${norm.key}`;
  return cache.has(nkey) ? nkey : null;
}

export function sqlFactsCacheStats(): { entries: number; hits: number; misses: number; maxEntries: number } {
  return { entries: cache.size, hits, misses, maxEntries: CACHE_MAX_ENTRIES };
}

export function clearSqlFactsCache(): void {
  cache.clear();
  hits = 0;
  misses = 0;
}
