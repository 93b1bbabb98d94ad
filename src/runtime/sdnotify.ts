// systemd's notification protocol (sd_notify(3)) for `Type=notify` services: `READY=1` once every
// listener accepts connections, `WATCHDOG=1` pings at half of `WATCHDOG_USEC`, `RELOADING=1` …
// `READY=1` around a SIGHUP reload, `STOPPING=1` on shutdown, `STATUS=` lines for
// `systemctl status`. Datagrams go to the AF_UNIX socket named by $NOTIFY_SOCKET through
// `unix-dgram` (Node has no unix datagram sockets; the addon travels inside the single binary).
//
// Without $NOTIFY_SOCKET (not run by systemd, or Type≠notify) every call does nothing. As
// sd_notify(unset_environment=1) does, the variables are removed from process.env once read, so
// that child processes (the demo's PostgreSQL, local shells) never talk to systemd as us.
import type { Logger } from '../core/log.js';

export interface Notifier {
  /** True when $NOTIFY_SOCKET was set and the socket could be used. */
  readonly enabled: boolean;
  /** The watchdog ping interval (half of WATCHDOG_USEC), or null without a watchdog. */
  readonly watchdogMs: number | null;
  /** Send raw assignments (`KEY=value` lines). Returns false when nothing was sent. */
  send(state: string): boolean;
  ready(status?: string): void;
  reloading(status?: string): void;
  stopping(status?: string): void;
  status(text: string): void;
  /** Start the WATCHDOG=1 timer (unref'd); no-op without WATCHDOG_USEC. */
  startWatchdog(): void;
  /** Stop the watchdog and close the socket. */
  close(): void;
}

const disabled: Notifier = {
  enabled: false,
  watchdogMs: null,
  send: () => false,
  ready: () => undefined,
  reloading: () => undefined,
  stopping: () => undefined,
  status: () => undefined,
  startWatchdog: () => undefined,
  close: () => undefined,
};

/** STATUS= text on one line (a newline would start a new assignment). */
const oneLine = (s: string) => s.replace(/[\r\n]+/g, ' ').slice(0, 512);

/** CLOCK_MONOTONIC in microseconds (libuv's hrtime is CLOCK_MONOTONIC on Linux). */
const monotonicUsec = () => process.hrtime.bigint() / 1000n;

/** The watchdog interval from the environment: half of WATCHDOG_USEC, if it is meant for this process. */
export function watchdogInterval(env: NodeJS.ProcessEnv, pid = process.pid): number | null {
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isFinite(usec) || usec <= 0) return null;
  if (env.WATCHDOG_PID !== undefined && env.WATCHDOG_PID !== '' && Number(env.WATCHDOG_PID) !== pid) return null;
  return Math.max(1, Math.floor(usec / 2000));
}

/**
 * The notifier for this process, from $NOTIFY_SOCKET / $WATCHDOG_USEC / $WATCHDOG_PID (removed
 * from `env` afterwards). Never throws: a socket that cannot be used is logged and disabled.
 */
export async function openNotifier(log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<Notifier> {
  const path = env.NOTIFY_SOCKET;
  const watchdogMs = watchdogInterval(env);
  delete env.NOTIFY_SOCKET;
  delete env.WATCHDOG_USEC;
  delete env.WATCHDOG_PID;
  if (!path) return disabled;
  if (path.startsWith('@')) {
    log.warn('NOTIFY_SOCKET names an abstract socket, which unix-dgram cannot address: systemd will not hear READY=1', { socket: path });
    return disabled;
  }
  if (!path.startsWith('/')) {
    log.warn('NOTIFY_SOCKET is not an absolute path: ignored', { socket: path });
    return disabled;
  }
  let sock: import('unix-dgram').UnixDgramSocket;
  try {
    const ud = await import('unix-dgram');
    sock = ud.createSocket('unix_dgram');
  } catch (e) {
    log.error('cannot open a unix datagram socket for sd_notify: systemd will not hear READY=1', { error: (e as Error).message });
    return disabled;
  }
  sock.on('error', (e) => log.warn('sd_notify socket error', { error: e.message }));
  let timer: NodeJS.Timeout | null = null;
  let closed = false;
  let warned = false;
  const send = (state: string): boolean => {
    if (closed) return false;
    const buf = Buffer.from(state, 'utf8');
    let ok = true;
    sock.send(buf, 0, buf.length, path, (err) => {
      if (!err) return;
      ok = false;
      if (!warned) log.warn('sd_notify: sending to NOTIFY_SOCKET failed', { socket: path, error: err.message, state: state.split('\n')[0] });
      warned = true;
    });
    return ok;
  };
  const n: Notifier = {
    enabled: true,
    watchdogMs,
    send,
    ready: (status) => void send(`READY=1${status ? `\nSTATUS=${oneLine(status)}` : ''}`),
    reloading: (status) => void send(`RELOADING=1\nMONOTONIC_USEC=${monotonicUsec()}${status ? `\nSTATUS=${oneLine(status)}` : ''}`),
    stopping: (status) => void send(`STOPPING=1${status ? `\nSTATUS=${oneLine(status)}` : ''}`),
    status: (text) => void send(`STATUS=${oneLine(text)}`),
    startWatchdog() {
      if (watchdogMs === null || timer || closed) return;
      send('WATCHDOG=1');
      timer = setInterval(() => send('WATCHDOG=1'), watchdogMs);
      timer.unref();
    },
    close() {
      if (closed) return;
      if (timer) clearInterval(timer);
      timer = null;
      closed = true;
      try {
        sock.close();
      } catch {
        // already closed
      }
    },
  };
  log.debug('sd_notify enabled', { socket: path, watchdogMs });
  return n;
}
