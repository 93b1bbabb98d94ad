// Failed-authentication limiting per source address: a token bucket of `failures` tokens refilled
// over `perMs`; each failure takes one; a source whose bucket runs dry is refused (without even
// looking at its credential) for `cooldownMs`. Successes cost nothing. Memory is bounded.
// IPv6 sources share one bucket per /64 (one host usually holds a whole /64).
import { isIP } from 'node:net';
import { addressIn, normalizeAddress } from './ssh-wire.js';
import type { RateLimitConfig } from './config.js';

interface Bucket {
  tokens: number;
  updated: number;
  blockedUntil: number;
  /** Refusals while blocked that were not audited one by one. */
  suppressed: number;
}

export interface FailureOutcome {
  /** The source is blocked from now on (this failure emptied the bucket). */
  blocked: boolean;
  blockedUntil?: number;
}

/** The /64 prefix of an IPv6 address (`2001:db8:0:1::/64`), or null when it is not one. */
export function ipv6Prefix64(a: string): string | null {
  if (!a.includes(':')) return null;
  let s = a.split('%')[0];
  if (isIP(s) !== 6) return null;
  const v4 = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (v4) {
    const o = v4.slice(2).map(Number);
    s = `${v4[1]}${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}`;
  }
  const [head, tail] = s.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail !== undefined ? [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t] : h;
  if (groups.length !== 8) return null;
  return groups.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':') + '::/64';
}

/** The bucket a source address counts against. */
export function sourceKey(remote: string): string {
  const a = normalizeAddress(remote);
  return ipv6Prefix64(a) ?? a;
}

export class FailureLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly cfg: RateLimitConfig,
    private readonly now: () => number,
  ) {}

  private exempt(remote: string): boolean {
    return this.cfg.exempt !== undefined && addressIn(this.cfg.exempt, remote);
  }

  private refill(b: Bucket, t: number): void {
    const rate = this.cfg.failures / this.cfg.perMs;
    b.tokens = Math.min(this.cfg.failures, b.tokens + Math.max(0, t - b.updated) * rate);
    b.updated = t;
  }

  /** Unix ms until which `remote` is refused, or undefined when it may try. */
  blockedUntil(remote0: string): number | undefined {
    const remote = sourceKey(remote0);
    const b = this.buckets.get(remote);
    if (!b || !b.blockedUntil) return undefined;
    const t = this.now();
    if (t < b.blockedUntil) return b.blockedUntil;
    // cooldown over: a fresh bucket
    b.blockedUntil = 0;
    b.tokens = this.cfg.failures;
    b.updated = t;
    return undefined;
  }

  /** Count a refusal during a block; returns how many were counted since the last call to `takeSuppressed`. */
  noteSuppressed(remote0: string): void {
    const b = this.buckets.get(sourceKey(remote0));
    if (b) b.suppressed++;
  }

  takeSuppressed(remote0: string): number {
    const b = this.buckets.get(sourceKey(remote0));
    if (!b) return 0;
    const n = b.suppressed;
    b.suppressed = 0;
    return n;
  }

  /** Record a failure from `remote`. */
  fail(remote0: string): FailureOutcome {
    if (this.exempt(normalizeAddress(remote0))) return { blocked: false };
    const remote = sourceKey(remote0);
    const t = this.now();
    let b = this.buckets.get(remote);
    if (!b) {
      this.evict(t);
      b = { tokens: this.cfg.failures, updated: t, blockedUntil: 0, suppressed: 0 };
    } else this.buckets.delete(remote); // re-insert: the Map's order is least recently failed first
    this.buckets.set(remote, b);
    this.refill(b, t);
    b.tokens -= 1;
    if (b.tokens < 1) {
      b.blockedUntil = t + this.cfg.cooldownMs;
      return { blocked: true, blockedUntil: b.blockedUntil };
    }
    return { blocked: false };
  }

  /** Sources tracked now (for tests and metrics). */
  get size(): number {
    return this.buckets.size;
  }

  private evict(t: number): void {
    if (this.buckets.size < this.cfg.maxSources) return;
    // drop sources whose bucket has refilled and which are not blocked; then the oldest
    let scanned = 0;
    for (const [k, b] of this.buckets) {
      if (++scanned > 1000) break;
      this.refill(b, t);
      if (b.blockedUntil <= t && b.tokens >= this.cfg.failures) this.buckets.delete(k);
    }
    while (this.buckets.size >= this.cfg.maxSources) {
      const first = this.buckets.keys().next();
      if (first.done) break;
      this.buckets.delete(first.value);
    }
  }
}
