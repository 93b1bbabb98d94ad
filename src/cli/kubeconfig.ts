// `portcullis kubeconfig`: prints a kubeconfig that points an agent's kubectl at the bastion's
// Kubernetes front (listen.kubernetes), with the bastion's certificate embedded as the CA and
// either a bearer token (--token) or an exec credential plugin entry (--exec) that hands kubectl
// a fresh token on every use — from a token file that a workload identity system rotates (an
// OIDC token, e.g. a projected service account token or a CI job's ID token), or from an
// environment variable. `--credential` is that plugin: it prints an ExecCredential.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { defaultConfigPath, loadConfig } from '../config/config.js';
import { buildKubeconfig, execCredential } from '../proxy/kube/kubeconfig.js';
import { isSea } from '../runtime/assets.js';
import { EXIT, UsageError } from './util.js';

export interface KubeconfigOptions {
  config?: string;
  dataDir?: string;
  identity?: string;
  target?: string;
  token?: string;
  exec?: boolean;
  tokenFile?: string;
  tokenEnv?: string;
  credential?: boolean;
  server?: string;
  namespace?: string;
  output?: string;
}

const DEFAULT_TOKEN_ENV = 'PORTCULLIS_TOKEN';

/** How this CLI is started again by kubectl (the exec plugin's command and leading args). */
function selfCommand(): { command: string; args: string[] } {
  if (isSea()) return { command: process.execPath, args: [] };
  return { command: process.execPath, args: [resolve(process.argv[1] ?? 'portcullis')] };
}

function readToken(o: KubeconfigOptions): string {
  if (o.tokenFile) {
    let t: string;
    try {
      t = readFileSync(o.tokenFile, 'utf8').trim();
    } catch (e) {
      throw new UsageError(`--token-file ${o.tokenFile}: ${(e as Error).message}`);
    }
    if (!t) throw new UsageError(`--token-file ${o.tokenFile} is empty`);
    return t;
  }
  const name = o.tokenEnv ?? DEFAULT_TOKEN_ENV;
  const t = process.env[name]?.trim();
  if (!t) throw new UsageError(`no token: set ${name} (or give --token-file FILE / --token-env NAME)`);
  return t;
}

export async function kubeconfigCommand(o: KubeconfigOptions): Promise<number> {
  if (o.credential) {
    process.stdout.write(execCredential(readToken(o)));
    return EXIT.OK;
  }
  if (!o.identity) throw new UsageError('--identity is required (the agent the kubeconfig is for)');
  if (!o.target) throw new UsageError('--target is required (a kubernetes target of the config)');
  if (o.token !== undefined && o.exec) throw new UsageError('give either --token or --exec, not both');
  if (o.token === undefined && !o.exec) throw new UsageError('give --token TOKEN (written into the file) or --exec (a credential plugin reads the token on every use)');
  if (o.token !== undefined && (o.tokenFile || o.tokenEnv)) throw new UsageError('--token-file and --token-env go with --exec');
  let file = o.config;
  if (!file && o.dataDir && existsSync(join(o.dataDir, 'portcullis.demo.yaml'))) file = join(o.dataDir, 'portcullis.demo.yaml');
  const config = loadConfig(file ?? defaultConfigPath(), o.dataDir ? { dataDir: o.dataDir } : {});
  const kubeTargets = [...config.targets.values()].filter((t) => t.protocol === 'kubernetes');
  const t = config.targets.get(o.target);
  if (!t || t.protocol !== 'kubernetes') {
    throw new UsageError(`no kubernetes target ${JSON.stringify(o.target)} in ${config.file} (kubernetes targets: ${kubeTargets.map((x) => x.name).join(', ') || 'none'})`);
  }
  if (!config.tls) throw new UsageError(`${config.file}: the Kubernetes front needs the bastion's TLS certificate (config tls.cert / tls.key)`);
  let server = o.server;
  if (!server) {
    const listen = config.listen.kubernetes;
    if (!listen) throw new UsageError(`${config.file}: listen.kubernetes is not set (or give --server https://HOST:PORT)`);
    const i = listen.lastIndexOf(':');
    let host = listen.slice(0, i);
    if (host === '0.0.0.0' || host === '[::]' || host === '::') {
      host = '127.0.0.1';
      process.stderr.write(`portcullis kubeconfig: listen.kubernetes is ${listen}; using ${host} (give --server for the address agents reach)\n`);
    }
    server = `https://${host}:${listen.slice(i + 1)}`;
    // One Kubernetes target: it is the default route; otherwise the target is in the path.
    if (kubeTargets.length !== 1) server += `/targets/${o.target}`;
  }
  const base = { server, ca: config.tls.cert, identity: o.identity, target: o.target, ...(o.namespace ? { namespace: o.namespace } : {}) };
  let text: string;
  if (o.exec) {
    const self = selfCommand();
    const src = o.tokenFile ? ['--token-file', resolve(o.tokenFile)] : ['--token-env', o.tokenEnv ?? DEFAULT_TOKEN_ENV];
    text = buildKubeconfig({ ...base, exec: { command: self.command, args: [...self.args, 'kubeconfig', '--credential', ...src] } });
  } else {
    text = buildKubeconfig({ ...base, token: o.token! });
  }
  if (o.output) writeFileSync(o.output, text, { mode: 0o600 });
  else process.stdout.write(text);
  return EXIT.OK;
}
