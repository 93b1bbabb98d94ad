// Credential injection: the credentials the bastion uses on the upstream side of a session, from
// the target's config (`env:`/`file:` references resolved on use) or, for SSH targets covered by
// `identity.upstream_ssh_ca`, a fresh key pair and a short-lived OpenSSH user certificate signed
// by the bastion's CA. The agent never sees any of it.
//
// Secrets come wrapped in `SecretValue`: printing, logging or JSON-serializing one gives
// `[secret]`; only `.reveal()` gives the value, at the point where a client library needs it.
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { inspect } from 'node:util';
import type { BastionConfig, TargetConfig } from '../config/config.js';
import { PortcullisError, type Identity } from '../policy/types.js';
import type { UpstreamSshCaConfig } from './config.js';
import { issueSshUserCert, type IssuedSshCert } from './ssh-cert.js';
import { opensshPrivateKey, parsePrivateKey, publicBlobOf, publicKeyLine } from './ssh-wire.js';

export class SecretValue {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  /** The secret itself: pass it to the client library, never to a log. */
  reveal(): string {
    return this.#value;
  }
  get length(): number {
    return this.#value.length;
  }
  toString(): string {
    return '[secret]';
  }
  toJSON(): string {
    return '[secret]';
  }
  [inspect.custom](): string {
    return '[secret]';
  }
}

export interface PostgresCredentials {
  protocol: 'postgres';
  target: string;
  host: string;
  port: number;
  database: string;
  user: string;
  /** Used for md5 or SCRAM-SHA-256, whichever the server asks for. Absent: trust / peer. */
  password?: SecretValue;
  sslmode?: string;
}

export interface SshCredentials {
  protocol: 'ssh';
  target: string;
  kind: 'remote' | 'local';
  host?: string;
  port?: number;
  user?: string;
  /** OpenSSH or PEM private key text (from config, or the fresh key of a bastion-issued certificate). */
  privateKey?: SecretValue;
  /** The OpenSSH certificate line for `privateKey`, when the bastion issued one. */
  certificate?: string;
  /** Details of the issued certificate (serial, key id, validity): for the audit log. */
  issued?: Omit<IssuedSshCert, 'blob' | 'certificate'>;
  hostKey?: string;
}

export interface KubernetesCredentials {
  protocol: 'kubernetes';
  target: string;
  server: string;
  /** PEM of the API server's CA. */
  ca?: string;
  token?: SecretValue;
  clientCert?: string;
  clientKey?: SecretValue;
  impersonate: boolean;
}

export type TargetCredentials = PostgresCredentials | SshCredentials | KubernetesCredentials;

/** What `targetCredentials` needs of the bastion config. */
export type CredentialSource = Pick<BastionConfig, 'targets' | 'secret'>;

export interface CredentialOptions {
  /** `identity.upstream_ssh_ca`: SSH targets it covers get a fresh certificate. */
  upstreamSshCa?: UpstreamSshCaConfig;
  /** Who the session is for and its id: written into the certificate's key id. */
  identity?: Pick<Identity, 'subject'>;
  session?: string;
  /** Unix ms (tests). */
  now?: number;
}

const caKeys = new WeakMap<UpstreamSshCaConfig, KeyObject>();

function caKeyOf(ca: UpstreamSshCaConfig): KeyObject {
  let k = caKeys.get(ca);
  if (!k) {
    k = parsePrivateKey(ca.privateKey());
    caKeys.set(ca, k);
  }
  return k;
}

/** The public key line of the bastion's upstream CA: put it in the targets' TrustedUserCAKeys. */
export function upstreamCaPublicKey(ca: UpstreamSshCaConfig): string {
  const { type, blob } = publicBlobOf(caKeyOf(ca));
  return publicKeyLine(type, blob, 'portcullis-upstream-ca');
}

function missing(target: string, what: string): PortcullisError {
  return new PortcullisError('credentials_missing', `target ${target}: ${what}`, { target });
}

/** The resolved upstream credentials of `target`. Secret references are resolved now. */
export function targetCredentials(config: CredentialSource, target: string, opts: CredentialOptions = {}): TargetCredentials {
  const t: TargetConfig | undefined = config.targets.get(target);
  if (!t) throw new PortcullisError('target_unknown', `no target named ${target} in the config`, { target });
  const secret = (f: 'password' | 'private_key' | 'ca' | 'token' | 'client_cert' | 'client_key'): string | undefined => config.secret(target, f);
  const wrap = (v: string | undefined) => (v === undefined ? undefined : new SecretValue(v));

  if (t.protocol === 'postgres') {
    if (!t.host || !t.port || !t.database || !t.user) throw missing(target, 'a postgres target needs host, port, database and user');
    const out: PostgresCredentials = { protocol: 'postgres', target, host: t.host, port: t.port, database: t.database, user: t.user };
    const pw = wrap(secret('password'));
    if (pw) out.password = pw;
    if (t.sslmode) out.sslmode = t.sslmode;
    return out;
  }

  if (t.protocol === 'ssh') {
    const kind = t.kind ?? 'remote';
    const out: SshCredentials = { protocol: 'ssh', target, kind };
    if (kind === 'local') return out;
    if (!t.host || !t.user) throw missing(target, 'a remote ssh target needs host and user');
    out.host = t.host;
    out.port = t.port ?? 22;
    out.user = t.user;
    if (t.host_key) out.hostKey = t.host_key;
    const ca = opts.upstreamSshCa;
    if (ca && ca.targets(target)) {
      const { privateKey } = generateKeyPairSync('ed25519');
      const subject = opts.identity?.subject ?? 'unknown';
      const keyId = `portcullis:${subject}${opts.session ? `:${opts.session}` : ''}:${target}`;
      const issued = issueSshUserCert({ caKey: caKeyOf(ca), publicKey: privateKey, principals: [t.user], ttlSeconds: ca.ttlSeconds, keyId, now: opts.now, comment: keyId });
      out.privateKey = new SecretValue(opensshPrivateKey(privateKey, keyId));
      out.certificate = issued.certificate;
      const { blob: _b, certificate: _c, ...rest } = issued;
      out.issued = rest;
      return out;
    }
    const key = wrap(secret('private_key'));
    if (!key) throw missing(target, 'no private_key, and identity.upstream_ssh_ca does not cover this target');
    out.privateKey = key;
    return out;
  }

  if (!t.server) throw missing(target, 'a kubernetes target needs server');
  const out: KubernetesCredentials = { protocol: 'kubernetes', target, server: t.server, impersonate: t.impersonate === true };
  const ca = secret('ca');
  if (ca !== undefined) out.ca = ca;
  const token = wrap(secret('token'));
  const cert = secret('client_cert');
  const key = wrap(secret('client_key'));
  if ((cert === undefined) !== (key === undefined)) throw missing(target, 'client_cert and client_key go together');
  if (token) out.token = token;
  if (cert !== undefined && key) {
    out.clientCert = cert;
    out.clientKey = key;
  }
  if (!token && !key) throw missing(target, 'a kubernetes target needs token, or client_cert and client_key');
  return out;
}
