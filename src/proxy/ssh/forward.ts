// `direct-tcpip` channels (`ssh -L`, `ssh -W`): a TCP connection to host:port, opened from the
// target, once the policy allows it — a `forward` request (direction local) decided and audited
// by the core like any command. review holds the channel open request until an operator decides
// (the client just waits); deny refuses the channel (OpenSSH prints "administratively
// prohibited"). ProxyJump will hook in here: a destination that is itself an SSH target is to be
// terminated by the bastion instead of forwarded (issue #7, follow-up).
import type { Duplex } from 'node:stream';
import type { ServerChannel } from 'ssh2';
import type { Core } from '../../core/core.js';
import type { Logger } from '../../core/log.js';
import type { Identity, PolicyRequest } from '../../policy/types.js';
import type { Upstream } from './upstream.js';

export interface ForwardContext {
  core: Core;
  log: Logger;
  identity: Identity;
  target: string;
  remote: string;
  upstream(): Upstream;
  /** Aborted when the agent's connection goes away. */
  signal: AbortSignal;
}

export async function forwardLocal(ctx: ForwardContext, info: { srcIP: string; srcPort: number; destIP: string; destPort: number }, accept: () => ServerChannel, reject: () => void): Promise<void> {
  const req: PolicyRequest = { protocol: 'ssh', identity: ctx.identity, target: ctx.target, forward: { direction: 'local', host: info.destIP, port: info.destPort } };
  const { decision } = await ctx.core.decide(null, req);
  let allowed = decision.effect === 'allow';
  if (decision.effect === 'review') {
    const out = await ctx.core.hold(null, req, decision, () => undefined, ctx.signal).catch(() => ({ state: 'expired' as const }));
    allowed = out.state === 'approved';
  }
  if (!allowed || ctx.signal.aborted) {
    ctx.log.info('ssh forward refused', { remote: ctx.remote, subject: ctx.identity.subject, dest: `${info.destIP}:${info.destPort}`, rule: decision.rule });
    return reject();
  }
  let up: Duplex;
  try {
    up = await ctx.upstream().forward(info.destIP, info.destPort, { ip: info.srcIP, port: info.srcPort });
  } catch (e) {
    ctx.log.info('ssh forward failed at the target', { dest: `${info.destIP}:${info.destPort}`, error: (e as Error).message });
    return reject();
  }
  const ch = accept();
  const done = () => {
    up.destroy();
    ch.close();
  };
  ch.on('error', done);
  up.on('error', done);
  ch.pipe(up).on('finish', () => undefined);
  up.pipe(ch);
  ch.on('close', done);
  up.on('close', done);
}
