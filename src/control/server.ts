// The control socket: a unix socket speaking JSON lines (protocol.ts), used by the CLI
// (`sessions`, `approvals`, `approve`, `deny`, `kill`, `token`) and the console (tui/).
//
// Who may act. The socket is created mode 0660 (group: control.group when configured). On top of
// the file permissions every connection proves its uid (peercred.ts: a kernel-attested
// filesystem challenge, the pure-JS equivalent of SO_PEERCRED); the uid is mapped to a user and
// groups (users.ts). Root, the service user (the uid of this process) and members of
// `control.group` are operators and may use every op. Nobody else may do anything but
// `hello`/`auth`/`whoami` — not even list: session listings, live output, approvals and the audit
// log are sensitive even masked, and the console has no read-only role worth the risk. A refused
// uid is audited (`operator.refused`).
//
// What is audited, with the operator's identity (identity.subject = the unix user name,
// authMethod `unix-peer`, data.operator = {user, uid, claimed?}): every authenticated connection
// (`operator.auth`), watching a session (`operator.watch`), reading a recording
// (`operator.recording.read`), killing a session (`operator.kill`, written before the kill),
// approving/denying (`approval`, by = the user name, written before the request is released),
// token create/revoke. Listings and audit searches are not (they would flood the log).
//
// A malformed line gets an error response and the connection stays open. A subscriber that falls
// more than 8 MiB behind loses that subscription (`sub.end`), never slowing a session down.
import { chmodSync, chownSync, existsSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { execFileSync } from 'node:child_process';
import { readAudit, tailAudit, type AuditFilter } from '../core/audit-read.js';
import type { AuditEvent } from '../core/audit-common.js';
import type { Core } from '../core/core.js';
import type { Logger } from '../core/log.js';
import type { IdentityService } from '../identity/index.js';
import { PortcullisError } from '../policy/types.js';
import { parseDuration } from '../config/config.js';
import { SessionActivity } from './activity.js';
import { PeerAuth } from './peercred.js';
import { PROTOCOL_VERSION, type ControlRequest, type HelloResult, type OperatorIdentity } from './protocol.js';
import { recordingOps } from './recordings.js';
import { UserDb } from './users.js';
import { subscribeEvents, watchSession, type Subscription } from './watch.js';

export type { ControlRequest } from './protocol.js';

interface Conn {
  operator: OperatorIdentity | null;
  claimed?: string;
  nonce: string | null;
  subs: Map<string, () => void>;
}

type Handler = (args: Record<string, unknown>, conn: Conn) => Promise<unknown>;
interface Op {
  /** public: before authentication (hello, auth, whoami). */
  access: 'public' | 'operator';
  run: Handler;
}

const SUBSCRIPTION = Symbol('subscription');
type SubResult = Subscription & { [SUBSCRIPTION]: true };
const sub = (s: Subscription): SubResult => Object.assign(s, { [SUBSCRIPTION]: true as const });
const isSub = (v: unknown): v is SubResult => typeof v === 'object' && v !== null && SUBSCRIPTION in v;

/** Most unsent bytes a subscriber may have before its subscription is ended. */
export const MAX_BEHIND_BYTES = 8 * 1024 * 1024;
const MAX_SUBS_PER_CONN = 16;

function str(args: Record<string, unknown>, k: string, required = true): string | undefined {
  const v = args[k];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string' || v === '') throw new PortcullisError('bad_request', `"${k}" must be a non-empty string`);
  return v;
}

function groupId(name: string): number | null {
  try {
    const line = execFileSync('getent', ['group', name], { encoding: 'utf8' }).trim();
    const gid = Number(line.split(':')[2]);
    return Number.isInteger(gid) ? gid : null;
  } catch {
    return null;
  }
}

function time(v: string | undefined, k: string): Date | undefined {
  if (v === undefined) return undefined;
  if (/^\d+(ms|s|m|h|d)$/.test(v)) return new Date(Date.now() - parseDuration(v));
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new PortcullisError('bad_request', `"${k}" must be an ISO-8601 time or a duration like 1h, got "${v}"`);
  return new Date(t);
}

export interface ControlServerOptions {
  socket: string;
  /** control.group: its members are operators. */
  group?: string;
  log: Logger;
  identity?: IdentityService;
  /** The service user's uid (default: this process' uid). */
  serviceUid?: number;
  /** passwd/group files (tests). */
  users?: UserDb;
}

export async function startControlServer(core: Core, opts: ControlServerOptions): Promise<{ close(): Promise<void>; readonly authDir: string }> {
  const serviceUid = opts.serviceUid ?? process.getuid?.() ?? 0;
  const users = opts.users ?? new UserDb();
  const activity = new SessionActivity(core);
  if (existsSync(opts.socket)) rmSync(opts.socket, { force: true });
  const peers = PeerAuth.setup(opts.socket, (m) => opts.log.warn(m));

  const auditOp = async (type: string, op: OperatorIdentity, data: Record<string, unknown> = {}, session?: string) => {
    await core.audit.append(
      {
        type,
        ...(session ? { session } : {}),
        identity: { subject: op.user, groups: op.groups, authMethod: 'unix-peer' },
        data: { operator: { user: op.user, uid: op.uid, ...(op.claimed && op.claimed !== op.user ? { claimed: op.claimed } : {}) }, ...data },
      },
      { durable: true },
    );
  };

  const roleOf = (uid: number): OperatorIdentity => {
    const u = users.byUid(uid);
    const base = { uid, user: u.name, groups: u.groups };
    if (uid === 0) return { ...base, role: 'operator', why: 'root' };
    if (uid === serviceUid) return { ...base, role: 'operator', why: 'the service user' };
    if (opts.group && u.known && users.inGroup(u, opts.group)) return { ...base, role: 'operator', why: `member of control.group ${opts.group}` };
    return {
      ...base,
      role: 'none',
      why: opts.group ? `${u.name} (uid ${uid}) is not root, the service user or a member of control.group "${opts.group}"` : `${u.name} (uid ${uid}) is not root or the service user (no control.group is configured)`,
    };
  };

  const identity = (): IdentityService => {
    if (!opts.identity) throw new PortcullisError('unavailable', 'API tokens are not managed by this bastion');
    return opts.identity;
  };
  const me = (conn: Conn): OperatorIdentity => conn.operator as OperatorIdentity;

  const ops: Record<string, Op> = {
    hello: {
      access: 'public',
      run: async (args, conn) => {
        const claimed = args.operator;
        if (typeof claimed === 'string' && claimed) conn.claimed = claimed.slice(0, 64);
        if (conn.nonce) peers.forget(conn.nonce);
        const c = peers.challenge();
        conn.nonce = c.nonce;
        return { version: '0.1.0', protocol: PROTOCOL_VERSION, policy: core.policy.version, challenge: c } satisfies HelloResult;
      },
    },
    auth: {
      access: 'public',
      run: async (args, conn) => {
        const nonce = str(args, 'nonce') as string;
        if (nonce !== conn.nonce) throw new PortcullisError('auth_failed', 'that is not the challenge this connection was given (say hello first)');
        conn.nonce = null;
        const uid = await peers.verify(nonce);
        const op: OperatorIdentity = { ...roleOf(uid), ...(conn.claimed ? { claimed: conn.claimed } : {}) };
        conn.operator = op;
        if (op.role !== 'operator') {
          await auditOp('operator.refused', op, { why: op.why }).catch((e: unknown) => opts.log.error('audit write failed', { error: String(e) }));
          opts.log.warn('control socket: refused a non-operator', { uid, user: op.user });
          throw new PortcullisError('not_operator', `refused: ${op.why}`);
        }
        await auditOp('operator.auth', op, { why: op.why });
        return op;
      },
    },
    whoami: {
      access: 'public',
      run: async (_args, conn) => {
        if (!conn.operator) throw new PortcullisError('not_authenticated', 'not authenticated yet: say hello and answer the challenge');
        return conn.operator;
      },
    },
    'sessions.list': { access: 'operator', run: async () => activity.list() },
    'session.kill': {
      access: 'operator',
      run: async (args, conn) => {
        const id = str(args, 'id') as string;
        if (!activity.view(id)) throw new PortcullisError('session_not_found', `no live session ${id}`);
        const reason = str(args, 'reason', false);
        // Write-ahead: the kill is on record before it happens.
        await auditOp('operator.kill', me(conn), { reason: reason ?? null }, id);
        const ok = await core.killSession(id, `killed by operator ${me(conn).user}${reason ? `: ${reason}` : ''}`);
        if (!ok) throw new PortcullisError('session_not_found', `no live session ${id}`);
        return { killed: id };
      },
    },
    'session.watch': {
      access: 'operator',
      run: async (args, conn) => {
        const id = str(args, 'id') as string;
        const s = watchSession(core, activity, id, { replay: args.replay !== false });
        await auditOp('operator.watch', me(conn), {}, id);
        return sub(s);
      },
    },
    'events.subscribe': {
      access: 'operator',
      run: async (args) => {
        const types = args.types === undefined ? undefined : Array.isArray(args.types) && args.types.every((t) => typeof t === 'string') ? (args.types as string[]) : null;
        if (types === null) throw new PortcullisError('bad_request', '"types" must be an array of event type names');
        return sub(subscribeEvents(core, types));
      },
    },
    unsubscribe: {
      access: 'operator',
      run: async (args, conn) => {
        const key = String(args.sub ?? '');
        const stop = conn.subs.get(key);
        if (!stop) throw new PortcullisError('bad_request', `no subscription ${key} on this connection`);
        stop();
        conn.subs.delete(key);
        return { unsubscribed: args.sub };
      },
    },
    'approvals.list': {
      access: 'operator',
      run: async (args) => {
        const state = str(args, 'state', false);
        if (state !== undefined && !['pending', 'approved', 'denied', 'expired'].includes(state)) throw new PortcullisError('bad_request', `unknown state "${state}"`);
        return core.approvals.list(state as 'pending' | undefined);
      },
    },
    'approval.decide': {
      access: 'operator',
      run: async (args, conn) => {
        const id = str(args, 'id') as string;
        const decision = str(args, 'decision') as string;
        if (decision !== 'approved' && decision !== 'denied') throw new PortcullisError('bad_request', '"decision" must be approved or denied');
        const reason = str(args, 'reason', false);
        const scope = str(args, 'scope', false);
        if (scope !== undefined && scope !== 'once' && scope !== 'same-request') throw new PortcullisError('bad_request', '"scope" must be once or same-request');
        const forMs = args.forMs;
        if (forMs !== undefined && typeof forMs !== 'number') throw new PortcullisError('bad_request', '"forMs" must be a number of milliseconds');
        return core.approvals.decide(id, decision, me(conn).user, reason, { ...(scope ? { scope } : {}), ...(forMs !== undefined ? { forMs } : {}) });
      },
    },
    // Damage budgets: every counter with its limits (console; /metrics reads core.budgets.snapshot()).
    'budgets.list': { access: 'operator', run: async () => core.budgets.snapshot() },
    'audit.search': {
      access: 'operator',
      run: async (args) => {
        const f: AuditFilter = {};
        for (const k of ['subject', 'target', 'effect', 'protocol', 'type', 'session', 'text'] as const) {
          const v = str(args, k, false);
          if (v !== undefined) f[k] = v;
        }
        if (f.effect !== undefined && !['allow', 'deny', 'review'].includes(f.effect)) throw new PortcullisError('bad_request', '"effect" must be allow, deny or review');
        const since = time(str(args, 'since', false), 'since');
        const until = time(str(args, 'until', false), 'until');
        if (since) f.since = since;
        if (until) f.until = until;
        const limit = args.limit === undefined ? 100 : Number(args.limit);
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new PortcullisError('bad_request', '"limit" must be a whole number from 1 to 1000');
        const out: AuditEvent[] = [];
        // Default: the most recent matches (oldest first); first: true gives the oldest.
        if (args.first === true) for await (const e of readAudit(core.dataDir, { ...f, limit })) out.push(e);
        else for await (const e of tailAudit(core.dataDir, limit, false, undefined, { filter: f })) out.push(e);
        return out;
      },
    },
    ...recordingOps<Conn>(core, activity, (type, conn, data, session) => auditOp(type, me(conn), data, session)),
    // API tokens go through the running bastion: its store is the one that is read and compacted.
    'token.create': {
      access: 'operator',
      run: async (args, conn) => {
        const subject = str(args, 'subject') as string;
        const groups = Array.isArray(args.groups) ? args.groups.filter((g): g is string => typeof g === 'string') : [];
        const ttlMs = args.ttlMs === null ? null : typeof args.ttlMs === 'number' ? args.ttlMs : undefined;
        const created = await identity().createToken({ subject, groups, ttlMs });
        await auditOp('operator.token.create', me(conn), { id: created.record.id, subject, groups });
        return created;
      },
    },
    'token.list': { access: 'operator', run: async () => identity().listTokens() },
    'token.revoke': {
      access: 'operator',
      run: async (args, conn) => {
        const r = await identity().revokeToken(str(args, 'id') as string);
        await auditOp('operator.token.revoke', me(conn), { id: r.info.id, already: r.already });
        return r;
      },
    },
  };

  const conns = new Set<Socket>();
  const server: Server = createServer((sock: Socket) => {
    conns.add(sock);
    const conn: Conn = { operator: null, nonce: null, subs: new Map() };
    let buf = '';
    sock.setEncoding('utf8');
    const write = (o: unknown) => {
      if (!sock.destroyed) sock.write(JSON.stringify(o) + '\n');
    };
    const dispatch = (req: ControlRequest) => {
      const op = ops[req.op];
      if (!op) {
        write({ id: req.id, ok: false, error: { code: 'unknown_op', message: `unknown op "${req.op}"; ops: ${Object.keys(ops).join(', ')}` } });
        return;
      }
      if (op.access === 'operator') {
        if (!conn.operator) {
          write({ id: req.id, ok: false, error: { code: 'not_authenticated', message: 'not authenticated: say hello and answer the challenge first (ControlClient does)' } });
          return;
        }
        if (conn.operator.role !== 'operator') {
          write({ id: req.id, ok: false, error: { code: 'not_operator', message: `refused: ${conn.operator.why}` } });
          return;
        }
      }
      const args = req.args && typeof req.args === 'object' && !Array.isArray(req.args) ? req.args : {};
      op.run(args, conn).then(
        (result) => {
          if (!isSub(result)) {
            write({ id: req.id, ok: true, result });
            return;
          }
          const key = String(req.id ?? '');
          if (req.id === undefined || conn.subs.has(key)) {
            write({ id: req.id, ok: false, error: { code: 'bad_request', message: 'a subscribing request needs an id not in use by another subscription on this connection' } });
            return;
          }
          if (conn.subs.size >= MAX_SUBS_PER_CONN) {
            write({ id: req.id, ok: false, error: { code: 'too_many_subscriptions', message: `at most ${MAX_SUBS_PER_CONN} subscriptions per connection` } });
            return;
          }
          write({ id: req.id, ok: true, result: result.result });
          let ended = false;
          let stop: () => void = () => undefined;
          const end = (reason: string) => {
            if (ended) return;
            ended = true;
            stop();
            conn.subs.delete(key);
            write({ event: 'sub.end', sub: req.id, data: { reason } });
          };
          const push = (event: string, data: unknown) => {
            if (ended || sock.destroyed) return;
            if (sock.writableLength > MAX_BEHIND_BYTES) {
              end(`the client fell more than ${MAX_BEHIND_BYTES} bytes behind; subscribe again`);
              return;
            }
            write({ event, sub: req.id, data });
          };
          conn.subs.set(key, () => end('unsubscribed'));
          try {
            stop = result.start(push, end);
            if (ended) stop();
          } catch (e) {
            end(`the subscription failed: ${(e as Error).message}`);
          }
        },
        (e: unknown) =>
          write({ id: req.id, ok: false, error: e instanceof PortcullisError ? { code: e.code, message: e.message } : { code: 'internal_error', message: String((e as Error)?.message ?? e) } }),
      );
    };
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        let req: ControlRequest;
        try {
          req = JSON.parse(line) as ControlRequest;
          if (typeof req !== 'object' || req === null || Array.isArray(req) || typeof req.op !== 'string') throw new Error('expected {"id": …, "op": "...", "args": {...}}');
        } catch (e) {
          write({ ok: false, error: { code: 'bad_json', message: (e as Error).message } });
          continue;
        }
        dispatch(req);
      }
      if (buf.length > 1 << 20) {
        write({ ok: false, error: { code: 'line_too_long', message: 'request line over 1 MiB' } });
        sock.destroy();
      }
    });
    const cleanup = () => {
      conns.delete(sock);
      for (const stop of [...conn.subs.values()]) stop();
      conn.subs.clear();
      if (conn.nonce) peers.forget(conn.nonce);
    };
    sock.on('close', cleanup);
    sock.on('error', () => undefined);
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(opts.socket, () => res());
  });
  chmodSync(opts.socket, 0o660);
  if (opts.group) {
    const gid = groupId(opts.group);
    if (gid === null) opts.log.warn('control.group does not exist; the control socket keeps the service group', { group: opts.group });
    else chownSync(opts.socket, process.getuid?.() ?? 0, gid);
  }
  return {
    authDir: peers.dir,
    close: () =>
      new Promise<void>((res) => {
        activity.close();
        peers.close();
        server.close(() => res());
        for (const s of conns) s.destroy();
        rmSync(opts.socket, { force: true });
      }),
  };
}
