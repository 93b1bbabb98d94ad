// SSH wire format (RFC 4251 §5) and key formats, with node:crypto only: public key blobs →
// KeyObject, SHA256 fingerprints, authorized_keys lines with their options, SSH signature blobs
// (verify and make), and the unencrypted `openssh-key-v1` private key format (read, and write for
// ed25519). Pure functions; no I/O.
import { createPrivateKey, createPublicKey, createHash, sign as cryptoSign, verify as cryptoVerify, randomBytes, type KeyObject } from 'node:crypto';
import { BlockList, isIP } from 'node:net';

export class SshFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SshFormatError';
  }
}

/** Bounds-checked reader over an SSH wire buffer. Every read past the end throws SshFormatError. */
export class SshReader {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  private need(n: number, what: string): void {
    if (n < 0 || this.pos + n > this.buf.length) throw new SshFormatError(`truncated ${what}`);
  }
  u8(): number {
    this.need(1, 'byte');
    return this.buf[this.pos++];
  }
  u32(): number {
    this.need(4, 'uint32');
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    this.need(8, 'uint64');
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  string(what = 'string'): Buffer {
    const n = this.u32();
    this.need(n, what);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  /** A string that must be valid UTF-8 without NUL. */
  text(what = 'string'): string {
    const b = this.string(what);
    const s = b.toString('utf8');
    if (!Buffer.from(s, 'utf8').equals(b) || s.includes('\0')) throw new SshFormatError(`${what} is not valid UTF-8`);
    return s;
  }
  /** An mpint as an unsigned big-endian magnitude (no leading zeros); negative numbers refused. */
  mpint(what = 'mpint'): Buffer {
    const b = this.string(what);
    if (b.length > 0 && b[0] & 0x80) throw new SshFormatError(`${what} is negative`);
    let i = 0;
    while (i < b.length && b[i] === 0) i++;
    return b.subarray(i);
  }
  done(): boolean {
    return this.pos === this.buf.length;
  }
  end(what: string): void {
    if (!this.done()) throw new SshFormatError(`${this.buf.length - this.pos} trailing bytes after ${what}`);
  }
}

export function sshString(v: Buffer | string): Buffer {
  const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

export function sshU32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}

export function sshU64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
}

/** An unsigned magnitude as an SSH mpint (a leading zero when the high bit is set). */
export function sshMpint(mag: Buffer): Buffer {
  let i = 0;
  while (i < mag.length && mag[i] === 0) i++;
  let m = mag.subarray(i);
  if (m.length > 0 && m[0] & 0x80) m = Buffer.concat([Buffer.from([0]), m]);
  return sshString(m);
}

const b64u = (b: Buffer): string => b.toString('base64url');
const fromB64u = (s: string | undefined, what: string): Buffer => {
  if (typeof s !== 'string') throw new SshFormatError(`missing ${what}`);
  return Buffer.from(s, 'base64url');
};

function leftPad(b: Buffer, n: number): Buffer {
  if (b.length > n) throw new SshFormatError('integer longer than its field');
  return b.length === n ? b : Buffer.concat([Buffer.alloc(n - b.length), b]);
}

export type SshKeyType = 'ssh-ed25519' | 'ssh-rsa' | 'ecdsa-sha2-nistp256' | 'ecdsa-sha2-nistp384' | 'ecdsa-sha2-nistp521';
export const SSH_KEY_TYPES: readonly SshKeyType[] = ['ssh-ed25519', 'ssh-rsa', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521'];

const CURVES = {
  'ecdsa-sha2-nistp256': { name: 'nistp256', crv: 'P-256', size: 32, hash: 'sha256' },
  'ecdsa-sha2-nistp384': { name: 'nistp384', crv: 'P-384', size: 48, hash: 'sha384' },
  'ecdsa-sha2-nistp521': { name: 'nistp521', crv: 'P-521', size: 66, hash: 'sha512' },
} as const;
type EcType = keyof typeof CURVES;
const isEcType = (t: string): t is EcType => t in CURVES;

/** Minimum RSA modulus accepted for user keys and CA keys. */
export const MIN_RSA_BITS = 2048;

export interface SshPublicKey {
  type: SshKeyType;
  /** The plain public key blob (as in authorized_keys, base64-decoded). */
  blob: Buffer;
  key: KeyObject;
  /** RSA modulus size in bits. */
  bits?: number;
}

export function isSshKeyType(t: string): t is SshKeyType {
  return (SSH_KEY_TYPES as readonly string[]).includes(t);
}

/**
 * Read the type-specific public fields of `type` from `r` (plain keys and certificates share
 * them) and return the plain blob and a KeyObject.
 */
export function readPublicKeyFields(type: SshKeyType, r: SshReader): SshPublicKey {
  if (type === 'ssh-ed25519') {
    const pk = r.string('ed25519 public key');
    if (pk.length !== 32) throw new SshFormatError('ed25519 public key is not 32 bytes');
    const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64u(pk) }, format: 'jwk' });
    return { type, blob: Buffer.concat([sshString(type), sshString(pk)]), key };
  }
  if (type === 'ssh-rsa') {
    const e = r.mpint('rsa exponent');
    const n = r.mpint('rsa modulus');
    if (n.length === 0 || e.length === 0) throw new SshFormatError('empty rsa key');
    const bits = n.length * 8 - Math.clz32(n[0]) + 24;
    const key = createPublicKey({ key: { kty: 'RSA', n: b64u(n), e: b64u(e) }, format: 'jwk' });
    return { type, blob: Buffer.concat([sshString(type), sshMpint(e), sshMpint(n)]), key, bits };
  }
  const c = CURVES[type];
  const curve = r.text('curve name');
  if (curve !== c.name) throw new SshFormatError(`curve ${curve} does not match key type ${type}`);
  const q = r.string('ecdsa point');
  if (q.length !== 1 + 2 * c.size || q[0] !== 4) throw new SshFormatError('ecdsa point is not an uncompressed point of the curve');
  const key = createPublicKey({ key: { kty: 'EC', crv: c.crv, x: b64u(q.subarray(1, 1 + c.size)), y: b64u(q.subarray(1 + c.size)) }, format: 'jwk' });
  return { type, blob: Buffer.concat([sshString(type), sshString(curve), sshString(q)]), key };
}

/** Parse a plain public key blob (not a certificate). Throws SshFormatError. */
export function parsePublicKeyBlob(blob: Buffer): SshPublicKey {
  const r = new SshReader(blob);
  const type = r.text('key type');
  if (!isSshKeyType(type)) throw new SshFormatError(`unsupported key type ${type.slice(0, 64)}`);
  let k: SshPublicKey;
  try {
    k = readPublicKeyFields(type, r);
  } catch (e) {
    if (e instanceof SshFormatError) throw e;
    throw new SshFormatError(`invalid ${type} key: ${(e as Error).message}`);
  }
  r.end('the public key');
  return k;
}

/** OpenSSH's fingerprint: `SHA256:` + unpadded base64 of the SHA-256 of the blob. */
export function sshFingerprint(blob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/** The public key blob of a KeyObject (private or public): ed25519, RSA, ECDSA P-256/384/521. */
export function publicBlobOf(key: KeyObject): { type: SshKeyType; blob: Buffer } {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const jwk = pub.export({ format: 'jwk' });
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') {
    return { type: 'ssh-ed25519', blob: Buffer.concat([sshString('ssh-ed25519'), sshString(fromB64u(jwk.x, 'x'))]) };
  }
  if (jwk.kty === 'RSA') {
    return { type: 'ssh-rsa', blob: Buffer.concat([sshString('ssh-rsa'), sshMpint(fromB64u(jwk.e, 'e')), sshMpint(fromB64u(jwk.n, 'n'))]) };
  }
  if (jwk.kty === 'EC') {
    const type = (Object.keys(CURVES) as EcType[]).find((t) => CURVES[t].crv === jwk.crv);
    if (!type) throw new SshFormatError(`unsupported curve ${String(jwk.crv)}`);
    const c = CURVES[type];
    const q = Buffer.concat([Buffer.from([4]), leftPad(fromB64u(jwk.x, 'x'), c.size), leftPad(fromB64u(jwk.y, 'y'), c.size)]);
    return { type, blob: Buffer.concat([sshString(type), sshString(c.name), sshString(q)]) };
  }
  throw new SshFormatError(`unsupported key kind ${String(jwk.kty)}`);
}

// --- signatures -------------------------------------------------------------------------------

/** Signature algorithms accepted per key type. `ssh-rsa` (SHA-1) is refused, as OpenSSH does by default. */
const SIG_ALGS: Record<SshKeyType, Record<string, string | null>> = {
  'ssh-ed25519': { 'ssh-ed25519': null },
  'ssh-rsa': { 'rsa-sha2-256': 'sha256', 'rsa-sha2-512': 'sha512' },
  'ecdsa-sha2-nistp256': { 'ecdsa-sha2-nistp256': 'sha256' },
  'ecdsa-sha2-nistp384': { 'ecdsa-sha2-nistp384': 'sha384' },
  'ecdsa-sha2-nistp521': { 'ecdsa-sha2-nistp521': 'sha512' },
};

export interface SshSignatureCheck {
  ok: boolean;
  /** The signature algorithm named in the blob. */
  algorithm: string;
  /** Why it failed, when it did. */
  problem?: string;
}

/** Verify an SSH signature blob (`string format, string signature`) over `data` with `key`. */
export function verifySshSignatureBlob(key: SshPublicKey, data: Buffer, sigBlob: Buffer): SshSignatureCheck {
  let algorithm = '';
  try {
    const r = new SshReader(sigBlob);
    algorithm = r.text('signature format');
    const raw = r.string('signature');
    r.end('the signature');
    const algs = SIG_ALGS[key.type];
    if (!(algorithm in algs)) {
      return { ok: false, algorithm, problem: algorithm === 'ssh-rsa' ? 'signature algorithm ssh-rsa (SHA-1) is not accepted' : `signature algorithm ${algorithm.slice(0, 64)} does not fit a ${key.type} key` };
    }
    const hash = algs[algorithm];
    if (key.type === 'ssh-ed25519') {
      if (raw.length !== 64) return { ok: false, algorithm, problem: 'ed25519 signature is not 64 bytes' };
      return { ok: cryptoVerify(null, data, key.key, raw), algorithm };
    }
    if (key.type === 'ssh-rsa') {
      const bytes = Math.ceil((key.bits ?? 0) / 8);
      if (raw.length > bytes) return { ok: false, algorithm, problem: 'rsa signature longer than the modulus' };
      return { ok: cryptoVerify(hash, data, key.key, leftPad(raw, bytes)), algorithm };
    }
    const c = CURVES[key.type];
    const sr = new SshReader(raw);
    const rr = sr.mpint('ecdsa r');
    const ss = sr.mpint('ecdsa s');
    sr.end('the ecdsa signature');
    if (rr.length > c.size || ss.length > c.size) return { ok: false, algorithm, problem: 'ecdsa signature values too long' };
    const p1363 = Buffer.concat([leftPad(rr, c.size), leftPad(ss, c.size)]);
    return { ok: cryptoVerify(hash, data, { key: key.key, dsaEncoding: 'ieee-p1363' }, p1363), algorithm };
  } catch (e) {
    return { ok: false, algorithm, problem: e instanceof SshFormatError ? e.message : 'malformed signature' };
  }
}

/**
 * For the SSH proxy: verify the signature a client made over the session data with a plain
 * public key blob (e.g. `SshCertInfo.publicKey.blob` of a certificate login). `signature` is the
 * SSH signature blob (`string format, string sig`).
 */
export function verifySshSignature(publicKeyBlob: Buffer, data: Buffer, signature: Buffer): boolean {
  try {
    return verifySshSignatureBlob(parsePublicKeyBlob(publicKeyBlob), data, signature).ok;
  } catch {
    return false;
  }
}

/** Sign `data` as an SSH signature blob. ed25519 → ssh-ed25519, RSA → rsa-sha2-512, ECDSA → its curve's. */
export function signSshBlob(privateKey: KeyObject, data: Buffer): Buffer {
  const { type } = publicBlobOf(privateKey);
  if (type === 'ssh-ed25519') return Buffer.concat([sshString('ssh-ed25519'), sshString(cryptoSign(null, data, privateKey))]);
  if (type === 'ssh-rsa') return Buffer.concat([sshString('rsa-sha2-512'), sshString(cryptoSign('sha512', data, privateKey))]);
  const c = CURVES[type];
  const sig = cryptoSign(c.hash, data, { key: privateKey, dsaEncoding: 'ieee-p1363' });
  const inner = Buffer.concat([sshMpint(sig.subarray(0, c.size)), sshMpint(sig.subarray(c.size))]);
  return Buffer.concat([sshString(type), sshString(inner)]);
}

// --- authorized_keys --------------------------------------------------------------------------

export interface AuthorizedKeyLine {
  /** Option name → value (`true` for a flag). Names are lower-cased. */
  options: Map<string, string | true>;
  keyType: string;
  blob: Buffer;
  comment: string;
}

/**
 * Parse one authorized_keys line: `[options] keytype base64 [comment]`. Options are comma
 * separated; values are double-quoted with `\"` escapes. Throws SshFormatError.
 */
export function parseAuthorizedKeyLine(line0: string): AuthorizedKeyLine {
  const line = line0.trim();
  const options = new Map<string, string | true>();
  let i = 0;
  const startsWithKeyType = (s: string) => /^(ssh-|ecdsa-|sk-)/.test(s);
  if (!startsWithKeyType(line)) {
    // options until the first unquoted space
    for (let guard = 0; guard < 64; guard++) {
      const m = /^[A-Za-z0-9-]+/.exec(line.slice(i));
      if (!m) throw new SshFormatError(`bad option at column ${i + 1}`);
      const name = m[0].toLowerCase();
      i += m[0].length;
      let value: string | true = true;
      if (line[i] === '=') {
        i++;
        if (line[i] !== '"') throw new SshFormatError(`option ${name}: value must be double-quoted`);
        i++;
        let v = '';
        for (;;) {
          if (i >= line.length) throw new SshFormatError(`option ${name}: unterminated quoted value`);
          const ch = line[i];
          if (ch === '\\' && line[i + 1] === '"') {
            v += '"';
            i += 2;
          } else if (ch === '"') {
            i++;
            break;
          } else {
            v += ch;
            i++;
          }
        }
        value = v;
      }
      if (options.has(name) && name !== 'permitopen' && name !== 'permitlisten' && name !== 'environment') throw new SshFormatError(`option ${name} given twice`);
      options.set(name, value);
      if (line[i] === ',') {
        i++;
        continue;
      }
      if (line[i] === ' ' || line[i] === '\t') break;
      throw new SshFormatError(`bad option list at column ${i + 1}`);
    }
    while (line[i] === ' ' || line[i] === '\t') i++;
  }
  const rest = line.slice(i).split(/[ \t]+/);
  const [keyType, b64, ...comment] = rest;
  if (!keyType || !b64) throw new SshFormatError('expected "keytype base64-key [comment]"');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new SshFormatError('key is not base64');
  const blob = Buffer.from(b64, 'base64');
  return { options, keyType, blob, comment: comment.join(' ') };
}

/** An OpenSSH public key line (`type base64 [comment]`) → blob. */
export function parsePublicKeyLine(line: string): SshPublicKey {
  const p = parseAuthorizedKeyLine(line);
  if (p.options.size) throw new SshFormatError('a public key line has no options');
  const k = parsePublicKeyBlob(p.blob);
  if (k.type !== p.keyType) throw new SshFormatError(`key type ${p.keyType} does not match the key data (${k.type})`);
  return k;
}

export function publicKeyLine(type: string, blob: Buffer, comment = ''): string {
  return `${type} ${blob.toString('base64')}${comment ? ' ' + comment : ''}`;
}

// --- address patterns (source-address, from=) -------------------------------------------------


/** IPv4-mapped IPv6 (`::ffff:1.2.3.4`) → IPv4; everything else as it is. */
export function normalizeAddress(a: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  return m ? m[1] : a;
}

/** A CIDR list (`10.0.0.0/8,::1/128,192.168.1.7`) as a BlockList. Throws SshFormatError. */
export function cidrList(list: string, what: string): BlockList {
  const bl = new BlockList();
  const items = list.split(',').map((s) => s.trim());
  if (items.length === 0 || items.some((s) => s === '')) throw new SshFormatError(`${what}: empty entry`);
  for (const item of items) {
    const [addr, prefix, extra] = item.split('/');
    const fam = isIP(addr);
    if (!fam || extra !== undefined) throw new SshFormatError(`${what}: "${item.slice(0, 64)}" is not an address or CIDR`);
    const type = fam === 4 ? 'ipv4' : 'ipv6';
    const max = fam === 4 ? 32 : 128;
    if (prefix === undefined) bl.addAddress(addr, type);
    else {
      if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max) throw new SshFormatError(`${what}: bad prefix length in "${item.slice(0, 64)}"`);
      bl.addSubnet(addr, Number(prefix), type);
    }
  }
  return bl;
}

export function addressIn(list: BlockList, remote: string): boolean {
  const a = normalizeAddress(remote);
  const fam = isIP(a);
  if (!fam) return false;
  return list.check(a, fam === 4 ? 'ipv4' : 'ipv6');
}

// --- OpenSSH private keys ---------------------------------------------------------------------

const OPENSSH_MAGIC = Buffer.from('openssh-key-v1\0', 'latin1');

function unpem(text: string, label: string): Buffer | null {
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`);
  const m = re.exec(text);
  if (!m) return null;
  return Buffer.from(m[1].replace(/\s+/g, ''), 'base64');
}

function modBig(a: bigint, m: bigint): bigint {
  return ((a % m) + m) % m;
}
const toBig = (b: Buffer): bigint => (b.length ? BigInt('0x' + b.toString('hex')) : 0n);
function fromBig(v: bigint): Buffer {
  let h = v.toString(16);
  if (h.length % 2) h = '0' + h;
  return Buffer.from(h, 'hex');
}

/**
 * A private key from text: `-----BEGIN OPENSSH PRIVATE KEY-----` (unencrypted; ed25519, RSA,
 * ECDSA) or any PEM node:crypto reads (PKCS#8, PKCS#1, SEC1; encrypted with `passphrase`).
 */
export function parsePrivateKey(text: string, passphrase?: string): KeyObject {
  const der = unpem(text, 'OPENSSH PRIVATE KEY');
  if (!der) {
    try {
      return createPrivateKey({ key: text, format: 'pem', passphrase });
    } catch (e) {
      throw new SshFormatError(`not a private key this bastion can read (${(e as Error).message})`);
    }
  }
  if (!der.subarray(0, OPENSSH_MAGIC.length).equals(OPENSSH_MAGIC)) throw new SshFormatError('not an openssh-key-v1 key');
  const r = new SshReader(der.subarray(OPENSSH_MAGIC.length));
  const cipher = r.text('cipher name');
  const kdf = r.text('kdf name');
  r.string('kdf options');
  if (cipher !== 'none' || kdf !== 'none') throw new SshFormatError('the OpenSSH private key is encrypted; decrypt it (ssh-keygen -p -N "") or convert it to PKCS#8 PEM with a passphrase');
  const n = r.u32();
  if (n !== 1) throw new SshFormatError(`expected one key, found ${n}`);
  r.string('public key');
  const priv = new SshReader(r.string('private section'));
  if (priv.u32() !== priv.u32()) throw new SshFormatError('check bytes differ (corrupt key)');
  const type = priv.text('key type');
  try {
    if (type === 'ssh-ed25519') {
      const pk = priv.string('public key');
      const sk = priv.string('private key');
      if (pk.length !== 32 || sk.length !== 64) throw new SshFormatError('bad ed25519 key lengths');
      return createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64u(pk), d: b64u(sk.subarray(0, 32)) }, format: 'jwk' });
    }
    if (type === 'ssh-rsa') {
      const nn = priv.mpint();
      const e = priv.mpint();
      const d = priv.mpint();
      const iqmp = priv.mpint();
      const p = priv.mpint();
      const q = priv.mpint();
      const dp = fromBig(modBig(toBig(d), toBig(p) - 1n));
      const dq = fromBig(modBig(toBig(d), toBig(q) - 1n));
      return createPrivateKey({ key: { kty: 'RSA', n: b64u(nn), e: b64u(e), d: b64u(d), p: b64u(p), q: b64u(q), dp: b64u(dp), dq: b64u(dq), qi: b64u(iqmp) }, format: 'jwk' });
    }
    if (isEcType(type)) {
      const c = CURVES[type];
      const curve = priv.text();
      if (curve !== c.name) throw new SshFormatError('curve does not match the key type');
      const q = priv.string();
      const d = priv.mpint();
      return createPrivateKey({ key: { kty: 'EC', crv: c.crv, x: b64u(q.subarray(1, 1 + c.size)), y: b64u(q.subarray(1 + c.size)), d: b64u(leftPad(d, c.size)) }, format: 'jwk' });
    }
  } catch (e) {
    if (e instanceof SshFormatError) throw e;
    throw new SshFormatError(`invalid ${type} private key: ${(e as Error).message}`);
  }
  throw new SshFormatError(`unsupported private key type ${type.slice(0, 64)}`);
}

/** An unencrypted `openssh-key-v1` private key (PEM text) for an ed25519 KeyObject. */
export function opensshPrivateKey(key: KeyObject, comment = ''): string {
  const jwk = key.export({ format: 'jwk' });
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || !jwk.d) throw new SshFormatError('opensshPrivateKey writes ed25519 private keys only');
  const pk = fromB64u(jwk.x, 'x');
  const seed = fromB64u(jwk.d, 'd');
  const pub = Buffer.concat([sshString('ssh-ed25519'), sshString(pk)]);
  const check = randomBytes(4);
  let body = Buffer.concat([check, check, sshString('ssh-ed25519'), sshString(pk), sshString(Buffer.concat([seed, pk])), sshString(comment)]);
  const pad: number[] = [];
  for (let i = 1; (body.length + pad.length) % 8 !== 0; i++) pad.push(i);
  body = Buffer.concat([body, Buffer.from(pad)]);
  const der = Buffer.concat([OPENSSH_MAGIC, sshString('none'), sshString('none'), sshString(''), sshU32(1), sshString(pub), sshString(body)]);
  const b64 = der.toString('base64').replace(/(.{70})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${b64}\n-----END OPENSSH PRIVATE KEY-----\n`;
}
