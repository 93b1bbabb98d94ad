// Kubernetes objects through the masker: the policy's resource masks (`Masker.maskKubeObject`:
// Secret data/stringData, ...) and the detectors on the fields where workloads keep configuration
// values: ConfigMap `data`/`binaryData` values and the `env[].value` of every container of a pod
// spec (Pods, and the pod templates of Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs,
// CronJobs, ReplicationControllers, PodTemplates). Works on single objects, Lists, Tables
// (`rows[].object`) and watch events alike, and inside the last-applied-configuration annotation.
import type { Masker } from './masker.js';
import { redactMarker } from './strategies.js';

/** Resources (plural) whose objects carry values the detectors look at. */
export const DETECTOR_RESOURCES: ReadonlySet<string> = new Set([
  'configmaps',
  'pods',
  'podtemplates',
  'deployments',
  'replicasets',
  'statefulsets',
  'daemonsets',
  'jobs',
  'cronjobs',
  'replicationcontrollers',
]);

export const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';
const MAX_DEPTH = 64;

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Does a response for `resource` need masking (resource masks or detectors)? */
export function kubeResourceMasked(masker: Masker, resource: string): boolean {
  return masker.masksResource(resource) || DETECTOR_RESOURCES.has(resource);
}

/**
 * Masks a decoded Kubernetes response body for `resource` (plural). Returns a new value and leaves
 * the input alone, unless `owned` (the caller just parsed it and keeps no reference): then the
 * input may be modified in place. Never returns the input unmasked on an internal error: the
 * result is then a Status naming the failure. `root`: the body is one object even without
 * `metadata` (the content of a last-applied-configuration annotation).
 */
export function maskKube(masker: Masker, resource: string, body: unknown, owned = false, root = false): unknown {
  let out = masker.masksResource(resource) ? masker.maskKubeObject(resource, body) : body;
  if (DETECTOR_RESOURCES.has(resource)) {
    try {
      out = detect(masker, resource, out === body && !owned ? structuredClone(body) : out, 0, root);
    } catch {
      return { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: redactMarker('masking-error') };
    }
  }
  return out;
}

function maskString(masker: Masker, v: unknown): unknown {
  return typeof v === 'string' ? masker.maskText(v) : v;
}

/** Masks the string values of a map (ConfigMap data; base64 values: binaryData) in place. */
export function maskMap(masker: Masker, m: unknown, base64: boolean): void {
  if (!isObj(m)) return;
  for (const [k, v] of Object.entries(m)) {
    if (typeof v !== 'string') continue;
    if (!base64) {
      m[k] = masker.maskText(v);
      continue;
    }
    const plain = Buffer.from(v, 'base64').toString('utf8');
    const masked = masker.maskText(plain);
    if (masked !== plain) m[k] = Buffer.from(masked, 'utf8').toString('base64');
  }
}

function maskPodSpec(masker: Masker, spec: unknown): void {
  if (!isObj(spec)) return;
  for (const list of ['containers', 'initContainers', 'ephemeralContainers']) {
    const cs = spec[list];
    if (!Array.isArray(cs)) continue;
    for (const c of cs) {
      if (!isObj(c) || !Array.isArray(c['env'])) continue;
      for (const e of c['env'] as unknown[]) if (isObj(e) && 'value' in e) e['value'] = maskString(masker, e['value']);
    }
  }
}

/** The pod specs inside an object: a Pod's spec, a template's, a CronJob's job template's. */
function podSpecs(o: Obj): unknown[] {
  const out: unknown[] = [];
  const spec = o['spec'];
  if (isObj(spec)) {
    if (Array.isArray(spec['containers'])) out.push(spec);
    const tpl = spec['template'];
    if (isObj(tpl)) out.push(tpl['spec']);
    const jt = spec['jobTemplate'];
    if (isObj(jt) && isObj(jt['spec']) && isObj(jt['spec']['template'])) out.push(jt['spec']['template']['spec']);
  }
  const tpl = o['template']; // PodTemplate
  if (isObj(tpl)) out.push(tpl['spec']);
  return out;
}

/** Walks a response: every object with `metadata` is a Kubernetes object (and `root`: the top). */
function detect(masker: Masker, resource: string, v: unknown, depth: number, root = false): unknown {
  if (depth > MAX_DEPTH || typeof v !== 'object' || v === null) return v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = detect(masker, resource, v[i], depth + 1);
    return v;
  }
  const o = v as Obj;
  for (const [k, x] of Object.entries(o)) if (typeof x === 'object' && x !== null && k !== 'metadata') o[k] = detect(masker, resource, x, depth + 1);
  const md = o['metadata'];
  if (!isObj(md) && !root) return o;
  if (resource === 'configmaps') {
    maskMap(masker, o['data'], false);
    maskMap(masker, o['binaryData'], true);
  } else {
    for (const s of podSpecs(o)) maskPodSpec(masker, s);
  }
  const ann = isObj(md) ? md['annotations'] : undefined;
  if (isObj(ann) && typeof ann[LAST_APPLIED] === 'string') {
    try {
      // The annotation holds the applied object itself: masked as one, metadata or not.
      ann[LAST_APPLIED] = JSON.stringify(detect(masker, resource, JSON.parse(ann[LAST_APPLIED] as string), depth + 1, true));
    } catch {
      ann[LAST_APPLIED] = redactMarker('last-applied-configuration');
    }
  }
  return o;
}
