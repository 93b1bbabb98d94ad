// search_path and current-user tracking across the statements of one string.
//
// The state is a set of *alternatives* (search_path entries + the user that `$user` stands for):
// normally one, but where PostgreSQL's outcome depends on something the extractor cannot know —
// whether a `set_config()` in a query actually ran, what a ROLLBACK / ROLLBACK TO / COMMIT reverts
// SET and SET LOCAL to — every possible outcome is kept, and a name resolves into the union of
// them (conservative: the policy then treats it as any of those schemas).

import { PortcullisError } from '../types.js';

export interface PathConfig {
  /** search_path entries as written (`$user` kept). */
  path: readonly string[];
  /** Who `$user` stands for (the current role), if known. */
  user: string | undefined;
}

/** `"$user"` (quoted, as SHOW prints it) and `$user` both mean the current user. */
export function isUserEntry(entry: string): boolean {
  return entry === '$user' || entry === '"$user"';
}

/** The schemas a path stands for: `$user` replaced by the user, or dropped when there is none. */
export function expandPath(c: PathConfig): string[] {
  const out: string[] = [];
  for (const e of c.path) {
    const s = isUserEntry(e) ? c.user : e;
    if (s !== undefined && s !== '' && !out.includes(s)) out.push(s);
  }
  return out;
}

function sameConfig(a: PathConfig, b: PathConfig): boolean {
  if (a.user !== b.user || a.path.length !== b.path.length) return false;
  for (let i = 0; i < a.path.length; i++) if (a.path[i] !== b.path[i]) return false;
  return true;
}

function addUnique(into: PathConfig[], c: PathConfig): void {
  if (!into.some((x) => sameConfig(x, c))) into.push(c);
}

export class SearchPathState {
  private alts: PathConfig[];
  /** Every configuration in force at some point since the start of the string. */
  private readonly seen: PathConfig[] = [];
  private lookupCache: string[] | null = null;
  private createCache: string[] | null = null;

  constructor(
    initial: PathConfig,
    /** The path RESET / SET … TO DEFAULT / DISCARD ALL go back to. */
    private readonly defaultPath: readonly string[],
    /** The session user (what RESET ROLE goes back to). */
    private readonly sessionUser: string | undefined,
  ) {
    this.alts = [initial];
    this.seen.push(initial);
  }

  private set(next: PathConfig[]): void {
    this.alts = [];
    for (const c of next) addUnique(this.alts, c);
    for (const c of this.alts) addUnique(this.seen, c);
    this.lookupCache = null;
    this.createCache = null;
  }

  /** SET search_path = … (also SET LOCAL: reverts are handled by `mayRevert`). */
  setPath(path: readonly string[]): void {
    this.set(this.alts.map((c) => ({ path, user: c.user })));
  }

  resetPath(): void {
    this.setPath(this.defaultPath);
  }

  /** A change that may or may not take effect (set_config() inside a query). */
  maybeSetPath(path: readonly string[]): void {
    this.set([...this.alts, ...this.alts.map((c) => ({ path, user: c.user }))]);
  }

  /** SET ROLE x / SET SESSION AUTHORIZATION x: `$user` now stands for x. */
  setUser(user: string | undefined): void {
    this.set(this.alts.map((c) => ({ path: c.path, user })));
  }

  resetUser(): void {
    this.setUser(this.sessionUser);
  }

  /** DISCARD ALL: RESET ALL + SET SESSION AUTHORIZATION DEFAULT. */
  discardAll(): void {
    this.set(this.alts.map(() => ({ path: this.defaultPath, user: this.sessionUser })));
  }

  /**
   * COMMIT / ROLLBACK / ROLLBACK TO / PREPARE TRANSACTION may undo SET LOCAL (or, for rollbacks,
   * any SET) done since some earlier point: afterwards the path is one of those seen so far.
   */
  mayRevert(): void {
    this.set([...this.alts, ...this.seen]);
  }

  /** The current user when every alternative agrees on it. */
  currentUser(): string | undefined {
    const u = this.alts[0]?.user;
    return this.alts.every((c) => c.user === u) ? u : undefined;
  }

  /** Schemas an unqualified name may resolve into (union over the alternatives, in order). */
  lookupSchemas(): readonly string[] {
    if (this.lookupCache) return this.lookupCache;
    const out: string[] = [];
    for (const c of this.alts) for (const s of expandPath(c)) if (!out.includes(s)) out.push(s);
    this.lookupCache = out;
    return out;
  }

  /** Schemas an unqualified new object may be created in: the first schema of each alternative. */
  creationSchemas(): readonly string[] {
    if (this.createCache) return this.createCache;
    const out: string[] = [];
    for (const c of this.alts) {
      const first = expandPath(c)[0];
      if (first !== undefined && !out.includes(first)) out.push(first);
    }
    this.createCache = out;
    return out;
  }

  /** The path after the last statement: exact when known, else the union of the possibilities. */
  after(): string[] {
    return [...this.lookupSchemas()];
  }
}

/**
 * PostgreSQL's SplitIdentifierString for a search_path *string* value (set_config's argument):
 * comma-separated identifiers, unquoted ones folded to lower case, `"…"` kept as written (`""`
 * for a quote), surrounding whitespace ignored; names truncated to 63 bytes as PostgreSQL does.
 * Throws sql_unresolvable on a value PostgreSQL would reject (then the statement fails anyway,
 * but the extractor does not guess).
 */
export function splitIdentifierString(value: string): string[] {
  const out: string[] = [];
  let i = 0;
  const n = value.length;
  const isSpace = (c: string) => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';
  const bad = (why: string) =>
    new PortcullisError('sql_unresolvable', `search_path value "${value}" cannot be resolved: ${why}`, { value });
  while (i < n && isSpace(value[i]!)) i++;
  if (i === n) return out; // empty list
  for (;;) {
    let name: string;
    if (value[i] === '"') {
      let j = i + 1;
      name = '';
      for (;;) {
        if (j >= n) throw bad('unterminated quoted name');
        if (value[j] === '"') {
          if (value[j + 1] === '"') {
            name += '"';
            j += 2;
            continue;
          }
          break;
        }
        name += value[j];
        j++;
      }
      i = j + 1;
    } else {
      const start = i;
      while (i < n && value[i] !== ',' && !isSpace(value[i]!)) {
        if (value[i] === '"') throw bad('quote inside an unquoted name');
        i++;
      }
      if (i === start) throw bad('empty name');
      name = downcaseIdentifier(value.slice(start, i));
    }
    if (name === '') throw bad('empty name');
    out.push(truncateIdentifier(name));
    while (i < n && isSpace(value[i]!)) i++;
    if (i === n) return out;
    if (value[i] !== ',') throw bad('expected a comma');
    i++;
    while (i < n && isSpace(value[i]!)) i++;
    if (i === n) throw bad('trailing comma');
  }
}

/** PostgreSQL folds only ASCII letters of unquoted identifiers (in a UTF-8 database). */
export function downcaseIdentifier(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    out += c >= 65 && c <= 90 ? String.fromCharCode(c + 32) : s[i];
  }
  return out;
}

/** NAMEDATALEN - 1 = 63 bytes, cut on a character boundary, as PostgreSQL's truncate_identifier. */
export function truncateIdentifier(s: string): string {
  if (Buffer.byteLength(s, 'utf8') <= 63) return s;
  let bytes = 0;
  let i = 0;
  for (const ch of s) {
    const b = Buffer.byteLength(ch, 'utf8');
    if (bytes + b > 63) break;
    bytes += b;
    i += ch.length;
  }
  return s.slice(0, i);
}
