// Kubernetes API sessions. HTTP has no connection an agent "logs in" on, so a session is one use
// window of one identity on one target: opened (and audited) by its first request, kept while
// requests keep coming, closed after `idleTimeoutMs` without any request in flight, or after
// `maxDurationMs`. Killing it (operator `kill`) cuts every request still in flight — watches,
// log follows, exec streams — and the next request opens a new session.
import type { Core } from '../../core/core.js';
import type { Logger } from '../../core/log.js';
import type { Identity } from '../../policy/types.js';

export interface KubeSessionLimits {
  /** Close a session after this long without requests (default 10 minutes). */
  idleTimeoutMs?: number;
  /** Close a session this long after it opened, whatever it is doing (default: never). */
  maxDurationMs?: number;
  /**
   * Re-check the session's credential this often (config `session.revalidate`): every request
   * is authenticated anyway; this ends long-running streams (watch, exec) of a revoked or
   * expired credential.
   */
  revalidateMs?: number;
  revalidate?: (identity: Identity) => Promise<{ ok: true } | { ok: false; message: string }>;
}

export class KubeSession {
  private readonly inflight = new Set<(reason: string) => void>();
  private idleTimer: NodeJS.Timeout | null = null;
  private maxTimer: NodeJS.Timeout | null = null;
  private revalidateTimer: NodeJS.Timeout | null = null;
  closed = false;
  requests = 0;

  constructor(
    readonly id: string,
    readonly key: string,
    readonly identity: Identity,
    readonly target: string,
    private readonly owner: KubeSessions,
  ) {}

  /**
   * Registers a request in flight; `abort` cuts it when the session ends. Returns the function
   * that marks it finished.
   */
  begin(abort: (reason: string) => void): () => void {
    this.requests++;
    this.inflight.add(abort);
    this.clearIdle();
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.inflight.delete(abort);
      if (this.inflight.size === 0) this.armIdle();
    };
  }

  get active(): number {
    return this.inflight.size;
  }

  armIdle(): void {
    this.clearIdle();
    if (this.closed) return;
    this.idleTimer = setTimeout(() => void this.owner.end(this, 'idle timeout'), this.owner.idleTimeoutMs);
    this.idleTimer.unref();
  }

  armMax(ms: number): void {
    this.maxTimer = setTimeout(() => void this.owner.end(this, 'maximum session duration reached'), ms);
    this.maxTimer.unref();
  }

  armRevalidate(ms: number, check: NonNullable<KubeSessionLimits['revalidate']>): void {
    this.revalidateTimer = setInterval(() => {
      void check(this.identity).then(
        (r) => {
          if (!r.ok) void this.owner.end(this, `credential no longer valid: ${r.message}`);
        },
        () => void this.owner.end(this, 'credential could not be re-checked (fail closed)'),
      );
    }, ms);
    this.revalidateTimer.unref();
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  /** Cuts everything in flight and stops the timers (the owner closes the core session). */
  abortAll(reason: string): void {
    this.closed = true;
    this.clearIdle();
    if (this.maxTimer) clearTimeout(this.maxTimer);
    if (this.revalidateTimer) clearInterval(this.revalidateTimer);
    for (const a of [...this.inflight]) {
      try {
        a(reason);
      } catch {
        /* one stream failing to stop must not keep the others alive */
      }
    }
    this.inflight.clear();
  }
}

export class KubeSessions {
  private readonly live = new Map<string, KubeSession>();
  private readonly opening = new Map<string, Promise<KubeSession>>();
  readonly idleTimeoutMs: number;

  constructor(
    private readonly core: Core,
    private readonly log: Logger,
    private readonly limits: KubeSessionLimits = {},
  ) {
    this.idleTimeoutMs = limits.idleTimeoutMs ?? 10 * 60_000;
  }

  /** The live session of `identity` on `target`, opened (and audited) if there is none. */
  async acquire(identity: Identity, target: string, remote: string, userAgent: string | undefined): Promise<KubeSession> {
    const key = JSON.stringify([identity.subject, target]);
    const cur = this.live.get(key);
    if (cur && !cur.closed) return cur;
    const pending = this.opening.get(key);
    if (pending) return pending;
    const p = (async () => {
      const meta: Record<string, string> = { kind: 'kubernetes-api' };
      if (userAgent) meta['userAgent'] = userAgent.slice(0, 200);
      const ref: { s?: KubeSession } = {};
      const info = await this.core.openSession({ protocol: 'kubernetes', target, identity, remote, meta, kill: (reason) => void (ref.s && this.end(ref.s, reason)) });
      const s = new KubeSession(info.id, key, identity, target, this);
      ref.s = s;
      this.live.set(key, s);
      if (this.limits.maxDurationMs) s.armMax(this.limits.maxDurationMs);
      if (this.limits.revalidateMs && this.limits.revalidate) s.armRevalidate(this.limits.revalidateMs, this.limits.revalidate);
      s.armIdle();
      this.log.info('kube session opened', { session: s.id, subject: identity.subject, target });
      return s;
    })();
    this.opening.set(key, p);
    try {
      return await p;
    } finally {
      this.opening.delete(key);
    }
  }

  /** Ends a session: cuts its requests in flight and closes it in the core. */
  async end(s: KubeSession, reason: string): Promise<void> {
    if (this.live.get(s.key) === s) this.live.delete(s.key);
    const first = !s.closed;
    s.abortAll(reason);
    if (first) {
      await this.core.closeSession(s.id, reason, { requests: s.requests }).catch((e: unknown) => this.log.error('kube session close failed', { session: s.id, error: String(e) }));
      this.log.info('kube session closed', { session: s.id, reason });
    }
  }

  list(): KubeSession[] {
    return [...this.live.values()];
  }

  async closeAll(reason: string): Promise<void> {
    await Promise.all([...this.live.values()].map((s) => this.end(s, reason)));
  }
}
