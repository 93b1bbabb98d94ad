// The masks of an SSH session's byte streams. A terminal stream has no columns and no per-command
// boundaries the masker could rely on, so a session masks with every detector mask of every rule
// that can apply to it (protocol ssh, its target, its identity — whatever the rule's facts say),
// plus the default-on detectors (Masker's defaults): more masking, never less.
import type { CompiledPolicy } from '../../policy/compile.js';
import type { Identity, MaskSpec, PolicyRequest } from '../../policy/types.js';
import { Masker } from '../../masking/index.js';

export function sessionMasks(policy: CompiledPolicy, identity: Identity, target: string): MaskSpec[] {
  const probe: PolicyRequest = { protocol: 'ssh', identity, target };
  const out = new Map<string, MaskSpec>();
  for (const r of policy.byProtocol.get('ssh') ?? []) {
    if (!r.requestConds.every((c) => c.test(probe))) continue;
    r.masks.forEach((m, i) => {
      if (m.detector !== undefined && !out.has(r.maskKeys[i]!)) out.set(r.maskKeys[i]!, m);
    });
  }
  return [...out.values()];
}

export function sessionMasker(policy: CompiledPolicy, identity: Identity, target: string, hmacKey: Buffer | string | undefined): Masker {
  return new Masker({ masks: sessionMasks(policy, identity, target), hmacKey, defaultDetectors: true });
}
