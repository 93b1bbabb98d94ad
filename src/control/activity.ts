// What the console shows for each live session besides its SessionInfo: the last request decided
// in it (its "last command") and how many were decided. Fed by the core's event bus.
import type { Core } from '../core/core.js';
import type { CoreEvents } from '../core/events.js';
import { requestText, type SessionView } from './protocol.js';

type Decided = CoreEvents['request.decided'][0];

export class SessionActivity {
  private readonly last = new Map<string, { text: string; effect: string; rule: string; at: number; count: number }>();
  private readonly onDecided = (e: Decided) => {
    const prev = this.last.get(e.session);
    this.last.set(e.session, { text: requestText(e.request).slice(0, 500), effect: e.decision.effect, rule: e.decision.rule, at: Date.now(), count: (prev?.count ?? 0) + 1 });
  };
  private readonly onClosed = (s: { id: string }) => {
    this.last.delete(s.id);
  };

  constructor(private readonly core: Core) {
    core.events.on('request.decided', this.onDecided);
    core.events.on('session.closed', this.onClosed);
  }

  view(id: string): SessionView | null {
    const s = this.core.listSessions().find((x) => x.id === id);
    return s ? this.decorate(s) : null;
  }

  list(): SessionView[] {
    return this.core.listSessions().map((s) => this.decorate(s));
  }

  private decorate(s: ReturnType<Core['listSessions']>[number]): SessionView {
    const l = this.last.get(s.id);
    return { ...s, requests: l?.count ?? 0, ...(l ? { lastRequest: { text: l.text, effect: l.effect, rule: l.rule, at: l.at } } : {}) };
  }

  close(): void {
    this.core.events.off('request.decided', this.onDecided);
    this.core.events.off('session.closed', this.onClosed);
  }
}
