// SSH logins → Identity: public keys bound to identities in config (authorized_keys lines with
// their options), and OpenSSH user certificates signed by a configured user CA (or by a key marked
// `cert-authority` for one identity), checked the way sshd checks them: type user, CA signature,
// validity window (± the configured skew), principals, critical options (force-command,
// source-address; anything else refuses the certificate), extensions → permissions.
//
// The SSH proxy still verifies the session signature with the returned `publicKey`.
import { type BoundKey, type IdentityConfig, type SshPermissions, type SshUserCaConfig } from './config.js';
import { IdentityError, iso } from './errors.js';
import { CERT_ALGORITHMS, CERT_FOREVER, certificateType, optionString, parseSshCertificate, SSH_CERT_USER, verifyCertificateSignature, type SshCertificate } from './ssh-cert.js';
import { addressIn, cidrList, parsePublicKeyBlob, sshFingerprint, SshFormatError, type SshPublicKey } from './ssh-wire.js';
import { renderTemplate } from './template.js';
import type { AuthenticatedIdentity, SshAuthInfo, SshCertInfo } from './types.js';

export interface SshKeyOffer {
  /** The userauth algorithm name (`ssh-ed25519`, `rsa-sha2-256`, `ssh-ed25519-cert-v01@openssh.com`, …). */
  algo: string;
  /** The public key blob (or certificate blob) as sent. */
  data: Buffer;
}

const RSA_ALGOS = new Set(['rsa-sha2-256', 'rsa-sha2-512']);

function show(s: string): string {
  return JSON.stringify(s.length > 64 ? s.slice(0, 64) + '…' : s);
}

const NO_PERMISSIONS: SshPermissions = { pty: false, portForwarding: false, agentForwarding: false, x11Forwarding: false, userRc: false };

interface CaMatch {
  /** A configured user CA… */
  ca?: SshUserCaConfig;
  /** …or a `cert-authority` key of one identity. */
  binding?: { subject: string; groups: string[]; key: BoundKey };
  name: string;
  key: SshPublicKey;
  fingerprint: string;
}

export class SshAuthenticator {
  constructor(private readonly cfg: IdentityConfig['ssh']) {}

  /** A public key offered for `user` (a certificate blob is passed on to `verifyCertificate`). */
  verifyKey(user: string, offer: SshKeyOffer, remote: string, now: number): SshAuthInfo {
    if (offer.algo === 'ssh-rsa' || offer.algo === 'ssh-rsa-cert-v01@openssh.com') {
      throw new IdentityError('key_rejected', `${offer.algo} (SHA-1) signatures are not accepted; use rsa-sha2-256 or rsa-sha2-512`);
    }
    if (offer.algo in CERT_ALGORITHMS || certificateType(offer.data)) return this.verifyCertificate(user, offer.data, remote, now, offer.algo);
    let key: SshPublicKey;
    try {
      key = parsePublicKeyBlob(offer.data);
    } catch (e) {
      throw new IdentityError('key_rejected', `malformed or unsupported public key (${e instanceof SshFormatError ? e.message : 'invalid'})`);
    }
    if (offer.algo !== key.type && !(key.type === 'ssh-rsa' && RSA_ALGOS.has(offer.algo))) {
      throw new IdentityError('key_rejected', `algorithm ${show(offer.algo)} does not fit a ${key.type} key`);
    }
    const fingerprint = sshFingerprint(key.blob);
    let found: { subject: string; groups: string[]; key: BoundKey } | undefined;
    for (const b of this.cfg.authorizedKeys) {
      if (b.subject !== user) continue;
      const k = b.keys.find((x) => !x.certAuthority && x.key.blob.equals(key.blob));
      if (k) {
        found = { subject: b.subject, groups: b.groups, key: k };
        break;
      }
    }
    if (!found) throw new IdentityError('key_rejected', `public key ${fingerprint} is not accepted for user ${show(user)}`, { fingerprint });
    const k = found.key;
    if (k.from && !k.from.matches(remote)) throw new IdentityError('source_address', `key ${fingerprint} is not accepted from ${remote}`, { fingerprint });
    if (k.expiresAt !== undefined && k.expiresAt <= now) throw new IdentityError('key_expired', `key ${fingerprint} expired at ${iso(k.expiresAt)}`, { fingerprint, expiresAt: k.expiresAt });
    const identity: AuthenticatedIdentity = { subject: found.subject, groups: [...found.groups], authMethod: 'ssh-key', credentialId: `ssh-key:${fingerprint}` };
    if (k.expiresAt !== undefined) identity.expiresAt = k.expiresAt;
    const info: SshAuthInfo = { identity, publicKey: { type: key.type, blob: key.blob, fingerprint }, permissions: { ...k.permissions } };
    if (k.forceCommand !== undefined) info.forceCommand = k.forceCommand;
    return info;
  }

  /** An OpenSSH user certificate offered for `user`. */
  verifyCertificate(user: string, blob: Buffer, remote: string, now: number, algo?: string): SshAuthInfo {
    let cert: SshCertificate;
    try {
      cert = parseSshCertificate(blob);
    } catch (e) {
      const msg = e instanceof SshFormatError ? e.message : 'invalid';
      throw new IdentityError(/^unsupported certificate type/.test(msg) ? 'cert_unsupported' : 'cert_malformed', `${/^unsupported/.test(msg) ? msg : `malformed certificate (${msg})`}`);
    }
    if (algo !== undefined && CERT_ALGORITHMS[algo] !== cert.certType) {
      throw new IdentityError('cert_malformed', `algorithm ${show(algo)} does not fit a ${cert.certType} certificate`);
    }
    const keyFp = sshFingerprint(cert.publicKey.blob);
    if (cert.type !== SSH_CERT_USER) throw new IdentityError('cert_type', 'a host certificate cannot be used to log in', { fingerprint: keyFp });

    // the CA
    const caFp = sshFingerprint(cert.signatureKey);
    const match = this.findCa(user, cert.signatureKey);
    if (!match) throw new IdentityError('cert_ca_unknown', `certificate signed by an unknown CA (${caFp})`, { caFingerprint: caFp });
    const sig = verifyCertificateSignature(cert, match.key);
    if (!sig.ok) throw new IdentityError('cert_signature_invalid', `certificate signature invalid${sig.problem ? ` (${sig.problem})` : ''}`, { ca: match.name });

    // validity window
    const skew = this.cfg.clockSkewMs;
    const after = Number(cert.validAfter) * 1000;
    const forever = cert.validBefore === CERT_FOREVER;
    const before = forever ? undefined : Number(cert.validBefore) * 1000;
    if (after - skew > now) throw new IdentityError('cert_not_yet_valid', `certificate not valid before ${iso(after)}`, { ca: match.name, validAfter: after });
    if (before !== undefined && before + skew <= now) throw new IdentityError('cert_expired', `certificate expired at ${iso(before)}`, { ca: match.name, validBefore: before });
    if (match.ca?.maxValidityMs !== undefined && (before === undefined || before - after > match.ca.maxValidityMs)) {
      throw new IdentityError('cert_validity_too_long', `certificate valid for ${before === undefined ? 'ever' : `${Math.round((before - after) / 1000)}s`}; CA ${match.name} allows at most ${Math.round(match.ca.maxValidityMs / 1000)}s`, { ca: match.name });
    }

    // principals
    if (cert.principals.length === 0) throw new IdentityError('cert_principal', 'certificate lists no principals', { ca: match.name });
    let principal: string;
    if (match.binding?.key.principals) {
      const allowed = match.binding.key.principals;
      const p = cert.principals.find((x) => allowed.includes(x));
      if (p === undefined) throw new IdentityError('cert_principal', `certificate principals (${cert.principals.join(', ')}) do not include one accepted for ${show(user)}`, { ca: match.name });
      principal = p;
    } else {
      if (!cert.principals.includes(user)) throw new IdentityError('cert_principal', `certificate not valid for user ${show(user)} (principals: ${cert.principals.slice(0, 16).join(', ')})`, { ca: match.name });
      principal = user;
    }
    if (match.ca && !match.ca.principals(principal)) throw new IdentityError('cert_principal', `CA ${match.name} may not vouch for principal ${show(principal)}`, { ca: match.name });

    // critical options
    const info: SshCertInfo = {
      certType: cert.certType,
      keyId: cert.keyId,
      serial: cert.serial.toString(),
      principals: [...cert.principals],
      validAfter: after,
      ca: match.name,
      caFingerprint: match.fingerprint,
      extensions: {},
    };
    if (before !== undefined) info.validBefore = before;
    for (const [name, data] of cert.criticalOptions) {
      if (name === 'force-command') {
        try {
          info.forceCommand = optionString(data, name);
        } catch {
          throw new IdentityError('cert_critical_option', 'malformed force-command option', { ca: match.name });
        }
      } else if (name === 'source-address') {
        let list: string;
        try {
          list = optionString(data, name);
          const bl = cidrList(list, 'source-address');
          if (!addressIn(bl, remote)) throw new IdentityError('cert_source_address', `certificate not valid from ${remote} (source-address ${list})`, { ca: match.name });
        } catch (e) {
          if (e instanceof IdentityError) throw e;
          throw new IdentityError('cert_critical_option', `malformed source-address option (${e instanceof SshFormatError ? e.message : 'invalid'})`, { ca: match.name });
        }
        info.sourceAddress = list.split(',').map((s) => s.trim());
      } else {
        throw new IdentityError('cert_critical_option', `unsupported critical option ${show(name)}`, { ca: match.name, option: name.slice(0, 64) });
      }
    }
    const permissions: SshPermissions = { ...NO_PERMISSIONS };
    for (const [name, data] of cert.extensions) {
      let value = '';
      if (data.length) {
        try {
          value = optionString(data, name);
        } catch {
          value = data.toString('utf8');
        }
      }
      info.extensions[name] = value;
      if (name === 'permit-pty') permissions.pty = true;
      else if (name === 'permit-port-forwarding') permissions.portForwarding = true;
      else if (name === 'permit-agent-forwarding') permissions.agentForwarding = true;
      else if (name === 'permit-X11-forwarding') permissions.x11Forwarding = true;
      else if (name === 'permit-user-rc') permissions.userRc = true;
    }

    // identity
    let subject: string;
    let groups: string[];
    let forceCommand = info.forceCommand;
    if (match.binding) {
      subject = match.binding.subject;
      groups = [...match.binding.groups];
      const lineCmd = match.binding.key.forceCommand;
      if (lineCmd !== undefined && forceCommand !== undefined && lineCmd !== forceCommand) {
        throw new IdentityError('cert_critical_option', 'the certificate force-command conflicts with the command= of its cert-authority key', { ca: match.name });
      }
      forceCommand ??= lineCmd;
      const lp = match.binding.key.permissions;
      for (const k of Object.keys(permissions) as (keyof SshPermissions)[]) permissions[k] = permissions[k] && lp[k];
      const from = match.binding.key.from;
      if (from && !from.matches(remote)) throw new IdentityError('source_address', `CA key ${match.fingerprint} is not accepted from ${remote}`, { ca: match.name });
      if (match.binding.key.expiresAt !== undefined && match.binding.key.expiresAt <= now) throw new IdentityError('key_expired', `CA key ${match.fingerprint} expired at ${iso(match.binding.key.expiresAt)}`, { ca: match.name });
    } else {
      const ca = match.ca as SshUserCaConfig;
      const fields: Record<string, string> = { principal, key_id: cert.keyId, serial: cert.serial.toString() };
      const r = renderTemplate(ca.subject, (f) => fields[f]);
      if (!r.ok || r.values.length !== 1) throw new IdentityError('cert_principal', `the subject template of CA ${ca.name} cannot be filled from this certificate (${r.ok ? 'several values' : `{${r.field}} ${r.reason}`})`, { ca: ca.name });
      subject = r.values[0];
      groups = [];
      for (const g of ca.groups) {
        const gr = renderTemplate(g, (f) => fields[f]);
        if (gr.ok) for (const v of gr.values) if (!groups.includes(v)) groups.push(v);
      }
      if (ca.groupsExtension && info.extensions[ca.groupsExtension] !== undefined) {
        for (const g of info.extensions[ca.groupsExtension].split(',').map((s) => s.trim())) {
          // eslint-disable-next-line no-control-regex -- refusing control characters
          if (g && g.length <= 256 && !/[\s\u0000-\u001f]/.test(g) && !groups.includes(g)) groups.push(g);
        }
      }
    }
    const identity: AuthenticatedIdentity = {
      subject,
      groups,
      issuer: `ssh-ca:${match.name}`,
      authMethod: 'ssh-cert',
      credentialId: `ssh-cert:${match.name}:${cert.serial.toString()}:${keyFp}`,
    };
    if (before !== undefined) identity.expiresAt = before;
    const out: SshAuthInfo = { identity, publicKey: { type: cert.publicKey.type, blob: cert.publicKey.blob, fingerprint: keyFp }, permissions, cert: info };
    if (forceCommand !== undefined) out.forceCommand = forceCommand;
    return out;
  }

  /** Is the credential behind an ssh identity still configured (key bound, CA present)? */
  stillConfigured(identity: { subject: string; authMethod?: string; credentialId?: string }): boolean {
    const id = identity.credentialId ?? '';
    if (identity.authMethod === 'ssh-key') {
      const fp = id.replace(/^ssh-key:/, '');
      return this.cfg.authorizedKeys.some((b) => b.subject === identity.subject && b.keys.some((k) => !k.certAuthority && k.fingerprint === fp));
    }
    if (identity.authMethod === 'ssh-cert') {
      const name = id.split(':')[1];
      return this.cfg.userCas.some((c) => c.name === name) || this.cfg.authorizedKeys.some((b) => b.subject === identity.subject && b.keys.some((k) => k.certAuthority && name === `key-${k.fingerprint.slice('SHA256:'.length)}`));
    }
    return false;
  }

  private findCa(user: string, signatureKey: Buffer): CaMatch | undefined {
    const ca = this.cfg.userCas.find((c) => c.key.blob.equals(signatureKey));
    if (ca) return { ca, name: ca.name, key: ca.key, fingerprint: ca.fingerprint };
    for (const b of this.cfg.authorizedKeys) {
      if (b.subject !== user) continue;
      const k = b.keys.find((x) => x.certAuthority && x.key.blob.equals(signatureKey));
      if (k) return { binding: { subject: b.subject, groups: b.groups, key: k }, name: `key-${k.fingerprint.slice('SHA256:'.length)}`, key: k.key, fingerprint: k.fingerprint };
    }
    return undefined;
  }
}
