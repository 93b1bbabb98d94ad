// The control socket: a unix socket speaking JSON lines, used by the CLI (`sessions`,
// `approvals`, `approve`, `deny`, `kill`) and later by the console (tui/). One request per line:
//   {"id":1,"op":"approvals.list","args":{"state":"pending"}}
// one response per request: {"id":1,"ok":true,"result":…} or {"id":1,"ok":false,"error":{code,message}}.
// A malformed line gets an error response and the connection stays open.
//
// Who may act: the socket is created mode 0660 (group: control.group when configured), so only
// root, the service user and the operator group can connect at all. The operator's name is the
// one the client states in `hello`; SO_PEERCRED verification of it lands with the console (issue
// #8) — until then the socket's file permissions are the access control.
import { chmodSync, chownSync, existsSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { execFileSync } from 'node:child_process';
import type { Core } from '../core/core.js';
import type { Logger } from '../core/log.js';
import type { IdentityService } from '../identity/index.js';
import { PortcullisError } from '../policy/types.js';

export interface ControlRequest {
  id?: number | string;
  op: string;
  args?: Record<string, unknown>;
}

type Handler = (args: Record<string, unknown>, conn: { operator: string | null }) => Promise<unknown>;

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

export async function startControlServer(core: Core, opts: { socket: string; group?: string; log: Logger; identity?: IdentityService }): Promise<{ close(): Promise<void> }> {
  const identity = (): IdentityService => {
    if (!opts.identity) throw new PortcullisError('unavailable', 'API tokens are not managed by this bastion');
    return opts.identity;
  };
  const handlers: Record<string, Handler> = {
    hello: async (args, conn) => {
      conn.operator = str(args, 'operator') ?? null;
      return { version: '0.1.0', policy: core.policy.version };
    },
    'sessions.list': async () => core.listSessions(),
    'session.kill': async (args, conn) => {
      const id = str(args, 'id') as string;
      const ok = await core.killSession(id, `killed by operator ${conn.operator ?? 'unknown'}`);
      if (!ok) throw new PortcullisError('session_not_found', `no live session ${id}`);
      await core.audit.append({ type: 'operator.kill', session: id, data: { operator: conn.operator } }, { durable: true });
      return { killed: id };
    },
    'approvals.list': async (args) => {
      const state = str(args, 'state', false);
      if (state !== undefined && !['pending', 'approved', 'denied', 'expired'].includes(state)) throw new PortcullisError('bad_request', `unknown state "${state}"`);
      return core.approvals.list(state as 'pending' | undefined);
    },
    // API tokens go through the running bastion: its store is the one that is read and compacted.
    'token.create': async (args, conn) => {
      const subject = str(args, 'subject') as string;
      const groups = Array.isArray(args.groups) ? args.groups.filter((g): g is string => typeof g === 'string') : [];
      const ttlMs = args.ttlMs === null ? null : typeof args.ttlMs === 'number' ? args.ttlMs : undefined;
      const created = await identity().createToken({ subject, groups, ttlMs });
      await core.audit.append({ type: 'operator.token.create', data: { operator: conn.operator, id: created.record.id, subject, groups } }, { durable: true });
      return created;
    },
    'token.list': async () => identity().listTokens(),
    'token.revoke': async (args, conn) => {
      const r = await identity().revokeToken(str(args, 'id') as string);
      await core.audit.append({ type: 'operator.token.revoke', data: { operator: conn.operator, id: r.info.id, already: r.already } }, { durable: true });
      return r;
    },
    'approval.decide': async (args, conn) => {
      if (!conn.operator) throw new PortcullisError('not_identified', 'say hello with your operator name first');
      const id = str(args, 'id') as string;
      const decision = str(args, 'decision') as string;
      if (decision !== 'approved' && decision !== 'denied') throw new PortcullisError('bad_request', '"decision" must be approved or denied');
      const reason = str(args, 'reason', false);
      const scope = str(args, 'scope', false);
      if (scope !== undefined && scope !== 'once' && scope !== 'same-request') throw new PortcullisError('bad_request', '"scope" must be once or same-request');
      const forMs = args.forMs;
      if (forMs !== undefined && typeof forMs !== 'number') throw new PortcullisError('bad_request', '"forMs" must be a number of milliseconds');
      return core.approvals.decide(id, decision, conn.operator, reason, { ...(scope ? { scope } : {}), ...(forMs !== undefined ? { forMs } : {}) });
    },
    // Damage budgets: every counter with its limits (console; /metrics reads core.budgets.snapshot()).
    'budgets.list': async () => core.budgets.snapshot(),
  };

  if (existsSync(opts.socket)) rmSync(opts.socket, { force: true });
  const server: Server = createServer((sock: Socket) => {
    const conn = { operator: null as string | null };
    let buf = '';
    sock.setEncoding('utf8');
    const reply = (o: unknown) => {
      if (!sock.destroyed) sock.write(JSON.stringify(o) + '\n');
    };
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 1 << 20) {
        reply({ ok: false, error: { code: 'line_too_long', message: 'request line over 1 MiB' } });
        sock.destroy();
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        let req: ControlRequest;
        try {
          req = JSON.parse(line) as ControlRequest;
          if (typeof req !== 'object' || req === null || typeof req.op !== 'string') throw new Error('expected {"op": "...", "args": {...}}');
        } catch (e) {
          reply({ ok: false, error: { code: 'bad_json', message: (e as Error).message } });
          continue;
        }
        const h = handlers[req.op];
        if (!h) {
          reply({ id: req.id, ok: false, error: { code: 'unknown_op', message: `unknown op "${req.op}"; ops: ${Object.keys(handlers).join(', ')}` } });
          continue;
        }
        const args = req.args && typeof req.args === 'object' ? req.args : {};
        h(args, conn).then(
          (result) => reply({ id: req.id, ok: true, result }),
          (e: unknown) =>
            reply({ id: req.id, ok: false, error: e instanceof PortcullisError ? { code: e.code, message: e.message } : { code: 'internal_error', message: String((e as Error)?.message ?? e) } }),
        );
      }
    });
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
    close: () =>
      new Promise<void>((res) => {
        server.close(() => res());
        rmSync(opts.socket, { force: true });
      }),
  };
}
