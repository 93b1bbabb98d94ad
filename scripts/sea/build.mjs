#!/usr/bin/env node
// Builds the Portcullis single executable: esbuild bundle of the TypeScript sources (CommonJS,
// node20) → Node SEA preparation blob with the assets → a copy of this Node binary with the
// blob injected by postject. Called by ./build.sh; offline, idempotent.
//
//   node scripts/sea/build.mjs [--entry src/cli/main.ts] [--work-dir dist/sea] [--output dist/portcullis]
//                              [--bundle-only [--dev-root]] [--no-strip]
//
// --bundle-only stops after the bundle + manifest (no blob, no binary): the cheap check used by
// test/binary.test.ts when no binary is built. --dev-root bakes the repository path into that
// bundle so it finds node_modules assets when run from elsewhere (never for the real binary).
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { isBuiltin } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const HERE = path.join(ROOT, 'scripts', 'sea');
const ASSETS_MODULE = path.join(ROOT, 'src', 'runtime', 'assets.ts');
// Must equal MANIFEST_KEY in src/runtime/assets.ts.
const MANIFEST_KEY = 'portcullis/assets-manifest.json';
const FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const BLOB_RESOURCE = 'NODE_SEA_BLOB';

const { values: opt } = parseArgs({
  options: {
    entry: { type: 'string', default: 'src/cli/main.ts' },
    'work-dir': { type: 'string', default: 'dist/sea' },
    output: { type: 'string', default: 'dist/portcullis' },
    'bundle-only': { type: 'boolean', default: false },
    'dev-root': { type: 'boolean', default: false },
    'no-strip': { type: 'boolean', default: false },
  },
  strict: true,
});

const log = (msg) => process.stdout.write(`  ${msg}\n`);
class BuildError extends Error {}
const fail = (msg) => {
  throw new BuildError(msg);
};
const rel = (p) => path.relative(process.cwd(), p) || '.';
const mib = (n) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

/** Asset key of an absolute path: POSIX path relative to the repository root. */
function toKey(abs) {
  const r = path.relative(ROOT, abs);
  if (r.startsWith('..') || path.isAbsolute(r)) fail(`asset ${abs} is outside the repository ${ROOT}`);
  return r.split(path.sep).join('/');
}

function walkFiles(dir, depth = 0) {
  if (depth > 32) fail(`${dir}: nested too deep`);
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walkFiles(p, depth + 1));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** Expand `file` or `dir/**` (relative to the repository) to asset keys. */
function expand(pattern) {
  const isTree = pattern.endsWith('/**');
  const abs = path.join(ROOT, isTree ? pattern.slice(0, -3) : pattern);
  if (!fs.existsSync(abs)) fail(`asset "${pattern}" (scripts/sea/assets.json) does not exist: is node_modules complete (npm ci)?`);
  if (isTree) return walkFiles(abs).map(toKey);
  if (!fs.statSync(abs).isFile()) fail(`asset "${pattern}" is a directory: write "${pattern}/**"`);
  return [toKey(abs)];
}

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The esbuild plugin that makes native, WASM and data-file dependencies load from the binary. */
function seaPlugin(state, cfg) {
  const assetsReq = `require(${JSON.stringify(ASSETS_MODULE)})`;
  const unavailable = cfg.unavailableModules ?? [];
  const dataPkgs = Object.keys(cfg.packageData ?? {});
  return {
    name: 'portcullis-sea',
    setup(b) {
      // Optional dependencies that are not installed: fail at run time as a missing module does.
      if (unavailable.length) {
        const re = new RegExp(`^(${unavailable.map(escapeRe).join('|')})$`);
        b.onResolve({ filter: re }, (a) => ({ path: a.path, namespace: 'portcullis-unavailable' }));
        b.onLoad({ filter: /.*/, namespace: 'portcullis-unavailable' }, (a) => ({
          contents: `var e = new Error(${JSON.stringify(`Cannot find module '${a.path}' (optional, not packaged)`)}); e.code = 'MODULE_NOT_FOUND'; throw e;`,
          loader: 'js',
        }));
      }

      // Native addons: `require('./x.node')` → extract the embedded file and process.dlopen it.
      b.onResolve({ filter: /\.node$/ }, (a) => {
        if (!a.path.startsWith('.') && !path.isAbsolute(a.path)) return undefined;
        return { path: path.resolve(a.resolveDir, a.path), namespace: 'portcullis-native' };
      });
      b.onLoad({ filter: /.*/, namespace: 'portcullis-native' }, (a) => {
        const key = toKey(a.path);
        if (!fs.existsSync(a.path)) {
          state.missingNatives.add(key);
          return {
            contents: `var e = new Error(${JSON.stringify(`native module ${key} was not built when this binary was, so it is not packaged`)}); e.code = 'MODULE_NOT_FOUND'; throw e;`,
            loader: 'js',
          };
        }
        state.natives.add(key);
        return { contents: `module.exports = ${assetsReq}.loadNative(${JSON.stringify(key)});`, loader: 'js', resolveDir: ROOT };
      });

      // libpg-query: the Emscripten factory is called at require time with no arguments and reads
      // __dirname + '/libpg-query.wasm'; hand it the module argument from assets.ts instead.
      b.onLoad({ filter: /[\\/]libpg-query[\\/]wasm[\\/]index\.c?js$/ }, async (a) => {
        const src = await fs.promises.readFile(a.path, 'utf8');
        const wasmAbs = path.join(path.dirname(a.path), 'libpg-query.wasm');
        if (!fs.existsSync(wasmAbs)) return { errors: [{ text: `libpg-query's ${toKey(wasmAbs)} is missing: run npm ci` }] };
        const key = toKey(wasmAbs);
        const re = a.path.endsWith('.cjs') ? /\(0,\s*\w+\.default\)\(\)/g : /\bPgQueryModule\(\)/g;
        const n = (src.match(re) ?? []).length;
        if (n !== 1) {
          return { errors: [{ text: `libpg-query: expected exactly one call of the Emscripten factory in ${toKey(a.path)}, found ${n}; adapt scripts/sea/build.mjs to this libpg-query version` }] };
        }
        state.wasm.add(key);
        return { contents: src.replace(re, (m) => `${m.slice(0, -1)}${assetsReq}.emscriptenModuleArg(${JSON.stringify(key)}))`), loader: 'js' };
      });

      // node-pty: loadNativeModule() requires `${dir}/${name}.node` with a computed path; make it
      // a static require of build/Release/<name>.node that the native-addon rule above handles.
      // (spawn-helper exists only for macOS; on Linux pty.node forks by itself.)
      b.onLoad({ filter: /[\\/]node-pty[\\/]lib[\\/]utils\.js$/ }, async (a) => {
        const src = await fs.promises.readFile(a.path, 'utf8');
        const needle = 'require(dir + "/" + name + ".node")';
        if (!src.includes(needle)) return { errors: [{ text: `node-pty: ${toKey(a.path)} no longer contains ${needle}; adapt scripts/sea/build.mjs to this node-pty version` }] };
        const ptyNode = path.join(path.dirname(a.path), '..', 'build', 'Release', 'pty.node');
        if (!fs.existsSync(ptyNode)) return { errors: [{ text: `node-pty's native module ${toKey(ptyNode)} is not built: run "npm rebuild node-pty" (needs a C++ toolchain)` }] };
        const shim =
          '\nfunction __portcullisPtyNative(name) {\n' +
          '  if (name === "pty") return require("../build/Release/pty.node");\n' +
          '  throw new Error("node-pty native module " + name + ".node is not packaged in this binary");\n}\n';
        return { contents: src.replace(needle, '__portcullisPtyNative(name)') + shim, loader: 'js', resolveDir: path.dirname(a.path) };
      });

      // unix-dgram (sd_notify): `require('bindings')('unix_dgram.node')` searches the file system
      // at run time; make it a static require of build/Release/unix_dgram.node, which the
      // native-addon rule above embeds and loads from the binary.
      b.onLoad({ filter: /[\\/]unix-dgram[\\/]lib[\\/]unix_dgram\.js$/ }, async (a) => {
        const src = await fs.promises.readFile(a.path, 'utf8');
        const needle = "require('bindings')('unix_dgram.node')";
        if (!src.includes(needle)) return { errors: [{ text: `unix-dgram: ${toKey(a.path)} no longer contains ${needle}; adapt scripts/sea/build.mjs to this unix-dgram version` }] };
        const addon = path.join(path.dirname(a.path), '..', 'build', 'Release', 'unix_dgram.node');
        if (!fs.existsSync(addon)) return { errors: [{ text: `unix-dgram's native module ${toKey(addon)} is not built: run "npm rebuild unix-dgram" (needs a C++ toolchain)` }] };
        return { contents: src.replace(needle, "require('../build/Release/unix_dgram.node')"), loader: 'js', resolveDir: path.dirname(a.path) };
      });

      // Packages that read data files relative to __dirname (blessed: ../usr/xterm, fonts):
      // embed their data directories and give their modules a __dirname inside the extracted copy.
      if (dataPkgs.length) {
        const re = new RegExp(`[\\\\/]node_modules[\\\\/](${dataPkgs.map(escapeRe).join('|')})[\\\\/].*\\.js$`);
        b.onLoad({ filter: re }, async (a) => {
          const src = await fs.promises.readFile(a.path, 'utf8');
          const nm = `${path.sep}node_modules${path.sep}`;
          const at = a.path.lastIndexOf(nm) + nm.length;
          const segs = a.path.slice(at).split(path.sep);
          const pkgName = segs[0].startsWith('@') ? `${segs[0]}/${segs[1]}` : segs[0];
          const pkgDir = path.join(a.path.slice(0, at), pkgName);
          for (const d of cfg.packageData[pkgName] ?? []) state.packageData.add(`${toKey(pkgDir)}/${d}/**`);
          let code = src;
          // blessed/lib/widget.js: require('./widgets/' + file) — esbuild turns it into a map of
          // ./widgets/*.js keyed with the extension, so the computed key needs it too.
          if (pkgName === 'blessed' && /[\\/]lib[\\/]widget\.js$/.test(a.path)) {
            const needle = "require('./widgets/' + file)";
            if (!code.includes(needle)) return { errors: [{ text: `blessed: ${toKey(a.path)} no longer contains ${needle}; adapt scripts/sea/build.mjs` }] };
            code = code.replace(needle, "require('./widgets/' + file + '.js')");
          }
          if (!/\b__dirname\b/.test(code)) return { contents: code, loader: 'js' };
          const decl = `var __dirname = ${assetsReq}.moduleDirname(${JSON.stringify(toKey(path.dirname(a.path)))}, ${JSON.stringify(toKey(pkgDir))});`;
          const strict = /^\s*(['"])use strict\1;?/.exec(code);
          const contents = strict ? `${strict[0]}\n${decl}\n${code.slice(strict[0].length)}` : `${decl}\n${code}`;
          return { contents, loader: 'js' };
        });
      }
    },
  };
}

/** Modules left to run time (external): inside the binary only Node built-ins can load. */
function externals(metafile) {
  const out = new Set();
  for (const o of Object.values(metafile.outputs)) for (const i of o.imports) if (i.external && !isBuiltin(i.path)) out.add(i.path);
  return [...out].sort();
}

async function bundle(workDir, cfg) {
  const state = { natives: new Set(), missingNatives: new Set(), wasm: new Set(), packageData: new Set() };
  const outfile = path.join(workDir, 'portcullis.cjs');
  const entry = path.resolve(ROOT, opt.entry);
  if (!fs.existsSync(entry)) fail(`entry ${opt.entry} does not exist`);
  const define = {
    'import.meta.url': '__portcullis_import_meta_url',
    'import.meta.filename': '__portcullis_import_meta_filename',
    'import.meta.dirname': '__portcullis_import_meta_dirname',
  };
  if (opt['dev-root']) define.__PORTCULLIS_DEV_ROOT__ = JSON.stringify(ROOT);
  const t0 = Date.now();
  let result;
  try {
    result = await build({
      absWorkingDir: ROOT,
      entryPoints: [entry],
      outfile,
      bundle: true,
      platform: 'node',
      // node_modules may be a symbolic link (git worktrees sharing one install): keep paths under
      // the repository, where asset keys are computed, instead of resolving them outside it.
      preserveSymlinks: true,
      format: 'cjs',
      target: 'node20',
      define,
      banner: { js: fs.readFileSync(path.join(HERE, 'prelude.cjs'), 'utf8') },
      plugins: [seaPlugin(state, cfg)],
      metafile: true,
      logLevel: 'warning',
      // Any other import.meta use would silently be {} in CommonJS: make it a build error.
      logOverride: { 'empty-import-meta': 'error' },
      // Not minified: readable stack traces and error excerpts; the code cache makes parsing cheap.
      legalComments: 'eof',
    });
  } catch (e) {
    fail(`esbuild failed for ${opt.entry} (see the errors above): ${e.message.split('\n')[0]}`);
  }
  const code = fs.readFileSync(outfile, 'utf8');
  log(`bundle   ${rel(outfile)}  ${mib(code.length)}  ${Object.keys(result.metafile.inputs).length} modules  ${Date.now() - t0} ms`);

  const inputs = Object.keys(result.metafile.inputs);
  if (inputs.some((i) => /node_modules[\\/]libpg-query[\\/]wasm[\\/]libpg-query\.js$/.test(i)) && state.wasm.size === 0) {
    fail('libpg-query is bundled but its WASM loader was not patched (imported through an unexpected file?)');
  }
  const ext = externals(result.metafile);
  if (ext.length) log(`note: not bundled, so absent from the binary (MODULE_NOT_FOUND there): ${ext.join(', ')}`);
  for (const k of state.missingNatives) log(`note: optional native module not built, not packaged: ${k}`);
  return { outfile, state };
}

function collectAssets(cfg, state) {
  const keys = new Set();
  for (const p of cfg.files ?? []) for (const k of expand(p)) keys.add(k);
  for (const p of state.packageData) for (const k of expand(p)) keys.add(k);
  for (const k of [...state.natives, ...state.wasm]) keys.add(k);
  const assets = {};
  for (const k of [...keys].sort()) {
    const abs = path.join(ROOT, ...k.split('/'));
    const data = fs.readFileSync(abs);
    const st = fs.statSync(abs);
    const exec = k.endsWith('.node') || (st.mode & 0o111) !== 0;
    assets[k] = { sha256: createHash('sha256').update(data).digest('hex'), size: data.length, mode: exec ? 0o755 : 0o644 };
  }
  const build = createHash('sha256');
  for (const [k, e] of Object.entries(assets)) build.update(`${k}\0${e.sha256}\0${e.mode}\n`);
  return { format: 1, build: build.digest('hex'), assets };
}

function run(cmd, args, what, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts });
  if (r.error) fail(`${what}: cannot run ${cmd}: ${r.error.message}`);
  return r;
}

function nodeSupportsSeaAssets() {
  const [maj, min] = process.versions.node.split('.').map(Number);
  return maj > 21 || (maj === 21 && min >= 7) || (maj === 20 && min >= 12);
}

async function main() {
  const cfg = JSON.parse(fs.readFileSync(path.join(HERE, 'assets.json'), 'utf8'));
  const workDir = path.resolve(ROOT, opt['work-dir']);
  fs.mkdirSync(workDir, { recursive: true });
  const { outfile, state } = await bundle(workDir, cfg);

  const manifest = collectAssets(cfg, state);
  const manifestPath = path.join(workDir, 'assets-manifest.json');
  fs.writeFileSync(manifestPath, JSON.stringify(manifest, null, 1) + '\n');
  const entries = Object.entries(manifest.assets);
  const assetBytes = entries.reduce((n, [, e]) => n + e.size, 0);
  log(`assets   ${entries.length} files, ${mib(assetBytes)} (${rel(manifestPath)})`);
  for (const k of [...state.natives, ...state.wasm]) log(`         ${k}`);
  if (opt['bundle-only']) return;

  // 1. preparation blob
  if (!nodeSupportsSeaAssets()) fail(`Node ${process.versions.node} cannot embed SEA assets; build with Node >= 20.12`);
  const seaAssets = { [MANIFEST_KEY]: manifestPath };
  for (const [k] of entries) seaAssets[k] = path.join(ROOT, ...k.split('/'));
  const blob = path.join(workDir, 'sea-prep.blob');
  const template = fs.readFileSync(path.join(HERE, 'sea-config.template.json'), 'utf8');
  const seaConfig = JSON.parse(template);
  Object.assign(seaConfig, { main: outfile, output: blob, assets: seaAssets });
  const seaConfigPath = path.join(workDir, 'sea-config.json');
  fs.writeFileSync(seaConfigPath, JSON.stringify(seaConfig, null, 1) + '\n');
  const t1 = Date.now();
  const prep = run(process.execPath, ['--experimental-sea-config', seaConfigPath], 'SEA blob', { cwd: workDir });
  if (prep.status !== 0) fail(`node --experimental-sea-config failed:\n${prep.stdout}${prep.stderr}`);
  log(`blob     ${rel(blob)}  ${mib(fs.statSync(blob).size)}  ${Date.now() - t1} ms`);

  // 2. a fresh copy of this Node executable
  const nodeBin = fs.realpathSync(process.execPath);
  const nodeBytes = fs.readFileSync(nodeBin);
  if (nodeBytes.indexOf(`${FUSE}:1`) >= 0) fail(`${nodeBin} is itself a single-executable application; build with a plain Node binary`);
  if (nodeBytes.indexOf(`${FUSE}:0`) < 0) fail(`${nodeBin} has no SEA fuse (${FUSE}): it is not an official Node build that supports single-executable applications`);
  const tmpOut = path.join(workDir, 'portcullis.tmp');
  fs.rmSync(tmpOut, { force: true });
  fs.copyFileSync(nodeBin, tmpOut);
  fs.chmodSync(tmpOut, 0o755);
  if (!opt['no-strip']) {
    const s = spawnSync('strip', ['--strip-all', tmpOut], { encoding: 'utf8' });
    if (s.error) log(`note: strip is not available (${s.error.code ?? s.error.message}): the Node binary keeps its symbols (~12 MiB)`);
    else if (s.status === 0) log(`strip    ${mib(nodeBytes.length)} → ${mib(fs.statSync(tmpOut).size)} (symbols of the Node binary; --no-strip keeps them)`);
    else log(`note: strip failed, keeping the symbols: ${(s.stderr || '').trim()}`);
  }

  // 3. inject the blob
  const postject = path.join(ROOT, 'node_modules', 'postject', 'dist', 'cli.js');
  if (!fs.existsSync(postject)) fail('postject is not installed (devDependency): run npm ci');
  const t2 = Date.now();
  const pj = run(process.execPath, [postject, tmpOut, BLOB_RESOURCE, blob, '--sentinel-fuse', FUSE], 'postject');
  // LIEF prints one harmless warning per ELF note it cannot name; keep everything else.
  const noise = /^warning: Can't find string offset for section name/;
  // eslint-disable-next-line no-control-regex -- strip ANSI colours from postject's output
  const lines = `${pj.stdout}\n${pj.stderr}`.split('\n').map((l) => l.replace(/\x1b\[[0-9;]*m/g, '').trim()).filter(Boolean);
  const kept = lines.filter((l) => !noise.test(l) && !/^(Start injection|💉 Injection done)/.test(l));
  if (pj.status !== 0) fail(`postject failed:\n${lines.join('\n')}`);
  for (const l of kept) log(`postject: ${l}`);
  log(`inject   postject ${Date.now() - t2} ms`);

  // 4. smoke test: alone, no Node environment
  const smokeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-build-'));
  try {
    const alone = path.join(smokeDir, 'portcullis');
    fs.copyFileSync(tmpOut, alone);
    fs.chmodSync(alone, 0o755);
    const v = run(alone, ['--version'], 'smoke test', { cwd: smokeDir, env: { PATH: '/usr/bin:/bin', PORTCULLIS_CACHE_DIR: path.join(smokeDir, 'cache') }, timeout: 60_000 });
    if (v.status !== 0 || !/portcullis/.test(v.stdout)) fail(`the built binary does not run (${rel(tmpOut)}): exit ${v.status}\n${`${v.stdout}${v.stderr}`.slice(-4000)}`);
    log(`smoke    ${v.stdout.trim()} (alone in an empty directory, env -i)`);
  } finally {
    fs.rmSync(smokeDir, { recursive: true, force: true });
  }
  const output = path.resolve(ROOT, opt.output);
  fs.mkdirSync(path.dirname(output), { recursive: true });
  fs.renameSync(tmpOut, output);
  log(`binary   ${rel(output)}  ${mib(fs.statSync(output).size)}`);
}

main().catch((e) => {
  process.stderr.write(`build: ${e instanceof BuildError ? e.message : e.stack}\n`);
  process.exitCode = 1;
});
