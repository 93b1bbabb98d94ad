// How `portcullis serve` starts the Kubernetes front from the bastion config, and what the demo
// adds with `--kube-upstream KUBECONFIG` (a `demo-cluster` target made of that kubeconfig's
// current context, and a kubeconfig for demo-agent).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BastionConfig } from '../../config/config.js';
import type { Core } from '../../core/core.js';
import type { Logger } from '../../core/log.js';
import { targetCredentials, type KubernetesCredentials } from '../../identity/credentials.js';
import type { IdentityService } from '../../identity/index.js';
import { PortcullisError } from '../../policy/types.js';
import { buildKubeconfig, readKubeconfig } from './kubeconfig.js';
import { startKubeProxy, type KubeProxy } from './server.js';
import type { KubeTarget } from './upstream.js';

export const DEMO_KUBE_TARGET = 'demo-cluster';
export const DEMO_KUBE_LISTEN = '127.0.0.1:6443';

/**
 * The demo's `demo-cluster` target from a kubeconfig: its CA, client certificate and key are
 * copied under <data-dir>/kube/, its token goes into PORTCULLIS_DEMO_KUBE_TOKEN (never into the
 * config file). Returns the config lines to add.
 */
export function demoKubeTarget(kubeconfig: string, dataDir: string): { listen: string[]; target: string[]; line: string } {
  const up = readKubeconfig(kubeconfig);
  const dir = join(dataDir, 'kube');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const target = ['  demo-cluster:', '    protocol: kubernetes', `    server: ${JSON.stringify(up.server)}`];
  if (up.ca) {
    writeFileSync(join(dir, 'upstream-ca.crt'), up.ca, { mode: 0o600 });
    target.push(`    ca: ${JSON.stringify('file:' + join(dir, 'upstream-ca.crt'))}`);
  }
  if (up.token) {
    process.env.PORTCULLIS_DEMO_KUBE_TOKEN = up.token;
    target.push('    token: env:PORTCULLIS_DEMO_KUBE_TOKEN');
  } else {
    writeFileSync(join(dir, 'upstream-client.crt'), up.clientCert!, { mode: 0o600 });
    writeFileSync(join(dir, 'upstream-client.key'), up.clientKey!, { mode: 0o600 });
    target.push(`    client_cert: ${JSON.stringify('file:' + join(dir, 'upstream-client.crt'))}`, `    client_key: ${JSON.stringify('file:' + join(dir, 'upstream-client.key'))}`);
  }
  return { listen: [`  kubernetes: ${DEMO_KUBE_LISTEN}`], target, line: `kubernetes target "${DEMO_KUBE_TARGET}": ${up.server} (context ${up.context} of ${kubeconfig})` };
}

/** A target of the config as the proxy uses it (secrets resolved now). */
export function kubeTargetOf(config: Pick<BastionConfig, 'targets' | 'secret'>, name: string): KubeTarget | undefined {
  if (config.targets.get(name)?.protocol !== 'kubernetes') return undefined;
  const c = targetCredentials(config, name) as KubernetesCredentials;
  return {
    name,
    server: c.server,
    impersonate: c.impersonate,
    ...(c.ca ? { ca: c.ca } : {}),
    ...(c.token ? { token: c.token.reveal() } : {}),
    ...(c.clientCert && c.clientKey ? { clientCert: c.clientCert, clientKey: c.clientKey.reveal() } : {}),
  };
}

/** Starts the Kubernetes front on listen.kubernetes. Returns the proxy and the line `serve` prints. */
export async function startKubeFromConfig(core: Core, config: BastionConfig, identity: IdentityService, hmacKey: Buffer, log: Logger): Promise<{ proxy: KubeProxy; line: string }> {
  const listen = config.listen.kubernetes;
  if (!listen) throw new PortcullisError('kube_proxy_option', 'listen.kubernetes is not set');
  if (!config.tls) throw new PortcullisError('kube_proxy_option', `${config.file}: listen.kubernetes needs the bastion's TLS certificate (tls.cert, tls.key)`);
  const names = [...config.targets.values()].filter((t) => t.protocol === 'kubernetes').map((t) => t.name);
  const i = listen.lastIndexOf(':');
  const proxy = await startKubeProxy(core, {
    host: listen.slice(0, i).replace(/^\[|\]$/g, ''),
    port: Number(listen.slice(i + 1)),
    tls: config.tls,
    targets: (name) => kubeTargetOf(config, name),
    ...(names.length === 1 ? { defaultTarget: names[0] } : {}),
    authenticate: (token, ctx) => identity.verifyBearer(token, { remote: ctx.remote, protocol: 'kubernetes' }),
    hmacKey,
    session: {
      ...(config.session.idleTimeoutMs ? { idleTimeoutMs: config.session.idleTimeoutMs } : {}),
      ...(config.session.maxDurationMs ? { maxDurationMs: config.session.maxDurationMs } : {}),
      ...(config.session.revalidateMs ? { revalidateMs: config.session.revalidateMs, revalidate: (id: Parameters<IdentityService['check']>[0]) => identity.check(id) } : {}),
    },
    log,
  });
  const route = names.length === 1 ? `target ${names[0]}` : `targets: ${names.map((n) => `/targets/${n}`).join(', ') || 'none'}`;
  return { proxy, line: `Kubernetes API on https://${listen} (TLS; ${route})` };
}

/** Writes <data-dir>/demo-agent.kubeconfig (the agent's token, the bastion's certificate). */
export function writeDemoKubeconfig(config: BastionConfig, token: string): string {
  const file = join(config.dataDir, 'demo-agent.kubeconfig');
  const text = buildKubeconfig({ server: `https://${config.listen.kubernetes ?? DEMO_KUBE_LISTEN}`, ca: config.tls!.cert, identity: 'demo-agent', target: DEMO_KUBE_TARGET, token });
  writeFileSync(file, text, { mode: 0o600 });
  return file;
}
