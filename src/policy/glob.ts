// Glob patterns for policy values: `*` any run of characters, `?` one character. Compiled once.

export interface Matcher {
  (value: string): boolean;
  /** The patterns, for explanations. */
  readonly patterns: readonly string[];
}

function toRegExp(pattern: string): RegExp {
  let re = '^';
  for (const ch of pattern) {
    if (ch === '*') re += '.*';
    else if (ch === '?') re += '.';
    else re += ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
  }
  return new RegExp(re + '$', 's');
}

/** Match any of `patterns` (case-sensitive unless `fold` is set). */
export function globs(patterns: readonly string[], fold = false): Matcher {
  const exact = new Set<string>();
  const res: RegExp[] = [];
  for (const p0 of patterns) {
    const p = fold ? p0.toLowerCase() : p0;
    if (p.includes('*') || p.includes('?')) res.push(toRegExp(p));
    else exact.add(p);
  }
  const fn = (v0: string): boolean => {
    const v = fold ? v0.toLowerCase() : v0;
    if (exact.has(v)) return true;
    for (const r of res) if (r.test(v)) return true;
    return false;
  };
  return Object.assign(fn, { patterns });
}

export function asList(v: string | string[] | undefined): string[] | undefined {
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v : [v];
}
