// A bastion in front of the stand-in API server (test/harness/kubeapi.ts), for the Kubernetes
// proxy tests and benchmark: the real core (policies copied into a temp dir, write-ahead audit,
// approvals), real API tokens, a TLS certificate made with openssl, the proxy on a free loopback
// port, and a runner for the real kubectl (/usr/bin/kubectl) with its own HOME (discovery cache)
// and kubeconfig.
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Core } from '../../src/core/core.js';
import { createLogger } from '../../src/core/log.js';
import { setSummaryMasker } from '../../src/core/summary.js';
import { Masker } from '../../src/masking/masker.js';
import { defaultIdentityConfig, IdentityService } from '../../src/identity/index.js';
import { initFacts } from '../../src/policy/actions.js';
import { startKubeProxy, type KubeProxy, type KubeProxyOptions } from '../../src/proxy/kube/index.js';
import { buildKubeconfig } from '../../src/proxy/kube/kubeconfig.js';
import type { KubeTarget } from '../../src/proxy/kube/upstream.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { startKubeApi, type KubeApi, type KubeApiOptions } from './kubeapi.js';
import { tempDir, type TempDir } from './tmp.js';

export const KUBECTL = '/usr/bin/kubectl';

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface KubeBastion {
  api: KubeApi;
  core: Core;
  store: Store;
  /** The real identity service the proxy authenticates with (API tokens in `store`). */
  identity: IdentityService;
  proxy: KubeProxy;
  dir: string;
  dataDir: string;
  /** PEM of the bastion's certificate (the agents' CA). */
  cert: string;
  /** demo-agent's API token (group agents). */
  token: string;
  /** A kubeconfig for demo-agent pointing at the bastion. */
  kubeconfig: string;
  /** A kubeconfig pointing straight at the stand-in (baseline). */
  directKubeconfig: string;
  kubectl(args: string[], opts?: { input?: string; kubeconfig?: string; timeoutMs?: number; env?: Record<string, string> }): Promise<KubectlResult>;
  /** Writes another kubeconfig (other token, other server path). */
  writeKubeconfig(name: string, o: { token: string; server?: string }): string;
  auditLines(): Record<string, unknown>[];
  close(): Promise<void>;
}

export interface KubeBastionOptions {
  /** A policies directory (default examples/policies). */
  policies?: string;
  api?: KubeApiOptions;
  /** Target settings beyond server/CA/credentials. */
  target?: Partial<KubeTarget>;
  /** Extra targets, made from the same stand-in. */
  extraTargets?: (api: KubeApi) => KubeTarget[];
  /** Route requests without /targets/<name> to this target (default demo-cluster). */
  defaultTarget?: string | null;
  proxy?: Partial<KubeProxyOptions>;
  approvalTimeoutMs?: number;
}

export async function startKubeBastion(o: KubeBastionOptions = {}): Promise<KubeBastion> {
  await initFacts();
  const tmp: TempDir = await tempDir('pc-kube-');
  const dir = tmp.path;
  const dataDir = join(dir, 'data');
  const policies = join(dir, 'policies');
  cpSync(o.policies ?? 'examples/policies', policies, { recursive: true });
  const api = await startKubeApi(o.api);
  const store = await openStore(dataDir);
  const log = createLogger('error', () => undefined);
  const core = await Core.open({ dataDir, policiesDir: policies, audit: { sync: 'writes', intervalMs: 20, checkpointEvery: 1000 }, store, log, approvalTimeoutMs: o.approvalTimeoutMs ?? 120_000 });
  // Many kubectl calls come from 127.0.0.1, some with bad tokens on purpose: a generous limiter.
  const idConfig = defaultIdentityConfig();
  idConfig.rateLimit = { ...idConfig.rateLimit, failures: 1000 };
  const identity = new IdentityService(idConfig, store, { log });
  const token = (await identity.createToken({ subject: 'demo-agent', groups: ['agents'], ttlMs: 3_600_000 })).token;
  // As serve does: audit summaries through the default-on detectors.
  const summaryMasker = new Masker({ masks: [], defaultDetectors: true });
  setSummaryMasker((x) => summaryMasker.maskText(x));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=portcullis-test', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'tls.key'), '-out', join(dir, 'tls.crt')], { stdio: 'ignore' });
  const cert = readFileSync(join(dir, 'tls.crt'), 'utf8');
  const targets = new Map<string, KubeTarget>();
  targets.set('demo-cluster', { name: 'demo-cluster', server: api.url, ca: api.ca, token: api.token, impersonate: true, ...o.target });
  for (const t of o.extraTargets?.(api) ?? []) targets.set(t.name, t);
  const proxy = await startKubeProxy(core, {
    port: 0,
    log,
    tls: { cert, key: readFileSync(join(dir, 'tls.key'), 'utf8') },
    targets: (n) => targets.get(n),
    ...(o.defaultTarget === null ? {} : { defaultTarget: o.defaultTarget ?? 'demo-cluster' }),
    holdWaitMs: 3000,
    authenticate: (t, ctx) => identity.verifyBearer(t, { remote: ctx.remote, protocol: 'kubernetes' }),
    ...o.proxy,
  });
  const home = join(dir, 'home');
  mkdirSync(home, { recursive: true });
  const writeKubeconfig = (name: string, k: { token: string; server?: string }) => {
    const file = join(dir, `${name}.kubeconfig`);
    writeFileSync(file, buildKubeconfig({ server: k.server ?? proxy.url, ca: cert, identity: 'demo-agent', target: 'demo-cluster', token: k.token }), { mode: 0o600 });
    return file;
  };
  const kubeconfig = writeKubeconfig('agent', { token });
  const directKubeconfig = api.kubeconfig(dir, 'token');
  return {
    api,
    core,
    store,
    identity,
    proxy,
    dir,
    dataDir,
    cert,
    token,
    kubeconfig,
    directKubeconfig,
    writeKubeconfig,
    kubectl(args, opts = {}) {
      return new Promise<KubectlResult>((resolve, reject) => {
        const child = spawn(KUBECTL, args, {
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, KUBECONFIG: opts.kubeconfig ?? kubeconfig, ...opts.env },
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
        child.on('error', reject);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code: code ?? -1, stdout, stderr });
        });
        child.stdin.end(opts.input ?? '');
      });
    },
    auditLines() {
      return readFileSync(join(dataDir, 'audit', 'audit.jsonl'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    async close() {
      await proxy.close();
      await core.close();
      await store.close();
      await api.close();
      await tmp.remove();
    },
  };
}
