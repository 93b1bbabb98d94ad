// Live view of one session, read-only: the terminal as the agent sees it (a headless xterm fed by
// session.watch: the recording so far, then live output), or for PostgreSQL sessions the
// statements as they finish; below it the decisions as they are made, a held request with its
// approval id. a/d approve or deny this session's held request; k kills the session.
import blessed from 'blessed';
import type { Widgets } from 'blessed';
import type { Subscribed } from '../../src/control/client.js';
import type { ApprovalView, DecisionEvent, SessionView, WatchReplay } from '../../src/control/protocol.js';
import { requestText } from '../../src/control/protocol.js';
import type { AuditEvent } from '../../src/core/audit-common.js';
import type { App, Key, View } from '../app.js';
import { HeadlessTerm } from '../term.js';
import { clock, duration, escapeTags, fit, shortRule } from '../text.js';

interface Line {
  at: number;
  effect: string;
  text: string;
  rule: string;
}

const COLORS: Record<string, string> = { allow: 'green', deny: 'red', review: 'yellow', held: 'yellow', approved: 'green', denied: 'red', expired: 'red' };

export class LiveView implements View {
  readonly title: string;
  readonly hints = 'a approve  d deny  k kill';
  readonly help: [string, string][] = [
    ['a / d', "approve / deny this session's held request (asks for a reason)"],
    ['k', 'kill this session (asks first)'],
    ['Esc', 'back to the list'],
  ];
  private info: Widgets.BoxElement | null = null;
  private screenBox: Widgets.BoxElement | null = null;
  private decisionsBox: Widgets.BoxElement | null = null;
  private term = new HeadlessTerm(80, 24);
  private hasCast = false;
  private statements: string[] = [];
  private decisions: Line[] = [];
  private pending: ApprovalView[] = [];
  private sub: Subscribed | null = null;
  private ended = '';
  private epoch = 0;

  constructor(
    private readonly app: App,
    private session: SessionView,
  ) {
    this.title = `live ${session.id.slice(0, 8)}`;
  }

  mount(body: Widgets.BoxElement): void {
    this.info = blessed.box({ parent: body, top: 0, left: 0, width: '100%', height: 1, tags: true });
    this.screenBox = blessed.box({ parent: body, top: 1, left: 0, width: '100%', height: '100%-8', border: { type: 'line' }, tags: true, style: { border: { fg: 'cyan' } } });
    this.decisionsBox = blessed.box({ parent: body, bottom: 0, left: 0, width: '100%', height: 7, border: { type: 'line' }, label: ' decisions ', tags: true });
  }

  unmount(): void {
    void this.sub?.cancel();
    this.sub = null;
    for (const b of [this.info, this.screenBox, this.decisionsBox]) b?.destroy();
    this.info = this.screenBox = this.decisionsBox = null;
  }

  up(): void {
    void this.subscribe();
  }

  private async subscribe(): Promise<void> {
    const epoch = ++this.epoch;
    void this.sub?.cancel();
    this.sub = null;
    try {
      this.sub = await this.app.conn.subscribe('session.watch', { id: this.session.id }, (name, data) => {
        if (epoch === this.epoch) this.onWatch(name, data);
      }, (reason) => {
        if (epoch !== this.epoch) return;
        if (!this.ended) this.ended = reason;
        this.app.render();
      });
      this.ended = '';
    } catch (e) {
      this.ended = (e as Error).message;
    }
    // Earlier decisions of the session (the replay has the screen, the audit log the decisions).
    try {
      const evs = await this.app.conn.call<AuditEvent[]>('audit.search', { session: this.session.id, type: 'request', limit: 20 });
      if (epoch === this.epoch) {
        const known = new Set(this.decisions.map((d) => `${d.at}|${d.text}`));
        const earlier = evs.map((e) => ({ at: Date.parse(e.time), effect: e.decision?.effect ?? '?', text: requestText(e.request), rule: e.decision?.rule ?? '' })).filter((d) => !known.has(`${d.at}|${d.text}`));
        this.decisions = [...earlier, ...this.decisions].sort((a, b) => a.at - b.at).slice(-200);
      }
      const pend = await this.app.conn.call<ApprovalView[]>('approvals.list', { state: 'pending' });
      if (epoch === this.epoch) this.pending = pend.filter((a) => a.session === this.session.id);
    } catch {
      // the header shows the connection state
    }
    this.app.render();
  }

  private onWatch(name: string, data: unknown): void {
    if (name === 'watch.replay') {
      const r = data as WatchReplay;
      this.session = r.session;
      this.statements = [];
      if (r.cast) {
        this.hasCast = true;
        this.term.reset(r.cast.header.width, r.cast.header.height);
        let buf = '';
        for (const [, code, d] of r.cast.events) {
          if (code === 'o') buf += d;
          else if (code === 'r') {
            void this.term.write(buf);
            buf = '';
            const [c, rr] = d.split('x').map(Number);
            this.term.resize(c!, rr!);
          }
        }
        void this.term.write(buf).then(() => this.app.render());
      }
      for (const e of r.transcript ?? []) if (e.type === 'statement') this.statements.push(this.statementLine(e));
    } else if (name === 'session.output') {
      this.hasCast = true;
      void this.term.write((data as { data: string }).data).then(() => this.app.render());
    } else if (name === 'session.resize') {
      const r = data as { cols: number; rows: number };
      this.term.resize(r.cols, r.rows);
    } else if (name === 'request.decided') {
      const d = data as DecisionEvent;
      this.decisions.push({ at: d.at, effect: d.decision.effect, text: requestText(d.request), rule: d.decision.rule });
      if (this.decisions.length > 200) this.decisions.shift();
    } else if (name === 'session.statement') {
      this.statements.push(this.statementLine(data as Record<string, unknown>));
      if (this.statements.length > 1000) this.statements.shift();
    } else if (name === 'approval.created') {
      // (the app rings the bell for every new approval)
      this.pending.push(data as ApprovalView);
    } else if (name === 'approval.decided') {
      const a = data as ApprovalView;
      this.pending = this.pending.filter((p) => p.id !== a.id);
      this.decisions.push({ at: a.decidedAt ?? Date.now(), effect: a.state, text: `approval ${a.id} ${a.state} by ${a.decidedBy ?? '?'}${a.decisionReason ? `: ${a.decisionReason}` : ''}`, rule: a.rule });
    } else if (name === 'session.closed') {
      this.ended = `session ended: ${(data as { reason?: string }).reason ?? ''}`;
    }
    this.app.render();
  }

  private statementLine(e: Record<string, unknown>): string {
    const d = (e.decision ?? {}) as { effect?: string };
    const err = e.error as { message?: string } | undefined;
    const stmt = String(e.statement ?? '').replace(/\s+/g, ' ');
    const tail = err ? `  → ERROR ${err.message ?? ''}` : typeof e.rows === 'number' ? `  → ${e.rows} rows` : '';
    return `${clock(String(e.time ?? ''))} ${(d.effect ?? '?').toUpperCase().padEnd(6)} ${stmt}${tail}`;
  }

  event(name: string, data: unknown): void {
    // Approvals decided elsewhere (CLI, another console) also leave this session's list.
    if (name === 'approval.decided') this.pending = this.pending.filter((p) => p.id !== (data as ApprovalView).id);
  }

  key(ch: string | undefined, _key: Key): boolean {
    if (ch === 'a' || ch === 'd') {
      const a = this.pending[this.pending.length - 1];
      if (!a) {
        this.app.flash('this session has no held request');
        return true;
      }
      this.app.decideWithReason(a, ch === 'a' ? 'approved' : 'denied');
      return true;
    }
    if (ch === 'k') {
      this.app.ask(`kill session ${this.session.id.slice(0, 8)}? type y to confirm: `, (v) => {
        if (v.toLowerCase() !== 'y' && v.toLowerCase() !== 'yes') return this.app.flash('not killed');
        this.app.conn.call('session.kill', { id: this.session.id, reason: 'from the console' }).then(
          () => this.app.flash('session killed'),
          (e: Error) => this.app.flash(`kill failed: ${e.message}`, true),
        );
      });
      return true;
    }
    return false;
  }

  render(): void {
    if (!this.info || !this.screenBox || !this.decisionsBox) return;
    const s = this.session;
    const state = this.ended ? `{red-fg}${escapeTags(this.ended)}{/red-fg}` : `{green-fg}live{/green-fg} ${duration(Date.now() - s.openedAt)}`;
    this.info.setContent(` ${escapeTags(`${s.identity.subject} → ${s.target} (${s.protocol})  ${s.id}`)}  ${state}`);
    const w = (this.screenBox.width as number) - 3; // see Table.innerWidth
    const h = (this.screenBox.height as number) - 2;
    if (this.hasCast || s.protocol === 'ssh') {
      const { lines, cropped } = this.term.render(w, h, !this.ended);
      this.screenBox.setLabel(` terminal ${this.term.cols}x${this.term.rows}${cropped ? ' (cropped to fit)' : ''} — read-only `);
      this.screenBox.setContent(lines.join('\n'));
    } else {
      this.screenBox.setLabel(` statements (${this.statements.length}) `);
      this.screenBox.setContent(this.statements.slice(-h).map((l) => escapeTags(fit(l, w))).join('\n') || 'no statements yet');
    }
    const dw = (this.decisionsBox.width as number) - 3;
    const dh = (this.decisionsBox.height as number) - 2;
    const lines: string[] = [];
    for (const a of this.pending) {
      lines.push(`{yellow-fg}{bold}${escapeTags(fit(`HELD ${a.id}: ${requestText(a.request)} (${shortRule(a.rule)}) — a approve, d deny`, dw))}{/bold}{/yellow-fg}`);
    }
    for (const d of this.decisions.slice(-Math.max(0, dh - lines.length))) {
      const c = COLORS[d.effect] ?? 'white';
      lines.push(`${clock(d.at)} {${c}-fg}${escapeTags(d.effect.toUpperCase().padEnd(8))}{/${c}-fg} ${escapeTags(fit(`${d.text}${d.effect !== 'allow' && d.rule ? `  [${shortRule(d.rule)}]` : ''}`, Math.max(1, dw - 18)))}`);
    }
    this.decisionsBox.setContent(lines.slice(0, dh).join('\n') || 'no decisions yet');
  }
}
