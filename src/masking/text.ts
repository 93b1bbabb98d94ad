// Text scanning shared by every masker: run a set of detector rules over a string, resolve
// overlapping matches, and build the masked string.

import { PortcullisError } from '../policy/types.js';
import { DETECTORS, scannerFor, type Scanner, type Detector } from './detectors.js';
import { Hasher, lengthPreserving, maskString, redactMarker } from './strategies.js';
import { isDetectorId, type DetectorId, type DetectorRule, type Finding, type ScanSink } from './types.js';

export interface Tail {
  start: number;
  strong: boolean;
  detector: DetectorId;
}

export class Collector implements ScanSink {
  readonly findings: Finding[] = [];
  readonly tails: Tail[] = [];
  constructor(
    readonly wantTails: boolean,
    readonly final: boolean,
  ) {}
  found(start: number, end: number, detector: DetectorId): void {
    if (end > start) this.findings.push({ start, end, detector });
  }
  tail(start: number, strong: boolean, detector: DetectorId): void {
    this.tails.push({ start, strong, detector });
  }
}

/**
 * Sorts findings and removes overlaps: a finding inside an earlier one is dropped; one that
 * overlaps partly is merged into it (the union is masked, with redact).
 */
export function resolveFindings(findings: Finding[]): Finding[] {
  if (findings.length <= 1) return findings;
  findings.sort((a, b) => a.start - b.start || b.end - a.end);
  const out: Finding[] = [];
  for (const f of findings) {
    const last = out[out.length - 1];
    if (last && f.start < last.end) {
      if (f.end > last.end) {
        out[out.length - 1] = { start: last.start, end: f.end, detector: last.detector, merged: true };
      }
      continue;
    }
    out.push(f);
  }
  return out;
}

/** A compiled set of detector rules with the HMAC key: finds and masks values in strings. */
export class RuleSet {
  readonly rules: readonly DetectorRule[];
  readonly detectors: readonly Detector[];
  private readonly byId = new Map<DetectorId, DetectorRule>();
  private readonly scanner: Scanner;

  constructor(
    rules: readonly DetectorRule[],
    readonly hasher: Hasher | undefined,
  ) {
    const uniq: DetectorRule[] = [];
    for (const r of rules) {
      if (!isDetectorId(r.detector)) {
        throw new PortcullisError('mask_unknown_detector', `unknown detector "${String(r.detector)}"`, { detector: r.detector });
      }
      if (this.byId.has(r.detector)) continue; // the first rule for a detector wins
      this.byId.set(r.detector, r);
      uniq.push(r);
    }
    this.rules = uniq;
    this.detectors = uniq.map((r) => DETECTORS[r.detector]);
    this.scanner = scannerFor(this.detectors);
  }

  rule(id: DetectorId): DetectorRule {
    const r = this.byId.get(id);
    if (!r) throw new PortcullisError('mask_internal', `no rule for detector ${id}`, { detector: id });
    return r;
  }

  /** Runs the detectors; a detector that throws propagates (callers fail closed). */
  collect(text: string, sink: Collector): Collector {
    this.scanner.scan(text, sink);
    return sink;
  }

  /** Complete, resolved findings in a whole text. */
  find(text: string): Finding[] {
    return resolveFindings(this.collect(text, new Collector(false, true)).findings);
  }

  /** The replacement for a finding's text (null strategy: empty string). */
  replacement(value: string, f: Finding): string {
    if (f.merged) return redactMarker(f.detector);
    const rule = this.rule(f.detector);
    const d = DETECTORS[f.detector];
    return maskString(value, rule, f.detector, d.style, this.hasher, d) ?? '';
  }

  /** Is the replacement of this detector's values as long as the value (last4, partial digits)? */
  preservesLength(id: DetectorId): boolean {
    return lengthPreserving(this.rule(id), DETECTORS[id].style);
  }

  /** Masks every finding in `text`. Throws if a detector or strategy throws. */
  maskUnsafe(text: string, findings: Finding[] = this.find(text)): string {
    if (findings.length === 0) return text;
    let out = '';
    let pos = 0;
    for (const f of findings) {
      out += text.slice(pos, f.start) + this.replacement(text.slice(f.start, f.end), f);
      pos = f.end;
    }
    return out + text.slice(pos);
  }
}

/**
 * Where findings of a JSON text fall outside string literals (a card written as a JSON number):
 * their replacements must be quoted to keep the document valid JSON.
 */
export function outsideJsonStrings(json: string, findings: readonly Finding[]): boolean[] {
  const res: boolean[] = [];
  let inString = false;
  let pos = 0;
  for (const f of findings) {
    for (; pos < f.start; pos++) {
      const c = json.charCodeAt(pos);
      if (inString) {
        if (c === 92) pos++;
        else if (c === 34) inString = false;
      } else if (c === 34) {
        inString = true;
      }
    }
    res.push(!inString);
  }
  return res;
}

/** Extends [start, end) of a latin1-decoded UTF-8 buffer so that no multi-byte character is split. */
export function alignUtf8(bytes: Buffer, start: number, end: number): [number, number] {
  while (start > 0 && (bytes[start]! & 0xc0) === 0x80) start--;
  while (end < bytes.length && (bytes[end]! & 0xc0) === 0x80) end++;
  return [start, end];
}
