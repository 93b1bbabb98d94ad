// What the audit log and the event bus keep of a request. Every free-text field passes through
// the masking hook before it is stored, so a secret typed into a statement or a command never
// lands in the audit log (CONTRACT / ARCHITECTURE: "mask before anything leaves").
import type { PolicyRequest } from '../policy/types.js';
import type { RequestSummary } from './events.js';

export type TextMasker = (text: string) => string;

let maskText: TextMasker = (s) => s;

/** Install the masker used for audit summaries (src/masking provides it at start-up). */
export function setSummaryMasker(fn: TextMasker): void {
  maskText = fn;
}

export function summarizeRequest(r: PolicyRequest): RequestSummary {
  // Keys in canonical (sorted) order: the audit writer's canonical JSON then copies nothing.
  const s = {} as RequestSummary;
  if (r.command !== undefined) s.command = maskText(r.command);
  if (r.forward) s.forward = r.forward;
  if (r.http) s.http = { method: r.http.method, path: maskHttpPath(r.http.path), ...(r.http.query !== undefined ? { query: maskQuery(r.http.query) } : {}) };
  s.protocol = r.protocol;
  if (r.reason !== undefined) s.reason = maskText(r.reason);
  if (r.searchPath !== undefined && !(r.searchPath.length === 1 && r.searchPath[0] === 'public')) s.searchPath = r.searchPath;
  if (r.sql !== undefined) s.sql = maskText(r.sql);
  s.target = r.target;
  return s;
}

/**
 * Query values are masked decoded: URL encoding (`card+4111%201111…`, `password%3D…`) must not
 * hide a value from the detectors. A value the detectors leave alone stays as it was sent.
 */
function maskQuery(query: string): string {
  return query
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      if (eq === -1) return maskText(pair);
      let decoded: string;
      try {
        decoded = decodeURIComponent(pair.slice(eq + 1).replace(/\+/g, ' '));
      } catch {
        return maskText(pair);
      }
      const masked = maskText(decoded);
      if (masked === decoded) return maskText(pair);
      return `${maskText(pair.slice(0, eq))}=${encodeURIComponent(masked).replace(/%20/g, '+').replace(/%5B/g, '[').replace(/%5D/g, ']').replace(/%3A/g, ':')}`;
    })
    .join('&');
}

function maskHttpPath(path: string): string {
  const q = path.indexOf('?');
  return q === -1 ? maskText(path) : `${maskText(path.slice(0, q))}?${maskQuery(path.slice(q + 1))}`;
}
