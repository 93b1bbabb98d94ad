// Approvals: the queue of held requests (pending first; t shows every state) with the details of
// the selected one — the request, the rule that asked for review and why, the agent's identity
// and its stated reason, the session — and a/d to approve or deny it with a reason.
import blessed from 'blessed';
import type { Widgets } from 'blessed';
import type { ApprovalView } from '../../src/control/protocol.js';
import { requestText } from '../../src/control/protocol.js';
import type { App, Key, View } from '../app.js';
import { TableView } from './tableview.js';
import { Table } from '../table.js';
import { clock, dateTime, duration, escapeTags, wrap } from '../text.js';

const stateColor = (s: string) => (s === 'pending' ? 'yellow' : s === 'approved' ? 'green' : 'red');

export class ApprovalsView extends TableView<ApprovalView> implements View {
  readonly title = 'approvals';
  readonly hints = 'a approve  d deny  t all/pending';
  readonly help: [string, string][] = [
    ['a', 'approve the selected request (asks for a reason; Enter approves, Esc cancels)'],
    ['d', 'deny the selected request (asks for a reason)'],
    ['t', 'toggle: pending only / every approval'],
    ['', 'a new approval rings the bell on every screen'],
  ];
  private list: Widgets.BoxElement | null = null;
  private details: Widgets.BoxElement | null = null;
  private all = false;

  constructor(app: App) {
    super(app);
  }

  mount(body: Widgets.BoxElement): void {
    this.list = blessed.box({ parent: body, top: 0, left: 0, width: '100%', height: '50%', border: { type: 'line' }, tags: true });
    this.details = blessed.box({ parent: body, top: '50%', left: 0, width: '100%', height: '50%', border: { type: 'line' }, label: ' details ', tags: true });
    this.table = new Table<ApprovalView>(
      this.list,
      [
        { title: 'ID', width: 10, get: (a) => a.id },
        { title: 'STATE', width: 8, get: (a) => a.state, color: (a) => stateColor(a.state) },
        { title: 'EXPIRES', width: 9, get: (a) => (a.state === 'pending' ? `in ${duration(a.expiresAt - Date.now())}` : clock(a.decidedAt ?? a.createdAt)) },
        { title: 'IDENTITY', flex: 2, min: 8, get: (a) => a.identity.subject },
        { title: 'TARGET', flex: 1, min: 6, get: (a) => a.target ?? '' },
        { title: 'REQUEST', flex: 5, min: 10, get: (a) => requestText(a.request) },
      ],
      (a) => a.id,
      () => (this.error ? this.error : this.all ? 'no approvals yet' : 'no pending approvals'),
    );
    this.table.setRows(this.rows);
    this.table.setFilter(this.filter);
  }

  unmount(): void {
    this.list?.destroy();
    this.details?.destroy();
    this.list = this.details = null;
    this.table = null;
  }

  protected async fetch(): Promise<ApprovalView[]> {
    const rows = await this.app.conn.call<ApprovalView[]>('approvals.list', this.all ? {} : { state: 'pending' });
    // Pending first (oldest first: it expires first), then the rest newest first.
    return rows.sort((a, b) => (a.state === 'pending') !== (b.state === 'pending') ? (a.state === 'pending' ? -1 : 1) : a.state === 'pending' ? a.createdAt - b.createdAt : b.createdAt - a.createdAt);
  }

  event(name: string): void {
    if (name === 'approval.created' || name === 'approval.decided') void this.load();
  }

  protected rowKey(ch: string | undefined, key: Key, a: ApprovalView | undefined): boolean {
    if ((ch === 'a' || ch === 'd') && a) {
      this.app.decideWithReason(a, ch === 'a' ? 'approved' : 'denied');
      return true;
    }
    if (ch === 'a' || ch === 'd') {
      this.app.flash('no approval selected');
      return true;
    }
    if (ch === 't') {
      this.all = !this.all;
      void this.load();
      return true;
    }
    return false;
  }

  render(): void {
    if (!this.list || !this.details || !this.table) return;
    const pending = this.rows.filter((r) => r.state === 'pending').length;
    this.list.setLabel(` approvals: ${pending} pending${this.all ? ` of ${this.rows.length}` : ''} `);
    this.table.render();
    const a = this.table.current();
    const w = Math.max(20, (this.details.width as number) - 3);
    if (!a) {
      this.details.setContent('');
      return;
    }
    const field = (k: string, v: string) => wrap(v, w - 12).map((l, i) => `{bold}${(i === 0 ? k : '').padEnd(11)}{/bold} ${escapeTags(l)}`);
    const lines = [
      ...field('request', requestText(a.request) || JSON.stringify(a.request)),
      ...field('identity', `${a.identity.subject}${a.identity.groups?.length ? ` (groups ${a.identity.groups.join(', ')})` : ''}${a.identity.issuer ? ` via ${a.identity.issuer}` : ''}`),
      ...field('target', `${a.target ?? '?'} (${a.protocol ?? '?'})${a.session ? `, session ${a.session}` : ''}`),
      ...field('rule', a.rule),
      ...field('why review', a.reason),
      ...field("agent's why", a.justification ?? (typeof a.request.reason === 'string' ? a.request.reason : '(none given)')),
      ...field('state', a.state === 'pending' ? `pending since ${dateTime(a.createdAt)}, expires in ${duration(a.expiresAt - Date.now())}` : `${a.state} by ${a.decidedBy ?? '?'} at ${dateTime(a.decidedAt ?? 0)}${a.decisionReason ? `: ${a.decisionReason}` : ''}`),
    ];
    // Any other fields the approval carries (e.g. two-person rule, scope) are shown too.
    const known = new Set(['id', 'state', 'request', 'rule', 'identity', 'reason', 'createdAt', 'decidedAt', 'decidedBy', 'decisionReason', 'expiresAt', 'session', 'target', 'protocol', 'justification', '_id']);
    for (const [k, v] of Object.entries(a)) if (!known.has(k) && v !== undefined) lines.push(...field(k, typeof v === 'string' ? v : JSON.stringify(v)));
    this.details.setContent(lines.join('\n'));
  }
}
