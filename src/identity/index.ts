// Identity: "who is connecting" → one Identity, for every proxy. No proxy verifies credentials
// itself: PostgreSQL passwords and Kubernetes bearer tokens go to `verifyBearer` (an API token or
// an OIDC JWT), SSH keys and certificates to `verifySshPublicKey` / `verifySshCertificate`.
//
// Every refusal is an IdentityError with a stable code and an agent-safe message, is reported to
// the `audit` hook, and counts against the source address (token bucket; a source that runs out
// is refused outright for the cool-down). `revalidate()` re-checks an open session's credential.
import type { Logger } from '../core/log.js';
import type { Identity } from '../policy/types.js';
import type { Store } from '../store/types.js';
import { PortcullisError } from '../policy/types.js';
import type { IdentityConfig } from './config.js';
import { IdentityError, iso, type IdentityErrorCode } from './errors.js';
import { looksLikeJwt, OidcVerifier } from './oidc.js';
import { FailureLimiter } from './ratelimit.js';
import { SshAuthenticator, type SshKeyOffer } from './ssh.js';
import { CERT_ALGORITHMS, certificateType } from './ssh-cert.js';
import { createApiToken, listApiTokens, looksLikeApiToken, revokeApiToken, verifyApiToken, type CreatedToken, type TokenInfo } from './tokens.js';
import type { AuthenticatedIdentity, AuthMethod, IdentityRejection, SshAuthInfo, VerifyContext } from './types.js';

export * from './types.js';
export { IdentityError, IDENTITY_ERROR_CODES, isIdentityError, type IdentityErrorCode } from './errors.js';
export { identityConfigSchema, parseIdentityConfig, defaultIdentityConfig, parseBoundKey, type IdentityConfig, type SshPermissions } from './config.js';
export { targetCredentials, upstreamCaPublicKey, SecretValue, type TargetCredentials } from './credentials.js';
export { issueSshUserCert, parseSshCertificate, type IssuedSshCert, type IssueSshUserCertOptions } from './ssh-cert.js';
export { verifySshSignature, sshFingerprint } from './ssh-wire.js';
export type { TokenInfo, CreatedToken, SshKeyOffer };

export interface IdentityServiceOptions {
  /** Clock (Unix ms); default Date.now. */
  now?: () => number;
  /** Called for every refused credential (the core appends an `identity.rejected` audit event). */
  audit?: (e: IdentityRejection) => Promise<void>;
  log?: Logger;
  /** Verified OIDC tokens kept in memory (default 10,000; 0 disables). */
  oidcCacheSize?: number;
}

export interface CreateTokenOptions {
  subject: string;
  groups?: string[];
  /** ms; undefined: `identity.api_tokens.default_ttl`; null: never expires (refused when max_ttl is set). */
  ttlMs?: number | null;
}

export type RevalidateResult = { ok: true } | { ok: false; code: IdentityErrorCode; message: string };

export class IdentityService {
  private readonly now: () => number;
  private readonly oidc: OidcVerifier;
  private readonly ssh: SshAuthenticator;
  private readonly limiter: FailureLimiter;

  constructor(
    readonly config: IdentityConfig,
    private readonly store: Store,
    private readonly opts: IdentityServiceOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.oidc = new OidcVerifier(config.oidc, { now: this.now, log: opts.log, cacheSize: opts.oidcCacheSize });
    this.ssh = new SshAuthenticator(config.ssh);
    this.limiter = new FailureLimiter(config.rateLimit, this.now);
  }

  /** Fetch every OIDC issuer's keys now (start-up); failures are returned, not thrown. */
  prefetch(): ReturnType<OidcVerifier['prefetch']> {
    return this.oidc.prefetch();
  }

  /**
   * A bearer secret: an API token (`pcat_…`) or an OIDC JWT. With `ctx.userHint` (the PostgreSQL
   * user name), the resulting subject must equal it.
   */
  async verifyBearer(secret: string, ctx: VerifyContext): Promise<AuthenticatedIdentity> {
    const method: AuthMethod | undefined = looksLikeApiToken(secret) ? 'api-token' : looksLikeJwt(secret) ? 'oidc' : undefined;
    return this.guard(ctx, method, async () => {
      let identity: AuthenticatedIdentity;
      if (!secret) throw new IdentityError('token_malformed', 'no credential given');
      if (method === 'api-token') {
        const r = await verifyApiToken(this.store, secret, this.now());
        identity = { subject: r.subject, groups: [...r.groups], issuer: 'portcullis', authMethod: 'api-token', credentialId: `api-token:${r.id}` };
        if (r.expiresAt !== undefined) identity.expiresAt = r.expiresAt;
      } else if (method === 'oidc') {
        identity = (await this.oidc.verify(secret)).identity;
      } else {
        throw new IdentityError('token_malformed', 'malformed token (neither an API token pcat_… nor a JWT)');
      }
      if (ctx.userHint !== undefined && ctx.userHint !== identity.subject) {
        throw new IdentityError('subject_mismatch', `user name ${JSON.stringify(ctx.userHint.slice(0, 128))} does not match the credential's subject ${JSON.stringify(identity.subject)}`, { subject: identity.subject });
      }
      return identity;
    });
  }

  /** An SSH public key (ssh2's `ctx.key`: `{ algo, data }`) offered for `user`. Certificates are detected and checked as such. */
  async verifySshPublicKey(user: string, key: SshKeyOffer, ctx: VerifyContext): Promise<SshAuthInfo> {
    const method: AuthMethod = key.algo in CERT_ALGORITHMS || certificateType(key.data) ? 'ssh-cert' : 'ssh-key';
    return this.guard({ ...ctx, userHint: ctx.userHint ?? user }, method, () => this.ssh.verifyKey(user, key, ctx.remote, this.now()));
  }

  /** An OpenSSH user certificate blob offered for `user`. */
  async verifySshCertificate(user: string, certBlob: Buffer, ctx: VerifyContext): Promise<SshAuthInfo> {
    return this.guard({ ...ctx, userHint: ctx.userHint ?? user }, 'ssh-cert', () => this.ssh.verifyCertificate(user, certBlob, ctx.remote, this.now()));
  }

  // --- API tokens ------------------------------------------------------------------------------

  async createToken(o: CreateTokenOptions): Promise<CreatedToken> {
    const { defaultTtlMs, maxTtlMs } = this.config.apiTokens;
    const ttl = o.ttlMs === undefined ? defaultTtlMs : o.ttlMs;
    if (maxTtlMs !== null && (ttl === null || ttl > maxTtlMs)) {
      throw new PortcullisError('token_ttl_too_long', `API tokens may live at most ${Math.round(maxTtlMs / 1000)}s (identity.api_tokens.max_ttl)`, { maxTtlMs });
    }
    return createApiToken(this.store, { subject: o.subject, groups: o.groups, ttlMs: ttl }, this.now());
  }

  listTokens(): Promise<TokenInfo[]> {
    return listApiTokens(this.store, this.now());
  }

  async revokeToken(idOrPrefix: string): Promise<{ info: TokenInfo; already: boolean }> {
    return revokeApiToken(this.store, idOrPrefix, this.now());
  }

  // --- open sessions -----------------------------------------------------------------------------

  /** Is the credential behind an open session's identity still good? (`session.revalidate`) */
  async revalidate(identity: Identity): Promise<boolean> {
    return (await this.check(identity)).ok;
  }

  /** As `revalidate`, with the reason when it is not. */
  async check(identity: Identity & { credentialId?: string }): Promise<RevalidateResult> {
    const now = this.now();
    const fail = (code: IdentityErrorCode, message: string): RevalidateResult => ({ ok: false, code, message });
    const expired = identity.expiresAt !== undefined && identity.expiresAt <= now;
    switch (identity.authMethod) {
      case 'api-token': {
        const id = (identity.credentialId ?? '').replace(/^api-token:/, '');
        const r = id ? await this.store.tokens.get(id) : null;
        if (!r || r.subject !== identity.subject) return fail('token_unknown', 'API token not recognized');
        if (r.revokedAt !== undefined) return fail('token_revoked', `token revoked at ${iso(r.revokedAt)}`);
        if (r.expiresAt !== undefined && r.expiresAt <= now) return fail('token_expired', `token expired at ${iso(r.expiresAt)}`);
        return { ok: true };
      }
      case 'oidc': {
        const v = this.oidc.stillValid(identity, now);
        return v.ok ? v : fail(v.error.reason, v.error.message);
      }
      case 'ssh-key':
      case 'ssh-cert': {
        if (!this.ssh.stillConfigured(identity)) return fail(identity.authMethod === 'ssh-key' ? 'key_rejected' : 'cert_ca_unknown', identity.authMethod === 'ssh-key' ? 'the key is no longer bound to this identity' : 'the certificate authority is no longer trusted');
        if (expired) return fail(identity.authMethod === 'ssh-key' ? 'key_expired' : 'cert_expired', `${identity.authMethod === 'ssh-key' ? 'key' : 'certificate'} expired at ${iso(identity.expiresAt as number)}`);
        return { ok: true };
      }
      default:
        return expired ? fail('token_expired', `credential expired at ${iso(identity.expiresAt as number)}`) : { ok: true };
    }
  }

  // --- failures ------------------------------------------------------------------------------------

  private async guard<T>(ctx: VerifyContext, method: AuthMethod | undefined, fn: () => Promise<T> | T): Promise<T> {
    const until = this.limiter.blockedUntil(ctx.remote);
    if (until !== undefined) {
      this.limiter.noteSuppressed(ctx.remote);
      throw new IdentityError('rate_limited', `too many failed attempts from ${ctx.remote}; retry after ${iso(until)}`, { retryAfter: until });
    }
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof IdentityError)) throw e;
      const suppressed = this.limiter.takeSuppressed(ctx.remote);
      await this.report(ctx, e.reason, e.message, method, suppressed);
      if (e.reason !== 'issuer_unavailable') {
        const out = this.limiter.fail(ctx.remote);
        if (out.blocked && out.blockedUntil !== undefined) {
          await this.report(ctx, 'rate_limited', `source ${ctx.remote} blocked until ${iso(out.blockedUntil)} after ${this.config.rateLimit.failures} failed attempts`, method, 0);
        }
      }
      throw e;
    }
  }

  private async report(ctx: VerifyContext, code: IdentityErrorCode, message: string, method: AuthMethod | undefined, suppressed: number): Promise<void> {
    const ev: IdentityRejection = { remote: ctx.remote, protocol: ctx.protocol, code, message };
    if (ctx.userHint !== undefined) ev.subjectHint = ctx.userHint.slice(0, 256);
    if (method) ev.method = method;
    if (suppressed) ev.suppressed = suppressed;
    this.opts.log?.info('identity rejected', { ...ev });
    if (!this.opts.audit) return;
    try {
      await this.opts.audit(ev);
    } catch (err) {
      // the credential is refused either way; the audit trouble is the core's to report
      this.opts.log?.error('identity: audit hook failed', { error: (err as Error).message });
    }
  }
}
