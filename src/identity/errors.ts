// Identity failures: one error type with stable codes and a message that is safe to show the
// agent — precise about *why* (expired at …, audience not accepted, unknown issuer) and silent
// about *which part* of a secret was right (an unknown token id and a wrong secret read the same).
import { PortcullisError } from '../policy/types.js';

export const IDENTITY_ERROR_CODES = [
  // bearer credentials (API tokens and JWTs)
  'token_malformed',
  'token_unknown',
  'token_revoked',
  'token_expired',
  'token_not_yet_valid',
  'token_issued_in_future',
  'token_type_rejected',
  'token_lifetime_exceeded',
  'issuer_unknown',
  'issuer_unavailable',
  'algorithm_rejected',
  'key_unknown',
  'signature_invalid',
  'audience_rejected',
  'client_rejected',
  'claim_missing',
  'claim_rejected',
  'subject_mismatch',
  // SSH keys and certificates
  'key_rejected',
  'key_expired',
  'cert_malformed',
  'cert_unsupported',
  'cert_type',
  'cert_ca_unknown',
  'cert_signature_invalid',
  'cert_expired',
  'cert_not_yet_valid',
  'cert_principal',
  'cert_source_address',
  'cert_critical_option',
  'cert_validity_too_long',
  'source_address',
  // everything
  'rate_limited',
] as const;

export type IdentityErrorCode = (typeof IDENTITY_ERROR_CODES)[number];

/** A refused credential. `code` is stable (audited, tested); `message` is safe to show the agent. */
export class IdentityError extends PortcullisError {
  constructor(
    readonly reason: IdentityErrorCode,
    message: string,
    details: Record<string, unknown> = {},
  ) {
    super(reason, message, details);
    this.name = 'IdentityError';
  }
}

export function isIdentityError(e: unknown): e is IdentityError {
  return e instanceof IdentityError;
}

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}
