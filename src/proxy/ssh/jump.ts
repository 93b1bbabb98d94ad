// ProxyJump (`ssh -J agent@bastion target`). The agent's client opens a `direct-tcpip` channel
// to the destination it was given and speaks SSH inside it. When that destination is one of the
// bastion's SSH targets the bastion does not forward the bytes anywhere: it terminates the inner
// SSH connection itself — the channel is fed to the same per-connection handler as a TCP client
// (ssh2 `injectSocket`), which presents a host certificate for the target signed by the host CA
// (hostca.ts), authenticates the inner user through src/identity again, and runs every session of
// it through the same policy, recording and masking as `ssh agent+target@bastion`.
//
// Which destinations are jumps (anything else is a port forward, decided by policy: forward.ts):
//   1. host = a target's name (case-insensitive: OpenSSH lowercases host names) and port 22 —
//      `ssh -J demo-agent@bastion:2222 demo-agent@sandbox`;
//   2. host:port = the address of exactly one remote target (`ssh -J … -p 2201 user@10.0.0.5`);
//      an address shared by several targets is refused (the agent must use the target's name).
// The host certificate names the target (and, for remote targets, its configured host), so the
// agent's known_hosts needs only `@cert-authority * <host CA key>` (`portcullis ssh ca`).
// The inner user name is the identity (`demo-agent`, or `demo-agent+<the same target>`), and it
// must be the identity that logged in to the bastion for the jump.
import type { Duplex } from 'node:stream';
import type { Connection } from 'ssh2';
import type { SshTargetSpec } from './server.js';

const JUMP = Symbol('portcullis.jump');

export interface JumpInfo {
  target: string;
  /** Host certificate principals: the target name, then its configured host (remote targets). */
  principals: string[];
  /** Who logged in to the bastion for the jump (the inner login must be the same identity). */
  subject: string;
  /** The outer connection (for the audit trail). */
  outerConnection: string;
}

export type JumpDestination = { target: string; principals: string[] } | { refused: string } | null;

/** Is `host:port` (a direct-tcpip destination) a jump to one of the targets? */
export function jumpDestination(host: string, port: number, targets: ReadonlyMap<string, SshTargetSpec>): JumpDestination {
  const h = host.toLowerCase();
  const principals = (name: string, spec: SshTargetSpec) => [name, ...(spec.kind === 'remote' && spec.address && spec.address.host !== name ? [spec.address.host] : [])];
  if (port === 22) {
    for (const [name, spec] of targets) if (name.toLowerCase() === h) return { target: name, principals: principals(name, spec) };
  }
  const byAddress = [...targets].filter(([, s]) => s.kind === 'remote' && s.address && s.address.host.toLowerCase() === h && s.address.port === port);
  if (byAddress.length === 1) return { target: byAddress[0]![0], principals: principals(...byAddress[0]!) };
  if (byAddress.length > 1) return { refused: `${host}:${port} is the address of several targets (${byAddress.map(([n]) => n).join(', ')}): jump to the target's name instead` };
  return null;
}

/** Mark the channel stream as a jump before it is injected into the server. */
export function markJump(stream: Duplex, info: JumpInfo): void {
  (stream as Duplex & { [JUMP]?: JumpInfo })[JUMP] = info;
}

/** The jump an incoming connection carries (undefined: a direct TCP client). */
export function jumpOf(client: Connection): JumpInfo | undefined {
  const sock = (client as unknown as { _sock?: { [JUMP]?: JumpInfo } })._sock;
  return sock?.[JUMP];
}
