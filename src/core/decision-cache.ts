// Memoized policy evaluation for the hot path (core.decide): the same request under the same
// policy snapshot gets the same evaluation, so a statement an agent repeats is evaluated once.
// Only the evaluation is cached; the caller still writes an audit event for every request.
//
// The key is the whole request (JSON), so every field a rule may test is part of it; requests
// decided at an explicit `time`, and protocols whose rules have time windows, are never cached
// (their decision depends on the clock). One cache per policy snapshot (a reload starts afresh).

import { evaluate, type Evaluation } from '../policy/engine.js';
import type { CompiledPolicy } from '../policy/compile.js';
import type { PolicyRequest, Protocol } from '../policy/types.js';

/** Entries per policy snapshot; the cache starts over when full (cheaper than an LRU on a hit). */
export const DECISION_CACHE_MAX = 4096;
/** Longer requests are not cached (bounds the memory to ≈ DECISION_CACHE_MAX × this). */
const MAX_KEY_CHARS = 8 * 1024;

interface PolicyCache {
  entries: Map<string, Evaluation>;
  timed: Map<Protocol, boolean>;
  hits: number;
  misses: number;
}

const caches = new WeakMap<CompiledPolicy, PolicyCache>();

function cacheFor(policy: CompiledPolicy): PolicyCache {
  let c = caches.get(policy);
  if (!c) {
    c = { entries: new Map(), timed: new Map(), hits: 0, misses: 0 };
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
  const key = JSON.stringify(req);
  if (key.length > MAX_KEY_CHARS) return evaluate(policy, req);
  const hit = c.entries.get(key);
  if (hit) {
    c.hits++;
    // A fresh decision object per caller (callers may adjust theirs); actions and mask specs are shared.
    return { decision: { ...hit.decision, masks: hit.decision.masks.slice() }, actions: hit.actions };
  }
  c.misses++;
  const ev = evaluate(policy, req);
  if (c.entries.size >= DECISION_CACHE_MAX) c.entries.clear();
  c.entries.set(key, { decision: { ...ev.decision, masks: ev.decision.masks.slice() }, actions: ev.actions });
  return ev;
}

export function decisionCacheStats(policy: CompiledPolicy): { entries: number; hits: number; misses: number } {
  const c = cacheFor(policy);
  return { entries: c.entries.size, hits: c.hits, misses: c.misses };
}
