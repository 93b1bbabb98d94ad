// A STAND-IN for kube-apiserver, for tests and benchmarks: there is no real Kubernetes API server
// on these machines. It is the smallest server that real `kubectl` (1.32) accepts as one, and it
// follows the API server's wire behaviour for what it implements:
//   - TLS with its own CA (openssl), HTTP/2 and HTTP/1.1 (ALPN); bearer-token or client-certificate
//     authentication; Impersonate-User/Impersonate-Group honoured for the admin user and recorded;
//   - discovery (/api, /api/v1, /apis, /apis/apps, /apis/apps/v1: the legacy documents; the
//     aggregated-discovery Accept types are ignored, so clients fall back as they do with old
//     servers), /version (v1.32.0), /openapi/v3 (+ per group-version documents with the PATCH
//     operations and their fieldValidation parameter, so `kubectl apply` leaves validation to the
//     server) and /openapi/v2 (404, as servers with it disabled);
//   - core/v1 namespaces, pods, secrets, configmaps, services, serviceaccounts, events,
//     resourcequotas, limitranges and apps/v1 deployments, replicasets: create, get, list
//     (limit/continue chunking, label and field selectors), update, patch (JSON merge patch;
//     strategic merge patch treated as a merge patch: lists are replaced), delete,
//     deletecollection; one global resourceVersion; 404/409/400/422/405 answered with Status;
//   - watch (?watch=1 or /watch/ paths) as chunked newline-delimited events from a resourceVersion
//     (the events after it replayed from a window of the last 1,000, as the API server's watch
//     cache does, 410 Gone in an ERROR event when it is older; or the current state first), with
//     timeoutSeconds;
//   - Table responses (Accept: application/json;as=Table;v=v1;g=meta.k8s.io) with includeObject;
//   - response compression as the API server's deferredResponseWriter: a body over 128 KiB goes
//     out gzip-compressed (level 1, Vary: Accept-Encoding) when the client accepts gzip, which
//     kubectl's Go client does by default; smaller bodies and watches are never compressed;
//   - pods/log (tailLines, follow: lines appended later are streamed until the client leaves);
//   - pods/exec over WebSocket (v5.channel.k8s.io, v4.channel.k8s.io): the command really runs,
//     as `nobody`, in a child process (a PTY for tty=true), stdin/stdout/stderr/error/resize
//     channels and the v5 close signal; pods/attach: the same channels, echoing stdin to stdout;
//   - pods/portforward over WebSocket with the channel protocol (portforward.k8s.io /
//     v4.channel.k8s.io: data and error channel per port, the port as the first two bytes): it
//     connects to the port on 127.0.0.1. kubectl 1.32 tunnels SPDY inside the WebSocket for
//     port-forward (SPDY/3.1+portforward.k8s.io); this stand-in does not speak SPDY.
// No protobuf: request bodies must be JSON (415 otherwise), responses are always JSON, except with
// `answerProtobuf`, where a list of the named resources comes back as (fake) protobuf bytes — for
// testing that a proxy refuses such a response.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import http2 from 'node:http2';
import type { IncomingMessage, ServerResponse } from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Writable } from 'node:stream';
import zlib from 'node:zlib';
import { WebSocketServer, type WebSocket } from 'ws';
import pty from 'node-pty';

export type KObj = Record<string, unknown> & { metadata: Record<string, unknown> & { name: string; namespace?: string } };

interface ResourceDef {
  group: string;
  version: string;
  resource: string;
  kind: string;
  namespaced: boolean;
  shortNames?: string[];
  subresources?: string[];
}

const RESOURCES: ResourceDef[] = [
  { group: '', version: 'v1', resource: 'namespaces', kind: 'Namespace', namespaced: false, shortNames: ['ns'] },
  { group: '', version: 'v1', resource: 'pods', kind: 'Pod', namespaced: true, shortNames: ['po'], subresources: ['log', 'exec', 'attach', 'portforward', 'status'] },
  { group: '', version: 'v1', resource: 'secrets', kind: 'Secret', namespaced: true },
  { group: '', version: 'v1', resource: 'configmaps', kind: 'ConfigMap', namespaced: true, shortNames: ['cm'] },
  { group: '', version: 'v1', resource: 'services', kind: 'Service', namespaced: true, shortNames: ['svc'] },
  { group: '', version: 'v1', resource: 'serviceaccounts', kind: 'ServiceAccount', namespaced: true, shortNames: ['sa'] },
  { group: '', version: 'v1', resource: 'events', kind: 'Event', namespaced: true, shortNames: ['ev'] },
  { group: '', version: 'v1', resource: 'resourcequotas', kind: 'ResourceQuota', namespaced: true, shortNames: ['quota'] },
  { group: '', version: 'v1', resource: 'limitranges', kind: 'LimitRange', namespaced: true, shortNames: ['limits'] },
  { group: 'apps', version: 'v1', resource: 'deployments', kind: 'Deployment', namespaced: true, shortNames: ['deploy'] },
  { group: 'apps', version: 'v1', resource: 'replicasets', kind: 'ReplicaSet', namespaced: true, shortNames: ['rs'] },
];

/** Events kept for watches that start from an older resourceVersion. */
const WATCH_HISTORY = 1000;
const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

export interface SeenRequest {
  method: string;
  /** Path with query, as received. */
  url: string;
  user: string;
  impersonateUser?: string;
  impersonateGroups: string[];
  accept?: string;
  acceptEncoding?: string;
  /** The Content-Encoding the answer went out with (gzip for large bodies when the client accepts it). */
  responseEncoding?: string;
  contentType?: string;
  httpVersion: string;
  /** The X-Portcullis-Reason header, had it reached the API server (the bastion strips it). */
  portcullisReason?: string;
}

export interface KubeApiOptions {
  /** Bearer token the server accepts (default: a random one). */
  token?: string;
  /** Resources (plural) whose list/get responses are answered as fake protobuf. */
  answerProtobuf?: string[];
  /** Unix user that exec'd commands run as (default nobody). */
  execUser?: string;
  /**
   * Compress bodies over 128 KiB with gzip (level 1) for clients that accept it, as kube-apiserver
   * does (APIResponseCompression, on by default; kubectl asks for gzip). Default true.
   */
  gzip?: boolean;
  /** How many of the latest requests `seen` keeps (default 10,000: a long benchmark must not grow it without end). */
  seenLimit?: number;
}

export interface KubeApi {
  url: string;
  host: string;
  port: number;
  /** PEM of the CA that signed the server (and client) certificates. */
  ca: string;
  token: string;
  /** A client certificate (CN=portcullis-bastion, O=system:masters) and its key, PEM. */
  clientCert: string;
  clientKey: string;
  /** The requests received, in order (the latest `seenLimit` of them). */
  readonly seen: SeenRequest[];
  /** Creates or replaces an object (seed data); returns it with metadata filled in. */
  put(obj: Record<string, unknown>): KObj;
  get(resource: string, namespace: string, name: string): KObj | undefined;
  /** Appends a line to a pod's log (followers receive it). */
  appendLog(namespace: string, pod: string, line: string): void;
  /** Writes a kubeconfig for this server (token or client-cert user) and returns its path. */
  kubeconfig(dir: string, auth?: 'token' | 'cert'): string;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// certificates

function makeCerts(dir: string): { ca: string; cert: string; key: string; clientCert: string; clientKey: string } {
  const f = (n: string) => path.join(dir, n);
  const run = (args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=standin-kube-ca', '-keyout', f('ca.key'), '-out', f('ca.crt')]);
  fs.writeFileSync(f('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=kube-apiserver', '-keyout', f('server.key'), '-out', f('server.csr')]);
  run(['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f('server.ext'), '-out', f('server.crt')]);
  fs.writeFileSync(f('client.ext'), 'extendedKeyUsage=clientAuth\n');
  run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/O=system:masters/CN=portcullis-bastion', '-keyout', f('client.key'), '-out', f('client.csr')]);
  run(['x509', '-req', '-in', f('client.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f('client.ext'), '-out', f('client.crt')]);
  const r = (n: string) => fs.readFileSync(f(n), 'utf8');
  return { ca: r('ca.crt'), cert: r('server.crt'), key: r('server.key'), clientCert: r('client.crt'), clientKey: r('client.key') };
}

// ---------------------------------------------------------------------------------------------
// helpers

function status(code: number, reason: string, message: string, details?: Record<string, unknown>): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

function ts(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

function age(created: unknown): string {
  const t = typeof created === 'string' ? Date.parse(created) : NaN;
  if (Number.isNaN(t)) return '<unknown>';
  const s = Math.max(0, Math.floor((Date.now() - t) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return patch;
  const out: Record<string, unknown> = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k === '$patch' || k.startsWith('$setElementOrder') || k.startsWith('$deleteFromPrimitiveList') || k === '$retainKeys') continue;
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** RFC 6902 JSON patch (add, remove, replace, test; enough for kubectl). */
function jsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw new ApiError(400, 'BadRequest', 'json patch must be an array');
  let root = structuredClone(doc);
  for (const op of ops as { op: string; path: string; value?: unknown }[]) {
    const parts = op.path.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    if (parts.length === 0) {
      if (op.op === 'add' || op.op === 'replace') root = structuredClone(op.value);
      continue;
    }
    let cur: unknown = root;
    for (const p of parts.slice(0, -1)) {
      cur = Array.isArray(cur) ? cur[Number(p)] : isObj(cur) ? cur[p] : undefined;
      if (cur === undefined) throw new ApiError(422, 'Invalid', `json patch: path ${op.path} not found`);
    }
    const last = parts[parts.length - 1]!;
    if (Array.isArray(cur)) {
      const i = last === '-' ? cur.length : Number(last);
      if (op.op === 'add') cur.splice(i, 0, structuredClone(op.value));
      else if (op.op === 'remove') cur.splice(i, 1);
      else if (op.op === 'replace') cur[i] = structuredClone(op.value);
      else if (op.op === 'test' && JSON.stringify(cur[i]) !== JSON.stringify(op.value)) throw new ApiError(422, 'Invalid', `json patch: test failed at ${op.path}`);
    } else if (isObj(cur)) {
      if (op.op === 'add' || op.op === 'replace') cur[last] = structuredClone(op.value);
      else if (op.op === 'remove') delete cur[last];
      else if (op.op === 'test' && JSON.stringify(cur[last]) !== JSON.stringify(op.value)) throw new ApiError(422, 'Invalid', `json patch: test failed at ${op.path}`);
    }
  }
  return root;
}

function parseSelector(sel: string | undefined): ((labels: Record<string, string>) => boolean) | null {
  if (!sel) return null;
  const reqs = sel.split(',').filter(Boolean).map((r) => {
    let m: RegExpExecArray | null;
    if ((m = /^([^!=\s]+)\s*!=\s*(.*)$/.exec(r))) return (l: Record<string, string>) => l[m![1]!] !== m![2];
    if ((m = /^([^!=\s]+)\s*==?\s*(.*)$/.exec(r))) return (l: Record<string, string>) => l[m![1]!] === m![2];
    if ((m = /^!(\S+)$/.exec(r))) return (l: Record<string, string>) => !(m![1]! in l);
    if ((m = /^(\S+)\s+in\s+\((.*)\)$/.exec(r))) {
      const vals = m[2]!.split(',').map((s) => s.trim());
      return (l: Record<string, string>) => vals.includes(l[m![1]!] ?? '\u0000');
    }
    const k = r.trim();
    return (l: Record<string, string>) => k in l;
  });
  return (labels) => reqs.every((f) => f(labels));
}

function fieldMatcher(sel: string | undefined): ((o: KObj) => boolean) | null {
  if (!sel) return null;
  const reqs = sel.split(',').filter(Boolean).map((r) => {
    const m = /^([^!=]+)(!=|==|=)(.*)$/.exec(r);
    if (!m) throw new ApiError(400, 'BadRequest', `invalid field selector ${JSON.stringify(r)}`);
    const [, field, op, value] = m;
    const get = (o: KObj): string => {
      const parts = field!.split('.');
      let cur: unknown = o;
      for (const p of parts) cur = isObj(cur) ? cur[p] : undefined;
      return cur === undefined || cur === null ? '' : String(cur);
    };
    return (o: KObj) => (op === '!=' ? get(o) !== value : get(o) === value);
  });
  return (o) => reqs.every((f) => f(o));
}

// ---------------------------------------------------------------------------------------------
// protobuf request bodies (kubectl create secret / configmap send them): the `k8s\0` envelope
// (runtime.Unknown) around a Secret or ConfigMap of k8s.io/api/core/v1/generated.proto. Other
// kinds are answered 415, as a server without their codec would.

function readVarint(b: Buffer, pos: { i: number }): number {
  let v = 0;
  let mul = 1;
  for (;;) {
    const x = b[pos.i++];
    if (x === undefined) throw new ApiError(400, 'BadRequest', 'truncated protobuf');
    v += (x & 0x7f) * mul;
    if (x < 0x80) return v;
    mul *= 128;
  }
}

function pbFields(b: Buffer): [number, Buffer | number][] {
  const out: [number, Buffer | number][] = [];
  const pos = { i: 0 };
  while (pos.i < b.length) {
    const tag = readVarint(b, pos);
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) out.push([field, readVarint(b, pos)]);
    else if (wire === 2) {
      const n = readVarint(b, pos);
      out.push([field, b.subarray(pos.i, pos.i + n)]);
      pos.i += n;
    } else if (wire === 1) pos.i += 8;
    else if (wire === 5) pos.i += 4;
    else throw new ApiError(400, 'BadRequest', `protobuf wire type ${wire} not supported`);
  }
  return out;
}

function pbMap(entry: Buffer, asString: boolean): [string, string] {
  let k = '';
  let v = '';
  for (const [f, x] of pbFields(entry)) {
    if (!Buffer.isBuffer(x)) continue;
    if (f === 1) k = x.toString('utf8');
    if (f === 2) v = asString ? x.toString('utf8') : x.toString('base64');
  }
  return [k, v];
}

function pbObjectMeta(b: Buffer): Record<string, unknown> {
  const md: Record<string, unknown> = {};
  for (const [f, x] of pbFields(b)) {
    if (!Buffer.isBuffer(x)) continue;
    if (x.length === 0) continue; // gogo-protobuf writes empty optional strings: they mean unset
    if (f === 1) md['name'] = x.toString('utf8');
    else if (f === 2) md['generateName'] = x.toString('utf8');
    else if (f === 3) md['namespace'] = x.toString('utf8');
    else if (f === 11 || f === 12) {
      const key = f === 11 ? 'labels' : 'annotations';
      const [k, v] = pbMap(x, true);
      md[key] = { ...((md[key] as Record<string, string>) ?? {}), [k]: v };
    }
  }
  return md;
}

function decodeProtobufBody(raw: Buffer): Record<string, unknown> {
  if (raw.length < 4 || raw.subarray(0, 4).toString('latin1') !== 'k8s\u0000') throw new ApiError(400, 'BadRequest', 'protobuf body without the k8s envelope');
  let kind = '';
  let apiVersion = '';
  let inner: Buffer | null = null;
  for (const [f, x] of pbFields(raw.subarray(4))) {
    if (!Buffer.isBuffer(x)) continue;
    if (f === 1) {
      for (const [g, y] of pbFields(x)) {
        if (Buffer.isBuffer(y) && g === 1) apiVersion = y.toString('utf8');
        if (Buffer.isBuffer(y) && g === 2) kind = y.toString('utf8');
      }
    } else if (f === 2) inner = x;
  }
  if (!inner) throw new ApiError(400, 'BadRequest', 'protobuf envelope without an object');
  const o: Record<string, unknown> = { apiVersion, kind, metadata: {} };
  const put = (key: string, [k, v]: [string, string]) => (o[key] = { ...((o[key] as Record<string, string>) ?? {}), [k]: v });
  if (kind === 'Secret') {
    for (const [f, x] of pbFields(inner)) {
      if (f === 1 && Buffer.isBuffer(x)) o['metadata'] = pbObjectMeta(x);
      else if (f === 2 && Buffer.isBuffer(x)) put('data', pbMap(x, false));
      else if (f === 3 && Buffer.isBuffer(x)) o['type'] = x.toString('utf8');
      else if (f === 4 && Buffer.isBuffer(x)) put('stringData', pbMap(x, true));
      else if (f === 5) o['immutable'] = x === 1;
    }
  } else if (kind === 'ConfigMap') {
    for (const [f, x] of pbFields(inner)) {
      if (f === 1 && Buffer.isBuffer(x)) o['metadata'] = pbObjectMeta(x);
      else if (f === 2 && Buffer.isBuffer(x)) put('data', pbMap(x, true));
      else if (f === 3 && Buffer.isBuffer(x)) put('binaryData', pbMap(x, false));
      else if (f === 4) o['immutable'] = x === 1;
    }
  } else {
    throw new ApiError(415, 'UnsupportedMediaType', `the stand-in decodes protobuf only for Secret and ConfigMap, not ${kind}`);
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// tables

interface Column {
  name: string;
  type: string;
  format?: string;
  description: string;
  priority: number;
}

function containersOf(o: KObj): Record<string, unknown>[] {
  const spec = o['spec'];
  return isObj(spec) && Array.isArray(spec['containers']) ? (spec['containers'] as Record<string, unknown>[]) : [];
}

function tableFor(resource: string): { columns: Column[]; cells: (o: KObj) => unknown[] } {
  const name: Column = { name: 'Name', type: 'string', format: 'name', description: 'Name must be unique within a namespace.', priority: 0 };
  const ageCol: Column = { name: 'Age', type: 'string', description: 'CreationTimestamp', priority: 0 };
  const created = (o: KObj) => age(o.metadata['creationTimestamp']);
  switch (resource) {
    case 'pods':
      return {
        columns: [
          name,
          { name: 'Ready', type: 'string', description: 'The aggregate readiness state of this pod for accepting traffic.', priority: 0 },
          { name: 'Status', type: 'string', description: 'The aggregate status of the containers in this pod.', priority: 0 },
          { name: 'Restarts', type: 'string', description: 'The number of times the containers in this pod have been restarted.', priority: 0 },
          ageCol,
          { name: 'IP', type: 'string', description: 'The IP address assigned to the pod', priority: 1 },
          { name: 'Node', type: 'string', description: 'The node the pod is running on', priority: 1 },
          { name: 'Nominated Node', type: 'string', description: 'The nominated node', priority: 1 },
          { name: 'Readiness Gates', type: 'string', description: 'The readiness gates', priority: 1 },
        ],
        cells: (o) => {
          const st = isObj(o['status']) ? o['status'] : {};
          const n = containersOf(o).length;
          const phase = typeof st['phase'] === 'string' ? st['phase'] : 'Pending';
          return [o.metadata.name, `${phase === 'Running' ? n : 0}/${n}`, phase, '0', created(o), st['podIP'] ?? '<none>', isObj(o['spec']) ? (o['spec']['nodeName'] ?? '<none>') : '<none>', '<none>', '<none>'];
        },
      };
    case 'secrets':
      return {
        columns: [name, { name: 'Type', type: 'string', description: 'The type of the secret', priority: 0 }, { name: 'Data', type: 'string', description: 'The number of items in the secret', priority: 0 }, ageCol],
        cells: (o) => [o.metadata.name, o['type'] ?? 'Opaque', String(Object.keys(isObj(o['data']) ? o['data'] : {}).length), created(o)],
      };
    case 'configmaps':
      return {
        columns: [name, { name: 'Data', type: 'string', description: 'Number of data items', priority: 0 }, ageCol],
        cells: (o) => [o.metadata.name, String(Object.keys(isObj(o['data']) ? o['data'] : {}).length + Object.keys(isObj(o['binaryData']) ? o['binaryData'] : {}).length), created(o)],
      };
    case 'namespaces':
      return {
        columns: [name, { name: 'Status', type: 'string', description: 'The status of the namespace', priority: 0 }, ageCol],
        cells: (o) => [o.metadata.name, 'Active', created(o)],
      };
    case 'deployments':
      return {
        columns: [
          name,
          { name: 'Ready', type: 'string', description: 'Number of the pod with ready state', priority: 0 },
          { name: 'Up-to-date', type: 'string', description: 'Total number of non-terminated pods targeted by this deployment that have the desired template spec.', priority: 0 },
          { name: 'Available', type: 'string', description: 'Total number of available pods', priority: 0 },
          ageCol,
          { name: 'Containers', type: 'string', description: 'Names of each container in the template.', priority: 1 },
          { name: 'Images', type: 'string', description: 'Images referenced by each container in the template.', priority: 1 },
        ],
        cells: (o) => {
          const spec = isObj(o['spec']) ? o['spec'] : {};
          const r = typeof spec['replicas'] === 'number' ? spec['replicas'] : 1;
          const tpl = isObj(spec['template']) && isObj(spec['template']['spec']) ? spec['template']['spec'] : {};
          const cs = Array.isArray(tpl['containers']) ? (tpl['containers'] as Record<string, unknown>[]) : [];
          return [o.metadata.name, `${r}/${r}`, String(r), String(r), created(o), cs.map((c) => c['name']).join(','), cs.map((c) => c['image']).join(',')];
        },
      };
    default:
      return { columns: [name, ageCol], cells: (o) => [o.metadata.name, created(o)] };
  }
}

// ---------------------------------------------------------------------------------------------
// the server

interface Watcher {
  def: ResourceDef;
  namespace: string;
  match: (o: KObj) => boolean;
  send: (type: string, o: KObj) => void;
}

interface Request {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  user: string;
  body: () => Promise<Buffer>;
}

/** kube-apiserver's defaultGzipThresholdBytes. */
const GZIP_THRESHOLD = 128 * 1024;

/**
 * The API server's negotiateContentEncoding: gzip when one comma-separated token of Accept-Encoding
 * is exactly `gzip` (no q-values, no `*`: it matches tokens, it does not weigh them).
 */
function gzipAccepted(h: string | string[] | undefined): boolean {
  const header = Array.isArray(h) ? h[0] : h;
  return (header ?? '').split(',').some((token) => token.trim() === 'gzip');
}

export async function startKubeApi(opts: KubeApiOptions = {}): Promise<KubeApi> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'standin-kube-'));
  const certs = makeCerts(dir);
  const token = opts.token ?? `standin-${randomUUID()}`;
  const protobufFor = new Set(opts.answerProtobuf ?? []);
  const execUser = opts.execUser ?? 'nobody';
  const uid = Number(execFileSync('id', ['-u', execUser]).toString().trim());
  const gid = Number(execFileSync('id', ['-g', execUser]).toString().trim());

  let rv = 1;
  const store = new Map<string, KObj>();
  const watchers = new Set<Watcher>();
  const logs = new Map<string, string[]>();
  const logFollowers = new Map<string, Set<(line: string) => void>>();
  const seen: SeenRequest[] = [];
  const seenLimit = opts.seenLimit ?? 10_000;
  /** Records a request; past the limit the oldest are dropped, a thousand at a time. */
  const saw = (r: SeenRequest): SeenRequest => {
    seen.push(r);
    if (seen.length > seenLimit + 1000) seen.splice(0, seen.length - seenLimit);
    return r;
  };
  /** Each answer's record in `seen`, and whether its client accepts gzip. */
  const seenFor = new WeakMap<ServerResponse, SeenRequest>();
  const acceptsGzip = new WeakMap<ServerResponse, boolean>();
  const children = new Set<ChildProcess | pty.IPty>();
  const sockets = new Set<Duplex>();

  const keyOf = (def: ResourceDef, ns: string, name: string) => `${def.group}/${def.resource}/${ns}/${name}`;
  const defOf = (group: string, version: string, resource: string): ResourceDef | undefined => RESOURCES.find((d) => d.group === group && d.version === version && d.resource === resource);
  const apiVersionOf = (d: ResourceDef) => (d.group ? `${d.group}/${d.version}` : d.version);

  /** The last WATCH_HISTORY events (snapshots), for a watch that starts from an older resourceVersion. */
  const history: { rv: number; def: ResourceDef; type: string; o: KObj }[] = [];
  /** The resourceVersion up to which events have been dropped from `history`. */
  let historyFloor = 1;
  const notify = (def: ResourceDef, type: string, o: KObj) => {
    history.push({ rv: Number(o.metadata.resourceVersion), def, type, o: JSON.parse(JSON.stringify(o)) as KObj });
    if (history.length > WATCH_HISTORY) historyFloor = history.shift()!.rv;
    for (const w of watchers) {
      if (w.def !== def) continue;
      if (w.namespace && o.metadata.namespace !== w.namespace) continue;
      if (!w.match(o)) continue;
      w.send(type, o);
    }
  };

  const save = (def: ResourceDef, o: KObj, type: 'ADDED' | 'MODIFIED'): KObj => {
    o.metadata.resourceVersion = String(++rv);
    store.set(keyOf(def, o.metadata.namespace ?? '', o.metadata.name), o);
    notify(def, type, o);
    return o;
  };

  const normalize = (def: ResourceDef, body: unknown, ns: string): KObj => {
    if (!isObj(body) || !isObj(body['metadata'])) throw new ApiError(400, 'BadRequest', 'the object has no metadata');
    const o = structuredClone(body) as KObj;
    o['kind'] = def.kind;
    o['apiVersion'] = apiVersionOf(def);
    const md = o.metadata;
    if (typeof md.name !== 'string' || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(md.name)) {
      if (typeof md['generateName'] === 'string') md.name = `${md['generateName']}${randomUUID().slice(0, 5)}`;
      else throw new ApiError(422, 'Invalid', `${def.kind} "${String(md.name)}" is invalid: metadata.name: Invalid value`, { name: String(md.name), kind: def.kind });
    }
    if (def.namespaced) {
      if (md.namespace !== undefined && md.namespace !== ns) throw new ApiError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
      md.namespace = ns;
    } else delete md.namespace;
    if (def.resource === 'secrets' && isObj(o['stringData'])) {
      const data = isObj(o['data']) ? { ...o['data'] } : {};
      for (const [k, v] of Object.entries(o['stringData'])) data[k] = Buffer.from(String(v), 'utf8').toString('base64');
      o['data'] = data;
      delete o['stringData'];
      o['type'] ??= 'Opaque';
    }
    if (def.resource === 'secrets') o['type'] ??= 'Opaque';
    if (def.resource === 'pods') {
      const st = isObj(o['status']) ? o['status'] : {};
      o['status'] = { phase: 'Running', podIP: '10.0.0.' + ((rv % 250) + 2), ...st };
      if (isObj(o['spec'])) o['spec']['nodeName'] ??= 'standin-node';
    }
    return o;
  };

  const api: KubeApi = {
    url: '',
    host: '127.0.0.1',
    port: 0,
    ca: certs.ca,
    token,
    clientCert: certs.clientCert,
    clientKey: certs.clientKey,
    seen,
    put(obj) {
      const apiVersion = String(obj['apiVersion'] ?? 'v1');
      const [group, version] = apiVersion.includes('/') ? (apiVersion.split('/') as [string, string]) : ['', apiVersion];
      const def = RESOURCES.find((d) => d.group === group && d.version === version && d.kind === obj['kind']);
      if (!def) throw new Error(`stand-in: unknown kind ${String(obj['kind'])}`);
      const md = obj['metadata'] as Record<string, unknown>;
      const ns = def.namespaced ? String(md['namespace'] ?? 'default') : '';
      const o = normalize(def, obj, ns);
      const prev = store.get(keyOf(def, ns, o.metadata.name));
      o.metadata.uid = prev?.metadata['uid'] ?? randomUUID();
      o.metadata.creationTimestamp = prev?.metadata['creationTimestamp'] ?? ts(Date.now());
      return save(def, o, prev ? 'MODIFIED' : 'ADDED');
    },
    get(resource, namespace, name) {
      const def = RESOURCES.find((d) => d.resource === resource);
      return def ? store.get(keyOf(def, def.namespaced ? namespace : '', name)) : undefined;
    },
    appendLog(namespace, pod, line) {
      const k = `${namespace}/${pod}`;
      const l = logs.get(k) ?? [];
      l.push(line);
      logs.set(k, l);
      for (const f of logFollowers.get(k) ?? []) f(line);
    },
    kubeconfig(kdir, auth = 'token') {
      const file = path.join(kdir, `standin-${auth}.kubeconfig`);
      const b64 = (s: string) => Buffer.from(s).toString('base64');
      const user = auth === 'token' ? `    token: ${token}` : `    client-certificate-data: ${b64(certs.clientCert)}\n    client-key-data: ${b64(certs.clientKey)}`;
      fs.writeFileSync(
        file,
        `apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: ${api.url}\n    certificate-authority-data: ${b64(certs.ca)}\nusers:\n- name: admin\n  user:\n${user}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: admin\n    namespace: default\ncurrent-context: standin\n`,
        { mode: 0o600 },
      );
      return file;
    },
    async close() {
      for (const w of watchers) w.send('__close__', { metadata: { name: '' } });
      for (const c of children) {
        try {
          c.kill('SIGKILL');
        } catch {
          /* gone */
        }
      }
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };

  // seed: the namespaces every cluster has
  for (const ns of ['default', 'kube-system', 'kube-public']) api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });

  // ---- authentication ---------------------------------------------------------------------------

  const authenticate = (headers: IncomingMessage['headers'], socket: TLSSocket): { user: string; groups: string[] } => {
    let user: string | null = null;
    const auth = headers['authorization'];
    if (typeof auth === 'string' && /^Bearer\s+/i.test(auth)) {
      if (auth.replace(/^Bearer\s+/i, '') === token) user = 'admin';
    } else if (socket.authorized) {
      const cert = socket.getPeerCertificate();
      if (cert && typeof cert.subject?.CN === 'string') user = cert.subject.CN;
    }
    if (user === null) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
    const imp = headers['impersonate-user'];
    if (typeof imp === 'string') {
      const g = headers['impersonate-group'];
      const groups = Array.isArray(g) ? g : typeof g === 'string' ? g.split(',').map((s) => s.trim()) : [];
      return { user: imp, groups };
    }
    return { user, groups: ['system:masters'] };
  };

  // ---- discovery ----------------------------------------------------------------------------------

  const resourceList = (group: string, version: string) => ({
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: group ? `${group}/${version}` : version,
    resources: RESOURCES.filter((d) => d.group === group && d.version === version).flatMap((d) => [
      { name: d.resource, singularName: d.kind.toLowerCase(), namespaced: d.namespaced, kind: d.kind, verbs: VERBS, ...(d.shortNames ? { shortNames: d.shortNames } : {}), storageVersionHash: d.kind.slice(0, 8) },
      ...(d.subresources ?? []).map((s) => ({ name: `${d.resource}/${s}`, singularName: '', namespaced: d.namespaced, kind: s === 'exec' || s === 'attach' || s === 'portforward' ? `Pod${s[0]!.toUpperCase()}${s.slice(1)}Options` : s === 'log' ? 'Pod' : d.kind, verbs: s === 'log' ? ['get'] : s === 'status' ? ['get', 'patch', 'update'] : ['create', 'get'] })),
    ]),
  });

  const openapiV3Root = () => ({
    paths: Object.fromEntries(
      [['', 'v1'], ['apps', 'v1']].map(([g, v]) => [g ? `apis/${g}/${v}` : `api/${v}`, { serverRelativeURL: `/openapi/v3/${g ? `apis/${g}/${v}` : `api/${v}`}?hash=STANDIN${rvAtStart}` }]),
    ),
  });
  const rvAtStart = rv;

  const schemaName = (d: ResourceDef) => `io.k8s.api.${d.group || 'core'}.${d.version}.${d.kind}`;
  const openapiV3Doc = (group: string, version: string) => {
    const defs = RESOURCES.filter((d) => d.group === group && d.version === version);
    const paths: Record<string, unknown> = {};
    const schemas: Record<string, unknown> = {
      'io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta': {
        description: 'ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.',
        type: 'object',
        properties: {
          name: { description: 'Name must be unique within a namespace.', type: 'string' },
          namespace: { description: 'Namespace defines the space within which each name must be unique.', type: 'string' },
          labels: { description: 'Map of string keys and values that can be used to organize and categorize objects.', type: 'object', additionalProperties: { type: 'string', default: '' } },
          annotations: { description: 'Annotations is an unstructured key value map.', type: 'object', additionalProperties: { type: 'string', default: '' } },
          resourceVersion: { description: 'An opaque value that represents the internal version of this object.', type: 'string' },
          uid: { description: 'UID is the unique in time and space value for this object.', type: 'string' },
        },
      },
    };
    for (const d of defs) {
      const gvk = [{ group: d.group, version: d.version, kind: d.kind }];
      const base = `/${d.group ? `apis/${d.group}` : 'api'}/${d.version}${d.namespaced ? '/namespaces/{namespace}' : ''}/${d.resource}`;
      const params = [{ name: 'fieldValidation', in: 'query', description: 'fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.', schema: { type: 'string', uniqueItems: true } }];
      const patchTypes = ['application/apply-patch+yaml', 'application/json-patch+json', 'application/merge-patch+json', 'application/strategic-merge-patch+json'];
      const op = (action: string) => ({
        description: `${action} the specified ${d.kind}`,
        operationId: `${action}${d.kind}`,
        parameters: params,
        ...(action === 'patch' ? { requestBody: { content: Object.fromEntries(patchTypes.map((t) => [t, { schema: { type: 'object' } }])), required: true } } : {}),
        responses: { '200': { description: 'OK' } },
        'x-kubernetes-action': action,
        'x-kubernetes-group-version-kind': gvk[0],
      });
      paths[base] = { get: op('list'), post: op('post') };
      paths[`${base}/{name}`] = { get: op('get'), put: op('put'), patch: op('patch'), delete: op('delete') };
      schemas[schemaName(d)] = {
        description: `${d.kind} (stand-in schema).`,
        type: 'object',
        properties: {
          apiVersion: { description: 'APIVersion defines the versioned schema of this representation of an object.', type: 'string' },
          kind: { description: 'Kind is a string value representing the REST resource this object represents.', type: 'string' },
          metadata: { description: "Standard object's metadata.", allOf: [{ $ref: '#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta' }], default: {} },
          ...(d.resource === 'secrets' || d.resource === 'configmaps'
            ? {
                data: { description: 'Data contains the configuration data.', type: 'object', additionalProperties: { type: 'string', ...(d.resource === 'secrets' ? { format: 'byte' } : { default: '' }) } },
                ...(d.resource === 'secrets' ? { stringData: { description: 'stringData allows specifying non-binary secret data in string form.', type: 'object', additionalProperties: { type: 'string', default: '' } }, type: { description: 'Used to facilitate programmatic handling of secret data.', type: 'string' } } : {}),
              }
            : { spec: { description: `Specification of the desired behavior of the ${d.kind}.`, type: 'object' }, status: { description: `Most recently observed status of the ${d.kind}.`, type: 'object' } }),
        },
        'x-kubernetes-group-version-kind': gvk,
      };
    }
    return { openapi: '3.0.0', info: { title: 'Kubernetes', version: 'v1.32.0' }, paths, components: { schemas } };
  };

  // ---- REST -----------------------------------------------------------------------------------------

  const wantsTable = (accept: string | undefined) => typeof accept === 'string' && /as=Table/.test(accept) && /g=meta\.k8s\.io/.test(accept);

  const asTable = (def: ResourceDef, objs: KObj[], q: URLSearchParams, listMeta: Record<string, unknown>, withColumns = true) => {
    const t = tableFor(def.resource);
    const include = q.get('includeObject') ?? 'Metadata';
    return {
      kind: 'Table',
      apiVersion: 'meta.k8s.io/v1',
      metadata: listMeta,
      columnDefinitions: withColumns ? t.columns : [],
      rows: objs.map((o) => ({
        cells: t.cells(o),
        ...(include === 'None' ? {} : { object: include === 'Object' ? o : { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata } }),
      })),
    };
  };

  const select = (def: ResourceDef, ns: string, q: URLSearchParams): KObj[] => {
    const labels = parseSelector(q.get('labelSelector') ?? undefined);
    const fields = fieldMatcher(q.get('fieldSelector') ?? undefined);
    const out: KObj[] = [];
    for (const o of store.values()) {
      if (o['kind'] !== def.kind || o['apiVersion'] !== apiVersionOf(def)) continue;
      if (ns && o.metadata.namespace !== ns) continue;
      if (labels && !labels((o.metadata['labels'] as Record<string, string>) ?? {})) continue;
      if (fields && !fields(o)) continue;
      out.push(o);
    }
    out.sort((a, b) => `${a.metadata.namespace ?? ''}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace ?? ''}/${b.metadata.name}`));
    return out;
  };

  /**
   * A response body as kube-apiserver's deferredResponseWriter writes it: held until it passes
   * 128 KiB (or ends); past that, gzip-compressed at level 1 when the client accepts gzip.
   */
  class DeferredBody {
    private held: string[] = [];
    private heldBytes = 0;
    private out: Writable | null = null;
    private readonly wantsGzip: boolean;

    constructor(
      private readonly res: ServerResponse,
      private readonly code: number,
      private readonly headers: Record<string, string>,
    ) {
      this.wantsGzip = opts.gzip !== false && acceptsGzip.get(res) === true;
    }

    async write(text: string): Promise<void> {
      if (this.out) {
        if (!this.out.write(text)) await once(this.out, 'drain');
        return;
      }
      this.held.push(text);
      this.heldBytes += Buffer.byteLength(text);
      if (this.heldBytes > GZIP_THRESHOLD) await this.commit();
    }

    end(text = ''): void {
      if (this.out) {
        this.out.end(text);
        return;
      }
      if (this.heldBytes + Buffer.byteLength(text) > GZIP_THRESHOLD) {
        this.held.push(text);
        void this.commit().then(() => this.out!.end());
        return;
      }
      this.res.writeHead(this.code, this.headers);
      this.res.end(this.held.join('') + text);
    }

    private async commit(): Promise<void> {
      const data = this.held.join('');
      this.held = [];
      if (this.wantsGzip) {
        this.res.writeHead(this.code, { ...this.headers, 'content-encoding': 'gzip', vary: 'Accept-Encoding' });
        const z = zlib.createGzip({ level: 1 });
        z.pipe(this.res);
        this.res.once('close', () => z.destroy());
        this.out = z;
        const rec = seenFor.get(this.res);
        if (rec) rec.responseEncoding = 'gzip';
      } else {
        this.res.writeHead(this.code, this.headers);
        this.out = this.res;
      }
      if (!this.out.write(data)) await once(this.out, 'drain');
    }
  }

  function send(res: ServerResponse, code: number, body: unknown, headers: Record<string, string> = {}): void {
    new DeferredBody(res, code, { 'content-type': 'application/json', 'audit-id': randomUUID(), 'cache-control': 'no-cache, private', ...headers }).end(JSON.stringify(body));
  }

  async function handleList(req: Request, res: ServerResponse, def: ResourceDef, ns: string): Promise<void> {
    const q = req.query;
    const all = select(def, ns, q);
    let start = 0;
    const cont = q.get('continue');
    if (cont) {
      try {
        const c = JSON.parse(Buffer.from(cont, 'base64url').toString('utf8')) as { start: number };
        start = c.start;
      } catch {
        throw new ApiError(400, 'BadRequest', 'continue key is not valid');
      }
    }
    const limit = Number(q.get('limit') ?? '0');
    const page = limit > 0 ? all.slice(start, start + limit) : all.slice(start);
    const next = limit > 0 && start + limit < all.length ? Buffer.from(JSON.stringify({ start: start + limit })).toString('base64url') : undefined;
    const listMeta: Record<string, unknown> = { resourceVersion: String(rv), ...(next ? { continue: next, remainingItemCount: all.length - start - limit } : {}) };
    if (protobufFor.has(def.resource)) {
      res.writeHead(200, { 'content-type': 'application/vnd.kubernetes.protobuf' });
      res.end(Buffer.concat([Buffer.from('k8s\u0000'), Buffer.from(JSON.stringify(page))]));
      return;
    }
    const out = new DeferredBody(res, 200, { 'content-type': 'application/json', 'audit-id': randomUUID(), 'cache-control': 'no-cache, private' });
    if (wantsTable(req.headers['accept'])) {
      out.end(JSON.stringify(asTable(def, page, q, listMeta)));
      return;
    }
    // Streamed in pieces, item by item, as the real server's encoder does for large lists.
    await out.write(`{"kind":"${def.kind}List","apiVersion":"${apiVersionOf(def)}","metadata":${JSON.stringify(listMeta)},"items":[`);
    let buf = '';
    for (let i = 0; i < page.length; i++) {
      buf += (i ? ',' : '') + JSON.stringify(page[i]);
      if (buf.length > 64 * 1024) {
        await out.write(buf);
        buf = '';
      }
    }
    out.end(buf + ']}');
  }

  function handleWatch(req: Request, res: ServerResponse, def: ResourceDef, ns: string, name: string): void {
    const q = req.query;
    const labels = parseSelector(q.get('labelSelector') ?? undefined);
    const fields = fieldMatcher(q.get('fieldSelector') ?? undefined);
    const match = (o: KObj) => (!name || o.metadata.name === name) && (!labels || labels((o.metadata['labels'] as Record<string, string>) ?? {})) && (!fields || fields(o));
    const table = wantsTable(req.headers['accept']);
    res.writeHead(200, { 'content-type': 'application/json', 'audit-id': randomUUID(), 'cache-control': 'no-cache, private' });
    res.flushHeaders();
    let first = true;
    const w: Watcher = {
      def,
      namespace: ns,
      match,
      send(type, o) {
        if (type === '__close__') {
          res.end();
          return;
        }
        const object = table ? asTable(def, [o], q, { resourceVersion: String(o.metadata.resourceVersion) }, first) : o;
        first = false;
        res.write(JSON.stringify({ type, object }) + '\n');
      },
    };
    const from = q.get('resourceVersion');
    if (!from || from === '0') {
      for (const o of select(def, ns, new URLSearchParams())) if (match(o)) w.send('ADDED', o);
    } else {
      // What changed after `from` (a client that listed, then watches: an event between the two
      // must not be lost); older than the window kept → 410 Gone, and the client lists again.
      const since = Number(from);
      if (!Number.isFinite(since) || since < historyFloor) {
        res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${from} (${historyFloor})`, reason: 'Expired', code: 410 } }) + '\n');
        return;
      }
      for (const e of history) if (e.rv > since && e.def === def && (!ns || e.o.metadata.namespace === ns) && match(e.o)) w.send(e.type, e.o);
    }
    watchers.add(w);
    const timeout = Number(q.get('timeoutSeconds') ?? '0');
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : null;
    res.on('close', () => {
      watchers.delete(w);
      if (timer) clearTimeout(timer);
    });
  }

  async function handleResource(req: Request, res: ServerResponse, def: ResourceDef, ns: string, name: string, sub: string, watch: boolean): Promise<void> {
    const q = req.query;
    if (def.namespaced && !ns && name) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    if (def.namespaced && ns && !store.has(keyOf(RESOURCES[0]!, '', ns)) && req.method !== 'GET') throw new ApiError(404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' });
    const isWatch = watch || ['true', '1'].includes(q.get('watch') ?? '');
    if (req.method === 'GET' && (isWatch || !name)) {
      if (isWatch) return handleWatch(req, res, def, ns, name);
      return handleList(req, res, def, ns);
    }
    const key = keyOf(def, def.namespaced ? ns : '', name);
    const cur = name ? store.get(key) : undefined;
    const notFound = () => new ApiError(404, 'NotFound', `${def.resource}${def.group ? '.' + def.group : ''} "${name}" not found`, { name, ...(def.group ? { group: def.group } : {}), kind: def.resource });
    if (sub === 'log') return handleLog(req, res, ns, name, cur);
    if (sub && sub !== 'status') throw new ApiError(400, 'BadRequest', `subresource ${sub} needs a WebSocket upgrade`);
    const readBody = async (): Promise<unknown> => {
      const ct = String(req.headers['content-type'] ?? 'application/json');
      if (ct.startsWith('application/vnd.kubernetes.protobuf')) return decodeProtobufBody(await req.body());
      if (!ct.includes('json')) throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (the stand-in does not decode ${ct.split(';')[0]})`);
      try {
        return JSON.parse((await req.body()).toString('utf8'));
      } catch {
        throw new ApiError(400, 'BadRequest', 'the request body is not valid JSON');
      }
    };
    const table = wantsTable(req.headers['accept']);
    const out = (code: number, o: KObj) => {
      if (protobufFor.has(def.resource)) {
        res.writeHead(code, { 'content-type': 'application/vnd.kubernetes.protobuf' });
        res.end(Buffer.concat([Buffer.from('k8s\u0000'), Buffer.from(JSON.stringify(o))]));
        return;
      }
      send(res, code, table ? asTable(def, [o], q, { resourceVersion: String(o.metadata.resourceVersion) }) : o);
    };
    switch (req.method) {
      case 'GET':
      case 'HEAD':
        if (!cur) throw notFound();
        return out(200, cur);
      case 'POST': {
        if (name) throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
        const o = normalize(def, await readBody(), ns);
        if (store.has(keyOf(def, def.namespaced ? ns : '', o.metadata.name))) throw new ApiError(409, 'AlreadyExists', `${def.resource} "${o.metadata.name}" already exists`, { name: o.metadata.name, kind: def.resource });
        o.metadata.uid = randomUUID();
        o.metadata.creationTimestamp = ts(Date.now());
        if (q.get('dryRun') === 'All') return out(201, o);
        return out(201, save(def, o, 'ADDED'));
      }
      case 'PUT': {
        const body = await readBody();
        const o = normalize(def, body, ns);
        if (o.metadata.name !== name) throw new ApiError(400, 'BadRequest', 'the name of the object does not match the name on the URL');
        if (!cur) throw notFound();
        if (o.metadata.resourceVersion !== undefined && o.metadata.resourceVersion !== cur.metadata['resourceVersion']) {
          throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${def.resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, kind: def.resource });
        }
        o.metadata.uid = cur.metadata['uid'];
        o.metadata.creationTimestamp = cur.metadata['creationTimestamp'];
        return out(200, save(def, o, 'MODIFIED'));
      }
      case 'PATCH': {
        if (!cur) throw notFound();
        const ct = String(req.headers['content-type'] ?? '');
        let patched: unknown;
        const raw = await req.body();
        let patch: unknown;
        try {
          patch = JSON.parse(raw.toString('utf8'));
        } catch {
          throw new ApiError(400, 'BadRequest', 'the patch is not valid JSON');
        }
        if (ct.startsWith('application/json-patch+json')) patched = jsonPatch(cur, patch);
        else if (ct.startsWith('application/merge-patch+json') || ct.startsWith('application/strategic-merge-patch+json')) patched = mergePatch(cur, patch);
        else throw new ApiError(415, 'UnsupportedMediaType', `the stand-in does not support patch type ${ct}`);
        const o = normalize(def, patched, ns);
        o.metadata.uid = cur.metadata['uid'];
        o.metadata.creationTimestamp = cur.metadata['creationTimestamp'];
        if (q.get('dryRun') === 'All') return out(200, o);
        return out(200, save(def, o, 'MODIFIED'));
      }
      case 'DELETE': {
        if (!name) {
          const gone = select(def, ns, q);
          for (const o of gone) {
            store.delete(keyOf(def, o.metadata.namespace ?? '', o.metadata.name));
            o.metadata.resourceVersion = String(++rv);
            notify(def, 'DELETED', o);
          }
          send(res, 200, { kind: `${def.kind}List`, apiVersion: apiVersionOf(def), metadata: { resourceVersion: String(rv) }, items: gone });
          return;
        }
        if (!cur) throw notFound();
        store.delete(key);
        const o = { ...cur, metadata: { ...cur.metadata, resourceVersion: String(++rv), deletionTimestamp: ts(Date.now()), deletionGracePeriodSeconds: 0 } } as KObj;
        notify(def, 'DELETED', o);
        return out(200, o);
      }
      default:
        throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }
  }

  function handleLog(req: Request, res: ServerResponse, ns: string, name: string, pod: KObj | undefined): void {
    if (!pod) throw new ApiError(404, 'NotFound', `pods "${name}" not found`, { name, kind: 'pods' });
    const container = req.query.get('container');
    const cs = containersOf(pod).map((c) => String(c['name']));
    if (container && !cs.includes(container)) throw new ApiError(400, 'BadRequest', `container ${container} is not valid for pod ${name}`);
    if (!container && cs.length > 1) throw new ApiError(400, 'BadRequest', `a container name must be specified for pod ${name}, choose one of: [${cs.join(' ')}]`);
    const k = `${ns}/${name}`;
    let lines = logs.get(k) ?? [];
    const tail = req.query.get('tailLines');
    if (tail !== null) lines = lines.slice(Math.max(0, lines.length - Number(tail)));
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-cache, private' });
    res.write(lines.map((l) => l + '\n').join(''));
    if (!['true', '1'].includes(req.query.get('follow') ?? '')) {
      res.end();
      return;
    }
    res.flushHeaders();
    const f = (line: string) => res.write(line + '\n');
    const set = logFollowers.get(k) ?? new Set();
    set.add(f);
    logFollowers.set(k, set);
    const stop = () => set.delete(f);
    res.on('close', stop);
    const w: Watcher = { def: RESOURCES[1]!, namespace: ns, match: (o) => o.metadata.name === name, send: (type) => (type === 'DELETED' || type === '__close__' ? res.end() : undefined) };
    watchers.add(w);
    res.on('close', () => watchers.delete(w));
  }

  async function route(req: Request, res: ServerResponse): Promise<void> {
    const p = req.path;
    const seg = p.split('/').filter(Boolean).map(decodeURIComponent);
    if (p === '/version') {
      return send(res, 200, { major: '1', minor: '32', gitVersion: 'v1.32.0', gitCommit: 'standin', gitTreeState: 'clean', buildDate: '2024-12-11T00:00:00Z', goVersion: 'go1.23.3', compiler: 'gc', platform: 'linux/amd64' });
    }
    if (p === '/api') return send(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `127.0.0.1:${api.port}` }] });
    if (p === '/apis') {
      return send(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: [{ name: 'apps', versions: [{ groupVersion: 'apps/v1', version: 'v1' }], preferredVersion: { groupVersion: 'apps/v1', version: 'v1' } }] });
    }
    if (p === '/api/v1') return send(res, 200, resourceList('', 'v1'));
    if (p === '/apis/apps') return send(res, 200, { kind: 'APIGroup', apiVersion: 'v1', name: 'apps', versions: [{ groupVersion: 'apps/v1', version: 'v1' }], preferredVersion: { groupVersion: 'apps/v1', version: 'v1' } });
    if (p === '/apis/apps/v1') return send(res, 200, resourceList('apps', 'v1'));
    if (p === '/openapi/v3') return send(res, 200, openapiV3Root());
    if (p === '/openapi/v3/api/v1') return send(res, 200, openapiV3Doc('', 'v1'));
    if (p === '/openapi/v3/apis/apps/v1') return send(res, 200, openapiV3Doc('apps', 'v1'));
    if (seg[0] === 'api' || seg[0] === 'apis') {
      let rest = seg.slice(1);
      let group = '';
      if (seg[0] === 'apis') {
        group = rest[0] ?? '';
        rest = rest.slice(1);
      }
      const version = rest[0] ?? '';
      rest = rest.slice(1);
      let watch = false;
      if (rest[0] === 'watch') {
        watch = true;
        rest = rest.slice(1);
      }
      let ns = '';
      if (rest[0] === 'namespaces' && rest.length >= 3) {
        ns = rest[1]!;
        rest = rest.slice(2);
      }
      const [resource, name = '', sub = ''] = rest;
      const def = defOf(group, version, resource ?? '');
      if (!def || rest.length > 3) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
      return handleResource(req, res, def, def.namespaced ? ns : '', name, sub, watch);
    }
    throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
  }

  // ---- exec / attach / portforward over WebSocket ----------------------------------------------------

  const CHANNEL_PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'];
  // The subprotocol: the first offered one this server speaks, in the client's order.
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, handleProtocols: (p: Set<string>) => [...p].find((x) => CHANNEL_PROTOCOLS.includes(x) || x === 'portforward.k8s.io') ?? false });

  function streamSession(ws: WebSocket, protocol: string, q: URLSearchParams, kind: 'exec' | 'attach'): void {
    const v5 = protocol === 'v5.channel.k8s.io';
    const sendCh = (ch: number, data: Buffer | string) => {
      if (ws.readyState === ws.OPEN) ws.send(Buffer.concat([Buffer.from([ch]), Buffer.isBuffer(data) ? data : Buffer.from(data)]));
    };
    const finish = (code: number | null, err?: string) => {
      const st =
        code === 0
          ? { metadata: {}, status: 'Success' }
          : err
            ? { metadata: {}, status: 'Failure', message: err, reason: 'InternalError', code: 500 }
            : { metadata: {}, status: 'Failure', message: `command terminated with non-zero exit code: error executing command [${q.getAll('command').join(' ')}], exit code ${code ?? 1}`, reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: String(code ?? 1) }] } };
      sendCh(3, JSON.stringify(st));
      ws.close(1000);
    };
    const tty = ['true', '1'].includes(q.get('tty') ?? '');
    if (kind === 'attach') {
      ws.on('message', (m: Buffer) => {
        if (m[0] === 0) sendCh(1, m.subarray(1));
        else if (v5 && m[0] === 255) finish(0);
      });
      return;
    }
    const argv = q.getAll('command');
    if (argv.length === 0) return finish(null, 'you must specify at least one command for the container');
    const env = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', TERM: 'xterm', LANG: 'C.UTF-8' };
    if (tty) {
      let p: pty.IPty;
      try {
        p = pty.spawn(argv[0]!, argv.slice(1), { cwd: '/tmp', env, uid, gid, cols: 80, rows: 24 });
      } catch (e) {
        return finish(null, `exec failed: ${(e as Error).message}`);
      }
      children.add(p);
      p.onData((d) => sendCh(1, d));
      p.onExit(({ exitCode }) => {
        children.delete(p);
        setTimeout(() => finish(exitCode), 20);
      });
      ws.on('message', (m: Buffer) => {
        if (m[0] === 0) p.write(m.subarray(1).toString('utf8'));
        else if (m[0] === 4) {
          try {
            const r = JSON.parse(m.subarray(1).toString('utf8')) as { Width: number; Height: number };
            if (r.Width > 0 && r.Height > 0) p.resize(r.Width, r.Height);
          } catch {
            /* a bad resize message is ignored, as the kubelet does */
          }
        }
      });
      ws.on('close', () => p.kill());
      return;
    }
    const child = spawn(argv[0]!, argv.slice(1), { cwd: '/tmp', env, uid, gid, stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(child);
    let exited = false;
    child.on('error', (e) => {
      exited = true;
      finish(null, `exec failed: ${e.message}`);
    });
    child.stdout!.on('data', (d: Buffer) => sendCh(1, d));
    child.stderr!.on('data', (d: Buffer) => sendCh(2, d));
    child.stdin!.on('error', () => undefined);
    child.on('close', (code) => {
      children.delete(child);
      if (!exited) finish(code);
    });
    if (!['true', '1'].includes(q.get('stdin') ?? '')) child.stdin!.end();
    ws.on('message', (m: Buffer) => {
      if (m[0] === 0) child.stdin!.write(m.subarray(1));
      else if (v5 && m[0] === 255 && m[1] === 0) child.stdin!.end();
    });
    ws.on('close', () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
  }

  function portForward(ws: WebSocket, q: URLSearchParams): void {
    const ports = (q.getAll('ports').join(',') || '').split(',').filter(Boolean).map(Number);
    ports.forEach((port, i) => {
      const data = 2 * i;
      const sock = net.connect(port, '127.0.0.1');
      sockets.add(sock);
      const portBytes = Buffer.from([port & 0xff, port >> 8]);
      ws.send(Buffer.concat([Buffer.from([data]), portBytes]));
      ws.send(Buffer.concat([Buffer.from([data + 1]), portBytes]));
      sock.on('data', (d) => ws.readyState === ws.OPEN && ws.send(Buffer.concat([Buffer.from([data]), d])));
      sock.on('error', (e) => ws.readyState === ws.OPEN && ws.send(Buffer.concat([Buffer.from([data + 1]), Buffer.from(`error forwarding port ${port}: ${e.message}`)])));
      sock.on('close', () => {
        sockets.delete(sock);
        if (ws.readyState === ws.OPEN) ws.close(1000);
      });
      // The server's first frame on each channel carries the port; the client's frames are data.
      ws.on('message', (m: Buffer) => {
        if (m[0] === data && m.length > 1) sock.write(m.subarray(1));
      });
      ws.on('close', () => sock.destroy());
    });
  }

  const server = http2.createSecureServer({ key: certs.key, cert: certs.cert, ca: certs.ca, allowHTTP1: true, requestCert: true, rejectUnauthorized: false });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const fail = (e: ApiError) => {
      const body = JSON.stringify(status(e.code, e.reason, e.message, e.details));
      socket.end(`HTTP/1.1 ${e.code} ${e.reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    };
    try {
      const u = new URL(req.url ?? '/', 'https://standin');
      const who = authenticate(req.headers, socket as TLSSocket);
      saw({ method: req.method ?? 'GET', url: req.url ?? '', user: who.user, impersonateUser: req.headers['impersonate-user'] as string | undefined, impersonateGroups: who.groups, accept: req.headers['accept'], httpVersion: req.httpVersion });
      const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/(exec|attach|portforward)$/.exec(u.pathname);
      if (!m) throw new ApiError(400, 'BadRequest', 'upgrade request not supported');
      if ((req.headers['upgrade'] ?? '').toLowerCase() !== 'websocket') throw new ApiError(400, 'BadRequest', `the stand-in speaks WebSocket only (Upgrade: ${String(req.headers['upgrade'])})`);
      const pod = store.get(keyOf(RESOURCES[1]!, m[1]!, m[2]!));
      if (!pod) throw new ApiError(404, 'NotFound', `pods "${m[2]}" not found`, { name: m[2], kind: 'pods' });
      const offered = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim());
      const protocols = m[3] === 'portforward' ? ['portforward.k8s.io', 'v4.channel.k8s.io'] : CHANNEL_PROTOCOLS;
      const chosen = offered.find((p) => protocols.includes(p));
      if (!chosen) throw new ApiError(400, 'BadRequest', `no supported subprotocol among ${JSON.stringify(offered)}`);
      wss.handleUpgrade(req, socket, head, (ws) => {
        if (ws.protocol !== chosen) {
          ws.close(1002);
          return;
        }
        if (m[3] === 'portforward') portForward(ws, u.searchParams);
        else streamSession(ws, chosen, u.searchParams, m[3] as 'exec' | 'attach');
      });
    } catch (e) {
      fail(e instanceof ApiError ? e : new ApiError(500, 'InternalError', (e as Error).message));
    }
  });

  server.on('request', (hreq: IncomingMessage, res: ServerResponse) => {
    const u = new URL(hreq.url ?? '/', 'https://standin');
    let bodyP: Promise<Buffer> | null = null;
    const body = () =>
      (bodyP ??= new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        hreq.on('data', (c: Buffer) => chunks.push(c));
        hreq.on('end', () => resolve(Buffer.concat(chunks)));
        hreq.on('error', reject);
      }));
    let user = '';
    void (async () => {
      try {
        const who = authenticate(hreq.headers, hreq.socket as TLSSocket);
        user = who.user;
        const ae = hreq.headers['accept-encoding'];
        acceptsGzip.set(res, gzipAccepted(ae));
        const rec = saw({ method: hreq.method ?? 'GET', url: hreq.url ?? '', user, impersonateUser: hreq.headers['impersonate-user'] as string | undefined, impersonateGroups: who.groups, accept: hreq.headers['accept'], ...(ae !== undefined ? { acceptEncoding: String(ae) } : {}), contentType: hreq.headers['content-type'], httpVersion: hreq.httpVersion, ...(hreq.headers['x-portcullis-reason'] !== undefined ? { portcullisReason: String(hreq.headers['x-portcullis-reason']) } : {}) });
        seenFor.set(res, rec);
        await route({ method: hreq.method ?? 'GET', path: u.pathname, query: u.searchParams, headers: hreq.headers, user, body }, res);
      } catch (e) {
        if (!(e instanceof ApiError)) {
          if (!res.headersSent) send(res, 500, status(500, 'InternalError', (e as Error).message));
          else res.destroy();
          return;
        }
        if (e.code === 401) saw({ method: hreq.method ?? 'GET', url: hreq.url ?? '', user: '', impersonateGroups: [], httpVersion: hreq.httpVersion });
        if (!res.headersSent) send(res, e.code, status(e.code, e.reason, e.message, e.details));
        else res.destroy();
      }
    })();
  });
  server.on('sessionError', () => undefined);
  server.on('secureConnection', (s: TLSSocket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  api.port = (server.address() as net.AddressInfo).port;
  api.url = `https://127.0.0.1:${api.port}`;
  return api;
}
