// Policy simulation: replay audited requests against a candidate policy and report every request
// whose effect would change. The audit log keeps enough of each request to decide it again
// (RequestSummary: the statement with detector-masked literals, the search_path, the command,
// the HTTP method and path; the identity; the time, for time windows). Masking touches literal
// values only, which facts do not depend on; a masked statement that no longer parses is
// reported as not replayable, never as a change.
//
// Compared: the policy's effect. A decision a damage budget changed is compared by the policy's
// own effect (`data.engine`); budget re-checks of prepared re-executions are not replayed.
import type { AuditEvent } from '../core/audit-common.js';
import type { CompiledPolicy } from './compile.js';
import { evaluate } from './engine.js';
import type { Effect, Identity, PolicyRequest, Protocol } from './types.js';
import { PROTOCOLS } from './types.js';

export interface SimulatedChange {
  seq: number;
  time: string;
  session?: string;
  identity: string;
  target: string;
  protocol: Protocol;
  /** The request as audited (masked). */
  request: string;
  old: { effect: Effect; rule: string };
  new: { effect: Effect; rule: string; reason: string };
}

export interface SimulationReport {
  policyVersion: string;
  replayed: number;
  unchanged: number;
  changes: SimulatedChange[];
  /** Counts per transition, e.g. `allow → deny`. */
  transitions: Record<string, number>;
  /** Requests that were allowed and would now be denied. */
  newlyDenied: number;
  notReplayable: { seq: number; why: string }[];
}

function requestText(r: Record<string, unknown>): string {
  const http = r.http as { method?: string; path?: string; query?: string } | undefined;
  const fwd = r.forward as { direction?: string; host?: string; port?: number } | undefined;
  const t = (r.sql ?? r.command ?? (http ? `${http.method} ${http.path}${http.query ? `?${http.query}` : ''}` : fwd ? `forward ${fwd.direction} ${fwd.host}:${fwd.port}` : '')) as string;
  return t.replace(/\s+/g, ' ');
}

/** The request an audit event recorded, as the engine takes it; null when the event is not a decided request. */
export function replayableRequest(ev: AuditEvent): { request: PolicyRequest; old: { effect: Effect; rule: string } } | { error: string } | null {
  if (ev.type !== 'request' || !ev.decision || !ev.request) return null;
  if (ev.data?.reexecution === true) return null;
  if (ev.decision.rule === 'audit-unavailable') return null;
  const r = ev.request;
  const protocol = (r.protocol ?? ev.protocol) as Protocol;
  if (!PROTOCOLS.includes(protocol)) return { error: `unknown protocol ${String(protocol)}` };
  if (!ev.identity) return { error: 'no identity recorded' };
  const identity: Identity = { subject: ev.identity.subject, groups: [...(ev.identity.groups ?? [])] };
  if (ev.identity.issuer !== undefined) identity.issuer = ev.identity.issuer;
  if (ev.identity.authMethod !== undefined) identity.authMethod = ev.identity.authMethod;
  const req: PolicyRequest = { protocol, identity, target: (r.target ?? ev.target ?? '') as string, time: Date.parse(ev.time) };
  if (typeof r.sql === 'string') req.sql = r.sql;
  if (Array.isArray(r.searchPath)) req.searchPath = r.searchPath as string[];
  if (typeof r.command === 'string') req.command = r.command;
  if (r.http && typeof r.http === 'object') req.http = r.http as PolicyRequest['http'];
  if (r.forward && typeof r.forward === 'object') req.forward = r.forward as PolicyRequest['forward'];
  if (typeof r.reason === 'string') req.reason = r.reason;
  const engine = ev.data?.engine as { effect?: Effect; rule?: string } | undefined;
  const old = engine?.effect && engine.rule ? { effect: engine.effect, rule: engine.rule } : { effect: ev.decision.effect, rule: ev.decision.rule };
  return { request: req, old };
}

export async function simulate(events: AsyncIterable<AuditEvent>, policy: CompiledPolicy): Promise<SimulationReport> {
  const report: SimulationReport = { policyVersion: policy.version, replayed: 0, unchanged: 0, changes: [], transitions: {}, newlyDenied: 0, notReplayable: [] };
  for await (const ev of events) {
    const r = replayableRequest(ev);
    if (r === null) continue;
    if ('error' in r) {
      report.notReplayable.push({ seq: ev.seq, why: r.error });
      continue;
    }
    const d = evaluate(policy, r.request).decision;
    if (d.code === 'unparseable' && ev.data?.code !== 'unparseable' && r.old.effect !== 'deny') {
      report.notReplayable.push({ seq: ev.seq, why: `the audited (masked) request does not parse: ${d.reason}` });
      continue;
    }
    report.replayed++;
    if (d.effect === r.old.effect) {
      report.unchanged++;
      continue;
    }
    const key = `${r.old.effect} → ${d.effect}`;
    report.transitions[key] = (report.transitions[key] ?? 0) + 1;
    if (r.old.effect === 'allow' && d.effect === 'deny') report.newlyDenied++;
    report.changes.push({
      seq: ev.seq,
      time: ev.time,
      ...(ev.session ? { session: ev.session } : {}),
      identity: r.request.identity.subject,
      target: r.request.target,
      protocol: r.request.protocol,
      request: requestText(ev.request ?? {}),
      old: r.old,
      new: { effect: d.effect, rule: d.rule, reason: d.reason },
    });
  }
  return report;
}
