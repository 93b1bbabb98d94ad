// The console application: one blessed screen, a stack of views (sessions, live view, approvals,
// recordings, replay, audit), one keymap everywhere (k9s-like):
//   ?  help        /  filter (audit: search)     :  command (:sessions :approvals :recordings
//   Esc back       q  quit                           :audit :approve ID :deny ID :kill ID :quit)
//   1-4 jump to sessions/approvals/recordings/audit; ↑↓ PgUp PgDn Home End move.
// A header shows the connection and the pending approvals; a new approval rings the bell.
import blessed from 'blessed';
import type { Widgets } from 'blessed';
import type { ApprovalView } from '../src/control/protocol.js';
import { Connection } from './conn.js';
import { escapeTags, shortRule, wrap } from './text.js';

export interface Key {
  name?: string;
  full?: string;
  ctrl?: boolean;
  shift?: boolean;
}

export interface View {
  readonly title: string;
  /** This view's own keys, for the footer. */
  readonly hints: string;
  /** This view's own keys, for the help screen. */
  readonly help: [string, string][];
  mount(body: Widgets.BoxElement): void;
  unmount(): void;
  render(): void;
  key(ch: string | undefined, key: Key): boolean;
  /** `/`: filter (or search) text; absent when the view has no filter. */
  setFilter?(text: string): void;
  filterText?(): string;
  filterLabel?: string;
  /** The connection (re)opened: fetch data, subscribe again. */
  up?(): void;
  /** A core event (events.subscribe). */
  event?(name: string, data: unknown): void;
}

export type ViewFactory = (app: App) => View;

interface Prompt {
  label: string;
  value: string;
  submit(v: string): void;
  cancel?(): void;
}

export const GLOBAL_HELP: [string, string][] = [
  ['?', 'this help (any key closes it)'],
  ['/', 'filter the list (audit: search, e.g. subject=demo-agent effect=deny since=1h text)'],
  [':', 'command: sessions, approvals, recordings, audit, approve ID, deny ID, kill ID, quit'],
  ['Esc', 'back (or clear the filter)'],
  ['q, Ctrl-C', 'quit'],
  ['1 2 3 4', 'sessions, approvals, recordings, audit'],
  ['↑ ↓ PgUp PgDn Home End', 'move'],
  ['Enter', 'open the selected item'],
];

export class App {
  readonly screen: Widgets.Screen;
  readonly conn: Connection;
  private readonly header: Widgets.BoxElement;
  private readonly body: Widgets.BoxElement;
  private readonly status: Widgets.BoxElement;
  private readonly footer: Widgets.BoxElement;
  private helpBox: Widgets.BoxElement | null = null;
  private stack: View[] = [];
  private prompt: Prompt | null = null;
  private msg: { text: string; error: boolean; until: number } | null = null;
  private renderQueued = false;
  private ticker: NodeJS.Timeout;
  private done!: (code: number) => void;
  private pendingIds = new Set<string>();
  private readonly roots: Record<string, ViewFactory>;

  constructor(socket: string, roots: Record<'sessions' | 'approvals' | 'recordings' | 'audit', ViewFactory>) {
    this.roots = roots;
    this.conn = new Connection(socket);
    this.screen = blessed.screen({ smartCSR: true, fullUnicode: true, forceUnicode: true, autoPadding: false, warnings: false, title: 'Portcullis console', dockBorders: true });
    // UTF-8 line drawing rather than the terminal's alternate character set (which terminal
    // multiplexers and captures often show as letters).
    (this.screen as unknown as { tput: { brokenACS: boolean } }).tput.brokenACS = true;
    this.header = blessed.box({ parent: this.screen, top: 0, left: 0, width: '100%', height: 1, tags: true, style: { fg: 'white', bg: 'blue' } });
    this.body = blessed.box({ parent: this.screen, top: 1, left: 0, width: '100%', height: '100%-3' });
    this.status = blessed.box({ parent: this.screen, bottom: 1, left: 0, width: '100%', height: 1, tags: true });
    this.footer = blessed.box({ parent: this.screen, bottom: 0, left: 0, width: '100%', height: 1, tags: true, style: { fg: 'black', bg: 'white' } });
    this.screen.on('keypress', (ch: string | undefined, key: Key) => this.onKey(ch, key ?? {}));
    this.screen.on('resize', () => this.render());
    this.conn.on('up', () => {
      this.flash(`connected to ${this.conn.socket} as ${this.conn.operator?.user ?? '?'}`);
      void this.refreshPending();
      for (const v of this.stack) v.up?.();
      this.render();
    });
    this.conn.on('down', (why) => {
      this.flash(`disconnected (${why}); reconnecting…`, true);
      this.render();
    });
    this.conn.on('fatal', (why) => this.quit(1, `portcullis console: ${why}\n`));
    this.conn.on('event', (name, data) => this.onEvent(name, data));
    // Durations, countdowns and messages age: redraw every second.
    this.ticker = setInterval(() => this.render(), 1000);
  }

  run(first: 'sessions' | 'approvals' | 'recordings' | 'audit' = 'sessions'): Promise<number> {
    const p = new Promise<number>((resolve) => (this.done = resolve));
    this.go(first);
    this.conn.start();
    this.render();
    return p;
  }

  // ------------------------------------------------------------------ views

  get view(): View | undefined {
    return this.stack[this.stack.length - 1];
  }

  push(v: View): void {
    this.view?.unmount();
    this.stack.push(v);
    v.mount(this.body);
    if (this.conn.state === 'up') v.up?.();
    this.render();
  }

  back(): void {
    if (this.stack.length <= 1) return;
    this.stack.pop()?.unmount();
    const v = this.view!;
    v.mount(this.body);
    if (this.conn.state === 'up') v.up?.();
    this.render();
  }

  /** Switch to a top-level screen (the stack restarts there). */
  go(name: string): boolean {
    const f = this.roots[name];
    if (!f) return false;
    this.view?.unmount();
    this.stack = [];
    this.push(f(this));
    return true;
  }

  // ------------------------------------------------------------------ messages and prompts

  flash(text: string, error = false, ms = 5000): void {
    this.msg = { text, error, until: Date.now() + ms };
    this.render();
  }

  /** Ask for a line of text on the status line; Enter submits, Esc cancels. */
  ask(label: string, submit: (v: string) => void, initial = '', cancel?: () => void): void {
    this.prompt = { label, value: initial, submit, ...(cancel ? { cancel } : {}) };
    this.render();
  }

  bell(): void {
    this.screen.program.bell();
  }

  get pendingApprovals(): number {
    return this.pendingIds.size;
  }

  private async refreshPending(): Promise<void> {
    try {
      const list = await this.conn.call<ApprovalView[]>('approvals.list', { state: 'pending' });
      this.pendingIds = new Set(list.map((a) => a.id));
      this.render();
    } catch {
      // shown by the views
    }
  }

  private onEvent(name: string, data: unknown): void {
    if (name === 'approval.created') {
      const a = data as ApprovalView;
      if (a.state === 'pending') this.pendingIds.add(a.id);
      this.bell();
      this.flash(`new approval ${a.id}: ${a.identity?.subject ?? '?'} → ${a.target ?? '?'} (${shortRule(a.rule)}) — press 2`);
    } else if (name === 'approval.decided') {
      this.pendingIds.delete((data as ApprovalView).id);
    }
    for (const v of this.stack) v.event?.(name, data);
    this.render();
  }

  // ------------------------------------------------------------------ keys

  private onKey(ch: string | undefined, key: Key): void {
    if (key.full === 'C-c') return this.quit(0);
    if (this.prompt) return this.promptKey(ch, key);
    if (this.helpBox) {
      this.helpBox.destroy();
      this.helpBox = null;
      this.render();
      return;
    }
    if (key.name === 'return') return; // blessed sends 'enter' right after it
    const v = this.view;
    // The view first for keys it owns (a/d/k/space/arrows…); the global keymap is reserved.
    if (ch === '?') return this.showHelp();
    if (ch === 'q') return this.quit(0);
    if (ch === ':') return this.ask(':', (cmd) => this.command(cmd));
    if (ch === '/') {
      if (!v?.setFilter) return this.flash('this screen has no filter');
      return this.ask(v.filterLabel ?? '/', (f) => {
        v.setFilter!(f);
        this.render();
      }, v.filterText?.() ?? '');
    }
    if (key.name === 'escape') {
      if (this.stack.length > 1) return this.back();
      if (v?.filterText?.()) {
        v.setFilter!('');
        return this.render();
      }
      return;
    }
    if (v?.key(ch, key)) return this.render();
    const n = ['1', '2', '3', '4'].indexOf(ch ?? '');
    if (n >= 0) {
      this.go(['sessions', 'approvals', 'recordings', 'audit'][n]!);
    }
  }

  private promptKey(ch: string | undefined, key: Key): void {
    const p = this.prompt!;
    if (key.name === 'return') return;
    if (key.name === 'enter') {
      this.prompt = null;
      p.submit(p.value.trim());
    } else if (key.name === 'escape') {
      this.prompt = null;
      p.cancel?.();
    } else if (key.name === 'backspace') {
      p.value = p.value.slice(0, -1);
    } else if (key.full === 'C-u') {
      p.value = '';
    } else if (ch && !key.ctrl && ch >= ' ' && ch !== '\x7f' && p.value.length < 500) {
      p.value += ch;
    }
    this.render();
  }

  private command(cmd: string): void {
    const [name = '', ...rest] = cmd.split(/\s+/).filter(Boolean);
    const arg = rest.join(' ');
    if (name === '') return;
    if (name === 'q' || name === 'quit') return this.quit(0);
    if (this.go(name) || this.go(name.replace(/s?$/, 's'))) return;
    if (name === 'approve' || name === 'deny') {
      if (!rest[0]) return this.flash(`usage: :${name} ID [reason]`, true);
      const id = rest[0];
      const reason = rest.slice(1).join(' ');
      this.decide(id, name === 'approve' ? 'approved' : 'denied', reason);
      return;
    }
    if (name === 'kill') {
      if (!arg) return this.flash('usage: :kill SESSION', true);
      this.conn.call('session.kill', { id: arg }).then(
        () => this.flash(`session ${arg} killed`),
        (e: Error) => this.flash(`kill failed: ${e.message}`, true),
      );
      return;
    }
    if (name === 'help') return this.showHelp();
    this.flash(`unknown command "${name}" (try :sessions :approvals :recordings :audit :approve ID :deny ID :kill ID :quit)`, true);
  }

  /** Approve or deny over the socket, reporting the outcome on the status line. */
  decide(id: string, decision: 'approved' | 'denied', reason: string): void {
    this.conn.call<ApprovalView>('approval.decide', { id, decision, ...(reason ? { reason } : {}) }).then(
      (rec) => {
        this.pendingIds.delete(id);
        this.flash(`${rec.id} ${rec.state} by ${rec.decidedBy ?? '?'}`);
        for (const v of this.stack) v.event?.('approval.decided', rec);
      },
      (e: Error) => this.flash(`${decision === 'approved' ? 'approve' : 'deny'} ${id} failed: ${e.message}`, true),
    );
  }

  /** Ask for a reason, then approve or deny. */
  decideWithReason(a: ApprovalView, decision: 'approved' | 'denied'): void {
    if (a.state !== 'pending') return this.flash(`${a.id} is already ${a.state}`, true);
    const verb = decision === 'approved' ? 'approve' : 'deny';
    this.ask(`${verb} ${a.id} — reason (Enter ${verb}s, Esc cancels): `, (reason) => this.decide(a.id, decision, reason), '', () => this.flash(`${verb} cancelled`));
  }

  private showHelp(): void {
    const v = this.view;
    const rows = [...(v?.help ?? []), ['', ''] as [string, string], ...GLOBAL_HELP];
    const width = Math.min(100, Math.max(40, (this.screen.width as number) - 4));
    const kw = Math.min(24, Math.max(...rows.map(([k]) => k.length)) + 2);
    const lines = [`{bold}Portcullis console — ${escapeTags(v?.title ?? '')}{/bold}`, ''];
    for (const [k, d] of rows) {
      if (!k && !d) {
        lines.push('');
        continue;
      }
      wrap(d, Math.max(10, width - kw - 3)).forEach((l, i) => lines.push(`{bold}${escapeTags((i === 0 ? k : '').padEnd(kw))}{/bold}${escapeTags(l)}`));
    }
    this.helpBox = blessed.box({
      parent: this.screen,
      top: 'center',
      left: 'center',
      width,
      height: Math.min(lines.length + 2, (this.screen.height as number) - 2),
      border: { type: 'line' },
      label: ' help (any key closes) ',
      tags: true,
      content: lines.join('\n'),
      style: { border: { fg: 'cyan' } },
    });
    this.render();
  }

  // ------------------------------------------------------------------ drawing

  render(): void {
    if (this.renderQueued) return;
    this.renderQueued = true;
    setImmediate(() => {
      this.renderQueued = false;
      this.draw();
    });
  }

  private draw(): void {
    const v = this.view;
    const st = this.conn.state;
    const dot = st === 'up' ? '{green-fg}●{/green-fg}' : st === 'connecting' ? '{yellow-fg}◌{/yellow-fg}' : '{red-fg}○{/red-fg}';
    const who = this.conn.operator ? `${this.conn.operator.user}` : '';
    const pend = this.pendingIds.size ? ` {yellow-fg}{bold}${this.pendingIds.size} pending{/bold}{/yellow-fg}` : '';
    const filter = v?.filterText?.() ? `  [${escapeTags(v.filterLabel ?? '/')}${escapeTags(v.filterText())}]` : '';
    this.header.setContent(`{bold} Portcullis{/bold} │ ${escapeTags(v?.title ?? '')}${filter}${pend}{|}${escapeTags(who)} ${dot} ${st === 'up' ? 'connected' : st === 'connecting' ? 'connecting' : 'reconnecting'} `);
    if (this.prompt) this.status.setContent(`{bold}${escapeTags(this.prompt.label)}{/bold}${escapeTags(this.prompt.value)}█`);
    else if (this.msg && this.msg.until > Date.now()) this.status.setContent(this.msg.error ? `{red-fg}${escapeTags(this.msg.text)}{/red-fg}` : escapeTags(this.msg.text));
    else this.status.setContent(st === 'up' ? '' : `{red-fg}${escapeTags(this.conn.lastError ? `not connected: ${this.conn.lastError}` : 'connecting…')}{/red-fg}`);
    this.footer.setContent(escapeTags(` ${v?.hints ? `${v.hints}  ` : ''}? help  / filter  : cmd  Esc back  q quit`));
    v?.render();
    this.screen.render();
  }

  quit(code: number, message?: string): void {
    clearInterval(this.ticker);
    this.conn.stop();
    for (const v of this.stack) v.unmount();
    this.screen.destroy();
    if (message) process.stderr.write(message);
    this.done?.(code);
  }
}
