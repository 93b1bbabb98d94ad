// `recordings:` in portcullis.yaml: rotation and fsync of the asciicast writer (recordings/asciicast.ts).
//   recordings:
//     max_file_size: 256MiB      # a part rotates to <session>.<n>.cast before exceeding this
//     max_session_size: 4GiB     # all parts together; past it recording stops with a marker
//     fsync: interval            # interval (every 1 MiB written, and at each part's close) | close
import type { SourceProblem, YamlSource } from './source.js';

const size = { anyOf: [{ type: 'integer', minimum: 4096 }, { type: 'string', pattern: '^\\d+(B|KiB|MiB|GiB|TiB)$' }] };

export const recordingsConfigSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { max_file_size: size, max_session_size: size, fsync: { type: 'string', enum: ['close', 'interval'] } },
};

export interface RecordingsConfig {
  maxFileBytes: number;
  maxSessionBytes: number;
  fsync: 'close' | 'interval';
}

export type RawRecordingsConfig = { max_file_size?: number | string; max_session_size?: number | string; fsync?: 'close' | 'interval' };

export const DEFAULT_RECORDINGS: RecordingsConfig = { maxFileBytes: 256 * 1024 ** 2, maxSessionBytes: 4 * 1024 ** 3, fsync: 'interval' };

const UNIT: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };

function bytes(v: number | string): number {
  if (typeof v === 'number') return v;
  const m = /^(\d+)(B|KiB|MiB|GiB|TiB)$/.exec(v)!; // the schema checked the shape
  return Number(m[1]) * UNIT[m[2]!]!;
}

/** The recordings settings (schema already validated); problems name file:line:field. */
export function parseRecordingsConfig(src: YamlSource, raw: RawRecordingsConfig | undefined, problems: SourceProblem[]): RecordingsConfig {
  const out: RecordingsConfig = {
    maxFileBytes: raw?.max_file_size !== undefined ? bytes(raw.max_file_size) : DEFAULT_RECORDINGS.maxFileBytes,
    maxSessionBytes: raw?.max_session_size !== undefined ? bytes(raw.max_session_size) : DEFAULT_RECORDINGS.maxSessionBytes,
    fsync: raw?.fsync ?? DEFAULT_RECORDINGS.fsync,
  };
  for (const k of ['max_file_size', 'max_session_size'] as const) {
    const v = out[k === 'max_file_size' ? 'maxFileBytes' : 'maxSessionBytes'];
    if (raw?.[k] !== undefined && (v < 4096 || !Number.isSafeInteger(v))) problems.push(src.problem(['recordings', k], `must be at least 4KiB and at most ${Number.MAX_SAFE_INTEGER} bytes`));
  }
  if (out.maxFileBytes > out.maxSessionBytes) problems.push(src.problem(['recordings', raw?.max_file_size !== undefined ? 'max_file_size' : 'max_session_size'], `max_file_size (${out.maxFileBytes} bytes) exceeds max_session_size (${out.maxSessionBytes} bytes)`));
  return out;
}
