// Recordings: every recorded session (terminal casts and PostgreSQL transcripts), newest first;
// Enter replays the selected one.
import blessed from 'blessed';
import type { Widgets } from 'blessed';
import type { RecordingInfo } from '../../src/control/protocol.js';
import type { App, Key, View } from '../app.js';
import { TableView } from './tableview.js';
import { Table } from '../table.js';
import { bytes, dateTime } from '../text.js';
import { ReplayView } from './replay.js';

export class RecordingsView extends TableView<RecordingInfo> implements View {
  readonly title = 'recordings';
  readonly hints = 'Enter replay  r reload';
  readonly help: [string, string][] = [
    ['Enter', 'replay the selected recording (terminal) or read its transcript (PostgreSQL)'],
    ['r', 'reload the list'],
  ];
  private box: Widgets.BoxElement | null = null;

  constructor(app: App) {
    super(app);
  }

  mount(body: Widgets.BoxElement): void {
    this.box = blessed.box({ parent: body, top: 0, left: 0, width: '100%', height: '100%', border: { type: 'line' }, tags: true });
    this.table = new Table<RecordingInfo>(
      this.box,
      [
        { title: 'SESSION', width: 8, get: (r) => r.session.slice(0, 8) },
        { title: 'KIND', width: 10, get: (r) => (r.kind === 'cast' ? 'terminal' : 'transcript') },
        { title: 'IDENTITY', flex: 2, min: 8, get: (r) => r.subject ?? '' },
        { title: 'TARGET', flex: 2, min: 6, get: (r) => `${r.target ?? ''}${r.protocol ? ` (${r.protocol})` : ''}` },
        { title: 'SIZE', width: 9, get: (r) => bytes(r.bytes) },
        { title: 'WHEN', width: 19, get: (r) => (r.live ? 'live now' : dateTime(r.closedAt ?? r.mtime)), color: (r) => (r.live ? 'green' : undefined) },
      ],
      (r) => `${r.session}.${r.kind}`,
      () => (this.error ? this.error : 'no recordings yet'),
    );
    this.table.setRows(this.rows);
    this.table.setFilter(this.filter);
  }

  unmount(): void {
    this.box?.destroy();
    this.box = null;
    this.table = null;
  }

  protected fetch(): Promise<RecordingInfo[]> {
    return this.app.conn.call<RecordingInfo[]>('recordings.list', { limit: 500 });
  }

  event(name: string): void {
    if (name === 'session.closed' || name === 'session.opened') void this.load();
  }

  protected rowKey(ch: string | undefined, key: Key, r: RecordingInfo | undefined): boolean {
    if (key.name === 'enter' && r) {
      this.app.push(new ReplayView(this.app, r));
      return true;
    }
    if (ch === 'r') {
      void this.load();
      return true;
    }
    return false;
  }

  render(): void {
    this.box?.setLabel(` recordings (${this.rows.length}) `);
    this.table?.render();
  }
}
