// The `sftp` subsystem (sftp, and scp — OpenSSH 9 copies over SFTP by default), proxied packet
// by packet: the bastion reads the SFTP v3 requests the agent sends, decides each file operation
// with the core before the target's SFTP server sees it, and passes the packets through unchanged
// (the target's own sftp-server speaks the protocol: for a local target the system's
// /usr/lib/openssh/sftp-server run as the target's unprivileged user in its directory, for a remote
// target the sshd's sftp subsystem over the upstream login).
//
// Policy: every operation is decided as the equivalent shell command, so the target's existing
// shell rules apply to files exactly as they do to commands (one model, no SFTP-only rules):
//   OPEN read → `cat P`, OPEN write → `tee P` (append: `tee -a P`), OPENDIR → `ls P`,
//   REMOVE → `rm P`, RMDIR → `rmdir P`, MKDIR → `mkdir P`, RENAME / posix-rename → `mv A B`,
//   SYMLINK → `ln -s T L`, hardlink → `ln A B`, SETSTAT / FSETSTAT / lsetstat → `chmod MODE P`,
//   `chown U:G P`, `touch P` for what they change, STAT / LSTAT / REALPATH / READLINK /
//   expand-path → `stat P`.
// Paths are single-quoted (a relative path starting with `-` gets `./`), so a file name is never
// read as a flag or as shell syntax. READ / WRITE / READDIR / FSTAT / CLOSE act on a handle whose
// OPEN was decided and pass through; so do the harmless extensions (statvfs, fstatvfs, limits,
// fsync, copy-data between decided handles, users-groups-by-id). Any other request is refused.
// A denied (or unapproved) operation gets SSH_FX_PERMISSION_DENIED with the message
// `portcullis: blocked by <file:id>: <reason>` (also on the channel's stderr, which sftp and scp
// print — they show only "Permission denied" for the status itself); a review holds that one request (the notice goes to
// the channel's stderr, which the sftp client shows). Each decision is audited (write-ahead) and
// marked in the session's recording; the byte counts are written at the end. File contents are not
// masked: masking would change sizes and offsets and corrupt binary files — what may be read is
// decided by the `cat` rules instead.
import type { ServerChannel } from 'ssh2';
import type { SessionRecording } from '../../core/core.js';
import type { SessionInfo } from '../../core/events.js';
import type { Masker } from '../../masking/index.js';
import { gate, type GateContext } from './gate.js';
import { sessionMasker } from './masks.js';
import type { ConnectionContext } from './session.js';
import type { UpstreamProcess } from './upstream.js';

const T = {
  INIT: 1,
  VERSION: 2,
  OPEN: 3,
  CLOSE: 4,
  READ: 5,
  WRITE: 6,
  LSTAT: 7,
  FSTAT: 8,
  SETSTAT: 9,
  FSETSTAT: 10,
  OPENDIR: 11,
  READDIR: 12,
  REMOVE: 13,
  MKDIR: 14,
  RMDIR: 15,
  REALPATH: 16,
  STAT: 17,
  RENAME: 18,
  READLINK: 19,
  SYMLINK: 20,
  STATUS: 101,
  HANDLE: 102,
  EXTENDED: 200,
} as const;
const FX_PERMISSION_DENIED = 3;
const FX_OP_UNSUPPORTED = 8;
const PF = { READ: 1, WRITE: 2, APPEND: 4, CREAT: 8, TRUNC: 16 } as const;
const ATTR = { SIZE: 1, UIDGID: 2, PERMISSIONS: 4, ACMODTIME: 8 } as const;
/** Larger than any packet OpenSSH sends (256 KiB); beyond it the session is ended. */
const MAX_PACKET = 1024 * 1024;
/** Extensions that read or write only through handles already decided, or only describe the server. */
const PASS_EXTENSIONS = new Set(['statvfs@openssh.com', 'fstatvfs@openssh.com', 'limits@openssh.com', 'fsync@openssh.com', 'copy-data', 'users-groups-by-id@openssh.com']);

/** Single-quoted for the shell; a relative path that starts with `-` gets `./`. */
export function shellPath(p: string): string {
  const q = p.startsWith('-') ? `./${p}` : p;
  return `'${q.replace(/'/g, `'\\''`)}'`;
}

/** Splits a byte stream into SFTP packets (uint32 length + body). */
class Framer {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly onPacket: (p: Buffer) => void) {}
  push(b: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, b]) : b;
    while (this.buf.length >= 4) {
      const n = this.buf.readUInt32BE(0);
      if (n > MAX_PACKET || n < 1) throw new Error(`SFTP packet of ${n} bytes`);
      if (this.buf.length < 4 + n) return;
      const p = this.buf.subarray(0, 4 + n);
      this.buf = this.buf.subarray(4 + n);
      this.onPacket(p);
    }
  }
}

class Reader {
  pos = 5;
  constructor(private readonly p: Buffer) {}
  skipId(): this {
    this.pos += 4;
    return this;
  }
  u32(): number {
    const v = this.p.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): void {
    this.pos += 8;
  }
  bytes(): Buffer {
    const n = this.u32();
    if (this.pos + n > this.p.length) throw new Error('truncated SFTP string');
    const v = this.p.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  str(): string {
    return this.bytes().toString('utf8');
  }
  /** ATTRS: which of them are set (size, uid/gid, permissions, times). */
  attrs(): { flags: number; uid?: number; gid?: number; mode?: number } {
    const flags = this.u32();
    const out: { flags: number; uid?: number; gid?: number; mode?: number } = { flags };
    if (flags & ATTR.SIZE) this.u64();
    if (flags & ATTR.UIDGID) {
      out.uid = this.u32();
      out.gid = this.u32();
    }
    if (flags & ATTR.PERMISSIONS) out.mode = this.u32();
    return out;
  }
}

function status(id: number, code: number, message: string): Buffer {
  const msg = Buffer.from(message, 'utf8');
  const b = Buffer.alloc(4 + 1 + 4 + 4 + 4 + msg.length + 4);
  let o = b.writeUInt32BE(b.length - 4, 0);
  o = b.writeUInt8(T.STATUS, o);
  o = b.writeUInt32BE(id, o);
  o = b.writeUInt32BE(code, o);
  o = b.writeUInt32BE(msg.length, o);
  o += msg.copy(b, o);
  b.writeUInt32BE(0, o); // language tag
  return b;
}

function attrCommands(a: { flags: number; uid?: number; gid?: number; mode?: number }, path: string): string[] {
  const out: string[] = [];
  if (a.mode !== undefined) out.push(`chmod ${(a.mode & 0o7777).toString(8)} ${path}`);
  if (a.uid !== undefined) out.push(`chown ${a.uid}:${a.gid ?? 0} ${path}`);
  if (a.flags & ATTR.ACMODTIME) out.push(`touch ${path}`);
  if (a.flags & ATTR.SIZE) out.push(`truncate ${path}`);
  return out;
}

/** What a request is, for the policy: the command, or pass (no decision), or refuse. */
type Classified = { kind: 'decide'; command: string; open?: string } | { kind: 'pass' } | { kind: 'refuse'; message: string };

export class SftpSession {
  private info: SessionInfo | null = null;
  private rec: SessionRecording | null = null;
  private masker: Masker | null = null;
  private proc: UpstreamProcess | null = null;
  private ch: ServerChannel | null = null;
  private queue: Promise<void> = Promise.resolve();
  /** request id of an allowed OPEN/OPENDIR → the path (until its HANDLE reply). */
  private readonly opening = new Map<number, string>();
  private readonly handles = new Map<string, string>();
  private readonly abort = new AbortController();
  private finished = false;
  private readonly counts = { requests: 0, decided: 0, refused: 0, bytesIn: 0, bytesOut: 0 };

  constructor(private readonly ctx: ConnectionContext) {}

  async start(accept: () => ServerChannel): Promise<void> {
    const ctx = this.ctx;
    const ch = accept();
    this.ch = ch;
    ch.on('error', () => undefined);
    ch.on('close', () => void this.end('client disconnected'));
    try {
      this.masker = sessionMasker(ctx.core.policy, ctx.identity, ctx.target, ctx.hmacKey);
      this.info = await ctx.core.openSession({
        protocol: 'ssh',
        target: ctx.target,
        identity: ctx.identity,
        remote: ctx.remote,
        meta: { connection: ctx.connectionId, channel: 'sftp', ...(ctx.via ? { via: ctx.via } : {}) },
        kill: (r) => void this.end(`killed: ${r}`, 255),
      });
      this.rec = ctx.core.record(this.info.id, { width: 80, height: 24, env: { TERM: 'dumb', SHELL: 'sftp' }, title: `${ctx.identity.subject} → ${ctx.target}: sftp` });
      this.proc = await ctx.upstream().subsystem!('sftp');
    } catch (e) {
      ctx.log.warn('ssh sftp could not start', { target: ctx.target, error: (e as Error).message });
      if (ch.writable) ch.stderr.write(`portcullis: sftp on ${ctx.target} is not available (${(e as Error).message})\n`);
      return this.end('failed to start', 1);
    }
    if (this.finished) return this.proc.close();
    const proc = this.proc;
    const fromServer = new Framer((p) => this.reply(p));
    proc.on('data', (b) => {
      this.counts.bytesOut += b.length;
      try {
        fromServer.push(b);
      } catch (e) {
        void this.fail(e);
      }
    });
    proc.on('stderr', (b) => {
      if (ch.writable) ch.stderr.write(b);
    });
    proc.on('exit', (e) => void this.end('exited', e.code ?? 255));
    const fromAgent = new Framer((p) => {
      this.queue = this.queue.then(() => this.request(p)).catch((e: unknown) => this.fail(e));
    });
    ch.on('data', (b: Buffer) => {
      this.counts.bytesIn += b.length;
      try {
        fromAgent.push(b);
      } catch (e) {
        void this.fail(e);
      }
    });
    ch.on('end', () => {
      this.queue = this.queue.then(() => proc.end());
    });
    proc.begin();
  }

  private send(b: Buffer): void {
    if (this.proc && !this.finished) this.proc.write(b);
  }

  /** A packet from the target's server: remember handles of decided opens, pass it on. */
  private reply(p: Buffer): void {
    const type = p[4];
    if (type === T.HANDLE || type === T.STATUS) {
      const id = p.readUInt32BE(5);
      const path = this.opening.get(id);
      if (path !== undefined) {
        this.opening.delete(id);
        if (type === T.HANDLE) this.handles.set(new Reader(p).skipId().bytes().toString('latin1'), path);
      }
    }
    if (this.ch?.writable) this.ch.write(p);
  }

  private classify(p: Buffer): Classified {
    const type = p[4]!;
    if (type === T.INIT) return { kind: 'pass' };
    const r = new Reader(p).skipId();
    const handlePath = (): string | undefined => this.handles.get(r.bytes().toString('latin1'));
    switch (type) {
      case T.OPEN: {
        const path = shellPath(r.str());
        const flags = r.u32();
        const write = (flags & (PF.WRITE | PF.APPEND | PF.CREAT | PF.TRUNC)) !== 0;
        const cmd = write ? `tee ${flags & PF.APPEND ? '-a ' : ''}${path}` : `cat ${path}`;
        return { kind: 'decide', command: write && flags & PF.READ ? `cat ${path}; ${cmd}` : cmd, open: path };
      }
      case T.OPENDIR: {
        const path = shellPath(r.str());
        return { kind: 'decide', command: `ls ${path}`, open: path };
      }
      case T.READ:
      case T.WRITE:
      case T.READDIR:
      case T.FSTAT:
      case T.CLOSE:
        return { kind: 'pass' };
      case T.REMOVE:
        return { kind: 'decide', command: `rm ${shellPath(r.str())}` };
      case T.RMDIR:
        return { kind: 'decide', command: `rmdir ${shellPath(r.str())}` };
      case T.MKDIR:
        return { kind: 'decide', command: `mkdir ${shellPath(r.str())}` };
      case T.RENAME: {
        const a = shellPath(r.str());
        return { kind: 'decide', command: `mv ${a} ${shellPath(r.str())}` };
      }
      case T.SYMLINK: {
        const a = shellPath(r.str());
        return { kind: 'decide', command: `ln -s ${a} ${shellPath(r.str())}` };
      }
      case T.STAT:
      case T.LSTAT:
      case T.REALPATH:
      case T.READLINK:
        return { kind: 'decide', command: `stat ${shellPath(r.str())}` };
      case T.SETSTAT: {
        const path = shellPath(r.str());
        const cmds = attrCommands(r.attrs(), path);
        return cmds.length ? { kind: 'decide', command: cmds.join('; ') } : { kind: 'decide', command: `stat ${path}` };
      }
      case T.FSETSTAT: {
        const path = handlePath();
        if (path === undefined) return { kind: 'refuse', message: 'portcullis: unknown handle' };
        const cmds = attrCommands(r.attrs(), path);
        return cmds.length ? { kind: 'decide', command: cmds.join('; ') } : { kind: 'pass' };
      }
      case T.EXTENDED: {
        const name = r.str();
        if (PASS_EXTENSIONS.has(name)) return { kind: 'pass' };
        if (name === 'posix-rename@openssh.com') {
          const a = shellPath(r.str());
          return { kind: 'decide', command: `mv ${a} ${shellPath(r.str())}` };
        }
        if (name === 'hardlink@openssh.com') {
          const a = shellPath(r.str());
          return { kind: 'decide', command: `ln ${a} ${shellPath(r.str())}` };
        }
        if (name === 'expand-path@openssh.com') return { kind: 'decide', command: `stat ${shellPath(r.str())}` };
        if (name === 'lsetstat@openssh.com') {
          const path = shellPath(r.str());
          const cmds = attrCommands(r.attrs(), path);
          return { kind: 'decide', command: cmds.length ? cmds.join('; ') : `stat ${path}` };
        }
        return { kind: 'refuse', message: `portcullis: the SFTP extension ${name.slice(0, 64)} is not available through the bastion` };
      }
      default:
        return { kind: 'refuse', message: `portcullis: SFTP request type ${type} is not available through the bastion` };
    }
  }

  private async request(p: Buffer): Promise<void> {
    if (this.finished) return;
    this.counts.requests++;
    const type = p[4]!;
    const id = type === T.INIT ? 0 : p.readUInt32BE(5);
    let c: Classified;
    try {
      c = this.classify(p);
    } catch (e) {
      c = { kind: 'refuse', message: `portcullis: malformed SFTP request (${(e as Error).message})` };
    }
    if (c.kind === 'pass') return this.send(p);
    if (c.kind === 'refuse') {
      this.counts.refused++;
      this.rec?.marker(`refused sftp request ${type}: ${c.message}`);
      if (this.ch?.writable) this.ch.write(status(id, FX_OP_UNSUPPORTED, c.message));
      return;
    }
    this.counts.decided++;
    const g: GateContext = { core: this.ctx.core, session: this.info!.id, identity: this.ctx.identity, target: this.ctx.target, masker: this.masker!, recording: this.rec, signal: this.abort.signal };
    const res = await gate(g, c.command, (lines) => {
      if (this.ch?.writable) this.ch.stderr.write(lines[0] + '\n');
    });
    if (this.finished) return;
    if (res.run) {
      if (c.open !== undefined) this.opening.set(id, c.open);
      return this.send(p);
    }
    this.counts.refused++;
    const line = res.notice[0] ?? 'portcullis: refused';
    if (this.ch?.writable) {
      // OpenSSH's sftp shows only "Permission denied" for the status: the reason goes to stderr too
      this.ch.stderr.write(line + '\n');
      this.ch.write(status(id, FX_PERMISSION_DENIED, line));
    }
  }

  private async fail(e: unknown): Promise<void> {
    this.ctx.log.warn('ssh sftp session ended', { session: this.info?.id, error: String(e) });
    if (this.ch?.writable) this.ch.stderr.write(`portcullis: the SFTP stream could not be read (${(e as Error).message ?? String(e)}); session closed\n`);
    await this.end('protocol error', 255);
  }

  async end(reason: string, code = 0): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.abort.abort();
    this.proc?.close();
    const ch = this.ch;
    if (ch?.writable) {
      ch.exit(code);
      ch.end();
    }
    this.rec?.marker(`sftp: ${this.counts.requests} requests, ${this.counts.decided} decided, ${this.counts.refused} refused, ${this.counts.bytesIn} bytes in, ${this.counts.bytesOut} bytes out`);
    if (this.info) await this.ctx.core.closeSession(this.info.id, reason, { sftp: { ...this.counts } }).catch(() => undefined);
  }
}
