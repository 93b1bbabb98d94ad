// Policy decision latency with the reference policy, end to end (facts + rules): p50/p99 for SQL,
// shell and Kubernetes requests, cached (a repeated request) and uncached (every request new).
// Goals (issue #3): < 20 µs p99 for a repeated statement, < 100 µs uncached.
import { initFacts } from '../src/policy/actions.js';
import { loadPolicyDir } from '../src/policy/compile.js';
import { decide } from '../src/policy/engine.js';
import type { PolicyRequest } from '../src/policy/types.js';

const agent = { subject: 'demo-agent', groups: ['agents'] };
const N = 5000;
const WARM = 1000;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function run(name: string, gen: (i: number) => PolicyRequest): { name: string; p50: number; p99: number } {
  const policy = loadPolicyDir('examples/policies');
  for (let i = 0; i < WARM; i++) decide(policy, gen(-1 - i));
  const times: number[] = [];
  const deadline = Date.now() + 20_000;
  for (let i = 0; i < N && Date.now() < deadline; i++) {
    const req = gen(i);
    const t0 = process.hrtime.bigint();
    decide(policy, req);
    times.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return { name, p50: pct(times, 50), p99: pct(times, 99) };
}

await initFacts();
const pg = (sql: string): PolicyRequest => ({ protocol: 'postgres', identity: agent, target: 'shop', sql });
const sh = (command: string): PolicyRequest => ({ protocol: 'ssh', identity: agent, target: 'sandbox', command });
const kube = (path: string, method = 'GET'): PolicyRequest => ({ protocol: 'kubernetes', identity: agent, target: 'demo-cluster', http: { method, path } });

const rows = [
  run('sql  repeated statement', () => pg('SELECT id, name, email FROM customers WHERE id = 42')),
  run('sql  same shape, new literal', (i) => pg(`SELECT id, name, email FROM customers WHERE id = ${i + 1_000_000}`)),
  run('sql  uncached (new relation each)', (i) => pg(`SELECT id, name FROM customers_${i + 1_000_000} WHERE id = 1`)),
  run('sql  uncached join + write', (i) => pg(`UPDATE orders_${i + 1_000_000} SET status = 'x' WHERE id IN (SELECT id FROM customers WHERE email LIKE '%a%')`)),
  run('ssh  repeated command', () => sh('ls -la /srv && grep -r TODO src | wc -l')),
  run('ssh  uncached command', (i) => sh(`ls -la /srv/d${i + 1_000_000} && grep -r TODO src | wc -l`)),
  run('kube list pods', () => kube('/api/v1/namespaces/default/pods?limit=500')),
  run('kube uncached names', (i) => kube(`/api/v1/namespaces/default/pods/web-${i + 1_000_000}`, 'DELETE')),
];
console.log('decision latency (µs), reference policy, %d requests each after %d warm-up', N, WARM);
console.log('case'.padEnd(36), 'p50'.padStart(8), 'p99'.padStart(8));
for (const r of rows) console.log(r.name.padEnd(36), r.p50.toFixed(1).padStart(8), r.p99.toFixed(1).padStart(8));
