// Prepended to the esbuild bundle by scripts/sea/build.mjs (esbuild `banner`). Plain ES5-ish
// CommonJS: it runs before anything else in dist/portcullis.
//
// 1. import.meta shim: the sources are ES modules; esbuild's CommonJS output leaves
//    `import.meta` empty, so `define` maps import.meta.url / .filename / .dirname to these.
//    Inside the single binary __filename is the executable itself (process.execPath): code must
//    not look for files next to it — use src/runtime/assets.ts.
// 2. Inside the binary, `require` can only load Node built-ins, and for anything else Node prints
//    a warning and throws an unusual error. The optional modules a dependency tries in
//    try/catch (pg-native, …) must instead fail as a missing module does, quietly, with
//    code MODULE_NOT_FOUND, so their pure-JS fallbacks run.
/* eslint-disable @typescript-eslint/no-require-imports, @typescript-eslint/no-unused-vars -- a CommonJS banner: its variables are used by the bundle that follows */
var __portcullis_import_meta_url = require('node:url').pathToFileURL(__filename).href;
var __portcullis_import_meta_filename = __filename;
var __portcullis_import_meta_dirname = __dirname;
require = (function (r) {
  var inSea;
  try {
    inSea = r('node:sea').isSea();
  } catch {
    inSea = false; // Node without node:sea: never a single executable
  }
  if (!inSea) return r;
  var isBuiltin = r('node:module').isBuiltin;
  var wrapped = function (id) {
    if (isBuiltin(id)) return r(id);
    var err = new Error("Cannot find module '" + id + "' (it is not packaged in the portcullis binary)");
    err.code = 'MODULE_NOT_FOUND';
    throw err;
  };
  wrapped.resolve = function (id) {
    if (isBuiltin(id)) return id;
    var err = new Error("Cannot resolve module '" + id + "' (it is not packaged in the portcullis binary)");
    err.code = 'MODULE_NOT_FOUND';
    throw err;
  };
  wrapped.main = r.main;
  wrapped.cache = r.cache;
  return wrapped;
})(require);
