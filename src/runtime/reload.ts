// SIGHUP: reload the config file and the policies as one change. The new config is parsed and
// validated first (errors name file:line:field), then the policies are compiled and swapped in
// by the core; only when both succeeded are the config's live settings applied. A bad config or
// a bad policy changes nothing (the old policy keeps deciding) and says why. Open sessions are
// never touched: they decide their next statement against the new snapshot.
//
// Live: the policies (contents of the policies directory), `log.level`, `shutdown.grace`.
// Everything else (listeners, data_dir, the policies path, targets, identity, TLS, audit) is
// read at start-up: a change is reported as needing a restart.
import { isDeepStrictEqual } from 'node:util';
import { YamlSource } from '../config/source.js';
import type { BastionConfig } from '../config/config.js';
import type { Core } from '../core/core.js';
import type { RootLogger } from '../core/log.js';

export const LIVE_KEYS = ['log', 'shutdown'] as const;

export interface ReloadTarget {
  core: Core;
  log: RootLogger;
  /** The running config; `apply` is given the new one when the reload succeeded. */
  config: BastionConfig;
  /** Parse and validate the config file again (throws a ConfigError); absent: policies only (the demo). */
  load?: () => BastionConfig;
  apply(next: BastionConfig): void;
  /** Called when the config could not be read (the core counts policy outcomes itself). */
  onConfigError?(): void;
}

export interface ReloadResult {
  ok: boolean;
  /** One line for systemd's STATUS= and the operator. */
  status: string;
  restartNeeded: string[];
}

/** Top-level config keys whose raw YAML value differs between two files (unreadable → []). */
export function changedKeys(before: unknown, after: unknown): string[] {
  const a = (before ?? {}) as Record<string, unknown>;
  const b = (after ?? {}) as Record<string, unknown>;
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => !isDeepStrictEqual(a[k], b[k])).sort();
}

export class Reloader {
  private raw: unknown;

  constructor(private readonly t: ReloadTarget) {
    this.raw = t.load ? rawOf(t.config.file) : undefined;
  }

  reload(): ReloadResult {
    const { core, log } = this.t;
    let next: BastionConfig | null = null;
    let raw: unknown;
    if (this.t.load) {
      try {
        next = this.t.load();
        raw = rawOf(this.t.config.file);
      } catch (e) {
        log.error('reload: the config is invalid; keeping the running config and policy', { file: this.t.config.file, error: (e as Error).message });
        this.t.onConfigError?.();
        return { ok: false, status: `serving policy ${core.policy.version}; last reload failed: invalid config`, restartNeeded: [] };
      }
    }
    const r = core.reloadPolicies();
    if (!r.ok) return { ok: false, status: `serving policy ${core.policy.version}; last reload failed: invalid policy`, restartNeeded: [] };
    let restartNeeded: string[] = [];
    if (next) {
      restartNeeded = changedKeys(this.raw, raw).filter((k) => !(LIVE_KEYS as readonly string[]).includes(k));
      if (next.logLevel !== log.level) log.setLevel(next.logLevel);
      this.t.apply(next);
      this.raw = raw;
      if (restartNeeded.length) log.warn('reload: these settings changed but apply only after a restart', { keys: restartNeeded.join(', ') });
    }
    log.info('reloaded', { policy: r.version, rules: core.policy.rules.length, logLevel: log.level });
    return { ok: true, status: `serving policy ${r.version}`, restartNeeded };
  }
}

function rawOf(file: string): unknown {
  try {
    return YamlSource.read(file).value();
  } catch {
    return undefined;
  }
}
