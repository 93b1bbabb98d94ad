// The health listener's routes: `GET /healthz` (the process is alive and its event loop answers),
// `GET /readyz` (every listener is up, the policy is loaded, the audit log is writable; 503 with
// the failing checks otherwise, and while stopping), `GET /metrics` (Prometheus text format).
import { accessSync, constants } from 'node:fs';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Core } from '../core/core.js';
import { METRICS_CONTENT_TYPE, type Metrics } from '../core/metrics.js';
import type { Logger } from '../core/log.js';

/** What the bastion reports about its listeners and state (see Lifecycle). */
export interface ReadinessSource {
  /** Listener name → up. Readiness needs at least one and all of them up. */
  listeners(): ReadonlyMap<string, boolean>;
  readonly started: boolean;
  readonly stopping: boolean;
}

export interface Readiness {
  ready: boolean;
  checks: Record<string, string>;
}

/** The readiness checks, each 'ok' or why not. */
export function readiness(core: Core, src: ReadinessSource): Readiness {
  const checks: Record<string, string> = {};
  checks.state = src.stopping ? 'stopping' : src.started ? 'ok' : 'starting';
  const down = [...src.listeners()].filter(([, up]) => !up).map(([n]) => n);
  checks.listeners = down.length ? `down: ${down.join(', ')}` : src.listeners().size ? 'ok' : 'none started';
  checks.policy = core.policy ? 'ok' : 'not loaded';
  const auditErr = core.audit.error;
  if (auditErr) checks.audit = `failed: ${auditErr.message}`;
  else {
    try {
      accessSync(core.audit.path, constants.W_OK);
      checks.audit = 'ok';
    } catch (e) {
      checks.audit = `not writable: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
    }
  }
  return { ready: Object.values(checks).every((v) => v === 'ok'), checks };
}

export function healthHandler(o: { core: Core; metrics: Metrics; lifecycle: ReadinessSource; log: Logger }): RequestListener {
  const json = (res: ServerResponse, status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body) + '\n');
  return (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      json(res, 200, { status: 'ok', uptimeSeconds: Math.round(process.uptime()) });
    } else if (path === '/readyz') {
      const r = readiness(o.core, o.lifecycle);
      o.metrics.setReady(r.ready);
      json(res, r.ready ? 200 : 503, { ready: r.ready, policy: o.core.policy.version, checks: r.checks });
    } else if (path === '/metrics') {
      o.metrics.setReady(readiness(o.core, o.lifecycle).ready);
      o.metrics.text().then(
        (text) => res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE }).end(text),
        (e: unknown) => {
          o.log.error('metrics: collecting failed', { error: (e as Error).message });
          res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
        },
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz, /readyz, /metrics\n');
    }
  };
}
