// Client side of the control socket (JSON lines), for the CLI and the console.
import { connect, type Socket } from 'node:net';
import { userInfo } from 'node:os';
import { PortcullisError } from '../policy/types.js';

export class ControlClient {
  private seq = 0;
  private buf = '';
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private closedWith: Error | null = null;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      this.buf += chunk;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        let msg: { id?: number; ok: boolean; result?: unknown; error?: { code: string; message: string } };
        try {
          msg = JSON.parse(line);
        } catch {
          continue;
        }
        const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
        if (!p) continue;
        this.pending.delete(msg.id as number);
        if (msg.ok) p.resolve(msg.result);
        else p.reject(new PortcullisError(msg.error?.code ?? 'control_error', msg.error?.message ?? 'request failed'));
      }
    });
    const fail = (e: Error) => {
      this.closedWith ??= e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new PortcullisError('control_closed', 'the bastion closed the control connection')));
  }

  static async connect(socketPath: string, operator = userInfo().username): Promise<ControlClient> {
    const sock = await new Promise<Socket>((res, rej) => {
      const s = connect(socketPath);
      s.once('connect', () => res(s));
      s.once('error', (e: NodeJS.ErrnoException) =>
        rej(new PortcullisError('control_unreachable', `cannot reach the bastion's control socket ${socketPath}: ${e.code ?? e.message} (is \`portcullis serve\` running with this --data-dir?)`)),
      );
    });
    const c = new ControlClient(sock);
    await c.call('hello', { operator });
    return c;
  }

  call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = ++this.seq;
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
