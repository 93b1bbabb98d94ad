// Responses on their way back to the agent. Resources the policy masks (Secret data, …) and the
// resources whose values the detectors inspect (ConfigMaps, pod env) are asked for as JSON (the
// Accept header is rewritten, compression is turned off) and masked per object as they stream:
// lists and Tables element by element (jsonsplit.ts), watch streams event by event, single objects
// whole. Anything else that would have to be masked — protobuf, YAML, an unknown encoding, a body
// that does not parse — is refused (fail closed): a Status before the headers are out, a cut
// connection after. Logs (pods/log) go through the stream masker. Everything else streams through
// untouched, with backpressure, so watches and `logs -f` are never buffered — gzip included: the
// API server compresses bodies over 128 KiB for clients that accept gzip (kubectl does), and such
// a body reaches the agent as it came.
// A masked JSON response is asked for uncompressed; when the agent accepts gzip it is compressed
// again on the way out as the API server would have (over 128 KiB, gzip level 1), so masking does
// not multiply what crosses the agent's network tenfold.
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';
import type { Readable } from 'node:stream';
import { createGunzip, createGzip, type Gzip } from 'node:zlib';
import type { Masker } from '../../masking/masker.js';
import { StringDecoder } from 'node:string_decoder';
import { DETECTOR_RESOURCES, kubeResourceMasked, maskKube } from '../../masking/kube.js';
import { KubeFieldRewriter } from '../../masking/kubestream.js';
import type { KubeFacts } from '../../policy/types.js';
import { JsonListSplitter } from './jsonsplit.js';
import type { UpstreamResponse } from './upstream.js';

export type MaskMode = 'none' | 'json' | 'watch' | 'text';

export interface MaskPlan {
  mode: MaskMode;
  /** The resource (plural) the masks are looked up by. */
  resource: string;
  masker: Masker;
}

/** What this request's response needs. */
export function planResponse(facts: KubeFacts | null, masker: Masker): MaskPlan {
  if (!facts || !facts.isResourceRequest) return { mode: 'none', resource: '', masker };
  const r = facts.resource;
  if (facts.subresource === 'log') return { mode: 'text', resource: r, masker };
  if (facts.subresource && facts.subresource !== 'status' && facts.subresource !== 'ephemeralcontainers') return { mode: 'none', resource: r, masker };
  if (!kubeResourceMasked(masker, r)) return { mode: 'none', resource: r, masker };
  return { mode: facts.verb === 'watch' ? 'watch' : 'json', resource: r, masker };
}

/** JSON only: the client's JSON media types (Table, metadata-only, …) in its order, or plain JSON. */
export function jsonAccept(accept: string | string[] | undefined): string {
  const list = (Array.isArray(accept) ? accept.join(',') : (accept ?? '')).split(',').map((s) => s.trim()).filter(Boolean);
  const json = list.filter((m) => /^application\/json(\s*;|$)/i.test(m));
  if (!json.some((m) => /^application\/json\s*$/i.test(m))) json.push('application/json');
  return json.join(',');
}

/** Header overrides for the upstream request of a masked response. */
export function upstreamOverrides(plan: MaskPlan, client: IncomingHttpHeaders): Record<string, string | undefined> {
  if (plan.mode === 'none') return {};
  if (plan.mode === 'text') return { 'accept-encoding': undefined };
  return { accept: jsonAccept(client['accept']), 'accept-encoding': undefined };
}

/** kube-apiserver's defaultGzipThresholdBytes: smaller bodies are never compressed. */
export const GZIP_THRESHOLD = 128 * 1024;

/** Whether an Accept-Encoding header admits gzip (q=0 refuses it). */
export function acceptsGzip(h: string | string[] | undefined): boolean {
  const list = (Array.isArray(h) ? h.join(',') : (h ?? '')).split(',');
  return list.some((e) => {
    const [name, ...params] = e.trim().toLowerCase().split(';');
    if (name !== 'gzip' && name !== '*') return false;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    return q === undefined || Number(q.slice(2)) > 0;
  });
}

/** Whether the masked body of this response is compressed for the agent (when it grows past the threshold). */
export function recompress(plan: MaskPlan, clientHeaders: IncomingHttpHeaders): boolean {
  return plan.mode === 'json' && acceptsGzip(clientHeaders['accept-encoding']);
}

/** Response headers never copied to the agent (hop-by-hop; HTTP/2 forbids them). */
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'http2-settings']);

export function responseHeaders(h: IncomingHttpHeaders, rewritten: boolean): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || k.startsWith(':') || DROP_RESPONSE.has(k)) continue;
    if (rewritten && (k === 'content-length' || k === 'content-encoding')) continue;
    out[k] = v;
  }
  return out;
}

/** Why a response that must be masked cannot be (null: it can). Checked before any byte is sent. */
export function unmaskable(plan: MaskPlan, up: UpstreamResponse): string | null {
  if (plan.mode !== 'json' && plan.mode !== 'watch') return null;
  const enc = String(up.headers['content-encoding'] ?? 'identity').toLowerCase();
  if (enc !== 'identity' && enc !== 'gzip') return `it came ${enc}-encoded`;
  const ct = String(up.headers['content-type'] ?? '');
  const length = up.headers['content-length'];
  if (ct === '' && (length === '0' || up.status === 204 || up.status === 304)) return null;
  if (!/^application\/json(\s*;|$)/i.test(ct)) return `the API server answered ${ct || 'without a content type'}, not JSON`;
  return null;
}

type Res = ServerResponse | Http2ServerResponse;

/** Most bytes held for one coalesced write to the agent. */
const MAX_COALESCED = 1 << 20;
/** Least bytes per write to the compressor (and its output chunk size). */
const GZIP_BATCH = 64 * 1024;

export interface PipeResult {
  /** Body bytes sent (before compression). */
  bytes: number;
  /** Set when the bastion compressed the (masked) body for the agent. */
  encoding?: 'gzip';
  /** Set when the stream was cut because masking failed (fail closed). */
  error?: string;
}

/**
 * Writes the status line and headers. With `gzip`, the body is compressed and the headers must
 * say so (Content-Encoding: gzip, Vary: Accept-Encoding).
 */
export type WriteHead = (gzip: boolean) => void;

/**
 * Streams the (masked) body to the agent. Without `deferred`, the status line and headers are
 * already written. With it, the body is held until it passes GZIP_THRESHOLD or ends: a small body
 * goes out as it is, a larger one gzip-compressed; `deferred` writes the headers once that is known.
 */
export function pipeBody(up: UpstreamResponse, res: Res, plan: MaskPlan, deferred?: WriteHead): Promise<PipeResult> {
  let src: Readable = up.body;
  if ((plan.mode === 'json' || plan.mode === 'watch') && String(up.headers['content-encoding'] ?? '').toLowerCase() === 'gzip') {
    const gunzip = createGunzip();
    up.body.pipe(gunzip);
    src = gunzip;
  }
  return new Promise<PipeResult>((resolve) => {
    let bytes = 0;
    let done = false;
    // Output coalescing. Upstream HTTP/2 DATA frames reach us as chunks of a few KiB (a 16 KiB
    // frame is split across TLS records), ~250 for a 2 MB list; written one by one, each costs a
    // stream write, an HTTP/2 frame flush, a TLS record and a syscall on the agent's side — that
    // per-chunk cost, not the bytes, was most of the bastion's CPU per list. What arrives in one
    // event-loop turn is written as one writev, from setImmediate: that runs right after the I/O
    // phase that delivered the chunks, so a watch event or a log line is not held back.
    let out: (string | Buffer)[] = [];
    let outBytes = 0;
    let scheduled: NodeJS.Immediate | null = null;
    // Deferred headers: undecided until the body passes the threshold or ends; then `gz` is the
    // compressor the body goes through, or null.
    let decided = deferred === undefined;
    let gz: Gzip | null = null;
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      if (scheduled) clearImmediate(scheduled);
      scheduled = null;
      out = [];
      if (error) {
        up.body.destroy();
        gz?.destroy();
        res.destroy();
      }
      resolve(error ? { bytes, error } : { bytes, ...(gz ? { encoding: 'gzip' as const } : {}) });
    };
    let draining = false;
    /** Decides the encoding of a deferred response (by the bytes held so far) and writes its headers. */
    const decide = (): void => {
      decided = true;
      const compress = bytes > GZIP_THRESHOLD;
      deferred!(compress);
      if (compress) {
        gz = createGzip({ level: 1, chunkSize: GZIP_BATCH });
        gz.on('error', (e) => finish(`compressing the response failed: ${e.message}`));
        gz.pipe(res as ServerResponse);
      }
    };
    const flush = (ending = false): void => {
      if (scheduled) clearImmediate(scheduled);
      scheduled = null;
      if (done) return;
      if (!decided) {
        if (!ending && bytes <= GZIP_THRESHOLD) return; // still holding (`out` keeps growing)
        decide();
      }
      if (out.length === 0) return;
      // The compressor gets 64 KiB or more per write: each write is a thread-pool job, and many
      // small ones cost the bastion about twice the CPU of few large ones.
      if (gz && !ending && outBytes < GZIP_BATCH) return;
      const parts = out;
      out = [];
      outBytes = 0;
      let ok = true;
      if (gz) {
        // Encoded part by part and concatenated: joining the rewriter's many small (rope) strings first costs ~8× more.
        ok = gz.write(Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p))));
      } else if (parts.length === 1) ok = (res as ServerResponse).write(parts[0]!);
      else {
        // Corked: the stream gets the parts as one writev (no copy into a new buffer: allocating
        // megabytes of buffers per list makes V8 collect garbage for the external memory).
        res.cork();
        for (const p of parts) ok = (res as ServerResponse).write(p);
        res.uncork();
      }
      if (!ok && !draining) {
        draining = true;
        src.pause();
        (gz ?? res).once('drain', () => {
          draining = false;
          src.resume();
        });
      }
    };
    const write = (chunk: string | Buffer): void => {
      if (done) return;
      const n = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
      if (n === 0) return;
      bytes += n;
      out.push(chunk);
      outBytes += n;
      if (outBytes >= MAX_COALESCED) flush();
      else scheduled ??= setImmediate(flush);
    };
    // Masked output is collected per input chunk (not one write per object).
    let pending = '';
    const collect = (chunk: string | Buffer): void => {
      if (typeof chunk === 'string') pending += chunk;
      else {
        flushPending();
        write(chunk);
      }
    };
    const flushPending = (): void => {
      if (pending) {
        const p = pending;
        pending = '';
        write(p);
      }
    };
    let sink: { write(b: Buffer): void; end(): void };
    try {
      sink = makeSink(plan, plan.mode === 'json' || plan.mode === 'watch' ? collect : write);
    } catch (e) {
      finish(`masking setup failed: ${(e as Error).message}`);
      return;
    }
    src.on('data', (b: Buffer) => {
      if (done) return;
      try {
        sink.write(b);
        flushPending();
      } catch (e) {
        finish(`the response could not be masked: ${(e as Error).message}`);
      }
    });
    src.once('end', () => {
      if (done) return;
      try {
        sink.end();
        flushPending();
      } catch (e) {
        finish(`the response could not be masked: ${(e as Error).message}`);
        return;
      }
      flush(true);
      if (gz) {
        // The compressor ends the response when its last bytes are out.
        const z = gz;
        z.once('end', () => finish());
        z.end();
        return;
      }
      res.end();
      finish();
    });
    src.once('error', (e) => finish(`the API server's response broke off: ${e.message}`));
    up.body.once('close', () => {
      if (!done && !up.body.readableEnded) finish("the API server's response broke off");
    });
    res.once('close', () => {
      if (!done) {
        done = true;
        if (scheduled) clearImmediate(scheduled);
        out = [];
        up.body.destroy();
        gz?.destroy();
        resolve({ bytes });
      }
    });
  });
}

function makeSink(plan: MaskPlan, write: (chunk: string | Buffer) => void): { write(b: Buffer): void; end(): void } {
  const { masker, resource } = plan;
  /** One serialized object, masked: without a full parse where the masking module allows it. */
  const maskOne = (text: string): string => JSON.stringify(maskKube(masker, resource, JSON.parse(text), true));
  if (plan.mode === 'json' || plan.mode === 'watch') {
    // Detector-only resources (pods, ConfigMaps, …): only the fields the detectors read are parsed.
    const rw = KubeFieldRewriter.for(masker, resource, DETECTOR_RESOURCES, (t) => write(t));
    if (rw) {
      const dec = new StringDecoder('utf8');
      return {
        write: (b) => rw.write(dec.write(b)),
        end: () => {
          rw.write(dec.end());
          rw.end();
        },
      };
    }
  }
  switch (plan.mode) {
    case 'none':
      return { write: (b) => write(b), end: () => undefined };
    case 'text': {
      const sm = masker.streamMasker({ onOutput: (b) => write(b) });
      return { write: (b) => sm.write(b), end: () => sm.end() };
    }
    case 'watch': {
      let rest = '';
      const dec = new TextDecoder('utf-8', { fatal: true });
      const line = (l: string) => {
        if (l.trim() === '') return;
        write(maskOne(l) + '\n');
      };
      return {
        write: (b) => {
          const text = rest + dec.decode(b, { stream: true });
          let start = 0;
          for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
            line(text.slice(start, nl));
            start = nl + 1;
          }
          rest = text.slice(start);
        },
        end: () => line(rest + dec.decode()),
      };
    }
    case 'json': {
      let mode: 'stream' | 'buffer' = 'stream';
      let buffered = '';
      let first = true;
      const unchanged = (o: unknown) => JSON.stringify(maskKube(masker, resource, o)) === JSON.stringify(o);
      const splitter = new JsonListSplitter({
        head(text) {
          const shell = JSON.parse(text + ']}') as Record<string, unknown>;
          const kind = shell['kind'];
          if (typeof kind === 'string' && (kind.endsWith('List') || kind === 'Table') && unchanged(shell)) write(text);
          else {
            mode = 'buffer';
            buffered = text;
          }
        },
        item(text) {
          if (mode === 'buffer') {
            buffered += (first ? '' : ',') + text;
          } else {
            write((first ? '' : ',') + maskOne(text));
          }
          first = false;
        },
        tail(text) {
          if (mode === 'buffer') {
            write(JSON.stringify(maskKube(masker, resource, JSON.parse(buffered + ']' + text), true)));
            return;
          }
          if (!/^\s*\}\s*$/.test(text) && !unchanged(JSON.parse('{"items":[]' + text))) throw new Error('unexpected content after the list items');
          write(']' + text);
        },
        whole(text) {
          if (text.trim() === '') return;
          write(maskOne(text));
        },
      });
      return { write: (b) => splitter.write(b), end: () => splitter.end() };
    }
  }
}
