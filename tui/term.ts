// A session's terminal as the agent sees it: @xterm/headless fed with the recorded/live output,
// rendered into blessed tag markup (text, 16 colours, bold, inverse, the cursor), cropped to the
// pane it is shown in.
import xterm from '@xterm/headless';
import { escapeTags } from './text.js';

type Terminal = InstanceType<typeof xterm.Terminal>;

const NAMES = ['black', 'red', 'green', 'yellow', 'blue', 'magenta', 'cyan', 'white', 'lightblack', 'lightred', 'lightgreen', 'lightyellow', 'lightblue', 'lightmagenta', 'lightcyan', 'lightwhite'];

export class HeadlessTerm {
  private term: Terminal;
  private pending = 0;

  constructor(
    public cols = 80,
    public rows = 24,
  ) {
    this.term = this.make(cols, rows);
  }

  private make(cols: number, rows: number): Terminal {
    return new xterm.Terminal({ cols: Math.max(2, cols), rows: Math.max(1, rows), scrollback: 0, allowProposedApi: true });
  }

  /** Feed output; resolves once parsed. */
  write(data: string): Promise<void> {
    this.pending++;
    return new Promise((resolve) =>
      this.term.write(data, () => {
        this.pending--;
        resolve();
      }),
    );
  }

  get busy(): boolean {
    return this.pending > 0;
  }

  resize(cols: number, rows: number): void {
    if (cols === this.cols && rows === this.rows) return;
    this.cols = cols;
    this.rows = rows;
    this.term.resize(Math.max(2, cols), Math.max(1, rows));
  }

  /** Clear everything (a new replay, a backward seek). */
  reset(cols = this.cols, rows = this.rows): void {
    this.term.dispose();
    this.cols = cols;
    this.rows = rows;
    this.term = this.make(cols, rows);
  }

  /** The visible screen as plain text lines (right-trimmed). */
  text(): string[] {
    const b = this.term.buffer.active;
    const out: string[] = [];
    for (let y = 0; y < this.term.rows; y++) out.push(b.getLine(b.viewportY + y)?.translateToString(true) ?? '');
    return out;
  }

  /**
   * The screen as blessed markup, `width`×`height` at most: columns beyond `width` are cut; when
   * the terminal has more rows than `height`, the rows around the cursor are shown.
   */
  render(width: number, height: number, showCursor = true): { lines: string[]; cropped: boolean } {
    const b = this.term.buffer.active;
    const rows = this.term.rows;
    const cy = b.cursorY;
    const start = rows <= height ? 0 : Math.max(0, Math.min(rows - height, cy - height + 1));
    const n = Math.min(rows, height);
    const lines: string[] = [];
    const cell = b.getNullCell();
    for (let y = start; y < start + n; y++) {
      const line = b.getLine(b.viewportY + y);
      if (!line) {
        lines.push('');
        continue;
      }
      let out = '';
      let run = '';
      let runTag = '';
      const flush = () => {
        if (!run) return;
        out += runTag ? `{${runTag}}${escapeTags(run)}{/}` : escapeTags(run);
        run = '';
      };
      const w = Math.min(this.term.cols, width);
      // The trailing blank cells (unless the cursor is there) are not drawn.
      const textLen = line.translateToString(true).length;
      const last = showCursor && y === cy ? Math.max(textLen, b.cursorX + 1) : textLen;
      for (let x = 0; x < Math.min(w, last); x++) {
        line.getCell(x, cell);
        const ch = cell.getChars() || ' ';
        if (cell.getWidth() === 0) continue;
        const tags: string[] = [];
        if (cell.isFgPalette() && cell.getFgColor() < 16) tags.push(`${NAMES[cell.getFgColor()]}-fg`);
        if (cell.isBgPalette() && cell.getBgColor() < 16) tags.push(`${NAMES[cell.getBgColor()]}-bg`);
        if (cell.isBold()) tags.push('bold');
        if (cell.isUnderline()) tags.push('underline');
        if (Boolean(cell.isInverse()) !== (showCursor && y === cy && x === b.cursorX)) tags.push('inverse');
        const tag = tags.join('}{');
        if (tag !== runTag) {
          flush();
          runTag = tag;
        }
        run += ch;
      }
      flush();
      lines.push(out);
    }
    return { lines, cropped: this.term.cols > width || rows > height };
  }

  dispose(): void {
    this.term.dispose();
  }
}
