// What an approval is bound to: the identity (subject and issuer), the target and the exact
// request. A retry of the same request by the same identity on the same target has the same
// binding; anything else (another statement, another literal, another search_path, another
// command, another API path) does not.
//
// Normalization is deliberately minimal: leading/trailing whitespace and trailing semicolons of a
// statement or command line are dropped (an agent's retry sends the same text). Whitespace inside
// is kept as written, because it may be inside a literal, where it changes the request.
import { createHash } from 'node:crypto';
import type { PolicyRequest } from '../policy/types.js';

export function normalizeRequestText(s: string): string {
  return s.trim().replace(/[\s;]+$/, '');
}

/** The canonical form of the request part that is bound (no identity): shown as `what` in tests and logs. */
export function requestKey(r: PolicyRequest): string[] {
  if (r.sql !== undefined) return ['sql', normalizeRequestText(r.sql), (r.searchPath ?? ['public']).join(',')];
  if (r.command !== undefined) return ['command', normalizeRequestText(r.command)];
  if (r.http) return ['http', r.http.method.toUpperCase(), r.http.path + (r.http.query !== undefined && r.http.query !== '' ? `?${r.http.query}` : '')];
  if (r.forward) return ['forward', r.forward.direction, r.forward.host, String(r.forward.port)];
  return ['none'];
}

/** SHA-256 (hex) of identity + target + protocol + the normalized request. */
export function requestBinding(r: PolicyRequest): string {
  const parts = [r.protocol, r.identity.subject, r.identity.issuer ?? '', r.target, ...requestKey(r)];
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}
