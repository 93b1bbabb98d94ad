// Kubernetes API proxy: an HTTPS front kubectl talks to, every API call decided by its Kubernetes
// attributes before it is forwarded, Secrets and detected values masked in flight, exec/attach
// streams recorded. See server.ts.
export { startKubeProxy, type KubeProxy, type KubeProxyOptions } from './server.js';
export { KubeUpstream, type KubeTarget } from './upstream.js';
export { kubeStatus, type KubeStatus } from './status.js';
