// The SSH front's host keys: `<data-dir>/keys/ssh_host_ed25519_key` and `ssh_host_rsa_key`
// (3072 bits), made once on first start (mode 0600, `.pub` next to them) and reused after, so
// agents' known_hosts entries stay valid across restarts. A key file that others can read is
// tightened to 0600; one that cannot be parsed stops the start-up (never silently replaced).
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PortcullisError } from '../../policy/types.js';
import { opensshPrivateKey, parsePrivateKey, publicBlobOf, publicKeyLine, sshFingerprint } from '../../identity/ssh-wire.js';

export interface HostKey {
  /** Private key text as ssh2 reads it (OpenSSH for ed25519, PKCS#1 PEM for RSA). */
  privateKey: string;
  type: string;
  fingerprint: string;
  publicKeyLine: string;
  path: string;
}

const KINDS = [
  { file: 'ssh_host_ed25519_key', make: () => opensshPrivateKey(generateKeyPairSync('ed25519').privateKey, 'portcullis-host') },
  {
    file: 'ssh_host_rsa_key',
    make: () => generateKeyPairSync('rsa', { modulusLength: 3072, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs1', format: 'pem' } }).privateKey,
  },
] as const;

/** Loads (or creates, once) the bastion's SSH host keys under `<dataDir>/keys/`. */
export function loadHostKeys(dataDir: string, log?: { warn(msg: string, f?: Record<string, unknown>): void }): HostKey[] {
  const dir = join(dataDir, 'keys');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const out: HostKey[] = [];
  for (const k of KINDS) {
    const path = join(dir, k.file);
    if (!existsSync(path)) {
      try {
        writeFileSync(path, k.make(), { mode: 0o600, flag: 'wx' });
      } catch (e) {
        // another process made it first: read theirs
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
    const mode = statSync(path).mode & 0o777;
    if (mode & 0o077) {
      chmodSync(path, 0o600);
      log?.warn('ssh host key was readable by others; mode set to 0600', { path, was: mode.toString(8) });
    }
    const text = readFileSync(path, 'utf8');
    let pub: { type: string; blob: Buffer };
    try {
      pub = publicBlobOf(parsePrivateKey(text));
    } catch (e) {
      throw new PortcullisError('ssh_host_key', `${path}: not a usable host key (${(e as Error).message}); move it away to have a new one made`, { path });
    }
    const line = publicKeyLine(pub.type, pub.blob, 'portcullis-host');
    if (!existsSync(path + '.pub')) writeFileSync(path + '.pub', line + '\n', { mode: 0o644 });
    out.push({ privateKey: text, type: pub.type, fingerprint: sshFingerprint(pub.blob), publicKeyLine: line, path });
  }
  return out;
}
