// The SSH targets of the bastion config as the proxy takes them: local programs, and remote hosts
// whose upstream credentials (the target's key, or a fresh certificate from the bastion's CA) are
// resolved at each login (src/identity/credentials.ts).
import { resolve } from 'node:path';
import type { BastionConfig } from '../../config/config.js';
import { targetCredentials, type SshCredentials } from '../../identity/credentials.js';
import type { SshTargetSpec } from './server.js';

export function sshTargetsFromConfig(config: Pick<BastionConfig, 'targets' | 'secret' | 'identity' | 'dataDir'>): Map<string, SshTargetSpec> {
  const out = new Map<string, SshTargetSpec>();
  for (const t of config.targets.values()) {
    if (t.protocol !== 'ssh') continue;
    if (t.kind === 'local') {
      out.set(t.name, { kind: 'local', cwd: t.cwd ?? resolve(config.dataDir, 'sandbox', t.name), ...(t.shell ? { shell: t.shell } : {}), ...(t.user ? { user: t.user } : {}) });
    } else {
      out.set(t.name, {
        kind: 'remote',
        ...(t.host ? { address: { host: t.host, port: t.port ?? 22 } } : {}),
        credentials: ({ subject, connection }) =>
          targetCredentials(config, t.name, { upstreamSshCa: config.identity.upstreamSshCa, identity: { subject }, session: connection }) as SshCredentials,
      });
    }
  }
  return out;
}
