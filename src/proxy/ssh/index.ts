export { startSshProxy, type SshProxy, type SshProxyOptions, type SshTargetSpec } from './server.js';
export { sshTargetsFromConfig } from './targets.js';
