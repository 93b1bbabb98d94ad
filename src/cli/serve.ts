// `portcullis serve [--demo]`: the bastion process. Loads config and policies (fail closed on
// any error), opens the store and the write-ahead audit log, starts the listeners, then hands
// the process to src/runtime/lifecycle.ts: sd_notify READY/WATCHDOG, SIGHUP reloads config +
// policies atomically (src/runtime/reload.ts; a bad one keeps the old), SIGTERM drains and stops
// (stop accepting, let running statements finish within shutdown.grace, refuse held requests,
// flush audit and recordings). Health, readiness and metrics: src/runtime/health.ts.
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join, resolve } from 'node:path';
import { defaultConfigPath, loadConfig, parseConfig, type BastionConfig } from '../config/config.js';
import { YamlSource } from '../config/source.js';
import { startControlServer } from '../control/server.js';
import { Core } from '../core/core.js';
import { lockDataDir } from '../core/lock.js';
import { createLogger, defaultLogFormat } from '../core/log.js';
import { Metrics } from '../core/metrics.js';
import { setSummaryMasker } from '../core/summary.js';
import { targetCredentials, type PostgresCredentials } from '../identity/credentials.js';
import { IdentityService, parseBoundKey } from '../identity/index.js';
import { opensshPrivateKey, publicBlobOf, publicKeyLine } from '../identity/ssh-wire.js';
import { Masker } from '../masking/index.js';
import { initFacts } from '../policy/actions.js';
import type { CompiledPolicy } from '../policy/compile.js';
import { startPostgresProxy } from '../proxy/postgres/index.js';
import { demoKubeTarget, startKubeFromConfig, writeDemoKubeconfig } from '../proxy/kube/wiring.js';
import { startSshProxy, sshTargetsFromConfig } from '../proxy/ssh/index.js';
import { assetDir, isSea, packageRoot } from '../runtime/assets.js';
import { healthHandler } from '../runtime/health.js';
import { Lifecycle, runShutdown } from '../runtime/lifecycle.js';
import { Reloader } from '../runtime/reload.js';
import { openNotifier } from '../runtime/sdnotify.js';
import { openStore } from '../store/index.js';
import { EXIT, UsageError, VERSION } from './util.js';

/**
 * The demo's policies: examples/policies of the checkout; inside the single binary, a copy of the
 * embedded ones under <data-dir>/policies (made once, then the operator's to edit).
 */
function demoPolicies(dataDir: string): string {
  if (!isSea()) return join(packageRoot(), 'examples', 'policies');
  const dir = join(dataDir, 'policies');
  if (!existsSync(dir)) cpSync(assetDir('examples/policies'), dir, { recursive: true });
  return dir;
}

function splitHostPort(hp: string): { host: string; port: number } {
  const i = hp.lastIndexOf(':');
  return { host: hp.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hp.slice(i + 1)) };
}

function listen(server: Server, hp: string): Promise<void> {
  const { host, port } = splitHostPort(hp);
  return new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(port, host, () => {
      server.off('error', rej);
      res();
    });
  });
}

interface DemoResources {
  stop(): Promise<void>;
  lines: string[];
  env: Record<string, string>;
}

async function startDemo(dataDir: string, listenAt: ListenOverrides = {}, kubeUpstream?: string): Promise<{ config: BastionConfig; demo: DemoResources }> {
  mkdirSync(dataDir, { recursive: true, mode: 0o750 });
  const lines: string[] = [];
  const stops: (() => Promise<void>)[] = [];
  const policies = demoPolicies(dataDir);
  let pgTarget = '';
  try {
    const { startLocalPostgres } = await import('../demo/localpg.js');
    const { seedShop } = await import('../demo/seed.js');
    const pg = await startLocalPostgres({ dir: join(dataDir, 'pg') });
    stops.push(() => pg.stop());
    await pg.createDatabase('shop');
    await seedShop(pg.connectionString('shop'));
    lines.push(`postgres target "shop": throwaway PostgreSQL ${pg.version} on ${pg.host}:${pg.port} (data in ${pg.dir}), seeded`);
    pgTarget = [
      '  shop:',
      '    protocol: postgres',
      `    host: ${pg.host}`,
      `    port: ${pg.port}`,
      '    database: shop',
      `    user: ${pg.superuser}`,
      '    password: env:PORTCULLIS_DEMO_PG_PASSWORD',
    ].join('\n');
    process.env.PORTCULLIS_DEMO_PG_PASSWORD = pg.password;
  } catch (e) {
    lines.push(`postgres target "shop": skipped — ${(e as Error).message}`);
  }
  const tls = demoTlsCert(dataDir);
  if (tls) lines.push(`TLS: self-signed certificate for 127.0.0.1 in ${tls.cert}`);
  const kube = kubeUpstream ? demoKubeTarget(kubeUpstream, dataDir) : null;
  if (kube) lines.push(kube.line);
  const yaml = [
    `data_dir: ${JSON.stringify(dataDir)}`,
    ...(tls ? ['tls:', `  cert: ${JSON.stringify('file:' + tls.cert)}`, `  key: ${JSON.stringify('file:' + tls.key)}`] : []),
    'postgres:',
    '  allow_plaintext: true   # the demo listens on 127.0.0.1 only',
    `policies: ${JSON.stringify(policies)}`,
    'listen:',
    `  ssh: ${listenAt.ssh ?? '127.0.0.1:2222'}`,
    `  postgres: ${listenAt.postgres ?? '127.0.0.1:6432'}`,
    `  http: ${listenAt.http ?? '127.0.0.1:9187'}`,
    ...(kube?.listen ?? []),
    'audit:',
    '  sync: writes',
    'ssh:',
    '  default_targets: { demo-agent: sandbox }',
    'targets:',
    pgTarget,
    '  sandbox:',
    '    protocol: ssh',
    '    kind: local',
    `    cwd: ${JSON.stringify(join(dataDir, 'sandbox'))}`,
    ...(kube?.target ?? []),
  ]
    .filter((l) => l !== '')
    .join('\n');
  const file = join(dataDir, 'portcullis.demo.yaml');
  writeFileSync(file, yaml + '\n', { mode: 0o640 });
  mkdirSync(join(dataDir, 'sandbox'), { recursive: true });
  const config = parseConfig(YamlSource.parse(file, yaml), {});
  return {
    config,
    demo: {
      lines,
      env: {},
      async stop() {
        for (const s of stops.reverse()) await s().catch(() => undefined);
      },
    },
  };
}

type ListenOverrides = Partial<Record<'ssh' | 'postgres' | 'kubernetes' | 'http', string>>;

/** `--listen NAME=HOST:PORT` (repeatable): overrides a listener of the config or the demo. */
function parseListenFlags(flags: string[]): ListenOverrides {
  const out: ListenOverrides = {};
  for (const f of flags) {
    const m = /^(ssh|postgres|kubernetes|http)=((?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5})$/.exec(f);
    if (!m) throw new UsageError(`--listen ${f}: expected NAME=HOST:PORT with NAME one of ssh, postgres, kubernetes, http`);
    out[m[1] as keyof ListenOverrides] = m[2];
  }
  return out;
}

/** The bastion's masking key (HMAC for `hash` masks): <data-dir>/keys/mask-hmac.key, made once. */
function maskingKey(dataDir: string): Buffer {
  const dir = join(dataDir, 'keys');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'mask-hmac.key');
  if (!existsSync(file)) writeFileSync(file, randomBytes(32).toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
  return Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
}

/**
 * One path out: audit summaries and log lines pass through the same masker (the policy's
 * detector masks plus every default-on detector) before they are written.
 */
function textMasker(policy: CompiledPolicy, hmacKey: Buffer): Masker {
  const masks = policy.rules.flatMap((r) => r.masks.filter((m) => m.detector !== undefined));
  return new Masker({ masks, hmacKey, defaultDetectors: true });
}

/** A self-signed certificate for the demo's listeners (openssl), or null when openssl is missing. */
function demoTlsCert(dataDir: string): { cert: string; key: string } | null {
  const dir = join(dataDir, 'keys');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const cert = join(dir, 'tls.crt');
  const key = join(dir, 'tls.key');
  if (existsSync(cert) && existsSync(key)) return { cert, key };
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '365', '-subj', '/CN=portcullis-demo', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    return { cert, key };
  } catch {
    return null;
  }
}

/** The demo's identities: API tokens for demo-agent and demo-oncall, an SSH key for demo-agent. */
async function demoIdentities(identity: IdentityService, config: BastionConfig): Promise<Record<string, string>> {
  const agent = await identity.createToken({ subject: 'demo-agent', groups: ['agents'], ttlMs: 7 * 86_400_000 });
  const oncall = await identity.createToken({ subject: 'demo-oncall', groups: ['oncall'], ttlMs: 7 * 86_400_000 });
  const keyFile = join(config.dataDir, 'demo-agent_ed25519');
  const { privateKey } = generateKeyPairSync('ed25519');
  const pub = publicBlobOf(privateKey);
  const pubLine = publicKeyLine(pub.type, pub.blob, 'demo-agent@portcullis-demo');
  writeFileSync(keyFile, opensshPrivateKey(privateKey, 'demo-agent@portcullis-demo'), { mode: 0o600 });
  writeFileSync(keyFile + '.pub', pubLine + '\n', { mode: 0o644 });
  config.identity.ssh.authorizedKeys.push({ subject: 'demo-agent', groups: ['agents'], keys: [parseBoundKey(pubLine)] });
  return { PORTCULLIS_DEMO_TOKEN: agent.token, PORTCULLIS_DEMO_ONCALL_TOKEN: oncall.token, PORTCULLIS_DEMO_SSH_KEY: keyFile };
}

export async function serve(opts: { config?: string; dataDir?: string; policies?: string; demo: boolean; kubeUpstream?: string; listen?: string[] }): Promise<number> {
  const listenAt = parseListenFlags(opts.listen ?? []);
  let config: BastionConfig;
  let demo: DemoResources | null = null;
  let unlock: (() => void) | null = null;
  if (opts.demo) {
    const dir = resolve(opts.dataDir ?? 'portcullis-demo');
    mkdirSync(dir, { recursive: true, mode: 0o750 });
    unlock = lockDataDir(dir);
    try {
      const r = await startDemo(dir, listenAt, opts.kubeUpstream);
      config = r.config;
      demo = r.demo;
    } catch (e) {
      unlock();
      throw e;
    }
  } else {
    config = loadConfig(opts.config ?? defaultConfigPath(), { dataDir: opts.dataDir, policies: opts.policies, checkSecrets: true });
    Object.assign(config.listen, listenAt);
  }
  let maskLogText: (s: string) => string = (x) => x;
  const log = createLogger(config.logLevel, undefined, (x) => maskLogText(x), defaultLogFormat());
  const metrics = new Metrics({ version: VERSION });
  await initFacts();
  mkdirSync(config.dataDir, { recursive: true, mode: 0o750 });
  try {
    unlock ??= lockDataDir(config.dataDir);
  } catch (e) {
    await demo?.stop();
    throw e;
  }
  const release = unlock;
  let store: Awaited<ReturnType<typeof openStore>> | null = null;
  let core: Core;
  try {
    store = await openStore(config.dataDir);
    core = await Core.open({ dataDir: config.dataDir, policiesDir: config.policies, audit: config.audit, approvalTimeoutMs: config.approvals.timeoutMs, webhook: config.approvals.webhook, store, log, auditIo: metrics.auditIo(), recordings: config.recordings });
  } catch (e) {
    await store?.close().catch(() => undefined);
    release();
    await demo?.stop();
    throw e;
  }
  const openedStore = store;
  metrics.attach(core);
  const hmacKey = maskingKey(config.dataDir);
  const installMasker = (p: CompiledPolicy) => {
    const m = textMasker(p, hmacKey);
    setSummaryMasker((x) => m.maskText(x));
    maskLogText = (x) => m.maskText(x);
  };
  installMasker(core.policy);
  core.events.on('policy.reloaded', () => installMasker(core.policy));
  const identity = new IdentityService(config.identity, store, {
    log,
    audit: (e) =>
      core.audit
        .append({ type: 'identity.rejected', protocol: e.protocol, data: { remote: e.remote, code: e.code, message: e.message, subjectHint: e.subjectHint ?? null, method: e.method ?? null, suppressed: e.suppressed ?? 0 } }, { durable: true })
        .then(() => undefined),
  });
  for (const f of await identity.prefetch()) log.warn('OIDC issuer keys not loaded at start-up', { ...f });
  const demoEnv = demo ? await demoIdentities(identity, config) : null;

  const lifecycle = new Lifecycle(log, await openNotifier(log));
  lifecycle.trapSignals();
  const http = createServer(healthHandler({ core, metrics, lifecycle, log }));
  const listeners: string[] = [];
  // Shutdown (SIGTERM): each proxy registers how it stops accepting and drains its sessions
  // (given the grace period); they all run together, after which the rest closes in order.
  const drains: { name: string; close(graceMs: number): Promise<void> }[] = [];
  let control: Awaited<ReturnType<typeof startControlServer>> | null = null;
  const shutdown = async (graceMs: number): Promise<string[]> => {
    const draining = drains.map((d) => d.close(graceMs).catch((e: unknown) => log.error('closing a listener failed', { listener: d.name, error: (e as Error).message })));
    return runShutdown(
      [
        { name: 'refuse held requests', run: () => core.approvals.expireAll('the bastion is stopping') },
        { name: 'finish running statements and close sessions', run: () => Promise.all(draining), timeoutMs: graceMs + 5_000 },
        { name: 'control socket', run: () => control?.close() },
        { name: 'core: sessions, recordings, audit flush', run: () => core.close() },
        { name: 'store', run: () => openedStore.close() },
        { name: 'demo', run: () => demo?.stop() },
        { name: 'health listener', run: () => closeHttp(http) },
      ],
      log,
    );
  };
  const off: string[] = [];
  let kubeProxy: Awaited<ReturnType<typeof startKubeFromConfig>>['proxy'] | null = null;
  let sshProxy: Awaited<ReturnType<typeof startSshProxy>> | null = null;
  try {
    lifecycle.listenerStarting('control');
    control = await startControlServer(core, { socket: config.control.socket, group: config.control.group, log, identity });
    lifecycle.listenerUp('control');
    listeners.push(`control socket ${config.control.socket}`);
    if (config.listen.http) {
      lifecycle.listenerStarting('http');
      await listen(http, config.listen.http);
      lifecycle.listenerUp('http');
      listeners.push(`health and /metrics on http://${config.listen.http}`);
    }
    let pgProxy: Awaited<ReturnType<typeof startPostgresProxy>> | null = null;
    if (config.listen.postgres) {
      const { host, port } = splitHostPort(config.listen.postgres);
      const pgTargets = [...config.targets.values()].filter((t) => t.protocol === 'postgres');
      lifecycle.listenerStarting('postgres');
      pgProxy = await startPostgresProxy(core, {
        host,
        port,
        log,
        dataDir: config.dataDir,
        hmacKey,
        tls: config.tls,
        allowPlaintext: config.postgresAllowPlaintext,
        authenticate: (user, password, ctx) => identity.verifyBearer(password, { remote: ctx.remote, protocol: 'postgres', userHint: user }),
        session: {
          idleTimeoutMs: config.session.idleTimeoutMs,
          maxDurationMs: config.session.maxDurationMs,
          ...(config.session.revalidateMs ? { revalidateMs: config.session.revalidateMs, revalidate: (id: Parameters<IdentityService['check']>[0]) => identity.check(id) } : {}),
        },
        targets: (name) => {
          const t = config.targets.get(name);
          if (t?.protocol !== 'postgres') return undefined;
          const c = targetCredentials(config, name) as PostgresCredentials;
          const mode = c.sslmode;
          return {
            host: c.host,
            port: c.port,
            database: c.database,
            user: c.user,
            password: c.password?.reveal(),
            tls: !mode || mode === 'disable' ? false : { mode: mode as 'prefer' | 'require' | 'verify-ca' | 'verify-full', ca: config.secret(name, 'ca') },
          };
        },
      });
      const pg = pgProxy;
      drains.push({ name: 'postgres', close: (graceMs) => pg.close({ graceMs }) });
      lifecycle.listenerUp('postgres');
      listeners.push(`PostgreSQL on ${config.listen.postgres} (${config.tls ? 'TLS' : 'no TLS'}${config.postgresAllowPlaintext ? ', plaintext allowed' : ''}; targets: ${pgTargets.map((t) => t.name).join(', ') || 'none'})`);
    }
    if (config.listen.ssh) {
      const { host, port } = splitHostPort(config.listen.ssh);
      const targets = sshTargetsFromConfig(config);
      lifecycle.listenerStarting('ssh');
      sshProxy = await startSshProxy(core, { host, port, log, dataDir: config.dataDir, identity, hmacKey, targets, defaultTargets: config.sshDefaultTargets, session: { idleTimeoutMs: config.session.idleTimeoutMs, maxDurationMs: config.session.maxDurationMs, ...(config.session.revalidateMs ? { revalidateMs: config.session.revalidateMs, revalidate: (id: Parameters<IdentityService['check']>[0]) => identity.check(id) } : {}) } });
      const sp = sshProxy;
      drains.push({ name: 'ssh', close: () => sp.close() });
      lifecycle.listenerUp('ssh');
      for (const n of sp.notes) log.info(n);
      listeners.push(`SSH on ${config.listen.ssh} (host keys ${sp.hostKeys.map((k) => k.fingerprint).join(', ')}; targets: ${[...targets.keys()].join(', ') || 'none'})`);
    }
    if (config.listen.kubernetes) {
      lifecycle.listenerStarting('kubernetes');
      const k = await startKubeFromConfig(core, config, identity, hmacKey, log);
      kubeProxy = k.proxy;
      const kp = k.proxy;
      drains.push({ name: 'kubernetes', close: () => kp.close() });
      lifecycle.listenerUp('kubernetes');
      listeners.push(k.line);
    } else off.push('Kubernetes API: off (no upstream API server configured; --kube-upstream KUBECONFIG)');
  } catch (e) {
    // A listener could not start: close what did, so the process exits with the error.
    log.error('start-up failed; stopping', { error: (e as Error).message });
    await shutdown(0);
    lifecycle.untrapSignals();
    lifecycle.notifier.close();
    release();
    throw e;
  }

  const out = (s: string) => process.stdout.write(s + '\n');
  out(`portcullis ${opts.demo ? 'demo ' : ''}serving from ${config.dataDir}`);
  out(`policies: ${config.policies} (${core.policy.rules.length} rules, version ${core.policy.version})`);
  for (const l of demo?.lines ?? []) out(l);
  for (const l of listeners) out(`listening: ${l}`);
  for (const l of off) out(l);
  if (demo && demoEnv) {
    const env = { ...demoEnv, PORTCULLIS_DEMO_DATA_DIR: config.dataDir, PORTCULLIS_DEMO_POLICIES: config.policies };
    writeFileSync(join(config.dataDir, 'demo.env'), Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n') + '\n', { mode: 0o600 });
    out(`identities: demo-agent (group agents) and demo-oncall (group oncall); API tokens and the SSH key are in ${join(config.dataDir, 'demo.env')}`);
    out(`try: echo '{"protocol":"postgres","identity":{"subject":"demo-agent","groups":["agents"]},"target":"shop","sql":"DELETE FROM customers"}' | portcullis policy eval --policies ${config.policies}`);
    out(`     portcullis audit verify --data-dir ${config.dataDir}`);
    if (kubeProxy) out(`     kubectl --kubeconfig ${writeDemoKubeconfig(config, demoEnv.PORTCULLIS_DEMO_TOKEN!)} get pods`);
    if (sshProxy) out(`     ssh -i ${demoEnv.PORTCULLIS_DEMO_SSH_KEY} -p ${sshProxy.port} demo-agent+sandbox@127.0.0.1 'ls -la; rm -rf /srv'`);
  }
  out('portcullis ready');
  lifecycle.ready(`serving policy ${core.policy.version}; ${listeners.length} listeners`);
  log.info('ready', { policy: core.policy.version, listeners: [...lifecycle.listeners().keys()].join(', '), startupMs: Math.round(performance.now()) });

  const reloader = new Reloader({
    core,
    log,
    config,
    load: opts.demo ? undefined : () => loadConfig(config.file, { dataDir: opts.dataDir, policies: opts.policies, checkSecrets: true }),
    apply: (next) => {
      config.shutdown = next.shutdown;
    },
    onConfigError: () => metrics.reloadFailed(),
  });
  return lifecycle.run({
    reload: async () => reloader.reload().status,
    stop: async (signal) => {
      log.info('stopping: refusing new connections, letting running statements finish', { signal, graceMs: config.shutdown.graceMs });
      const failed = await shutdown(config.shutdown.graceMs);
      release();
      if (failed.length) return EXIT.FAILED;
      log.info('stopped', { audit: core.audit.lastSeq });
      return EXIT.OK;
    },
  });
}

/** Stop the health listener, also ending idle keep-alive connections. */
function closeHttp(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
