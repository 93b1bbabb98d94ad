// Types shared by the identity modules and their callers (the proxies and the core).
import type { Identity, Protocol } from '../policy/types.js';
import type { SshPermissions } from './config.js';
import type { IdentityErrorCode } from './errors.js';

export type AuthMethod = 'api-token' | 'oidc' | 'ssh-key' | 'ssh-cert';

/**
 * An Identity as src/identity produces it: the policy's `Identity` plus `credentialId`, which
 * names the credential (never a secret) so that `revalidate()` can re-check it later and audit
 * events can tell two credentials of one subject apart:
 * `api-token:<id>`, `oidc:<issuer name>:<16 hex of the SHA-256 of the token's signature>`,
 * `ssh-key:SHA256:<fingerprint>`, `ssh-cert:<ca name>:<serial>:SHA256:<key fingerprint>`.
 */
export interface AuthenticatedIdentity extends Identity {
  authMethod: AuthMethod;
  credentialId: string;
}

export interface VerifyContext {
  /** The peer's IP address (socket.remoteAddress). Rate limiting and source-address use it. */
  remote: string;
  protocol: Protocol;
  /** The user name the client gave (PostgreSQL user, SSH user): must equal the subject. */
  userHint?: string;
}

/** What an OpenSSH user certificate said, for the SSH proxy to enforce. */
export interface SshCertInfo {
  certType: string;
  keyId: string;
  serial: string;
  principals: string[];
  /** Unix ms. */
  validAfter: number;
  /** Unix ms; undefined for a certificate that never expires. */
  validBefore?: number;
  /** Name of the configured CA that signed it, and its fingerprint. */
  ca: string;
  caFingerprint: string;
  /** Critical options (all understood, or the certificate was refused). */
  forceCommand?: string;
  sourceAddress?: string[];
  /** Extension name → value ('' for the usual flag extensions). */
  extensions: Record<string, string>;
}

/** The result of an SSH login check: the identity, and what the session must honour. */
export interface SshAuthInfo {
  identity: AuthenticatedIdentity;
  /** The key that must sign the session (for a certificate: the certified key, as a plain blob). */
  publicKey: { type: string; blob: Buffer; fingerprint: string };
  /** The command to run instead of whatever the client asks (`command=` or force-command). */
  forceCommand?: string;
  permissions: SshPermissions;
  /** Present for a certificate login. */
  cert?: SshCertInfo;
}

/** An audit hook call for a refused credential. */
export interface IdentityRejection {
  remote: string;
  protocol: Protocol;
  code: IdentityErrorCode;
  message: string;
  /** The user name given (PG user, SSH user), when there was one. Never a secret. */
  subjectHint?: string;
  /** `api-token`, `oidc`, `ssh-key`, `ssh-cert`, when known. */
  method?: AuthMethod;
  /** Refusals of a blocked source not reported one by one since the previous hook call. */
  suppressed?: number;
}
