// `portcullis mask test --policies DIR < FILE`: show policy authors what the detectors named by
// their policies (or every default-on detector, --all-detectors) do to a text.
import { readFileSync } from 'node:fs';
import { runMaskTest } from '../masking/cli.js';
import { loadPolicyDir } from '../policy/compile.js';
import type { MaskSpec } from '../policy/types.js';
import { EXIT, UsageError } from './util.js';

export async function maskTest(opts: { policies?: string; allDetectors: boolean }): Promise<number> {
  if (!opts.policies && !opts.allDetectors) throw new UsageError('--policies DIR (or --all-detectors) is required');
  const masks: MaskSpec[] = [];
  if (opts.policies) {
    const policy = loadPolicyDir(opts.policies);
    const seen = new Set<string>();
    for (const r of policy.rules) {
      for (const m of r.masks) {
        if (m.detector === undefined || seen.has(m.detector)) continue;
        seen.add(m.detector);
        masks.push(m);
      }
    }
  }
  if (masks.length === 0 && !opts.allDetectors) {
    process.stderr.write('the policies name no detector masks; nothing would be masked (use --all-detectors to try every detector)\n');
    return EXIT.FAILED;
  }
  const input = readFileSync(0, 'utf8');
  runMaskTest(input, masks, process.stdout, { defaultDetectors: opts.allDetectors });
  return EXIT.OK;
}
