// The shape the list screens share (sessions, approvals, recordings): rows fetched over the
// control socket into a Table, `/` filters the table, the table's own keys move the selection,
// and a fetch error is shown where the rows would be.
import type { App, Key } from '../app.js';
import type { Table } from '../table.js';

export abstract class TableView<T> {
  protected table: Table<T> | null = null;
  protected rows: T[] = [];
  protected filter = '';
  protected error = '';

  constructor(protected readonly app: App) {}

  /** The rows, in display order. */
  protected abstract fetch(): Promise<T[]>;

  /** A key the table did not take, with the selected row (if any). */
  protected abstract rowKey(ch: string | undefined, key: Key, row: T | undefined): boolean;

  protected async load(): Promise<void> {
    try {
      this.rows = await this.fetch();
      this.error = '';
    } catch (e) {
      this.error = (e as Error).message;
    }
    this.table?.setRows(this.rows);
    this.app.render();
  }

  up(): void {
    void this.load();
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
    return this.rowKey(ch, key, this.table.current());
  }
}
