// One structured logger: JSON lines on stderr (a compact human format when stderr is a terminal),
// levels (changeable at run time: SIGHUP applies `log.level`), and every string field masked by
// the same hook as the audit summaries. Never pass secrets in `fields`; as a second line of
// defence, fields whose name says secret (password, token, secret, authorization, private key,
// cookie) are replaced by "[redacted]" wherever they are nested.
export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
export const LEVELS: readonly Level[] = ['debug', 'info', 'warn', 'error'];

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** The logger `serve` makes: the same interface plus run-time level control. */
export interface RootLogger extends Logger {
  readonly level: Level;
  setLevel(level: Level): void;
}

export type LogFormat = 'json' | 'text';

/** Field names never logged with their value. */
const SECRET_KEY = /(pass(word|phrase)?|secret|token|authorization|cookie|private_?key|api_?key|credentials?)$/i;
export const REDACTED = '[redacted]';
const MAX_DEPTH = 6;

function clean(v: unknown, mask: (s: string) => string, depth: number): unknown {
  if (typeof v === 'string') return mask(v);
  if (v instanceof Error) return mask(v.message);
  if (typeof v === 'bigint') return v.toString();
  if (v === null || typeof v !== 'object') return v;
  if (depth >= MAX_DEPTH) return '[nested too deep]';
  if (Buffer.isBuffer(v)) return `<${v.length} bytes>`;
  if (Array.isArray(v)) return v.map((x) => clean(x, mask, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[k] = SECRET_KEY.test(k) && x !== null && x !== undefined && typeof x !== 'boolean' ? REDACTED : clean(x, mask, depth + 1);
  return out;
}

/**
 * The default format: PORTCULLIS_LOG_FORMAT (json|text) when set, else text on a terminal and
 * JSON lines otherwise (files, pipes, the systemd journal).
 */
export function defaultLogFormat(env: NodeJS.ProcessEnv = process.env, isTty: boolean = process.stderr.isTTY === true): LogFormat {
  const f = env.PORTCULLIS_LOG_FORMAT;
  if (f === 'json' || f === 'text') return f;
  return isTty ? 'text' : 'json';
}

function textLine(rec: Record<string, unknown>): string {
  const { time, level, msg, ...rest } = rec;
  const t = String(time).slice(11, 23);
  const kv = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/[\s"=]/.test(v) && v !== '' ? v : JSON.stringify(v)}`)
    .join(' ');
  return `${t} ${String(level).toUpperCase().padEnd(5)} ${String(msg)}${kv ? '  ' + kv : ''}`;
}

export function createLogger(
  level: Level = 'info',
  out: (line: string) => void = (l) => process.stderr.write(l + '\n'),
  mask: (s: string) => string = (s) => s,
  format: LogFormat = 'json',
): RootLogger {
  let min = ORDER[level];
  let current = level;
  const emit = (lvl: Level, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[lvl] < min) return;
    const rec: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, msg: mask(msg) };
    if (fields) {
      const c = clean(fields, mask, 0) as Record<string, unknown>;
      for (const [k, v] of Object.entries(c)) if (!(k in rec)) rec[k] = v;
    }
    out(format === 'text' ? textLine(rec) : JSON.stringify(rec));
  };
  return {
    get level() {
      return current;
    },
    setLevel(l: Level) {
      if (!(l in ORDER)) throw new Error(`unknown log level ${String(l)}`);
      current = l;
      min = ORDER[l];
    },
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  };
}
