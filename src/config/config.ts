// The bastion config (`portcullis.yaml`): schema, defaults, validation with file:line:field
// errors, and secret references (`env:NAME`, `file:PATH`) resolved without ever printing them.
import { dirname, isAbsolute, resolve } from 'node:path';
import { defaultIdentityConfig, identityConfigSchema, parseIdentityConfig, type IdentityConfig } from '../identity/config.js';
import { parseRecordingsConfig, recordingsConfigSchema, type RawRecordingsConfig, type RecordingsConfig } from './recordings.js';
import { ConfigError, YamlSource, resolveSecret, validateAgainst, type SourceProblem } from './source.js';

const hostPort = { type: 'string', pattern: '^(\\[[0-9a-fA-F:]+\\]|[A-Za-z0-9.-]+):\\d{1,5}$' };
const duration = { type: 'string', pattern: '^\\d+(ms|s|m|h|d)$' };
const secretRef = { type: 'string', minLength: 1 };

const targetSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['protocol'],
  properties: {
    protocol: { type: 'string', enum: ['postgres', 'ssh', 'kubernetes'] },
    description: { type: 'string' },
    // postgres
    host: { type: 'string', minLength: 1 },
    port: { type: 'integer', minimum: 1, maximum: 65535 },
    database: { type: 'string', minLength: 1 },
    user: { type: 'string', minLength: 1 },
    password: secretRef,
    sslmode: { type: 'string', enum: ['disable', 'prefer', 'require', 'verify-ca', 'verify-full'] },
    max_connections_per_identity: { type: 'integer', minimum: 1 },
    // ssh
    kind: { type: 'string', enum: ['remote', 'local'] },
    private_key: secretRef,
    host_key: { type: 'string' },
    shell: { type: 'string', minLength: 1 },
    cwd: { type: 'string', minLength: 1 },
    // kubernetes
    server: { type: 'string', pattern: '^https?://' },
    ca: secretRef,
    token: secretRef,
    client_cert: secretRef,
    client_key: secretRef,
    impersonate: { type: 'boolean' },
  },
};

export const configSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    data_dir: { type: 'string', minLength: 1 },
    policies: { type: 'string', minLength: 1 },
    listen: {
      type: 'object',
      additionalProperties: false,
      properties: { ssh: hostPort, postgres: hostPort, kubernetes: hostPort, http: hostPort },
    },
    control: {
      type: 'object',
      additionalProperties: false,
      properties: { socket: { type: 'string', minLength: 1 }, group: { type: 'string', minLength: 1 } },
    },
    audit: {
      type: 'object',
      additionalProperties: false,
      properties: {
        sync: { type: 'string', enum: ['always', 'writes', 'interval'] },
        interval: duration,
        checkpoint_every: { type: 'integer', minimum: 1 },
      },
    },
    session: {
      type: 'object',
      additionalProperties: false,
      properties: { revalidate: duration, idle_timeout: duration, max_duration: duration },
    },
    approvals: {
      type: 'object',
      additionalProperties: false,
      properties: {
        timeout: duration,
        webhook: {
          type: 'object',
          additionalProperties: false,
          required: ['url'],
          properties: { url: { type: 'string', pattern: '^https?://' }, secret: secretRef },
        },
      },
    },
    log: {
      type: 'object',
      additionalProperties: false,
      properties: { level: { type: 'string', enum: ['debug', 'info', 'warn', 'error'] } },
    },
    shutdown: {
      type: 'object',
      additionalProperties: false,
      properties: { grace: duration },
    },
    identity: identityConfigSchema,
    recordings: recordingsConfigSchema,
    tls: {
      type: 'object',
      additionalProperties: false,
      required: ['cert', 'key'],
      properties: { cert: secretRef, key: secretRef },
    },
    postgres: {
      type: 'object',
      additionalProperties: false,
      properties: { allow_plaintext: { type: 'boolean' } },
    },
    ssh: {
      type: 'object',
      additionalProperties: false,
      properties: { default_targets: { type: 'object', additionalProperties: { type: 'string', minLength: 1 } } },
    },
    targets: { type: 'object', additionalProperties: targetSchema, propertyNames: { pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' } },
  },
};

export type Protocol = 'postgres' | 'ssh' | 'kubernetes';

export interface TargetConfig {
  name: string;
  protocol: Protocol;
  description?: string;
  host?: string;
  port?: number;
  database?: string;
  user?: string;
  /** Secret references stay unresolved here; `secret()` resolves one on use. */
  password?: string;
  sslmode?: string;
  max_connections_per_identity?: number;
  kind?: 'remote' | 'local';
  private_key?: string;
  host_key?: string;
  shell?: string;
  cwd?: string;
  server?: string;
  ca?: string;
  token?: string;
  client_cert?: string;
  client_key?: string;
  impersonate?: boolean;
}

export interface BastionConfig {
  file: string;
  dataDir: string;
  policies: string;
  listen: { ssh?: string; postgres?: string; kubernetes?: string; http?: string };
  control: { socket: string; group?: string };
  audit: { sync: 'always' | 'writes' | 'interval'; intervalMs: number; checkpointEvery: number };
  session: { revalidateMs?: number; idleTimeoutMs?: number; maxDurationMs?: number };
  approvals: { timeoutMs: number; webhook?: { url: string; secret?: string } };
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** SIGTERM: how long running statements may finish before their sessions are closed (default 10 s). */
  shutdown: { graceMs: number };
  /** Who may connect: OIDC issuers, API token settings, SSH keys and user CAs (src/identity). */
  identity: IdentityConfig;
  /** Terminal recordings: part size (rotation), session size cap, fsync policy (src/config/recordings.ts). */
  recordings: RecordingsConfig;
  /** The bastion's own TLS certificate and key (PEM text, resolved from env:/file: references). */
  tls?: { cert: string; key: string };
  /** PostgreSQL front: accept plaintext (cleartext passwords without TLS). Default false. */
  postgresAllowPlaintext: boolean;
  /** SSH front: the target of an identity (or `*`) whose user name names none (`ssh.default_targets`). */
  sshDefaultTargets: Map<string, string>;
  targets: Map<string, TargetConfig>;
  /** Resolve a target's secret reference (env:/file:/literal); errors name the config field. */
  secret(target: string, field: 'password' | 'private_key' | 'ca' | 'token' | 'client_cert' | 'client_key'): string | undefined;
}

export function parseDuration(s: string): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(s);
  if (!m) throw new Error(`bad duration "${s}"`);
  const n = Number(m[1]);
  return n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
}

const REQUIRED: Record<Protocol, string[]> = {
  postgres: ['host', 'port', 'database', 'user'],
  ssh: [],
  kubernetes: ['server'],
};

type RawConfig = {
  data_dir?: string;
  policies?: string;
  listen?: BastionConfig['listen'];
  control?: { socket?: string; group?: string };
  audit?: { sync?: BastionConfig['audit']['sync']; interval?: string; checkpoint_every?: number };
  session?: { revalidate?: string; idle_timeout?: string; max_duration?: string };
  approvals?: { timeout?: string; webhook?: { url: string; secret?: string } };
  log?: { level?: BastionConfig['logLevel'] };
  shutdown?: { grace?: string };
  targets?: Record<string, Omit<TargetConfig, 'name'>>;
  identity?: unknown;
  recordings?: RawRecordingsConfig;
  tls?: { cert: string; key: string };
  postgres?: { allow_plaintext?: boolean };
  ssh?: { default_targets?: Record<string, string> };
};

export interface LoadConfigOptions {
  /** Override data_dir (the --data-dir flag). */
  dataDir?: string;
  /** Override policies (the --policies flag). */
  policies?: string;
  /** Resolve every secret reference now, so that a missing env var or file is a config error. */
  checkSecrets?: boolean;
}

export function parseConfig(src: YamlSource, opts: LoadConfigOptions = {}): BastionConfig {
  const raw = (src.value() ?? {}) as unknown;
  const problems: SourceProblem[] = validateAgainst(src, raw, configSchema);
  if (problems.length) throw new ConfigError(problems);
  const c = raw as RawConfig;
  let identity = defaultIdentityConfig();
  try {
    identity = parseIdentityConfig(src, c.identity, ['identity'], { checkSecrets: opts.checkSecrets });
  } catch (e) {
    if (e instanceof ConfigError) problems.push(...e.problems);
    else throw e;
  }
  const base = dirname(resolve(src.file));
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const targets = new Map<string, TargetConfig>();
  for (const [name, t] of Object.entries(c.targets ?? {})) {
    const need = [...REQUIRED[t.protocol]];
    if (t.protocol === 'ssh' && t.kind !== 'local') need.push('host', 'user');
    for (const k of need) {
      if ((t as Record<string, unknown>)[k] === undefined) problems.push(src.problem(['targets', name], `a ${t.protocol}${t.protocol === 'ssh' ? ` (${t.kind ?? 'remote'})` : ''} target needs "${k}"`));
    }
    targets.set(name, { ...t, name });
  }
  const dataDir = opts.dataDir ? resolve(opts.dataDir) : abs(c.data_dir ?? '/var/lib/portcullis');
  const cfg: BastionConfig = {
    file: src.file,
    dataDir,
    policies: opts.policies ? resolve(opts.policies) : abs(c.policies ?? '/etc/portcullis/policies'),
    listen: c.listen ?? {},
    control: { socket: c.control?.socket ? abs(c.control.socket) : resolve(dataDir, 'control.sock'), group: c.control?.group },
    audit: {
      sync: c.audit?.sync ?? 'writes',
      intervalMs: c.audit?.interval ? parseDuration(c.audit.interval) : 200,
      checkpointEvery: c.audit?.checkpoint_every ?? 1000,
    },
    session: {
      revalidateMs: c.session?.revalidate ? parseDuration(c.session.revalidate) : undefined,
      idleTimeoutMs: c.session?.idle_timeout ? parseDuration(c.session.idle_timeout) : undefined,
      maxDurationMs: c.session?.max_duration ? parseDuration(c.session.max_duration) : undefined,
    },
    approvals: { timeoutMs: c.approvals?.timeout ? parseDuration(c.approvals.timeout) : 5 * 60_000 },
    logLevel: c.log?.level ?? 'info',
    shutdown: { graceMs: c.shutdown?.grace ? parseDuration(c.shutdown.grace) : 10_000 },
    identity,
    recordings: parseRecordingsConfig(src, c.recordings, problems),
    postgresAllowPlaintext: c.postgres?.allow_plaintext ?? false,
    sshDefaultTargets: new Map(Object.entries(c.ssh?.default_targets ?? {})),
    targets,
    secret(target, field) {
      const t = targets.get(target);
      const ref = t?.[field];
      if (ref === undefined) return undefined;
      return resolveSecret(ref, () => src.problem(['targets', target, field], ''));
    },
  };
  for (const [who, target] of cfg.sshDefaultTargets) {
    if (targets.get(target)?.protocol !== 'ssh') problems.push(src.problem(['ssh', 'default_targets', who], `"${target}" is not an ssh target`));
  }
  if (opts.checkSecrets) {
    for (const [name, t] of targets) {
      for (const f of ['password', 'private_key', 'ca', 'token', 'client_cert', 'client_key'] as const) {
        if (t[f] === undefined) continue;
        try {
          cfg.secret(name, f);
        } catch (e) {
          if (e instanceof ConfigError) problems.push(...e.problems);
          else throw e;
        }
      }
    }
  }
  if (c.approvals?.webhook) {
    const wh = c.approvals.webhook;
    try {
      cfg.approvals.webhook = { url: wh.url, ...(wh.secret !== undefined ? { secret: resolveSecret(wh.secret, () => src.problem(['approvals', 'webhook', 'secret'], '')) } : {}) };
    } catch (e) {
      if (e instanceof ConfigError) problems.push(...e.problems);
      else throw e;
    }
  }
  if (c.tls) {
    try {
      cfg.tls = {
        cert: resolveSecret(c.tls.cert, () => src.problem(['tls', 'cert'], '')),
        key: resolveSecret(c.tls.key, () => src.problem(['tls', 'key'], '')),
      };
    } catch (e) {
      if (e instanceof ConfigError) problems.push(...e.problems);
      else throw e;
    }
  }
  if (problems.length) throw new ConfigError(problems);
  return cfg;
}

export function loadConfig(file: string, opts: LoadConfigOptions = {}): BastionConfig {
  return parseConfig(YamlSource.read(file), opts);
}

export function defaultConfigPath(): string {
  return process.env.PORTCULLIS_CONFIG ?? '/etc/portcullis/portcullis.yaml';
}
