// The stand-in API server (test/harness/kubeapi.ts) in its own process, for bench/kube.bench.ts:
// so that the bastion and the API server do not share one event loop. Driven over IPC:
// {seed: {pods, services, podsPerList}} → {url, ca, token}; {update: name} modifies a pod (a watch
// event); {cpu: true} → {cpu: µs of CPU used so far}; {close: true} stops.
import { startKubeApi } from '../test/harness/kubeapi.js';

const api = await startKubeApi();

/**
 * Bench pods come from 50 "Deployments": replicas share their pod template (env included), as they
 * do in a cluster, and templates differ — so per-value caches in the masking path see what they
 * would see on a real list, not one env repeated 5,000 times. One template in five carries a
 * credential in a URL (masked by the secret_assignment detector), one in ten an e-mail address.
 */
const REGIONS = ['eu-west-1', 'eu-central-1', 'us-east-1', 'us-west-2', 'ap-south-1'];
function templateEnv(d: number): { name: string; value: string }[] {
  const env = [
    { name: 'MODE', value: d % 3 === 0 ? 'staging' : 'production' },
    { name: 'LOG_LEVEL', value: ['info', 'debug', 'warn'][d % 3]! },
    { name: 'REGION', value: REGIONS[d % REGIONS.length]! },
    { name: 'SERVICE_NAME', value: `svc-${d}` },
    { name: 'FEATURE_FLAGS', value: `checkout-v${d % 7},search-${d % 4 === 0 ? 'on' : 'off'},cache-ttl=${30 + d}` },
  ];
  if (d % 5 === 0) env.push({ name: 'DATABASE_URL', value: `postgres://app${d}:pw-${(d * 7919).toString(36)}-x@db-${d}.bulk.svc:5432/app` });
  if (d % 10 === 3) env.push({ name: 'ALERT_EMAIL', value: `oncall-${d}@example.com` });
  return env;
}

function pod(ns: string, name: string, i: number): Record<string, unknown> {
  const d = i % 50;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: { app: `app-${d}`, shard: String(i % 16) }, annotations: { 'bench/index': String(i) } },
    spec: {
      containers: [
        { name: 'app', image: `registry.example.com/app-${d}:1.2.${d % 9}`, env: templateEnv(d), ports: [{ containerPort: 8080, protocol: 'TCP' }], resources: { requests: { cpu: '100m', memory: '128Mi' } } },
        { name: 'sidecar', image: 'registry.example.com/proxy:2.0', env: [{ name: 'UPSTREAM', value: 'http://127.0.0.1:8080' }] },
      ],
      restartPolicy: 'Always',
    },
  };
}

process.on('message', (m: { seed?: { pods: number; services: number; kubectlPods: number }; update?: string; cpu?: boolean; close?: boolean }) => {
  if (m.seed) {
    api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bulk' } });
    for (let i = 0; i < m.seed.kubectlPods; i++) api.put(pod('default', `web-${i}`, i));
    for (let i = 0; i < m.seed.pods; i++) api.put(pod('bulk', `p-${String(i).padStart(5, '0')}`, i));
    for (let i = 0; i < m.seed.services; i++) {
      api.put({ apiVersion: 'v1', kind: 'Service', metadata: { name: `s-${String(i).padStart(5, '0')}`, namespace: 'bulk', labels: { app: 'bench' } }, spec: { selector: { app: 'bench' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'ClusterIP', clusterIP: `10.96.${(i >> 8) & 255}.${i & 255}` } });
    }
    process.send!({ url: api.url, ca: api.ca, token: api.token });
  } else if (m.update) {
    const cur = api.get('pods', 'default', m.update)!;
    const md = cur['metadata'] as Record<string, unknown>;
    api.put({ ...cur, metadata: { ...md, annotations: { ...(md['annotations'] as Record<string, string>), 'bench/touched': String(Date.now()) } } });
    process.send!({ updated: m.update });
  } else if (m.cpu) {
    const u = process.cpuUsage();
    process.send!({ cpu: u.user + u.system });
  } else if (m.close) {
    void api.close().then(() => process.exit(0));
  }
});
process.send!({ ready: true });
