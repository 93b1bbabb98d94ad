// asciicast v2 reader: parses and validates a recording (https://docs.asciinema.org/manual/asciicast/v2/)
// and iterates its events. Errors name the file and line. Streaming (`readCast`) for files of any
// size; `parseCast` for text already in memory (the control socket's replay, tests).
import { createReadStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { PortcullisError } from '../src/policy/types.js';

export interface CastHeaderV2 {
  version: 2;
  width: number;
  height: number;
  timestamp?: number;
  duration?: number;
  idle_time_limit?: number;
  command?: string;
  title?: string;
  env?: Record<string, string>;
  theme?: Record<string, unknown>;
}

export type CastCode = 'o' | 'i' | 'r' | 'm';

export interface CastEvent {
  /** Seconds since the start. */
  time: number;
  code: CastCode;
  data: string;
  /** 1-based line in the file. */
  line: number;
}

export class CastFormatError extends PortcullisError {
  constructor(
    readonly file: string,
    readonly line: number,
    message: string,
  ) {
    super('cast_invalid', `${file}:${line}: ${message}`, { path: file, line });
  }
}

const CODES = new Set(['o', 'i', 'r', 'm']);
const posInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= 10_000;

export function parseCastHeader(text: string, file = '<cast>'): CastHeaderV2 {
  let h: unknown;
  try {
    h = JSON.parse(text);
  } catch {
    throw new CastFormatError(file, 1, 'the header is not JSON (is this an asciicast v2 file?)');
  }
  if (typeof h !== 'object' || h === null || Array.isArray(h)) throw new CastFormatError(file, 1, 'the header must be a JSON object');
  const o = h as Record<string, unknown>;
  if (o.version !== 2) throw new CastFormatError(file, 1, `unsupported version ${JSON.stringify(o.version)} (only asciicast v2 is read)`);
  if (!posInt(o.width)) throw new CastFormatError(file, 1, 'header.width must be a positive integer');
  if (!posInt(o.height)) throw new CastFormatError(file, 1, 'header.height must be a positive integer');
  if (o.timestamp !== undefined && (typeof o.timestamp !== 'number' || !Number.isFinite(o.timestamp))) throw new CastFormatError(file, 1, 'header.timestamp must be a number');
  if (o.idle_time_limit !== undefined && (typeof o.idle_time_limit !== 'number' || !(o.idle_time_limit > 0))) throw new CastFormatError(file, 1, 'header.idle_time_limit must be a positive number');
  if (o.duration !== undefined && (typeof o.duration !== 'number' || !(o.duration >= 0))) throw new CastFormatError(file, 1, 'header.duration must be a non-negative number');
  for (const k of ['command', 'title'] as const) if (o[k] !== undefined && typeof o[k] !== 'string') throw new CastFormatError(file, 1, `header.${k} must be a string`);
  if (o.env !== undefined) {
    if (typeof o.env !== 'object' || o.env === null || Array.isArray(o.env)) throw new CastFormatError(file, 1, 'header.env must be an object');
    for (const [k, v] of Object.entries(o.env)) if (typeof v !== 'string') throw new CastFormatError(file, 1, `header.env.${k} must be a string`);
  }
  return o as unknown as CastHeaderV2;
}

/** One event line; `prevTime` enforces non-decreasing times. */
export function parseCastEvent(text: string, line: number, file = '<cast>', prevTime = 0): CastEvent {
  let e: unknown;
  try {
    e = JSON.parse(text);
  } catch {
    throw new CastFormatError(file, line, text.trim() === '' ? 'empty line' : 'the event is not JSON');
  }
  if (!Array.isArray(e) || e.length !== 3) throw new CastFormatError(file, line, 'an event must be a JSON array [time, code, data]');
  const [time, code, data] = e as unknown[];
  if (typeof time !== 'number' || !Number.isFinite(time) || time < 0) throw new CastFormatError(file, line, 'event time must be a non-negative number');
  if (time < prevTime) throw new CastFormatError(file, line, `event time ${time} is before the previous event's ${prevTime}`);
  if (typeof code !== 'string' || !CODES.has(code)) throw new CastFormatError(file, line, `unknown event code ${JSON.stringify(code)} (expected o, i, r or m)`);
  if (typeof data !== 'string') throw new CastFormatError(file, line, 'event data must be a string');
  if (code === 'r' && !/^[1-9]\d{0,4}x[1-9]\d{0,4}$/.test(data)) throw new CastFormatError(file, line, `a resize event's data must be COLSxROWS, got ${JSON.stringify(data)}`);
  return { time, code: code as CastCode, data, line };
}

export interface ParsedCast {
  header: CastHeaderV2;
  events: CastEvent[];
}

/** Parse a whole recording in memory. A final newline is allowed; no other empty line is. */
export function parseCast(text: string, file = '<cast>'): ParsedCast {
  const lines = text.split('\n');
  if (lines.length > 1 && lines[lines.length - 1] === '') lines.pop();
  if (lines.length === 0 || lines[0] === '') throw new CastFormatError(file, 1, 'empty recording (no header)');
  const header = parseCastHeader(lines[0]!, file);
  const events: CastEvent[] = [];
  let prev = 0;
  for (let i = 1; i < lines.length; i++) {
    const ev = parseCastEvent(lines[i]!, i + 1, file, prev);
    prev = ev.time;
    events.push(ev);
  }
  return { header, events };
}

/** Stream a recording from disk: first the header, then every event, validated as they come. */
export async function* readCast(file: string): AsyncGenerator<CastHeaderV2 | CastEvent> {
  const rl = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  let n = 0;
  let prev = 0;
  try {
    for await (const text of rl) {
      n++;
      if (n === 1) {
        yield parseCastHeader(text, file);
        continue;
      }
      const ev = parseCastEvent(text, n, file, prev);
      prev = ev.time;
      yield ev;
    }
  } finally {
    rl.close();
  }
  if (n === 0) throw new CastFormatError(file, 1, 'empty recording (no header)');
}

/** Read and validate a whole file: the header and its events. */
export async function loadCast(file: string): Promise<ParsedCast> {
  let header: CastHeaderV2 | null = null;
  const events: CastEvent[] = [];
  for await (const x of readCast(file)) {
    if ('version' in x) header = x;
    else events.push(x);
  }
  return { header: header!, events };
}

/** The concatenated terminal output (what `asciinema cat` prints). */
export function castOutput(events: Iterable<CastEvent>): string {
  let s = '';
  for (const e of events) if (e.code === 'o') s += e.data;
  return s;
}

/**
 * The parts of a rotated recording as one asciicast text: the first part whole, then each later
 * part without its header (event times already count from the session start). Each part is
 * checked to start with a valid header, naming the file.
 */
export function joinCastParts(texts: { file: string; text: string }[]): string {
  let out = '';
  texts.forEach(({ file, text }, i) => {
    const nl = text.indexOf('\n');
    if (i === 0) {
      out = text;
      return;
    }
    parseCastHeader(nl < 0 ? text : text.slice(0, nl), file);
    if (out !== '' && !out.endsWith('\n')) out += '\n';
    out += nl < 0 ? '' : text.slice(nl + 1);
  });
  return out;
}

/** Read the parts of a recording (in order) as one asciicast text. */
export function readCastParts(files: string[]): string {
  return joinCastParts(files.map((file) => ({ file, text: readFileSync(file, 'utf8') })));
}

/** Read and validate every part of a recording, in order, as one: the first header, all events. */
export async function loadCastParts(files: string[]): Promise<ParsedCast> {
  let header: CastHeaderV2 | null = null;
  const events: CastEvent[] = [];
  for (const file of files) {
    const one = await loadCast(file);
    header ??= one.header;
    const prev = events.length ? events[events.length - 1]!.time : 0;
    const first = one.events[0];
    if (first && first.time < prev) throw new CastFormatError(file, first.line, `event time ${first.time} is before the previous part's last ${prev}`);
    events.push(...one.events);
  }
  if (!header) throw new CastFormatError('<cast>', 1, 'no recording parts');
  return { header, events };
}
