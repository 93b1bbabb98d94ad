// exec / attach / port-forward over WebSocket: the agent's WebSocket bridged to one the bastion
// opens to the API server (same subprotocol). exec and attach speak the channel protocol
// (v4.channel.k8s.io / v5.channel.k8s.io: one leading byte per message names the stream — 0 stdin,
// 1 stdout, 2 stderr, 3 error/Status, 4 resize, 255 close (v5)): stdout and stderr go through the
// stream masker before they reach the agent and the recording, stdin is passed on as typed and
// recorded masked, resizes are recorded. Each stream is its own core session (meta `parent`: the
// API session), recorded as asciicast v2 by Core.record. Port-forward data is relayed as it is
// (kubectl ≥ 1.30 tunnels SPDY frames inside the WebSocket) and only counted.
import type { WebSocket, RawData } from 'ws';
import type { Core } from '../../core/core.js';
import type { Logger } from '../../core/log.js';
import type { Masker } from '../../masking/masker.js';
import type { StreamMasker } from '../../masking/stream.js';
import type { Identity, KubeFacts } from '../../policy/types.js';

export const CHANNEL_PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'];

export interface BridgeContext {
  core: Core;
  log: Logger;
  /** The API session the request was decided in. */
  parent: string;
  identity: Identity;
  target: string;
  remote: string;
  facts: KubeFacts;
  masker: Masker;
  client: WebSocket;
  upstream: WebSocket;
}

export interface BridgeResult {
  session?: string;
  bytesIn: number;
  bytesOut: number;
  exitCode?: number;
  closeCode?: number;
}

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const ERROR = 3;
const RESIZE = 4;
const CLOSE = 255;

function toBuffer(d: RawData): Buffer {
  if (Buffer.isBuffer(d)) return d;
  if (Array.isArray(d)) return Buffer.concat(d);
  return Buffer.from(d);
}

/** A close code one may send (1005/1006/1015 are reserved for "none received"). */
function sendableCode(code: number): number {
  return code === 1000 || (code >= 1001 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999) ? code : 1000;
}

/**
 * Bridges two open WebSockets until either side closes. Both must be paused (`ws.pause()`) from
 * the moment they open: the bridge resumes them once its listeners are in place, so that no
 * early message (output, the first resize) is lost.
 */
export async function bridge(ctx: BridgeContext): Promise<BridgeResult> {
  const kind = ctx.facts.subresource;
  if (kind === 'exec' || kind === 'attach') return bridgeChannels(ctx);
  return bridgeOpaque(ctx);
}

function closeBoth(ctx: BridgeContext, code: number, reason: string): void {
  for (const ws of [ctx.client, ctx.upstream]) {
    if (ws.readyState === ws.OPEN) ws.close(sendableCode(code), reason.slice(0, 120));
    else if (ws.readyState === ws.CONNECTING) ws.terminate();
  }
}

async function bridgeChannels(ctx: BridgeContext): Promise<BridgeResult> {
  const { core, facts, masker, client, upstream } = ctx;
  const q = facts.query;
  const argv = q['command'] ?? [];
  const tty = ['true', '1'].includes(q['tty']?.[0] ?? '');
  const container = q['container']?.[0] ?? '';
  const v5 = upstream.protocol === 'v5.channel.k8s.io';
  const result: BridgeResult = { bytesIn: 0, bytesOut: 0 };
  let ending = false;
  const info = await core.openSession({
    protocol: 'kubernetes',
    target: ctx.target,
    identity: ctx.identity,
    remote: ctx.remote,
    meta: {
      kind: facts.subresource,
      parent: ctx.parent,
      namespace: facts.namespace,
      pod: facts.name,
      ...(container ? { container } : {}),
      ...(argv.length ? { command: masker.maskText(argv.join(' ')).slice(0, 1000) } : {}),
      tty: String(tty),
    },
    kill: (reason) => closeBoth(ctx, 1000, `portcullis: ${reason}`),
  });
  result.session = info.id;
  const title = facts.subresource === 'exec' ? `kubectl exec ${facts.namespace}/${facts.name} -- ${argv.join(' ')}` : `kubectl attach ${facts.namespace}/${facts.name}`;
  let rec: ReturnType<Core['record']>;
  try {
    rec = core.record(info.id, { width: 80, height: 24, title: masker.maskText(title).slice(0, 200) });
  } catch (e) {
    await core.closeSession(info.id, `recording failed: ${(e as Error).message}`).catch(() => undefined);
    throw e;
  }

  const send = (ch: number, data: Buffer) => {
    if (client.readyState !== client.OPEN) return;
    result.bytesOut += data.length;
    client.send(Buffer.concat([Buffer.from([ch]), data]));
  };
  const out: Record<number, StreamMasker> = {
    [STDOUT]: masker.streamMasker({ onOutput: (b) => (send(STDOUT, b), rec.output(b, 'stdout')) }),
    [STDERR]: masker.streamMasker({ onOutput: (b) => (send(STDERR, b), rec.output(b, 'stderr')) }),
  };
  const stdinRec = masker.streamMasker({ onOutput: (b) => rec.input(b) });
  const flushOut = () => {
    out[STDOUT]!.flush();
    out[STDERR]!.flush();
  };

  upstream.on('message', (d: RawData) => {
    const b = toBuffer(d);
    if (b.length === 0) return;
    const ch = b[0]!;
    const payload = b.subarray(1);
    try {
      if (ch === STDOUT || ch === STDERR) {
        out[ch]!.write(payload);
      } else if (ch === ERROR) {
        flushOut();
        send(ERROR, maskStatus(masker, payload, result));
      } else {
        send(ch, payload);
      }
    } catch (e) {
      ctx.log.error('kube exec: masking failed, closing the stream', { session: info.id, error: (e as Error).message });
      closeBoth(ctx, 1011, 'portcullis: output could not be masked');
    }
  });
  client.on('message', (d: RawData) => {
    const b = toBuffer(d);
    if (b.length === 0) return;
    result.bytesIn += b.length - 1;
    const ch = b[0]!;
    if (ch === STDIN) stdinRec.write(b.subarray(1));
    else if (ch === RESIZE) {
      try {
        const r = JSON.parse(b.subarray(1).toString('utf8')) as { Width?: number; Height?: number };
        if (Number.isInteger(r.Width) && Number.isInteger(r.Height) && r.Width! > 0 && r.Height! > 0 && r.Width! < 10000 && r.Height! < 10000) rec.resize(r.Width!, r.Height!);
      } catch {
        /* passed on as is: the kubelet ignores bad resize messages too */
      }
    } else if (v5 && ch === CLOSE && b[1] === STDIN) stdinRec.flush();
    if (upstream.readyState === upstream.OPEN) upstream.send(b);
  });

  return new Promise<BridgeResult>((resolve) => {
    const end = (code: number, reason: string, from: 'client' | 'upstream') => {
      if (ending) return;
      ending = true;
      result.closeCode = code;
      try {
        out[STDOUT]!.end();
        out[STDERR]!.end();
        stdinRec.end();
      } catch {
        /* the maskers emit what they hold; a failure here drops it (fail closed) */
      }
      if (from === 'upstream') {
        if (client.readyState === client.OPEN) client.close(sendableCode(code), reason);
      } else if (upstream.readyState === upstream.OPEN) upstream.close(sendableCode(code), reason);
      const closeReason = from === 'client' ? 'client closed the stream' : 'stream ended';
      void core.closeSession(info.id, closeReason, { bytesIn: result.bytesIn, bytesOut: result.bytesOut, ...(result.exitCode !== undefined ? { exitCode: result.exitCode } : {}) }).finally(() => resolve(result));
    };
    onEitherEnd(client, upstream, end, (e) => ctx.log.warn('kube exec: upstream stream error', { session: info.id, error: e.message }));
  });
}

/**
 * Wire the two WebSockets of a bridge: whichever closes or fails first ends it (`end` runs once
 * per close/error, the caller makes it idempotent); a failing side's partner is terminated.
 */
function onEitherEnd(client: WebSocket, upstream: WebSocket, end: (code: number, reason: string, from: 'client' | 'upstream') => void, upstreamError?: (e: Error) => void): void {
  upstream.once('close', (code, reason) => end(code, reason.toString('utf8'), 'upstream'));
  client.once('close', (code, reason) => end(code, reason.toString('utf8'), 'client'));
  upstream.on('error', (e) => {
    upstreamError?.(e);
    client.terminate();
    end(1011, 'upstream error', 'upstream');
  });
  client.on('error', () => {
    upstream.terminate();
    end(1011, 'client error', 'client');
  });
  client.resume();
  upstream.resume();
}

/** The error channel carries a Status; its message passes the detectors, its exit code is kept. */
function maskStatus(masker: Masker, payload: Buffer, result: BridgeResult): Buffer {
  let st: { message?: unknown; status?: unknown; details?: { causes?: { reason?: string; message?: string }[] } };
  try {
    st = JSON.parse(payload.toString('utf8')) as typeof st;
  } catch {
    return Buffer.from(masker.maskText(payload.toString('utf8')), 'utf8');
  }
  if (st.status === 'Success') result.exitCode = 0;
  const code = st.details?.causes?.find((c) => c.reason === 'ExitCode')?.message;
  if (code !== undefined && /^\d+$/.test(code)) result.exitCode = Number(code);
  if (typeof st.message === 'string') st.message = masker.maskText(st.message);
  return Buffer.from(JSON.stringify(st), 'utf8');
}

async function bridgeOpaque(ctx: BridgeContext): Promise<BridgeResult> {
  const { client, upstream } = ctx;
  const result: BridgeResult = { bytesIn: 0, bytesOut: 0 };
  upstream.on('message', (d: RawData, isBinary: boolean) => {
    const b = toBuffer(d);
    result.bytesOut += b.length;
    if (client.readyState === client.OPEN) client.send(b, { binary: isBinary });
  });
  client.on('message', (d: RawData, isBinary: boolean) => {
    const b = toBuffer(d);
    result.bytesIn += b.length;
    if (upstream.readyState === upstream.OPEN) upstream.send(b, { binary: isBinary });
  });
  return new Promise<BridgeResult>((resolve) => {
    let ended = false;
    const end = (code: number, reason: string, from: 'client' | 'upstream') => {
      if (ended) return;
      ended = true;
      result.closeCode = code;
      const other = from === 'client' ? upstream : client;
      if (other.readyState === other.OPEN) other.close(sendableCode(code), reason);
      resolve(result);
    };
    onEitherEnd(client, upstream, end);
  });
}
