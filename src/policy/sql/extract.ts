// SQL → facts (see SqlFacts in ../types.ts), from PostgreSQL's own parse tree.
//
// Shape of the walk: every statement node is dispatched to a handler that knows what the
// statement does (its actions) and how its parts are reached (CTE scope, nesting, search path);
// every field a handler does not consume itself is then walked *generically*, so that a node kind
// nobody thought of — a subquery in an odd place, a statement nested in another — is still seen.
// An unknown statement kind becomes a `create`/`alter`/`drop` (by its name) or `utility` action,
// a RangeVar found in an unknown place becomes a `read`, a FuncCall anywhere becomes a `call`.
// Over-report rather than under-report.
//
// Names: identifiers come folded by the parser (unquoted → lower case, quoted kept). A qualified
// name is taken as written; an unqualified one resolves through the search path in force — one
// action per candidate schema when it could be more than one (the policy then sees all of them),
// plus pg_catalog for pg_* names (pg_catalog is searched first and holds only pg_* relations);
// new objects go to the first schema of the path. CTE names shadow tables only in their WITH's
// scope, never a qualified name and never the target of INSERT/UPDATE/DELETE/MERGE.
//
// Nesting: `nested` is the outermost wrapper an action was reached through (EXPLAIN over a CTE
// inside it, …), so that a policy can tell a statement that runs now from one that only gets
// explained, prepared or defined. Statements defined now and run later — view queries, rule
// actions, SQL function bodies — are reported with nested 'create-as' / 'rule' (the union in
// types.ts has no separate kind for function bodies).

import { PortcullisError, type SqlAction, type SqlActionKind, type SqlFacts, type SqlStatementFacts } from '../types.js';
import { asNode, constValue, isObj, isRangeVar, list, nameList, nodeBody, str, stringConst, stringNode, type Obj } from './ast.js';
import { FIXED_TAGS, TRANSACTION_NAMES, TRANSACTION_TAGS, objectName, objectTag, tagFromNodeType } from './names.js';
import { parseStatements } from './parser.js';
import { SearchPathState, splitIdentifierString } from './searchpath.js';

export interface SqlFactsOptions {
  /** The connection's search_path (default `["public"]`); `$user` / `"$user"` stand for `user`. */
  searchPath?: string[];
  /** The current user (for `$user`). */
  user?: string;
  /**
   * What `RESET search_path` / `SET search_path TO DEFAULT` / `DISCARD ALL` go back to
   * (default PostgreSQL's `"$user", public`).
   */
  defaultSearchPath?: string[];
}

type Nested = NonNullable<SqlAction['nested']>;

interface CteScope {
  names: Set<string>;
  parent: CteScope | null;
}

/** Per-call state. */
interface Run {
  /** Some fact depends on a literal's value (SET values, set_config, EXPLAIN option values, …). */
  literalSensitive: boolean;
  path: SearchPathState;
  defaultPath: readonly string[];
}

interface Stmt {
  index: number;
  command: string;
  actions: SqlAction[];
  /** Keys of the actions, once there are many. */
  keys: Set<string> | null;
  reads: number;
  run: Run;
}

interface Ctx {
  st: Stmt;
  /** How this part was reached (the outermost wrapper wins: `EXPLAIN` over `cte`, …). */
  nested: Nested | undefined;
  ctes: CteScope | null;
  /** The statement node itself (only there do SET / transaction control change the session). */
  top: boolean;
  /** Runs later, not now (PREPARE, DECLARE, views, rules, function bodies). */
  deferred: boolean;
  /** CREATE SCHEMA x <elements>: PostgreSQL sets search_path to x while creating them. */
  pathOverride: readonly string[] | null;
}

const MAX_DEPTH = 4000;
let depth = 0;

function unresolvable(message: string, details: Record<string, unknown> = {}): PortcullisError {
  return new PortcullisError('sql_unresolvable', message, details);
}

// ------------------------------------------------------------------------------------------------
// Entry point

export interface ExtractResult {
  facts: SqlFacts;
  /** [start, end) character offsets of each statement's text. */
  spans: [number, number][];
  literalSensitive: boolean;
}

export function extractSqlFacts(sql: string, opts: SqlFactsOptions = {}): ExtractResult {
  const raw = parseStatements(sql);
  const defaultPath = opts.defaultSearchPath ?? ['$user', 'public'];
  const run: Run = {
    literalSensitive: false,
    path: new SearchPathState({ path: opts.searchPath ?? ['public'], user: opts.user }, defaultPath, opts.user),
    defaultPath,
  };
  const statements: SqlStatementFacts[] = [];
  const spans: [number, number][] = [];
  depth = 0;
  for (let i = 0; i < raw.length; i++) {
    const r = raw[i]!;
    const node = asNode(r.stmt);
    const command = node ? commandOf(node[0], node[1]) : 'UNKNOWN';
    const st: Stmt = { index: i, command, actions: [], keys: null, reads: 0, run };
    const ctx: Ctx = { st, nested: undefined, ctes: null, top: true, deferred: false, pathOverride: null };
    try {
      walkRoot(r.stmt, ctx);
    } catch (e) {
      if (e instanceof RangeError) throw unresolvable(`statement ${i + 1} is too deeply nested to analyse`, { statement: i });
      throw e;
    }
    // Fail safe: every statement yields at least one action.
    if (st.actions.length === 0) emit(ctx, 'utility', {});
    statements.push({ index: i, text: sql.slice(r.start, r.end), command, actions: st.actions });
    spans.push([r.start, r.end]);
  }
  return { facts: { statements, searchPathAfter: run.path.after() }, spans, literalSensitive: run.literalSensitive };
}

// ------------------------------------------------------------------------------------------------
// Actions

type Fields = Omit<Partial<SqlAction>, 'action' | 'statement' | 'command'>;

function emit(ctx: Ctx, action: SqlActionKind, f: Fields, ref?: Ref): void {
  const st = ctx.st;
  const a: SqlAction = { action, statement: st.index, command: st.command };
  const relation = ref ? ref.relation : f.relation;
  const schema = ref ? ref.schema : f.schema;
  if (relation !== undefined) a.relation = relation;
  if (schema !== undefined) a.schema = schema;
  if (f.where !== undefined) a.where = f.where;
  if (f.function !== undefined) a.function = f.function;
  if (f.object !== undefined) a.object = f.object;
  if (f.copy !== undefined) a.copy = f.copy;
  if (f.setting !== undefined) a.setting = f.setting;
  if (f.value !== undefined) a.value = f.value;
  if (f.transaction !== undefined) a.transaction = f.transaction;
  const nested = f.nested ?? ctx.nested;
  if (nested !== undefined) a.nested = nested;
  // Drop exact duplicates (a table read twice is one read): a linear scan while the list is
  // short, a keyed set once it is long (bounds a statement with thousands of relations).
  if (st.keys === null) {
    for (const b of st.actions) if (sameAction(a, b)) return;
    if (st.actions.length >= 32) st.keys = new Set(st.actions.map(actionKey));
  } else {
    const k = actionKey(a);
    if (st.keys.has(k)) return;
    st.keys.add(k);
  }
  st.actions.push(a);
  if (action === 'read') st.reads++;
}

function actionKey(a: SqlAction): string {
  return JSON.stringify([a.action, a.relation, a.schema, a.where, a.function, a.object, a.setting, a.value, a.transaction, a.nested, a.copy?.direction, a.copy?.target]);
}

function sameAction(a: SqlAction, b: SqlAction): boolean {
  return (
    a.action === b.action &&
    a.relation === b.relation &&
    a.schema === b.schema &&
    a.where === b.where &&
    a.function === b.function &&
    a.object === b.object &&
    a.setting === b.setting &&
    a.value === b.value &&
    a.transaction === b.transaction &&
    a.nested === b.nested &&
    a.copy?.direction === b.copy?.direction &&
    a.copy?.target === b.copy?.target
  );
}

interface Ref {
  schema?: string;
  relation?: string;
}

function emitRefs(ctx: Ctx, action: SqlActionKind, refs: Ref[], f: Fields): void {
  if (refs.length === 0) emit(ctx, action, f);
  for (const r of refs) emit(ctx, action, f, r);
}

// ------------------------------------------------------------------------------------------------
// Name resolution

/** `read` and `lookup` resolve alike; kept apart to say what the name is for. */
type Resolve = 'read' | 'lookup' | 'create';

function lookupSchemas(ctx: Ctx): readonly string[] {
  return ctx.pathOverride ?? ctx.st.run.path.lookupSchemas();
}

/** Candidate schema-qualified names for `schema.name` / `name`. */
function resolveName(ctx: Ctx, schema: string | undefined, name: string, how: Resolve, temp = false): Ref[] {
  if (schema !== undefined && schema !== '') return [{ schema, relation: `${schema}.${name}` }];
  if (temp) return [{ schema: 'pg_temp', relation: `pg_temp.${name}` }];
  let schemas: readonly string[];
  if (how === 'create') {
    schemas = ctx.pathOverride ? ctx.pathOverride.slice(0, 1) : ctx.st.run.path.creationSchemas();
    if (schemas.length === 0) {
      throw unresolvable(`no schema to create "${name}" in: the search_path is empty`, { name });
    }
  } else {
    // pg_catalog is always searched, first unless the path names it. It holds only relations
    // named pg_* (system catalogs and views; nothing else can be created there), so it is a
    // candidate for those names only. With nothing else to search, only the session's temporary
    // schema is left.
    const path = lookupSchemas(ctx);
    schemas = name.startsWith('pg_') && !path.includes('pg_catalog') ? ['pg_catalog', ...path] : path;
    if (schemas.length === 0) schemas = ['pg_temp'];
  }
  return schemas.map((s) => ({ schema: s, relation: `${s}.${name}` }));
}

/** `[catalog.]schema.name` as a list → candidates. */
function resolveList(ctx: Ctx, parts: string[], how: Resolve): Ref[] {
  if (parts.length === 0) return [];
  const name = parts[parts.length - 1]!;
  const schema = parts.length >= 2 ? parts[parts.length - 2] : undefined;
  return resolveName(ctx, schema, name, how);
}

function rangeVarRefs(ctx: Ctx, rv: Obj, how: Resolve): Ref[] {
  const name = str(rv.relname) ?? '';
  const temp = how === 'create' && rv.relpersistence === 't';
  return resolveName(ctx, str(rv.schemaname), name, how, temp);
}

function isCte(ctx: Ctx, name: string): boolean {
  for (let s = ctx.ctes; s; s = s.parent) if (s.names.has(name)) return true;
  return false;
}

/** A RangeVar in a FROM-like position: a read, unless it names a CTE in scope. */
function readRangeVar(rv: Obj, ctx: Ctx): void {
  const name = str(rv.relname) ?? '';
  if (str(rv.schemaname) === undefined && isCte(ctx, name)) return;
  emitRefs(ctx, 'read', rangeVarRefs(ctx, rv, 'read'), {});
}

/** The names a DROP / COMMENT / ALTER … OWNER etc. object specification refers to. */
const QUALIFIED_OBJECTS = new Set([
  'OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_INDEX', 'OBJECT_SEQUENCE', 'OBJECT_FOREIGN_TABLE',
  'OBJECT_COLLATION', 'OBJECT_CONVERSION', 'OBJECT_STATISTIC_EXT', 'OBJECT_TSCONFIGURATION',
  'OBJECT_TSDICTIONARY', 'OBJECT_TSPARSER', 'OBJECT_TSTEMPLATE', 'OBJECT_TYPE', 'OBJECT_DOMAIN',
  'OBJECT_FUNCTION', 'OBJECT_PROCEDURE', 'OBJECT_ROUTINE', 'OBJECT_AGGREGATE', 'OBJECT_OPERATOR',
]);
const TABLE_CHILD_OBJECTS = new Set(['OBJECT_TRIGGER', 'OBJECT_RULE', 'OBJECT_POLICY', 'OBJECT_TABCONSTRAINT', 'OBJECT_COLUMN']);

/** A name list from a List / String list / TypeName / ObjectWithArgs node. */
function objectNameParts(item: unknown): string[] | null {
  const direct = nameList(item);
  if (direct) return direct;
  const n = asNode(item);
  const body = n ? n[1] : isObj(item) ? item : null;
  if (!body) return null;
  if (n && n[0] === 'String') return [stringNode(item) ?? ''];
  if (Array.isArray(body.names)) return nameList(body.names); // TypeName
  if (Array.isArray(body.objname)) return nameList(body.objname); // ObjectWithArgs
  return null;
}

function objectRefs(ctx: Ctx, objectType: unknown, item: unknown, how: Resolve): Ref[] {
  const t = typeof objectType === 'string' ? objectType : '';
  if (t === 'OBJECT_SCHEMA') {
    const s = stringNode(item);
    return s !== undefined ? [{ schema: s }] : [];
  }
  if (QUALIFIED_OBJECTS.has(t)) {
    const parts = objectNameParts(item);
    return parts ? resolveList(ctx, parts, how) : [];
  }
  if (TABLE_CHILD_OBJECTS.has(t)) {
    const parts = objectNameParts(item);
    return parts && parts.length >= 2 ? resolveList(ctx, parts.slice(0, -1), how) : [];
  }
  if (t === 'OBJECT_OPCLASS' || t === 'OBJECT_OPFAMILY') {
    const parts = objectNameParts(item);
    return parts && parts.length >= 2 ? resolveList(ctx, parts.slice(1), how) : [];
  }
  if (t === 'OBJECT_DOMCONSTRAINT') {
    const items = list(asNode(item)?.[1].items);
    const parts = objectNameParts(items[0]);
    return parts ? resolveList(ctx, parts, how) : [];
  }
  // Objects that live outside schemas (role, database, extension, language, server, …).
  const s = stringNode(item);
  return s !== undefined ? [{ relation: s }] : [];
}

function roleName(ctx: Ctx, spec: unknown): string | undefined {
  const b = nodeBody(spec, 'RoleSpec');
  if (!b) return undefined;
  const name = str(b.rolename);
  if (name !== undefined) return name;
  if (b.roletype === 'ROLESPEC_CURRENT_USER' || b.roletype === 'ROLESPEC_CURRENT_ROLE' || b.roletype === 'ROLESPEC_SESSION_USER') {
    return ctx.st.run.path.currentUser();
  }
  return undefined;
}

// ------------------------------------------------------------------------------------------------
// The walk

function child(ctx: Ctx): Ctx {
  return ctx.top ? { ...ctx, top: false } : ctx;
}

function nest(ctx: Ctx, nested: Nested, deferred = ctx.deferred): Ctx {
  return { ...ctx, top: false, nested: ctx.nested ?? nested, deferred };
}

function walk(v: unknown, ctx: Ctx): void {
  if (Array.isArray(v)) {
    for (const x of v) if (typeof x === 'object' && x !== null) walk(x, ctx);
    return;
  }
  if (!isObj(v)) return;
  if (++depth > MAX_DEPTH) throw new RangeError('parse tree too deep');
  const n = asNode(v);
  if (n) visit(n[0], n[1], ctx);
  else if (isRangeVar(v)) readRangeVar(v, ctx); // a bare RangeVar in a place not handled below
  else if (Array.isArray(v.funcname) && 'funcformat' in v) funcCall(v, ctx); // a bare FuncCall
  else walkFields(v, ctx, null);
  depth--;
}

function walkFields(o: Obj, ctx: Ctx, skip: readonly string[] | null): void {
  for (const k in o) {
    if (skip !== null && skip.includes(k)) continue;
    const x = o[k];
    if (typeof x === 'object' && x !== null) walk(x, ctx);
  }
}

/** A query in a position where it *is* the statement (top level, EXPLAIN, PREPARE, COPY, …). */
function walkRoot(v: unknown, ctx: Ctx): void {
  const before = ctx.st.reads;
  walk(v, ctx);
  const n = asNode(v);
  if (n && n[0] === 'SelectStmt' && ctx.st.reads === before) emit(ctx, 'read', {}); // reads no relation
}

function visit(type: string, b: Obj, ctx: Ctx): void {
  switch (type) {
    case 'RangeVar':
      return readRangeVar(b, ctx);
    case 'FuncCall':
      return funcCall(b, ctx);
    case 'SubLink':
    case 'RangeSubselect':
      return walkFields(b, nest(ctx, 'subquery'), null);
    case 'CommonTableExpr': // outside a handled WITH clause: still walked
      return walkFields(b, nest(ctx, 'cte'), null);
    case 'LockingClause':
      return walkFields(b, ctx, ['lockedRels']); // FOR UPDATE OF <alias>: names FROM items, not relations
    case 'SelectStmt':
      return selectStmt(b, ctx);
    case 'InsertStmt':
      return insertStmt(b, ctx);
    case 'UpdateStmt':
      return updateStmt(b, ctx);
    case 'DeleteStmt':
      return deleteStmt(b, ctx);
    case 'MergeStmt':
      return mergeStmt(b, ctx);
    case 'ExplainStmt':
      return explainStmt(b, ctx);
    case 'CopyStmt':
      return copyStmt(b, ctx);
    case 'CreateTableAsStmt':
      return createTableAs(b, ctx);
    case 'ViewStmt':
      return viewStmt(b, ctx);
    case 'CreateStmt':
      return createStmt(b, ctx, 'table');
    case 'CreateForeignTableStmt': {
      const base = nodeBody(b.base, 'CreateStmt');
      if (base) createStmt(base, ctx, 'foreign_table');
      return walkFields(b, child(ctx), ['base']);
    }
    case 'DropStmt':
      return dropStmt(b, ctx);
    case 'AlterTableStmt':
      return alterTable(b, ctx);
    case 'RenameStmt':
      return renameStmt(b, ctx);
    case 'AlterObjectSchemaStmt':
      return alterObjectSchema(b, ctx);
    case 'AlterOwnerStmt':
    case 'AlterObjectDependsStmt':
      return objectStmt(b, ctx, 'alter', b.objectType, ['relation', 'object']);
    case 'CommentStmt':
      return objectStmt(b, ctx, 'comment', b.objtype, ['object']);
    case 'SecLabelStmt':
      return objectStmt(b, ctx, 'alter', b.objtype, ['object']);
    case 'IndexStmt':
      return indexStmt(b, ctx);
    case 'CreateSchemaStmt':
      return createSchema(b, ctx);
    case 'CreateExtensionStmt':
      return createExtension(b, ctx);
    case 'AlterExtensionStmt':
    case 'AlterExtensionContentsStmt':
      emit(ctx, 'alter', { object: 'extension', relation: str(b.extname) });
      return walkFields(b, child(ctx), null);
    case 'CreateRoleStmt':
      emit(ctx, 'create', { object: 'role', relation: str(b.role) });
      return walkFields(b, child(ctx), null);
    case 'AlterRoleStmt':
    case 'AlterRoleSetStmt':
      emit(ctx, 'alter', { object: 'role', relation: roleName(ctx, b.role) });
      return walkFields(b, child(ctx), null);
    case 'DropRoleStmt':
      for (const r of list(b.roles)) emit(ctx, 'drop', { object: 'role', relation: roleName(ctx, r) });
      if (list(b.roles).length === 0) emit(ctx, 'drop', { object: 'role' });
      return walkFields(b, child(ctx), null);
    case 'GrantRoleStmt': {
      const kind = b.is_grant === true ? 'grant' : 'revoke';
      const roles = list(b.granted_roles);
      for (const r of roles) emit(ctx, kind, { object: 'role', relation: str(nodeBody(r, 'AccessPriv')?.priv_name) });
      if (roles.length === 0) emit(ctx, kind, { object: 'role' });
      return walkFields(b, child(ctx), null);
    }
    case 'GrantStmt':
      return grantStmt(b, ctx);
    case 'AlterDefaultPrivilegesStmt':
      return alterDefaultPrivileges(b, ctx);
    case 'CreateFunctionStmt':
      return createFunction(b, ctx);
    case 'RuleStmt':
      return ruleStmt(b, ctx);
    case 'TruncateStmt':
      return relationsStmt(b, ctx, 'truncate', list(b.relations));
    case 'LockStmt':
      return relationsStmt(b, ctx, 'lock', list(b.relations));
    case 'VacuumStmt':
      return vacuumStmt(b, ctx);
    case 'ClusterStmt':
      return relationsStmt(b, ctx, 'cluster', b.relation ? [b.relation] : []);
    case 'RefreshMatViewStmt':
      for (const rv of b.relation ? [b.relation] : []) {
        const body = nodeBody(rv, 'RangeVar');
        if (body) emitRefs(ctx, 'refresh', rangeVarRefs(ctx, body, 'lookup'), { object: 'materialized_view' });
      }
      return walkFields(b, child(ctx), ['relation']);
    case 'ReindexStmt':
      return reindexStmt(b, ctx);
    case 'VariableSetStmt':
      return variableSet(b, ctx);
    case 'VariableShowStmt':
      emit(ctx, 'show', { setting: (str(b.name) ?? '').toLowerCase() });
      return walkFields(b, child(ctx), null);
    case 'AlterSystemStmt': {
      const set = nodeBody(b.setstmt, 'VariableSetStmt');
      ctx.st.run.literalSensitive = true;
      emit(ctx, 'alter_system', { setting: set ? (str(set.name) ?? 'all').toLowerCase() : undefined, value: set ? setValue(set) : undefined });
      return walkFields(b, child(ctx), null);
    }
    case 'TransactionStmt':
      return transactionStmt(b, ctx);
    case 'DoStmt':
      emit(ctx, 'do', {});
      return walkFields(b, child(ctx), null);
    case 'LoadStmt':
      emit(ctx, 'load', {});
      return walkFields(b, child(ctx), null);
    case 'CallStmt':
      return walkFields(b, child(ctx), null); // funccall is a (bare) FuncCall: a `call`
    case 'PrepareStmt':
      emit(ctx, 'prepare', {});
      walkRoot(b.query, nest(ctx, 'prepare', true));
      return walkFields(b, child(ctx), ['query']);
    case 'ExecuteStmt':
      emit(ctx, 'execute', {});
      return walkFields(b, child(ctx), null);
    case 'DeallocateStmt':
      emit(ctx, 'deallocate', {});
      return walkFields(b, child(ctx), null);
    case 'DeclareCursorStmt':
      emit(ctx, 'declare', {});
      walkRoot(b.query, nest(ctx, 'declare', true));
      return walkFields(b, child(ctx), ['query']);
    case 'FetchStmt':
      emit(ctx, 'fetch', {});
      return walkFields(b, child(ctx), null);
    case 'ClosePortalStmt':
      emit(ctx, 'close', {});
      return walkFields(b, child(ctx), null);
    case 'ListenStmt':
      emit(ctx, 'listen', {});
      return walkFields(b, child(ctx), null);
    case 'UnlistenStmt':
      emit(ctx, 'unlisten', {});
      return walkFields(b, child(ctx), null);
    case 'NotifyStmt':
      emit(ctx, 'notify', {});
      return walkFields(b, child(ctx), null);
    case 'DiscardStmt':
      emit(ctx, 'discard', {});
      if (ctx.top && b.target === 'DISCARD_ALL') ctx.st.run.path.discardAll();
      return walkFields(b, child(ctx), null);
    case 'CheckPointStmt':
      emit(ctx, 'checkpoint', {});
      return walkFields(b, child(ctx), null);
    case 'ConstraintsSetStmt':
      emit(ctx, 'set', { setting: 'constraints' });
      return walkFields(b, child(ctx), null);
    case 'CompositeTypeStmt': {
      const rv = nodeBody(b.typevar, 'RangeVar');
      emitRefs(ctx, 'create', rv ? rangeVarRefs(ctx, rv, 'create') : [], { object: 'type' });
      return walkFields(b, child(ctx), ['typevar']);
    }
    case 'ReplicaIdentityStmt': // a sub-command of ALTER TABLE
    case 'ReturnStmt':
    case 'PLAssignStmt':
    case 'RawStmt':
      return walkFields(b, ctx, null);
    default:
      if (type.endsWith('Stmt')) return otherStatement(type, b, ctx);
      return walkFields(b, ctx, null);
  }
}

// ------------------------------------------------------------------------------------------------
// Queries and DML

/** Enter a WITH clause: walk the CTE bodies with their scoping, return the scope for the rest. */
function withClause(w: unknown, ctx: Ctx): Ctx {
  const base = child(ctx);
  const body = isObj(w) ? (nodeBody(w, 'WithClause') ?? w) : null;
  if (!body) return base;
  const scope: CteScope = { names: new Set(), parent: ctx.ctes };
  const inner: Ctx = { ...base, ctes: scope };
  const ctes = list(body.ctes);
  const names = ctes.map((c) => str(nodeBody(c, 'CommonTableExpr')?.ctename));
  // WITH RECURSIVE: every CTE of the list is visible in every body; otherwise only earlier ones.
  if (body.recursive === true) for (const n of names) if (n !== undefined) scope.names.add(n);
  const cteCtx = nest(inner, 'cte');
  ctes.forEach((c, i) => {
    const cte = nodeBody(c, 'CommonTableExpr');
    if (cte) walkFields(cte, cteCtx, null);
    else walk(c, cteCtx);
    const n = names[i];
    if (n !== undefined) scope.names.add(n);
  });
  walkFields(body, inner, ['ctes']);
  return inner;
}

function hasReturning(b: Obj): boolean {
  const rc = b.returningClause;
  if (isObj(rc)) {
    const r = nodeBody(rc, 'ReturningClause') ?? rc;
    if (list(r.exprs).length > 0) return true;
  }
  return list(b.returningList).length > 0;
}

function selectStmt(b: Obj, ctx: Ctx): void {
  const c = withClause(b.withClause, ctx);
  const into = isObj(b.intoClause) ? (nodeBody(b.intoClause, 'IntoClause') ?? b.intoClause) : null;
  if (into) {
    const rel = nodeBody(into.rel, 'RangeVar');
    if (rel) emitRefs(ctx, 'create', rangeVarRefs(ctx, rel, 'create'), { object: 'table' });
    walkFields(into, c, ['rel']);
  }
  walkFields(b, c, ['withClause', 'intoClause']);
}

/** The target of INSERT/UPDATE/DELETE/MERGE: CTE names never shadow it (PostgreSQL's rule). */
function targetRefs(b: Obj, ctx: Ctx): Ref[] {
  const rel = nodeBody(b.relation, 'RangeVar');
  return rel ? rangeVarRefs(ctx, rel, 'lookup') : [];
}

function insertStmt(b: Obj, ctx: Ctx): void {
  const c = withClause(b.withClause, ctx);
  const refs = targetRefs(b, ctx);
  emitRefs(ctx, 'insert', refs, {});
  const oc = isObj(b.onConflictClause) ? (nodeBody(b.onConflictClause, 'OnConflictClause') ?? b.onConflictClause) : null;
  // ON CONFLICT DO UPDATE updates the conflicting rows only: bounded, like a WHERE.
  if (oc && oc.action === 'ONCONFLICT_UPDATE') emitRefs(ctx, 'update', refs, { where: true });
  if (hasReturning(b)) emitRefs(ctx, 'read', refs, {}); // RETURNING hands rows of the target back
  walkFields(b, c, ['withClause', 'relation']);
}

function updateStmt(b: Obj, ctx: Ctx): void {
  const c = withClause(b.withClause, ctx);
  const refs = targetRefs(b, ctx);
  emitRefs(ctx, 'update', refs, { where: b.whereClause !== undefined && b.whereClause !== null });
  if (hasReturning(b)) emitRefs(ctx, 'read', refs, {});
  walkFields(b, c, ['withClause', 'relation']); // fromClause → reads
}

function deleteStmt(b: Obj, ctx: Ctx): void {
  const c = withClause(b.withClause, ctx);
  const refs = targetRefs(b, ctx);
  emitRefs(ctx, 'delete', refs, { where: b.whereClause !== undefined && b.whereClause !== null });
  if (hasReturning(b)) emitRefs(ctx, 'read', refs, {});
  walkFields(b, c, ['withClause', 'relation']); // usingClause → reads
}

function mergeStmt(b: Obj, ctx: Ctx): void {
  const c = withClause(b.withClause, ctx);
  const refs = targetRefs(b, ctx);
  emitRefs(ctx, 'merge', refs, {});
  for (const w of list(b.mergeWhenClauses)) {
    const when = nodeBody(w, 'MergeWhenClause');
    if (!when) continue;
    // WHEN MATCHED is bounded by the join condition; WHEN NOT MATCHED BY SOURCE is not, unless
    // it has its own AND condition.
    const bounded = when.matchKind === 'MERGE_WHEN_MATCHED' || (when.condition !== undefined && when.condition !== null);
    if (when.commandType === 'CMD_INSERT') emitRefs(ctx, 'insert', refs, {});
    else if (when.commandType === 'CMD_UPDATE') emitRefs(ctx, 'update', refs, { where: bounded });
    else if (when.commandType === 'CMD_DELETE') emitRefs(ctx, 'delete', refs, { where: bounded });
  }
  if (hasReturning(b)) emitRefs(ctx, 'read', refs, {});
  walkFields(b, c, ['withClause', 'relation']); // sourceRelation → reads
}

/** defGetBoolean: no value = true; on/off/true/false/1/0; anything else (an error) → null. */
function defBoolean(arg: unknown): boolean | null {
  if (arg === undefined || arg === null) return true;
  const n = asNode(arg);
  if (!n) return null;
  if (n[0] === 'String') {
    const s = (stringNode(arg) ?? '').toLowerCase();
    if (s === 'true' || s === 'on') return true;
    if (s === 'false' || s === 'off') return false;
    return null;
  }
  if (n[0] === 'Integer') {
    const i = typeof n[1].ival === 'number' ? n[1].ival : 0;
    return i === 1 ? true : i === 0 ? false : null;
  }
  if (n[0] === 'Boolean') return n[1].boolval === true;
  const c = constValue(arg);
  if (c && c.value !== null) return defBoolean({ String: { sval: c.value } });
  return null;
}

function explainStmt(b: Obj, ctx: Ctx): void {
  let analyze = false;
  for (const o of list(b.options)) {
    const d = nodeBody(o, 'DefElem');
    if (!d) continue;
    if (d.arg !== undefined) ctx.st.run.literalSensitive = true; // (ANALYZE 'off') / (ANALYZE 0)
    const name = (str(d.defname) ?? '').toLowerCase();
    if (name !== 'analyze' && name !== 'analyse') continue;
    // Conservative: any ANALYZE that is not clearly off counts (PostgreSQL takes the last one).
    if (defBoolean(d.arg) !== false) analyze = true;
  }
  walkRoot(b.query, nest(ctx, analyze ? 'explain-analyze' : 'explain'));
  walkFields(b, child(ctx), ['query']);
}

function copyStmt(b: Obj, ctx: Ctx): void {
  const from = b.is_from === true;
  const copy = {
    direction: from ? ('from' as const) : ('to' as const),
    target: b.is_program === true ? ('program' as const) : b.filename !== undefined ? ('file' as const) : ('stdio' as const),
  };
  const rel = nodeBody(b.relation, 'RangeVar');
  const inner = nest(ctx, 'copy');
  if (rel) {
    const refs = rangeVarRefs(ctx, rel, from ? 'lookup' : 'read');
    emitRefs(ctx, 'copy', refs, { copy });
    emitRefs(inner, from ? 'insert' : 'read', refs, {});
  } else {
    emit(ctx, 'copy', { copy });
  }
  if (b.query !== undefined) walkRoot(b.query, inner);
  walkFields(b, child(ctx), ['relation', 'query']);
}

// ------------------------------------------------------------------------------------------------
// DDL

function createTableAs(b: Obj, ctx: Ctx): void {
  const into = isObj(b.into) ? (nodeBody(b.into, 'IntoClause') ?? b.into) : null;
  const matview = b.objtype === 'OBJECT_MATVIEW';
  const rel = into ? nodeBody(into.rel, 'RangeVar') : null;
  if (rel) emitRefs(ctx, 'create', rangeVarRefs(ctx, rel, 'create'), { object: matview ? 'materialized_view' : 'table' });
  else emit(ctx, 'create', { object: matview ? 'materialized_view' : 'table' });
  // A materialized view's query also runs later, on every REFRESH.
  walkRoot(b.query, nest(ctx, 'create-as', ctx.deferred || matview));
  if (into) walkFields(into, child(ctx), ['rel']);
  walkFields(b, child(ctx), ['into', 'query']);
}

function viewStmt(b: Obj, ctx: Ctx): void {
  const rel = nodeBody(b.view, 'RangeVar');
  if (rel) emitRefs(ctx, 'create', rangeVarRefs(ctx, rel, 'create'), { object: 'view' });
  else emit(ctx, 'create', { object: 'view' });
  walkRoot(b.query, nest(ctx, 'create-as', true));
  walkFields(b, child(ctx), ['view', 'query']);
}

function createStmt(b: Obj, ctx: Ctx, object: string): void {
  const rel = nodeBody(b.relation, 'RangeVar');
  if (rel) emitRefs(ctx, 'create', rangeVarRefs(ctx, rel, 'create'), { object });
  else emit(ctx, 'create', { object });
  // INHERITS (p) / PARTITION OF p: p changes too (its scans, its partitions).
  for (const parent of list(b.inhRelations)) {
    const rv = nodeBody(parent, 'RangeVar');
    if (rv && isRangeVar(rv)) emitRefs(ctx, 'alter', rangeVarRefs(ctx, rv, 'lookup'), { object: 'table' });
    else walk(parent, child(ctx));
  }
  walkFields(b, child(ctx), ['relation', 'inhRelations']); // LIKE / REFERENCES → reads
}

function dropStmt(b: Obj, ctx: Ctx): void {
  const object = objectName(b.removeType);
  const items = list(b.objects);
  for (const item of items) emitRefs(ctx, 'drop', objectRefs(ctx, b.removeType, item, 'lookup'), { object });
  if (items.length === 0) emit(ctx, 'drop', { object });
  walkFields(b, child(ctx), ['objects']);
}

function alterTable(b: Obj, ctx: Ctx): void {
  const object = objectName(b.objtype);
  const rel = nodeBody(b.relation, 'RangeVar');
  emitRefs(ctx, 'alter', rel ? rangeVarRefs(ctx, rel, 'lookup') : [], { object });
  const c = child(ctx);
  for (const item of list(b.cmds)) {
    const cmd = nodeBody(item, 'AlterTableCmd');
    const def = cmd ? asNode(cmd.def) : null;
    // ATTACH/DETACH PARTITION p and INHERIT/NO INHERIT p change p as well.
    const other = def?.[0] === 'PartitionCmd' ? nodeBody(def[1].name, 'RangeVar') : def?.[0] === 'RangeVar' ? def[1] : null;
    if (cmd && def && other && isRangeVar(other)) {
      emitRefs(ctx, 'alter', rangeVarRefs(ctx, other, 'lookup'), { object: 'table' });
      walkFields(cmd, c, ['def']);
      if (def[0] === 'PartitionCmd') walkFields(def[1], c, ['name']);
    } else {
      walk(item, c);
    }
  }
  walkFields(b, c, ['relation', 'cmds']);
}

/** Refs of a statement that names its object by `relation` (a RangeVar) or `object` (a name). */
function stmtObjectRefs(b: Obj, ctx: Ctx, objectType: unknown): Ref[] {
  const rel = nodeBody(b.relation, 'RangeVar');
  if (rel) return rangeVarRefs(ctx, rel, 'lookup');
  if (b.object !== undefined) return objectRefs(ctx, objectType, b.object, 'lookup');
  return [];
}

function objectStmt(b: Obj, ctx: Ctx, action: SqlActionKind, objectType: unknown, consumed: string[]): void {
  emitRefs(ctx, action, stmtObjectRefs(b, ctx, objectType), { object: objectName(objectType) });
  walkFields(b, child(ctx), consumed);
}

function renameStmt(b: Obj, ctx: Ctx): void {
  const object = objectName(b.renameType);
  const sub = str(b.subname);
  let refs = stmtObjectRefs(b, ctx, b.renameType);
  if (refs.length === 0 && sub !== undefined) {
    if (b.renameType === 'OBJECT_SCHEMA') {
      // The old and the new name are both schemas this statement changes.
      refs = [{ schema: sub }];
      const nn = str(b.newname);
      if (nn !== undefined) refs.push({ schema: nn });
    } else {
      refs = [{ relation: sub }];
    }
  }
  emitRefs(ctx, 'alter', refs, { object });
  walkFields(b, child(ctx), ['relation', 'object']);
}

function alterObjectSchema(b: Obj, ctx: Ctx): void {
  const object = objectName(b.objectType);
  const refs = stmtObjectRefs(b, ctx, b.objectType);
  emitRefs(ctx, 'alter', refs, { object });
  // Moving an object into a schema is a change to that schema too.
  const ns = str(b.newschema);
  if (ns !== undefined) {
    const names = new Set(refs.map((r) => (r.relation ?? '').slice((r.relation ?? '').lastIndexOf('.') + 1)));
    if (names.size === 0) emit(ctx, 'alter', { object, schema: ns });
    for (const n of names) emit(ctx, 'alter', { object, schema: ns, relation: n ? `${ns}.${n}` : undefined });
  }
  walkFields(b, child(ctx), ['relation', 'object']);
}

function indexStmt(b: Obj, ctx: Ctx): void {
  const rel = nodeBody(b.relation, 'RangeVar');
  const idx = str(b.idxname);
  const refs = rel ? rangeVarRefs(ctx, rel, 'lookup') : [];
  // The index lives in its table's schema; named by its own name when it has one.
  emitRefs(ctx, 'create', refs.map((r) => ({ schema: r.schema, relation: idx !== undefined && r.schema ? `${r.schema}.${idx}` : r.relation })), { object: 'index' });
  walkFields(b, child(ctx), ['relation']);
}

function createSchema(b: Obj, ctx: Ctx): void {
  const name = str(b.schemaname) ?? roleName(ctx, b.authrole);
  emit(ctx, 'create', { object: 'schema', schema: name });
  const elts = list(b.schemaElts);
  if (elts.length > 0) {
    // The elements are created with search_path = the new schema.
    walk(elts, { ...child(ctx), pathOverride: name !== undefined ? [name] : [] });
  }
  walkFields(b, child(ctx), ['schemaElts']);
}

function defElemString(d: Obj): string | undefined {
  const s = stringNode(d.arg);
  if (s !== undefined) return s;
  const c = constValue(d.arg);
  return c && c.value !== null ? c.value : undefined;
}

function createExtension(b: Obj, ctx: Ctx): void {
  let schema: string | undefined;
  for (const o of list(b.options)) {
    const d = nodeBody(o, 'DefElem');
    if (d && d.defname === 'schema') schema = defElemString(d);
  }
  const schemas = schema !== undefined ? [schema] : ctx.pathOverride ? ctx.pathOverride.slice(0, 1) : ctx.st.run.path.creationSchemas();
  const relation = str(b.extname);
  if (schemas.length === 0) emit(ctx, 'create', { object: 'extension', relation });
  for (const s of schemas) emit(ctx, 'create', { object: 'extension', relation, schema: s });
  walkFields(b, child(ctx), null);
}

function grantStmt(b: Obj, ctx: Ctx): void {
  const kind = b.is_grant === true ? 'grant' : 'revoke';
  const object = objectName(b.objtype);
  const objects = list(b.objects);
  if (b.targtype === 'ACL_TARGET_ALL_IN_SCHEMA') {
    for (const o of objects) emit(ctx, kind, { object, schema: stringNode(o) });
  } else {
    for (const o of objects) {
      const rv = nodeBody(o, 'RangeVar');
      const refs = rv && asNode(o)?.[0] === 'RangeVar' ? rangeVarRefs(ctx, rv, 'lookup') : objectRefs(ctx, b.objtype, o, 'lookup');
      emitRefs(ctx, kind, refs, { object });
    }
  }
  if (objects.length === 0) emit(ctx, kind, { object });
  walkFields(b, child(ctx), ['objects']);
}

function alterDefaultPrivileges(b: Obj, ctx: Ctx): void {
  const action = isObj(b.action) ? (nodeBody(b.action, 'GrantStmt') ?? b.action) : null;
  const kind = action?.is_grant === true ? 'grant' : 'revoke';
  const object = action ? objectName(action.objtype) : 'default_privileges';
  const schemas: string[] = [];
  for (const o of list(b.options)) {
    const d = nodeBody(o, 'DefElem');
    if (d && d.defname === 'schemas') for (const s of nameList(d.arg) ?? []) schemas.push(s);
  }
  if (schemas.length === 0) emit(ctx, kind, { object });
  for (const s of schemas) emit(ctx, kind, { object, schema: s });
  if (action) walkFields(action, child(ctx), ['objects']);
  walkFields(b, child(ctx), ['action']);
}

function createFunction(b: Obj, ctx: Ctx): void {
  const object = b.is_procedure === true ? 'procedure' : 'function';
  // The language and the body may be string literals (LANGUAGE 'sql' AS '…'): key on the text.
  ctx.st.run.literalSensitive = true;
  const parts = nameList(b.funcname) ?? [];
  emitRefs(ctx, 'create', parts.length ? resolveList(ctx, parts, 'create') : [], { object });
  const body = nest(ctx, 'create-as', true);
  let language: string | undefined;
  let as: string[] | null = null;
  for (const o of list(b.options)) {
    const d = nodeBody(o, 'DefElem');
    if (!d) continue;
    if (d.defname === 'language') language = defElemString(d)?.toLowerCase();
    if (d.defname === 'as') as = nameList(d.arg) ?? (stringNode(d.arg) !== undefined ? [stringNode(d.arg)!] : null);
  }
  if (language === 'sql' && as && as.length === 1) {
    // A SQL function's body is SQL too: its statements are facts of this one (nested, deferred).
    let inner;
    try {
      inner = parseStatements(as[0]!);
    } catch (e) {
      const m = e instanceof Error ? e.message : String(e);
      throw unresolvable(`the body of SQL function "${parts.join('.')}" does not parse: ${m}`, { function: parts.join('.') });
    }
    for (const s of inner) walkRoot(s.stmt, body);
  }
  if (b.sql_body !== undefined) walk(b.sql_body, body); // BEGIN ATOMIC … END / RETURN …
  walkFields(b, child(ctx), ['funcname', 'sql_body']);
}

function ruleStmt(b: Obj, ctx: Ctx): void {
  const rel = nodeBody(b.relation, 'RangeVar');
  emitRefs(ctx, 'create', rel ? rangeVarRefs(ctx, rel, 'lookup') : [], { object: 'rule' });
  const inner = nest(ctx, 'rule', true);
  walk(b.actions, inner);
  if (b.whereClause !== undefined) walk(b.whereClause, inner);
  walkFields(b, child(ctx), ['relation', 'actions', 'whereClause']);
}

function relationsStmt(b: Obj, ctx: Ctx, action: SqlActionKind, rels: unknown[]): void {
  for (const r of rels) {
    const rv = nodeBody(r, 'RangeVar');
    if (rv) emitRefs(ctx, action, rangeVarRefs(ctx, rv, 'lookup'), { object: 'table' });
  }
  if (rels.length === 0) emit(ctx, action, {});
  walkFields(b, child(ctx), ['relations', 'relation']);
}

function vacuumStmt(b: Obj, ctx: Ctx): void {
  const kinds: SqlActionKind[] = [b.is_vacuumcmd === true ? 'vacuum' : 'analyze'];
  if (kinds[0] === 'vacuum') {
    for (const o of list(b.options)) {
      const d = nodeBody(o, 'DefElem');
      if (d && (d.defname === 'analyze' || d.defname === 'analyse')) kinds.push('analyze'); // whatever its value
    }
  }
  const rels = list(b.rels);
  for (const kind of kinds) {
    for (const r of rels) {
      const vr = nodeBody(r, 'VacuumRelation');
      const rv = vr ? nodeBody(vr.relation, 'RangeVar') : null;
      if (rv) emitRefs(ctx, kind, rangeVarRefs(ctx, rv, 'lookup'), { object: 'table' });
    }
    if (rels.length === 0) emit(ctx, kind, {});
  }
  walkFields(b, child(ctx), ['rels']);
}

function reindexStmt(b: Obj, ctx: Ctx): void {
  const kind = str(b.kind) ?? '';
  const object = kind.replace(/^REINDEX_OBJECT_/, '').toLowerCase() || 'object';
  const rv = nodeBody(b.relation, 'RangeVar');
  const name = str(b.name);
  if (rv) emitRefs(ctx, 'reindex', rangeVarRefs(ctx, rv, 'lookup'), { object });
  else if (kind === 'REINDEX_OBJECT_SCHEMA' && name !== undefined) emit(ctx, 'reindex', { object, schema: name });
  else emit(ctx, 'reindex', { object, relation: name });
  walkFields(b, child(ctx), ['relation']);
}

// Statements without a dedicated handler: CREATE/ALTER/DROP by their node name, else `utility`.

const OBJECT_BY_NODE: Record<string, string> = {
  Seq: 'sequence', Trig: 'trigger', EventTrig: 'event_trigger', PLang: 'language', Fdw: 'foreign_data_wrapper',
  ForeignServer: 'server', Am: 'access_method', Stats: 'statistics', OpClass: 'operator_class',
  OpFamily: 'operator_family', TSConfiguration: 'text_search_configuration', TSDictionary: 'text_search_dictionary',
  TableSpace: 'tablespace', TableSpaceOptions: 'tablespace', TableMoveAll: 'tablespace', db: 'database',
  DatabaseSet: 'database', DatabaseRefreshColl: 'database', Enum: 'type', Range: 'type', RoleSet: 'role',
  ForeignSchema: 'foreign_table', Owned: 'owned', CompositeType: 'type',
};
const RANGEVAR_FIELDS = ['relation', 'sequence', 'typevar', 'table', 'view'];
const QUALIFIED_FIELDS = ['defnames', 'domainname', 'typeName', 'collname', 'opclassname', 'opfamilyname', 'conversion_name', 'dictname', 'cfgname'];
const FUNC_FIELDS = ['func', 'opername'];
const PLAIN_FIELDS = ['servername', 'fdwname', 'extname', 'dbname', 'tablespacename', 'orig_tablespacename', 'pubname', 'subname', 'trigname', 'amname', 'plname', 'eventname'];

function otherStatement(type: string, b: Obj, ctx: Ctx): void {
  const m = /^(Create|Alter|Drop|Import|Define)(.*)Stmt$/.exec(type);
  if (!m) {
    emit(ctx, 'utility', {});
    return walkFields(b, child(ctx), null);
  }
  const action: SqlActionKind = m[1] === 'Alter' ? 'alter' : m[1] === 'Drop' ? 'drop' : 'create';
  const how: Resolve = action === 'create' ? 'create' : 'lookup';
  const rest = m[2] ?? '';
  let object = OBJECT_BY_NODE[rest] ?? (rest.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase() || 'object');
  if (typeof b.kind === 'string' && b.kind.startsWith('OBJECT_')) object = objectName(b.kind); // DefineStmt
  if (typeof b.objtype === 'string' && b.objtype.startsWith('OBJECT_')) object = objectName(b.objtype);
  if (type === 'ImportForeignSchemaStmt') {
    // IMPORT FOREIGN SCHEMA … INTO local_schema: creates foreign tables there.
    emit(ctx, 'create', { object, schema: str(b.local_schema) });
    return walkFields(b, child(ctx), null);
  }
  const consumed: string[] = [];
  let refs: Ref[] = [];
  for (const f of RANGEVAR_FIELDS) {
    const rv = nodeBody(b[f], 'RangeVar');
    if (rv && isRangeVar(rv)) {
      refs = rangeVarRefs(ctx, rv, how === 'create' && f !== 'table' && f !== 'relation' ? 'create' : 'lookup');
      consumed.push(f);
      break;
    }
  }
  if (refs.length === 0) {
    for (const f of QUALIFIED_FIELDS) {
      if (b[f] === undefined) continue;
      const parts = objectNameParts(b[f]);
      if (parts && parts.length > 0) {
        refs = resolveList(ctx, parts, how);
        consumed.push(f);
        break;
      }
    }
  }
  if (refs.length === 0 && action !== 'create') {
    // ALTER FUNCTION / ALTER OPERATOR name their object so; in a CREATE (CAST, TRANSFORM, …) the
    // function is only referenced.
    for (const f of FUNC_FIELDS) {
      const parts = b[f] !== undefined ? objectNameParts(b[f]) : null;
      if (parts && parts.length > 0) {
        refs = resolveList(ctx, parts, how);
        consumed.push(f);
        break;
      }
    }
  }
  if (refs.length === 0) {
    for (const f of PLAIN_FIELDS) {
      const s = str(b[f]);
      if (s !== undefined) {
        refs = [{ relation: s }];
        break;
      }
    }
  }
  if (refs.length === 0 && type === 'ImportForeignSchemaStmt') {
    const s = str(b.local_schema);
    if (s !== undefined) refs = [{ schema: s }];
  }
  emitRefs(ctx, action, refs, { object });
  walkFields(b, child(ctx), consumed);
}

// ------------------------------------------------------------------------------------------------
// Calls

function funcCall(b: Obj, ctx: Ctx): void {
  const parts = nameList(b.funcname) ?? [];
  if (parts.length > 0) {
    const fn = parts.length >= 2 ? `${parts[parts.length - 2]}.${parts[parts.length - 1]}` : parts[0]!;
    emit(ctx, 'call', { function: fn });
    if (parts[parts.length - 1] === 'set_config') setConfig(b, ctx);
  } else {
    emit(ctx, 'call', {});
  }
  walkFields(b, ctx, ['funcname']);
}

/** set_config('search_path', '<literal>', …) changes how later statements resolve names. */
function setConfig(b: Obj, ctx: Ctx): void {
  ctx.st.run.literalSensitive = true;
  const args = list(b.args);
  const name = stringConst(args[0]);
  if (!name) {
    throw unresolvable('set_config() with a setting name that is not a literal: it could change search_path', { statement: ctx.st.index });
  }
  if (name.value === null || name.value.toLowerCase() !== 'search_path') return;
  if (ctx.deferred) {
    throw unresolvable('set_config(\'search_path\', …) in a statement that runs later (PREPARE, cursor, view, rule, function): names resolved afterwards cannot be known', {
      statement: ctx.st.index,
    });
  }
  const value = stringConst(args[1]);
  if (!value) {
    throw unresolvable('set_config(\'search_path\', …) with a value that is not a literal: names resolved afterwards cannot be known', {
      statement: ctx.st.index,
    });
  }
  const path = value.value === null ? ctx.st.run.defaultPath : splitIdentifierString(value.value);
  // Whether the call runs at all (WHERE false, CASE, LIMIT 0…) is not known: keep both outcomes.
  ctx.st.run.path.maybeSetPath(path);
}

// ------------------------------------------------------------------------------------------------
// Session statements

function argValues(args: unknown): string[] {
  const out: string[] = [];
  for (const a of list(args)) {
    const c = stringConst(a);
    if (c) out.push(c.value ?? 'NULL');
    else {
      const s = stringNode(a);
      out.push(s ?? '?');
    }
  }
  return out;
}

function setValue(b: Obj): string | undefined {
  switch (b.kind) {
    case 'VAR_SET_VALUE':
      return argValues(b.args).join(', ');
    case 'VAR_SET_DEFAULT':
      return 'DEFAULT';
    case 'VAR_SET_CURRENT':
      return 'FROM CURRENT';
    default:
      return undefined;
  }
}

function variableSet(b: Obj, ctx: Ctx): void {
  if (!ctx.top) {
    // A SET inside another statement (ALTER ROLE … SET, a function's SET clause): not a session change.
    return walkFields(b, ctx, null);
  }
  ctx.st.run.literalSensitive = true;
  const path = ctx.st.run.path;
  const kind = str(b.kind) ?? '';
  const name = (str(b.name) ?? '').toLowerCase();
  const reset = kind === 'VAR_RESET' || kind === 'VAR_RESET_ALL';
  if (kind === 'VAR_RESET_ALL') {
    emit(ctx, 'reset', { setting: 'all' });
    path.resetPath(); // (role and session_authorization are not reset by RESET ALL)
    return;
  }
  const value = setValue(b);
  if (name === 'role') {
    emit(ctx, 'set_role', { setting: 'role', value });
    if (reset || kind === 'VAR_SET_DEFAULT' || (value ?? '').toLowerCase() === 'none') path.resetUser();
    else if (kind === 'VAR_SET_VALUE') path.setUser(value);
    return;
  }
  if (name === 'session_authorization') {
    emit(ctx, 'session_authorization', { setting: 'session_authorization', value });
    if (reset || kind === 'VAR_SET_DEFAULT') path.resetUser();
    else if (kind === 'VAR_SET_VALUE') path.setUser(value);
    return;
  }
  if (kind === 'VAR_SET_MULTI') {
    // SET TRANSACTION … / SET SESSION CHARACTERISTICS AS TRANSACTION …: one setting per option.
    const opts = list(b.args);
    for (const o of opts) {
      const d = nodeBody(o, 'DefElem');
      if (d) emit(ctx, 'set', { setting: (str(d.defname) ?? name).toLowerCase(), value: defElemString(d) });
    }
    if (opts.length === 0) emit(ctx, 'set', { setting: name });
    return;
  }
  emit(ctx, reset ? 'reset' : 'set', { setting: name, value });
  if (name === 'search_path') {
    if (reset || kind === 'VAR_SET_DEFAULT') path.resetPath();
    else if (kind === 'VAR_SET_VALUE') {
      const entries: string[] = [];
      for (const a of list(b.args)) {
        const c = constValue(a);
        if (!c || c.value === null) throw unresolvable('SET search_path with a value that is not a constant', { statement: ctx.st.index });
        entries.push(c.value); // each element is one schema name, exactly as written
      }
      path.setPath(entries);
    }
  }
}

function transactionStmt(b: Obj, ctx: Ctx): void {
  const kind = str(b.kind) ?? '';
  emit(ctx, 'transaction', { transaction: TRANSACTION_NAMES[kind] ?? kind });
  if (
    ctx.top &&
    (kind === 'TRANS_STMT_COMMIT' || kind === 'TRANS_STMT_ROLLBACK' || kind === 'TRANS_STMT_ROLLBACK_TO' || kind === 'TRANS_STMT_PREPARE')
  ) {
    ctx.st.run.path.mayRevert();
  }
}

// ------------------------------------------------------------------------------------------------
// Command tags

export function commandOf(type: string, b: Obj): string {
  switch (type) {
    case 'SelectStmt':
      return b.intoClause ? 'SELECT INTO' : 'SELECT';
    case 'CreateTableAsStmt':
      return b.objtype === 'OBJECT_MATVIEW' ? 'CREATE MATERIALIZED VIEW' : 'CREATE TABLE AS';
    case 'DropStmt':
      return `DROP ${objectTag(objectName(b.removeType))}`;
    case 'AlterTableStmt':
      return `ALTER ${objectTag(objectName(b.objtype))}`;
    case 'RenameStmt':
      return `ALTER ${objectTag(objectName(b.renameType))}`;
    case 'AlterObjectSchemaStmt':
    case 'AlterOwnerStmt':
    case 'AlterObjectDependsStmt':
      return `ALTER ${objectTag(objectName(b.objectType))}`;
    case 'GrantStmt':
    case 'GrantRoleStmt':
      return b.is_grant === true ? 'GRANT' : 'REVOKE';
    case 'DefineStmt':
      return `CREATE ${objectTag(objectName(b.kind))}`;
    case 'AlterFunctionStmt':
      return `ALTER ${objectTag(objectName(b.objtype))}`;
    case 'CreateFunctionStmt':
      return b.is_procedure === true ? 'CREATE PROCEDURE' : 'CREATE FUNCTION';
    case 'VariableSetStmt':
      return b.kind === 'VAR_RESET' || b.kind === 'VAR_RESET_ALL' ? 'RESET' : 'SET';
    case 'TransactionStmt':
      return TRANSACTION_TAGS[str(b.kind) ?? ''] ?? 'TRANSACTION';
    case 'VacuumStmt':
      return b.is_vacuumcmd === true ? 'VACUUM' : 'ANALYZE';
    case 'FetchStmt':
      return b.ismove === true ? 'MOVE' : 'FETCH';
    case 'DiscardStmt':
      return `DISCARD ${(str(b.target) ?? 'DISCARD_ALL').replace(/^DISCARD_/, '')}`;
    case 'DeallocateStmt':
      return b.isall === true ? 'DEALLOCATE ALL' : 'DEALLOCATE';
    default:
      return FIXED_TAGS[type] ?? tagFromNodeType(type);
  }
}
