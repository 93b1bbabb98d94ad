// Kubernetes proxy overhead: the stand-in API server (test/harness/kubeapi.ts, in its own
// process: no real kube-apiserver exists on these machines) reached directly and through
// Portcullis (reference policy, audit on, impersonation, HTTP/2 upstream), in the same run:
//   1. `kubectl get pods` (real kubectl 1.32, warm discovery cache), 40 pods: wall time per call;
//   2. a raw list of 5,000 pods (masked path: every pod's env values pass the detectors) and of
//      5,000 services (pass-through), fetched by curl (its own process, HTTP/2 as kubectl, one
//      connection for all fetches of a round): lists/s and MB/s — directly, through Portcullis and
//      through a bare Node.js HTTP/2 relay (the reference row: Node's HTTP/2 and TLS with no
//      policy, audit or masking, i.e. the floor for any proxy built on them). Twice: with the three
//      processes sharing all cores, and with the bastion on a core of its own (stand-in and curl
//      pinned together on cpu 0, via taskset) as on a bastion host. On a 2-core machine the first
//      placement makes the proxy compete with the load generator and the API server for CPU,
//      which a deployment does not (both rows are printed; neither is the other's substitute).
//      Each list is fetched without compression and with gzip accepted, as kubectl does by default
//      (the stand-in then compresses as kube-apiserver does: bodies over 128 KiB, gzip level 1);
//   3. watch events: one pod modified at a time, seen on a direct watch and on a watch through
//      the bastion opened side by side; the added latency is the difference of arrival times.
// Goals (issue #9): ≥ 0.8× direct throughput; < 1 ms added watch latency.
// For the lists, the CPU time per fetch of the bastion (this process: otherwise it only spawns
// curl, whose cost the direct row shows) and of the stand-in (its process) is printed too: wall
// times are noisy on a shared machine, CPU per list less so. --cpu-prof writes a CPU profile of the bastion
// during the lists (kube-lists.cpuprofile in the current directory) and prints the functions
// with the most self time.
//
//   node dist/bench/kube.bench.js [--rounds R] [--kubectl N] [--lists N] [--events N] [--cpu-prof]
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import { Session } from 'node:inspector';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { createApiToken, verifyApiToken } from '../src/identity/tokens.js';
import { initFacts } from '../src/policy/actions.js';
import { startKubeProxy } from '../src/proxy/kube/index.js';
import { buildKubeconfig } from '../src/proxy/kube/kubeconfig.js';
import { openStore } from '../src/store/index.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? Number.parseInt(process.argv[i + 1] ?? '', 10) : NaN;
  return Number.isFinite(v) && v > 0 ? v : fallback;
}
const ROUNDS = Math.min(5, arg('--rounds', 3));
const KUBECTL_RUNS = Math.min(100, arg('--kubectl', 15));
const LISTS = Math.min(50, arg('--lists', 15));
const EVENTS = Math.min(2000, arg('--events', 300));
const CPU_PROF = process.argv.includes('--cpu-prof');
const KUBECTL = '/usr/bin/kubectl';
const here = dirname(fileURLToPath(import.meta.url));

const fmt = (n: number, d = 1) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]!;
};

function runKubectl(kubeconfig: string, home: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const c = spawn(KUBECTL, args, { env: { PATH: process.env.PATH ?? '', HOME: home, KUBECONFIG: kubeconfig }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`kubectl ${args.join(' ')}: ${err.trim()}`))));
  });
}

/**
 * curl fetches `url` n times over one HTTP/2 connection (asking for gzip when `compressed`, as
 * kubectl does); resolves with each transfer's ms and the size on the wire.
 */
function curlTimes(caFile: string, token: string, url: string, n: number, cpu: string | null, compressed: boolean): Promise<{ ms: number[]; bytes: number }> {
  return new Promise((resolve, reject) => {
    const args = [...(cpu === null ? [] : ['-c', cpu, 'curl']), '--http2', '-s', ...(compressed ? ['--compressed'] : []), '--cacert', caFile, '-H', `Authorization: Bearer ${token}`, '-H', 'Accept: application/json', '-w', '%{http_code} %{time_total} %{size_download}\n'];
    for (let i = 0; i < n; i++) args.push(url, '-o', '/dev/null');
    const c = spawn(cpu === null ? 'curl' : 'taskset', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('error', reject);
    c.on('close', () => {
      const rows = out.trim().split('\n').map((l) => l.split(' '));
      if (rows.length !== n || rows.some((r) => r[0] !== '200')) return reject(new Error(`curl ${url}: ${out.trim()} ${err.trim()}`));
      resolve({ ms: rows.map((r) => Number(r[1]) * 1000), bytes: Number(rows[0]![2]) });
    });
  });
}

let tasksetOk: boolean | null = null;
function hasTaskset(): boolean {
  if (tasksetOk === null) {
    try {
      execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' });
      tasksetOk = true;
    } catch {
      tasksetOk = false;
    }
  }
  return tasksetOk;
}

/** Sets the CPU affinity of every thread of `pid` (taskset's list syntax). */
function pin(pid: number, cpus: string): void {
  if (!hasTaskset()) return;
  execFileSync('taskset', ['-apc', cpus, String(pid)], { stdio: 'ignore' });
}

/**
 * The reference row: the least a TLS-terminating HTTP/2 proxy in Node.js does — one HTTP/2 session
 * to the stand-in, each stream relayed with its headers, the body written with the same per-turn
 * coalescing as the bastion — and nothing else (no identity, policy, audit or masking). What the
 * bastion costs beyond this row is its own; what this row costs is Node's HTTP/2 and TLS.
 */
async function startRelay(api: { url: string; ca: string }, tlsOpts: { cert: string; key: string }): Promise<{ url: string; close(): void }> {
  const up = http2.connect(api.url, { ca: api.ca, settings: { initialWindowSize: 8 << 20 } });
  up.on('connect', () => up.setLocalWindowSize(64 << 20));
  up.on('error', () => undefined);
  const server = http2.createSecureServer({ ...tlsOpts, settings: { initialWindowSize: 8 << 20 } });
  server.on('session', (s) => s.on('connect', () => s.setLocalWindowSize(64 << 20)));
  server.on('stream', (down, headers) => {
    const h: http2.OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(headers)) if (v !== undefined && (!k.startsWith(':') || k === ':path' || k === ':method')) h[k] = v;
    const u = up.request(h);
    u.on('error', () => down.destroy());
    down.on('error', () => u.destroy());
    u.on('response', (rh) => {
      const out: http2.OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(rh)) if (v !== undefined && (!k.startsWith(':') || k === ':status')) out[k] = v;
      down.respond(out);
      let parts: Buffer[] = [];
      let scheduled: NodeJS.Immediate | null = null;
      const flush = () => {
        scheduled = null;
        const p = parts;
        parts = [];
        down.cork();
        for (const b of p) down.write(b);
        down.uncork();
      };
      u.on('data', (b: Buffer) => {
        parts.push(b);
        scheduled ??= setImmediate(flush);
      });
      u.on('end', () => {
        if (scheduled) clearImmediate(scheduled);
        flush();
        down.end();
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `https://127.0.0.1:${port}`,
    close: () => {
      server.close();
      up.close();
    },
  };
}

/** A watch: calls onEvent(name, arrival ms) for every event line. */
function watch(ca: string, base: string, path: string, auth: string, onEvent: (name: string, t: number) => void): Promise<() => void> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${base}${path}`, { ca, headers: { authorization: auth, accept: 'application/json' } }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`watch: HTTP ${res.statusCode}`));
      let buf = '';
      res.on('data', (d: Buffer) => {
        const t = performance.now();
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) !== -1) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const m = /"name":"([^"]+)"/.exec(line);
          if (m) onEvent(m[1]!, t);
        }
      });
      resolve(() => req.destroy());
    });
    req.on('error', reject);
    req.end();
  });
}

/** This process's CPU time (user + system), µs. */
const cpuNow = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/** The functions with the most self time in a V8 CPU profile (idle and the profiler left out). */
function topSelf(profile: { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }, n: number): { name: string; ms: number; share: number }[] {
  const byId = new Map(profile.nodes.map((x) => [x.id, x]));
  const self = new Map<string, number>();
  let busy = 0;
  profile.samples.forEach((id, i) => {
    const f = byId.get(id)!.callFrame;
    if (f.functionName === '(idle)') return;
    const us = profile.timeDeltas[i] ?? 0;
    busy += us;
    const name = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}${f.url ? `:${f.lineNumber + 1}` : ''}`;
    self.set(name, (self.get(name) ?? 0) + us);
  });
  return [...self].sort((a, b) => b[1] - a[1]).slice(0, n).map(([name, us]) => ({ name, ms: us / 1000, share: us / busy }));
}

async function main(): Promise<void> {
  await initFacts();
  const tmp = mkdtempSync(join(tmpdir(), 'pc-kube-bench-'));
  const cleanups: (() => unknown)[] = [];
  try {
    const child: ChildProcess = fork(join(here, 'kube-standin.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    cleanups.push(() => child.kill('SIGKILL'));
    const ask = <T>(m: unknown, key: string) =>
      new Promise<T>((resolve) => {
        const on = (r: Record<string, unknown>) => {
          if (key in r) {
            child.off('message', on);
            resolve(r as T);
          }
        };
        child.on('message', on);
        child.send(m as object);
      });
    await new Promise<void>((r) => child.once('message', () => r()));
    const api = await ask<{ url: string; ca: string; token: string }>({ seed: { pods: 5000, services: 5000, kubectlPods: 40 } }, 'url');

    const dataDir = join(tmp, 'data');
    const policies = join(tmp, 'policies');
    cpSync(join(here, '..', '..', 'examples', 'policies'), policies, { recursive: true });
    // The bench reads a namespace the reference policy does not open to agents: allow it too.
    writeFileSync(join(policies, 'bench.yaml'), 'version: 1\nscope: { protocol: kubernetes, groups: [agents] }\nrules:\n  - id: bench-namespace\n    effect: allow\n    kube: { verbs: [get, list, watch], namespaces: [bulk] }\n');
    const store = await openStore(dataDir);
    const log = createLogger('error', () => undefined);
    const core = await Core.open({ dataDir, policiesDir: policies, audit: { sync: 'writes', intervalMs: 200, checkpointEvery: 1000 }, store, log });
    cleanups.push(async () => {
      await core.close();
      await store.close();
    });
    const token = (await createApiToken(store, { subject: 'demo-agent', groups: ['agents'] }, Date.now())).token;
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=bench', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(tmp, 'k.pem'), '-out', join(tmp, 'c.pem')], { stdio: 'ignore' });
    const cert = readFileSync(join(tmp, 'c.pem'), 'utf8');
    const proxy = await startKubeProxy(core, {
      port: 0,
      log,
      tls: { cert, key: readFileSync(join(tmp, 'k.pem'), 'utf8') },
      defaultTarget: 'demo-cluster',
      targets: (n) => (n === 'demo-cluster' ? { name: n, server: api.url, ca: api.ca, token: api.token, impersonate: true } : undefined),
      authenticate: async (t) => {
        const r = await verifyApiToken(store, t, Date.now());
        return { subject: r.subject, groups: r.groups, authMethod: 'api-token' };
      },
    });
    cleanups.unshift(() => proxy.close());

    const directCfg = join(tmp, 'direct.kubeconfig');
    writeFileSync(directCfg, buildKubeconfig({ server: api.url, ca: api.ca, identity: 'admin', target: 'standin', token: api.token }));
    const viaCfg = join(tmp, 'via.kubeconfig');
    writeFileSync(viaCfg, buildKubeconfig({ server: proxy.url, ca: cert, identity: 'demo-agent', target: 'demo-cluster', token }));
    const homes = { direct: join(tmp, 'home-direct'), via: join(tmp, 'home-via') };
    for (const h of Object.values(homes)) mkdirSync(h, { recursive: true });

    process.stdout.write(`kubernetes proxy bench: stand-in API server in its own process; ${ROUNDS} round(s), interleaved; ${process.env.HOSTNAME ?? ''}\n`);

    // 1. kubectl get pods
    const kArgs = ['get', 'pods', '-n', 'default'];
    await runKubectl(directCfg, homes.direct, kArgs);
    await runKubectl(viaCfg, homes.via, kArgs);
    const kt = { direct: [] as number[], via: [] as number[] };
    for (let r = 0; r < ROUNDS; r++) {
      for (let i = 0; i < KUBECTL_RUNS; i++) {
        kt.direct.push(await runKubectl(directCfg, homes.direct, kArgs));
        kt.via.push(await runKubectl(viaCfg, homes.via, kArgs));
      }
    }
    const kd = median(kt.direct);
    const kv = median(kt.via);
    process.stdout.write(`\nkubectl get pods (40 pods, Table), median of ${kt.direct.length} calls each\n`);
    process.stdout.write(`  direct       ${fmt(kd)} ms/call\n`);
    process.stdout.write(`  portcullis   ${fmt(kv)} ms/call   ${fmt(kd / kv, 2)}× direct throughput (+${fmt(kv - kd)} ms)\n`);

    // 2. raw lists of 5,000 objects
    writeFileSync(join(tmp, 'api-ca.pem'), api.ca);
    const relay = await startRelay(api, { cert, key: readFileSync(join(tmp, 'k.pem'), 'utf8') });
    cleanups.unshift(() => relay.close());
    const standinCpu = async () => (await ask<{ cpu: number }>({ cpu: true }, 'cpu')).cpu;
    let inspector: Session | null = null;
    const post = <T>(method: string, params: object = {}) =>
      new Promise<T>((resolve, reject) => inspector!.post(method, params, (e, r) => (e ? reject(e) : resolve(r as T))));
    if (CPU_PROF) {
      inspector = new Session();
      inspector.connect();
      await post('Profiler.enable');
      await post('Profiler.setSamplingInterval', { interval: 200 });
      await post('Profiler.start');
    }
    // Placements: "shared" lets the three processes (stand-in, curl, bastion) share every core;
    // "bastion core" puts the bastion on a core of its own and the stand-in and curl together on
    // another, as on a bastion host (which is not the API server's nor the agent's machine).
    const cores = availableParallelism();
    const placements: { name: string; pin: boolean }[] = [{ name: 'shared cores', pin: false }];
    if (cores >= 2 && hasTaskset()) placements.push({ name: `bastion on its own core (cpu ${cores - 1}; stand-in and curl on cpu 0)`, pin: true });
    for (const placement of placements) {
      pin(process.pid, placement.pin ? String(cores - 1) : `0-${cores - 1}`);
      pin(child.pid!, placement.pin ? '0' : `0-${cores - 1}`);
      const curlCpu = placement.pin ? '0' : null;
      process.stdout.write(`\nraw lists, ${placement.name}\n`);
      for (const [label, path] of [
        ['5,000 pods (masked: env fields rewritten, values through the detectors)', '/api/v1/namespaces/bulk/pods'],
        ['5,000 services (passed through)', '/api/v1/namespaces/bulk/services'],
      ] as const) {
        // Encodings: without Accept-Encoding (kubectl --disable-compression; the most bytes for the
        // proxy to carry) and with gzip accepted (kubectl's default: the API server compresses
        // bodies over 128 KiB; the bastion passes them through compressed, except for masked
        // resources, which it asks for uncompressed and sends masked, uncompressed).
        for (const [encLabel, compressed] of [
          ['no compression asked', false],
          ['gzip accepted (kubectl default)', true],
        ] as const) {
          const t = { direct: [] as number[], via: [] as number[], relay: [] as number[] };
          // CPU µs spent during the fetches: the stand-in's (direct, via) and this process's (via: the bastion; relay)
          const cpu = { standinDirect: 0, standinVia: 0, bastion: 0, relay: 0, idle: 0 };
          const wire = { direct: 0, via: 0, relay: 0 };
          for (let r = 0; r < ROUNDS; r++) {
            // one warm-up fetch per connection, not counted
            let s0 = await standinCpu();
            let b0 = cpuNow();
            const d = await curlTimes(join(tmp, 'api-ca.pem'), api.token, api.url + path, LISTS + 1, curlCpu, compressed);
            cpu.idle += cpuNow() - b0;
            cpu.standinDirect += (await standinCpu()) - s0;
            s0 = await standinCpu();
            b0 = cpuNow();
            const v = await curlTimes(join(tmp, 'c.pem'), token, proxy.url + path, LISTS + 1, curlCpu, compressed);
            cpu.bastion += cpuNow() - b0;
            cpu.standinVia += (await standinCpu()) - s0;
            b0 = cpuNow();
            const rl = await curlTimes(join(tmp, 'c.pem'), api.token, relay.url + path, LISTS + 1, curlCpu, compressed);
            cpu.relay += cpuNow() - b0;
            Object.assign(wire, { direct: d.bytes, via: v.bytes, relay: rl.bytes });
            t.direct.push(...d.ms.slice(1));
            t.via.push(...v.ms.slice(1));
            t.relay.push(...rl.ms.slice(1));
          }
          const per = (us: number) => fmt(us / (ROUNDS * (LISTS + 1)) / 1000, 2);
          const mb = (b: number) => `${fmt(b / 1e6, 2)} MB`;
          const d = median(t.direct);
          const v = median(t.via);
          const rl = median(t.relay);
          process.stdout.write(`  ${label}, ${encLabel}, median of ${t.direct.length}\n`);
          process.stdout.write(`    direct       ${fmt(d)} ms   ${fmt(1000 / d, 2)} lists/s   wire ${mb(wire.direct)}   CPU/list: stand-in ${per(cpu.standinDirect)} ms (this process, spawning curl: ${per(cpu.idle)} ms)\n`);
          process.stdout.write(`    portcullis   ${fmt(v)} ms   ${fmt(1000 / v, 2)} lists/s   wire ${mb(wire.via)}   ${fmt(d / v, 2)}× direct   CPU/list: stand-in ${per(cpu.standinVia)} ms, bastion (this process) ${per(cpu.bastion)} ms\n`);
          process.stdout.write(`    bare relay   ${fmt(rl)} ms   ${fmt(1000 / rl, 2)} lists/s   wire ${mb(wire.relay)}   ${fmt(d / rl, 2)}× direct   CPU/list: relay (this process) ${per(cpu.relay)} ms\n`);
        }
      }
    }
    pin(process.pid, `0-${cores - 1}`);
    pin(child.pid!, `0-${cores - 1}`);

    if (inspector) {
      const { profile } = await post<{ profile: { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] } }>('Profiler.stop');
      inspector.disconnect();
      writeFileSync('kube-lists.cpuprofile', JSON.stringify(profile));
      process.stdout.write(`\nbastion CPU profile of the lists (kube-lists.cpuprofile), most self time:\n`);
      for (const f of topSelf(profile, 25)) process.stdout.write(`  ${fmt(f.ms).padStart(8)} ms ${fmt(100 * f.share).padStart(5)}%  ${f.name}\n`);
    }

    // 3. watch event latency
    const arrivals = { direct: new Map<string, number>(), via: new Map<string, number>() };
    const stopD = await watch(api.ca, api.url, '/api/v1/namespaces/default/pods?watch=1&resourceVersion=1000000000', `Bearer ${api.token}`, (n, t) => arrivals.direct.set(n, t));
    const stopV = await watch(cert, proxy.url, '/api/v1/namespaces/default/pods?watch=1&resourceVersion=1000000000', `Bearer ${token}`, (n, t) => arrivals.via.set(n, t));
    cleanups.push(stopD, stopV);
    const added: number[] = [];
    for (let i = 0; i < EVENTS; i++) {
      const name = `web-${i % 40}`;
      arrivals.direct.delete(name);
      arrivals.via.delete(name);
      await ask({ update: name }, 'updated');
      const end = Date.now() + 2000;
      while ((!arrivals.direct.has(name) || !arrivals.via.has(name)) && Date.now() < end) await new Promise((r) => setImmediate(r));
      const d = arrivals.direct.get(name);
      const v = arrivals.via.get(name);
      if (d !== undefined && v !== undefined) added.push(v - d);
    }
    process.stdout.write(`\nwatch events (masked pods), ${added.length} of ${EVENTS} seen on both watches\n`);
    process.stdout.write(`  added latency  p50 ${fmt(pct(added, 0.5), 3)} ms   p90 ${fmt(pct(added, 0.9), 3)} ms   p99 ${fmt(pct(added, 0.99), 3)} ms\n`);
    child.send({ close: true });
  } finally {
    for (const c of cleanups) await Promise.resolve(c()).catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`kube bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
