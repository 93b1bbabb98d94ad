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
  const s: RequestSummary = { protocol: r.protocol, target: r.target };
  if (r.sql !== undefined) s.sql = maskText(r.sql);
  if (r.searchPath !== undefined && !(r.searchPath.length === 1 && r.searchPath[0] === 'public')) s.searchPath = r.searchPath;
  if (r.command !== undefined) s.command = maskText(r.command);
  if (r.http) s.http = { method: r.http.method, path: maskText(r.http.path), ...(r.http.query !== undefined ? { query: maskText(r.http.query) } : {}) };
  if (r.forward) s.forward = r.forward;
  if (r.reason !== undefined) s.reason = maskText(r.reason);
  return s;
}
