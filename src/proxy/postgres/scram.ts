// Client side of the upstream login: SCRAM-SHA-256 (RFC 5802 / RFC 7677, without channel
// binding, as libpq does when it does not use it) and md5. Pure functions over node:crypto; the
// salted password (PBKDF2, thousands of iterations) is cached per (password, salt, iterations) so
// that reconnecting to the same target does not pay it again.

import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import { PortcullisError } from '../../policy/types.js';

export const SCRAM_MECHANISM = 'SCRAM-SHA-256';
/** An upstream asking for more iterations than this is refused (a bastion is not a PBKDF2 oracle). */
const MAX_ITERATIONS = 10_000_000;

function scramError(message: string): PortcullisError {
  return new PortcullisError('pg_upstream_auth', message);
}

/** md5 password response: "md5" + md5(md5(password + user) + salt). */
export function md5PasswordResponse(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5').update(password + user, 'utf8').digest('hex');
  return 'md5' + createHash('md5').update(Buffer.concat([Buffer.from(inner, 'latin1'), salt])).digest('hex');
}

const saltedCache = new Map<string, Buffer>();

function saltedPassword(password: string, salt: Buffer, iterations: number): Promise<Buffer> {
  const key = createHash('sha256').update(password).update('\0').update(salt).update(String(iterations)).digest('base64');
  const hit = saltedCache.get(key);
  if (hit) return Promise.resolve(hit);
  return new Promise((resolve, reject) => {
    pbkdf2(password.normalize('NFKC'), salt, iterations, 32, 'sha256', (err, out) => {
      if (err) return reject(err);
      if (saltedCache.size > 256) saltedCache.clear();
      saltedCache.set(key, out);
      resolve(out);
    });
  });
}

function hmac(key: Buffer, data: string | Buffer): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

/** One SCRAM-SHA-256 exchange, client side. */
export class ScramClient {
  private readonly clientNonce: string;
  private readonly clientFirstBare: string;
  private serverSignature: Buffer | null = null;

  constructor(
    private readonly password: string,
    nonce?: string,
    /** PostgreSQL takes the user from the startup packet: the SCRAM user name is left empty. */
    user = '',
  ) {
    this.clientNonce = nonce ?? randomBytes(18).toString('base64');
    this.clientFirstBare = `n=${user.replace(/=/g, '=3D').replace(/,/g, '=2C')},r=${this.clientNonce}`;
  }

  /** The SASLInitialResponse data: gs2 header "n,," (no channel binding) + client-first-message-bare. */
  clientFirst(): Buffer {
    return Buffer.from(`n,,${this.clientFirstBare}`, 'utf8');
  }

  /** Given server-first-message, the client-final-message (with the proof). */
  async clientFinal(serverFirst: string): Promise<Buffer> {
    const attrs = parseAttributes(serverFirst);
    const nonce = attrs.get('r');
    const saltB64 = attrs.get('s');
    const iterStr = attrs.get('i');
    if (nonce === undefined || saltB64 === undefined || iterStr === undefined) throw scramError('SCRAM: server-first-message lacks r, s or i');
    if (!nonce.startsWith(this.clientNonce) || nonce.length <= this.clientNonce.length) throw scramError('SCRAM: the server nonce does not extend the client nonce');
    const iterations = Number(iterStr);
    if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) throw scramError(`SCRAM: invalid iteration count ${iterStr}`);
    const salt = Buffer.from(saltB64, 'base64');
    if (salt.length === 0) throw scramError('SCRAM: empty salt');
    const salted = await saltedPassword(this.password, salt, iterations);
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = createHash('sha256').update(clientKey).digest();
    const withoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const clientSignature = hmac(storedKey, authMessage);
    const proof = Buffer.alloc(clientKey.length);
    for (let i = 0; i < proof.length; i++) proof[i] = clientKey[i]! ^ clientSignature[i]!;
    const serverKey = hmac(salted, 'Server Key');
    this.serverSignature = hmac(serverKey, authMessage);
    return Buffer.from(`${withoutProof},p=${proof.toString('base64')}`, 'utf8');
  }

  /** Checks server-final-message; throws when the server could not prove it knows the password. */
  verifyServerFinal(serverFinal: string): void {
    const attrs = parseAttributes(serverFinal);
    const err = attrs.get('e');
    if (err !== undefined) throw scramError(`SCRAM: the server reported an error: ${err}`);
    const v = attrs.get('v');
    if (v === undefined || this.serverSignature === null) throw scramError('SCRAM: server-final-message lacks the server signature');
    const got = Buffer.from(v, 'base64');
    if (got.length !== this.serverSignature.length || !timingSafeEqual(got, this.serverSignature)) {
      throw scramError('SCRAM: the server signature is wrong (the upstream does not know the password)');
    }
  }
}

function parseAttributes(msg: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of msg.split(',')) {
    const eq = part.indexOf('=');
    if (eq !== 1) continue;
    out.set(part[0]!, part.slice(2));
  }
  return out;
}
