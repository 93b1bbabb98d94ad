// `portcullis mask test --policies DIR < file`: prints the masked text, then which detector fired
// where (line:col), with the strategy and the rule that asked for it. The CLI entry point loads
// the masks from the policies and calls runMaskTest.

import { randomBytes } from 'node:crypto';
import type { MaskSpec } from '../policy/types.js';
import { Masker } from './masker.js';

export interface MaskTestFinding {
  detector: string;
  /** [start, end) in UTF-16 code units of the input. */
  start: number;
  end: number;
  /** 1-based line and column (in characters) of the start. */
  line: number;
  col: number;
  strategy: string;
  rule: string;
}

export interface MaskTestOptions {
  hmacKey?: string | Buffer;
  /** Also run the default-on detectors (default true, as logs and recordings do). */
  defaultDetectors?: boolean;
}

function lineStarts(s: string): number[] {
  const starts = [0];
  for (let i = s.indexOf('\n'); i !== -1; i = s.indexOf('\n', i + 1)) starts.push(i + 1);
  return starts;
}

function position(starts: number[], offset: number): { line: number; col: number } {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid]! <= offset) lo = mid;
    else hi = mid - 1;
  }
  return { line: lo + 1, col: offset - starts[lo]! + 1 };
}

export function runMaskTest(
  input: string,
  masks: MaskSpec[],
  out: NodeJS.WritableStream,
  opts: MaskTestOptions = {},
): { findings: MaskTestFinding[] } {
  const needsKey = masks.some((m) => m.strategy === 'hash');
  const ephemeral = needsKey && opts.hmacKey === undefined;
  const masker = new Masker({
    masks,
    ...(opts.hmacKey !== undefined ? { hmacKey: opts.hmacKey } : ephemeral ? { hmacKey: randomBytes(32) } : {}),
    ...(opts.defaultDetectors !== undefined ? { defaultDetectors: opts.defaultDetectors } : {}),
  });
  const found = masker.findings(input);
  const starts = lineStarts(input);
  const findings: MaskTestFinding[] = found.map((f) => ({
    detector: f.detector,
    start: f.start,
    end: f.end,
    ...position(starts, f.start),
    strategy: f.strategy,
    rule: f.rule,
  }));
  const masked = masker.maskText(input);
  out.write(masked);
  if (!masked.endsWith('\n')) out.write('\n');
  out.write(`--- ${findings.length} finding${findings.length === 1 ? '' : 's'}\n`);
  const rows = findings.map((f) => [`${f.line}:${f.col}`, f.detector, f.strategy, f.rule]);
  const widths = [0, 0, 0];
  for (const r of rows) for (let i = 0; i < 3; i++) widths[i] = Math.max(widths[i]!, r[i]!.length);
  for (const r of rows) out.write(`${r[0]!.padEnd(widths[0]!)}  ${r[1]!.padEnd(widths[1]!)}  ${r[2]!.padEnd(widths[2]!)}  ${r[3]}\n`);
  const columns = masks.filter((m) => m.column !== undefined);
  if (columns.length > 0) {
    out.write(`--- column masks (query results only, not applied to text)\n`);
    for (const m of columns) out.write(`${m.column}  ${m.strategy}  ${m.rule}\n`);
  }
  if (ephemeral) out.write('--- note: hash values use an ephemeral key here; the bastion uses its own key\n');
  return { findings };
}
