// OpenSSH certificates (PROTOCOL.certkeys): parse a certificate blob, verify its CA signature,
// and issue user certificates signed by the bastion's CA.
//
//   string  cert type ("ssh-ed25519-cert-v01@openssh.com", …)
//   string  nonce
//   ...     the key's public fields (as in the plain key, without the type string)
//   uint64  serial
//   uint32  type (1 user, 2 host)
//   string  key id
//   string  valid principals (a packed list of strings)
//   uint64  valid after, uint64 valid before (seconds since the epoch)
//   string  critical options, string extensions (packed name/data pairs)
//   string  reserved
//   string  signature key (the CA's public key blob)
//   string  signature (over everything above)
import { randomBytes, type KeyObject } from 'node:crypto';
import {
  parsePrivateKey,
  publicBlobOf,
  parsePublicKeyBlob,
  parsePublicKeyLine,
  readPublicKeyFields,
  signSshBlob,
  sshFingerprint,
  SshFormatError,
  SshReader,
  sshString,
  sshU32,
  sshU64,
  verifySshSignatureBlob,
  type SshKeyType,
  type SshPublicKey,
  type SshSignatureCheck,
} from './ssh-wire.js';

/** Certificate blob types → the key type they certify. (No sk-* or DSA.) */
export const CERT_TYPES: Readonly<Record<string, SshKeyType>> = {
  'ssh-ed25519-cert-v01@openssh.com': 'ssh-ed25519',
  'ssh-rsa-cert-v01@openssh.com': 'ssh-rsa',
  'ecdsa-sha2-nistp256-cert-v01@openssh.com': 'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384-cert-v01@openssh.com': 'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521-cert-v01@openssh.com': 'ecdsa-sha2-nistp521',
};

/** userauth algorithm names that carry a certificate → the certificate blob type. */
export const CERT_ALGORITHMS: Readonly<Record<string, string>> = {
  ...Object.fromEntries(Object.keys(CERT_TYPES).map((k) => [k, k])),
  'rsa-sha2-256-cert-v01@openssh.com': 'ssh-rsa-cert-v01@openssh.com',
  'rsa-sha2-512-cert-v01@openssh.com': 'ssh-rsa-cert-v01@openssh.com',
};

export const SSH_CERT_USER = 1;
export const SSH_CERT_HOST = 2;
/** valid_before of a certificate that never expires. */
export const CERT_FOREVER = 0xffffffffffffffffn;

export interface SshCertificate {
  certType: string;
  keyType: SshKeyType;
  nonce: Buffer;
  /** The certified key (its plain blob and KeyObject). */
  publicKey: SshPublicKey;
  serial: bigint;
  /** 1 user, 2 host. */
  type: number;
  keyId: string;
  principals: string[];
  validAfter: bigint;
  validBefore: bigint;
  /** name → raw data (for force-command and source-address: a nested string). In blob order. */
  criticalOptions: [string, Buffer][];
  extensions: [string, Buffer][];
  /** The CA's public key blob. */
  signatureKey: Buffer;
  /** The SSH signature blob. */
  signature: Buffer;
  /** The bytes the signature covers. */
  signedData: Buffer;
}

/** The certificate blob type of a blob, or undefined when it is not a (supported) certificate. */
export function certificateType(blob: Buffer): string | undefined {
  try {
    const t = new SshReader(blob).text();
    return t in CERT_TYPES ? t : undefined;
  } catch {
    return undefined;
  }
}

function readPairs(data: Buffer, what: string): [string, Buffer][] {
  const r = new SshReader(data);
  const out: [string, Buffer][] = [];
  let prev: string | undefined;
  while (!r.done()) {
    const name = r.text(`${what} name`);
    const value = r.string(`${what} data`);
    if (prev !== undefined && name <= prev) throw new SshFormatError(`${what} are not in strict lexical order (${name.slice(0, 64)})`);
    prev = name;
    out.push([name, Buffer.from(value)]);
    if (out.length > 64) throw new SshFormatError(`too many ${what}`);
  }
  return out;
}

/** Parse a certificate blob. Throws SshFormatError on anything malformed or unsupported. */
export function parseSshCertificate(blob: Buffer): SshCertificate {
  const r = new SshReader(blob);
  const certType = r.text('certificate type');
  const keyType = CERT_TYPES[certType];
  if (!keyType) throw new SshFormatError(`unsupported certificate type ${certType.slice(0, 64)}`);
  const nonce = Buffer.from(r.string('nonce'));
  let publicKey: SshPublicKey;
  try {
    publicKey = readPublicKeyFields(keyType, r);
  } catch (e) {
    if (e instanceof SshFormatError) throw e;
    throw new SshFormatError(`invalid certified key: ${(e as Error).message}`);
  }
  const serial = r.u64();
  const type = r.u32();
  const keyId = r.text('key id');
  const pr = new SshReader(r.string('principals'));
  const principals: string[] = [];
  while (!pr.done()) {
    principals.push(pr.text('principal'));
    if (principals.length > 256) throw new SshFormatError('too many principals');
  }
  const validAfter = r.u64();
  const validBefore = r.u64();
  const criticalOptions = readPairs(r.string('critical options'), 'critical options');
  const extensions = readPairs(r.string('extensions'), 'extensions');
  r.string('reserved');
  const signatureKey = Buffer.from(r.string('signature key'));
  const signedData = blob.subarray(0, r.pos);
  const signature = Buffer.from(r.string('signature'));
  r.end('the certificate');
  return { certType, keyType, nonce, publicKey, serial, type, keyId, principals, validAfter, validBefore, criticalOptions, extensions, signatureKey, signature, signedData: Buffer.from(signedData) };
}

/** The nested string of an option's data (force-command, source-address), or a SshFormatError. */
export function optionString(data: Buffer, name: string): string {
  const r = new SshReader(data);
  const s = r.text(`${name} value`);
  r.end(`the ${name} value`);
  return s;
}

/** Verify the CA signature of `cert` with `ca` (which must be the certificate's signature key). */
export function verifyCertificateSignature(cert: SshCertificate, ca: SshPublicKey): SshSignatureCheck {
  if (!cert.signatureKey.equals(ca.blob)) return { ok: false, algorithm: '', problem: 'signed by another key' };
  return verifySshSignatureBlob(ca, cert.signedData, cert.signature);
}

// --- issuing ----------------------------------------------------------------------------------

export interface IssueSshUserCertOptions {
  /** The CA's private key: a KeyObject, or PEM / OpenSSH private key text. ed25519 recommended. */
  caKey: KeyObject | string;
  /** The key to certify: a KeyObject (public or private), a plain public key blob, or an OpenSSH public key line. */
  publicKey: KeyObject | Buffer | string;
  principals: string[];
  ttlSeconds: number;
  keyId: string;
  /** Default: a random 63-bit serial. */
  serial?: bigint;
  /** Unix ms; default: now − 60 s (tolerates upstream clocks slightly behind). */
  validAfter?: number;
  /** Unix ms for "now" (tests); default Date.now(). */
  now?: number;
  /** Default: permit-pty, permit-port-forwarding (what the bastion's policy then decides). */
  extensions?: string[];
  forceCommand?: string;
  sourceAddress?: string[];
  comment?: string;
  /** SSH_CERT_USER (default) or SSH_CERT_HOST (principals are host names; no extensions by default). */
  certKind?: typeof SSH_CERT_USER | typeof SSH_CERT_HOST;
}

export interface IssuedSshCert {
  /** The OpenSSH one-line form (`ssh-ed25519-cert-v01@openssh.com AAAA… comment`): write it to `<key>-cert.pub`. */
  certificate: string;
  blob: Buffer;
  certType: string;
  serial: bigint;
  keyId: string;
  principals: string[];
  /** Unix ms. */
  validAfter: number;
  validBefore: number;
  /** Fingerprint of the CA key. */
  caFingerprint: string;
}

function packPairs(pairs: [string, Buffer][]): Buffer {
  const sorted = [...pairs].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return Buffer.concat(sorted.flatMap(([k, v]) => [sshString(k), sshString(v)]));
}

/** Issue an OpenSSH user (or, with `certKind: SSH_CERT_HOST`, host) certificate for `publicKey`, signed by `caKey`. */
export function issueSshUserCert(o: IssueSshUserCertOptions): IssuedSshCert {
  const ca = typeof o.caKey === 'string' ? parsePrivateKey(o.caKey) : o.caKey;
  if (ca.type !== 'private') throw new SshFormatError('caKey must be a private key');
  const caPub = publicBlobOf(ca);
  let subject: SshPublicKey;
  if (typeof o.publicKey === 'string') subject = parsePublicKeyLine(o.publicKey);
  else if (Buffer.isBuffer(o.publicKey)) subject = parsePublicKeyBlob(o.publicKey);
  else subject = parsePublicKeyBlob(publicBlobOf(o.publicKey).blob);
  if (!Number.isInteger(o.ttlSeconds) || o.ttlSeconds <= 0) throw new SshFormatError('ttlSeconds must be a positive integer');
  const kind = o.certKind ?? SSH_CERT_USER;
  if (o.principals.length === 0) throw new SshFormatError(`a ${kind === SSH_CERT_HOST ? 'host' : 'user'} certificate needs at least one principal`);
  const certType = Object.keys(CERT_TYPES).find((t) => CERT_TYPES[t] === subject.type);
  if (!certType) throw new SshFormatError(`cannot certify a ${subject.type} key`);
  const now = o.now ?? Date.now();
  const after = Math.floor((o.validAfter ?? now - 60_000) / 1000);
  const before = Math.floor(now / 1000) + o.ttlSeconds;
  const serial = o.serial ?? randomBytes(8).readBigUInt64BE() >> 1n;
  const critical: [string, Buffer][] = [];
  if (o.forceCommand !== undefined) critical.push(['force-command', sshString(o.forceCommand)]);
  if (o.sourceAddress?.length) critical.push(['source-address', sshString(o.sourceAddress.join(','))]);
  const extensions: [string, Buffer][] = (o.extensions ?? (kind === SSH_CERT_HOST ? [] : ['permit-port-forwarding', 'permit-pty'])).map((e) => [e, Buffer.alloc(0)]);
  // the certified key's fields: the plain blob without its type string
  const keyFields = subject.blob.subarray(4 + subject.type.length);
  const body = Buffer.concat([
    sshString(certType),
    sshString(randomBytes(32)),
    keyFields,
    sshU64(serial),
    sshU32(kind),
    sshString(o.keyId),
    sshString(Buffer.concat(o.principals.map((p) => sshString(p)))),
    sshU64(BigInt(after)),
    sshU64(BigInt(before)),
    sshString(packPairs(critical)),
    sshString(packPairs(extensions)),
    sshString(''),
    sshString(caPub.blob),
  ]);
  const blob = Buffer.concat([body, sshString(signSshBlob(ca, body))]);
  return {
    certificate: `${certType} ${blob.toString('base64')}${o.comment ? ' ' + o.comment : ''}`,
    blob,
    certType,
    serial,
    keyId: o.keyId,
    principals: [...o.principals],
    validAfter: after * 1000,
    validBefore: before * 1000,
    caFingerprint: sshFingerprint(caPub.blob),
  };
}
