// Interactive terminal sessions: keystrokes go to the target as they are typed (so line editing,
// history and completion work), but **Enter is held** until the line — read off the terminal
// screen (linetracker.ts) — is decided:
//   allow  → the Enter is forwarded;
//   deny   → the reason is printed inline and the line is cancelled at the target (Ctrl-E Ctrl-U
//            Ctrl-C: the whole buffer, continuation lines included, is abandoned); the target must
//            come back with a fresh prompt, else the session is closed (fail closed);
//   review → a notice with the approval id is printed and the Enter waits for the operator
//            (Ctrl-C from the agent abandons the wait); refused → cancelled as for deny.
// A line the shell cannot run yet (open quote, `for` without `done`, here-document) is forwarded
// as a continuation and decided together with the following lines once it is complete.
// Pastes: several lines in one read are decided line by line before any line is sent; if one is
// refused nothing of the paste runs. (When the pasted lines contain editing keys, they are taken
// one at a time through the screen instead.) Bracketed-paste markers are dropped so the shell
// treats a paste as typed lines. Ctrl-O (operate-and-get-next) is sent as a plain Enter.
// In the alternate screen (vim, less, top) keys pass straight through.
//
// Input is recorded (`i`) per line once the line is done; a line typed with echo off (a password
// prompt) is not recorded — a marker says so — and passed on without an audit event when the
// policy would allow it as a command (else it is decided like any line).
//
// Limits: a shell key binding that runs the line with another key (`bind '"\C-t": accept-line'`)
// is not held. With prompt marks the bastion sees the command start without its Enter and closes
// the session (after the fact); without marks (remote targets) it goes unnoticed — policies
// should deny `bind` where that matters. Output a background job prints into the line being
// typed is covered by deciding every reading of the line (linetracker.ts).
import { StringDecoder } from 'node:string_decoder';
import { isIncomplete } from './incomplete.js';
import type { GateResult } from './gate.js';
import type { LineTracker } from './linetracker.js';

export interface TerminalHost {
  tracker: LineTracker;
  /** Bytes to the target. */
  send(s: string): void;
  /** Lines to show the agent inline (already masked). */
  notice(lines: string[]): Promise<void>;
  /** Decide (and hold) one command line; `others` are alternative readings of it. `abort` ends a hold. */
  decide(command: string, others: string[], abort: AbortSignal): Promise<GateResult>;
  /** Would the policy allow this command line (a pure check: no audit event)? */
  wouldAllow(command: string): boolean;
  /** Keystrokes for the recording (masked there). */
  recordInput(s: string): void;
  marker(label: string): void;
  /** An internal error: the session ends (fail closed). */
  fail(e: unknown): void;
  /** The target cannot be brought back to a known state: end the session with this message. */
  abandon(message: string): void;
}

interface Line {
  text: string;
  enter: string;
}

type Reading = { kind: 'empty' } | { kind: 'hidden'; typed: string } | { kind: 'line'; primary: string; others: string[] };

// eslint-disable-next-line no-control-regex -- Enter keys (CR, LF, Ctrl-O)
const ENTER = /\r\n|\r|\n|\x0f/g;
// eslint-disable-next-line no-control-regex -- bracketed-paste markers
const PASTE_MARKERS = /\x1b\[20[01]~/g;
// eslint-disable-next-line no-control-regex -- the start of a marker at the end of a read
const PARTIAL_MARKER = /\x1b(\[(2(0[01]?)?)?)?$/;
const INPUT_FLUSH = 4096;
/** End of line, kill line, interrupt. */
const CANCEL = '\x05\x15\x03';

/** Plain typing: printable characters only (a paste of ordinary lines). */
function isPlain(s: string): boolean {
  // eslint-disable-next-line no-control-regex -- looking for control characters
  return !/[\x00-\x1f\x7f]/.test(s);
}

export class TerminalLines {
  private queue: Promise<void> = Promise.resolve();
  private readonly decoder = new StringDecoder('utf8');
  /** Continuation lines already forwarded with their Enter (the shell shows PS2). */
  private pending: string | null = null;
  private inputBuf = '';
  private holdAbort: AbortController | null = null;
  private closed = false;
  private carry = '';
  private carryTimer: NodeJS.Timeout | null = null;
  /** The last bytes sent to the target. */
  private sentTail = '';

  constructor(private readonly h: TerminalHost) {
    h.tracker.onUnheldRun = () => {
      if (this.closed) return;
      this.closed = true;
      this.h.marker('command started without an Enter (a rebound key?)');
      this.h.abandon('the shell started a command that was not entered with Enter (a rebound key?); closing the session (fail closed)');
    };
  }

  /** Bytes from the agent. */
  input(b: Buffer): void {
    if (this.closed) return;
    if (this.holdAbort && b.includes(0x03)) this.holdAbort.abort();
    let s = this.carry + this.decoder.write(b);
    this.carry = '';
    if (this.carryTimer) clearTimeout(this.carryTimer);
    this.carryTimer = null;
    // a bracketed-paste marker split over two reads is put back together so it can be dropped
    // (not a safety boundary: in paste mode every forwarded line was still decided, and a refusal
    // interrupts the shell, which abandons a paste too)
    const partial = PARTIAL_MARKER.exec(s);
    if (partial) {
      this.carry = partial[0];
      s = s.slice(0, partial.index);
      this.carryTimer = setTimeout(() => {
        const c = this.carry;
        this.carry = '';
        if (c) this.enqueue(c);
      }, 30);
      this.carryTimer.unref();
    }
    if (s) this.enqueue(s);
  }

  private enqueue(s: string): void {
    if (this.closed) return;
    this.queue = this.queue.then(() => this.handle(s)).catch((e: unknown) => this.h.fail(e));
  }

  close(): void {
    this.closed = true;
    if (this.carryTimer) clearTimeout(this.carryTimer);
    this.holdAbort?.abort();
    this.flushInput();
  }

  private flushInput(): void {
    if (this.inputBuf) this.h.recordInput(this.inputBuf);
    this.inputBuf = '';
  }

  private async handle(raw: string): Promise<void> {
    if (this.closed) return;
    const t = this.h.tracker;
    if (t.altScreen) {
      this.flushInput();
      this.send(raw);
      this.h.recordInput(raw);
      return;
    }
    const s = this.unmark(raw);
    const lines: Line[] = [];
    let last = 0;
    for (const m of s.matchAll(ENTER)) {
      lines.push({ text: s.slice(last, m.index), enter: m[0] === '\x0f' ? '\r' : m[0] });
      last = (m.index ?? 0) + m[0].length;
    }
    const tail = s.slice(last);
    if (lines.length === 0) {
      await this.keys(tail);
      return;
    }
    const ok = lines.slice(1).every((l) => isPlain(l.text)) ? await this.paste(lines) : await this.oneByOne(lines);
    if (ok) await this.keys(tail);
  }

  /**
   * Drop bracketed-paste markers, also one completed by bytes already sent: whatever the timing,
   * the shell never switches to paste mode (where Enter does not run the line and our cancel keys
   * would be taken literally).
   */
  private unmark(raw: string): string {
    const tail = this.sentTail;
    const all = tail + raw;
    let out = '';
    let at = tail.length;
    for (const m of all.matchAll(PASTE_MARKERS)) {
      const end = (m.index ?? 0) + m[0].length;
      if (end <= tail.length) continue;
      out += all.slice(at, Math.max(at, m.index ?? 0));
      at = end;
    }
    return out + all.slice(at);
  }

  /** Every byte to the target goes here (keeps the tail unmark() looks at). */
  private send(s: string): void {
    this.sentTail = (this.sentTail + s).slice(-8);
    this.h.send(s);
  }

  private async keys(text: string): Promise<void> {
    if (!text) return;
    const t = this.h.tracker;
    if (t.altScreen) {
      this.send(text);
      this.h.recordInput(text);
      return;
    }
    if (t.awaiting) await t.beginLine();
    this.send(text);
    t.sent(text);
    this.inputBuf += text;
    if (this.inputBuf.length > INPUT_FLUSH) this.flushInput();
  }

  private async readScreen(): Promise<Reading> {
    const t = this.h.tracker;
    await t.settle();
    const r = t.read();
    if (r.hidden) {
      // printable keys went in, nothing shows: echo is off. At the shell's own prompt that is a
      // command typed blind; elsewhere most likely a password (see hidden())
      if (t.marks && t.atPrompt) return { kind: 'line', primary: r.typed ?? '', others: [] };
      return { kind: 'hidden', typed: r.typed ?? '' };
    }
    if (!r.primary.trim() && this.pending === null && (r.typed === null || !r.typed.trim())) return { kind: 'empty' };
    return { kind: 'line', primary: r.primary, others: r.others };
  }

  /**
   * A line typed with echo off. A password is what the program is after, normally: it is passed on
   * without an audit event, and not recorded (a marker says so) — as long as the policy would
   * allow it as a command. Otherwise it is decided (and audited) like any line: typing a command
   * blind (`stty -echo`, then a shell that does not echo) does not get around the policy.
   */
  private async hidden(typed: string, enter: string, dropped: number): Promise<boolean> {
    const full = this.join(typed);
    if (typed.trim() && this.h.wouldAllow(full)) {
      this.inputBuf = '';
      this.h.marker('input hidden (echo off)');
      this.pending = null;
      this.forwardEnter(enter);
      return true;
    }
    const res = await this.decide(full, []);
    this.inputBuf = '';
    if (res.run) {
      this.pending = null;
      this.forwardEnter(enter);
      return true;
    }
    await this.refuse(res.notice, dropped);
    return false;
  }

  private forwardEnter(enter: string): void {
    this.h.tracker.lineDone();
    this.inputBuf += enter;
    this.flushInput();
    this.send(enter);
  }

  private join(text: string): string {
    return this.pending === null ? text : `${this.pending}\n${text}`;
  }

  /** Keys with editing in them: each line typed, read off the screen and decided in turn. */
  private async oneByOne(lines: Line[]): Promise<boolean> {
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i]!;
      await this.keys(l.text);
      const r = await this.readScreen();
      if (r.kind === 'empty') {
        this.forwardEnter(l.enter);
        continue;
      }
      if (r.kind === 'hidden') {
        if (await this.hidden(r.typed, l.enter, lines.length - 1 - i)) continue;
        return false;
      }
      const full = this.join(r.primary);
      if (isIncomplete(full)) {
        this.pending = full;
        this.forwardEnter(l.enter);
        continue;
      }
      const res = await this.decide(full, r.others.map((o) => this.join(o)));
      if (res.run) {
        this.pending = null;
        this.forwardEnter(l.enter);
        continue;
      }
      await this.refuse(res.notice, lines.length - 1 - i);
      return false;
    }
    return true;
  }

  /**
   * Plain lines after the first: every line is decided before any is sent. The first line is read
   * off the screen (it may continue what was typed before); the others are taken as written.
   */
  private async paste(lines: Line[]): Promise<boolean> {
    const first = lines[0]!;
    await this.keys(first.text);
    const r = await this.readScreen();
    const rest = lines.slice(1);
    if (r.kind === 'hidden') {
      if (!(await this.hidden(r.typed, first.enter, rest.length))) return false;
      if (rest.length === 0) return true;
      await this.waitPrompt();
      return this.paste(rest);
    }
    // group lines into complete commands (continuations joined) and decide each in order
    type Group = { command: string; others: string[]; until: number };
    const groups: Group[] = [];
    let acc: string | null = this.pending;
    let accOthers: string[] = [];
    const all = [first, ...rest];
    for (let i = 0; i < all.length; i++) {
      let text: string;
      let others: string[] = [];
      if (i === 0) {
        if (r.kind === 'empty') {
          groups.push({ command: '', others: [], until: 0 });
          continue;
        }
        text = r.primary;
        others = r.others;
      } else text = all[i]!.text;
      const full = acc === null ? text : `${acc}\n${text}`;
      const fullOthers = [...accOthers.map((o) => `${o}\n${text}`), ...others.map((o) => (acc === null ? o : `${acc}\n${o}`))];
      if (!full.trim()) {
        groups.push({ command: '', others: [], until: i });
        continue;
      }
      if (isIncomplete(full)) {
        acc = full;
        accOthers = fullOthers;
        continue;
      }
      groups.push({ command: full, others: fullOthers, until: i });
      acc = null;
      accOthers = [];
    }
    for (const g of groups) {
      if (!g.command) continue;
      const res = await this.decide(g.command, g.others);
      if (!res.run) {
        const notSent = all.length - 1;
        const lines2 = [...res.notice, ...(notSent > 0 ? [`portcullis: nothing of the pasted ${all.length} lines was run`] : [])];
        await this.refuse(lines2, 0);
        this.pending = null;
        return false;
      }
    }
    // all decided: send them, each after the shell is back at its prompt
    this.forwardEnter(first.enter);
    this.pending = acc;
    for (const l of all.slice(1)) {
      await this.waitPrompt();
      await this.keys(l.text);
      this.forwardEnter(l.enter);
    }
    return true;
  }

  private async decide(command: string, others: string[]): Promise<GateResult> {
    const ctl = new AbortController();
    this.holdAbort = ctl;
    try {
      return await this.h.decide(command, others, ctl.signal);
    } finally {
      this.holdAbort = null;
    }
  }

  /**
   * Refuse the line being edited: the reason is printed, then the line is cancelled at the target
   * (Ctrl-E Ctrl-U, then Ctrl-C, which abandons the whole buffer in any editing mode), and the
   * target must show a fresh prompt; if it does not (interrupts disabled with `stty -isig`, a
   * program that ignores them), the text may still sit in its buffer: the session is ended.
   */
  private async refuse(notice: string[], dropped: number): Promise<void> {
    const t = this.h.tracker;
    this.pending = null;
    const lines = dropped > 0 ? [...notice, `portcullis: the ${dropped} line(s) typed after it were not sent`] : notice;
    await this.h.notice(lines);
    this.flushInput();
    const row = t.cursorRow();
    t.lineDone();
    this.send(CANCEL);
    if (!(await t.freshPrompt(row))) {
      this.closed = true;
      this.h.abandon('the refused line could not be cancelled at the target (no fresh prompt after Ctrl-C); closing the session (fail closed)');
    }
  }

  /** After an Enter: wait for the next prompt (prompt marks), or for the output to settle. */
  private async waitPrompt(): Promise<void> {
    const t = this.h.tracker;
    if (!t.marks) {
      await t.settle();
      return;
    }
    const t0 = Date.now();
    while (!t.atPrompt && Date.now() - t0 < 3000 && !this.closed) await new Promise((r) => setTimeout(r, 5));
    await t.settle();
  }
}
