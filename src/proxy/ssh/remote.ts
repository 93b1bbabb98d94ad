// Remote targets (`kind: remote`): the bastion logs in to the host with an ssh2 client, as the
// target's configured user, with the target's own private key or with a short-lived OpenSSH user
// certificate it issues for this session with its upstream CA (identity.upstream_ssh_ca; see
// src/identity/credentials.ts). One upstream connection per agent connection, opened when the
// first session needs it; its channels carry the agent's sessions.
import { Client, type ClientChannel, type ConnectConfig, type TcpConnectionDetails } from 'ssh2';
import { PortcullisError } from '../../policy/types.js';
import type { SshCredentials } from '../../identity/credentials.js';
import { parsePrivateKey, signSshBlob, sshString } from '../../identity/ssh-wire.js';
import { certificateType } from '../../identity/ssh-cert.js';
import type { KnownHosts } from './knownhosts.js';
import { UpstreamProcess, type ExitInfo, type Upstream } from './upstream.js';

export interface RemoteTargetOptions {
  name: string;
  /** Fresh credentials for one upstream login (a new certificate each time when the CA covers the target). */
  credentials: () => SshCredentials;
  knownHosts: KnownHosts;
  connectTimeoutMs?: number;
  log?: { info(msg: string, f?: Record<string, unknown>): void; warn(msg: string, f?: Record<string, unknown>): void };
}

/** A remote target: `connect()` gives the Upstream of one agent connection. */
export class RemoteTarget {
  constructor(private readonly opts: RemoteTargetOptions) {}

  connect(): Upstream {
    let client: Promise<Client> | null = null;
    let closed = false;
    const conns: Client[] = [];
    const get = (): Promise<Client> => {
      if (closed) return Promise.reject(new PortcullisError('ssh_upstream_closed', 'the upstream connection is closed'));
      client ??= this.login().then((c) => {
        conns.push(c);
        c.on('close', () => {
          client = null;
        });
        return c;
      });
      client.catch(() => {
        client = null;
      });
      return client;
    };
    const open = async (start: (c: Client, cb: (err: Error | undefined, ch: ClientChannel) => void) => void): Promise<UpstreamProcess> => {
      const c = await get();
      // the process must listen from the callback on: a fast command's exit status can arrive in
      // the same read as the channel confirmation, before an awaiting caller would run
      return new Promise<UpstreamProcess>((res, rej) =>
        start(c, (err, ch) => (err ? rej(new PortcullisError('ssh_upstream_channel', `the target refused the session: ${err.message}`)) : res(new RemoteProcess(ch, c)))),
      );
    };
    return {
      kind: 'remote',
      promptMarks: false,
      exec: (command, o) => open((c, cb) => c.exec(command, { env: o.env, ...(o.pty ? { pty: { term: o.pty.term, cols: o.pty.cols, rows: o.pty.rows, width: o.pty.width, height: o.pty.height } } : {}) }, cb)),
      shell: (o) =>
        open((c, cb) => {
          if (o.pty) c.shell({ term: o.pty.term, cols: o.pty.cols, rows: o.pty.rows, width: o.pty.width, height: o.pty.height }, { env: o.env }, cb);
          else c.shell(false, { env: o.env }, cb);
        }),
      subsystem: (name) => open((c, cb) => c.subsys(name, cb)),
      forwardOut: async (src, dst) => {
        const c = await get();
        return new Promise((res, rej) =>
          c.forwardOut(src.host, src.port, dst.host, dst.port, (err, ch) => (err ? rej(new PortcullisError('ssh_upstream_forward', `the target refused the connection to ${dst.host}:${dst.port}: ${err.message}`)) : res(ch))),
        );
      },
      forwardIn: async (bindAddr, bindPort, onConnection) => {
        const c = await get();
        // Listening before asking: the target's sshd binds, and may hand over a connection, before
        // its reply to tcpip-forward arrives (a connection with no listener here was refused).
        // With port 0 the port is known only from the reply: connections until then wait for it.
        let port: number | null = bindPort === 0 ? null : bindPort;
        const early: [TcpConnectionDetails, () => ClientChannel, () => void][] = [];
        const onTcp = (info: TcpConnectionDetails, accept: () => ClientChannel, reject: () => void) => {
          if (port === null) {
            early.push([info, accept, reject]);
            return;
          }
          if (info.destPort !== port) return; // another listener of this connection
          onConnection({ srcIP: info.srcIP, srcPort: info.srcPort, accept, reject });
        };
        c.on('tcp connection', onTcp);
        try {
          port = await new Promise<number>((res, rej) =>
            c.forwardIn(bindAddr, bindPort, (err, p) => (err ? rej(new PortcullisError('ssh_upstream_forward', `the target refused to listen on ${bindAddr}:${bindPort}: ${err.message}`)) : res(p || bindPort))),
          );
        } catch (e) {
          c.off('tcp connection', onTcp);
          // Connections that came in meanwhile: another listener of this connection answers its
          // own; with none left, nobody would, so they are refused rather than left hanging.
          if (c.listenerCount('tcp connection') === 0) for (const [, , reject] of early) reject();
          throw e;
        }
        for (const [info, accept, reject] of early.splice(0)) onTcp(info, accept, reject);
        let done = false;
        return {
          port,
          close: () => {
            if (done) return;
            done = true;
            c.off('tcp connection', onTcp);
            c.unforwardIn(bindAddr, port, () => undefined);
          },
        };
      },
      close: () => {
        closed = true;
        for (const c of conns) c.end();
      },
    };
  }

  private async login(): Promise<Client> {
    const creds = this.opts.credentials();
    if (creds.kind !== 'remote' || !creds.host || !creds.user || !creds.privateKey) {
      throw new PortcullisError('ssh_upstream_config', `target ${this.opts.name}: needs host, user and a private key or the upstream CA`);
    }
    const host = creds.host;
    const port = creds.port ?? 22;
    const sendPacket = creds.certificate ? await ssh2SendPacket() : null;
    const c = new Client();
    return new Promise<Client>((resolve, reject) => {
      let hostKeyProblem: string | null = null;
      const cfg: ConnectConfig = {
        host,
        port,
        username: creds.user,
        privateKey: creds.privateKey!.reveal(),
        readyTimeout: this.opts.connectTimeoutMs ?? 10_000,
        keepaliveInterval: 15_000,
        keepaliveCountMax: 4,
        hostVerifier: (key: Buffer) => {
          const r = this.opts.knownHosts.check(host, port, key, creds.hostKey);
          if (!r.ok) {
            hostKeyProblem = r.message;
            return false;
          }
          if (r.learned) this.opts.log?.warn('ssh target host key learned (trust on first use)', { target: this.opts.name, host, port });
          return true;
        },
      };
      c.once('ready', () => {
        c.setNoDelay(true);
        c.removeAllListeners('error');
        c.on('error', (e) => this.opts.log?.warn('ssh upstream connection error', { target: this.opts.name, error: e.message }));
        resolve(c);
      });
      c.once('error', (e) => {
        const why = hostKeyProblem ?? e.message;
        reject(new PortcullisError('ssh_upstream_connect', `cannot log in to target ${this.opts.name} (${host}:${port}): ${why}`));
      });
      c.connect(cfg);
      if (creds.certificate) useCertificate(c, creds.certificate, creds.privateKey!.reveal(), sendPacket);
    });
  }
}

type Ssh2Protocol = {
  authPK: (...args: unknown[]) => void;
  _kex?: { sessionID?: Buffer };
  _packetRW?: { write?: { alloc(n: number): Buffer; allocStart: number; finalize(b: Buffer): Buffer } };
  _authsQueue?: string[];
};

/**
 * ssh2's client cannot log in with an OpenSSH certificate: it would name the signature after the
 * certificate algorithm, which sshd refuses. This replaces the connection's `authPK` with one that
 * sends the certificate with a correctly named signature (RFC 4252 7 + PROTOCOL.certkeys), made by
 * the certified key. It relies on ssh2 1.x internals (checked here; the login fails closed with a
 * clear error when they change).
 */
/** ssh2's packet sender (internal; loaded once, null when this ssh2 version has none). */
let sendPacketFn: Promise<((p: unknown, packet: Buffer) => void) | null> | null = null;
function ssh2SendPacket(): Promise<((p: unknown, packet: Buffer) => void) | null> {
  sendPacketFn ??= import('ssh2/lib/protocol/utils.js')
    .then((m: { sendPacket?: unknown; default?: { sendPacket?: unknown } }) => {
      const f = m.sendPacket ?? m.default?.sendPacket;
      return typeof f === 'function' ? (f as (p: unknown, packet: Buffer) => void) : null;
    })
    .catch(() => null);
  return sendPacketFn;
}

function useCertificate(c: Client, certLine: string, privateKeyText: string, sendPacket: ((p: unknown, packet: Buffer) => void) | null): void {
  const proto = (c as unknown as { _protocol?: Ssh2Protocol })._protocol;
  const parts = certLine.trim().split(/\s+/);
  const blob = Buffer.from(parts[1] ?? '', 'base64');
  const algo = certificateType(blob);
  if (!proto || typeof proto.authPK !== 'function' || !sendPacket || !algo) {
    c.emit('error', new PortcullisError('ssh_upstream_cert', 'certificate login is not available with this ssh2 version'));
    c.end();
    return;
  }
  const key = parsePrivateKey(privateKeyText);
  const send = sendPacket;
  proto.authPK = function patchedAuthPK(this: Ssh2Protocol, username: unknown): void {
    const w = this._packetRW?.write;
    const sid = this._kex?.sessionID;
    if (!w || !sid || typeof username !== 'string') throw new PortcullisError('ssh_upstream_cert', 'certificate login: ssh2 internals changed');
    const body = Buffer.concat([Buffer.from([50]), sshString(username), sshString('ssh-connection'), sshString('publickey'), Buffer.from([1]), sshString(algo), sshString(blob)]);
    const sig = signSshBlob(key, Buffer.concat([sshString(sid), body]));
    const payload = Buffer.concat([body, sshString(sig)]);
    const packet = w.alloc(payload.length);
    payload.copy(packet, w.allocStart);
    this._authsQueue?.push('publickey');
    send(this, w.finalize(packet));
  };
}

class RemoteProcess extends UpstreamProcess {
  private exit: ExitInfo | null = null;
  private ended = { out: false, err: false, closed: false };

  constructor(
    private readonly ch: ClientChannel,
    private readonly conn: Client,
  ) {
    super();
    ch.on('data', (d: Buffer) => this.emit('data', d));
    ch.stderr.on('data', (d: Buffer) => this.emit('stderr', d));
    ch.on('drain', () => this.emit('drain'));
    ch.on('exit', (code: number | null, signal?: string, coreDumped?: boolean) => {
      this.exit = code !== null && code !== undefined ? { code } : { code: null, signal: (signal ?? 'KILL').replace(/^SIG/, ''), coreDumped: coreDumped === true };
    });
    ch.on('end', () => {
      this.ended.out = true;
      this.maybeFinish();
    });
    ch.stderr.on('end', () => {
      this.ended.err = true;
      this.maybeFinish();
    });
    ch.on('close', () => {
      this.ended.closed = true;
      // stdout/stderr may still hold buffered data when paused: finish once they are read, or soon
      setTimeout(() => {
        this.ended.out = this.ended.err = true;
        this.maybeFinish();
      }, 2000).unref();
      this.maybeFinish();
    });
    ch.on('error', () => undefined);
    conn.on('close', this.onConnClose);
  }

  private readonly onConnClose = (): void => {
    if (!this.exit) this.exit = { code: null, error: 'the target closed the connection' };
    this.ended.closed = true;
    setTimeout(() => {
      this.ended.out = this.ended.err = true;
      this.maybeFinish();
    }, 50).unref();
  };

  private maybeFinish(): void {
    if (!this.ended.closed || !this.ended.out || !this.ended.err) return;
    this.conn.off('close', this.onConnClose);
    this.finish(this.exit ?? { code: null, error: 'the target ended the session without an exit status' });
  }

  write(b: Buffer): boolean {
    if (this.ch.destroyed || this.ch.writableEnded) return true;
    return this.ch.write(b);
  }
  end(): void {
    if (!this.ch.writableEnded) this.ch.end();
  }
  resize(p: { cols: number; rows: number; width: number; height: number }): void {
    if (!this.hasExited) this.ch.setWindow(p.rows, p.cols, p.height, p.width);
  }
  signal(name: string): void {
    if (!this.hasExited) this.ch.signal(name);
  }
  pause(): void {
    this.ch.pause();
    this.ch.stderr.pause();
  }
  resume(): void {
    this.ch.resume();
    this.ch.stderr.resume();
  }
  close(): void {
    if (!this.ended.closed) this.ch.close();
  }
}
