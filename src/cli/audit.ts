// `portcullis audit verify | tail | search`.
import { readFileSync } from 'node:fs';
import { readAudit, tailAudit } from '../core/audit-read.js';
import { verifyAudit } from '../core/audit-verify.js';
import type { AuditEvent } from '../core/audit.js';
import { parseDuration } from '../config/config.js';
import { EXIT, UsageError, dataDirFrom } from './util.js';

export async function auditVerify(opts: { dataDir?: string; publicKey?: string }): Promise<number> {
  const dir = dataDirFrom(opts.dataDir);
  let publicKey: string | undefined;
  if (opts.publicKey !== undefined) {
    try {
      publicKey = readFileSync(opts.publicKey, 'utf8');
    } catch (e) {
      throw new UsageError(`--public-key: cannot read ${opts.publicKey}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
  }
  const r = await verifyAudit(dir, publicKey !== undefined ? { publicKey } : {});
  if (r.ok) {
    process.stdout.write(`audit chain intact: ${r.events} events, ${r.checkpoints} signed checkpoints, ${r.recordings} recording${r.recordings === 1 ? '' : 's'} checked, key ${r.key} (${dir})\n`);
    return EXIT.OK;
  }
  if (r.line === 0) process.stdout.write(`audit chain BROKEN: ${r.problem} (HEAD.json or signing key)\n`);
  else process.stdout.write(`audit chain BROKEN at line ${r.line}${r.seq !== undefined ? ` (seq ${r.seq})` : ''}: ${r.problem}\n`);
  return EXIT.FAILED;
}

export function formatEvent(e: AuditEvent): string {
  const who = e.identity ? e.identity.subject : '-';
  const sh = e.data?.shadow as { effect?: string; rule?: string } | undefined;
  const dec = e.decision ? `${e.decision.effect} ${e.decision.rule}${sh && typeof sh === 'object' ? ` (shadow: would ${sh.effect} by ${sh.rule})` : ''}` : '';
  const req = e.request as { sql?: string; command?: string; http?: { method: string; path: string }; forward?: { host: string; port: number } } | undefined;
  const what = req?.sql ?? req?.command ?? (req?.http ? `${req.http.method} ${req.http.path}` : req?.forward ? `forward ${req.forward.host}:${req.forward.port}` : '');
  return [e.time, `#${e.seq}`, e.type, who, e.target ?? '-', e.protocol ?? '-', dec, what.replace(/\s+/g, ' ').slice(0, 200)].filter((x) => x !== '').join('  ');
}

export async function auditTail(opts: { dataDir?: string; lines?: string; follow?: boolean; json?: boolean }): Promise<number> {
  const n = opts.lines === undefined ? 20 : Number(opts.lines);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`-n must be a whole number, got "${opts.lines}"`);
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  for await (const e of tailAudit(dataDirFrom(opts.dataDir), n, opts.follow === true, ac.signal)) {
    process.stdout.write((opts.json ? JSON.stringify(e) : formatEvent(e)) + '\n');
  }
  return EXIT.OK;
}

export function parseTime(v: string | undefined, flag: string): Date | undefined {
  if (v === undefined) return undefined;
  if (/^\d+(ms|s|m|h|d)$/.test(v)) return new Date(Date.now() - parseDuration(v));
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new UsageError(`--${flag}: expected an ISO-8601 time or a duration like 7d, got "${v}"`);
  return new Date(t);
}

export async function auditSearch(v: Record<string, string | boolean | undefined>): Promise<number> {
  const str = (k: string) => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
  const effect = str('effect');
  if (effect !== undefined && !['allow', 'deny', 'review'].includes(effect)) throw new UsageError(`--effect must be allow, deny or review, got "${effect}"`);
  const limit = str('limit') === undefined ? undefined : Number(str('limit'));
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) throw new UsageError('--limit must be a positive whole number');
  let count = 0;
  for await (const e of readAudit(dataDirFrom(str('data-dir')), {
    subject: str('subject'),
    target: str('target'),
    effect,
    protocol: str('protocol'),
    type: str('type'),
    since: parseTime(str('since'), 'since'),
    until: parseTime(str('until'), 'until'),
    text: str('text'),
    shadow: v.shadow === true,
    limit,
  })) {
    count++;
    process.stdout.write((v.json ? JSON.stringify(e) : formatEvent(e)) + '\n');
  }
  if (!v.json) process.stderr.write(`${count} event${count === 1 ? '' : 's'}\n`);
  return EXIT.OK;
}
