// `portcullis serve [--demo]`: the bastion process. Loads config and policies (fail closed on
// any error), opens the store and the write-ahead audit log, starts the listeners, reloads the
// policy on SIGHUP (a bad policy keeps the old one) and stops cleanly on SIGTERM.
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
import { createLogger } from '../core/log.js';
import { setSummaryMasker } from '../core/summary.js';
import { targetCredentials, type PostgresCredentials } from '../identity/credentials.js';
import { IdentityService, parseBoundKey } from '../identity/index.js';
import { opensshPrivateKey, publicBlobOf, publicKeyLine } from '../identity/ssh-wire.js';
import { Masker } from '../masking/index.js';
import { initFacts } from '../policy/actions.js';
import type { CompiledPolicy } from '../policy/compile.js';
import { startPostgresProxy } from '../proxy/postgres/index.js';
import { startSshProxy, sshTargetsFromConfig } from '../proxy/ssh/index.js';
import { assetDir, isSea, packageRoot } from '../runtime/assets.js';
import { openStore } from '../store/index.js';
import { EXIT } from './util.js';

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

async function startDemo(dataDir: string): Promise<{ config: BastionConfig; demo: DemoResources }> {
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
  const yaml = [
    `data_dir: ${JSON.stringify(dataDir)}`,
    ...(tls ? ['tls:', `  cert: ${JSON.stringify('file:' + tls.cert)}`, `  key: ${JSON.stringify('file:' + tls.key)}`] : []),
    'postgres:',
    '  allow_plaintext: true   # the demo listens on 127.0.0.1 only',
    `policies: ${JSON.stringify(policies)}`,
    'listen:',
    '  ssh: 127.0.0.1:2222',
    '  postgres: 127.0.0.1:6432',
    '  http: 127.0.0.1:9187',
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

export async function serve(opts: { config?: string; dataDir?: string; policies?: string; demo: boolean; kubeUpstream?: string }): Promise<number> {
  let config: BastionConfig;
  let demo: DemoResources | null = null;
  let unlock: (() => void) | null = null;
  if (opts.demo) {
    const dir = resolve(opts.dataDir ?? 'portcullis-demo');
    mkdirSync(dir, { recursive: true, mode: 0o750 });
    unlock = lockDataDir(dir);
    try {
      const r = await startDemo(dir);
      config = r.config;
      demo = r.demo;
    } catch (e) {
      unlock();
      throw e;
    }
  } else {
    config = loadConfig(opts.config ?? defaultConfigPath(), { dataDir: opts.dataDir, policies: opts.policies, checkSecrets: true });
  }
  let maskLogText: (s: string) => string = (x) => x;
  const log = createLogger(config.logLevel, undefined, (x) => maskLogText(x));
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
    core = await Core.open({ dataDir: config.dataDir, policiesDir: config.policies, audit: config.audit, approvalTimeoutMs: config.approvals.timeoutMs, store, log });
  } catch (e) {
    await store?.close().catch(() => undefined);
    release();
    await demo?.stop();
    throw e;
  }
  const openedStore = store;
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

  const started = Date.now();
  const http = createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (url === '/readyz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`ready (policy ${core.policy.version})\n`);
    } else if (url === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(
        [
          '# HELP portcullis_up 1 while the bastion runs',
          '# TYPE portcullis_up gauge',
          'portcullis_up 1',
          '# HELP portcullis_sessions_open live sessions',
          '# TYPE portcullis_sessions_open gauge',
          `portcullis_sessions_open ${core.listSessions().length}`,
          '# HELP portcullis_policy_rules rules in the loaded policy snapshot',
          '# TYPE portcullis_policy_rules gauge',
          `portcullis_policy_rules ${core.policy.rules.length}`,
          '# HELP portcullis_uptime_seconds seconds since start',
          '# TYPE portcullis_uptime_seconds gauge',
          `portcullis_uptime_seconds ${Math.round((Date.now() - started) / 1000)}`,
          '',
        ].join('\n'),
      );
    } else res.writeHead(404).end();
  });
  const listeners: string[] = [];
  const control = await startControlServer(core, { socket: config.control.socket, group: config.control.group, log, identity });
  listeners.push(`control socket ${config.control.socket}`);
  if (config.listen.http) {
    await listen(http, config.listen.http);
    listeners.push(`health and /metrics on http://${config.listen.http}`);
  }
  const off: string[] = [];
  let pgProxy: Awaited<ReturnType<typeof startPostgresProxy>> | null = null;
  if (config.listen.postgres) {
    const { host, port } = splitHostPort(config.listen.postgres);
    const pgTargets = [...config.targets.values()].filter((t) => t.protocol === 'postgres');
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
    listeners.push(`PostgreSQL on ${config.listen.postgres} (${config.tls ? 'TLS' : 'no TLS'}${config.postgresAllowPlaintext ? ', plaintext allowed' : ''}; targets: ${pgTargets.map((t) => t.name).join(', ') || 'none'})`);
  }
  let sshProxy: Awaited<ReturnType<typeof startSshProxy>> | null = null;
  if (config.listen.ssh) {
    const { host, port } = splitHostPort(config.listen.ssh);
    const targets = sshTargetsFromConfig(config);
    sshProxy = await startSshProxy(core, { host, port, log, dataDir: config.dataDir, identity, hmacKey, targets, defaultTargets: config.sshDefaultTargets, session: { idleTimeoutMs: config.session.idleTimeoutMs, maxDurationMs: config.session.maxDurationMs } });
    for (const n of sshProxy.notes) log.info(n);
    listeners.push(`SSH on ${config.listen.ssh} (host keys ${sshProxy.hostKeys.map((k) => k.fingerprint).join(', ')}; targets: ${[...targets.keys()].join(', ') || 'none'})`);
  }
  off.push(opts.kubeUpstream || config.listen.kubernetes ? 'Kubernetes API: off — the Kubernetes proxy lands with issue #9' : 'Kubernetes API: off (no upstream API server configured; --kube-upstream KUBECONFIG)');

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
    if (sshProxy) out(`     ssh -i ${demoEnv.PORTCULLIS_DEMO_SSH_KEY} -p ${sshProxy.port} demo-agent+sandbox@127.0.0.1 'ls -la; rm -rf /srv'`);
  }
  out('portcullis ready');

  return await new Promise<number>((resolveExit) => {
    let stopping = false;
    const stop = async (sig: string) => {
      if (stopping) return;
      stopping = true;
      log.info('stopping', { signal: sig });
      http.close();
      await pgProxy?.close().catch(() => undefined);
      await sshProxy?.close().catch(() => undefined);
      await control.close().catch(() => undefined);
      await core.close().catch((e: unknown) => log.error('closing the core failed', { error: String(e) }));
      await openedStore.close().catch(() => undefined);
      await demo?.stop();
      release();
      resolveExit(EXIT.OK);
    };
    process.on('SIGTERM', () => void stop('SIGTERM'));
    process.on('SIGINT', () => void stop('SIGINT'));
    process.on('SIGHUP', () => {
      const r = core.reloadPolicies();
      if (r.ok) out(`policy reloaded: version ${r.version}`);
    });
  });
}
