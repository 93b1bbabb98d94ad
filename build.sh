#!/usr/bin/env bash
# ./build.sh — build dist/portcullis, one self-contained executable (no Node, no node_modules
# needed where it runs).
#
# How: esbuild bundles src/cli/main.ts (TypeScript, no typecheck) into one CommonJS file; Node's
# single-executable-application support turns it and the assets (libpg-query's .wasm, native
# .node addons, examples/, the asciinema-player bundle, …: scripts/sea/assets.json) into a blob;
# postject injects the blob into a copy of this machine's Node binary. The design card names
# `pkg`, which downloads Node builds and cannot work offline; Node SEA gives the same result
# offline. Details: scripts/sea/build.mjs. Packaged files are found at run time with
# src/runtime/assets.ts.
#
# Needs: Node >= 20.12 (the one that runs this becomes the runtime inside the binary), and the
# devDependencies (npm ci): esbuild, postject. No network. Idempotent: every run rebuilds
# dist/sea/ and replaces dist/portcullis atomically. Extra arguments go to build.mjs
# (e.g. --no-strip).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

die() {
  echo "build.sh: $*" >&2
  exit 1
}

command -v node >/dev/null 2>&1 || die "node is not on PATH: building needs Node >= 20.12 (running the binary needs none)"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 21 || (a === 21 && b >= 7) || (a === 20 && b >= 12) ? 0 : 1)' ||
  die "Node $(node --version) cannot embed assets in a single executable: use Node >= 20.12"
[ -f node_modules/esbuild/package.json ] && [ -f node_modules/postject/package.json ] ||
  die "devDependencies are missing (esbuild, postject): run npm ci first"
[ -f src/cli/main.ts ] || die "src/cli/main.ts not found: run this from a Portcullis checkout"

echo "build.sh: building dist/portcullis with Node $(node --version) ($(command -v node))"
node scripts/sea/build.mjs "$@"

bin=dist/portcullis
[ -x "$bin" ] || die "$bin was not produced"

# Size, and cold start of `portcullis --help` run alone from an empty directory with an empty
# environment (5 runs; hyperfine is not installed), next to bare `node -e 0` for scale.
ms_now() { date +%s%N; }
time_runs() { # label, command...
  local label=$1 t0 t1 i
  shift
  local -a runs=()
  for i in 1 2 3 4 5; do
    t0=$(ms_now)
    "$@" >/dev/null 2>&1 || die "$label failed (run $i): $*"
    t1=$(ms_now)
    runs+=("$(((t1 - t0) / 1000000))")
  done
  local sorted
  sorted=$(printf '%s\n' "${runs[@]}" | sort -n | tr '\n' ' ')
  read -r -a s <<<"$sorted"
  printf '  %-28s min %4d ms  median %4d ms  max %4d ms   (runs: %s)\n' "$label" "${s[0]}" "${s[2]}" "${s[4]}" "${runs[*]}"
  median=${s[2]}
}

work=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-build-time.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$bin" "$work/portcullis"
size=$(stat -c %s "$bin")
echo
echo "dist/portcullis: $((size / 1024 / 1024)) MiB ($size bytes)"
echo "cold start ($(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)):"
(
  cd "$work"
  time_runs "portcullis --help" env -i PATH=/usr/bin:/bin PORTCULLIS_CACHE_DIR="$work/cache" ./portcullis --help
  m_bin=$median
  time_runs "node -e 0 (baseline)" node -e 0
  m_node=$median
  [ "$m_node" -gt 0 ] && echo "  ratio binary/baseline: $(awk -v a="$m_bin" -v b="$m_node" 'BEGIN { printf "%.2f", a / b }')"
)

# Cold start of the bastion itself: `serve` (reference policy, SQL parser WASM, audit log, store,
# control socket, health listener) until it prints "portcullis ready", fresh data dir each run.
serve_runs=()
for i in 1 2 3; do
  d="$work/serve-$i"
  mkdir -p "$d/policies"
  cp examples/policies/*.yaml "$d/policies/"
  printf 'data_dir: %s\npolicies: %s\nlisten:\n  http: 127.0.0.1:0\n' "$d/data" "$d/policies" >"$d/portcullis.yaml"
  t0=$(ms_now)
  (cd "$work" && exec env -i PATH=/usr/bin:/bin PORTCULLIS_CACHE_DIR="$work/cache" ./portcullis serve --config "$d/portcullis.yaml" >"$d/out" 2>"$d/err") &
  pid=$!
  for _ in $(seq 1 1500); do
    grep -q '^portcullis ready' "$d/out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
  done
  t1=$(ms_now)
  grep -q '^portcullis ready' "$d/out" || { kill -KILL "$pid" 2>/dev/null; die "serve did not get ready (run $i): $(tail -5 "$d/err")"; }
  kill -TERM "$pid"
  wait "$pid" || die "serve did not exit 0 on SIGTERM (run $i): $(tail -5 "$d/err")"
  serve_runs+=("$(((t1 - t0) / 1000000))")
done
read -r -a ss <<<"$(printf '%s\n' "${serve_runs[@]}" | sort -n | tr '\n' ' ')"
printf '  %-28s min %4d ms  median %4d ms  max %4d ms   (runs: %s)\n' "serve → \"portcullis ready\"" "${ss[0]}" "${ss[1]}" "${ss[2]}" "${serve_runs[*]}"
echo "build.sh: done: $bin"
