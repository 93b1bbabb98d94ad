// Approval notifications: a JSON POST to `approvals.webhook.url` when an approval is created, gets
// a vote (two-person rule) or is decided — for Slack-style integrations (`text` is a one-line
// summary). With a secret, the body is signed: `X-Portcullis-Signature: sha256=<hex HMAC>`.
// Delivery is best effort and never blocks a hold: bounded retries with exponential backoff, a
// bounded queue, failures logged (the URL's credentials and query are never logged).
import { createHmac, randomUUID } from 'node:crypto';
import type { ApprovalRecord } from '../store/types.js';
import type { Approvals } from './approvals.js';
import type { Logger } from './log.js';

export interface WebhookConfig {
  url: string;
  /** HMAC-SHA256 key for X-Portcullis-Signature. */
  secret?: string;
}

export interface WebhookOptions {
  /** Attempts per notification (default 5). */
  attempts?: number;
  /** First retry delay, ms; doubled each retry (default 500). */
  backoffMs?: number;
  /** Per-attempt timeout, ms (default 5000). */
  timeoutMs?: number;
  /** Notifications waiting for delivery beyond this are dropped (logged). Default 1000. */
  maxQueue?: number;
}

export type WebhookEvent = 'approval.created' | 'approval.vote' | 'approval.decided';

function describe(a: ApprovalRecord): string {
  const r = a.request as { sql?: string; command?: string; http?: { method?: string; path?: string } };
  const what = r.sql ?? r.command ?? (r.http ? `${r.http.method ?? ''} ${r.http.path ?? ''}` : '');
  return what.replace(/\s+/g, ' ').slice(0, 200);
}

function summary(event: WebhookEvent, a: ApprovalRecord): string {
  const who = `${a.identity.subject} → ${a.target ?? '?'} (${a.protocol ?? '?'})`;
  if (event === 'approval.created') {
    return `portcullis: ${who} asks to run \`${describe(a)}\` (${a.rule}: ${a.reason})${a.justification ? `; reason: ${a.justification}` : ''}. Approve: portcullis approve ${a.id}`;
  }
  if (event === 'approval.vote') return `portcullis: approval ${a.id} has ${a.voteCount ?? 0} of ${a.required ?? 1} approvals (${who})`;
  return `portcullis: approval ${a.id} ${a.state}${a.decidedBy ? ` by ${a.decidedBy}` : ''} (${who})`;
}

/** The payload's view of an approval: what an approver sees (the request is already masked). */
function view(a: ApprovalRecord): Record<string, unknown> {
  return {
    id: a.id,
    state: a.state,
    identity: { subject: a.identity.subject, groups: a.identity.groups },
    target: a.target ?? null,
    protocol: a.protocol ?? null,
    request: a.request,
    rule: a.rule,
    reason: a.reason,
    justification: a.justification ?? null,
    createdAt: new Date(a.createdAt).toISOString(),
    expiresAt: new Date(a.expiresAt).toISOString(),
    required: a.required ?? 1,
    approvers: (a.votes ?? []).map((v) => v.by),
    ...(a.decidedBy ? { decidedBy: a.decidedBy, decisionReason: a.decisionReason ?? null } : {}),
    ...(a.scope ? { scope: a.scope, validUntil: a.validUntil ? new Date(a.validUntil).toISOString() : null } : {}),
    ...(a.recordingOffset !== undefined ? { session: a.session ?? null, recordingOffset: a.recordingOffset } : {}),
  };
}

function safeUrl(u: string): string {
  try {
    const x = new URL(u);
    return `${x.protocol}//${x.host}${x.pathname}`;
  } catch {
    return '(invalid url)';
  }
}

export class ApprovalWebhook {
  private queue: { event: WebhookEvent; body: string; id: string }[] = [];
  private running = false;
  private stopped = false;
  private readonly abort = new AbortController();
  private idle: Promise<void> = Promise.resolve();
  private wake: (() => void) | null = null;
  private readonly o: Required<WebhookOptions>;
  private readonly listeners: [keyof ApprovalEventsMap, (a: ApprovalRecord) => void][];

  constructor(
    private readonly approvals: Approvals,
    private readonly cfg: WebhookConfig,
    private readonly log: Logger,
    opts: WebhookOptions = {},
  ) {
    this.o = { attempts: opts.attempts ?? 5, backoffMs: opts.backoffMs ?? 500, timeoutMs: opts.timeoutMs ?? 5000, maxQueue: opts.maxQueue ?? 1000 };
    this.listeners = [
      ['created', (a) => this.notify('approval.created', a)],
      ['voted', (a) => this.notify('approval.vote', a)],
      ['decided', (a) => this.notify('approval.decided', a)],
    ];
    for (const [ev, fn] of this.listeners) approvals.on(ev, fn);
  }

  notify(event: WebhookEvent, a: ApprovalRecord): void {
    if (this.stopped) return;
    if (this.queue.length >= this.o.maxQueue) {
      this.log.warn('approval webhook: queue full, notification dropped', { event, approval: a.id });
      return;
    }
    const id = randomUUID();
    const body = JSON.stringify({ type: event, id, time: new Date().toISOString(), text: summary(event, a), approval: view(a) });
    this.queue.push({ event, body, id });
    if (!this.running) {
      this.running = true;
      this.idle = this.drain();
    }
  }

  private async drain(): Promise<void> {
    try {
      while (!this.stopped && this.queue.length > 0) {
        const item = this.queue.shift()!;
        await this.deliver(item);
      }
    } finally {
      this.running = false;
    }
  }

  private async deliver(item: { event: WebhookEvent; body: string; id: string }): Promise<void> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'portcullis-webhook/1',
      'x-portcullis-event': item.event,
      'x-portcullis-delivery': item.id,
    };
    if (this.cfg.secret) headers['x-portcullis-signature'] = `sha256=${createHmac('sha256', this.cfg.secret).update(item.body).digest('hex')}`;
    let last = '';
    for (let attempt = 1; attempt <= this.o.attempts && !this.stopped; attempt++) {
      try {
        const res = await fetch(this.cfg.url, { method: 'POST', headers, body: item.body, signal: AbortSignal.any([AbortSignal.timeout(this.o.timeoutMs), this.abort.signal]), redirect: 'error' });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) return;
        last = `HTTP ${res.status}`;
        // A client error other than 408/429 will not get better by retrying.
        if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) break;
      } catch (e) {
        last = (e as Error).name === 'TimeoutError' ? `no answer within ${this.o.timeoutMs} ms` : String((e as Error).cause ?? (e as Error).message);
      }
      if (attempt < this.o.attempts && !this.stopped) await this.sleep(this.o.backoffMs * 2 ** (attempt - 1));
    }
    if (!this.stopped) this.log.warn('approval webhook: delivery failed', { event: item.event, delivery: item.id, url: safeUrl(this.cfg.url), error: last, attempts: this.o.attempts });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = null;
        resolve();
      };
    });
  }

  /** Wait until the queue is empty (tests, shutdown). */
  async flush(): Promise<void> {
    while (this.running) await this.idle;
  }

  /** Stop delivering (pending notifications are dropped). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const [ev, fn] of this.listeners) this.approvals.off(ev, fn);
    this.abort.abort();
    this.wake?.();
    await this.idle.catch(() => undefined);
  }
}

type ApprovalEventsMap = { created: unknown; voted: unknown; decided: unknown };
