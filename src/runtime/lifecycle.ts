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

  /**
   * Handle SIGHUP/SIGTERM/SIGINT until stopped. `reload` returns the STATUS= text for systemd;
   * `stop` runs the shutdown and returns the exit code this promise resolves with.
   */
  run(handlers: { reload(): Promise<string>; stop(signal: string): Promise<number> }): Promise<number> {
    return new Promise<number>((resolveExit) => {
      let reloading: Promise<void> | null = null;
      let again = false;
      const doReload = async (): Promise<void> => {
        do {
          again = false;
          this.notifier.reloading('reloading the config and policies');
          let status = 'serving';
          try {
            status = await handlers.reload();
          } catch (e) {
            this.log.error('reload failed; keeping the running config and policy', { error: (e as Error).message });
          }
          if (!this.stoppingFlag) this.notifier.ready(status);
        } while (again && !this.stoppingFlag);
      };
      const onHup = () => {
        if (this.stoppingFlag) return;
        if (reloading) {
          again = true;
          return;
        }
        reloading = doReload().finally(() => {
          reloading = null;
        });
      };
      const onStop = (signal: string) => {
        if (this.stoppingFlag) {
          this.log.warn('already stopping', { signal });
          return;
        }
        this.stoppingFlag = true;
        this.notifier.stopping(`stopping (${signal})`);
        void (async () => {
          if (reloading) await reloading;
          let code = 1;
          try {
            code = await handlers.stop(signal);
          } catch (e) {
            this.log.error('shutdown failed', { error: (e as Error).message });
          }
          process.off('SIGHUP', onHup);
          process.off('SIGTERM', onTerm);
          process.off('SIGINT', onInt);
          this.notifier.close();
          resolveExit(code);
        })();
      };
      const onTerm = () => onStop('SIGTERM');
      const onInt = () => onStop('SIGINT');
      process.on('SIGHUP', onHup);
      process.on('SIGTERM', onTerm);
      process.on('SIGINT', onInt);
    });
  }
}
