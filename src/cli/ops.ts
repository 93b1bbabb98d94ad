// The console's actions from the shell, over the control socket of a running bastion:
// `sessions`, `approvals`, `approve ID`, `deny ID`, `kill ID`.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ControlClient } from '../control/client.js';
import type { SessionInfo } from '../core/events.js';
import type { ApprovalRecord } from '../store/types.js';
import type { BudgetUsage } from '../core/budgets.js';
import { parseDuration } from '../config/config.js';
import { EXIT, UsageError } from './util.js';

export interface OpsOptions {
  dataDir?: string;
  socket?: string;
  json?: boolean;
}

export function controlSocketPath(o: OpsOptions): string {
  if (o.socket) return o.socket;
  if (o.dataDir) return join(o.dataDir, 'control.sock');
  if (process.env.PORTCULLIS_DATA_DIR) return join(process.env.PORTCULLIS_DATA_DIR, 'control.sock');
  return existsSync('/run/portcullis/control.sock') ? '/run/portcullis/control.sock' : '/var/lib/portcullis/control.sock';
}

async function withClient<T>(o: OpsOptions, fn: (c: ControlClient) => Promise<T>): Promise<T> {
  const c = await ControlClient.connect(controlSocketPath(o));
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

const ago = (t: number) => `${Math.max(0, Math.round((Date.now() - t) / 1000))}s`;

export async function sessionsCommand(o: OpsOptions): Promise<number> {
  const list = await withClient(o, (c) => c.call<SessionInfo[]>('sessions.list'));
  if (o.json) process.stdout.write(JSON.stringify(list) + '\n');
  else {
    process.stdout.write(`${'ID'.padEnd(36)}  ${'PROTOCOL'.padEnd(10)}  ${'TARGET'.padEnd(14)}  ${'IDENTITY'.padEnd(20)}  AGE\n`);
    for (const s of list) process.stdout.write(`${s.id.padEnd(36)}  ${s.protocol.padEnd(10)}  ${s.target.padEnd(14)}  ${s.identity.subject.padEnd(20)}  ${ago(s.openedAt)}\n`);
  }
  return EXIT.OK;
}

function describeRequest(r: Record<string, unknown>): string {
  const http = r.http as { method?: string; path?: string } | undefined;
  const text = (r.sql ?? r.command ?? (http ? `${http.method} ${http.path}` : JSON.stringify(r))) as string;
  return text.replace(/\s+/g, ' ').slice(0, 120);
}

export async function approvalsCommand(o: OpsOptions & { all?: boolean }): Promise<number> {
  const list = await withClient(o, (c) => c.call<ApprovalRecord[]>('approvals.list', o.all ? {} : { state: 'pending' }));
  if (o.json) process.stdout.write(JSON.stringify(list) + '\n');
  else {
    if (list.length === 0) process.stdout.write(o.all ? 'no approvals\n' : 'no pending approvals\n');
    for (const a of list) {
      const just = a.justification;
      const votes = (a.required ?? 1) > 1 ? `, ${a.voteCount ?? 0}/${a.required} approvals${a.votes?.length ? ` (${a.votes.map((v) => v.by).join(', ')})` : ''}` : '';
      const usable = a.state === 'approved' && a.validUntil ? `; ${a.scope ?? 'once'}, usable until ${new Date(a.validUntil).toISOString()}, used ${a.uses ?? 0}x` : '';
      const timing =
        a.state === 'pending'
          ? `waiting ${ago(a.createdAt)}${a.detachedAt ? ' (requester not waiting: a retry picks it up)' : ''}, expires in ${Math.max(0, Math.round((a.expiresAt - Date.now()) / 1000))}s${votes}`
          : `${a.state} by ${a.decidedBy ?? '?'}${usable}`;
      process.stdout.write(`${a.id}  ${a.state.padEnd(8)}  ${a.identity.subject} → ${a.target ?? '?'} (${a.protocol ?? '?'})  ${describeRequest(a.request)}\n`);
      process.stdout.write(`    ${timing}; rule ${a.rule}: ${a.reason}\n${just ? `    agent's reason: ${just}\n` : ''}`);
    }
  }
  return EXIT.OK;
}

export async function decideCommand(decision: 'approved' | 'denied', id: string | undefined, o: OpsOptions & { reason?: string; scope?: string; for?: string }): Promise<number> {
  if (!id) throw new UsageError('the approval ID is required (see `portcullis approvals`)');
  if (o.scope !== undefined && o.scope !== 'once' && o.scope !== 'same-request') throw new UsageError(`--scope must be once or same-request, got "${o.scope}"`);
  let forMs: number | undefined;
  if (o.for !== undefined) {
    if (!/^\d+(ms|s|m|h|d)$/.test(o.for)) throw new UsageError(`--for takes a duration like 10m or 2h, got "${o.for}"`);
    forMs = parseDuration(o.for);
  }
  if (decision === 'denied' && (o.scope !== undefined || o.for !== undefined)) throw new UsageError('--scope and --for belong to approve');
  const rec = await withClient(o, (c) =>
    c.call<ApprovalRecord>('approval.decide', { id, decision, ...(o.reason ? { reason: o.reason } : {}), ...(o.scope ? { scope: o.scope } : {}), ...(forMs !== undefined ? { forMs } : {}) }),
  );
  if (rec.state === 'pending') process.stdout.write(`${rec.id} approved by ${(rec.votes ?? []).map((v) => v.by).join(', ')}: ${rec.voteCount ?? 0} of ${rec.required ?? 1} approvals, still pending\n`);
  else if (rec.state === 'approved') process.stdout.write(`${rec.id} approved by ${rec.decidedBy} (${rec.scope ?? 'once'}, usable until ${rec.validUntil ? new Date(rec.validUntil).toISOString() : '?'})\n`);
  else process.stdout.write(`${rec.id} ${rec.state} by ${rec.decidedBy}\n`);
  return EXIT.OK;
}

export async function budgetsCommand(o: OpsOptions): Promise<number> {
  const list = await withClient(o, (c) => c.call<BudgetUsage[]>('budgets.list'));
  if (o.json) process.stdout.write(JSON.stringify(list) + '\n');
  else {
    if (list.length === 0) process.stdout.write('no budget counters yet\n');
    for (const b of list) {
      const parts = Object.entries(b.limits).map(([k, max]) => `${k} ${(b.used as Record<string, number>)[k] ?? 0}/${max}`);
      process.stdout.write(`${b.budget}${b.shadow ? ' (shadow)' : ''}  ${b.who === '*' ? '(group)' : b.who} → ${b.target}  ${b.window}  ${parts.join(', ')}  [${b.effect}]\n`);
    }
  }
  return EXIT.OK;
}

export async function killCommand(id: string | undefined, o: OpsOptions): Promise<number> {
  if (!id) throw new UsageError('the session ID is required (see `portcullis sessions`)');
  await withClient(o, (c) => c.call('session.kill', { id }));
  process.stdout.write(`session ${id} killed\n`);
  return EXIT.OK;
}
