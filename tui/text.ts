// Small text helpers for the console: blessed tag escaping, fitting text into columns, durations.

/** Escape blessed's tag braces so that content is shown literally. */
export function escapeTags(s: string): string {
  return s.replace(/[{}]/g, (c) => (c === '{' ? '{open}' : '{close}'));
}

/** Control characters (from a recorded command, an audit field) are shown as visible escapes. */
export function printable(s: string): string {
  // eslint-disable-next-line no-control-regex -- replacing control characters is the point
  return s.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (c) => `^${String.fromCharCode((c.charCodeAt(0) + 64) & 0x7f)}`).replace(/\n/g, '⏎');
}

/** `s` cut or padded to exactly `w` columns (an ellipsis marks a cut). */
export function fit(s: string, w: number): string {
  if (w <= 0) return '';
  const t = printable(s);
  if (t.length > w) return w === 1 ? '…' : t.slice(0, w - 1) + '…';
  return t.padEnd(w);
}

export function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${h % 24}h`;
}

export function clock(t: number | string): string {
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString().slice(11, 19);
}

export function dateTime(t: number | string): string {
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString().slice(0, 19).replace('T', ' ');
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Word-wrap plain text to `w` columns (long words are cut). */
export function wrap(s: string, w: number): string[] {
  const out: string[] = [];
  for (const para of s.split('\n')) {
    let line = '';
    for (const word of para.split(/(\s+)/)) {
      if ((line + word).length <= w) line += word;
      else {
        if (line.trim()) out.push(line.trimEnd());
        let rest = word.trimStart();
        while (rest.length > w) {
          out.push(rest.slice(0, w));
          rest = rest.slice(w);
        }
        line = rest;
      }
    }
    out.push(line.trimEnd());
  }
  return out;
}

/** A rule as `file:id` without the directory (the lists are narrow). */
export function shortRule(rule: string): string {
  const i = rule.lastIndexOf(':');
  if (i < 0) return rule;
  const file = rule.slice(0, i);
  return `${file.slice(file.lastIndexOf('/') + 1)}:${rule.slice(i + 1)}`;
}
