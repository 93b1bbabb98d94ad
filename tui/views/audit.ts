// Audit search: the most recent audit events matching a query typed with `/`:
//   subject=demo-agent target=shop effect=deny protocol=postgres type=request session=ID
//   since=1h until=2024-01-01T00:00:00Z limit=200 and any other words as text.
// Enter shows the whole event.
import blessed from 'blessed';
import type { Widgets } from 'blessed';
import { requestText } from '../../src/control/protocol.js';
import type { AuditEvent } from '../../src/core/audit-common.js';
import type { App, Key, View } from '../app.js';
import { Table } from '../table.js';
import { escapeTags, wrap } from '../text.js';

const KEYS = new Set(['subject', 'target', 'effect', 'protocol', 'type', 'session', 'since', 'until', 'limit']);

/** `key=value` tokens become filter fields; other words are the free text. */
export function parseQuery(q: string): Record<string, unknown> {
  const args: Record<string, unknown> = {};
  const text: string[] = [];
  for (const tok of q.split(/\s+/).filter(Boolean)) {
    const m = /^(\w+)=(.*)$/.exec(tok);
    if (m && KEYS.has(m[1]!)) args[m[1]!] = m[1] === 'limit' ? Number(m[2]) : m[2];
    else text.push(tok);
  }
  if (text.length) args.text = text.join(' ');
  return args;
}

const effectColor = (e?: string) => (e === 'deny' ? 'red' : e === 'review' ? 'yellow' : e === 'allow' ? 'green' : undefined);

export class AuditView implements View {
  readonly title = 'audit';
  readonly hints = 'Enter details  / search  r reload';
  readonly filterLabel = 'search: ';
  readonly help: [string, string][] = [
    ['/', 'search: subject=S target=T effect=allow|deny|review protocol=P type=T session=ID since=1h until=ISO limit=N, other words match anywhere'],
    ['Enter', 'show the whole event'],
    ['r', 'run the search again'],
  ];
  private box: Widgets.BoxElement | null = null;
  private table: Table<AuditEvent> | null = null;
  private rows: AuditEvent[] = [];
  private query = '';
  private error = '';
  private searching = false;

  constructor(private readonly app: App) {}

  mount(body: Widgets.BoxElement): void {
    this.box = blessed.box({ parent: body, top: 0, left: 0, width: '100%', height: '100%', border: { type: 'line' }, tags: true });
    this.table = new Table<AuditEvent>(
      this.box,
      [
        { title: 'TIME', width: 8, get: (e) => e.time.slice(11, 19) },
        { title: 'SEQ', width: 5, get: (e) => String(e.seq) },
        { title: 'TYPE', width: 16, get: (e) => e.type },
        { title: 'WHO', flex: 2, min: 6, get: (e) => e.identity?.subject ?? '' },
        { title: 'TARGET', flex: 1, min: 5, get: (e) => e.target ?? '' },
        { title: 'EFFECT', width: 6, get: (e) => e.decision?.effect ?? '', color: (e) => effectColor(e.decision?.effect) },
        { title: 'WHAT', flex: 5, min: 8, get: (e) => requestText(e.request) || (e.decision?.rule ?? '') || String(e.data?.reason ?? e.data?.approval ?? '') },
      ],
      (e) => String(e.seq),
      () => (this.error ? this.error : this.searching ? 'searching…' : 'no matching audit events'),
    );
    this.table.setRows(this.rows);
  }

  unmount(): void {
    this.box?.destroy();
    this.box = null;
    this.table = null;
  }

  up(): void {
    void this.load();
  }

  private async load(): Promise<void> {
    try {
      const args = parseQuery(this.query);
      if (args.limit === undefined) args.limit = 200;
      this.rows = (await this.app.conn.call<AuditEvent[]>('audit.search', args)).reverse();
      this.error = '';
    } catch (e) {
      this.rows = [];
      this.error = (e as Error).message;
    }
    this.searching = false;
    this.table?.setRows(this.rows);
    this.app.render();
  }

  setFilter(q: string): void {
    this.query = q;
    this.rows = [];
    this.error = '';
    this.searching = true;
    this.table?.setRows(this.rows);
    void this.load();
  }

  filterText(): string {
    return this.query;
  }

  key(ch: string | undefined, key: Key): boolean {
    if (!this.table) return false;
    if (this.table.key(key.name, ch)) return true;
    const e = this.table.current();
    if (key.name === 'enter' && e) {
      this.app.push(new EventView(e));
      return true;
    }
    if (ch === 'r') {
      void this.load();
      return true;
    }
    return false;
  }

  render(): void {
    this.box?.setLabel(` audit: ${this.rows.length} most recent${this.query ? ` matching ${this.query}` : ''} `);
    this.table?.render();
  }
}

/** One audit event, whole (scrollable). */
export class EventView implements View {
  readonly title: string;
  readonly hints = '↑/↓ scroll';
  readonly help: [string, string][] = [['↑ ↓ PgUp PgDn', 'scroll']];
  private box: Widgets.BoxElement | null = null;
  private scroll = 0;

  constructor(private readonly ev: AuditEvent) {
    this.title = `audit event #${ev.seq}`;
  }

  mount(body: Widgets.BoxElement): void {
    this.box = blessed.box({ parent: body, top: 0, left: 0, width: '100%', height: '100%', border: { type: 'line' }, label: ` ${this.ev.type} #${this.ev.seq} `, tags: true });
  }

  unmount(): void {
    this.box?.destroy();
    this.box = null;
  }

  private lines(): string[] {
    const w = this.box ? (this.box.width as number) - 3 : 77;
    // The fields in reading order (the log stores them sorted, for hashing).
    const order = ['seq', 'time', 'type', 'session', 'identity', 'target', 'protocol', 'request', 'decision', 'data', 'prev', 'hash'];
    const e = this.ev as unknown as Record<string, unknown>;
    const ordered: Record<string, unknown> = {};
    for (const k of [...order, ...Object.keys(e)]) if (e[k] !== undefined && !(k in ordered)) ordered[k] = e[k];
    return JSON.stringify(ordered, null, 2).split('\n').flatMap((l) => wrap(l, w));
  }

  key(_ch: string | undefined, key: Key): boolean {
    const h = this.box ? (this.box.height as number) - 2 : 10;
    if (key.name === 'up') this.scroll--;
    else if (key.name === 'down') this.scroll++;
    else if (key.name === 'pageup') this.scroll -= h;
    else if (key.name === 'pagedown') this.scroll += h;
    else return false;
    this.scroll = Math.max(0, Math.min(this.scroll, Math.max(0, this.lines().length - h)));
    return true;
  }

  render(): void {
    if (!this.box) return;
    const h = (this.box.height as number) - 2;
    this.box.setContent(this.lines().slice(this.scroll, this.scroll + h).map(escapeTags).join('\n'));
  }
}
