// SQL → facts with PostgreSQL's real parser (libpg-query, WASM). See SqlFacts in ../types.ts.
//
//   await initSqlParser();                        // once, at start-up
//   sqlFacts(sql, { searchPath, user })           // → SqlFacts; throws PortcullisError
//   sqlFactsCached(sql, { searchPath, user })     // same result, from a bounded LRU
//
// Errors (the caller decides them fail-closed): `sql_parse_error` (message and details.position,
// 1-based, as PostgreSQL reports them), `sql_unresolvable` (a name cannot be resolved safely,
// e.g. set_config('search_path', $1, …)), `sql_parser_not_ready` (initSqlParser not awaited).
//
// searchPathAfter is the path after the last statement with `$user` already expanded, so it can
// be passed back as `searchPath` for the connection's next request. It is exact within one
// string only: a ROLLBACK in a later request undoes SETs of earlier requests of the same
// transaction, which the caller has to track (e.g. keep the path at BEGIN and union them).
export { initSqlParser, sqlParserReady } from './parser.js';
export { sqlFacts, sqlFactsCached, sqlFactsCacheStats, sqlShapeKey, clearSqlFactsCache } from './cache.js';
export type { SqlFactsOptions } from './extract.js';
