// The terminal state of an interactive session, as the target drew it: the target's raw output is
// fed into a headless xterm (@xterm/headless), so a command line is read off the screen the way
// the user sees it — after line editing, history recall, tab completion and pastes.
//
// Where does the command line start? (the end of the prompt)
// - With prompt marks (the local bash target: OSC 133 A/B/C in PS1/PS2/PS0): the cursor position
//   at the `B` mark (prompt end) is the line start. Marks are only taken while the line is not
//   being edited yet (after an Enter, before the first keystroke), so output of a background job
//   arriving mid-line cannot move the start.
// - Without (remote targets): the line starts where the cursor is when the user types the first
//   key of a line, once the target's output has gone quiet (`settle()`); the prompt is what the
//   target printed before.
// Either way a command can print a fake mark or a fake prompt, and a line can hold several screen
// rows; the session therefore also decides the other readings (`LineReading.others`): from the
// start to the last row in use, the whole rows of the start and of the cursor from column 0,
// every part of them after a prompt-like `$ `, `# `, `% `, `> `, and the keystrokes themselves
// when they were plain typing. The strictest decision among the readings that parse wins.
//
// Alternate screen (vim, less, top): `altScreen` is true; keystrokes are not command lines.
// Echo off (password prompts): printable keys were typed but nothing appeared on the line.
import xterm from '@xterm/headless';
import type { IMarker, Terminal as XTerminal } from '@xterm/headless';

const { Terminal } = xterm;

/** Output quiet for this long (ms) counts as settled. */
const QUIET_MS = 15;
/** After input, wait at most this long for its echo to start. */
const ECHO_WAIT_MS = 150;
/** settle() never waits longer than this. */
const SETTLE_CAP_MS = 1500;

/** Plain typing reconstructed from keystrokes (null once anything but plain typing was seen). */
class Typed {
  text: string | null = '';
  printable = 0;

  reset(): void {
    this.text = '';
    this.printable = 0;
  }

  feed(s: string): void {
    for (const ch of s) {
      const c = ch.codePointAt(0)!;
      if (c === 0x7f || c === 0x08) {
        if (this.text !== null) this.text = [...this.text].slice(0, -1).join('');
      } else if (c === 0x15) {
        if (this.text !== null) this.text = '';
      } else if (c === 0x17) {
        if (this.text !== null) this.text = this.text.replace(/\S+\s*$/, '');
      } else if (c < 0x20 || (c >= 0x80 && c < 0xa0)) {
        this.text = null; // tab, escape sequences, other control keys: the screen tells
      } else {
        this.printable++;
        if (this.text !== null) this.text += ch;
      }
    }
  }
}

export interface LineReading {
  /** The line as the prompt mark or the first keystroke places it. */
  primary: string;
  /** Other readings to decide too (deduplicated, primary excluded). */
  others: string[];
  /** Printable keys were typed but nothing shows on the line: echo is off (a password). */
  hidden: boolean;
  /** The plain-typing reconstruction, when the keys were plain typing. */
  typed: string | null;
}

export class LineTracker {
  readonly term: XTerminal;
  private pendingWrites = 0;
  private lastOutputAt = 0;
  private lastInputAt = 0;
  private outputSinceInput = true;
  private start: { marker: IMarker; col: number } | null = null;
  /** 'awaiting': after Enter (or at start), no key typed yet; 'editing': a line is being typed. */
  private state: 'awaiting' | 'editing' = 'awaiting';
  private readonly typed = new Typed();
  /** Saw at least one prompt-end mark: the target's shell reports its prompts. */
  marks = false;
  /** Between a prompt-end mark and the next command-start mark (or Enter). */
  atPrompt = false;
  /** The shell (prompt marks) started a command that no Enter of ours let through. */
  onUnheldRun: (() => void) | null = null;

  constructor(cols: number, rows: number) {
    this.term = new Terminal({ cols: Math.max(2, cols), rows: Math.max(1, rows), scrollback: 2000, allowProposedApi: true });
    this.term.parser.registerOscHandler(133, (data) => {
      const kind = data.split(';')[0];
      if (kind === 'B') {
        this.marks = true;
        this.atPrompt = true;
        if (this.state === 'awaiting') this.setStart();
      } else if (kind === 'C') {
        // the shell starts a command: after one of our Enters the state is 'awaiting'; while a line
        // is being edited it means a key other than Enter ran it (a rebound key)
        if (this.state === 'editing' && this.atPrompt) this.onUnheldRun?.();
        this.atPrompt = false;
      }
      return true;
    });
  }

  /** The target's (raw, unmasked) output. */
  feed(b: Buffer): void {
    this.pendingWrites++;
    this.lastOutputAt = Date.now();
    this.outputSinceInput = true;
    this.term.write(b, () => {
      this.pendingWrites--;
    });
  }

  /** Text the bastion shows the agent itself (notices): keeps the screen as the agent sees it. */
  feedNotice(s: string): Promise<void> {
    return new Promise((res) => this.term.write(s, res));
  }

  /** Is the next key the first of a line? Then call beginLine() before forwarding it. */
  get awaiting(): boolean {
    return this.state === 'awaiting';
  }

  /**
   * The first key of a line: without a prompt mark, the line starts at the cursor now (all output
   * so far parsed). Called before the key is forwarded, so its echo is not yet on the screen.
   */
  async beginLine(): Promise<void> {
    await this.parsed();
    if (!this.start) this.setStart();
    this.state = 'editing';
    this.typed.reset();
  }

  /** Bytes forwarded to the target (keystrokes). */
  sent(s: string): void {
    this.lastInputAt = Date.now();
    this.outputSinceInput = false;
    this.typed.feed(s);
  }

  private parsed(): Promise<void> {
    return new Promise<void>((res) => this.term.write('', res));
  }

  resize(cols: number, rows: number): void {
    this.term.resize(Math.max(2, cols), Math.max(1, rows));
  }

  get altScreen(): boolean {
    return this.term.buffer.active.type === 'alternate';
  }

  /** Wait until the target's output has been parsed and has gone quiet (after our last input's echo). */
  async settle(): Promise<void> {
    const t0 = Date.now();
    for (;;) {
      const now = Date.now();
      if (now - t0 > SETTLE_CAP_MS) break;
      const quiet = now - this.lastOutputAt >= QUIET_MS;
      const echoed = this.outputSinceInput || now - this.lastInputAt >= ECHO_WAIT_MS;
      if (this.pendingWrites === 0 && quiet && echoed) break;
      await new Promise((r) => setTimeout(r, 3));
    }
    await this.parsed();
  }

  private setStart(): void {
    const b = this.term.buffer.active;
    this.start?.marker.dispose();
    const marker = this.term.registerMarker(0);
    this.start = marker ? { marker, col: b.cursorX } : null;
  }

  /** Read the line at Enter (call settle() first). */
  read(): LineReading {
    const b = this.term.buffer.active;
    const typed = this.typed.text;
    const top = (y: number) => {
      while (y > 0 && b.getLine(y)?.isWrapped) y--;
      return y;
    };
    const cursorRow = top(b.baseY + b.cursorY);
    const rows = new Set<string>([this.logical(cursorRow, 0)]);
    let primary: string;
    const others = new Set<string>();
    if (this.start && !this.start.marker.isDisposed && this.start.marker.line >= 0) {
      const y0 = this.start.marker.line;
      primary = this.logical(y0, this.start.col);
      rows.add(this.logical(top(y0), 0));
      // a buffer holding several lines (a literal newline in it) spans rows that are not wrapped
      const all = this.region(y0, this.start.col);
      if (all !== primary) others.add(all);
    } else {
      // no line start known (Enter before any key): only text after a prompt-like mark counts
      const whole = this.logical(cursorRow, 0);
      const marks = [...whole.matchAll(/[$#%>] /g)];
      primary = marks.length ? whole.slice((marks[marks.length - 1]!.index ?? 0) + 2).trim() : '';
    }
    for (const whole of rows) {
      if (whole) others.add(whole);
      for (const m of whole.matchAll(/[$#%>] /g)) {
        const rest = whole.slice((m.index ?? 0) + 2).trim();
        if (rest) others.add(rest);
      }
    }
    if (typed !== null && typed.trim()) others.add(typed.trim());
    others.delete(primary);
    const hidden = this.typed.printable > 0 && primary.trim() === '';
    return { primary, others: [...others], hidden, typed };
  }

  /** Text from (y, col) to the last non-blank row of the screen: wrapped rows joined, others on new lines. */
  private region(y: number, col: number): string {
    const b = this.term.buffer.active;
    const parts: string[] = [];
    let y1 = y;
    for (let yy = y; yy < b.length; yy++) if (b.getLine(yy)?.translateToString(true).trim()) y1 = yy;
    for (let yy = y; yy <= y1; yy++) {
      const l = b.getLine(yy);
      if (!l) break;
      const text = l.translateToString(false, yy === y ? col : 0);
      if (yy > y && !l.isWrapped) parts.push('\n');
      parts.push(yy < y1 && b.getLine(yy + 1)?.isWrapped ? text : text.trimEnd());
    }
    return parts.join('').trimEnd();
  }

  private logical(y: number, col: number): string {
    const b = this.term.buffer.active;
    let text = b.getLine(y)?.translateToString(false, col) ?? '';
    for (let yy = y + 1; yy < b.length; yy++) {
      const l = b.getLine(yy);
      if (!l?.isWrapped) break;
      text += l.translateToString(false);
    }
    return text.trimEnd();
  }

  /** Absolute row of the cursor (parsed output so far). */
  cursorRow(): number {
    const b = this.term.buffer.active;
    return b.baseY + b.cursorY;
  }

  /**
   * After a line was cancelled: wait for a fresh prompt below `row` — the output settled with the
   * cursor on a later row, after some text (the prompt of whatever program reads the terminal).
   */
  async freshPrompt(row: number, timeoutMs = 2000): Promise<boolean> {
    const t0 = Date.now();
    while (Date.now() - t0 < timeoutMs) {
      await this.settle();
      if (this.cursorRow() > row && this.term.buffer.active.cursorX > 0) return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  }

  /** Enter was forwarded (or the line cancelled): the next line starts at the next prompt. */
  lineDone(): void {
    this.state = 'awaiting';
    this.atPrompt = false;
    this.start?.marker.dispose();
    this.start = null;
    this.typed.reset();
  }

  dispose(): void {
    this.start?.marker.dispose();
    this.term.dispose();
  }
}
