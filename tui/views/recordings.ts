// Recordings: every recorded session (terminal casts and PostgreSQL transcripts), newest first;
// Enter replays the selected one.
import blessed from 'blessed';
import type { Widgets } from 'blessed';
import type { RecordingInfo } from '../../src/control/protocol.js';
import type { App, Key, View } from '../app.js';
import { Table } from '../table.js';
import { bytes, dateTime } from '../text.js';
import { ReplayView } from './replay.js';

export class RecordingsView implements View {
  readonly title = 'recordings';
  readonly hints = 'Enter replay  r reload';
  readonly help: [string, string][] = [
    ['Enter', 'replay the selected recording (terminal) or read its transcript (PostgreSQL)'],
    ['r', 'reload the list'],
  ];
  private box: Widgets.BoxElement | null = null;
  private table: Table<RecordingInfo> | null = null;
  private rows: RecordingInfo[] = [];
  private filter = '';
  private error = '';

  constructor(private readonly app: App) {}

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

  up(): void {
    void this.load();
  }

  private async load(): Promise<void> {
    try {
      this.rows = await this.app.conn.call<RecordingInfo[]>('recordings.list', { limit: 500 });
      this.error = '';
    } catch (e) {
      this.error = (e as Error).message;
    }
    this.table?.setRows(this.rows);
    this.app.render();
  }

  event(name: string): void {
    if (name === 'session.closed' || name === 'session.opened') void this.load();
  }

  setFilter(f: string): void {
    this.filter = f;
    this.table?.setFilter(f);
  }

  filterText(): string {
    return this.filter;
  }

  key(ch: string | undefined, key: Key): boolean {
    if (!this.table) return false;
    if (this.table.key(key.name, ch)) return true;
    const r = this.table.current();
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
