// Sessions: the live list (identity, target, protocol, duration, last command), refreshed on the
// core's session and decision events. Enter opens the live view; k kills (after a confirmation).
import blessed from 'blessed';
import type { Widgets } from 'blessed';
import type { SessionView } from '../../src/control/protocol.js';
import type { App, Key, View } from '../app.js';
import { TableView } from './tableview.js';
import { Table } from '../table.js';
import { duration } from '../text.js';
import { LiveView } from './live.js';

const effectColor = (e?: string) => (e === 'deny' ? 'red' : e === 'review' ? 'yellow' : undefined);

export class SessionsView extends TableView<SessionView> implements View {
  readonly title = 'sessions';
  readonly hints = 'Enter live view  k kill';
  readonly help: [string, string][] = [
    ['Enter', 'live view of the selected session (read-only)'],
    ['k', 'kill the selected session (asks first)'],
  ];
  private box: Widgets.BoxElement | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(app: App) {
    super(app);
  }

  mount(body: Widgets.BoxElement): void {
    this.box = blessed.box({ parent: body, top: 0, left: 0, width: '100%', height: '100%', border: { type: 'line' }, label: ' sessions ', tags: true });
    this.table = new Table<SessionView>(
      this.box,
      [
        { title: 'ID', width: 8, get: (s) => s.id.slice(0, 8) },
        { title: 'IDENTITY', flex: 2, min: 8, get: (s) => s.identity.subject },
        { title: 'TARGET', flex: 2, min: 6, get: (s) => s.target },
        { title: 'PROTO', width: 10, get: (s) => s.protocol },
        { title: 'DURATION', width: 8, get: (s) => duration(Date.now() - s.openedAt) },
        { title: 'LAST COMMAND', flex: 5, min: 10, get: (s) => s.lastRequest?.text ?? '', color: (s) => effectColor(s.lastRequest?.effect) },
      ],
      (s) => s.id,
      () => (this.error ? this.error : 'no live sessions'),
    );
    this.table.setRows(this.rows);
    this.table.setFilter(this.filter);
  }

  unmount(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.box?.destroy();
    this.box = null;
    this.table = null;
  }

  protected async fetch(): Promise<SessionView[]> {
    return (await this.app.conn.call<SessionView[]>('sessions.list')).sort((a, b) => b.openedAt - a.openedAt);
  }

  event(name: string): void {
    if (!['session.opened', 'session.closed', 'request.decided'].includes(name) || this.timer || !this.box) return;
    // Coalesce bursts of events into one reload.
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.load();
    }, 200);
  }

  protected rowKey(ch: string | undefined, key: Key, s: SessionView | undefined): boolean {
    if (key.name === 'enter' && s) {
      this.app.push(new LiveView(this.app, s));
      return true;
    }
    if (ch === 'k' && s) {
      this.app.ask(`kill session ${s.id.slice(0, 8)} (${s.identity.subject} → ${s.target})? type y to confirm: `, (v) => {
        if (v.toLowerCase() !== 'y' && v.toLowerCase() !== 'yes') return this.app.flash('not killed');
        this.app.conn.call('session.kill', { id: s.id, reason: 'from the console' }).then(
          () => this.app.flash(`session ${s.id.slice(0, 8)} killed`),
          (e: Error) => this.app.flash(`kill failed: ${e.message}`, true),
        );
      });
      return true;
    }
    return false;
  }

  render(): void {
    if (this.box) this.box.setLabel(` sessions (${this.rows.length}) `);
    this.table?.render();
  }
}
