// The bastion process's life: which listeners are up (readiness), sd_notify (READY, WATCHDOG,
// RELOADING, STOPPING), and the signals — SIGHUP reloads (one at a time; a SIGHUP during a reload
// runs one more afterwards), SIGTERM/SIGINT stop once, through ordered shutdown steps.
import type { Logger } from '../core/log.js';
import type { ReadinessSource } from './health.js';
import type { Notifier } from './sdnotify.js';

export interface ShutdownStep {
  name: string;
  run(): unknown;
  /** Abandon the step after this long (logged as failed) so that the next steps still run. */
  timeoutMs?: number;
}

/**
 * Runs the steps in order; a step that throws or times out is logged and the next one still runs
 * (the audit log must be closed whatever happened before). Returns the names of the failed steps.
 */
export async function runShutdown(steps: ShutdownStep[], log: Logger): Promise<string[]> {
  const failed: string[] = [];
  for (const s of steps) {
    const t0 = Date.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      const work = Promise.resolve().then(() => s.run());
      if (s.timeoutMs !== undefined) {
        const limit = s.timeoutMs;
        await Promise.race([
          work,
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`did not finish within ${limit} ms`)), limit);
          }),
        ]);
      } else await work;
      log.debug('shutdown step done', { step: s.name, ms: Date.now() - t0 });
    } catch (e) {
      failed.push(s.name);
      log.error('shutdown step failed', { step: s.name, error: (e as Error).message, ms: Date.now() - t0 });
    } finally {
      if (timer) clearTimeout(timer);
    }
  }
  return failed;
}

export class Lifecycle implements ReadinessSource {
  private readonly up = new Map<string, boolean>();
  private startedFlag = false;
  private stoppingFlag = false;

  constructor(
    private readonly log: Logger,
    readonly notifier: Notifier,
  ) {}

  /** A listener exists; it counts against readiness until `listenerUp(name)`. */
  listenerStarting(name: string): void {
    this.up.set(name, false);
  }

  listenerUp(name: string): void {
    this.up.set(name, true);
  }

  listenerDown(name: string): void {
    if (this.up.has(name)) this.up.set(name, false);
  }

  listeners(): ReadonlyMap<string, boolean> {
    return this.up;
  }

  get started(): boolean {
    return this.startedFlag;
  }

  get stopping(): boolean {
    return this.stoppingFlag;
  }

  /** Every listener accepts connections: READY=1 and the watchdog starts. */
  ready(status: string): void {
    this.startedFlag = true;
    this.notifier.ready(status);
    this.notifier.startWatchdog();
  }

  private handlers: { reload(): Promise<string>; stop(signal: string): Promise<number> } | null = null;
  private pendingStop: string | null = null;
  private pendingHup = false;
  private trapped = false;
  private resolveExit: ((code: number) => void) | null = null;
  private reloading: Promise<void> | null = null;
  private again = false;
  private readonly onHupSignal = () => this.onHup();
  private readonly onTermSignal = () => this.onStop('SIGTERM');
  private readonly onIntSignal = () => this.onStop('SIGINT');

  /**
   * Take SIGHUP/SIGTERM/SIGINT from now on (call it early in start-up: without a handler the
   * kernel ends the process at once, between any two statements). Until `run()`, a stop or a
   * reload is remembered and carried out when run() starts.
   */
  trapSignals(): void {
    if (this.trapped) return;
    this.trapped = true;
    process.on('SIGHUP', this.onHupSignal);
    process.on('SIGTERM', this.onTermSignal);
    process.on('SIGINT', this.onIntSignal);
  }

  /** Give the signals back (start-up failed). */
  untrapSignals(): void {
    if (!this.trapped) return;
    this.trapped = false;
    process.off('SIGHUP', this.onHupSignal);
    process.off('SIGTERM', this.onTermSignal);
    process.off('SIGINT', this.onIntSignal);
  }

  /**
   * Handle the signals until stopped. `reload` returns the STATUS= text for systemd; `stop` runs
   * the shutdown and returns the exit code this promise resolves with.
   */
  run(handlers: { reload(): Promise<string>; stop(signal: string): Promise<number> }): Promise<number> {
    this.trapSignals();
    this.handlers = handlers;
    return new Promise<number>((resolve) => {
      this.resolveExit = resolve;
      if (this.pendingStop) this.onStop(this.pendingStop);
      else if (this.pendingHup) this.onHup();
    });
  }

  private onHup(): void {
    if (this.stoppingFlag) return;
    if (!this.handlers) {
      this.pendingHup = true;
      return;
    }
    if (this.reloading) {
      this.again = true;
      return;
    }
    const handlers = this.handlers;
    this.reloading = (async () => {
      do {
        this.again = false;
        this.notifier.reloading('reloading the config and policies');
        let status = 'serving';
        try {
          status = await handlers.reload();
        } catch (e) {
          this.log.error('reload failed; keeping the running config and policy', { error: (e as Error).message });
        }
        if (!this.stoppingFlag) this.notifier.ready(status);
      } while (this.again && !this.stoppingFlag);
    })().finally(() => {
      this.reloading = null;
    });
  }

  private onStop(signal: string): void {
    if (!this.handlers) {
      this.pendingStop ??= signal;
      this.log.info('stop requested during start-up: stopping once started', { signal });
      return;
    }
    if (this.stoppingFlag) {
      this.log.warn('already stopping', { signal });
      return;
    }
    this.stoppingFlag = true;
    this.notifier.stopping(`stopping (${signal})`);
    const handlers = this.handlers;
    void (async () => {
      if (this.reloading) await this.reloading;
      let code = 1;
      try {
        code = await handlers.stop(signal);
      } catch (e) {
        this.log.error('shutdown failed', { error: (e as Error).message });
      }
      this.untrapSignals();
      this.notifier.close();
      this.resolveExit?.(code);
    })();
  }
}
