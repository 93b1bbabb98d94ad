// Types for the two things the SSH proxy takes from outside ssh2's public API (see remote.ts and
// server.ts for why): its packet sender, and ssh2's optional CPU feature probe.
declare module 'ssh2/lib/protocol/utils.js' {
  export function sendPacket(proto: unknown, packet: Buffer, bypass?: boolean): boolean;
}

declare module 'cpu-features' {
  const features: () => { arch?: string; flags?: Record<string, boolean> };
  export default features;
}
