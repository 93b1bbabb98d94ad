// A keyboard-driven table drawn into a blessed box: fixed and flexible columns fitted to the box
// width (so it works in 80 columns and follows resizes), a selected row, a filter, scrolling.
import type { Widgets } from 'blessed';
import { escapeTags, fit } from './text.js';

export interface Column<T> {
  title: string;
  /** Fixed width; otherwise the column shares what is left (by `flex`, default 1). */
  width?: number;
  flex?: number;
  /** Minimum width of a flexible column. */
  min?: number;
  get(row: T): string;
  /** A blessed colour for the cell (e.g. red for deny). */
  color?(row: T): string | undefined;
}

export class Table<T> {
  private rows: T[] = [];
  private shown: T[] = [];
  private selectedKey: string | null = null;
  private sel = 0;
  private top = 0;
  filter = '';

  constructor(
    private readonly box: Widgets.BoxElement,
    private readonly columns: Column<T>[],
    private readonly keyOf: (row: T) => string,
    private readonly empty: () => string = () => 'nothing here',
  ) {}

  setRows(rows: T[]): void {
    this.rows = rows;
    this.apply();
  }

  setFilter(f: string): void {
    this.filter = f;
    this.apply();
  }

  get size(): number {
    return this.shown.length;
  }

  get all(): readonly T[] {
    return this.rows;
  }

  current(): T | undefined {
    return this.shown[this.sel];
  }

  select(key: string): void {
    const i = this.shown.findIndex((r) => this.keyOf(r) === key);
    if (i >= 0) this.sel = i;
    this.selectedKey = key;
  }

  /** Arrow keys, page up/down, home/end. True when handled. */
  key(name: string | undefined, ch: string | undefined): boolean {
    const page = Math.max(1, this.bodyHeight() - 1);
    let d: number | null = null;
    void ch;
    if (name === 'up') d = -1;
    else if (name === 'down') d = 1;
    else if (name === 'pageup') d = -page;
    else if (name === 'pagedown') d = page;
    else if (name === 'home') d = -Infinity;
    else if (name === 'end') d = Infinity;
    if (d === null) return false;
    this.move(d);
    return true;
  }

  move(d: number): void {
    if (this.shown.length === 0) return;
    this.sel = Math.max(0, Math.min(this.shown.length - 1, d === -Infinity ? 0 : d === Infinity ? this.shown.length - 1 : this.sel + d));
    this.selectedKey = this.keyOf(this.shown[this.sel]!);
  }

  private apply(): void {
    const f = this.filter.toLowerCase();
    this.shown = f ? this.rows.filter((r) => this.columns.map((c) => c.get(r)).join(' ').toLowerCase().includes(f)) : this.rows;
    const i = this.selectedKey === null ? -1 : this.shown.findIndex((r) => this.keyOf(r) === this.selectedKey);
    this.sel = i >= 0 ? i : Math.min(this.sel, Math.max(0, this.shown.length - 1));
    if (this.shown[this.sel]) this.selectedKey = this.keyOf(this.shown[this.sel]!);
  }

  private innerWidth(): number {
    // One column short of the box: blessed wraps a line of exactly its width that ends in a
    // style escape (its wrap loop counts the trailing escape as more text).
    return Math.max(10, (this.box.width as number) - Number(this.box.iwidth ?? 0) - 1);
  }

  private bodyHeight(): number {
    return Math.max(1, (this.box.height as number) - Number(this.box.iheight ?? 0) - 1);
  }

  private widths(total: number): number[] {
    const gaps = this.columns.length - 1;
    const fixed = this.columns.reduce((n, c) => n + (c.width ?? 0), 0);
    const flexCols = this.columns.filter((c) => c.width === undefined);
    const flexTotal = flexCols.reduce((n, c) => n + (c.flex ?? 1), 0) || 1;
    const left = Math.max(0, total - fixed - gaps);
    const w = this.columns.map((c) => c.width ?? Math.max(c.min ?? 4, Math.floor((left * (c.flex ?? 1)) / flexTotal)));
    // Give rounding leftovers to the last flexible column; shrink it when mins overflow.
    const used = w.reduce((a, b) => a + b, 0) + gaps;
    const lastFlex = this.columns.map((c) => c.width === undefined).lastIndexOf(true);
    if (lastFlex >= 0) w[lastFlex] = Math.max(1, w[lastFlex]! + (total - used));
    return w;
  }

  render(): void {
    const width = this.innerWidth();
    const height = this.bodyHeight();
    const w = this.widths(width);
    const header = `{bold}${escapeTags(this.columns.map((c, i) => fit(c.title, w[i]!)).join(' '))}{/bold}`;
    if (this.shown.length === 0) {
      this.box.setContent(`${header}\n${escapeTags(this.filter ? `no match for "${this.filter}"` : this.empty())}`);
      return;
    }
    if (this.sel < this.top) this.top = this.sel;
    if (this.sel >= this.top + height) this.top = this.sel - height + 1;
    this.top = Math.max(0, Math.min(this.top, Math.max(0, this.shown.length - height)));
    const lines = [header];
    for (let i = this.top; i < Math.min(this.shown.length, this.top + height); i++) {
      const r = this.shown[i]!;
      const cells = this.columns.map((c, j) => {
        const t = escapeTags(fit(c.get(r), w[j]!));
        const col = c.color?.(r);
        return col && i !== this.sel ? `{${col}-fg}${t}{/${col}-fg}` : t;
      });
      const line = cells.join(' ');
      lines.push(i === this.sel ? `{inverse}${line}{/inverse}` : line);
    }
    this.box.setContent(lines.join('\n'));
  }
}
