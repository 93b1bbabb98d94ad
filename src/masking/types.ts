// Types shared by the masking engine's modules (detectors, strategies, row and stream maskers).
// The policy-facing types (MaskSpec, MaskStrategy) live in src/policy/types.ts.

import type { MaskStrategy } from '../policy/types.js';

export const DETECTOR_IDS = [
  'card',
  'iban',
  'ssn',
  'email',
  'phone',
  'ipv4',
  'ipv6',
  'jwt',
  'pem_private_key',
  'aws_access_key',
  'aws_secret_key',
  'github_token',
  'gitlab_token',
  'slack_token',
  'secret_assignment',
] as const;

export type DetectorId = (typeof DETECTOR_IDS)[number];

export function isDetectorId(s: string): s is DetectorId {
  return (DETECTOR_IDS as readonly string[]).includes(s);
}

/**
 * How a PostgreSQL type's values look, for deciding which detectors can possibly match a value of
 * that type and what a masked value of that type may be. See pgtypes.ts for the OID table.
 */
export type TypeCategory =
  | 'text' // text, varchar, bpchar, name, unknown (705), refcursor
  | 'char' // "char" (OID 18): one byte; masked forms need text
  | 'json'
  | 'jsonb'
  | 'xml'
  | 'int2'
  | 'int4'
  | 'int8'
  | 'oid' // oid, xid, cid, regproc…: unsigned 32-bit
  | 'numeric'
  | 'float4'
  | 'float8'
  | 'money'
  | 'bool'
  | 'datetime' // date, time, timetz, timestamp, timestamptz, interval
  | 'uuid'
  | 'bytea'
  | 'inet' // inet, cidr
  | 'array_text' // arrays whose elements are text-like or json
  | 'array_num' // arrays of int8/numeric/float (a card can hide in them)
  | 'array_other' // arrays of other fixed types (int4[], bool[], date[], uuid[]…)
  | 'other' // known types whose text forms cannot hold any detected value (macaddr, point, bit…)
  | 'unknown'; // an OID we do not know: user types, domains, enums, extensions (citext…)

/** How a detector's matches are shaped: drives `partial` defaults and continuation masking. */
export type DetectorStyle = 'digits' | 'email' | 'token' | 'block';

/** A strategy with its parameters, as a MaskSpec carries them. */
export interface StrategySpec {
  strategy: MaskStrategy;
  keepFirst?: number;
  keepLast?: number;
  value?: string;
  /** file:id of the rule that asked for it (reports only). */
  rule?: string;
}

/** A detector applied with a strategy. */
export interface DetectorRule extends StrategySpec {
  detector: DetectorId;
}

/** A match in a text: [start, end) in UTF-16 code units of the scanned string. */
export interface Finding {
  start: number;
  end: number;
  detector: DetectorId;
  /** Set when two detectors' matches overlapped and were merged (masked with redact). */
  merged?: boolean;
}

/**
 * Where detectors report. `found` receives complete matches. `tail` (only when `wantTails`) receives
 * the start of a trailing candidate that later data could still turn into (or extend) a match:
 * `strong` once the candidate carries the detector's distinctive part (a card's 6th digit, an
 * email's `@`, a token's full literal prefix, a secret's value), `weak` before that.
 */
export interface ScanSink {
  readonly wantTails: boolean;
  /** Treat the end of the text as the end of the data (no more input will follow). */
  readonly final: boolean;
  found(start: number, end: number, detector: DetectorId): void;
  tail(start: number, strong: boolean, detector: DetectorId): void;
}
