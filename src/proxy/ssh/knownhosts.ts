// Host key checks for remote targets. A target's `host_key` in the config (an OpenSSH public key
// line, or a `SHA256:` fingerprint) pins the key. Without one, the first key seen is remembered in
// `<data-dir>/keys/known_hosts` (trust on first use, logged) and any later different key is
// refused — the bastion never logs in to a host whose key changed.
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parsePublicKeyBlob, parsePublicKeyLine, publicKeyLine, sshFingerprint } from '../../identity/ssh-wire.js';

export type HostKeyCheck = { ok: true; learned?: boolean } | { ok: false; message: string };

export class KnownHosts {
  private readonly known = new Map<string, Buffer[]>();

  constructor(private readonly file: string) {
    if (!existsSync(file)) return;
    for (const raw of readFileSync(file, 'utf8').split('\n')) {
      const line = raw.trim();
      if (!line || line.startsWith('#')) continue;
      const sp = line.indexOf(' ');
      if (sp < 0) continue;
      try {
        const key = parsePublicKeyLine(line.slice(sp + 1));
        const host = line.slice(0, sp);
        this.known.set(host, [...(this.known.get(host) ?? []), key.blob]);
      } catch {
        // an unreadable line pins nothing
      }
    }
  }

  /** Checks `blob` for host:port against the pinned key, or the remembered one (learning it when new). */
  check(host: string, port: number, blob: Buffer, pinned?: string): HostKeyCheck {
    const fp = sshFingerprint(blob);
    if (pinned) {
      const p = pinned.trim();
      if (p.startsWith('SHA256:')) return p === fp ? { ok: true } : { ok: false, message: `host key ${fp} does not match the configured ${p}` };
      let want: Buffer;
      try {
        want = parsePublicKeyLine(p).blob;
      } catch (e) {
        return { ok: false, message: `the configured host_key cannot be read (${(e as Error).message})` };
      }
      return want.equals(blob) ? { ok: true } : { ok: false, message: `host key ${fp} does not match the configured host_key ${sshFingerprint(want)}` };
    }
    const name = port === 22 ? host : `[${host}]:${port}`;
    const have = this.known.get(name);
    if (have?.length) {
      return have.some((k) => k.equals(blob)) ? { ok: true } : { ok: false, message: `host key of ${name} changed (now ${fp}); remove its line from ${this.file} if the change is expected` };
    }
    const type = parsePublicKeyBlob(blob).type;
    mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 });
    appendFileSync(this.file, `${name} ${publicKeyLine(type, blob)}\n`, { mode: 0o600 });
    this.known.set(name, [blob]);
    return { ok: true, learned: true };
  }
}
