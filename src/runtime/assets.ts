// Packaged assets: files the program needs at run time besides its JavaScript (libpg-query's
// WASM, node-pty's native `pty.node`, the example policies, blessed's terminfo data, the
// asciinema-player bundle).
//
// Outside the single binary (tsx, `npm run build` output, a plain esbuild bundle) an asset key is
// a path relative to the package root (`examples/policies`, `node_modules/libpg-query/wasm/…`) and
// these functions return that real path. Inside the single binary (Node SEA, built by
// ./build.sh) the assets are embedded in the executable; a file that must exist on disk
// (a native module, a directory of policies) is extracted once into a private, content-addressed
// cache directory and checked against the SHA-256 recorded in the embedded manifest.
//
// Keys are POSIX paths relative to the package root, e.g. `examples/policies/postgres.yaml`.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PortcullisError } from '../policy/types.js';

/** Key of the manifest asset inside the binary (written by scripts/sea/build.mjs). */
export const MANIFEST_KEY = 'portcullis/assets-manifest.json';

export interface AssetEntry {
  /** hex SHA-256 of the content */
  sha256: string;
  size: number;
  /** permission bits of the source file (0o755 for executables and native modules) */
  mode: number;
}

export interface AssetManifest {
  format: 1;
  /** hash over all entries: identifies one build's asset set */
  build: string;
  assets: Record<string, AssetEntry>;
}

interface SeaApi {
  isSea(): boolean;
  getRawAsset(key: string): ArrayBuffer;
}

// Set by the bundler (scripts/sea/build.mjs --dev-root) for bundles that run outside the binary
// from a directory that is not inside the package; absent otherwise (typeof is then 'undefined').
declare const __PORTCULLIS_DEV_ROOT__: string | undefined;

let seaApi: SeaApi | null | undefined;

function sea(): SeaApi | null {
  if (seaApi !== undefined) return seaApi;
  seaApi = null;
  try {
    // node:sea exists from Node 20.12 / 21.7; older versions throw here and are never a SEA.
    const m = createRequire(import.meta.url)('node:sea') as Partial<SeaApi>;
    if (typeof m.isSea === 'function' && typeof m.getRawAsset === 'function' && m.isSea()) seaApi = m as SeaApi;
  } catch {
    seaApi = null;
  }
  return seaApi;
}

/** True when running inside the single executable built by ./build.sh. */
export function isSea(): boolean {
  return sea() !== null;
}

function checkKey(key: string): string {
  const k = key.replace(/\/+$/, '');
  if (k === '' || k.startsWith('/') || k.includes('\\') || k.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    throw new PortcullisError('ASSET_KEY_INVALID', `asset key "${key}" is not a relative POSIX path inside the package`, { key });
  }
  return k;
}

// ---------------------------------------------------------------- outside the binary

let rootMemo: string | undefined;

/**
 * The package root (the directory of portcullis' package.json) when running from a checkout or
 * an npm install. Inside the single binary there is none: use assetPath()/assetDir().
 */
export function packageRoot(): string {
  if (rootMemo) return rootMemo;
  if (isSea()) {
    throw new PortcullisError('ASSET_NO_PACKAGE_ROOT', 'the single binary has no package root on disk; find packaged files with assetPath()/assetDir() from src/runtime/assets.ts');
  }
  if (typeof __PORTCULLIS_DEV_ROOT__ === 'string') return (rootMemo = __PORTCULLIS_DEV_ROOT__);
  const start = dirname(fileURLToPath(import.meta.url));
  let dir = start;
  for (let i = 0; i < 16; i++) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, 'utf8')) as { name?: unknown }).name === 'portcullis') return (rootMemo = dir);
      } catch {
        // not JSON: keep walking up
      }
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new PortcullisError('ASSET_ROOT_NOT_FOUND', `cannot find portcullis' package.json above ${start}`, { start });
}

/** Real path of a key outside the binary; node_modules/… keys also look in the parents' node_modules (hoisted installs). */
function diskPath(key: string): string | undefined {
  const root = packageRoot();
  const direct = join(root, ...key.split('/'));
  if (existsSync(direct)) return direct;
  if (key.startsWith('node_modules/')) {
    let dir = dirname(root);
    for (let i = 0; i < 16; i++) {
      const p = join(dir, ...key.split('/'));
      if (existsSync(p)) return p;
      const up = dirname(dir);
      if (up === dir) break;
      dir = up;
    }
  }
  return undefined;
}

function walk(dir: string, prefix: string, out: string[], depth: number): void {
  if (depth > 32) throw new PortcullisError('ASSET_TREE_TOO_DEEP', `asset directory ${dir} is nested more than 32 levels`, { dir });
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) walk(p, `${prefix}/${name}`, out, depth + 1);
    else if (st.isFile()) out.push(`${prefix}/${name}`);
  }
}

// ---------------------------------------------------------------- inside the binary

let manifestMemo: AssetManifest | undefined;

function manifest(api: SeaApi): AssetManifest {
  if (manifestMemo) return manifestMemo;
  let m: AssetManifest;
  try {
    m = JSON.parse(Buffer.from(api.getRawAsset(MANIFEST_KEY)).toString('utf8')) as AssetManifest;
  } catch (e) {
    throw new PortcullisError('ASSET_MANIFEST', `the binary has no readable asset manifest (${MANIFEST_KEY}): ${(e as Error).message}; rebuild it with ./build.sh`);
  }
  if (m.format !== 1 || typeof m.assets !== 'object' || m.assets === null) {
    throw new PortcullisError('ASSET_MANIFEST', `the binary's asset manifest has an unknown format; rebuild it with ./build.sh`);
  }
  return (manifestMemo = m);
}

function entry(api: SeaApi, key: string): AssetEntry {
  const e = manifest(api).assets[key];
  if (!e) throw new PortcullisError('ASSET_NOT_FOUND', `asset "${key}" is not packaged in this binary (add it to scripts/sea/assets.json and rebuild)`, { key });
  return e;
}

function embedded(api: SeaApi, key: string): Buffer {
  // getRawAsset returns memory of the executable itself: view it, never write into it.
  return Buffer.from(api.getRawAsset(key));
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

let cacheMemo: string | undefined;

/**
 * The private directory assets are extracted to: $PORTCULLIS_CACHE_DIR, else systemd's
 * $CACHE_DIRECTORY (CacheDirectory=), else $XDG_CACHE_HOME/portcullis, else
 * <tmpdir>/portcullis-<uid>. It must be a real directory owned by this user and not writable by
 * group or others (it is created with mode 0700); anything else is refused.
 */
export function cacheRoot(): string {
  const env = process.env;
  const uid = typeof process.getuid === 'function' ? process.getuid() : -1;
  const sysd = env.CACHE_DIRECTORY?.split(':')[0];
  const dir = env.PORTCULLIS_CACHE_DIR || sysd || (env.XDG_CACHE_HOME ? join(env.XDG_CACHE_HOME, 'portcullis') : join(tmpdir(), `portcullis-${uid >= 0 ? uid : 'user'}`));
  if (dir === cacheMemo) return dir;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new PortcullisError('ASSET_CACHE_UNUSABLE', `cannot create the asset cache directory ${dir}: ${(e as Error).message} (set PORTCULLIS_CACHE_DIR to a private directory)`, { dir });
  }
  const st = lstatSync(dir);
  const why = !st.isDirectory()
    ? 'it is not a directory (or is a symbolic link)'
    : uid >= 0 && st.uid !== uid
      ? `it is owned by uid ${st.uid}, not ${uid}`
      : (st.mode & 0o022) !== 0
        ? `it is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`
        : '';
  if (why) throw new PortcullisError('ASSET_CACHE_UNSAFE', `refusing the asset cache directory ${dir}: ${why} (set PORTCULLIS_CACHE_DIR to a private directory)`, { dir });
  return (cacheMemo = dir);
}

const verified = new Set<string>();

function fileMatches(path: string, e: AssetEntry): boolean {
  try {
    const st = lstatSync(path);
    return st.isFile() && st.size === e.size && sha256(readFileSync(path)) === e.sha256;
  } catch {
    return false;
  }
}

function writeAtomic(path: string, data: Uint8Array, mode: number): void {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', mode);
  try {
    let off = 0;
    for (let i = 0; off < data.length && i < 1_000_000; i++) off += writeSync(fd, data, off, data.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    unlinkSync(tmp);
    throw e;
  }
}

/** Extract keys into one content-addressed tree (files at their key paths); returns the tree's root. */
function extractTree(api: SeaApi, keys: string[]): string {
  const list = [...new Set(keys)].sort();
  const h = createHash('sha256');
  for (const k of list) {
    const e = entry(api, k);
    h.update(`${k}\0${e.sha256}\0${e.mode}\n`);
  }
  const tree = join(cacheRoot(), h.digest('hex').slice(0, 32));
  if (verified.has(tree)) return tree;
  mkdirSync(tree, { recursive: true, mode: 0o700 });
  for (const k of list) {
    const e = entry(api, k);
    const target = join(tree, ...k.split('/'));
    if (fileMatches(target, e)) continue;
    const data = embedded(api, k);
    if (sha256(data) !== e.sha256) throw new PortcullisError('ASSET_CORRUPT', `embedded asset "${k}" does not match its manifest hash; the binary is damaged, rebuild it`, { key: k });
    mkdirSync(dirname(target), { recursive: true, mode: 0o700 });
    try {
      writeAtomic(target, data, e.mode & 0o100 ? 0o700 : 0o600);
    } catch (err) {
      throw new PortcullisError('ASSET_EXTRACT', `cannot extract asset "${k}" to ${target}: ${(err as Error).message}`, { key: k, target });
    }
    if (!fileMatches(target, e)) throw new PortcullisError('ASSET_EXTRACT', `extracted asset ${target} does not match its manifest hash`, { key: k, target });
  }
  verified.add(tree);
  return tree;
}

// ---------------------------------------------------------------- public API

/** The keys of the packaged files at or under `prefix` (a file key or a directory key), sorted. */
export function assetKeys(prefix: string): string[] {
  const p = checkKey(prefix);
  const api = sea();
  if (api) return Object.keys(manifest(api).assets).filter((k) => k === p || k.startsWith(p + '/')).sort();
  const path = diskPath(p);
  if (!path) return [];
  if (statSync(path).isFile()) return [p];
  const out: string[] = [];
  walk(path, p, out, 0);
  return out.sort();
}

/** The bytes of one packaged file (a copy: safe to modify). */
export function readAsset(key: string): Buffer {
  const k = checkKey(key);
  const api = sea();
  if (api) {
    entry(api, k);
    return Buffer.from(new Uint8Array(api.getRawAsset(k)));
  }
  const path = diskPath(k);
  if (!path) throw new PortcullisError('ASSET_NOT_FOUND', `asset "${k}" not found under ${packageRoot()}`, { key: k });
  return readFileSync(path);
}

/** A real file path for one packaged file (extracted to the cache inside the binary). */
export function assetPath(key: string): string {
  const k = checkKey(key);
  const api = sea();
  if (api) return join(extractTree(api, [k]), ...k.split('/'));
  const path = diskPath(k);
  if (!path) throw new PortcullisError('ASSET_NOT_FOUND', `asset "${k}" not found under ${packageRoot()}`, { key: k });
  return path;
}

/**
 * A real directory holding every packaged file under `prefix`, with the same layout (extracted
 * to the cache inside the binary). E.g. assetDir('examples/policies') for the demo policies.
 * Treat it as read-only: inside the binary it is shared by every run of the same build.
 */
export function assetDir(prefix: string): string {
  const p = checkKey(prefix);
  const api = sea();
  if (api) {
    const keys = assetKeys(p).filter((k) => k !== p);
    if (keys.length === 0) throw new PortcullisError('ASSET_NOT_FOUND', `no packaged directory "${p}" in this binary (add it to scripts/sea/assets.json and rebuild)`, { key: p });
    return join(extractTree(api, keys), ...p.split('/'));
  }
  const path = diskPath(p);
  if (!path || !statSync(path).isDirectory()) throw new PortcullisError('ASSET_NOT_FOUND', `asset directory "${p}" not found under ${packageRoot()}`, { key: p });
  return path;
}

const natives = new Map<string, unknown>();

/** Load a packaged native addon (`*.node`) by key, once per process; returns its exports. */
export function loadNative(key: string): unknown {
  const k = checkKey(key);
  if (natives.has(k)) return natives.get(k);
  const mod: { exports: unknown } = { exports: {} };
  const path = assetPath(k);
  try {
    process.dlopen(mod, path);
  } catch (e) {
    throw new PortcullisError('ASSET_NATIVE_LOAD', `cannot load native module ${path}: ${(e as Error).message}${isSea() ? ' (is the cache directory on a noexec mount? set PORTCULLIS_CACHE_DIR)' : ''}`, { key: k, path });
  }
  natives.set(k, mod.exports);
  return mod.exports;
}

/**
 * `__dirname` for a bundled module of a package that reads data files next to its code
 * (blessed reads `__dirname + '/../usr/xterm'`): inside the binary, the files under `dataPrefix`
 * are extracted and the module's own (empty) directory is created in the same tree, so relative
 * paths from it resolve. Used by the bundler's shim; outside the binary it is the real directory.
 */
export function moduleDirname(dirKey: string, dataPrefix: string): string {
  const d = checkKey(dirKey);
  const api = sea();
  if (!api) return diskPath(d) ?? join(packageRoot(), ...d.split('/'));
  const keys = assetKeys(dataPrefix);
  const tree = keys.length ? extractTree(api, keys) : join(cacheRoot(), 'empty');
  const dir = join(tree, ...d.split('/'));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** The subset of an Emscripten module object that locates or instantiates the .wasm file. */
export interface EmscriptenModuleArg {
  locateFile?: (path: string, scriptDirectory: string) => string;
  instantiateWasm?: (imports: object, receive: (instance: unknown) => void) => object;
}

interface WasmApi {
  instantiate(bytes: Uint8Array, imports: object): Promise<{ instance: unknown }>;
}

/**
 * Module argument for an Emscripten factory whose .wasm is the asset `wasmKey`: inside the binary
 * it instantiates the embedded bytes straight from memory (nothing written to disk); outside it
 * points locateFile at the real file. The bundler passes this to libpg-query's factory.
 */
export function emscriptenModuleArg(wasmKey: string): EmscriptenModuleArg {
  const k = checkKey(wasmKey);
  const api = sea();
  if (!api) {
    const dir = dirname(assetPath(k));
    return { locateFile: (p) => join(dir, p) };
  }
  entry(api, k);
  return {
    instantiateWasm(imports, receive) {
      const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
      wasm.instantiate(embedded(api, k), imports).then(
        (r) => receive(r.instance),
        (e: unknown) => {
          // Emscripten waits for receive() forever: fail loudly instead of hanging.
          process.nextTick(() => {
            throw new PortcullisError('ASSET_WASM', `cannot instantiate the embedded ${k}: ${(e as Error)?.message ?? String(e)}`, { key: k });
          });
        },
      );
      return {};
    },
  };
}
