// Client side of the control socket (JSON lines, protocol.ts), for the CLI and the console.
// `connect` says hello, proves this process' uid by answering the server's challenge
// (peercred.ts) and fails with `not_operator` when the bastion refuses it.
import { connect, type Socket } from 'node:net';
import { userInfo } from 'node:os';
import { PortcullisError } from '../policy/types.js';
import { answerChallenge } from './peercred.js';
import type { HelloResult, OperatorIdentity } from './protocol.js';

type EventHandler = (event: string, data: unknown) => void;

export interface Subscribed<T = unknown> {
  result: T;
  sub: number;
  /** Stop the subscription (resolves once the server confirmed; never rejects). */
  cancel(): Promise<void>;
}

export class ControlClient {
  private seq = 0;
  private buf = '';
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly subs = new Map<number, { onEvent: EventHandler; onEnd?: (reason: string) => void }>();
  private readonly closeHandlers: ((e: Error) => void)[] = [];
  private closedWith: Error | null = null;
  /** Who the bastion says this connection is (after connect). */
  operator: OperatorIdentity | null = null;
  hello: Omit<HelloResult, 'challenge'> | null = null;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      this.buf += chunk;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        let msg: { id?: number; ok?: boolean; result?: unknown; error?: { code: string; message: string }; event?: string; sub?: number; data?: unknown };
        try {
          msg = JSON.parse(line);
        } catch {
          continue;
        }
        if (typeof msg.event === 'string') {
          const s = msg.sub === undefined ? undefined : this.subs.get(msg.sub);
          if (!s) continue;
          if (msg.event === 'sub.end') {
            this.subs.delete(msg.sub as number);
            s.onEnd?.(String((msg.data as { reason?: string } | undefined)?.reason ?? 'ended'));
          } else s.onEvent(msg.event, msg.data);
          continue;
        }
        const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
        if (!p) continue;
        this.pending.delete(msg.id as number);
        if (msg.ok) p.resolve(msg.result);
        else p.reject(new PortcullisError(msg.error?.code ?? 'control_error', msg.error?.message ?? 'request failed'));
      }
    });
    const fail = (raw: Error) => {
      // A socket error (ECONNRESET, EPIPE) reaches callers as the same typed error as a close.
      const e = raw instanceof PortcullisError ? raw : new PortcullisError('control_closed', `the control connection failed: ${raw.message}`);
      const first = this.closedWith === null;
      this.closedWith ??= e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
      if (!first) return;
      for (const s of this.subs.values()) s.onEnd?.(e.message);
      this.subs.clear();
      for (const h of this.closeHandlers) h(e);
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new PortcullisError('control_closed', 'the bastion closed the control connection')));
  }

  /** Connect, say hello and authenticate. `claimed` is a name recorded in the audit next to the real user. */
  static async connect(socketPath: string, claimed: string = userInfo().username, opts: { timeoutMs?: number } = {}): Promise<ControlClient> {
    const sock = await new Promise<Socket>((res, rej) => {
      const s = connect(socketPath);
      const t = setTimeout(() => {
        s.destroy();
        rej(new PortcullisError('control_unreachable', `the bastion's control socket ${socketPath} did not answer`));
      }, opts.timeoutMs ?? 10_000);
      s.once('connect', () => {
        clearTimeout(t);
        res(s);
      });
      s.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(t);
        rej(new PortcullisError('control_unreachable', `cannot reach the bastion's control socket ${socketPath}: ${e.code ?? e.message} (is \`portcullis serve\` running with this --data-dir?)`));
      });
    });
    const c = new ControlClient(sock);
    try {
      const hello = await c.call<HelloResult>('hello', { operator: claimed });
      const { challenge, ...rest } = hello;
      c.hello = rest;
      try {
        await answerChallenge(challenge);
      } catch (e) {
        throw new PortcullisError('auth_failed', `cannot answer the bastion's identity challenge in ${challenge?.dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      c.operator = await c.call<OperatorIdentity>('auth', { nonce: challenge.nonce });
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  get closed(): boolean {
    return this.closedWith !== null;
  }

  /** Called once when the connection ends (the bastion stopped or restarted). */
  onClose(h: (e: Error) => void): void {
    if (this.closedWith) h(this.closedWith);
    else this.closeHandlers.push(h);
  }

  call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    return this.send<T>(op, args, ++this.seq);
  }

  /** A subscribing op (`session.watch`, `events.subscribe`): events go to `onEvent` until `onEnd`. */
  async subscribe<T = unknown>(op: string, args: Record<string, unknown>, onEvent: EventHandler, onEnd?: (reason: string) => void): Promise<Subscribed<T>> {
    const id = ++this.seq;
    this.subs.set(id, { onEvent, ...(onEnd ? { onEnd } : {}) });
    let result: T;
    try {
      result = await this.send<T>(op, args, id);
    } catch (e) {
      this.subs.delete(id);
      throw e;
    }
    return {
      result,
      sub: id,
      cancel: async () => {
        if (!this.subs.delete(id) || this.closed) return;
        await this.call('unsubscribe', { sub: id }).catch(() => undefined);
      },
    };
  }

  private send<T>(op: string, args: Record<string, unknown>, id: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      // The bastion may have closed the connection before this call (it never answers then).
      if (this.closedWith || this.sock.destroyed || !this.sock.writable) {
        reject(this.closedWith ?? new PortcullisError('control_closed', 'the bastion closed the control connection'));
        return;
      }
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(JSON.stringify({ id, op, args }) + '\n', (err) => {
        if (err && this.pending.delete(id)) reject(new PortcullisError('control_closed', `the control connection failed: ${err.message}`));
      });
    });
  }

  close(): void {
    this.sock.end();
  }
}
