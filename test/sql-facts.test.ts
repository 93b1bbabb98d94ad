// SQL fact extraction (src/policy/sql) against PostgreSQL's real parser: a table of tricky
// statements with their exact actions, name resolution through search_path, error handling, the
// literal-normalizing cache (cached == uncached over the whole corpus), and the cache lexer's
// literal boundaries checked against PostgreSQL's own scanner.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { scanSync } from 'libpg-query';
import {
  clearSqlFactsCache,
  initSqlParser,
  sqlFacts,
  sqlFactsCached,
  sqlFactsCacheStats,
  type SqlFactsOptions,
} from '../src/policy/sql/index.js';
import { CACHE_MAX_ENTRIES } from '../src/policy/sql/cache.js';
import { MARK_DECIMAL, MARK_DOLLAR, MARK_INT, MARK_STRING, normalizeLiterals } from '../src/policy/sql/lexer.js';
import { PortcullisError, type SqlAction, type SqlFacts } from '../src/policy/types.js';

before(async () => {
  await initSqlParser();
});

/** One action as a compact line: `delete public.customers where=false nested=cte`. */
function fmt(a: SqlAction, multi: boolean): string {
  const parts: string[] = [];
  if (multi) parts.push(`#${a.statement}`);
  parts.push(a.action);
  if (a.relation !== undefined) parts.push(a.relation);
  if (a.schema !== undefined && (a.relation === undefined || !a.relation.startsWith(`${a.schema}.`))) parts.push(`schema:${a.schema}`);
  if (a.where !== undefined) parts.push(`where=${a.where}`);
  if (a.function !== undefined) parts.push(`fn=${a.function}`);
  if (a.object !== undefined) parts.push(`object=${a.object}`);
  if (a.copy !== undefined) parts.push(`copy=${a.copy.direction}/${a.copy.target}`);
  if (a.setting !== undefined) parts.push(`setting=${a.setting}`);
  if (a.value !== undefined) parts.push(`value=${a.value}`);
  if (a.transaction !== undefined) parts.push(`tx=${a.transaction}`);
  if (a.nested !== undefined) parts.push(`nested=${a.nested}`);
  return parts.join(' ');
}

function actionsOf(f: SqlFacts): string[] {
  const multi = f.statements.length > 1;
  return f.statements.flatMap((s) => s.actions.map((a) => fmt(a, multi))).sort();
}

/** Reads of an unqualified name with the default path (pg_catalog only holds pg_* names). */
function R(name: string, suffix = ''): string[] {
  return [`read public.${name}${suffix}`];
}

interface Case {
  sql: string;
  opts?: SqlFactsOptions;
  expect: string[];
  /** Command of each statement. */
  commands?: string[];
  /** searchPathAfter. */
  after?: string[];
}

const PSQL_DT = `SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;`;

const PSQL_D_LOOKUP = `SELECT c.oid,
  n.nspname,
  c.relname
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname OPERATOR(pg_catalog.~) '^(customers)$' COLLATE pg_catalog.default
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 2, 3;`;

const PSQL_D_COLUMNS = `SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
   FROM pg_catalog.pg_attrdef d
   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
  a.attnotnull,
  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,
  a.attidentity,
  a.attgenerated
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = '16385' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;`;

const JDBC_COLUMNS = `SELECT table_schema, table_name, column_name, data_type, ordinal_position
FROM information_schema.columns
WHERE table_schema LIKE 'public' ESCAPE '\\' AND table_name LIKE 'customers'
ORDER BY table_schema, table_name, ordinal_position`;

const CASES: Case[] = [
  // --- queries that read no relation ---
  { sql: 'SELECT 1', expect: ['read'], commands: ['SELECT'] },
  { sql: 'SELECT now()', expect: ['call fn=now', 'read'] },
  { sql: 'VALUES (1), (2)', expect: ['read'], commands: ['SELECT'] },
  { sql: 'SELECT pg_sleep(1)', expect: ['call fn=pg_sleep', 'read'] },
  { sql: 'SELECT NULL', expect: ['read'] },
  // --- reads ---
  { sql: 'TABLE customers', expect: R('customers'), commands: ['SELECT'] },
  { sql: 'SELECT * FROM customers', expect: R('customers') },
  { sql: 'SELECT * FROM "Customers"', expect: ['read public.Customers'] },
  { sql: 'select * from CUSTOMERS', expect: R('customers') },
  { sql: 'SELECT * FROM U&"d\\0061t\\+000061"', expect: R('data') },
  { sql: 'SELECT * FROM U&"d!0061t" UESCAPE \'!\'', expect: R('dat') },
  { sql: 'SELECT * FROM analytics.daily_sales', expect: ['read analytics.daily_sales'] },
  { sql: 'SELECT * FROM shop.public.customers', expect: ['read public.customers'] },
  { sql: 'SELECT * FROM ONLY customers c JOIN orders o ON o.customer_id = c.id', expect: [...R('customers'), ...R('orders')] },
  {
    sql: 'SELECT * FROM t WHERE a IN (SELECT b FROM customers) AND EXISTS (SELECT 1 FROM analytics.daily_sales)',
    expect: [...R('t'), ...R('customers', ' nested=subquery'), 'read analytics.daily_sales nested=subquery'],
  },
  { sql: 'SELECT * FROM (SELECT * FROM customers) s', expect: R('customers', ' nested=subquery') },
  { sql: 'SELECT x FROM t, LATERAL (SELECT * FROM u WHERE u.a = t.a) l', expect: [...R('t'), ...R('u', ' nested=subquery')] },
  { sql: 'SELECT * FROM t UNION SELECT * FROM u', expect: [...R('t'), ...R('u')] },
  { sql: 'SELECT * FROM customers TABLESAMPLE SYSTEM (10)', expect: R('customers') },
  { sql: 'SELECT * FROM customers c FOR UPDATE OF c', expect: R('customers') },
  { sql: 'SELECT * FROM pg_class', expect: ['read pg_catalog.pg_class', 'read public.pg_class'] },
  { sql: "DELETE FROM pg_authid WHERE rolname = 'x'", expect: ['delete pg_catalog.pg_authid where=true', 'delete public.pg_authid where=true'] },
  { sql: 'UPDATE pg_class SET relname = 1 WHERE oid = 2', opts: { searchPath: [] }, expect: ['update pg_catalog.pg_class where=true'] },
  { sql: 'SELECT count(*) FROM customers', expect: [...R('customers'), 'call fn=count'] },
  // --- comments, quoting, dollar quoting ---
  { sql: 'DELETE /* x */ FROM t', expect: ['delete public.t where=false'] },
  { sql: 'DELETE -- no where here\nFROM t WHERE id = 1', expect: ['delete public.t where=true'] },
  { sql: 'DELETE /* outer /* inner */ still a comment */ FROM t', expect: ['delete public.t where=false'] },
  { sql: '/* DELETE FROM customers */ SELECT 1 -- ; DELETE FROM customers', expect: ['read'] },
  { sql: "SELECT 'a; DELETE FROM customers; --'", expect: ['read'] },
  { sql: "SELECT E'\\' ; DELETE FROM customers; --'", expect: ['read'] },
  { sql: 'SELECT $$ ; DELETE FROM customers $$, $tag$ DROP TABLE x; $notag$ $tag$', expect: ['read'] },
  { sql: 'SELECT "a;b" FROM "x;DELETE FROM customers"', expect: R('x;DELETE FROM customers') },
  // --- writes ---
  { sql: 'DELETE FROM customers', expect: ['delete public.customers where=false'], commands: ['DELETE'] },
  { sql: 'DELETE FROM customers WHERE id = 7', expect: ['delete public.customers where=true'] },
  { sql: 'DELETE FROM customers WHERE CURRENT OF c', expect: ['delete public.customers where=true'] },
  { sql: 'UPDATE customers SET name = 1', expect: ['update public.customers where=false'] },
  { sql: 'UPDATE t SET a = u.b FROM u WHERE t.id = u.id', expect: ['update public.t where=true', ...R('u')] },
  { sql: 'DELETE FROM t USING u WHERE t.id = u.id', expect: ['delete public.t where=true', ...R('u')] },
  { sql: 'DELETE FROM t WHERE id = 1 RETURNING *', expect: ['delete public.t where=true', 'read public.t'] },
  { sql: 'INSERT INTO orders (id) VALUES (1)', expect: ['insert public.orders'], commands: ['INSERT'] },
  { sql: 'INSERT INTO orders SELECT * FROM customers', expect: ['insert public.orders', ...R('customers')] },
  { sql: 'INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 1', expect: ['insert public.t', 'update public.t where=true'] },
  { sql: 'INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING', expect: ['insert public.t'] },
  {
    sql: 'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED AND s.gone THEN DELETE WHEN MATCHED THEN UPDATE SET a = s.a WHEN NOT MATCHED THEN INSERT VALUES (s.id)',
    expect: ['merge public.t', 'delete public.t where=true', 'update public.t where=true', 'insert public.t', ...R('s')],
    commands: ['MERGE'],
  },
  {
    sql: 'MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED BY SOURCE THEN DELETE',
    expect: ['merge public.t', 'delete public.t where=false', ...R('s')],
  },
  { sql: 'TRUNCATE t, scratch.u', expect: ['truncate public.t object=table', 'truncate scratch.u object=table'], commands: ['TRUNCATE TABLE'] },
  // --- CTEs ---
  {
    sql: 'WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d',
    expect: ['delete public.customers where=false nested=cte', 'read public.customers nested=cte'],
    commands: ['SELECT'],
  },
  { sql: 'WITH d AS (UPDATE customers SET x = 1) SELECT 1', expect: ['update public.customers where=false nested=cte', 'read'] },
  { sql: 'WITH customers AS (SELECT 1) SELECT * FROM customers', expect: ['read'] },
  { sql: 'WITH customers AS (SELECT * FROM customers) SELECT * FROM customers', expect: R('customers', ' nested=cte') },
  { sql: 'WITH c AS (SELECT 1) SELECT * FROM public.c', expect: ['read public.c'] },
  { sql: 'WITH a AS (SELECT * FROM b), b AS (SELECT * FROM a) SELECT * FROM b', expect: R('b', ' nested=cte') },
  { sql: 'SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x', expect: R('x') },
  { sql: 'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r', expect: ['read'] },
  { sql: 'WITH t AS (SELECT 1) DELETE FROM t', expect: ['delete public.t where=false'] },
  {
    sql: 'WITH n AS (SELECT 1 AS id) INSERT INTO orders (id) SELECT id FROM n RETURNING *',
    expect: ['insert public.orders', 'read public.orders'],
  },
  {
    sql: 'WITH x AS (INSERT INTO t VALUES (1) RETURNING *) INSERT INTO u SELECT * FROM x',
    expect: ['insert public.t nested=cte', 'read public.t nested=cte', 'insert public.u'],
  },
  // --- EXPLAIN ---
  { sql: 'EXPLAIN ANALYZE DELETE FROM customers', expect: ['delete public.customers where=false nested=explain-analyze'], commands: ['EXPLAIN'] },
  { sql: 'EXPLAIN DELETE FROM customers', expect: ['delete public.customers where=false nested=explain'] },
  { sql: 'EXPLAIN (ANALYZE true) DELETE FROM t', expect: ['delete public.t where=false nested=explain-analyze'] },
  { sql: "EXPLAIN (ANALYZE 'on') DELETE FROM t", expect: ['delete public.t where=false nested=explain-analyze'] },
  { sql: 'EXPLAIN (ANALYZE 1) DELETE FROM t', expect: ['delete public.t where=false nested=explain-analyze'] },
  { sql: 'EXPLAIN (ANALYZE) DELETE FROM t', expect: ['delete public.t where=false nested=explain-analyze'] },
  { sql: 'EXPLAIN (ANALYZE off) DELETE FROM t', expect: ['delete public.t where=false nested=explain'] },
  { sql: "EXPLAIN (ANALYZE 'false') DELETE FROM t", expect: ['delete public.t where=false nested=explain'] },
  { sql: 'EXPLAIN (ANALYZE 0, COSTS off) DELETE FROM t', expect: ['delete public.t where=false nested=explain'] },
  { sql: 'EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM t', expect: ['delete public.t where=false nested=explain-analyze'] },
  { sql: 'EXPLAIN ANALYZE VERBOSE DELETE FROM t', expect: ['delete public.t where=false nested=explain-analyze'] },
  { sql: 'EXPLAIN ANALYSE DELETE FROM t', expect: ['delete public.t where=false nested=explain-analyze'] },
  { sql: 'EXPLAIN (VERBOSE, FORMAT json) SELECT * FROM customers', expect: R('customers', ' nested=explain') },
  { sql: 'EXPLAIN SELECT 1', expect: ['read nested=explain'] },
  {
    sql: 'EXPLAIN ANALYZE WITH d AS (DELETE FROM customers RETURNING 1) SELECT * FROM d',
    expect: ['delete public.customers where=false nested=explain-analyze', 'read public.customers nested=explain-analyze'],
  },
  { sql: 'EXPLAIN ANALYZE CREATE TABLE scratch.x AS SELECT 1', expect: ['create scratch.x object=table nested=explain-analyze', 'read nested=explain-analyze'] },
  // --- COPY ---
  {
    sql: "COPY customers TO PROGRAM 'curl -d @- http://127.0.0.1:9/'",
    expect: [
      'copy public.customers copy=to/program',
      ...R('customers', ' nested=copy'),
    ],
    commands: ['COPY'],
  },
  { sql: "COPY t FROM '/etc/passwd'", expect: ['copy public.t copy=from/file', 'insert public.t nested=copy'] },
  { sql: "COPY t FROM PROGRAM 'id'", expect: ['copy public.t copy=from/program', 'insert public.t nested=copy'] },
  { sql: "COPY scratch.t TO '/tmp/x'", expect: ['copy scratch.t copy=to/file', 'read scratch.t nested=copy'] },
  { sql: 'COPY (SELECT * FROM customers) TO STDOUT', expect: ['copy copy=to/stdio', ...R('customers', ' nested=copy')] },
  { sql: 'COPY (DELETE FROM customers RETURNING *) TO STDOUT', expect: ['copy copy=to/stdio', 'delete public.customers where=false nested=copy', 'read public.customers nested=copy'] },
  { sql: 'COPY orders (id) FROM STDIN WITH (FORMAT csv)', expect: ['copy public.orders copy=from/stdio', 'insert public.orders nested=copy'] },
  // --- server escapes, functions ---
  { sql: "SELECT pg_catalog.pg_read_file('/etc/passwd')", expect: ['call fn=pg_catalog.pg_read_file', 'read'] },
  { sql: "SELECT \"pg_read_file\"('/etc/passwd'), PG_READ_FILE('/etc/shadow')", expect: ['call fn=pg_read_file', 'read'] },
  { sql: "SELECT * FROM dblink('dbname=x', 'SELECT 1') AS t(a int)", expect: ['call fn=dblink', 'read'] },
  { sql: "SELECT lo_import('/etc/passwd')", expect: ['call fn=lo_import', 'read'] },
  { sql: "SELECT * FROM customers WHERE name = (SELECT pg_ls_dir('/')::text LIMIT 1)", expect: [...R('customers'), 'call fn=pg_ls_dir nested=subquery'] },
  { sql: 'CALL scratch.p(1)', expect: ['call fn=scratch.p'], commands: ['CALL'] },
  { sql: "DO $$ BEGIN DELETE FROM customers; END $$", expect: ['do'], commands: ['DO'] },
  { sql: "DO LANGUAGE plpgsql 'BEGIN NULL; END'", expect: ['do'] },
  { sql: "LOAD 'auto_explain'", expect: ['load'], commands: ['LOAD'] },
  { sql: 'SET ROLE postgres', expect: ['set_role setting=role value=postgres'], commands: ['SET'] },
  { sql: 'RESET ROLE', expect: ['set_role setting=role'], commands: ['RESET'] },
  { sql: 'SET SESSION AUTHORIZATION x', expect: ['session_authorization setting=session_authorization value=x'] },
  { sql: 'SET SESSION AUTHORIZATION DEFAULT', expect: ['session_authorization setting=session_authorization value=DEFAULT'] },
  { sql: "ALTER SYSTEM SET archive_command = 'sh -c id'", expect: ['alter_system setting=archive_command value=sh -c id'], commands: ['ALTER SYSTEM'] },
  {
    sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    expect: ['create public.f object=function', 'read nested=create-as'],
    commands: ['CREATE FUNCTION'],
  },
  {
    sql: "CREATE FUNCTION scratch.f() RETURNS void LANGUAGE sql AS $$ DELETE FROM customers $$",
    expect: ['create scratch.f object=function', 'delete public.customers where=false nested=create-as'],
  },
  {
    sql: 'CREATE FUNCTION g() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM customers; END',
    expect: ['create public.g object=function', 'delete public.customers where=false nested=create-as'],
  },
  { sql: "CREATE FUNCTION h() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$", expect: ['create public.h object=function'] },
  { sql: 'CREATE PROCEDURE p() LANGUAGE sql AS $$ SELECT 1 $$', expect: ['create public.p object=procedure', 'read nested=create-as'], commands: ['CREATE PROCEDURE'] },
  {
    sql: 'CREATE OR REPLACE RULE r AS ON DELETE TO t DO INSTEAD DELETE FROM customers',
    expect: ['create public.t object=rule', 'delete public.customers where=false nested=rule'],
    commands: ['CREATE RULE'],
  },
  {
    sql: 'CREATE RULE r AS ON INSERT TO t DO ALSO (UPDATE customers SET x = 1; NOTIFY t)',
    expect: ['create public.t object=rule', 'update public.customers where=false nested=rule', 'notify nested=rule'],
  },
  { sql: 'CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()', expect: ['create public.t object=trigger'] },
  { sql: 'CREATE EXTENSION pg_trgm', expect: ['create pg_trgm schema:public object=extension'], commands: ['CREATE EXTENSION'] },
  { sql: 'CREATE EXTENSION dblink SCHEMA scratch', expect: ['create dblink schema:scratch object=extension'] },
  // --- DDL ---
  { sql: 'CREATE TABLE scratch.t (a int)', expect: ['create scratch.t object=table'], commands: ['CREATE TABLE'] },
  { sql: 'CREATE TABLE t (a int)', expect: ['create public.t object=table'] },
  { sql: 'CREATE TEMP TABLE tt (a int)', expect: ['create pg_temp.tt object=table'] },
  { sql: 'CREATE TABLE scratch.p1 PARTITION OF orders FOR VALUES IN (1)', expect: ['create scratch.p1 object=table', 'alter public.orders object=table'] },
  { sql: 'CREATE TABLE scratch.c () INHERITS (orders)', expect: ['create scratch.c object=table', 'alter public.orders object=table'] },
  { sql: 'CREATE TABLE scratch.t2 (LIKE customers INCLUDING ALL)', expect: ['create scratch.t2 object=table', ...R('customers')] },
  { sql: 'CREATE TABLE scratch.t (a int REFERENCES customers (id))', expect: ['create scratch.t object=table', ...R('customers')] },
  {
    sql: 'CREATE TABLE scratch.x AS SELECT * FROM customers',
    expect: ['create scratch.x object=table', ...R('customers', ' nested=create-as')],
    commands: ['CREATE TABLE AS'],
  },
  { sql: 'SELECT * INTO scratch.t FROM customers', expect: ['create scratch.t object=table', ...R('customers')], commands: ['SELECT INTO'] },
  { sql: 'CREATE VIEW scratch.v AS SELECT * FROM customers', expect: ['create scratch.v object=view', ...R('customers', ' nested=create-as')], commands: ['CREATE VIEW'] },
  {
    sql: 'CREATE MATERIALIZED VIEW scratch.mv AS SELECT * FROM customers',
    expect: ['create scratch.mv object=materialized_view', ...R('customers', ' nested=create-as')],
    commands: ['CREATE MATERIALIZED VIEW'],
  },
  { sql: 'DROP TABLE t', expect: ['drop public.t object=table'], commands: ['DROP TABLE'] },
  { sql: 'DROP TABLE IF EXISTS scratch.a, b CASCADE', expect: ['drop scratch.a object=table', 'drop public.b object=table'] },
  { sql: 'DROP VIEW scratch.v', expect: ['drop scratch.v object=view'], commands: ['DROP VIEW'] },
  { sql: 'DROP MATERIALIZED VIEW mv', expect: ['drop public.mv object=materialized_view'], commands: ['DROP MATERIALIZED VIEW'] },
  { sql: 'DROP FUNCTION f(int), scratch.g', expect: ['drop public.f object=function', 'drop scratch.g object=function'] },
  { sql: 'DROP SCHEMA scratch CASCADE', expect: ['drop schema:scratch object=schema'] },
  { sql: 'DROP TRIGGER tr ON scratch.t', expect: ['drop scratch.t object=trigger'] },
  { sql: 'DROP TYPE scratch.ty', expect: ['drop scratch.ty object=type'] },
  { sql: 'DROP EXTENSION dblink', expect: ['drop dblink object=extension'] },
  { sql: 'DROP ROLE alice, bob', expect: ['drop alice object=role', 'drop bob object=role'] },
  { sql: 'DROP DATABASE shop', expect: ['drop shop object=database'] },
  { sql: 'ALTER TABLE t ADD COLUMN x int', expect: ['alter public.t object=table'], commands: ['ALTER TABLE'] },
  { sql: "ALTER TABLE scratch.t ALTER COLUMN a SET DEFAULT nextval('s')", expect: ['alter scratch.t object=table', 'call fn=nextval'] },
  { sql: 'ALTER TABLE t RENAME TO u', expect: ['alter public.t object=table'] },
  { sql: 'ALTER TABLE scratch.t ATTACH PARTITION orders FOR VALUES IN (1)', expect: ['alter scratch.t object=table', 'alter public.orders object=table'] },
  { sql: 'ALTER TABLE scratch.t INHERIT orders, ADD COLUMN b int DEFAULT now()', expect: ['alter scratch.t object=table', 'alter public.orders object=table', 'call fn=now'] },
  { sql: 'ALTER TABLE scratch.t DETACH PARTITION scratch.p', expect: ['alter scratch.t object=table', 'alter scratch.p object=table'] },
  { sql: 'ALTER TABLE scratch.t SET SCHEMA public', expect: ['alter scratch.t object=table', 'alter public.t object=table'] },
  { sql: 'ALTER SCHEMA scratch RENAME TO public2', expect: ['alter schema:scratch object=schema', 'alter schema:public2 object=schema'] },
  { sql: 'ALTER TABLE t OWNER TO bob', expect: ['alter public.t object=table'] },
  { sql: 'ALTER FUNCTION scratch.f(int) OWNER TO bob', expect: ['alter scratch.f object=function'] },
  { sql: 'ALTER ROLE bob SUPERUSER', expect: ['alter bob object=role'] },
  { sql: 'ALTER ROLE bob SET search_path = x', expect: ['alter bob object=role'], after: ['public'] },
  { sql: 'CREATE SCHEMA x', expect: ['create schema:x object=schema'], commands: ['CREATE SCHEMA'] },
  { sql: 'CREATE SCHEMA y CREATE TABLE t (a int) CREATE VIEW v AS SELECT * FROM t', expect: ['create schema:y object=schema', 'create y.t object=table', 'create y.v object=view', 'read y.t nested=create-as'] },
  { sql: 'CREATE ROLE r LOGIN', expect: ['create r object=role'], commands: ['CREATE ROLE'] },
  { sql: 'CREATE USER u', expect: ['create u object=role'] },
  { sql: 'CREATE INDEX i ON scratch.t (lower(a))', expect: ['create scratch.i object=index', 'call fn=lower'], commands: ['CREATE INDEX'] },
  { sql: 'CREATE TYPE scratch.ty AS (a int)', expect: ['create scratch.ty object=type'] },
  { sql: "CREATE TYPE mood AS ENUM ('a')", expect: ['create public.mood object=type'] },
  { sql: 'CREATE SEQUENCE scratch.sq', expect: ['create scratch.sq object=sequence'] },
  { sql: 'CREATE DOMAIN d AS int', expect: ['create public.d object=domain'] },
  { sql: 'CREATE AGGREGATE ag (int) (sfunc = f, stype = int)', expect: ['create public.ag object=aggregate'] },
  { sql: 'CREATE CAST (int AS text) WITH FUNCTION f(int)', expect: ['create object=cast'] },
  { sql: 'CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION f()', expect: ['create et object=event_trigger'] },
  { sql: 'CREATE LANGUAGE plperlu', expect: ['create plperlu schema:public object=extension'] }, // PostgreSQL turns it into CREATE EXTENSION
  { sql: 'CREATE TRUSTED LANGUAGE plx HANDLER h', expect: ['create plx object=language'], commands: ['CREATE LANGUAGE'] },
  { sql: 'CREATE DATABASE d', expect: ['create d object=database'] },
  { sql: 'CREATE PUBLICATION p FOR ALL TABLES', expect: ['create p object=publication'] },
  { sql: 'IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO scratch', expect: ['create schema:scratch object=foreign_table'] },
  { sql: 'CREATE POLICY p ON t USING (true)', expect: ['create public.t object=policy'] },
  { sql: "COMMENT ON TABLE t IS 'x'", expect: ['comment public.t object=table'], commands: ['COMMENT'] },
  { sql: "COMMENT ON COLUMN scratch.t.a IS 'x'", expect: ['comment scratch.t object=column'] },
  { sql: 'GRANT SELECT ON customers TO r', expect: ['grant public.customers object=table'], commands: ['GRANT'] },
  { sql: 'GRANT ALL ON ALL TABLES IN SCHEMA public TO r', expect: ['grant schema:public object=table'] },
  { sql: 'REVOKE USAGE ON SCHEMA public FROM r', expect: ['revoke schema:public object=schema'], commands: ['REVOKE'] },
  { sql: 'GRANT EXECUTE ON FUNCTION scratch.f(int) TO r', expect: ['grant scratch.f object=function'] },
  { sql: 'GRANT pg_read_server_files TO r', expect: ['grant pg_read_server_files object=role'] },
  { sql: 'ALTER DEFAULT PRIVILEGES IN SCHEMA s GRANT SELECT ON TABLES TO r', expect: ['grant schema:s object=table'] },
  { sql: 'REASSIGN OWNED BY a TO b', expect: ['utility'], commands: ['REASSIGN OWNED'] },
  { sql: 'SECURITY LABEL ON TABLE t IS NULL', expect: ['alter public.t object=table'], commands: ['SECURITY LABEL'] },
  // --- maintenance ---
  { sql: 'VACUUM', expect: ['vacuum'], commands: ['VACUUM'] },
  { sql: 'VACUUM (ANALYZE) t', expect: ['vacuum public.t object=table', 'analyze public.t object=table'] },
  { sql: 'ANALYZE t', expect: ['analyze public.t object=table'], commands: ['ANALYZE'] },
  { sql: 'CLUSTER t USING i', expect: ['cluster public.t object=table'] },
  { sql: 'REINDEX TABLE t', expect: ['reindex public.t object=table'] },
  { sql: 'REINDEX SCHEMA s', expect: ['reindex schema:s object=schema'] },
  { sql: 'REFRESH MATERIALIZED VIEW mv', expect: ['refresh public.mv object=materialized_view'] },
  { sql: 'LOCK TABLE t IN ACCESS EXCLUSIVE MODE', expect: ['lock public.t object=table'], commands: ['LOCK TABLE'] },
  { sql: 'CHECKPOINT', expect: ['checkpoint'] },
  { sql: 'DISCARD ALL', expect: ['discard'], commands: ['DISCARD ALL'] },
  // --- session ---
  { sql: 'SHOW search_path', expect: ['show setting=search_path'], commands: ['SHOW'] },
  { sql: 'SHOW ALL', expect: ['show setting=all'] },
  { sql: "SET statement_timeout = '5s'", expect: ['set setting=statement_timeout value=5s'] },
  { sql: 'SET statement_timeout TO 5000', expect: ['set setting=statement_timeout value=5000'] },
  { sql: "SET portcullis.reason = 'ticket 42'", expect: ['set setting=portcullis.reason value=ticket 42'] },
  { sql: "SET application_name = 'PostgreSQL JDBC Driver'", expect: ['set setting=application_name value=PostgreSQL JDBC Driver'] },
  { sql: "SET TIME ZONE 'UTC'", expect: ['set setting=timezone value=UTC'] },
  { sql: 'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', expect: ['set setting=transaction_isolation value=serializable'] },
  { sql: 'RESET statement_timeout', expect: ['reset setting=statement_timeout'], commands: ['RESET'] },
  { sql: 'RESET ALL', expect: ['reset setting=all'] },
  { sql: 'SET CONSTRAINTS ALL DEFERRED', expect: ['set setting=constraints'] },
  // --- transactions ---
  {
    sql: 'BEGIN; UPDATE t SET a = 1 WHERE id = 2; COMMIT',
    expect: ['#0 transaction tx=BEGIN', '#1 update public.t where=true', '#2 transaction tx=COMMIT'],
    commands: ['BEGIN', 'UPDATE', 'COMMIT'],
  },
  {
    sql: 'START TRANSACTION; SAVEPOINT a; RELEASE SAVEPOINT a; ROLLBACK TO a; ROLLBACK; END; ABORT',
    expect: ['#0 transaction tx=START', '#1 transaction tx=SAVEPOINT', '#2 transaction tx=RELEASE', '#3 transaction tx=ROLLBACK TO', '#4 transaction tx=ROLLBACK', '#5 transaction tx=COMMIT', '#6 transaction tx=ROLLBACK'],
  },
  {
    sql: "PREPARE TRANSACTION 'g'; COMMIT PREPARED 'g'; ROLLBACK PREPARED 'h'",
    expect: ['#0 transaction tx=PREPARE TRANSACTION', '#1 transaction tx=COMMIT PREPARED', '#2 transaction tx=ROLLBACK PREPARED'],
  },
  // --- prepared statements, cursors, notifications ---
  { sql: 'PREPARE p AS DELETE FROM customers', expect: ['prepare', 'delete public.customers where=false nested=prepare'], commands: ['PREPARE'] },
  { sql: 'PREPARE q (int) AS SELECT * FROM customers WHERE id = $1', expect: ['prepare', ...R('customers', ' nested=prepare')] },
  { sql: 'PREPARE v AS VALUES (1)', expect: ['prepare', 'read nested=prepare'] },
  { sql: 'EXECUTE p(1)', expect: ['execute'], commands: ['EXECUTE'] },
  { sql: "EXECUTE p(pg_read_file('/etc/passwd'))", expect: ['execute', 'call fn=pg_read_file'] },
  { sql: 'DEALLOCATE p', expect: ['deallocate'] },
  { sql: 'DEALLOCATE ALL', expect: ['deallocate'], commands: ['DEALLOCATE ALL'] },
  { sql: 'DECLARE c CURSOR WITH HOLD FOR SELECT * FROM customers', expect: ['declare', ...R('customers', ' nested=declare')], commands: ['DECLARE CURSOR'] },
  { sql: 'FETCH 10 FROM c; MOVE c; CLOSE c; CLOSE ALL', expect: ['#0 fetch', '#1 fetch', '#2 close', '#3 close'], commands: ['FETCH', 'MOVE', 'CLOSE CURSOR', 'CLOSE CURSOR'] },
  { sql: "LISTEN ch; NOTIFY ch, 'x'; UNLISTEN *", expect: ['#0 listen', '#1 notify', '#2 unlisten'] },
  // --- multi-statement strings ---
  { sql: 'SELECT 1; SELECT 2; DELETE FROM customers', expect: ['#0 read', '#1 read', '#2 delete public.customers where=false'] },
  { sql: 'SELECT 1;;; SELECT 2;', expect: ['#0 read', '#1 read'] },
  // --- catalogs: what psql, JDBC and ORMs send ---
  {
    sql: PSQL_DT,
    expect: ['read pg_catalog.pg_class', 'read pg_catalog.pg_namespace', 'read pg_catalog.pg_am', 'call fn=pg_catalog.pg_get_userbyid', 'call fn=pg_catalog.pg_table_is_visible'],
  },
  { sql: PSQL_D_LOOKUP, expect: ['read pg_catalog.pg_class', 'read pg_catalog.pg_namespace', 'call fn=pg_catalog.pg_table_is_visible'] },
  {
    sql: PSQL_D_COLUMNS,
    expect: [
      'read pg_catalog.pg_attribute',
      'read pg_catalog.pg_attrdef nested=subquery',
      'read pg_catalog.pg_collation nested=subquery',
      'read pg_catalog.pg_type nested=subquery',
      'call fn=pg_catalog.format_type',
      'call fn=pg_catalog.pg_get_expr nested=subquery',
    ],
  },
  { sql: JDBC_COLUMNS, expect: ['read information_schema.columns', 'call fn=pg_catalog.like_escape'] }, // LIKE … ESCAPE
  { sql: 'SELECT current_schema(), version()', expect: ['call fn=current_schema', 'call fn=version', 'read'] },
  // --- search_path ---
  {
    sql: 'SET search_path = scratch, public; DROP TABLE t',
    expect: ['#0 set setting=search_path value=scratch, public', '#1 drop scratch.t object=table', '#1 drop public.t object=table'],
    after: ['scratch', 'public'],
  },
  { sql: 'SET search_path TO scratch; CREATE TABLE t (a int)', expect: ['#0 set setting=search_path value=scratch', '#1 create scratch.t object=table'], after: ['scratch'] },
  { sql: "SET SCHEMA 'scratch'; DELETE FROM t", expect: ['#0 set setting=search_path value=scratch', '#1 delete scratch.t where=false'] },
  {
    sql: 'SET search_path = "Mixed", public; SELECT * FROM t',
    expect: ['#0 set setting=search_path value=Mixed, public', '#1 read Mixed.t', '#1 read public.t'],
    after: ['Mixed', 'public'],
  },
  {
    sql: 'SET search_path = scratch; SET search_path TO DEFAULT; DELETE FROM t',
    opts: { user: 'alice' },
    expect: ['#0 set setting=search_path value=scratch', '#1 set setting=search_path value=DEFAULT', '#2 delete alice.t where=false', '#2 delete public.t where=false'],
    after: ['alice', 'public'],
  },
  {
    sql: 'SET search_path = scratch; RESET search_path; DELETE FROM t',
    expect: ['#0 set setting=search_path value=scratch', '#1 reset setting=search_path', '#2 delete public.t where=false'],
    after: ['public'],
  },
  {
    sql: 'SET search_path = scratch; RESET ALL; DELETE FROM t',
    opts: { defaultSearchPath: ['app'] },
    expect: ['#0 set setting=search_path value=scratch', '#1 reset setting=all', '#2 delete app.t where=false'],
    after: ['app'],
  },
  {
    sql: 'BEGIN; SET LOCAL search_path = scratch; DROP TABLE t; COMMIT; DROP TABLE u',
    expect: [
      '#0 transaction tx=BEGIN',
      '#1 set setting=search_path value=scratch',
      '#2 drop scratch.t object=table',
      '#3 transaction tx=COMMIT',
      '#4 drop scratch.u object=table',
      '#4 drop public.u object=table',
    ],
    after: ['scratch', 'public'],
  },
  {
    sql: 'BEGIN; SET search_path = scratch; ROLLBACK; DROP TABLE t',
    expect: ['#0 transaction tx=BEGIN', '#1 set setting=search_path value=scratch', '#2 transaction tx=ROLLBACK', '#3 drop scratch.t object=table', '#3 drop public.t object=table'],
  },
  {
    sql: "SELECT set_config('search_path', 'scratch', false); DROP TABLE t",
    expect: ['#0 call fn=set_config', '#0 read', '#1 drop public.t object=table', '#1 drop scratch.t object=table'],
    after: ['public', 'scratch'],
  },
  {
    sql: "SELECT pg_catalog.set_config('SEARCH_PATH', 'a, \"B c\" , D', true); SELECT * FROM t",
    expect: ['#0 call fn=pg_catalog.set_config', '#0 read', '#1 read public.t', '#1 read a.t', '#1 read B c.t', '#1 read d.t'],
  },
  { sql: "SELECT set_config('application_name', $1, false)", expect: ['call fn=set_config', 'read'] },
  { sql: 'SELECT * FROM t', opts: { searchPath: ['$user', 'public'], user: 'alice' }, expect: ['read alice.t', 'read public.t'] },
  { sql: 'SELECT * FROM t', opts: { searchPath: ['"$user"', 'public'] }, expect: ['read public.t'] },
  { sql: 'CREATE TABLE t (a int)', opts: { searchPath: ['$user', 'scratch'] }, expect: ['create scratch.t object=table'] },
  { sql: 'SELECT * FROM pg_stat_activity', opts: { searchPath: ['public', 'pg_catalog'] }, expect: ['read public.pg_stat_activity', 'read pg_catalog.pg_stat_activity'] },
  { sql: 'SELECT * FROM t', opts: { searchPath: [] }, expect: ['read pg_temp.t'] }, // only the temporary schema is left
  { sql: 'DROP TABLE t', opts: { searchPath: [] }, expect: ['drop pg_temp.t object=table'] },
  {
    sql: 'SET ROLE bob; SELECT * FROM t',
    opts: { searchPath: ['$user', 'public'], user: 'alice' },
    expect: ['#0 set_role setting=role value=bob', '#1 read bob.t', '#1 read public.t'],
    after: ['bob', 'public'],
  },
  {
    sql: 'SET ROLE bob; RESET ROLE; DELETE FROM t',
    opts: { searchPath: ['$user', 'public'], user: 'alice' },
    expect: ['#0 set_role setting=role value=bob', '#1 set_role setting=role', '#2 delete alice.t where=false', '#2 delete public.t where=false'],
  },
];

describe('sqlFacts: statement table', () => {
  for (const c of CASES) {
    test(c.sql.length > 90 ? `${c.sql.slice(0, 90).replace(/\s+/g, ' ')}…` : c.sql, () => {
      const f = sqlFacts(c.sql, c.opts);
      assert.deepEqual(actionsOf(f), [...c.expect].sort());
      if (c.commands) assert.deepEqual(f.statements.map((s) => s.command), c.commands);
      if (c.after) assert.deepEqual(f.searchPathAfter, c.after);
      for (const s of f.statements) for (const a of s.actions) {
        assert.equal(a.statement, s.index);
        assert.equal(a.command, s.command, 'every action carries its statement’s top-level command');
      }
    });
  }
});

describe('sqlFacts: statement texts and shape', () => {
  test('each statement gets its own slice of the input', () => {
    const sql = "-- lead\nSELECT 'a;b' /* c */ ;\n  DELETE FROM t WHERE x = $$;$$ ;SELECT 3 -- tail\n";
    const f = sqlFacts(sql);
    assert.deepEqual(f.statements.map((s) => s.text), ["SELECT 'a;b' /* c */", 'DELETE FROM t WHERE x = $$;$$', 'SELECT 3 -- tail']);
    assert.deepEqual(f.statements.map((s) => s.index), [0, 1, 2]);
  });

  test('non-ASCII text is sliced by characters, not bytes', () => {
    const f = sqlFacts("SELECT 'é€😀' AS \"ç\"; DELETE FROM \"tablé\" WHERE a = 'ü'");
    assert.deepEqual(f.statements.map((s) => s.text), ["SELECT 'é€😀' AS \"ç\"", "DELETE FROM \"tablé\" WHERE a = 'ü'"]);
    assert.deepEqual(actionsOf(f), ['#0 read', '#1 delete public.tablé where=true']);
  });

  test('an empty or blank string has no statements', () => {
    assert.deepEqual(sqlFacts(''), { statements: [], searchPathAfter: ['public'] });
    assert.deepEqual(sqlFacts('  \n\t'), { statements: [], searchPathAfter: ['public'] });
    assert.deepEqual(sqlFacts('-- only a comment').statements, []);
  });

  test('actions carry only the fields that apply', () => {
    const [a] = sqlFacts('SELECT 1').statements[0]!.actions;
    assert.deepEqual(a, { action: 'read', statement: 0, command: 'SELECT' });
    const [d] = sqlFacts('DELETE FROM scratch.t').statements[0]!.actions;
    assert.deepEqual(d, { action: 'delete', statement: 0, command: 'DELETE', relation: 'scratch.t', schema: 'scratch', where: false });
  });

  test('identifiers longer than 63 bytes are truncated as PostgreSQL does', () => {
    const long = 'a'.repeat(70);
    assert.deepEqual(actionsOf(sqlFacts(`DELETE FROM scratch.${long}`)), [`delete scratch.${'a'.repeat(63)} where=false`]);
  });
});

function errorOf(fn: () => unknown): PortcullisError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof PortcullisError, `expected a PortcullisError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected an error');
}

describe('sqlFacts: errors', () => {
  test('a syntax error names the token and its 1-based position', () => {
    const e = errorOf(() => sqlFacts('SELEC 1'));
    assert.equal(e.code, 'sql_parse_error');
    assert.equal(e.message, 'syntax error at or near "SELEC" at position 1');
    assert.deepEqual(e.details, { position: 1 });
  });

  test('an unterminated string', () => {
    const e = errorOf(() => sqlFacts("SELECT 'abc"));
    assert.equal(e.code, 'sql_parse_error');
    assert.match(e.message, /^unterminated quoted string at or near "'abc" at position 8$/);
  });

  test('a bad third statement fails the whole string, at its position', () => {
    const e = errorOf(() => sqlFacts('SELECT 1; SELECT 2; DELET FROM customers'));
    assert.equal(e.code, 'sql_parse_error');
    assert.equal(e.details.position, 21);
  });

  test('positions count characters', () => {
    const e = errorOf(() => sqlFacts("SELECT 'é' FROMM x"));
    assert.equal(e.details.position, 18);
  });

  test('unterminated comment, dollar quote, quoted identifier', () => {
    for (const sql of ['SELECT 1 /* open', 'SELECT $$ open', 'SELECT "open']) {
      assert.equal(errorOf(() => sqlFacts(sql)).code, 'sql_parse_error', sql);
    }
  });

  test('NUL characters and lone surrogates are refused', () => {
    assert.equal(errorOf(() => sqlFacts('SELECT 1\u0000; DROP TABLE t')).code, 'sql_parse_error');
    assert.equal(errorOf(() => sqlFacts("SELECT '\ud800'")).code, 'sql_parse_error');
  });

  test('set_config on search_path with a value that is not a literal is unresolvable', () => {
    for (const sql of [
      "SELECT set_config('search_path', $1, false)",
      "SELECT set_config('search_path', current_user || ',public', false)",
      'SELECT set_config($1, $2, false)',
      "SELECT set_config(name, 'x', false) FROM t",
      "PREPARE p AS SELECT set_config('search_path', 'scratch', false)",
      "CREATE VIEW v AS SELECT set_config('search_path', 'scratch', false)",
      "DECLARE c CURSOR FOR SELECT set_config('search_path', 'scratch', false)",
    ]) {
      const e = errorOf(() => sqlFacts(sql));
      assert.equal(e.code, 'sql_unresolvable', sql);
    }
  });

  test('an invalid set_config search_path value and an empty path are unresolvable', () => {
    assert.equal(errorOf(() => sqlFacts("SELECT set_config('search_path', 'a,,b', false)")).code, 'sql_unresolvable');
    assert.equal(errorOf(() => sqlFacts("SELECT set_config('search_path', '\"open', false)")).code, 'sql_unresolvable');
    assert.equal(errorOf(() => sqlFacts('CREATE TABLE t (a int)', { searchPath: ['$user'] })).code, 'sql_unresolvable');
  });

  test('a SQL function body that does not parse is unresolvable', () => {
    assert.equal(errorOf(() => sqlFacts("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELEC 1'")).code, 'sql_unresolvable');
  });

  test('very deep nesting is refused, not a crash', () => {
    for (const sql of ['SELECT ' + '('.repeat(20000) + '1' + ')'.repeat(20000), 'SELECT ' + Array.from({ length: 20000 }, (_, i) => `a${i}`).join('+')]) {
      const e = errorOf(() => sqlFacts(sql));
      assert.ok(['sql_parse_error', 'sql_unresolvable'].includes(e.code), e.code);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The cache

/** The same text with every literal the lexer normalizes replaced by another of its class. */
function literalVariant(sql: string): string | null {
  const n = normalizeLiterals(sql);
  if (!n || n.map.length === 0) return null;
  let out = '';
  let last = 0;
  for (let q = 0; q < n.map.length; q += 4) {
    const [s, e, k] = [n.map[q]!, n.map[q + 1]!, n.map[q + 2]!];
    out += sql.slice(last, s);
    const mark = n.key[k];
    out += mark === MARK_STRING ? "'zz''q'" : mark === MARK_INT ? '7' : mark === MARK_DECIMAL ? '7.25' : mark === MARK_DOLLAR ? '$x$ zz $x$' : assert.fail('mark');
    last = e;
  }
  return out + sql.slice(last);
}

function outcome(fn: () => SqlFacts): unknown {
  try {
    return { facts: fn() };
  } catch (e) {
    return { error: e instanceof PortcullisError ? [e.code, e.message] : String(e) };
  }
}

describe('sqlFactsCached', () => {
  const corpus: { sql: string; opts?: SqlFactsOptions }[] = [
    ...CASES.map((c) => ({ sql: c.sql, opts: c.opts })),
    { sql: 'SELECT * FROM customers WHERE id = 1 AND name = \'x\'' },
    { sql: "SELECT 'é', 1.5, $$d$$ FROM t; DELETE FROM u WHERE a = 'ü'" },
    { sql: 'SELEC 1' },
    { sql: "SELECT set_config('search_path', $1, false)" },
  ];

  test('cached and uncached facts agree over the whole corpus (miss, hit, literal variants)', () => {
    clearSqlFactsCache();
    let variants = 0;
    for (const { sql, opts } of corpus) {
      const want = outcome(() => sqlFacts(sql, opts));
      assert.deepEqual(outcome(() => sqlFactsCached(sql, opts)), want, `miss: ${sql}`);
      assert.deepEqual(outcome(() => sqlFactsCached(sql, opts)), want, `hit: ${sql}`);
      const v = literalVariant(sql);
      if (v !== null) {
        variants++;
        assert.deepEqual(outcome(() => sqlFactsCached(v, opts)), outcome(() => sqlFacts(v, opts)), `variant: ${v}`);
      }
    }
    assert.ok(variants > 40, `literal variants exercised: ${variants}`);
  });

  test('statements that differ only in literals share one entry; their texts stay their own', () => {
    clearSqlFactsCache();
    const a = sqlFactsCached('SELECT * FROM t WHERE id = 1');
    const s1 = sqlFactsCacheStats();
    const b = sqlFactsCached('SELECT * FROM t WHERE id = 2');
    const c = sqlFactsCached("SELECT * FROM t WHERE id = 123456");
    const s2 = sqlFactsCacheStats();
    assert.equal(s2.entries, s1.entries);
    assert.equal(s2.hits, s1.hits + 2);
    assert.equal(b.statements[0]!.text, 'SELECT * FROM t WHERE id = 2');
    assert.equal(c.statements[0]!.text, 'SELECT * FROM t WHERE id = 123456');
    assert.deepEqual(b.statements[0]!.actions, a.statements[0]!.actions);
    sqlFactsCached("UPDATE t SET name = 'x' WHERE id = 1; SELECT 1");
    const s3 = sqlFactsCacheStats();
    const d = sqlFactsCached("UPDATE t SET name = 'a much longer value' WHERE id = 99; SELECT 2");
    assert.equal(sqlFactsCacheStats().entries, s3.entries);
    assert.deepEqual(d.statements.map((s) => s.text), ["UPDATE t SET name = 'a much longer value' WHERE id = 99", 'SELECT 2']);
  });

  test('DELETE FROM t and DELETE FROM t WHERE x=1 do not share an entry', () => {
    clearSqlFactsCache();
    const a = sqlFactsCached('DELETE FROM t');
    const b = sqlFactsCached('DELETE FROM t WHERE x=1');
    assert.equal(sqlFactsCacheStats().entries, 2);
    assert.equal(a.statements[0]!.actions[0]!.where, false);
    assert.equal(b.statements[0]!.actions[0]!.where, true);
  });

  test('statements whose facts depend on literal values are keyed on their exact text', () => {
    clearSqlFactsCache();
    const pairs: [string, string, (f: SqlFacts) => unknown][] = [
      ["SET statement_timeout = '5s'", "SET statement_timeout = '10s'", (f) => f.statements[0]!.actions[0]!.value],
      ['SET statement_timeout = 5', 'SET statement_timeout = 6', (f) => f.statements[0]!.actions[0]!.value],
      ["SELECT set_config('search_path', 'scratch', false); DROP TABLE t", "SELECT set_config('search_path', 'public', false); DROP TABLE t", (f) => actionsOf(f)],
      ["EXPLAIN (ANALYZE 'on') DELETE FROM t", "EXPLAIN (ANALYZE 'off') DELETE FROM t", (f) => f.statements[0]!.actions[0]!.nested],
      ['EXPLAIN (ANALYZE 1) DELETE FROM t', 'EXPLAIN (ANALYZE 0) DELETE FROM t', (f) => f.statements[0]!.actions[0]!.nested],
      ["CREATE FUNCTION f() RETURNS int LANGUAGE 'sql' AS 'DELETE FROM customers'", "CREATE FUNCTION f() RETURNS int LANGUAGE 'plpgsql' AS 'DELETE FROM customers'", (f) => actionsOf(f)],
      ["SELECT * FROM U&\"d!0061t\" UESCAPE '!'", "SELECT * FROM U&\"d!0061t\" UESCAPE '#'", (f) => actionsOf(f)],
      ["ALTER SYSTEM SET work_mem = '1MB'", "ALTER SYSTEM SET work_mem = '2MB'", (f) => f.statements[0]!.actions[0]!.value],
    ];
    for (const [x, y, pick] of pairs) {
      const fx = sqlFactsCached(x);
      const fy = sqlFactsCached(y);
      assert.deepEqual(fx, sqlFacts(x), x);
      assert.deepEqual(fy, sqlFacts(y), y);
      assert.notDeepEqual(pick(fx), pick(fy), `${x} vs ${y}`);
    }
  });

  test('the search path and user are part of the key', () => {
    clearSqlFactsCache();
    const a = sqlFactsCached('DROP TABLE t', { searchPath: ['scratch'] });
    const b = sqlFactsCached('DROP TABLE t', { searchPath: ['public'] });
    const c = sqlFactsCached('DROP TABLE t', { searchPath: ['$user'], user: 'alice' });
    assert.deepEqual([a, b, c].map(actionsOf), [['drop scratch.t object=table'], ['drop public.t object=table'], ['drop alice.t object=table']]);
  });

  test('cached facts are frozen (shared between callers)', () => {
    const f = sqlFactsCached('SELECT * FROM customers WHERE id = 5');
    assert.ok(Object.isFrozen(f) && Object.isFrozen(f.statements) && Object.isFrozen(f.statements[0]!.actions[0]));
    const g = sqlFactsCached('SELECT * FROM customers WHERE id = 6');
    assert.ok(Object.isFrozen(g) && Object.isFrozen(g.statements[0]));
  });

  test('errors are thrown, not cached as facts', () => {
    clearSqlFactsCache();
    for (let i = 0; i < 2; i++) assert.equal(errorOf(() => sqlFactsCached('SELEC 1')).code, 'sql_parse_error');
    assert.equal(sqlFactsCacheStats().entries, 0);
  });

  test('the cache is bounded', () => {
    clearSqlFactsCache();
    for (let i = 0; i < CACHE_MAX_ENTRIES + 50; i++) sqlFactsCached(`SELECT c${i} FROM t`);
    assert.equal(sqlFactsCacheStats().entries, CACHE_MAX_ENTRIES);
    // the oldest went first, the newest are there
    const before = sqlFactsCacheStats().hits;
    sqlFactsCached(`SELECT c${CACHE_MAX_ENTRIES + 49} FROM t`);
    assert.equal(sqlFactsCacheStats().hits, before + 1);
    clearSqlFactsCache();
  });
});

// ---------------------------------------------------------------------------------------------
// The cache lexer against PostgreSQL's scanner

describe('normalizeLiterals', () => {
  test('replaces literal values only', () => {
    const n = normalizeLiterals("SELECT 'a''b', E'x', 42, 4.5, .5, $t$ ; $t$, $1, \"q'\" FROM t -- 'c'\n/* 'd' */");
    assert.ok(n);
    assert.equal(n.key, `SELECT ${MARK_STRING}, ${MARK_STRING}, ${MARK_INT}, ${MARK_DECIMAL}, ${MARK_DECIMAL}, ${MARK_DOLLAR}, $1, "q'" FROM t -- 'c'\n/* 'd' */`);
  });

  test('falls back to the exact text where values can change the tokens or the parse', () => {
    for (const sql of [
      "SELECT U&'d\\0061t'",
      "SELECT * FROM U&\"d!0061t\" UESCAPE '!'",
      "SELECT B'0101', 1",
      "SELECT X'ff', 1",
      "SELECT N'x', 1",
      'SELECT 1e5',
      'SELECT 1_000',
      'SELECT 0x1f',
      'SELECT 1.',
      'SELECT 12345678901',
      "SELECT 'a'\n'b'",
      "SELECT 'open",
      'SELECT 1 /* open',
      'SELECT $a$ open',
      'SELECT 1\u0001',
    ]) {
      assert.equal(normalizeLiterals(sql), null, sql);
    }
    // an E'' string with escapes stays verbatim (the key keeps it), the rest is normalized
    assert.equal(normalizeLiterals("SELECT E'\\n', 5")?.key, `SELECT E'\\n', ${MARK_INT}`);
    // float(p) is checked by the grammar itself: p stays verbatim
    assert.equal(normalizeLiterals('SELECT 1::FLOAT ( 5 ), f(5)')?.key, `SELECT ${MARK_INT}::FLOAT ( 5 ), f(${MARK_INT})`);
    assert.equal(normalizeLiterals('SELECT myfloat(5)')?.key, `SELECT myfloat(${MARK_INT})`);
    clearSqlFactsCache();
    assert.ok(sqlFactsCached('SELECT 1::float(5)'));
    assert.equal(errorOf(() => sqlFactsCached('SELECT 1::float(0)')).code, 'sql_parse_error');
  });

  test('literal boundaries match PostgreSQL’s scanner (deterministic random texts)', () => {
    const frags = [
      "'", "''", "'a'", "E'", "e'x\\'y'", "E'ab'", '\\', '$$', '$a$', '$b$', '$1', '$', '1', '12', '1.5', '.5', '1e5', '1.', '..', '...',
      '0x1F', '1_000', 'abc', 'e', 'E', "b'01'", "x'ff'", "n'z'", "U&'d'", 'U&"d"', 'UESCAPE', '"', '"q""q"', '--', '/*', '*/', '\n',
      ' ', '\t', '\r', '-', '+', '*', '/', ';', '(', ')', ',', '::', '=', 'a$b', 'x1', 'SELECT', 'FROM', "'\n'", '-- c\n', '1234567890',
      '99', 't.5', 'a.b', '!', '<', '>', '~', '@', '#', '%', '^', '&', '|', '`', '?', ':', '[', ']',
    ];
    let seed = 20240917;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const literal = new Set(['SCONST', 'ICONST', 'FCONST']);
    let compared = 0;
    for (let iter = 0; iter < 20000; iter++) {
      let s = '';
      const len = 1 + Math.floor(rnd() * 8);
      for (let k = 0; k < len; k++) s += frags[Math.floor(rnd() * frags.length)];
      const n = normalizeLiterals(s);
      if (!n) continue;
      let tokens: { start: number; end: number; tokenName: string }[];
      try {
        tokens = scanSync(s).tokens;
      } catch {
        continue; // the scanner rejects it: so does the parser, nothing gets cached
      }
      compared++;
      const replaced = new Set<number>();
      for (let q = 0; q < n.map.length; q += 4) {
        const t = tokens.find((x) => x.start === n.map[q]);
        assert.ok(t && t.end === n.map[q + 1] && literal.has(t.tokenName), `replacement ${n.map[q]}..${n.map[q + 1]} of ${JSON.stringify(s)} is not one literal token`);
        replaced.add(t.start);
      }
      for (const t of tokens) {
        if (!literal.has(t.tokenName) || replaced.has(t.start)) continue;
        const text = s.slice(t.start, t.end);
        assert.ok(/^[eE]'/.test(text) && text.includes('\\'), `literal ${JSON.stringify(text)} in ${JSON.stringify(s)} left in the key`);
      }
    }
    assert.ok(compared > 5000, `compared ${compared}`);
  });
});
