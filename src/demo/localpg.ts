// A throwaway PostgreSQL server from the system's binaries, for the demo and the tests.
//
// Layout under `dir`: data/ (the cluster), run/ (the unix socket), postgres.log (the server log),
// superuser.password. When this process runs as root, initdb/pg_ctl/postgres run as the
// `postgres` system user (initdb refuses root): `dir` and its parents are made traversable and
// data/, run/ and the log are owned by that user. The server listens on one loopback address.
// An existing cluster in `dir` is reused (its stored password stays valid).

import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { PortcullisError } from '../policy/types.js';
import { freePort } from './ports.js';

export interface LocalPostgresOptions {
  /** Directory that holds the cluster, its socket and its log (created if missing). */
  dir: string;
  /** TCP port; a free one is picked when absent. */
  port?: number;
  /** Loopback address to listen on (default 127.0.0.1). */
  host?: string;
  /** log_statement=all, so that tests can prove from the server log what ran (default false). */
  logStatements?: boolean;
  /** The superuser's password (default: random, or the stored one of a reused cluster). */
  superPassword?: string;
  /** Seconds pg_ctl waits for start-up (default 60). */
  startTimeoutSeconds?: number;
}

export interface LocalPostgres {
  host: string;
  port: number;
  dir: string;
  dataDir: string;
  /** Directory of the unix socket (inside `dir`, unless that path is too long for a socket). */
  socketDir: string;
  superuser: string;
  password: string;
  /** The server's log (statements too when logStatements). */
  logFile: string;
  /** Directory of the PostgreSQL binaries used. */
  binDir: string;
  /** Major version, from PG_VERSION. */
  version: string;
  /** `postgresql://superuser:password@host:port/db` (db defaults to `postgres`). */
  connectionString(db?: string): string;
  /** Creates database `name` unless it exists. */
  createDatabase(name: string): Promise<void>;
  /** The server log as it is now. */
  serverLog(): Promise<string>;
  /** True when the server log contains `text`. */
  serverLogContains(text: string): Promise<boolean>;
  /** `pg_ctl stop -m fast`; safe to call more than once. */
  stop(): Promise<void>;
}

const SUPERUSER = 'postgres';
const SERVICE_USER = 'postgres';
/** sun_path is 108 bytes on Linux, 104 on macOS; keep a margin for `/.s.PGSQL.65535`. */
const MAX_SOCKET_DIR_LENGTH = 100 - '/.s.PGSQL.65535'.length;

// ---------------------------------------------------------------------------------------------
// Finding the binaries

export interface FindBinDirOptions {
  /** pg_config to ask (default `pg_config` on PATH); null to skip. */
  pgConfig?: string | null;
  /** Directory holding <version>/bin (default /usr/lib/postgresql). */
  libRoot?: string;
  /** PATH to search last (default process.env.PATH). */
  pathEnv?: string;
}

function hasInitdb(dir: string): boolean {
  try {
    fs.accessSync(path.join(dir, 'initdb'), fs.constants.X_OK);
    fs.accessSync(path.join(dir, 'pg_ctl'), fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The directory of initdb/pg_ctl/postgres: `pg_config --bindir`, else the highest
 * /usr/lib/postgresql/<v>/bin, else the first PATH entry that has initdb. Throws
 * `pg_not_installed` when none has it.
 */
export function findPgBinDir(opts: FindBinDirOptions = {}): string {
  const tried: string[] = [];
  const pgConfig = opts.pgConfig === undefined ? 'pg_config' : opts.pgConfig;
  if (pgConfig !== null) {
    try {
      const out = execFileSync(pgConfig, ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 }).trim();
      if (out !== '') {
        tried.push(`${out} (pg_config --bindir)`);
        if (hasInitdb(out)) return out;
      }
    } catch {
      tried.push(`${pgConfig} --bindir (failed)`);
    }
  }
  const libRoot = opts.libRoot ?? '/usr/lib/postgresql';
  let versions: string[];
  try {
    versions = fs.readdirSync(libRoot).filter((v) => /^\d+(\.\d+)?$/.test(v));
  } catch {
    versions = [];
  }
  versions.sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const dir = path.join(libRoot, v, 'bin');
    tried.push(dir);
    if (hasInitdb(dir)) return dir;
  }
  const pathEnv = opts.pathEnv ?? process.env.PATH ?? '';
  for (const dir of pathEnv.split(path.delimiter).slice(0, 256)) {
    if (dir === '') continue;
    tried.push(dir);
    if (hasInitdb(dir)) return dir;
  }
  throw new PortcullisError(
    'pg_not_installed',
    `PostgreSQL server binaries (initdb, pg_ctl) not found; looked in: ${tried.join(', ') || '(nothing)'}. ` +
      'Install them (Debian/Ubuntu: apt-get install postgresql) or put initdb on PATH.',
    { tried },
  );
}

// ---------------------------------------------------------------------------------------------
// Running commands, as the postgres system user when we are root

interface RunAs {
  uid: number;
  gid: number;
  /** argv prefix that runs the rest as the service user. */
  prefix: string[];
}

function findExecutable(name: string, extraDirs: string[]): string | undefined {
  const dirs = [...extraDirs, ...(process.env.PATH ?? '').split(path.delimiter)].filter((d) => d !== '');
  for (const dir of dirs.slice(0, 256)) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return undefined;
}

function resolveRunAs(): RunAs | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  let uid: number;
  let gid: number;
  try {
    uid = Number(execFileSync('id', ['-u', SERVICE_USER], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    gid = Number(execFileSync('id', ['-g', SERVICE_USER], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  } catch {
    throw new PortcullisError(
      'pg_no_service_user',
      `running as root, PostgreSQL must run as the '${SERVICE_USER}' system user, which does not exist (create it, e.g. useradd --system ${SERVICE_USER})`,
    );
  }
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || uid === 0) {
    throw new PortcullisError('pg_no_service_user', `the '${SERVICE_USER}' system user has an unusable uid/gid (${uid}/${gid})`);
  }
  const sbin = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  const runuser = findExecutable('runuser', sbin);
  if (runuser !== undefined) return { uid, gid, prefix: [runuser, '-u', SERVICE_USER, '--'] };
  const setpriv = findExecutable('setpriv', sbin);
  if (setpriv !== undefined) return { uid, gid, prefix: [setpriv, `--reuid=${uid}`, `--regid=${gid}`, '--init-groups'] };
  throw new PortcullisError('pg_no_runuser', 'running as root, but neither runuser nor setpriv is installed to run PostgreSQL as the postgres user');
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    // PG* variables of the caller must not steer our server (PGDATA, PGPORT, PGHOST, ...).
    if (!k.startsWith('PG') && !k.startsWith('LC_') && k !== 'LANG') env[k] = v;
  }
  env.LC_ALL = 'C';
  env.LANG = 'C';
  return env;
}

/**
 * Runs `file args` (as the service user when `runAs`), resolving on exit (not on stdio close:
 * `pg_ctl start` leaves a daemon behind). Output is capped.
 */
function run(file: string, args: string[], runAs: RunAs | undefined, cwd: string, timeoutMs: number): Promise<RunResult> {
  const argv = runAs ? [...runAs.prefix, file, ...args] : [file, ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { cwd, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const cap = 64 * 1024;
    child.stdout.on('data', (d: Buffer) => {
      if (stdout.length < cap) stdout += d.toString('utf8');
    });
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < cap) stderr += d.toString('utf8');
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      // Give already-buffered output a moment to arrive, then detach from the pipes.
      setImmediate(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        resolve({ code, stdout, stderr });
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Filesystem preparation

/** Adds o+x to every ancestor of `dir` that lacks it, so that the service user can reach it. */
function makeTraversable(dir: string): void {
  let current = path.resolve(dir);
  for (let i = 0; i < 64; i++) {
    const st = fs.statSync(current);
    if ((st.mode & 0o001) === 0) fs.chmodSync(current, (st.mode & 0o7777) | 0o001);
    const parent = path.dirname(current);
    if (parent === current) break;
    current = parent;
  }
}

function quoteConf(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$/;

// ---------------------------------------------------------------------------------------------

/** Processes started by this module that are still running, stopped at exit as a last resort. */
const running = new Set<() => void>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Prepended: it must run before other exit hooks that might remove the data directory.
  process.prependOnceListener('exit', () => {
    for (const stopNow of running) stopNow();
  });
}

/** Starts (initializing first when needed) a PostgreSQL server under `opts.dir`. */
export async function startLocalPostgres(opts: LocalPostgresOptions): Promise<LocalPostgres> {
  if (typeof opts.dir !== 'string' || opts.dir === '') {
    throw new PortcullisError('pg_bad_option', 'startLocalPostgres: option dir is required');
  }
  const host = opts.host ?? '127.0.0.1';
  if (!LOOPBACK.test(host)) {
    throw new PortcullisError('pg_bad_option', `startLocalPostgres: option host must be a loopback address, got ${JSON.stringify(host)}`);
  }
  if (opts.port !== undefined && (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535)) {
    throw new PortcullisError('pg_bad_option', `startLocalPostgres: option port must be an integer 1..65535, got ${String(opts.port)}`);
  }
  const timeoutSeconds = opts.startTimeoutSeconds ?? 60;
  const binDir = findPgBinDir();
  const runAs = resolveRunAs();

  const dir = path.resolve(opts.dir);
  const dataDir = path.join(dir, 'data');
  const logFile = path.join(dir, 'postgres.log');
  const passwordFile = path.join(dir, 'superuser.password');
  fs.mkdirSync(dir, { recursive: true });
  let socketDir = path.join(dir, 'run');
  let ownSocketTmp = false;
  if (socketDir.length > MAX_SOCKET_DIR_LENGTH) {
    socketDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pcpg-'));
    ownSocketTmp = true;
  }

  const chownToService = (p: string): void => {
    if (runAs) fs.chownSync(p, runAs.uid, runAs.gid);
  };
  if (runAs) {
    makeTraversable(dir);
    makeTraversable(path.dirname(socketDir));
  }
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  chownToService(dataDir);
  fs.chmodSync(dataDir, 0o700);
  fs.mkdirSync(socketDir, { recursive: true, mode: 0o700 });
  chownToService(socketDir);
  fs.chmodSync(socketDir, 0o700);
  if (!fs.existsSync(logFile)) fs.writeFileSync(logFile, '', { mode: 0o640 });
  chownToService(logFile);

  const initialized = fs.existsSync(path.join(dataDir, 'PG_VERSION'));
  let password: string;
  let changePassword = false;
  if (initialized) {
    if (!fs.existsSync(passwordFile)) {
      throw new PortcullisError(
        'pg_unknown_password',
        `a PostgreSQL cluster exists in ${dataDir} but its superuser password file ${passwordFile} is missing; remove ${dir} to start afresh`,
      );
    }
    password = fs.readFileSync(passwordFile, 'utf8').trim();
    if (opts.superPassword !== undefined && opts.superPassword !== password) changePassword = true;
  } else {
    password = opts.superPassword ?? randomBytes(18).toString('base64url');
    if (password === '' || /[\r\n]/.test(password)) {
      throw new PortcullisError('pg_bad_option', 'startLocalPostgres: option superPassword must be non-empty and on one line');
    }
    const pwfile = path.join(dir, `.initdb-pw-${process.pid}`);
    fs.writeFileSync(pwfile, password + '\n', { mode: 0o600 });
    chownToService(pwfile);
    try {
      const r = await run(
        path.join(binDir, 'initdb'),
        ['-D', dataDir, '-U', SUPERUSER, `--pwfile=${pwfile}`, '--auth=scram-sha-256', '-E', 'UTF8', '--locale=C', '--no-sync'],
        runAs,
        dir,
        120_000,
      );
      if (r.code !== 0) {
        throw new PortcullisError('pg_initdb_failed', `initdb failed in ${dataDir} (exit ${String(r.code)}): ${(r.stderr || r.stdout).trim()}`, {
          stderr: r.stderr,
        });
      }
    } finally {
      fs.rmSync(pwfile, { force: true });
    }
    fs.writeFileSync(passwordFile, password + '\n', { mode: 0o600 });
    fs.appendFileSync(path.join(dataDir, 'postgresql.conf'), "\n# settings of this run, written by portcullis\ninclude_if_exists = 'portcullis.conf'\n");
  }
  const version = fs.readFileSync(path.join(dataDir, 'PG_VERSION'), 'utf8').trim();
  const pgCtl = path.join(binDir, 'pg_ctl');

  const status = await run(pgCtl, ['status', '-D', dataDir], runAs, dir, 30_000);
  if (status.code === 0) {
    throw new PortcullisError('pg_already_running', `a PostgreSQL server is already running on ${dataDir}; stop it first (pg_ctl stop -D ${dataDir})`);
  }

  const writeConf = (port: number): void => {
    const conf = [
      `listen_addresses = ${quoteConf(host === 'localhost' ? '127.0.0.1' : host)}`,
      `port = ${port}`,
      `unix_socket_directories = ${quoteConf(socketDir)}`,
      'unix_socket_permissions = 0700',
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      'logging_collector = off',
      "log_destination = 'stderr'",
      `log_statement = ${opts.logStatements ? "'all'" : "'none'"}`,
      "log_line_prefix = '%m [%p] %q%u@%d '",
      'max_connections = 100',
      'shared_buffers = 32MB',
      '',
    ].join('\n');
    const confFile = path.join(dataDir, 'portcullis.conf');
    fs.writeFileSync(confFile, conf, { mode: 0o600 });
    chownToService(confFile);
  };

  // Start; with a picked port, retry a few times in case another process took it meanwhile.
  const attempts = opts.port === undefined ? 4 : 1;
  let port = 0;
  for (let attempt = 1; ; attempt++) {
    port = opts.port ?? (await freePort(host === 'localhost' ? '127.0.0.1' : host));
    writeConf(port);
    const logSizeBefore = fs.statSync(logFile).size;
    const r = await run(pgCtl, ['start', '-D', dataDir, '-l', logFile, '-w', '-t', String(timeoutSeconds), '-s'], runAs, dir, (timeoutSeconds + 30) * 1000);
    if (r.code === 0) break;
    const newLog = readFrom(logFile, logSizeBefore);
    const portTaken = /could not bind|Address already in use|could not create any TCP\/IP sockets/i.test(newLog);
    if (portTaken && attempt < attempts) continue;
    throw new PortcullisError(
      'pg_start_failed',
      `PostgreSQL did not start on ${host}:${port} (data ${dataDir}, exit ${String(r.code)}): ${(r.stderr.trim() + '\n' + lastLines(newLog, 15)).trim()}`,
      { logFile, port },
    );
  }

  let stopped = false;
  const stopNow = (): void => {
    if (stopped) return;
    stopped = true;
    const argv = [pgCtl, 'stop', '-D', dataDir, '-m', 'immediate', '-s'];
    const full = runAs ? [...runAs.prefix, ...argv] : argv;
    try {
      execFileSync(full[0], full.slice(1), { cwd: dir, env: childEnv(), stdio: 'ignore', timeout: 20_000 });
    } catch {
      // best effort at exit
    }
  };
  running.add(stopNow);
  installExitHook();

  const connectionString = (db = 'postgres'): string => {
    const h = host.includes(':') ? `[${host}]` : host;
    return `postgresql://${encodeURIComponent(SUPERUSER)}:${encodeURIComponent(password)}@${h}:${port}/${encodeURIComponent(db)}`;
  };

  const withClient = async <T>(db: string, fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const client = new pg.Client({ connectionString: connectionString(db) });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };

  if (changePassword && opts.superPassword !== undefined) {
    const newPassword = opts.superPassword;
    await withClient('postgres', async (c) => {
      await c.query(`ALTER ROLE ${c.escapeIdentifier(SUPERUSER)} PASSWORD ${c.escapeLiteral(newPassword)}`);
    });
    password = newPassword;
    fs.writeFileSync(passwordFile, password + '\n', { mode: 0o600 });
  }

  let stopping: Promise<void> | undefined;
  const server: LocalPostgres = {
    host,
    port,
    dir,
    dataDir,
    socketDir,
    superuser: SUPERUSER,
    password,
    logFile,
    binDir,
    version,
    connectionString,
    async createDatabase(name: string): Promise<void> {
      await withClient('postgres', async (c) => {
        const exists = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
        if (exists.rowCount === 0) await c.query(`CREATE DATABASE ${c.escapeIdentifier(name)}`);
      });
    },
    async serverLog(): Promise<string> {
      return fs.promises.readFile(logFile, 'utf8');
    },
    async serverLogContains(text: string): Promise<boolean> {
      return (await fs.promises.readFile(logFile, 'utf8')).includes(text);
    },
    stop(): Promise<void> {
      stopping ??= (async () => {
        if (stopped) return;
        const r = await run(pgCtl, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60', '-s'], runAs, dir, 90_000);
        stopped = true;
        running.delete(stopNow);
        if (ownSocketTmp) fs.rmSync(socketDir, { recursive: true, force: true });
        if (r.code !== 0) {
          // Not running any more (e.g. stopped from outside) is fine; anything else is not.
          const st = await run(pgCtl, ['status', '-D', dataDir], runAs, dir, 30_000);
          if (st.code === 0) {
            throw new PortcullisError('pg_stop_failed', `pg_ctl stop failed for ${dataDir}: ${r.stderr.trim()}`);
          }
        }
      })();
      return stopping;
    },
  };
  return server;
}

function readFrom(file: string, offset: number): string {
  try {
    const buf = fs.readFileSync(file);
    return buf.subarray(Math.min(offset, buf.length)).toString('utf8');
  } catch {
    return '';
  }
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}
