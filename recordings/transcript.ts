// Transcripts of statement-level sessions (PostgreSQL: `<session>.pg.jsonl`, written by
// src/proxy/postgres/transcript.ts; Kubernetes later in the same shape): one JSON object per line —
// a `session` header, one `statement` (or `request`) entry each, an `end` line. Rendered as text
// (`portcullis replay`, the console) and as self-contained HTML (`portcullis export`). Everything
// in a transcript was masked before it was written.
import { readFileSync } from 'node:fs';
import { PortcullisError } from '../src/policy/types.js';

export type TranscriptEntry = Record<string, unknown> & { type?: string };

/** Read a transcript; a line that is not a JSON object is an error naming file:line. */
export function readTranscriptFile(file: string): TranscriptEntry[] {
  return parseTranscript(readFileSync(file, 'utf8'), file);
}

export function parseTranscript(text: string, file = '<transcript>'): TranscriptEntry[] {
  const out: TranscriptEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (l.trim() === '') continue;
    let v: unknown;
    try {
      v = JSON.parse(l);
    } catch {
      // The last line may be mid-write in a live session: stop there.
      if (i === lines.length - 1) break;
      throw new PortcullisError('transcript_invalid', `${file}:${i + 1}: not JSON`, { path: file, line: i + 1 });
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new PortcullisError('transcript_invalid', `${file}:${i + 1}: not a JSON object`, { path: file, line: i + 1 });
    out.push(v as TranscriptEntry);
  }
  return out;
}

const str = (v: unknown): string => (typeof v === 'string' ? v : v === undefined || v === null ? '' : JSON.stringify(v));

function timeOf(e: TranscriptEntry): string {
  const t = str(e.time);
  return t ? t.replace('T', ' ').replace(/\.\d+Z$|Z$/, '') : '';
}

/** The text a statement-like entry stands for (SQL, command, HTTP request). */
export function entryText(e: TranscriptEntry): string {
  if (typeof e.statement === 'string') return e.statement;
  if (typeof e.sql === 'string') return e.sql;
  if (typeof e.command === 'string') return e.command;
  const http = (e.http ?? (e.request as Record<string, unknown> | undefined)?.http) as { method?: string; path?: string } | undefined;
  if (http) return `${http.method ?? '?'} ${http.path ?? ''}`;
  return '';
}

interface Decision {
  effect?: string;
  rule?: string;
  reason?: string;
}

function outcomeLine(e: TranscriptEntry): string {
  const parts: string[] = [];
  const err = e.error as { code?: string; message?: string } | undefined;
  if (typeof e.command === 'string' && typeof e.statement === 'string') parts.push(e.command);
  if (typeof e.rows === 'number') parts.push(`${e.rows} row${e.rows === 1 ? '' : 's'}`);
  if (typeof e.durationMs === 'number') parts.push(`${e.durationMs < 10 ? e.durationMs.toFixed(2) : Math.round(e.durationMs)} ms`);
  if (e.suspended) parts.push('suspended (row limit)');
  if (err) parts.push(`ERROR ${err.code ?? ''} ${err.message ?? ''}`.trim());
  return parts.join(', ');
}

function approvalLine(e: TranscriptEntry): string {
  const a = e.approval as { id?: string; state?: string; by?: string } | undefined;
  return a ? `approval ${a.id ?? '?'}: ${a.state ?? '?'}${a.by ? ` by ${a.by}` : ''}` : '';
}

/** Plain-text rendering (ANSI colours when `color`). */
export function renderTranscriptText(entries: TranscriptEntry[], opts: { color?: boolean } = {}): string {
  const c = (code: string, s: string) => (opts.color ? `\x1b[${code}m${s}\x1b[0m` : s);
  const effectColor: Record<string, string> = { allow: '32', deny: '31', review: '33' };
  const out: string[] = [];
  for (const e of entries) {
    if (e.type === 'session') {
      const id = e.identity as { subject?: string; groups?: string[] } | undefined;
      out.push(c('1', `session ${str(e.session)}  ${str(e.protocol)} → ${str(e.target)}${e.database ? ` (database ${str(e.database)})` : ''}`));
      out.push(`  identity ${id?.subject ?? '?'}${id?.groups?.length ? ` (${id.groups.join(', ')})` : ''}${e.remote ? ` from ${str(e.remote)}` : ''}${e.applicationName ? `, application ${str(e.applicationName)}` : ''}`);
      out.push(`  started ${timeOf(e)}`);
      out.push('');
      continue;
    }
    if (e.type === 'end') {
      out.push('');
      out.push(c('1', `session ended ${timeOf(e)}: ${str(e.reason)}`));
      continue;
    }
    const d = (e.decision ?? {}) as Decision;
    const eff = d.effect ?? '?';
    out.push(`${c('2', timeOf(e))}  ${c(effectColor[eff] ?? '0', eff.toUpperCase().padEnd(6))} ${entryText(e)}`);
    if (Array.isArray(e.params) && e.params.length) out.push(`    params: ${e.params.map((p) => (p === null ? 'NULL' : str(p))).join(', ')}`);
    if (d.rule && eff !== 'allow') out.push(`    rule ${d.rule}: ${d.reason ?? ''}`);
    const ap = approvalLine(e);
    if (ap) out.push(`    ${ap}`);
    const oc = outcomeLine(e);
    if (oc) out.push(`    → ${oc}`);
    const cols = e.columns as string[] | undefined;
    const sample = e.sample as (string | null)[][] | undefined;
    if (cols?.length && sample?.length) {
      out.push(`    ${cols.join(' | ')}`);
      for (const row of sample) out.push(`    ${row.map((v) => (v === null ? 'NULL' : v)).join(' | ')}`);
    }
  }
  return out.join('\n') + '\n';
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!);
}

/** An HTML fragment (no scripts) for the transcript, styled by TRANSCRIPT_CSS. */
export function renderTranscriptHtml(entries: TranscriptEntry[]): string {
  const h = escapeHtml;
  const parts: string[] = ['<section class="pc-transcript">'];
  for (const e of entries) {
    if (e.type === 'session') {
      const id = e.identity as { subject?: string; groups?: string[] } | undefined;
      parts.push(
        `<header><h2>Session ${h(str(e.session))}</h2><p>${h(str(e.protocol))} → <b>${h(str(e.target))}</b>${e.database ? ` (database ${h(str(e.database))})` : ''}; identity <b>${h(id?.subject ?? '?')}</b>${id?.groups?.length ? ` (${h(id.groups.join(', '))})` : ''}${e.remote ? ` from ${h(str(e.remote))}` : ''}; started ${h(timeOf(e))}</p></header>`,
      );
      continue;
    }
    if (e.type === 'end') {
      parts.push(`<footer>Session ended ${h(timeOf(e))}: ${h(str(e.reason))}</footer>`);
      continue;
    }
    const d = (e.decision ?? {}) as Decision;
    const eff = d.effect ?? 'unknown';
    const cols = e.columns as string[] | undefined;
    const sample = e.sample as (string | null)[][] | undefined;
    const ap = approvalLine(e);
    const oc = outcomeLine(e);
    parts.push(
      `<article class="pc-entry pc-${h(eff)}"><div class="pc-meta"><time>${h(timeOf(e))}</time> <span class="pc-effect">${h(eff)}</span>${d.rule && eff !== 'allow' ? ` <span class="pc-rule">${h(d.rule)}: ${h(d.reason ?? '')}</span>` : ''}</div>` +
        `<pre class="pc-stmt">${h(entryText(e))}</pre>` +
        (Array.isArray(e.params) && e.params.length ? `<div class="pc-params">params: ${h(e.params.map((p) => (p === null ? 'NULL' : str(p))).join(', '))}</div>` : '') +
        (ap ? `<div class="pc-approval">${h(ap)}</div>` : '') +
        (oc ? `<div class="pc-outcome">${h(oc)}</div>` : '') +
        (cols?.length && sample?.length
          ? `<table><thead><tr>${cols.map((c) => `<th>${h(c)}</th>`).join('')}</tr></thead><tbody>${sample.map((r) => `<tr>${r.map((v) => `<td>${v === null ? '<i>NULL</i>' : h(v)}</td>`).join('')}</tr>`).join('')}</tbody></table>`
          : '') +
        '</article>',
    );
  }
  parts.push('</section>');
  return parts.join('\n');
}

export const TRANSCRIPT_CSS = `
.pc-transcript{font:14px/1.4 system-ui,sans-serif;max-width:70em;margin:1em auto;color:#222}
.pc-transcript header h2{margin:.2em 0}
.pc-entry{border-left:4px solid #999;padding:.3em .8em;margin:.6em 0;background:#fafafa}
.pc-entry.pc-allow{border-color:#2a2}.pc-entry.pc-deny{border-color:#c22}.pc-entry.pc-review{border-color:#d90}
.pc-meta{color:#555;font-size:12px}.pc-effect{font-weight:bold;text-transform:uppercase}
.pc-stmt{margin:.3em 0;white-space:pre-wrap;font:13px/1.3 ui-monospace,monospace}
.pc-outcome,.pc-approval,.pc-params{font-size:12px;color:#333}
.pc-transcript table{border-collapse:collapse;font:12px ui-monospace,monospace;margin:.3em 0}
.pc-transcript td,.pc-transcript th{border:1px solid #ccc;padding:1px 6px;text-align:left}
.pc-transcript footer{margin-top:1em;color:#555}
`;
