// `portcullis policy simulate --policies NEW [--since 7d] [--until ISO] [--data-dir DIR] [--accept] [--json]`:
// replay the audited requests of the period against candidate policies, print every change with
// counts; exit 1 when a request that was allowed would now be denied, unless --accept.
import { readAudit } from '../core/audit-read.js';
import { initFacts } from '../policy/actions.js';
import { loadPolicyDir } from '../policy/compile.js';
import { simulate } from '../policy/simulate.js';
import { parseTime } from './audit.js';
import { EXIT, UsageError, dataDirFrom } from './util.js';

export async function policySimulate(o: { policies?: string; since?: string; until?: string; dataDir?: string; accept?: boolean; json?: boolean }): Promise<number> {
  if (!o.policies) throw new UsageError('--policies DIR (the candidate policies) is required');
  const policy = loadPolicyDir(o.policies);
  await initFacts();
  const since = parseTime(o.since ?? '7d', 'since');
  const until = parseTime(o.until, 'until');
  const dir = dataDirFrom(o.dataDir);
  const report = await simulate(readAudit(dir, { type: 'request', since, until }), policy);
  if (o.json) process.stdout.write(JSON.stringify(report) + '\n');
  else {
    const out: string[] = [];
    out.push(`replayed ${report.replayed} audited request(s) since ${since?.toISOString() ?? 'the start'} against ${o.policies} (version ${report.policyVersion})`);
    out.push(`unchanged: ${report.unchanged}   changed: ${report.changes.length}   not replayable: ${report.notReplayable.length}`);
    for (const [k, n] of Object.entries(report.transitions).sort()) out.push(`  ${k}: ${n}`);
    if (report.changes.length) out.push('', 'changes:');
    for (const c of report.changes) {
      out.push(`  #${c.seq} ${c.time} ${c.identity} → ${c.target} (${c.protocol}): ${c.request.slice(0, 160)}`);
      out.push(`      ${c.old.effect} (${c.old.rule}) → ${c.new.effect} (${c.new.rule}): ${c.new.reason}`);
    }
    for (const n of report.notReplayable) out.push(`  not replayable #${n.seq}: ${n.why}`);
    if (report.newlyDenied > 0) {
      out.push('', `${report.newlyDenied} request(s) that were allowed would now be denied${o.accept ? ' (accepted with --accept)' : '; re-run with --accept to accept the change'}`);
    }
    process.stdout.write(out.join('\n') + '\n');
  }
  return report.newlyDenied > 0 && !o.accept ? EXIT.FAILED : EXIT.OK;
}
