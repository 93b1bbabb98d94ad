// The SSH bastion front.
//
// Design note
// -----------
// - Front: an ssh2 `Server` with the bastion's persistent host keys (hostkeys.ts) and modern
//   algorithms only (curve25519/ECDH/DH ≥ 2048 with SHA-2, AEAD or CTR+ETM ciphers, SHA-2 MACs,
//   ed25519 / rsa-sha2 host keys). Logins are public keys or OpenSSH user certificates, verified
//   by src/identity (which audits every refusal); the proxy only checks the session signature.
// - Routing: the user name is `identity+target` (routing.ts); without a target the identity's
//   default target from the config is used (`ssh.default_targets`).
// - Per connection: `handleConnection` is fed by the listener, and by `injectSocket(stream)` for
//   any duplex stream — the way a ProxyJump (`direct-tcpip` terminated by the bastion) will feed
//   the inner connection through exactly the same code (jump.ts: which destinations are jumps;
//   hostca.ts: the host certificate the inner connection presents). Other `direct-tcpip` and
//   `tcpip-forward` are port forwards decided by policy (forward.ts); the sftp subsystem is
//   proxied op by op (sftp.ts); streamlocal, agent forwarding and X11 are refused.
// - Per session channel (session.ts): one core session (audited), one asciicast recording, the
//   command decided (gate.ts) before the target sees anything, the target's output masked
//   (output.ts) before it reaches the agent and the recording. Exec input is data; a terminal is
//   read with a headless xterm (linetracker.ts) and Enter is held until the line is decided
//   (terminal.ts); a shell without a terminal takes its stdin as a script (plain.ts).
// - Targets implement one upstream abstraction (upstream.ts): local programs (local.ts, node-pty)
//   and remote hosts over an ssh2 client (remote.ts) with the target's key or a bastion-issued
//   short-lived certificate; remote host keys are pinned or learned once (knownhosts.ts).
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';
import type { AuthContext, CipherAlgorithm, Connection, ServerConfig } from 'ssh2';
import type { Core } from '../../core/core.js';
import type { Logger } from '../../core/log.js';
import type { SshCredentials } from '../../identity/credentials.js';
import type { IdentityService, SshAuthInfo } from '../../identity/index.js';
import { isIdentityError } from '../../identity/index.js';
import { sshMpint, sshString, verifySshSignature, normalizeAddress } from '../../identity/ssh-wire.js';
import { CERT_ALGORITHMS } from '../../identity/ssh-cert.js';
import { initFacts } from '../../policy/actions.js';
import { PortcullisError } from '../../policy/types.js';
import { localForward, remoteForwardRequest, type ForwardContext } from './forward.js';
import { HostCertificates, loadHostCa, presentHostCertificate, type HostCa } from './hostca.js';
import { loadHostKeys, type HostKey } from './hostkeys.js';
import { jumpDestination, jumpOf, markJump } from './jump.js';
import { KnownHosts } from './knownhosts.js';
import { LocalTarget } from './local.js';
import { RemoteTarget } from './remote.js';
import { parseLogin, resolveTarget } from './routing.js';
import { attachSession, type ConnectionContext, type SessionLimits } from './session.js';
import type { Upstream } from './upstream.js';
import { join } from 'node:path';

const { Server } = ssh2;

export type SshTargetSpec =
  | { kind: 'local'; shell?: string; cwd: string; user?: string }
  | {
      kind: 'remote';
      /** The host's configured address (a ProxyJump to host:port reaches this target). */
      address?: { host: string; port: number };
      /** Upstream credentials for one login (a fresh certificate each time when the CA covers the target). */
      credentials: (c: { subject: string; connection: string }) => SshCredentials;
    };

export interface SshProxyOptions {
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** Listen port (default 2222; 0 picks a free one). */
  port?: number;
  dataDir: string;
  log: Logger;
  identity: Pick<IdentityService, 'verifySshPublicKey'>;
  /** The bastion's masking HMAC key (masks with strategy `hash`). */
  hmacKey?: Buffer | string;
  targets: ReadonlyMap<string, SshTargetSpec>;
  /** identity → target when the user name names none (`*`: everyone else). */
  defaultTargets?: ReadonlyMap<string, string>;
  session?: SessionLimits;
  /** Login timeout (ms, default 30 s). */
  loginTimeoutMs?: number;
}

export interface SshProxy {
  readonly host: string;
  readonly port: number;
  readonly hostKeys: readonly HostKey[];
  /** The CA of the host certificates presented to ProxyJump clients. */
  readonly hostCa: HostCa;
  /** Serve one SSH connection arriving on any duplex stream (a jump, a test). */
  injectSocket(stream: Duplex, remote?: string): void;
  connections(): number;
  /** Lines for the start-up banner (what was prepared for local targets). */
  readonly notes: readonly string[];
  close(): Promise<void>;
}

/**
 * Does this CPU have AES instructions? Then chacha20-poly1305 is not offered: OpenSSH clients
 * prefer it whenever the server lists it, and ssh2's implementation of it runs at less than half
 * the speed of AES-GCM / AES-CTR (AES-NI through OpenSSL) — measured by bench/ssh.bench.ts.
 */
async function cpuHasAes(): Promise<boolean> {
  try {
    const m = (await import('cpu-features')) as { default?: () => { flags?: Record<string, boolean> } };
    return typeof m.default === 'function' && m.default().flags?.aes === true;
  } catch {
    return false;
  }
}

// CTR (with ETM MACs) stays for clients without GCM (paramiko); OpenSSH clients then prefer CTR:
// `-c aes128-gcm@openssh.com` is faster through the bastion (bench/ssh.bench.ts shows both)
const AES: CipherAlgorithm[] = ['aes128-gcm@openssh.com', 'aes256-gcm@openssh.com', 'aes128-ctr', 'aes192-ctr', 'aes256-ctr'];

const algorithms = (aes: boolean): ServerConfig['algorithms'] => ({
  kex: ['curve25519-sha256', 'curve25519-sha256@libssh.org', 'ecdh-sha2-nistp256', 'ecdh-sha2-nistp384', 'ecdh-sha2-nistp521', 'diffie-hellman-group16-sha512', 'diffie-hellman-group18-sha512', 'diffie-hellman-group14-sha256'],
  cipher: aes ? AES : ['chacha20-poly1305@openssh.com', ...AES],
  serverHostKey: ['ssh-ed25519', 'rsa-sha2-512', 'rsa-sha2-256'],
  hmac: ['hmac-sha2-256-etm@openssh.com', 'hmac-sha2-512-etm@openssh.com', 'hmac-sha2-256', 'hmac-sha2-512'],
  compress: ['none'],
});

/** DER `SEQUENCE { INTEGER r, INTEGER s }` (ssh2 hands ECDSA signatures over like this) → r, s. */
function derRS(der: Buffer): [Buffer, Buffer] | null {
  let p = 0;
  const len = (): number => {
    let n = der[p++] ?? 0;
    if (n & 0x80) {
      const k = n & 0x7f;
      n = 0;
      for (let i = 0; i < k; i++) n = (n << 8) | (der[p++] ?? 0);
    }
    return n;
  };
  if (der[p++] !== 0x30) return null;
  len();
  const ints: Buffer[] = [];
  for (let i = 0; i < 2; i++) {
    if (der[p++] !== 0x02) return null;
    const n = len();
    let v = der.subarray(p, p + n);
    p += n;
    while (v.length > 1 && v[0] === 0) v = v.subarray(1);
    ints.push(v);
  }
  return [ints[0]!, ints[1]!];
}

/** The userauth algorithm as the client sent it (ssh2 reports rsa-sha2-* as ssh-rsa + hash). */
function offeredAlgo(ctx: { key: { algo: string }; hashAlgo?: string }): string {
  if (ctx.key.algo === 'ssh-rsa' && ctx.hashAlgo === 'sha256') return 'rsa-sha2-256';
  if (ctx.key.algo === 'ssh-rsa' && ctx.hashAlgo === 'sha512') return 'rsa-sha2-512';
  return ctx.key.algo;
}

/** The SSH signature blob (`string format, string sig`) from what ssh2 made of it. */
function signatureBlob(algo: string, sig: Buffer): Buffer | null {
  if (algo in CERT_ALGORITHMS) return sig; // ssh2 leaves certificate signatures as sent
  if (algo.startsWith('ecdsa-sha2-')) {
    const rs = derRS(sig);
    return rs ? Buffer.concat([sshString(algo), sshString(Buffer.concat([sshMpint(rs[0]), sshMpint(rs[1])]))]) : null;
  }
  return Buffer.concat([sshString(algo), sshString(sig)]);
}

interface Prepared {
  local: Map<string, LocalTarget>;
  notes: string[];
}

function prepareTargets(opts: SshProxyOptions): Prepared {
  const out: Prepared = { local: new Map(), notes: [] };
  for (const [name, t] of opts.targets) {
    if (t.kind === 'local') {
      const lt = new LocalTarget({ name, shell: t.shell ?? '/bin/bash', cwd: t.cwd, user: t.user, stateDir: join(opts.dataDir, 'ssh-local') });
      out.local.set(name, lt);
      for (const n of lt.notes) out.notes.push(`ssh target ${name}: ${n}`);
    }
  }
  return out;
}

/** Starts the SSH proxy. Resolves once it listens. */
export async function startSshProxy(core: Core, opts: SshProxyOptions): Promise<SshProxy> {
  await initFacts();
  const log = opts.log;
  const hostKeys = loadHostKeys(opts.dataDir, log);
  const hostCa = loadHostCa(opts.dataDir, log);
  const hostCerts = new HostCertificates(hostCa, hostKeys.find((k) => k.type === 'ssh-ed25519')!.privateKey);
  const knownHosts = new KnownHosts(join(opts.dataDir, 'keys', 'known_hosts'));
  const prepared = prepareTargets(opts);
  const clients = new Set<Connection>();

  const upstreamFor = (name: string, subject: string, connection: string): { upstream: Upstream; shell: string } | null => {
    const spec = opts.targets.get(name);
    if (!spec) return null;
    if (spec.kind === 'local') {
      const lt = prepared.local.get(name)!;
      return { upstream: lt.connect(), shell: lt.cfg.shell };
    }
    const rt = new RemoteTarget({ name, credentials: () => spec.credentials({ subject, connection }), knownHosts, log });
    return { upstream: rt.connect(), shell: '/bin/sh' };
  };

  const handleConnection = (client: Connection, info: { ip?: string }): void => {
    const remote = normalizeAddress(info.ip ?? 'unknown');
    const connectionId = randomUUID();
    const jump = jumpOf(client);
    if (jump && !presentHostCertificate(client, hostCerts.hostKeyText, hostCerts.certificateFor(jump.principals))) {
      log.error('ssh jump: cannot present a host certificate with this ssh2 version; refusing the jump', { target: jump.target });
      client.end();
      return;
    }
    clients.add(client);
    // keystrokes and their echo go out at once (no Nagle); ssh2 has it, its types do not
    (client as unknown as { setNoDelay(on: boolean): void }).setNoDelay(true);
    let auth: SshAuthInfo | null = null;
    let login: ReturnType<typeof parseLogin> | null = null;
    let upstream: Upstream | null = null;
    const onClose: (() => void)[] = [];
    const loginTimer = setTimeout(() => {
      if (!auth) client.end();
    }, opts.loginTimeoutMs ?? 30_000);
    loginTimer.unref();

    client.on('authentication', (ctx: AuthContext) => {
      if (ctx.method !== 'publickey') return ctx.reject(['publickey']);
      const l = parseLogin(ctx.username);
      if (jump && (l.subject !== jump.subject || (l.target !== undefined && l.target !== jump.target))) {
        log.info('ssh jump: the inner login must be the identity that jumped, to the jump target', { remote, inner: ctx.username, subject: jump.subject, target: jump.target });
        return ctx.reject(['publickey']);
      }
      const algo = offeredAlgo(ctx);
      void opts.identity
        .verifySshPublicKey(l.subject, { algo, data: ctx.key.data }, { remote, protocol: 'ssh' })
        .then((a) => {
          if (!ctx.signature || !ctx.blob) return ctx.accept(); // the client asks whether the key would do
          const sig = signatureBlob(algo, ctx.signature);
          if (!sig || !verifySshSignature(a.publicKey.blob, ctx.blob, sig)) {
            log.warn('ssh login: bad signature', { remote, subject: l.subject, key: a.publicKey.fingerprint });
            return ctx.reject(['publickey']);
          }
          auth = a;
          login = l;
          ctx.accept();
        })
        .catch((e: unknown) => {
          if (!isIdentityError(e)) log.error('ssh login check failed', { remote, error: String(e) });
          ctx.reject(['publickey']);
        });
    });

    client.on('ready', () => {
      clearTimeout(loginTimer);
      const a = auth!;
      const l = login!;
      const target = jump ? jump.target : resolveTarget(l, opts.defaultTargets);
      const problem =
        target === undefined
          ? `no target given: log in as ${a.identity.subject}+<target>@bastion`
          : !opts.targets.has(target)
            ? `unknown SSH target "${target}"`
            : null;
      const upFor = problem || target === undefined ? null : upstreamFor(target, a.identity.subject, connectionId)!;
      const fwd: ForwardContext = {
        core,
        log,
        identity: a.identity,
        target: upFor ? target : undefined,
        targetKind: upFor ? upFor.upstream.kind : undefined,
        remote,
        connectionId,
        upstream: () => (upstream ??= upFor!.upstream),
        client,
        onConnectionClose: (fn) => onClose.push(fn),
      };
      const listeners: Parameters<typeof remoteForwardRequest>[1] = new Map();
      client.on('tcpip', (accept, reject, i) => {
        const dest = jumpDestination(i.destIP, i.destPort, opts.targets);
        if (dest && 'refused' in dest) {
          log.info('ssh: jump refused', { remote, subject: a.identity.subject, dest: `${i.destIP}:${i.destPort}`, why: dest.refused });
          return reject();
        }
        if (dest) {
          const ch = accept();
          markJump(ch, { target: dest.target, principals: dest.principals, subject: a.identity.subject, outerConnection: connectionId });
          server.injectSocket(Object.assign(ch, { remoteAddress: remote }) as unknown as Parameters<typeof server.injectSocket>[0]);
          return;
        }
        void localForward(fwd, i, accept, reject).catch((e: unknown) => log.error('ssh port forward failed', { error: String(e) }));
      });
      client.on('request', (accept, reject, name, info) => {
        if (name === 'tcpip-forward' || name === 'cancel-tcpip-forward') return remoteForwardRequest(fwd, listeners, accept, reject, name, info as ssh2.TcpipBindInfo);
        log.info('ssh: global request refused', { remote, subject: a.identity.subject, request: name });
        reject?.();
      });
      client.on('openssh.streamlocal', (_accept, reject) => reject());
      if (problem || target === undefined || !upFor) {
        client.on('session', (accept) => refusingSession(accept(), problem ?? 'no target'));
        return;
      }
      const up = upFor;
      const ctx: ConnectionContext = {
        core,
        log,
        hmacKey: opts.hmacKey,
        auth: a,
        identity: a.identity,
        target,
        remote,
        connectionId,
        upstream: () => (upstream ??= up.upstream),
        shell: up.shell,
        limits: opts.session ?? {},
        endConnection: () => client.end(),
        onConnectionClose: (fn) => onClose.push(fn),
      };
      if (jump) ctx.via = jump.outerConnection;
      client.on('session', (accept) => attachSession(ctx, accept()));
    });
    client.on('error', (e) => log.debug('ssh connection error', { remote, error: e.message }));
    client.on('close', () => {
      clearTimeout(loginTimer);
      clients.delete(client);
      for (const fn of onClose.splice(0)) fn();
      upstream?.close();
    });
  };

  const server = new Server({ hostKeys: hostKeys.map((k) => k.privateKey), algorithms: algorithms(await cpuHasAes()), ident: 'Portcullis', keepaliveInterval: 30_000, keepaliveCountMax: 4 } as ServerConfig, (client, info) =>
    handleConnection(client, { ip: info.ip }),
  );
  server.on('error', (e: Error) => log.error('ssh listener error', { error: e.message }));
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(opts.port ?? 2222, host, () => {
      server.off('error', rej);
      res();
    });
  });
  const addr = server.address();
  if (!addr || typeof addr === 'string') throw new PortcullisError('ssh_listen', 'the SSH listener has no address');
  log.info('ssh proxy listening', { host, port: addr.port, hostKeys: hostKeys.map((k) => k.fingerprint) });
  return {
    host,
    port: addr.port,
    hostKeys,
    hostCa,
    notes: prepared.notes,
    injectSocket(stream: Duplex, remote?: string) {
      // ssh2 reads the peer from `remoteAddress` (a getter on sockets: shadow it on the instance)
      if (remote !== undefined) Object.defineProperty(stream, 'remoteAddress', { value: remote, configurable: true });
      server.injectSocket(stream as unknown as Parameters<typeof server.injectSocket>[0]);
    },
    connections: () => clients.size,
    async close() {
      const closed = new Promise<void>((res) => server.close(() => res()));
      for (const c of clients) c.end();
      // a connection that does not go away in time does not hold up the shutdown
      await Promise.race([closed, new Promise<void>((res) => setTimeout(res, 5000).unref())]);
    },
  };
}

/** A connection that cannot reach a target: every session gets the reason and exit status 1. */
function refusingSession(s: ssh2.Session, message: string): void {
  const refuse = (accept: (() => ssh2.ServerChannel) | undefined) => {
    const ch = accept?.();
    if (!ch) return;
    ch.stderr.write(`portcullis: ${message}\r\n`);
    ch.exit(1);
    ch.end();
  };
  s.on('pty', (accept) => accept?.());
  s.on('env', (accept) => accept?.());
  s.on('exec', (accept) => refuse(accept));
  s.on('shell', (accept) => refuse(accept));
  s.on('subsystem', (accept) => refuse(accept));
}
