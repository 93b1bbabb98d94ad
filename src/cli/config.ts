// `portcullis config check`: validate the bastion config and every policy file. Each problem is
// printed as file:line:col: field: message. Exit 1 when anything is wrong (CONTRACT.md).
import { existsSync } from 'node:fs';
import { defaultConfigPath, loadConfig } from '../config/config.js';
import { ConfigError, type SourceProblem, formatProblem } from '../config/source.js';
import { loadPolicyDir } from '../policy/compile.js';
import { EXIT, UsageError } from './util.js';

export async function configCheck(opts: { config?: string; policies?: string }): Promise<number> {
  const problems: SourceProblem[] = [];
  const file = opts.config ?? defaultConfigPath();
  let policies = opts.policies;
  let summary = '';
  if (opts.config !== undefined || existsSync(file) || policies === undefined) {
    try {
      const cfg = loadConfig(file, { checkSecrets: true, policies });
      policies = cfg.policies;
      summary = `config ${file}: ok (${cfg.targets.size} target${cfg.targets.size === 1 ? '' : 's'}, data dir ${cfg.dataDir})`;
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      problems.push(...e.problems);
    }
  }
  if (policies !== undefined) {
    try {
      const p = loadPolicyDir(policies);
      summary += `${summary ? '\n' : ''}policies ${policies}: ok (${p.rules.length} rules in ${p.files.length} files, version ${p.version})`;
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      problems.push(...e.problems);
    }
  } else if (!problems.length) throw new UsageError('nothing to check');
  if (problems.length) {
    for (const p of problems) process.stderr.write(formatProblem(p) + '\n');
    process.stderr.write(`${problems.length} problem${problems.length === 1 ? '' : 's'} found\n`);
    return EXIT.FAILED;
  }
  process.stdout.write(summary + '\n');
  return EXIT.OK;
}
