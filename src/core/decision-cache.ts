// Memoized policy evaluation for the hot path (core.decide): the same request under the same
// policy snapshot gets the same evaluation, so a statement an agent repeats is evaluated once.
// Only the evaluation is cached; the caller still writes an audit event for every request.
//
// A request is cached the second time it is seen (unique statements are not worth keeping). A
// PostgreSQL statement is keyed by its shape — its text with the literal values taken out — when
// the SQL facts cache knows that its facts hold whatever the literals (sqlShapeKey), so that
// `… WHERE aid = 1` and `… WHERE aid = 2` share one evaluation; an evaluation whose reason or
// remedy quotes the statement text (`{statement}`) is not cached at all. The key holds every
// field of the request, so every field a rule may test is part of it (a request with a field the
// key does not know is not cached); requests decided at an explicit `time`, and protocols whose
// rules have time windows, are never cached (their decision depends on the clock). One cache per
// policy snapshot (a reload starts afresh).

import { evaluate, type Evaluation } from '../policy/engine.js';
import type { CompiledPolicy } from '../policy/compile.js';
import { sqlShapeKey } from '../policy/sql/index.js';
import type { PolicyRequest, Protocol } from '../policy/types.js';

/** Entries per policy snapshot; the cache starts over when full (cheaper than an LRU on a hit). */
export const DECISION_CACHE_MAX = 4096;
/** Recent first sightings remembered for admission. */
const SEEN_MAX = 256;
/** Longer requests are not cached (bounds the memory to ≈ DECISION_CACHE_MAX × this). */
const MAX_KEY_CHARS = 8 * 1024;

interface PolicyCache {
  entries: Map<string, Evaluation>;
  /**
   * Keys seen once lately (admission: only a request seen twice within SEEN_MAX others is cached).
   * Small, so that a stream of unique statements keeps little alive for the GC to copy around.
   */
  seen: Set<string>;
  timed: Map<Protocol, boolean>;
  hits: number;
  misses: number;
}

/** The request fields (and identity fields) the key is built from; a request with others is not cached. */
const REQUEST_KEYS = new Set(['protocol', 'identity', 'target', 'sql', 'searchPath', 'command', 'http', 'forward', 'time', 'reason']);
const IDENTITY_KEYS = new Set(['subject', 'groups', 'issuer', 'authMethod', 'expiresAt']);

function part(s: string | undefined): string {
  return s === undefined ? '-' : `${s.length}:${s}`;
}

/**
 * Every field of the request, unambiguously (length-prefixed parts, the statement or command last
 * and raw); cheaper than JSON.stringify(req). A request carrying a field this does not know (a
 * newer rule condition) is not cached at all.
 */
function requestKey(req: PolicyRequest, shape: string | null): string | null {
  for (const k of Object.keys(req)) if (!REQUEST_KEYS.has(k)) return null;
  const id = req.identity;
  for (const k of Object.keys(id)) if (!IDENTITY_KEYS.has(k)) return null;
  let groups = '';
  for (const g of id.groups) groups += part(g);
  let path = '';
  if (req.searchPath) for (const p of req.searchPath) path += part(p);
  const http = req.http ? JSON.stringify([req.http.method, req.http.path, req.http.query ?? null]) : '-';
  const fwd = req.forward ? JSON.stringify([req.forward.direction, req.forward.host, req.forward.port]) : '-';
  const text = shape !== null ? `N${shape}` : req.sql !== undefined ? `S${req.sql}` : req.command !== undefined ? `C${req.command}` : '-';
  return `${part(req.protocol)}${part(req.target)}${part(id.subject)}${id.groups.length}[${groups}${part(id.issuer)}${part(id.authMethod)}${id.expiresAt ?? '-'}|${req.searchPath ? req.searchPath.length : '-'}[${path}${part(req.reason)}${http}${fwd}${text}`;
}

const caches = new WeakMap<CompiledPolicy, PolicyCache>();

function cacheFor(policy: CompiledPolicy): PolicyCache {
  let c = caches.get(policy);
  if (!c) {
    c = { entries: new Map(), seen: new Set(), timed: new Map(), hits: 0, misses: 0 };
    caches.set(policy, c);
  }
  return c;
}

function hasTimeWindow(policy: CompiledPolicy, c: PolicyCache, protocol: Protocol): boolean {
  let t = c.timed.get(protocol);
  if (t === undefined) {
    t = (policy.byProtocol.get(protocol) ?? []).some((r) => r.requestConds.some((cond) => cond.field.endsWith('.time')));
    c.timed.set(protocol, t);
  }
  return t;
}

/** evaluate(policy, req) without the trace, from the cache when the same request was decided before. */
export function evaluateCached(policy: CompiledPolicy, req: PolicyRequest): Evaluation {
  const c = cacheFor(policy);
  if (req.time !== undefined || hasTimeWindow(policy, c, req.protocol)) return evaluate(policy, req);
  const shape = req.protocol === 'postgres' && typeof req.sql === 'string' ? sqlShapeKey(req.sql, { searchPath: req.searchPath }) : null;
  let key = requestKey(req, shape);
  if (key === null || key.length > MAX_KEY_CHARS) return evaluate(policy, req);
  const hit = c.entries.get(key);
  if (hit) {
    c.hits++;
    // A fresh decision object per caller (callers may adjust theirs); actions and mask specs are shared.
    return { decision: { ...hit.decision, masks: hit.decision.masks.slice() }, actions: hit.actions };
  }
  c.misses++;
  const ev = evaluate(policy, req);
  if (req.protocol === 'postgres' && typeof req.sql === 'string') {
    // Quotes this text: not to be shared with other literal values (nor worth keeping for this one).
    if (ev.textDependent) return ev;
    // The first sighting of a statement: its facts are known now, so its shape may be.
    if (shape === null) {
      const later = sqlShapeKey(req.sql, { searchPath: req.searchPath });
      if (later !== null) key = requestKey(req, later) ?? key;
    }
  }
  if (!c.seen.has(key)) {
    // First sighting: remember the key only. Keeping every evaluation of a stream of unique
    // statements (new literals each time) alive costs more in GC than evaluating (measured 2×).
    if (c.seen.size >= SEEN_MAX) c.seen.clear();
    c.seen.add(key);
    return ev;
  }
  c.seen.delete(key);
  if (c.entries.size >= DECISION_CACHE_MAX) c.entries.clear();
  c.entries.set(key, { decision: { ...ev.decision, masks: ev.decision.masks.slice() }, actions: ev.actions });
  return ev;
}

export function decisionCacheStats(policy: CompiledPolicy): { entries: number; hits: number; misses: number } {
  const c = cacheFor(policy);
  return { entries: c.entries.size, hits: c.hits, misses: c.misses };
}
