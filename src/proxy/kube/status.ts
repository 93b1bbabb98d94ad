// Kubernetes `Status` objects for everything the bastion refuses, so that kubectl and client-go
// print them as they print the API server's own errors ("Error from server (Forbidden): …").
// The machine-readable outcome (src/core/outcome.ts) rides in `details.causes` as a cause with
// reason `PortcullisOutcome`, which client-go keeps and kubectl does not print for these reasons.
import type { ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';
import type { Duplex } from 'node:stream';
import { outcomeJson, type Outcome } from '../../core/outcome.js';
import type { KubeFacts } from '../../policy/types.js';

export interface KubeStatus {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: string;
  details?: { name?: string; group?: string; kind?: string; retryAfterSeconds?: number; causes?: { reason: string; message: string }[] };
  code: number;
}

const REASONS: Record<number, [string, string]> = {
  400: ['BadRequest', 'Bad Request'],
  401: ['Unauthorized', 'Unauthorized'],
  403: ['Forbidden', 'Forbidden'],
  404: ['NotFound', 'Not Found'],
  413: ['RequestEntityTooLarge', 'Request Entity Too Large'],
  429: ['TooManyRequests', 'Too Many Requests'],
  500: ['InternalError', 'Internal Server Error'],
  502: ['InternalError', 'Bad Gateway'],
  503: ['ServiceUnavailable', 'Service Unavailable'],
  504: ['Timeout', 'Gateway Timeout'],
};

export function kubeStatus(code: number, message: string, opts: { outcome?: Outcome; facts?: KubeFacts | null; reason?: string } = {}): KubeStatus {
  const st: KubeStatus = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason: opts.reason ?? REASONS[code]?.[0] ?? 'Unknown', code };
  const f = opts.facts;
  if (opts.outcome || (f && f.isResourceRequest)) {
    st.details = {};
    if (f && f.isResourceRequest) {
      if (f.name) st.details.name = f.name;
      if (f.apiGroup) st.details.group = f.apiGroup;
      st.details.kind = f.subresource ? `${f.resource}/${f.subresource}` : f.resource;
    }
    if (opts.outcome) st.details.causes = [{ reason: 'PortcullisOutcome', message: outcomeJson(opts.outcome) }];
  }
  return st;
}

/** Sends a Status as the whole response (headers must not have been sent). */
export function sendStatus(res: ServerResponse | Http2ServerResponse, st: KubeStatus, headers: Record<string, string> = {}): number {
  const body = JSON.stringify(st);
  (res as ServerResponse).writeHead(st.code, { 'content-type': 'application/json', 'cache-control': 'no-cache, private', 'content-length': String(Buffer.byteLength(body)), ...headers });
  res.end(body);
  return Buffer.byteLength(body);
}

/** Answers an upgrade request (a raw socket, before any handshake) with a Status and closes it. */
export function sendStatusOnSocket(socket: Duplex, st: KubeStatus): void {
  const body = JSON.stringify(st);
  const text = REASONS[st.code]?.[1] ?? 'Error';
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(`HTTP/1.1 ${st.code} ${text}\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}
