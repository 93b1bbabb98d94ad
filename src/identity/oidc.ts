// OIDC workload tokens (GitHub Actions, GitLab CI, Kubernetes service accounts, any OpenID
// provider): JWS compact tokens verified against the issuer's published keys.
//
// - Discovery with openid-client (`discovery()`: the metadata's `issuer` must equal the configured
//   one; http only for loopback issuers), then the JWKS, fetched and cached here; an unknown `kid`
//   triggers a refresh at most once per `jwks_cooldown`; keys older than `jwks_max_age` are
//   refreshed in the background; a failed refresh keeps the previous keys.
// - Signatures are checked with node:crypto directly (synchronous, ~4x the throughput of WebCrypto
//   on this path), against keys whose type fits the algorithm; the algorithm must be one pinned
//   for the issuer (never `none`, never HS*).
// - Order of checks: shape → issuer → algorithm → key → signature → times → audience → client →
//   required claims → mapping. Nothing about the claims is reported before the signature holds.
// - Verified tokens are cached (bounded) until they expire: a cache hit re-checks the times and
//   that the signing key is still published, so a key removed at the IdP also ends its tokens.
import { constants, createHash, createPublicKey, verify as cryptoVerify, type JsonWebKey, type KeyObject } from 'node:crypto';
import * as nodeCrypto from 'node:crypto';
import * as oidcClient from 'openid-client';
import type { Logger } from '../core/log.js';
import { checkFetchUrl, type JwsAlgorithm, type OidcIssuerConfig } from './config.js';
import { IdentityError, iso } from './errors.js';
import { lookupPath, renderTemplate } from './template.js';
import type { AuthenticatedIdentity } from './types.js';

export const MAX_JWT_LENGTH = 16 * 1024;
const MAX_JWKS_BYTES = 1024 * 1024;
const MAX_KEYS = 64;
const MIN_RSA_BITS = 2048;
/** Distinct token headers kept decoded (an issuer uses one per key and token type). */
const MAX_CACHED_HEADERS = 256;

interface AlgSpec {
  hash: string | null;
  kind: 'rsa' | 'ec' | 'ed25519';
  pss?: boolean;
  curve?: string;
  sigLen?: number;
}

const ALGS: Record<JwsAlgorithm, AlgSpec> = {
  RS256: { hash: 'sha256', kind: 'rsa' },
  RS384: { hash: 'sha384', kind: 'rsa' },
  RS512: { hash: 'sha512', kind: 'rsa' },
  PS256: { hash: 'sha256', kind: 'rsa', pss: true },
  PS384: { hash: 'sha384', kind: 'rsa', pss: true },
  PS512: { hash: 'sha512', kind: 'rsa', pss: true },
  ES256: { hash: 'sha256', kind: 'ec', curve: 'prime256v1', sigLen: 64 },
  ES384: { hash: 'sha384', kind: 'ec', curve: 'secp384r1', sigLen: 96 },
  ES512: { hash: 'sha512', kind: 'ec', curve: 'secp521r1', sigLen: 132 },
  EdDSA: { hash: null, kind: 'ed25519', sigLen: 64 },
  Ed25519: { hash: null, kind: 'ed25519', sigLen: 64 },
};

interface KeyEntry {
  kid?: string;
  /** The JWK's own `alg`, when it names one. */
  alg?: string;
  key: KeyObject;
  kind: AlgSpec['kind'];
  curve?: string;
}

function keyFits(k: KeyEntry, alg: JwsAlgorithm): boolean {
  const spec = ALGS[alg];
  if (k.kind !== spec.kind) return false;
  if (spec.curve && k.curve !== spec.curve) return false;
  if (k.alg !== undefined && k.alg !== alg && !(spec.kind === 'ed25519' && (k.alg === 'EdDSA' || k.alg === 'Ed25519'))) return false;
  return true;
}

/** Public members of a JWK, or null when it is not a usable signature key. */
function publicJwk(j: Record<string, unknown>): JsonWebKey | null {
  if (j.use !== undefined && j.use !== 'sig') return null;
  if (Array.isArray(j.key_ops) && !j.key_ops.includes('verify')) return null;
  const s = (k: string) => (typeof j[k] === 'string' ? (j[k] as string) : undefined);
  if (j.kty === 'RSA' && s('n') && s('e')) return { kty: 'RSA', n: s('n'), e: s('e') };
  if (j.kty === 'EC' && s('crv') && s('x') && s('y')) return { kty: 'EC', crv: s('crv'), x: s('x'), y: s('y') };
  if (j.kty === 'OKP' && s('crv') === 'Ed25519' && s('x')) return { kty: 'OKP', crv: 'Ed25519', x: s('x') };
  return null;
}

class IssuerState {
  keys: KeyEntry[] = [];
  /** Published keys, by identity (for the verified-token cache). */
  keySet = new Set<KeyObject>();
  /** Canonical public JWK → KeyObject, so that a refresh keeps unchanged keys (and the cache). */
  private byJwk = new Map<string, KeyObject>();
  private readonly byKidAlg = new Map<string, KeyEntry[]>();
  loadedAt = 0;
  lastAttempt = Number.NEGATIVE_INFINITY;
  lastError?: string;
  inflight?: Promise<void>;
  jwksUri?: string;

  constructor(readonly cfg: OidcIssuerConfig) {
    this.jwksUri = cfg.jwksUri;
  }

  get loaded(): boolean {
    return this.loadedAt > 0;
  }

  /** Replace the key set from a JWKS document. Throws when it holds no usable key. */
  setKeys(doc: unknown, now: number, log?: Logger): void {
    if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { keys?: unknown }).keys)) throw new Error('not a JWK set');
    const next: KeyEntry[] = [];
    const nextByJwk = new Map<string, KeyObject>();
    let skipped = 0;
    for (const raw of (doc as { keys: unknown[] }).keys.slice(0, MAX_KEYS)) {
      if (typeof raw !== 'object' || raw === null) continue;
      const j = raw as Record<string, unknown>;
      const pub = publicJwk(j);
      if (!pub) {
        skipped++;
        continue;
      }
      const canon = JSON.stringify(pub);
      let key = this.byJwk.get(canon) ?? nextByJwk.get(canon);
      try {
        key ??= createPublicKey({ key: pub, format: 'jwk' });
      } catch {
        skipped++;
        continue;
      }
      const details = key.asymmetricKeyDetails ?? {};
      const kind = key.asymmetricKeyType === 'rsa' ? 'rsa' : key.asymmetricKeyType === 'ec' ? 'ec' : key.asymmetricKeyType === 'ed25519' ? 'ed25519' : null;
      if (!kind || (kind === 'rsa' && (details.modulusLength ?? 0) < MIN_RSA_BITS)) {
        skipped++;
        continue;
      }
      nextByJwk.set(canon, key);
      next.push({ kid: typeof j.kid === 'string' ? j.kid : undefined, alg: typeof j.alg === 'string' ? j.alg : undefined, key, kind, curve: details.namedCurve });
    }
    if (next.length === 0) throw new Error(`no usable signature key in the JWK set${skipped ? ` (${skipped} skipped)` : ''}`);
    if (skipped) log?.debug('oidc: keys skipped in JWK set', { issuer: this.cfg.name, skipped });
    this.keys = next;
    this.byKidAlg.clear();
    this.byJwk = nextByJwk;
    this.keySet = new Set(next.map((k) => k.key));
    this.loadedAt = now;
    this.lastError = undefined;
  }

  /** Keys that may have signed a token with this kid and alg (computed once per key set). */
  candidates(kid: string | undefined, alg: JwsAlgorithm): KeyEntry[] {
    const ck = `${alg}\u0000${kid ?? '\u0000'}`;
    let c = this.byKidAlg.get(ck);
    if (!c) {
      c = this.keys.filter((k) => (kid === undefined || k.kid === kid) && keyFits(k, alg)).slice(0, 8);
      // Bounded: kids come from untrusted headers (checked before the signature is).
      if (this.byKidAlg.size >= 256) this.byKidAlg.clear();
      this.byKidAlg.set(ck, c);
    }
    return c;
  }
}

interface CacheEntry {
  state: IssuerState;
  key: KeyObject;
  exp: number;
  nbf?: number;
  iat?: number;
  identity: AuthenticatedIdentity;
  claims: Record<string, unknown>;
}

export interface OidcResult {
  identity: AuthenticatedIdentity;
  claims: Record<string, unknown>;
  issuer: OidcIssuerConfig;
}

export interface OidcVerifierOptions {
  now: () => number;
  log?: Logger;
  /** Verified tokens kept (default 10,000). 0 disables the cache. */
  cacheSize?: number;
}

const B64URL = /^[A-Za-z0-9_-]*$/;

/** crypto.hash (Node ≥ 20.12): one-shot, cheaper than createHash for short inputs. */
const oneShotHash = (nodeCrypto as { hash?: (alg: string, data: string, enc: 'hex') => string }).hash;
function sha256Hex(s: string): string {
  return oneShotHash ? oneShotHash('sha256', s, 'hex') : createHash('sha256').update(s).digest('hex');
}

function b64json(part: string, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new IdentityError('token_malformed', `malformed token (${what} is not base64url JSON)`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new IdentityError('token_malformed', `malformed token (${what} is not a JSON object)`);
  return v as Record<string, unknown>;
}

/** A short, printable rendering of an untrusted value for messages. */
function show(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v) ?? String(v);
  return JSON.stringify(s.length > 120 ? s.slice(0, 120) + '…' : s);
}

const ACCEPTED_TYP = new Set(['jwt', 'at+jwt', 'application/jwt', 'application/at+jwt']);

export function looksLikeJwt(s: string): boolean {
  const a = s.indexOf('.');
  const b = a < 0 ? -1 : s.indexOf('.', a + 1);
  return a > 0 && b > a && s.indexOf('.', b + 1) < 0;
}

export class OidcVerifier {
  private readonly states = new Map<string, IssuerState>();
  private readonly cache = new Map<string, CacheEntry>();
  private readonly cacheSize: number;
  private readonly headers = new Map<string, Record<string, unknown>>();

  constructor(
    issuers: readonly OidcIssuerConfig[],
    private readonly opts: OidcVerifierOptions,
  ) {
    for (const c of issuers) this.states.set(c.issuer, new IssuerState(c));
    this.cacheSize = opts.cacheSize ?? 10_000;
  }

  get issuers(): OidcIssuerConfig[] {
    return [...this.states.values()].map((s) => s.cfg);
  }

  issuer(iss: string): OidcIssuerConfig | undefined {
    return this.states.get(iss)?.cfg;
  }

  /** Load every issuer's keys now (start-up); failures are reported, not thrown. */
  async prefetch(): Promise<{ issuer: string; ok: boolean; keys: number; error?: string }[]> {
    const out = [];
    for (const st of this.states.values()) {
      try {
        await this.refresh(st);
        out.push({ issuer: st.cfg.issuer, ok: true, keys: st.keys.length });
      } catch (e) {
        out.push({ issuer: st.cfg.issuer, ok: false, keys: st.keys.length, error: (e as Error).message });
      }
    }
    return out;
  }

  /** Verify a JWT; resolves the mapped identity or throws an IdentityError. */
  async verify(token: string): Promise<OidcResult> {
    const now = this.opts.now();
    const hit = this.cache.get(token);
    if (hit) {
      if (hit.state.keySet.has(hit.key)) {
        this.checkTimes(hit.state.cfg, hit.exp, hit.nbf, hit.iat, now);
        this.maybeRefreshInBackground(hit.state, now);
        return { identity: { ...hit.identity, groups: [...hit.identity.groups] }, claims: hit.claims, issuer: hit.state.cfg };
      }
      this.cache.delete(token);
    }

    // shape
    if (token.length > MAX_JWT_LENGTH) throw new IdentityError('token_malformed', `malformed token (longer than ${MAX_JWT_LENGTH} bytes)`);
    const parts = token.split('.');
    if (parts.length !== 3) throw new IdentityError('token_malformed', parts.length === 5 ? 'malformed token (encrypted JWTs are not accepted)' : 'malformed token (not a JWS compact serialization)');
    const [h64, p64, s64] = parts;
    if (!h64 || !p64 || !B64URL.test(h64) || !B64URL.test(p64) || !B64URL.test(s64)) throw new IdentityError('token_malformed', 'malformed token (not base64url)');
    const header = this.header(h64);
    const claims = b64json(p64, 'payload');
    const alg = header.alg;
    if (typeof alg !== 'string') throw new IdentityError('token_malformed', 'malformed token (no alg in the header)');

    // issuer
    const iss = claims.iss;
    if (typeof iss !== 'string') throw new IdentityError('token_malformed', 'malformed token (no iss claim)');
    const st = this.states.get(iss);
    if (!st) throw new IdentityError('issuer_unknown', `unknown issuer ${show(iss)}`, { iss: iss.slice(0, 200) });
    const cfg = st.cfg;

    // algorithm, header
    if (!(cfg.algorithms as string[]).includes(alg)) {
      throw new IdentityError('algorithm_rejected', `algorithm ${show(alg)} not allowed for issuer ${cfg.name}`, { issuer: cfg.name, alg: alg.slice(0, 32) });
    }
    const spec = ALGS[alg as JwsAlgorithm];
    if (header.crit !== undefined) throw new IdentityError('token_malformed', 'malformed token (critical header extensions are not supported)');
    if (header.typ !== undefined && (typeof header.typ !== 'string' || !ACCEPTED_TYP.has(header.typ.toLowerCase()))) {
      throw new IdentityError('token_type_rejected', `token type ${show(header.typ)} not accepted (expected JWT or at+jwt)`, { issuer: cfg.name });
    }
    const kid = header.kid;
    if (kid !== undefined && typeof kid !== 'string') throw new IdentityError('token_malformed', 'malformed token (kid is not a string)');
    const sig = Buffer.from(s64, 'base64url');
    if (spec.sigLen !== undefined && sig.length !== spec.sigLen) throw new IdentityError('signature_invalid', 'signature invalid', { issuer: cfg.name });

    // key
    const cands = await this.keysFor(st, kid, alg as JwsAlgorithm, now);

    // signature
    const data = Buffer.from(`${h64}.${p64}`, 'latin1');
    let signer: KeyObject | undefined;
    for (const c of cands) {
      let ok: boolean;
      try {
        if (spec.kind === 'ed25519') ok = cryptoVerify(null, data, c.key, sig);
        else if (spec.kind === 'ec') ok = cryptoVerify(spec.hash, data, { key: c.key, dsaEncoding: 'ieee-p1363' }, sig);
        else if (spec.pss) ok = cryptoVerify(spec.hash, data, { key: c.key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, sig);
        else ok = cryptoVerify(spec.hash, data, c.key, sig);
      } catch {
        ok = false;
      }
      if (ok) {
        signer = c.key;
        break;
      }
    }
    if (!signer) throw new IdentityError('signature_invalid', 'signature invalid', { issuer: cfg.name });

    // times, audience, client, requirements, mapping — the token is authentic from here on
    const exp = claims.exp;
    if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new IdentityError('token_malformed', 'malformed token (no numeric exp claim)', { issuer: cfg.name });
    const nbf = typeof claims.nbf === 'number' ? claims.nbf : undefined;
    const iat = typeof claims.iat === 'number' ? claims.iat : undefined;
    if ((claims.nbf !== undefined && nbf === undefined) || (claims.iat !== undefined && iat === undefined)) throw new IdentityError('token_malformed', 'malformed token (nbf / iat not numeric)', { issuer: cfg.name });
    this.checkTimes(cfg, exp, nbf, iat, now);
    if (cfg.maxTokenLifetimeMs !== undefined && (exp - (iat ?? nbf ?? exp)) * 1000 > cfg.maxTokenLifetimeMs) {
      throw new IdentityError('token_lifetime_exceeded', `token lifetime exceeds the ${Math.round(cfg.maxTokenLifetimeMs / 1000)}s allowed for issuer ${cfg.name}`, { issuer: cfg.name });
    }
    const aud = claims.aud;
    const auds = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud.filter((a): a is string => typeof a === 'string') : [];
    if (!auds.some((a) => cfg.audiences.includes(a))) throw new IdentityError('audience_rejected', 'audience not accepted', { issuer: cfg.name });
    if (cfg.authorizedParties) {
      const party = typeof claims.azp === 'string' ? claims.azp : typeof claims.client_id === 'string' ? claims.client_id : undefined;
      if (party === undefined || !cfg.authorizedParties.includes(party)) {
        throw new IdentityError('client_rejected', party === undefined ? 'token names no client (azp / client_id)' : `client ${show(party)} not accepted`, { issuer: cfg.name });
      }
    }
    for (const req of cfg.require) {
      const v = lookupPath(claims, req.claim);
      if (v === undefined || v === null) throw new IdentityError('claim_missing', `claim ${show(req.claim)} is required`, { issuer: cfg.name, claim: req.claim });
      const vals = (Array.isArray(v) ? v : [v]).map((x) => (typeof x === 'string' ? x : JSON.stringify(x)));
      if (!vals.some((x) => req.accept(x))) throw new IdentityError('claim_rejected', `claim ${show(req.claim)} not accepted`, { issuer: cfg.name, claim: req.claim });
    }
    const subj = renderTemplate(cfg.subject, (f) => lookupPath(claims, f));
    if (!subj.ok) {
      throw new IdentityError(subj.reason === 'missing' ? 'claim_missing' : 'claim_rejected', `claim ${show(subj.field)} ${subj.reason === 'missing' ? 'is missing' : 'is not usable'} for the subject of issuer ${cfg.name}`, { issuer: cfg.name, claim: subj.field });
    }
    if (subj.values.length !== 1) throw new IdentityError('claim_rejected', `the subject template of issuer ${cfg.name} gives ${subj.values.length} values; it needs one`, { issuer: cfg.name });
    const groups: string[] = [];
    for (const g of cfg.groups) {
      const r = renderTemplate(g, (f) => lookupPath(claims, f));
      if (r.ok) for (const v of r.values) if (!groups.includes(v)) groups.push(v);
    }
    const identity: AuthenticatedIdentity = {
      subject: subj.values[0],
      groups,
      issuer: cfg.issuer,
      authMethod: 'oidc',
      expiresAt: exp * 1000,
      // the signature names the token (a changed header or payload changes it)
      credentialId: `oidc:${cfg.name}:${sha256Hex(s64).slice(0, 16)}`,
    };
    if (this.cacheSize > 0) {
      if (this.cache.size >= this.cacheSize) {
        const first = this.cache.keys().next();
        if (!first.done) this.cache.delete(first.value);
      }
      this.cache.set(token, { state: st, key: signer, exp, nbf, iat, identity, claims });
    }
    return { identity: { ...identity, groups: [...groups] }, claims, issuer: cfg };
  }

  /**
   * The decoded header. An issuer signs every token with the same few headers, so they are kept
   * (bounded; frozen, never changed): a verification decodes only the payload. Nothing is trusted
   * from the cache that the signature does not cover — the header bytes are the cache key and
   * are part of the signed data.
   */
  private header(h64: string): Record<string, unknown> {
    const known = this.headers.get(h64);
    if (known) return known;
    const h = Object.freeze(b64json(h64, 'header'));
    if (h64.length <= 1024) {
      if (this.headers.size >= MAX_CACHED_HEADERS) this.headers.clear();
      this.headers.set(h64, h);
    }
    return h;
  }

  /** Still valid now: the issuer is configured and the token has not expired. */
  stillValid(identity: { issuer?: string; expiresAt?: number }, now: number): { ok: true } | { ok: false; error: IdentityError } {
    const st = identity.issuer ? this.states.get(identity.issuer) : undefined;
    if (!st) return { ok: false, error: new IdentityError('issuer_unknown', `unknown issuer ${show(identity.issuer ?? '')}`) };
    if (identity.expiresAt === undefined) return { ok: false, error: new IdentityError('token_malformed', 'token has no expiry') };
    if (identity.expiresAt + st.cfg.clockSkewMs <= now) return { ok: false, error: new IdentityError('token_expired', `token expired at ${iso(identity.expiresAt)}`, { expiresAt: identity.expiresAt }) };
    return { ok: true };
  }

  private checkTimes(cfg: OidcIssuerConfig, exp: number, nbf: number | undefined, iat: number | undefined, now: number): void {
    const skew = cfg.clockSkewMs;
    if (exp * 1000 + skew <= now) throw new IdentityError('token_expired', `token expired at ${iso(exp * 1000)}`, { issuer: cfg.name, expiresAt: exp * 1000 });
    if (nbf !== undefined && nbf * 1000 - skew > now) throw new IdentityError('token_not_yet_valid', `token not valid before ${iso(nbf * 1000)}`, { issuer: cfg.name, notBefore: nbf * 1000 });
    if (iat !== undefined && iat * 1000 - skew > now) throw new IdentityError('token_issued_in_future', `token issued in the future (${iso(iat * 1000)}); check the clocks`, { issuer: cfg.name, issuedAt: iat * 1000 });
  }

  private async keysFor(st: IssuerState, kid: string | undefined, alg: JwsAlgorithm, now: number): Promise<KeyEntry[]> {
    const cfg = st.cfg;
    if (!st.loaded) {
      const retryAfterFailure = Math.min(cfg.jwksCooldownMs, 5000);
      if (st.lastError !== undefined && now - st.lastAttempt < retryAfterFailure) {
        throw new IdentityError('issuer_unavailable', `the signing keys of issuer ${cfg.name} cannot be fetched right now`, { issuer: cfg.name });
      }
      try {
        await this.refresh(st);
      } catch {
        throw new IdentityError('issuer_unavailable', `the signing keys of issuer ${cfg.name} cannot be fetched right now`, { issuer: cfg.name });
      }
    }
    let cands = st.candidates(kid, alg);
    if (cands.length === 0 && kid !== undefined && !cfg.jwks && now - st.lastAttempt >= cfg.jwksCooldownMs) {
      // an unknown kid: the issuer may have rotated its keys
      try {
        await this.refresh(st);
      } catch {
        // keep the keys we have
      }
      cands = st.candidates(kid, alg);
    } else this.maybeRefreshInBackground(st, now);
    if (cands.length === 0) {
      throw new IdentityError('key_unknown', kid === undefined ? `no published key of issuer ${cfg.name} fits ${alg}` : `signing key ${show(kid)} is not published by issuer ${cfg.name}`, { issuer: cfg.name });
    }
    return cands;
  }

  private maybeRefreshInBackground(st: IssuerState, now: number): void {
    if (st.cfg.jwks || st.inflight) return;
    if (now - st.loadedAt > st.cfg.jwksMaxAgeMs && now - st.lastAttempt >= st.cfg.jwksCooldownMs) {
      this.refresh(st).catch(() => {
        /* logged in refresh; the previous keys stay */
      });
    }
  }

  /** Fetch the issuer's keys (one fetch at a time per issuer). */
  private refresh(st: IssuerState): Promise<void> {
    if (st.inflight) return st.inflight;
    const cfg = st.cfg;
    st.lastAttempt = this.opts.now();
    st.inflight = (async () => {
      try {
        if (cfg.jwks) {
          st.setKeys(cfg.jwks, this.opts.now(), this.opts.log);
          return;
        }
        st.jwksUri ??= await discoverJwksUri(cfg);
        const doc = await fetchJson(st.jwksUri, cfg.timeoutMs);
        st.setKeys(doc, this.opts.now(), this.opts.log);
        this.opts.log?.debug('oidc: keys loaded', { issuer: cfg.name, keys: st.keys.length });
      } catch (e) {
        st.lastError = (e as Error).message;
        if (!cfg.jwksUri) st.jwksUri = undefined; // discover again next time
        this.opts.log?.warn('oidc: cannot load the signing keys of an issuer', { issuer: cfg.name, error: st.lastError });
        throw e;
      } finally {
        st.inflight = undefined;
      }
    })();
    return st.inflight;
  }
}

/** Discovery with openid-client: the document's `issuer` must equal the configured issuer. */
async function discoverJwksUri(cfg: OidcIssuerConfig): Promise<string> {
  const insecure = new URL(cfg.issuer).protocol === 'http:';
  const conf = await oidcClient.discovery(new URL(cfg.issuer), 'portcullis', undefined, undefined, {
    execute: insecure ? [oidcClient.allowInsecureRequests] : [],
    timeout: Math.max(1, Math.ceil(cfg.timeoutMs / 1000)),
  });
  const uri = conf.serverMetadata().jwks_uri;
  if (!uri) throw new Error('the discovery document has no jwks_uri');
  const bad = checkFetchUrl(uri);
  if (bad) throw new Error(`jwks_uri ${uri}: ${bad}`);
  return uri;
}

async function fetchJson(uri: string, timeoutMs: number): Promise<unknown> {
  const res = await fetch(uri, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/jwk-set+json, application/json' } });
  if (res.url && res.url !== uri) {
    const bad = checkFetchUrl(res.url);
    if (bad) throw new Error(`redirected to ${res.url}: ${bad}`);
  }
  if (!res.ok) throw new Error(`GET ${uri}: HTTP ${res.status}`);
  const len = Number(res.headers.get('content-length') ?? '0');
  if (len > MAX_JWKS_BYTES) throw new Error(`GET ${uri}: response larger than ${MAX_JWKS_BYTES} bytes`);
  const text = await res.text();
  if (text.length > MAX_JWKS_BYTES) throw new Error(`GET ${uri}: response larger than ${MAX_JWKS_BYTES} bytes`);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new Error(`GET ${uri}: not JSON`);
  }
}
