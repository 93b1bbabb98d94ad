// The stand-in API server (test/harness/kubeapi.ts) in its own process, for bench/kube.bench.ts:
// so that the bastion and the API server do not share one event loop. Driven over IPC:
// {seed: {pods, services, podsPerList}} → {url, ca, token}; {update: name} modifies a pod (a watch
// event); {cpu: true} → {cpu: µs of CPU used so far}; {close: true} stops.
import { startKubeApi } from '../test/harness/kubeapi.js';

const api = await startKubeApi();

function pod(ns: string, name: string, i: number): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: { app: 'bench', shard: String(i % 16) }, annotations: { 'bench/index': String(i) } },
    spec: {
      containers: [
        { name: 'app', image: 'registry.example.com/app:1.2.3', env: [{ name: 'MODE', value: 'production' }, { name: 'LOG_LEVEL', value: 'info' }, { name: 'REGION', value: 'eu-west-1' }], ports: [{ containerPort: 8080, protocol: 'TCP' }], resources: { requests: { cpu: '100m', memory: '128Mi' } } },
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
