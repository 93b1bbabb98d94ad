// `npm run bench`: runs every bench/*.bench.ts (compiled) one after another, each in its own
// process so that one benchmark's heap and JIT state do not colour the next.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const benches = readdirSync(here)
  .filter((f) => f.endsWith('.bench.js'))
  .filter((f) => only.length === 0 || only.some((o) => f.startsWith(o)))
  .sort();
let failed = 0;
for (const b of benches) {
  process.stdout.write(`\n=== ${b.replace(/\.bench\.js$/, '')} ===\n`);
  const r = spawnSync(process.execPath, ['--expose-gc', join(here, b)], { stdio: 'inherit', timeout: 10 * 60_000 });
  if (r.status !== 0) {
    failed++;
    process.stdout.write(`(${b} exited ${r.status ?? r.signal})\n`);
  }
}
process.exitCode = failed ? 1 : 0;
