// Request → actions: the one place that calls the protocol fact extractors. A request is allowed
// only when every one of its actions is; a request that cannot be parsed becomes one
// `unparseable` action, which no allow rule matches (fail closed).
import { kubeFacts } from './kube/index.js';
import { shellFactsCached } from './shell/index.js';
import { initSqlParser, sqlFactsCached } from './sql/index.js';
import {
  PortcullisError,
  type ForwardInfo,
  type KubeFacts,
  type PolicyRequest,
  type Protocol,
  type ShellCommand,
  type SqlAction,
} from './types.js';

export type Action =
  | { kind: 'sql'; protocol: 'postgres'; sql: SqlAction; text: string }
  | { kind: 'shell'; protocol: 'ssh'; cmd: ShellCommand }
  | { kind: 'forward'; protocol: 'ssh'; fwd: ForwardInfo }
  | { kind: 'kube'; protocol: 'kubernetes'; kube: KubeFacts }
  | { kind: 'unparseable'; protocol: Protocol; code: string; message: string };

export type ActionKind = Action['kind'];

/** Load what the extractors need (the WASM SQL parser). Call once at start-up. */
export async function initFacts(): Promise<void> {
  await initSqlParser();
}

function unparseable(protocol: Protocol, e: unknown): Action {
  if (e instanceof PortcullisError) return { kind: 'unparseable', protocol, code: e.code, message: e.message };
  return { kind: 'unparseable', protocol, code: 'internal_error', message: `fact extraction failed: ${(e as Error)?.message ?? String(e)}` };
}

export function requestActions(req: PolicyRequest): Action[] {
  switch (req.protocol) {
    case 'postgres': {
      if (typeof req.sql !== 'string') return [unparseable('postgres', new PortcullisError('request_invalid', 'postgres request has no "sql"'))];
      try {
        const facts = sqlFactsCached(req.sql, { searchPath: req.searchPath });
        const out: Action[] = [];
        for (const st of facts.statements) for (const a of st.actions) out.push({ kind: 'sql', protocol: 'postgres', sql: a, text: st.text });
        return out;
      } catch (e) {
        return [unparseable('postgres', e)];
      }
    }
    case 'ssh': {
      if (req.forward) return [{ kind: 'forward', protocol: 'ssh', fwd: req.forward }];
      if (typeof req.command !== 'string') return [unparseable('ssh', new PortcullisError('request_invalid', 'ssh request has neither "command" nor "forward"'))];
      try {
        return shellFactsCached(req.command).commands.map((cmd) => ({ kind: 'shell', protocol: 'ssh', cmd }));
      } catch (e) {
        return [unparseable('ssh', e)];
      }
    }
    case 'kubernetes': {
      if (!req.http) return [unparseable('kubernetes', new PortcullisError('request_invalid', 'kubernetes request has no "http"'))];
      try {
        return [{ kind: 'kube', protocol: 'kubernetes', kube: kubeFacts(req.http.method, req.http.path, req.http.query) }];
      } catch (e) {
        return [unparseable('kubernetes', e)];
      }
    }
    default:
      return [unparseable(req.protocol, new PortcullisError('protocol_unknown', `unknown protocol "${String(req.protocol)}"`))];
  }
}

/** A short human description of an action, for explanations and audit summaries. */
export function describeAction(a: Action): string {
  switch (a.kind) {
    case 'sql': {
      const s = a.sql;
      const what = s.relation ?? s.function ?? s.setting ?? s.transaction ?? s.object ?? '';
      const extra = s.where === false ? ' (no WHERE)' : s.copy ? ` (${s.copy.direction} ${s.copy.target})` : '';
      return `sql ${s.action}${what ? ' ' + what : ''}${extra}${s.nested ? ` [${s.nested}]` : ''}`;
    }
    case 'shell': {
      const c = a.cmd;
      const prog = c.dynamic ? '<dynamic>' : (c.program ?? '?');
      const args = c.args.map((x) => (x === '\u0000dynamic' ? '<dynamic>' : x)).join(' ');
      return `exec ${prog}${args ? ' ' + args : ''}${c.wrappers.length ? ` [via ${c.wrappers.join(' > ')}]` : ''}`;
    }
    case 'forward':
      return `forward ${a.fwd.direction} ${a.fwd.host}:${a.fwd.port}`;
    case 'kube': {
      const k = a.kube;
      if (!k.isResourceRequest) return `kube ${k.verb} ${k.path}`;
      const res = k.subresource ? `${k.resource}/${k.subresource}` : k.resource;
      return `kube ${k.verb} ${k.apiGroup ? k.apiGroup + '/' : ''}${res}${k.name ? ' ' + k.name : ''}${k.namespace ? ' in ' + k.namespace : ` (${k.scope})`}`;
    }
    case 'unparseable':
      return `unparseable (${a.code}): ${a.message}`;
  }
}
