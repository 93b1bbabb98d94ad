// kubeconfig files: the one an agent gets (the bastion as its cluster, the bastion's CA embedded,
// a bearer token or an exec credential plugin), and reading an existing one to make a target of
// its cluster (the demo's `--kube-upstream KUBECONFIG`).
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import YAML from 'yaml';
import { PortcullisError } from '../../policy/types.js';

export interface AgentKubeconfig {
  /** https://host:port[/targets/<target>] of the bastion's Kubernetes front. */
  server: string;
  /** PEM of the certificate (chain) or CA the bastion's front presents. */
  ca: string;
  identity: string;
  target: string;
  namespace?: string;
  /** A bearer token written into the file. */
  token?: string;
  /** Or: an exec credential plugin entry. */
  exec?: { command: string; args: string[]; env?: { name: string; value: string }[] };
}

/** The kubeconfig text (YAML) for an agent. */
export function buildKubeconfig(k: AgentKubeconfig): string {
  if (!k.token === !k.exec) throw new PortcullisError('kubeconfig_user', 'a kubeconfig user needs either a token or an exec plugin');
  const cluster = `portcullis-${k.target}`;
  const user = k.identity;
  const context = `${k.identity}@${k.target}`;
  const userEntry: Record<string, unknown> = k.token
    ? { token: k.token }
    : {
        exec: {
          apiVersion: 'client.authentication.k8s.io/v1',
          command: k.exec!.command,
          args: k.exec!.args,
          ...(k.exec!.env?.length ? { env: k.exec!.env } : {}),
          interactiveMode: 'Never',
          provideClusterInfo: false,
        },
      };
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: cluster, cluster: { server: k.server, 'certificate-authority-data': Buffer.from(k.ca.endsWith('\n') ? k.ca : k.ca + '\n', 'utf8').toString('base64') } }],
    users: [{ name: user, user: userEntry }],
    contexts: [{ name: context, context: { cluster, user, namespace: k.namespace ?? 'default' } }],
    'current-context': context,
    preferences: {},
  };
  return YAML.stringify(doc, { lineWidth: 0 });
}

/** The ExecCredential a credential plugin prints (client.authentication.k8s.io/v1). */
export function execCredential(token: string): string {
  const status: Record<string, string> = { token };
  const exp = jwtExpiry(token);
  if (exp !== undefined) status['expirationTimestamp'] = new Date(exp * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  return JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status }) + '\n';
}

/** `exp` of a JWT (unverified: only so that kubectl asks again before it runs out). */
function jwtExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp : undefined;
  } catch {
    return undefined;
  }
}

/** A cluster and its credentials as a kubeconfig's current context gives them. */
export interface UpstreamCluster {
  server: string;
  /** CA PEM. */
  ca?: string;
  token?: string;
  clientCert?: string;
  clientKey?: string;
  /** The kubeconfig's context name (for messages). */
  context: string;
}

type Named<T> = { name?: string } & T;

/** Reads the current context of a kubeconfig file: server, CA, token or client certificate. */
export function readKubeconfig(file: string, contextName?: string): UpstreamCluster {
  const fail = (m: string) => new PortcullisError('kubeconfig_invalid', `${file}: ${m}`);
  let doc: Record<string, unknown>;
  try {
    doc = YAML.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw fail(`cannot read it: ${(e as Error).message}`);
  }
  if (!doc || typeof doc !== 'object') throw fail('not a kubeconfig');
  const ctxName = contextName ?? (doc['current-context'] as string | undefined);
  const find = <T>(list: unknown, name: string | undefined, what: string): T => {
    const hit = Array.isArray(list) ? (list as Named<T>[]).find((x) => x?.name === name) : undefined;
    if (!hit) throw fail(`no ${what} named ${JSON.stringify(name)}`);
    return hit;
  };
  if (!ctxName) throw fail('no current-context');
  const ctx = find<{ context?: { cluster?: string; user?: string } }>(doc['contexts'], ctxName, 'context').context ?? {};
  const cluster = find<{ cluster?: Record<string, string> }>(doc['clusters'], ctx.cluster, 'cluster').cluster ?? {};
  const user = find<{ user?: Record<string, unknown> }>(doc['users'], ctx.user, 'user').user ?? {};
  const base = dirname(resolve(file));
  const readRef = (data: unknown, path: unknown, what: string): string | undefined => {
    if (typeof data === 'string' && data) return Buffer.from(data, 'base64').toString('utf8');
    if (typeof path === 'string' && path) {
      try {
        return readFileSync(isAbsolute(path) ? path : resolve(base, path), 'utf8');
      } catch (e) {
        throw fail(`${what} ${path}: ${(e as Error).message}`);
      }
    }
    return undefined;
  };
  if (typeof cluster['server'] !== 'string' || !cluster['server'].startsWith('https://')) throw fail('the cluster has no https:// server');
  if (user['exec'] || user['auth-provider']) throw fail('credential plugins (exec, auth-provider) are not supported for an upstream: use a token or a client certificate');
  const out: UpstreamCluster = { server: cluster['server'], context: ctxName };
  const ca = readRef(cluster['certificate-authority-data'], cluster['certificate-authority'], 'certificate-authority');
  if (ca) out.ca = ca;
  const token = typeof user['token'] === 'string' && user['token'] ? user['token'] : readRef(undefined, user['tokenFile'], 'tokenFile')?.trim();
  if (token) out.token = token;
  const cert = readRef(user['client-certificate-data'], user['client-certificate'], 'client-certificate');
  const key = readRef(user['client-key-data'], user['client-key'], 'client-key');
  if (cert && key) {
    out.clientCert = cert;
    out.clientKey = key;
  }
  if (!out.token && !out.clientKey) throw fail(`user ${JSON.stringify(ctx.user)} has neither a token nor a client certificate and key`);
  return out;
}
