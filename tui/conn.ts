// The console's link to the bastion: a ControlClient that reconnects (1 s, growing to 5 s) when
// the daemon restarts, re-subscribes to the event stream, and tells the screens (`up`) so that
// they fetch their data and their own subscriptions again.
import { EventEmitter } from 'node:events';
import { ControlClient, type Subscribed } from '../src/control/client.js';
import type { OperatorIdentity } from '../src/control/protocol.js';
import { PortcullisError } from '../src/policy/types.js';

interface ConnEvents {
  up: [OperatorIdentity];
  down: [string];
  /** A core event from events.subscribe. */
  event: [string, unknown];
  /** The bastion refuses this user for good (not an operator). */
  fatal: [string];
}

export class Connection extends EventEmitter<ConnEvents> {
  private client: ControlClient | null = null;
  private timer: NodeJS.Timeout | null = null;
  private delay = 1000;
  private stopped = false;
  state: 'connecting' | 'up' | 'down' = 'connecting';
  lastError = '';
  operator: OperatorIdentity | null = null;

  constructor(readonly socket: string) {
    super();
  }

  start(): void {
    void this.attempt();
  }

  private async attempt(): Promise<void> {
    if (this.stopped) return;
    this.timer = null;
    let c: ControlClient;
    try {
      c = await ControlClient.connect(this.socket, process.env.SUDO_USER || undefined, { timeoutMs: 5000 });
    } catch (e) {
      const code = e instanceof PortcullisError ? e.code : '';
      this.lastError = (e as Error).message;
      if (code === 'not_operator') {
        this.state = 'down';
        this.emit('fatal', this.lastError);
        return;
      }
      this.down(this.lastError);
      return;
    }
    if (this.stopped) {
      c.close();
      return;
    }
    this.client = c;
    this.operator = c.operator;
    this.delay = 1000;
    c.onClose((e) => {
      if (this.client !== c) return;
      this.client = null;
      this.down(e.message);
    });
    try {
      await c.subscribe('events.subscribe', {}, (name, data) => this.emit('event', name, data));
    } catch (e) {
      this.lastError = (e as Error).message;
    }
    this.state = 'up';
    this.lastError = '';
    this.emit('up', c.operator as OperatorIdentity);
  }

  private down(why: string): void {
    const was = this.state;
    this.state = 'down';
    this.lastError = why;
    if (was !== 'down' || !this.timer) this.emit('down', why);
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => void this.attempt(), this.delay);
    this.delay = Math.min(5000, this.delay + 1000);
  }

  private need(): ControlClient {
    if (!this.client || this.client.closed) throw new PortcullisError('control_closed', `not connected to the bastion (${this.lastError || 'connecting'})`);
    return this.client;
  }

  call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    try {
      return this.need().call<T>(op, args);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  subscribe<T = unknown>(op: string, args: Record<string, unknown>, onEvent: (e: string, d: unknown) => void, onEnd?: (reason: string) => void): Promise<Subscribed<T>> {
    try {
      return this.need().subscribe<T>(op, args, onEvent, onEnd);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.client?.close();
    this.client = null;
  }
}
