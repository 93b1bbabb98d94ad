// Shell command line → facts for the policy engine (see ShellFacts in ../types.ts).
//
//   shellFacts(line)        parse with the real bash parser (mvdan-sh) and extract every simple
//                           command, wherever it stands; throws PortcullisError('shell_parse_error',
//                           message, { line, column }) when the line cannot be parsed.
//   shellFactsCached(line)  the same through a bounded LRU (parsing costs ~100–300 µs).

import { PortcullisError, type ShellFacts } from '../types.js';
import { parseShell } from './ast.js';
import { Extractor, topContext } from './extract.js';
import { LruCache } from './cache.js';

export { DYNAMIC } from './words.js';
export { parseFlags } from './extract.js';

/** Facts about every simple command in `line` (a whole paste may span several lines). */
export function shellFacts(line: string): ShellFacts {
  const file = parseShell(line);
  const ex = new Extractor();
  ex.visitStmts(file.Stmts, topContext());
  return { commands: ex.commands };
}

/** Entries kept by shellFactsCached. */
export const SHELL_CACHE_ENTRIES = 2048;
/** Lines longer than this are not cached (they are rare and would pin memory). */
export const SHELL_CACHE_MAX_LINE = 16 * 1024;

type Cached = { facts: ShellFacts } | { error: { code: string; message: string; details: Record<string, unknown> } };

const cache = new LruCache<string, Cached>(SHELL_CACHE_ENTRIES);

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * shellFacts through a bounded LRU keyed by the exact line. The facts returned are shared and
 * deep-frozen: do not mutate them. Parse errors are cached too and rethrown as fresh errors.
 */
export function shellFactsCached(line: string): ShellFacts {
  if (line.length > SHELL_CACHE_MAX_LINE) return shellFacts(line);
  let hit = cache.get(line);
  if (hit === undefined) {
    try {
      hit = { facts: deepFreeze(shellFacts(line)) };
    } catch (e) {
      if (!(e instanceof PortcullisError)) throw e;
      hit = { error: { code: e.code, message: e.message, details: { ...e.details } } };
    }
    cache.set(line, hit);
  }
  if ('error' in hit) throw new PortcullisError(hit.error.code, hit.error.message, { ...hit.error.details });
  return hit.facts;
}

/** Empties the shellFactsCached cache (tests, benchmarks). */
export function clearShellFactsCache(): void {
  cache.clear();
}
