// Who is on the other end of the control socket: a kernel-attested uid without SO_PEERCRED.
//
// Node cannot read SO_PEERCRED (no getsockopt on unix sockets, and no native addon here). The
// equivalent used instead is a filesystem challenge, in pure JS:
//
//   1. The server owns a directory next to the socket, `<socket>.auth/`, mode 1733 (like /tmp:
//      anyone may create entries, nobody but the owner may list it, and the sticky bit means an
//      entry can only be renamed or removed by its owner or by the directory's owner).
//   2. After `hello` the server sends the connection a fresh 256-bit nonce.
//   3. The client creates the directory `<socket>.auth/<nonce>` with mode 0700 and says `auth`.
//   4. The server lstat()s that entry. The kernel stamps a new inode with the creator's effective
//      uid, and only root (CAP_CHOWN) can change it afterwards: the owner IS the uid of whoever
//      created it, and only the peer of this connection knows the nonce. The entry is removed.
//
// What the check requires, and why:
//   - a directory, not a symlink or file: directories cannot be hard-linked, so an entry can't be
//     an alias of another user's inode (a file could be, where protected_hardlinks is off);
//   - mode exactly 0700 and empty (nlink 2): an existing directory of another user could only be
//     moved into place by renaming it, and moving a directory to another parent needs write
//     permission on it — which a 0700 directory of someone else does not give;
//   - the auth directory owned by the server's uid (else its owner could rename a victim's entry
//     onto their own nonce), and every ancestor of it owned by root or the server and not writable
//     by others unless sticky (else the whole directory could be swapped), as OpenSSH's
//     StrictModes checks: where the socket's directory fails that, a fresh directory under the
//     temp dir is used (the challenge tells the client where); if that fails too the server
//     refuses to start (fail closed);
//   - the nonce is single-use and expires after 30 s.
// A peer can still prove a *different* uid only with that uid's cooperation (a process of it
// creating the entry for them): that is delegation, not forgery.
//
// Rejected alternative: `ss -xpn` maps the server's accepted socket to the peer process' pid
// through /proc/<pid>/fd, which needs root (or CAP_SYS_PTRACE) when the service is not root,
// depends on iproute2 being installed, and races with fork/exec and fd passing (the pid seen
// is not necessarily the process writing); the challenge is attested by the kernel, works for an
// unprivileged service user and is testable.
import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, promises as fsp, readdirSync, realpathSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { PortcullisError } from '../policy/types.js';

export const CHALLENGE_TTL_MS = 30_000;
const NONCE_RE = /^[0-9a-f]{64}$/;

export interface Challenge {
  dir: string;
  nonce: string;
  expiresAt: number;
}

/** The challenge directory for a socket path. */
export function authDirFor(socket: string): string {
  return `${resolve(socket)}.auth`;
}

function chainProblem(start: string, uid: number): string | null {
  let d = start;
  for (let i = 0; i < 64; i++) {
    let st;
    try {
      st = lstatSync(d);
    } catch (e) {
      return `${d}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`;
    }
    // A symlink is only as safe as the directory holding it (checked next) and its target
    // (checked by the caller on the real path).
    if (!st.isSymbolicLink()) {
      if (st.uid !== 0 && st.uid !== uid) return `${d} is owned by uid ${st.uid} (must be root or the service user)`;
      if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) return `${d} is writable by group or others and not sticky (mode ${(st.mode & 0o7777).toString(8)})`;
    }
    const up = dirname(d);
    if (up === d) return null;
    d = up;
  }
  return `${start} is nested too deeply`;
}

/**
 * The ancestors of `dir` (itself excluded), as written and after resolving symlinks, must be
 * owned by root or `uid` and not writable by group/others unless sticky. The problem, or null.
 */
export function ancestorProblem(dir: string, uid: number): string | null {
  const parent = dirname(resolve(dir));
  const asWritten = chainProblem(parent, uid);
  if (asWritten) return asWritten;
  let real: string;
  try {
    real = realpathSync.native(parent);
  } catch (e) {
    return `${parent}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`;
  }
  return real === parent ? null : chainProblem(real, uid);
}

export class PeerAuth {
  private readonly pending = new Map<string, Challenge>();

  private constructor(
    readonly dir: string,
    private readonly uid: number,
    /** True when the directory is a fallback under the temp dir (not next to the socket). */
    readonly temporary: boolean,
  ) {}

  /**
   * Create (or re-create) `<socket>.auth` owned by this process with mode 1733, after checking
   * its ancestors. Where the socket's directory is not safe (an ancestor owned or writable by
   * another user: `sudo portcullis serve --demo` in someone's home), a fresh directory under the
   * system temp dir is used instead (clients are told where in the challenge). Throws
   * `control_auth_unsafe` when neither is safe.
   */
  static setup(socket: string, log?: (msg: string) => void): PeerAuth {
    const uid = process.getuid?.() ?? 0;
    const dir = authDirFor(socket);
    const problem = ancestorProblem(dir, uid);
    if (!problem) return PeerAuth.prepare(dir, uid, false);
    const tmp = tmpdir();
    const tmpProblem = ancestorProblem(join(tmp, 'x'), uid);
    if (tmpProblem) throw new PortcullisError('control_auth_unsafe', `the control socket's directory is unsafe for peer authentication (${problem}) and so is the temp dir (${tmpProblem})`);
    log?.(`the control socket's directory is unsafe for the peer-credential challenge (${problem}); using a private directory under ${tmp}`);
    return PeerAuth.prepare(mkdtempSync(join(tmp, `portcullis-auth-${uid}-`)), uid, true);
  }

  private static prepare(dir: string, uid: number, temporary: boolean): PeerAuth {
    let ok: boolean;
    try {
      const st = lstatSync(dir);
      ok = st.isDirectory() && !st.isSymbolicLink() && st.uid === uid;
      if (!ok) rmSync(dir, { recursive: true, force: true });
    } catch {
      ok = false;
    }
    if (!ok) mkdirSync(dir, { mode: 0o700 });
    chmodSync(dir, 0o1733);
    const st = lstatSync(dir);
    if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o7777) !== 0o1733) throw new PortcullisError('control_auth_unsafe', `cannot prepare ${dir} (owner ${st.uid}, mode ${(st.mode & 0o7777).toString(8)})`);
    const auth = new PeerAuth(dir, uid, temporary);
    auth.sweep(true);
    return auth;
  }

  /** Remove the challenge directory (server shutdown). */
  close(): void {
    this.pending.clear();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A fresh challenge for one connection. */
  challenge(): Challenge {
    this.sweep(false);
    const c: Challenge = { dir: this.dir, nonce: randomBytes(32).toString('hex'), expiresAt: Date.now() + CHALLENGE_TTL_MS };
    this.pending.set(c.nonce, c);
    return c;
  }

  /** Forget a connection's challenge (it closed) and remove its entry if one was made. */
  forget(nonce: string): void {
    if (this.pending.delete(nonce)) this.remove(nonce);
  }

  /**
   * Check the peer's answer: the uid that created `<dir>/<nonce>`. Throws `auth_failed` with the
   * reason. The challenge is consumed either way.
   */
  async verify(nonce: string): Promise<number> {
    if (!NONCE_RE.test(nonce)) throw new PortcullisError('auth_failed', 'the nonce is not one this server issued');
    const c = this.pending.get(nonce);
    this.pending.delete(nonce);
    if (!c) throw new PortcullisError('auth_failed', 'unknown or already used challenge (say hello again)');
    try {
      if (Date.now() > c.expiresAt) throw new PortcullisError('auth_failed', 'the challenge expired (answer within 30 s)');
      // The auth directory itself must still be ours (nobody swapped it since start-up).
      const d = await fsp.lstat(this.dir);
      if (!d.isDirectory() || d.uid !== this.uid || (d.mode & 0o7777) !== 0o1733) throw new PortcullisError('auth_failed', `${this.dir} was tampered with (owner ${d.uid}, mode ${(d.mode & 0o7777).toString(8)})`);
      let st;
      try {
        st = await fsp.lstat(join(this.dir, nonce));
      } catch (e) {
        throw new PortcullisError('auth_failed', `no answer to the challenge: ${join(this.dir, nonce)} does not exist (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
      }
      if (st.isSymbolicLink() || !st.isDirectory()) throw new PortcullisError('auth_failed', 'the challenge entry must be a directory created with mkdir (not a file or link)');
      if ((st.mode & 0o7777) !== 0o700) throw new PortcullisError('auth_failed', `the challenge directory must have mode 0700 (has ${(st.mode & 0o7777).toString(8)})`);
      if (st.nlink !== 2) throw new PortcullisError('auth_failed', 'the challenge directory must be empty');
      return st.uid;
    } finally {
      this.remove(nonce);
    }
  }

  private remove(nonce: string): void {
    if (!NONCE_RE.test(nonce)) return;
    const p = join(this.dir, nonce);
    try {
      const st = lstatSync(p);
      if (st.isDirectory()) rmSync(p, { recursive: true, force: true });
      else unlinkSync(p);
    } catch {
      // Absent, or an entry we cannot remove (another user's non-empty directory when not root):
      // swept at the next start; it is useless to anyone (its nonce is consumed).
    }
  }

  /** Remove stale entries: all at start-up, and expired challenges. */
  private sweep(all: boolean): void {
    const now = Date.now();
    for (const [n, c] of this.pending) if (c.expiresAt < now) this.forget(n);
    if (!all) return;
    try {
      for (const name of readdirSync(this.dir)) if (!this.pending.has(name)) rmSync(join(this.dir, name), { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
}

/** Client side: answer a challenge by creating the directory (mode 0700, whatever the umask). */
export async function answerChallenge(c: { dir: string; nonce: string }): Promise<void> {
  if (typeof c.nonce !== 'string' || !NONCE_RE.test(c.nonce) || typeof c.dir !== 'string' || !c.dir.startsWith('/')) {
    throw new PortcullisError('auth_failed', 'the bastion sent a malformed challenge');
  }
  const p = join(c.dir, c.nonce);
  await fsp.mkdir(p, { mode: 0o700 });
  await fsp.chmod(p, 0o700);
}
