// The bastion's SSH host CA, for ProxyJump (jump.ts). When an agent jumps through the bastion
// (`ssh -J agent@bastion target`), the bastion terminates the inner SSH connection itself and
// must prove to the agent's client that it speaks for `target`: it presents an OpenSSH host
// certificate for the target's name, made for its own ed25519 host key and signed by this CA.
// Agents trust it with one known_hosts line, printed by `portcullis ssh ca`:
//   @cert-authority * ssh-ed25519 AAAA… portcullis-host-ca
//
// The CA key is `<data-dir>/keys/host_ca_ed25519` (mode 0600, `.pub` next to it), made once and
// kept; one that cannot be parsed stops the start-up (never silently replaced).
//
// ssh2's server cannot present host certificates. `presentHostCertificate` makes one connection
// offer only `ssh-ed25519-cert-v01@openssh.com` and send the certificate as its host key (K_S),
// signing the exchange hash with the certified key under the plain `ssh-ed25519` name (as
// OpenSSH does). It relies on ssh2 1.x internals (Protocol `_offer`, `_hostKeys`, `_kex`), checked
// here: when they change the connection is refused (fail closed), never served with another key.
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import type { Connection } from 'ssh2';
import { issueSshUserCert, SSH_CERT_HOST } from '../../identity/ssh-cert.js';
import { opensshPrivateKey, parsePrivateKey, publicBlobOf, publicKeyLine, sshFingerprint } from '../../identity/ssh-wire.js';
import { PortcullisError } from '../../policy/types.js';

export const HOST_CA_FILE = 'host_ca_ed25519';
const CERT_ALGO = 'ssh-ed25519-cert-v01@openssh.com';
/** Host certificates are re-issued after this (the CA stays the same, so agents notice nothing). */
const CERT_TTL_S = 24 * 3600;

export interface HostCa {
  key: KeyObject;
  path: string;
  publicKeyLine: string;
  fingerprint: string;
  /** The line for an agent's known_hosts. */
  knownHostsLine: string;
}

/** Loads (or creates, once) `<dataDir>/keys/host_ca_ed25519`. */
export function loadHostCa(dataDir: string, log?: { warn(msg: string, f?: Record<string, unknown>): void }): HostCa {
  const dir = join(dataDir, 'keys');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, HOST_CA_FILE);
  if (!existsSync(path)) {
    try {
      writeFileSync(path, opensshPrivateKey(generateKeyPairSync('ed25519').privateKey, 'portcullis-host-ca'), { mode: 0o600, flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  const mode = statSync(path).mode & 0o777;
  if (mode & 0o077) {
    chmodSync(path, 0o600);
    log?.warn('ssh host CA key was readable by others; mode set to 0600', { path, was: mode.toString(8) });
  }
  let key: KeyObject;
  try {
    key = parsePrivateKey(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new PortcullisError('ssh_host_ca', `${path}: not a usable host CA key (${(e as Error).message}); move it away to have a new one made`, { path });
  }
  const pub = publicBlobOf(key);
  const line = publicKeyLine(pub.type, pub.blob, 'portcullis-host-ca');
  if (!existsSync(path + '.pub')) writeFileSync(path + '.pub', line + '\n', { mode: 0o644 });
  return { key, path, publicKeyLine: line, fingerprint: sshFingerprint(pub.blob), knownHostsLine: `@cert-authority * ${line}` };
}

/** Host certificates for the bastion's ed25519 host key, one per target (cached until near expiry). */
export class HostCertificates {
  private readonly cache = new Map<string, { blob: Buffer; until: number }>();

  constructor(
    private readonly ca: HostCa,
    /** The bastion's ed25519 host key (OpenSSH private key text). */
    readonly hostKeyText: string,
  ) {}

  /** The certificate blob naming `principals` (the target's name first). */
  certificateFor(principals: string[]): Buffer {
    const id = principals.join(',');
    const hit = this.cache.get(id);
    if (hit && hit.until > Date.now() + 60_000) return hit.blob;
    const issued = issueSshUserCert({
      caKey: this.ca.key,
      publicKey: parsePrivateKey(this.hostKeyText),
      principals,
      ttlSeconds: CERT_TTL_S,
      keyId: `portcullis-host:${principals[0] ?? ''}`,
      certKind: SSH_CERT_HOST,
    });
    this.cache.set(id, { blob: issued.blob, until: issued.validBefore });
    return issued.blob;
  }
}

interface Ssh2Key {
  type: string;
  getPublicSSH(): Buffer;
  sign(data: Buffer, algo?: string): Buffer | Error;
}

interface Ssh2ProtocolInternals {
  _offer?: { lists?: Record<string, { array?: string[] } | Record<string, { array?: string[] }>> };
  _hostKeys?: Record<string, unknown>;
  _kex?: { negotiated?: { serverHostKey?: string } };
}

type KexInitCtor = new (o: Record<string, unknown>) => unknown;

function kexInitClass(): KexInitCtor | null {
  try {
    const k = createRequire(import.meta.url)('ssh2/lib/protocol/kex.js') as { KexInit?: KexInitCtor };
    return typeof k.KexInit === 'function' ? k.KexInit : null;
  } catch {
    return null;
  }
}

/**
 * Make `client` (a connection whose key exchange has not started: call it from the server's
 * `connection` listener) present `certBlob` as its host key. Returns false — and the caller must
 * refuse the connection — when ssh2's internals are not what this expects.
 */
export function presentHostCertificate(client: Connection, hostKeyText: string, certBlob: Buffer): boolean {
  const proto = (client as unknown as { _protocol?: Ssh2ProtocolInternals })._protocol;
  const KexInit = kexInitClass();
  const lists = proto?._offer?.lists as
    | { kex?: { array?: string[] }; cs?: Record<string, { array?: string[] }>; sc?: Record<string, { array?: string[] }> }
    | undefined;
  if (!proto || !KexInit || !lists?.kex?.array || !lists.cs || !lists.sc || !proto._hostKeys) return false;
  const parsed = ssh2.utils.parseKey(hostKeyText);
  const base = (Array.isArray(parsed) ? parsed[0] : parsed) as unknown as Ssh2Key | Error | undefined;
  if (!base || base instanceof Error || base.type !== 'ssh-ed25519' || typeof base.sign !== 'function') return false;
  const dir = (d: Record<string, { array?: string[] }>) => ({ cipher: d.cipher?.array, mac: d.mac?.array, compress: d.compress?.array, lang: d.lang?.array ?? [] });
  let offer: unknown;
  try {
    offer = new KexInit({ kex: lists.kex.array, serverHostKey: [CERT_ALGO], cs: dir(lists.cs), sc: dir(lists.sc) });
  } catch {
    return false;
  }
  // the certificate as K_S; the signature made by the certified key and named `ssh-ed25519`
  const key = Object.create(base as object) as Ssh2Key;
  key.getPublicSSH = () => certBlob;
  key.sign = (data: Buffer, algo?: string) => {
    const neg = proto._kex?.negotiated;
    if (!neg || neg.serverHostKey !== CERT_ALGO) return new Error('unexpected key exchange state');
    neg.serverHostKey = 'ssh-ed25519';
    return (base as Ssh2Key).sign(data, algo);
  };
  proto._offer = offer as Ssh2ProtocolInternals['_offer'];
  proto._hostKeys = { [CERT_ALGO]: key };
  return true;
}
