// The request/decision model shared by every proxy, the policy engine, the audit log and the CLI.
// See CONTRACT.md "Requests and decisions". Facts types are produced by the protocol fact
// extractors (sql/, shell/, kube/) and matched by the engine (engine.ts).

export type Protocol = 'postgres' | 'ssh' | 'kubernetes';
export const PROTOCOLS: readonly Protocol[] = ['postgres', 'ssh', 'kubernetes'];

export type Effect = 'allow' | 'deny' | 'review';

/** Who is asking. Produced by src/identity; policy matches on every field. */
export interface Identity {
  subject: string;
  groups: string[];
  issuer?: string;
  /** 'api-token' | 'oidc' | 'ssh-key' | 'ssh-cert' | 'demo' | ... */
  authMethod?: string;
  /** Unix ms when the credential stops being valid. */
  expiresAt?: number;
}

export interface HttpRequestInfo {
  method: string;
  /** May carry the query string (`/api/v1/pods?watch=true`). */
  path: string;
  /** Query string without the leading `?`, when it is not part of `path`. */
  query?: string;
}

export interface ForwardInfo {
  /** 'local' for -L / direct-tcpip, 'remote' for -R / tcpip-forward. */
  direction: 'local' | 'remote';
  host: string;
  port: number;
}

/** One request to decide. Exactly one of sql / command / http / forward is set. */
export interface PolicyRequest {
  protocol: Protocol;
  identity: Identity;
  target: string;
  /** PostgreSQL: the statement string (may hold several statements). */
  sql?: string;
  /** PostgreSQL: the connection's current search_path (default ["public"]). */
  searchPath?: string[];
  /** SSH: a command line (exec request or an interactive line). */
  command?: string;
  /** Kubernetes: the HTTP request line. */
  http?: HttpRequestInfo;
  /** SSH: port forwarding. */
  forward?: ForwardInfo;
  /** Unix ms the request is decided at (default: now). Used by time windows. */
  time?: number;
  /** The agent's stated reason, if any. */
  reason?: string;
}

export type MaskStrategy = 'redact' | 'partial' | 'last4' | 'hash' | 'null' | 'fixed';

/**
 * A mask the proxy must apply to what the target returns. Either `column` (a fully qualified
 * `schema.table.column`), `detector` (a detector id from src/masking, applied to every value), or
 * `resource` + `field` (Kubernetes: e.g. secrets + data).
 */
export interface MaskSpec {
  column?: string;
  detector?: string;
  resource?: string;
  field?: string;
  strategy: MaskStrategy;
  /** partial: characters kept at the start / end. */
  keepFirst?: number;
  keepLast?: number;
  /** fixed: the replacement value. */
  value?: string;
  /** file:id of the rule that asked for this mask. */
  rule: string;
}

/**
 * Why a decision stops a request when the plain effect does not say it all (see core/outcome.ts):
 * the request could not be parsed, a damage budget is exhausted, or a review rule requires the
 * agent to state a reason and none (or too short a one) was given.
 */
export type DecisionCode = 'unparseable' | 'budget_exceeded' | 'reason_required';

export interface Decision {
  effect: Effect;
  /** `file:id` of the deciding rule, or `default-deny`. */
  rule: string;
  reason: string;
  remedy?: string;
  masks: MaskSpec[];
  code?: DecisionCode;
  /** When retrying can succeed (budgets that reset), seconds from now. */
  retryAfterS?: number;
  /** For review: what the approval needs (from the review rule's options). */
  approval?: { approvers?: number; timeoutMs?: number };
}

// ---------------------------------------------------------------------------------------------
// Facts: what the engine matches rules against. Each request becomes a list of *actions*; a
// request is allowed only when every action is allowed; any denied action denies the request;
// any action under review puts the whole request under review (deny > review > allow).
// ---------------------------------------------------------------------------------------------

export type SqlActionKind =
  | 'read' // a query reads a relation (or reads none: then `relation` is absent)
  | 'insert' | 'update' | 'delete' | 'merge' | 'truncate'
  | 'create' | 'drop' | 'alter' | 'grant' | 'revoke' | 'comment' | 'reindex' | 'cluster' | 'vacuum' | 'analyze' | 'refresh'
  | 'call' // a function or procedure call anywhere in the statement
  | 'copy'
  | 'set' | 'reset' | 'show'
  | 'transaction'
  | 'do' | 'load' | 'set_role' | 'session_authorization' | 'alter_system'
  | 'prepare' | 'execute' | 'deallocate'
  | 'declare' | 'fetch' | 'close'
  | 'listen' | 'notify' | 'unlisten' | 'lock' | 'discard' | 'checkpoint'
  | 'utility'; // any other statement kind; `command` names it

export interface SqlAction {
  action: SqlActionKind;
  /** Index of the statement in the string (0-based). */
  statement: number;
  /** The statement's command tag-like name, e.g. `SELECT`, `DELETE`, `CREATE TABLE`, `EXPLAIN`. */
  command: string;
  /** Fully qualified `schema.name` of the relation (or other schema object) acted on. */
  relation?: string;
  schema?: string;
  /** For update/delete: the statement has a WHERE clause (or WHERE CURRENT OF). */
  where?: boolean;
  /** For call: `schema.name` when written qualified, else the bare name. */
  function?: string;
  /** For DDL: the object kind (`table`, `index`, `view`, `function`, `procedure`, `schema`, `role`, `extension`, ...). */
  object?: string;
  /** For copy. */
  copy?: { direction: 'to' | 'from'; target: 'program' | 'file' | 'stdio' };
  /** For set / reset / show: the setting name, lower case (`all` for RESET ALL / SHOW ALL). */
  setting?: string;
  /** For set: the literal value, as written. */
  value?: string;
  /** For transaction: BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE, ROLLBACK TO, PREPARE TRANSACTION, ... */
  transaction?: string;
  /** How the action was reached when not at the top level of its statement. */
  nested?: 'cte' | 'explain' | 'explain-analyze' | 'prepare' | 'create-as' | 'declare' | 'copy' | 'subquery' | 'rule';
}

export interface SqlStatementFacts {
  index: number;
  /** The statement's own text (a slice of the input). */
  text: string;
  command: string;
  actions: SqlAction[];
}

export interface SqlFacts {
  statements: SqlStatementFacts[];
  /** The search_path in force after the last statement (follows SET search_path). */
  searchPathAfter: string[];
}

export type ShellStdin = 'pipe' | 'heredoc' | 'herestring' | 'file';

export interface ShellCommand {
  /** Basename of the program, or null when it is computed at run time. */
  program: string | null;
  /** argv[1..] as literal strings; a word that is not a literal is given as `\u0000dynamic`. */
  args: string[];
  /** Short flags as single letters (`-rf` → r, f) and long flags without dashes (`--force` → force). */
  flags: string[];
  /** The program word is computed at run time ($var, $(…), `…`, eval). */
  dynamic: boolean;
  /** Where stdin comes from, when not the terminal. */
  stdin: ShellStdin | null;
  /** Program of the command feeding this one through a pipe (basename), if any. */
  pipedFrom: string | null;
  /** Output/input redirections: op (`>`, `>>`, `<`, `2>`, ...) and target word. */
  redirects: { op: string; target: string }[];
  /** Wrappers this command was unwrapped from, outermost first (e.g. ['sudo', 'bash -c']). */
  wrappers: string[];
  /** Where it stood: 'top', 'subst' ($(…) or backticks), 'subshell', 'proc-subst', 'function'. */
  context: string;
}

export interface ShellFacts {
  commands: ShellCommand[];
}

export interface KubeFacts {
  /** The canonical path without query. */
  path: string;
  isResourceRequest: boolean;
  /** get, list, watch, create, update, patch, delete, deletecollection, proxy, or the lower-cased HTTP method for non-resource URLs. */
  verb: string;
  apiPrefix: string; // 'api' | 'apis' | '' (non-resource)
  apiGroup: string; // '' for core
  apiVersion: string;
  namespace: string;
  resource: string;
  subresource: string;
  name: string;
  /** cluster: a cluster-scoped resource; namespace: one namespace; all-namespaces: a namespaced resource across all. */
  scope: 'cluster' | 'namespace' | 'all-namespaces' | 'none';
  /** Discovery documents: /api, /apis, /apis/<group>[/<version>], /api/v1, /version, /openapi/…. */
  discovery: boolean;
  query: Record<string, string[]>;
}

/** A typed error with a stable code, for fact extraction and policy loading. */
export class PortcullisError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'PortcullisError';
  }
}
