// SSH keys and OpenSSH user certificates, made with the real ssh-keygen, through IdentityService
// (real store in a temp dir); bastion-issued certificates read back with `ssh-keygen -L`.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { inspect } from 'node:util';
import { YamlSource } from '../src/config/source.js';
import { parseConfig } from '../src/config/config.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { IdentityError, IdentityService, issueSshUserCert, parseIdentityConfig, targetCredentials, upstreamCaPublicKey, type IdentityRejection } from '../src/identity/index.js';
import { parseSshCertificate } from '../src/identity/ssh-cert.js';
import { opensshPrivateKey, parsePrivateKey, parsePublicKeyLine, publicBlobOf, SshReader, sshString, verifySshSignature } from '../src/identity/ssh-wire.js';
import { tempDir, type TempDir } from './harness/tmp.js';

let dir: TempDir;
let store: Store;

function keygen(...args: string[]): string {
  return execFileSync('ssh-keygen', args, { cwd: dir.path, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function newKey(name: string, type = 'ed25519', bits?: number): { priv: string; pub: string; line: string } {
  keygen('-q', '-t', type, ...(bits ? ['-b', String(bits)] : []), '-N', '', '-C', name, '-f', name);
  return { priv: path.join(dir.path, name), pub: path.join(dir.path, `${name}.pub`), line: fs.readFileSync(path.join(dir.path, `${name}.pub`), 'utf8').trim() };
}
/** `ssh-keygen -s ca -I id -n principals [-V …] [-O …] key.pub` → the certificate blob. */
function certify(ca: string, key: string, o: { id?: string; principals?: string; validity?: string; options?: string[]; host?: boolean; out?: string }): Buffer {
  const args = ['-q', '-s', ca, '-I', o.id ?? 'test-key-id'];
  if (o.principals !== undefined) args.push('-n', o.principals);
  if (o.validity) args.push('-V', o.validity);
  if (o.host) args.push('-h');
  for (const opt of o.options ?? []) args.push('-O', opt);
  const src = `${key}.pub`;
  const copy = `${key}-${(o.out ?? String(Math.random()).slice(2))}`;
  fs.copyFileSync(path.join(dir.path, src), path.join(dir.path, `${copy}.pub`));
  keygen(...args, `${copy}.pub`);
  const line = fs.readFileSync(path.join(dir.path, `${copy}-cert.pub`), 'utf8').trim();
  return Buffer.from(line.split(/\s+/)[1], 'base64');
}
function blobOf(line: string): Buffer {
  return Buffer.from(line.split(/\s+/)[1], 'base64');
}
function identityFromYaml(yaml: string): ReturnType<typeof parseIdentityConfig> {
  const src = YamlSource.parse(path.join(dir.path, 'portcullis.yaml'), yaml);
  return parseIdentityConfig(src, (src.value() as { identity: unknown }).identity, ['identity']);
}
async function rejects(p: Promise<unknown>, code: string, message?: RegExp): Promise<IdentityError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof IdentityError, `expected IdentityError, got ${String(e)}`);
    assert.equal(e.code, code, `code (message: ${e.message})`);
    if (message) assert.match(e.message, message);
    return e;
  }
  assert.fail(`expected ${code}, but it was accepted`);
}

const ctx = { remote: '127.0.0.1', protocol: 'ssh' as const };
let K: Record<string, { priv: string; pub: string; line: string }>;

before(async () => {
  dir = await tempDir('portcullis-ssh-');
  store = await openStore(dir.path);
  K = {
    ca: newKey('ca'),
    ca2: newKey('ca2'),
    rsaCa: newKey('rsaca', 'rsa', 3072),
    ecCa: newKey('ecca', 'ecdsa', 256),
    alice: newKey('alice'),
    aliceRsa: newKey('alicersa', 'rsa', 3072),
    aliceEc: newKey('aliceec', 'ecdsa', 256),
    bob: newKey('bob'),
    ops: newKey('opsca'),
    small: newKey('small', 'rsa', 1024),
  };
});
after(async () => {
  await store.close();
  await dir.remove();
});

function service(extra = '', opts: { now?: () => number; audit?: (e: IdentityRejection) => Promise<void> } = {}): IdentityService {
  const cfg = identityFromYaml(`
identity:
  ssh:
    clock_skew: 30s
    authorized_keys:
      - subject: alice
        groups: [agents]
        keys:
          - ${K.alice.line}
          - 'from="127.0.0.2,10.0.0.0/8",command="/usr/bin/uptime",restrict,pty ${K.aliceRsa.line}'
          - 'expiry-time="20200101" ${K.aliceEc.line}'
          - 'cert-authority,principals="ops,oncall" ${K.ops.line}'
      - subject: bob
        groups: [other]
        keys: ['${K.bob.line}']
    user_cas:
      - name: corp
        public_key: ${K.ca.line}
        groups: [engineers, "kid:{key_id}"]
        groups_extension: groups@portcullis
        principals: [alice, "deploy-*", carol, dave]
      - name: corp-rsa
        public_key: file:${K.rsaCa.pub}
        subject: "rsa:{principal}"
      - name: corp-ec
        public_key: ${K.ecCa.line}
        max_validity: 2h
${extra}`);
  return new IdentityService(cfg, store, opts);
}

describe('SSH public keys bound to identities', () => {
  test('a bound key logs in as its subject with its groups; permissions all granted', async () => {
    const r = await service().verifySshPublicKey('alice', { algo: 'ssh-ed25519', data: blobOf(K.alice.line) }, ctx);
    assert.equal(r.identity.subject, 'alice');
    assert.deepEqual(r.identity.groups, ['agents']);
    assert.equal(r.identity.authMethod, 'ssh-key');
    const fp = keygen('-l', '-E', 'sha256', '-f', K.alice.pub).split(' ')[1];
    assert.equal(r.publicKey.fingerprint, fp, 'fingerprint as ssh-keygen -l prints it');
    assert.equal(r.identity.credentialId, `ssh-key:${fp}`);
    assert.equal(r.forceCommand, undefined);
    assert.deepEqual(r.permissions, { pty: true, portForwarding: true, agentForwarding: true, x11Forwarding: true, userRc: true });
  });

  test('a key not bound to the user is refused, also when it is bound to someone else', async () => {
    const s = service();
    await rejects(s.verifySshPublicKey('alice', { algo: 'ssh-ed25519', data: blobOf(K.bob.line) }, ctx), 'key_rejected', /is not accepted for user "alice"/);
    await rejects(s.verifySshPublicKey('mallory', { algo: 'ssh-ed25519', data: blobOf(K.alice.line) }, ctx), 'key_rejected');
  });

  test('from= restricts the source; command= and restrict,pty are returned for the proxy', async () => {
    const s = service();
    const offer = { algo: 'rsa-sha2-512', data: blobOf(K.aliceRsa.line) };
    await rejects(s.verifySshPublicKey('alice', offer, ctx), 'source_address', /not accepted from 127\.0\.0\.1/);
    const r = await s.verifySshPublicKey('alice', offer, { ...ctx, remote: '127.0.0.2' });
    assert.equal(r.forceCommand, '/usr/bin/uptime');
    assert.deepEqual(r.permissions, { pty: true, portForwarding: false, agentForwarding: false, x11Forwarding: false, userRc: false });
    const r2 = await s.verifySshPublicKey('alice', offer, { ...ctx, remote: '::ffff:10.1.2.3' });
    assert.equal(r2.identity.subject, 'alice');
  });

  test('expiry-time in the past refuses the key; the algorithm must fit the key', async () => {
    const s = service();
    await rejects(s.verifySshPublicKey('alice', { algo: 'ecdsa-sha2-nistp256', data: blobOf(K.aliceEc.line) }, ctx), 'key_expired', /expired at 2020-01-01/);
    await rejects(s.verifySshPublicKey('alice', { algo: 'ecdsa-sha2-nistp256', data: blobOf(K.alice.line) }, ctx), 'key_rejected', /does not fit/);
    await rejects(s.verifySshPublicKey('alice', { algo: 'ssh-rsa', data: blobOf(K.aliceRsa.line) }, { ...ctx, remote: '127.0.0.2' }), 'key_rejected', /SHA-1/);
    await rejects(s.verifySshPublicKey('alice', { algo: 'ssh-ed25519', data: Buffer.from('garbage') }, ctx), 'key_rejected', /malformed/);
  });
});

describe('OpenSSH user certificates (ssh-keygen -s)', () => {
  test('a certificate from the configured CA logs in; subject from the principal; groups from templates and the extension', async () => {
    const cert = certify('ca', 'alice', { id: 'alice@laptop', principals: 'alice,deploy-web', validity: '-5m:+1h', options: ['extension:groups@portcullis=oncall,dba'] });
    const r = await service().verifySshCertificate('alice', cert, ctx);
    assert.equal(r.identity.subject, 'alice');
    assert.equal(r.identity.authMethod, 'ssh-cert');
    assert.equal(r.identity.issuer, 'ssh-ca:corp');
    assert.deepEqual(r.identity.groups, ['engineers', 'kid:alice@laptop', 'oncall', 'dba']);
    assert.ok(r.cert);
    assert.equal(r.cert.keyId, 'alice@laptop');
    assert.deepEqual(r.cert.principals, ['alice', 'deploy-web']);
    assert.equal(r.cert.ca, 'corp');
    assert.ok(r.identity.expiresAt && Math.abs(r.identity.expiresAt - (Date.now() + 3_600_000)) < 120_000);
    assert.deepEqual(r.permissions, { pty: true, portForwarding: true, agentForwarding: true, x11Forwarding: true, userRc: true });
    // the session must be signed by the certified key: the plain blob of alice's key
    assert.deepEqual(r.publicKey.blob, blobOf(K.alice.line));
    // the same through verifySshPublicKey (what ssh2 hands over: algo + blob)
    const r2 = await service().verifySshPublicKey('alice', { algo: 'ssh-ed25519-cert-v01@openssh.com', data: cert }, ctx);
    assert.equal(r2.identity.subject, 'alice');
  });

  test('expired (-V 20200101:20200102) and not yet valid certificates are refused with their dates', async () => {
    const s = service();
    await rejects(s.verifySshCertificate('alice', certify('ca', 'alice', { principals: 'alice', validity: '20200101:20200102' }), ctx), 'cert_expired', /certificate expired at 2020-01-02/);
    await rejects(s.verifySshCertificate('alice', certify('ca', 'alice', { principals: 'alice', validity: '20990101:20990102' }), ctx), 'cert_not_yet_valid', /not valid before 2099-01-01/);
  });

  test('wrong principal, no principals, and a principal the CA may not vouch for are refused', async () => {
    const s = service();
    await rejects(s.verifySshCertificate('alice', certify('ca', 'alice', { principals: 'bob', validity: '+1h' }), ctx), 'cert_principal', /not valid for user "alice" \(principals: bob\)/);
    await rejects(s.verifySshCertificate('alice', certify('ca', 'alice', { validity: '+1h' }), ctx), 'cert_principal', /no principals/);
    await rejects(s.verifySshCertificate('eve', certify('ca', 'alice', { principals: 'eve', validity: '+1h' }), ctx), 'cert_principal', /may not vouch for principal "eve"/);
  });

  test('a certificate signed by another CA, a tampered one, and a host certificate are refused', async () => {
    const s = service();
    await rejects(s.verifySshCertificate('alice', certify('ca2', 'alice', { principals: 'alice', validity: '+1h' }), ctx), 'cert_ca_unknown', /unknown CA \(SHA256:/);
    const good = certify('ca', 'alice', { id: 'original-id', principals: 'alice', validity: '+1h' });
    const tampered = Buffer.from(good);
    const at = tampered.indexOf(Buffer.from('original-id'));
    tampered.write('ORIGINAL-ID', at, 'latin1');
    await rejects(s.verifySshCertificate('alice', tampered, ctx), 'cert_signature_invalid');
    await rejects(s.verifySshCertificate('alice', certify('ca', 'alice', { principals: 'alice', validity: '+1h', host: true }), ctx), 'cert_type', /host certificate/);
    await rejects(s.verifySshCertificate('alice', good.subarray(0, good.length - 10), ctx), 'cert_malformed');
  });

  test('source-address is checked against the peer; force-command is returned', async () => {
    const s = service();
    const cert = certify('ca', 'alice', { principals: 'alice', validity: '+1h', options: ['source-address=127.0.0.2/32', 'force-command=/usr/local/bin/backup --daily'] });
    await rejects(s.verifySshCertificate('alice', cert, ctx), 'cert_source_address', /not valid from 127\.0\.0\.1 \(source-address 127\.0\.0\.2\/32\)/);
    const r = await s.verifySshCertificate('alice', cert, { ...ctx, remote: '127.0.0.2' });
    assert.equal(r.forceCommand, '/usr/local/bin/backup --daily');
    assert.equal(r.cert?.forceCommand, '/usr/local/bin/backup --daily');
    assert.deepEqual(r.cert?.sourceAddress, ['127.0.0.2/32']);
  });

  test('an unknown critical option refuses the certificate (as sshd does); -O clear grants no permissions', async () => {
    const s = service();
    await rejects(s.verifySshCertificate('alice', certify('ca', 'alice', { principals: 'alice', validity: '+1h', options: ['verify-required'] }), ctx), 'cert_critical_option', /unsupported critical option "verify-required"/);
    const r = await s.verifySshCertificate('alice', certify('ca', 'alice', { principals: 'alice', validity: '+1h', options: ['clear'] }), ctx);
    assert.deepEqual(r.permissions, { pty: false, portForwarding: false, agentForwarding: false, x11Forwarding: false, userRc: false });
  });

  test('RSA CA (rsa-sha2-512) with a subject template, and an ECDSA CA with max_validity', async () => {
    const s = service();
    const r = await s.verifySshCertificate('alice', certify('rsaca', 'alicersa', { principals: 'alice', validity: '+1h' }), ctx);
    assert.equal(r.identity.subject, 'rsa:alice');
    assert.equal(r.cert?.certType, 'ssh-rsa-cert-v01@openssh.com');
    const r2 = await s.verifySshCertificate('alice', certify('ecca', 'aliceec', { principals: 'alice', validity: '+1h' }), ctx);
    assert.equal(r2.cert?.certType, 'ecdsa-sha2-nistp256-cert-v01@openssh.com');
    await rejects(s.verifySshCertificate('alice', certify('ecca', 'aliceec', { principals: 'alice', validity: '+1d' }), ctx), 'cert_validity_too_long');
  });

  test('a cert-authority key of one identity: principals="…" decide, the login is that identity', async () => {
    const s = service();
    const r = await s.verifySshCertificate('alice', certify('opsca', 'bob', { principals: 'oncall', validity: '+1h' }), ctx);
    assert.equal(r.identity.subject, 'alice');
    assert.deepEqual(r.identity.groups, ['agents']);
    await rejects(s.verifySshCertificate('alice', certify('opsca', 'bob', { principals: 'alice', validity: '+1h' }), ctx), 'cert_principal');
    await rejects(s.verifySshCertificate('bob', certify('opsca', 'bob', { principals: 'oncall', validity: '+1h' }), ctx), 'cert_ca_unknown');
  });

  test('revalidate: a certificate session ends when the certificate expires', async () => {
    let now = Date.now();
    const s = service('', { now: () => now });
    const r = await s.verifySshCertificate('alice', certify('ca', 'alice', { principals: 'alice', validity: '-1m:+10m' }), ctx);
    assert.equal(await s.revalidate(r.identity), true);
    now += 11 * 60_000;
    assert.deepEqual(await s.check(r.identity), { ok: false, code: 'cert_expired', message: `certificate expired at ${new Date(r.identity.expiresAt as number).toISOString()}` });
  });
});

describe('failures are audited and rate-limited per source address', () => {
  test('after `failures` refusals a source is refused outright for the cool-down; other sources are not', async () => {
    let now = Date.now();
    const events: IdentityRejection[] = [];
    const s = service('  rate_limit: { failures: 3, per: 1m, cooldown: 2m }', { now: () => now, audit: async (e) => void events.push(e) });
    const bad = { algo: 'ssh-ed25519', data: blobOf(K.bob.line) };
    const good = { algo: 'ssh-ed25519', data: blobOf(K.alice.line) };
    for (let i = 0; i < 3; i++) await rejects(s.verifySshPublicKey('alice', bad, ctx), 'key_rejected');
    const e = await rejects(s.verifySshPublicKey('alice', good, ctx), 'rate_limited', /too many failed attempts from 127\.0\.0\.1; retry after/);
    assert.equal(e.details.retryAfter, now + 120_000);
    // another source is unaffected
    assert.equal((await s.verifySshPublicKey('alice', good, { ...ctx, remote: '127.0.0.9' })).identity.subject, 'alice');
    await rejects(s.verifySshPublicKey('alice', good, ctx), 'rate_limited');
    assert.deepEqual(
      events.map((x) => [x.code, x.remote, x.subjectHint, x.method]),
      [
        ['key_rejected', '127.0.0.1', 'alice', 'ssh-key'],
        ['key_rejected', '127.0.0.1', 'alice', 'ssh-key'],
        ['key_rejected', '127.0.0.1', 'alice', 'ssh-key'],
        ['rate_limited', '127.0.0.1', 'alice', 'ssh-key'],
      ],
    );
    assert.match(events[3].message, /blocked until .* after 3 failed attempts/);
    now += 121_000;
    assert.equal((await s.verifySshPublicKey('alice', good, ctx)).identity.subject, 'alice');
    // the refusals during the block are reported with the next audited failure
    await rejects(s.verifySshPublicKey('alice', bad, ctx), 'key_rejected');
    assert.equal(events.at(-1)?.suppressed, 2);
  });

  test('the bucket refills: slow failures never block', async () => {
    let now = Date.now();
    const s = service('  rate_limit: { failures: 3, per: 1m, cooldown: 2m }', { now: () => now });
    for (let i = 0; i < 10; i++) {
      await rejects(s.verifySshPublicKey('alice', { algo: 'ssh-ed25519', data: blobOf(K.bob.line) }, ctx), 'key_rejected');
      now += 30_000;
    }
  });

  test('exempt sources are never limited', async () => {
    const s = service('  rate_limit: { failures: 1, exempt: [127.0.0.0/8] }');
    for (let i = 0; i < 5; i++) await rejects(s.verifySshPublicKey('alice', { algo: 'ssh-ed25519', data: blobOf(K.bob.line) }, ctx), 'key_rejected');
  });
});

describe('SSH config problems name file:line:field', () => {
  test('bad keys, options and CAs', () => {
    assert.throws(
      () =>
        identityFromYaml(`identity:
  ssh:
    clock_skew: 10m
    authorized_keys:
      - subject: a
        keys:
          - ssh-ed25519 AAAAnotakey
          - 'environment="X=1" ${K.alice.line}'
          - ${K.small.line}
          - 'from="myhost.example.com" ${K.alice.line}'
    user_cas:
      - public_key: file:/nonexistent/ca.pub
      - public_key: ${K.ca.line}
        subject: "{login}"
`),
      (e: Error) => {
        const m = e.message;
        assert.match(m, /portcullis\.yaml:3:\d+: identity\.ssh\.clock_skew: at most 5m/);
        assert.match(m, /portcullis\.yaml:7:\d+: identity\.ssh\.authorized_keys\[0\]\.keys\[0\]: /);
        assert.match(m, /:8:\d+: identity\.ssh\.authorized_keys\[0\]\.keys\[1\]: option environment is not supported/);
        assert.match(m, /:9:\d+: identity\.ssh\.authorized_keys\[0\]\.keys\[2\]: RSA key of 1024 bits/);
        assert.match(m, /:10:\d+: identity\.ssh\.authorized_keys\[0\]\.keys\[3\]: .*host names are not supported/);
        assert.match(m, /:12:\d+: identity\.ssh\.user_cas\[0\]\.public_key: cannot read secret file \/nonexistent\/ca\.pub/);
        assert.match(m, /:14:\d+: identity\.ssh\.user_cas\[1\]\.subject: unknown field \{login\}/);
        return true;
      },
    );
  });
});

describe('bastion-issued certificates (issueSshUserCert)', () => {
  for (const [caName, caType] of [
    ['ca', 'ED25519'],
    ['rsaca', 'RSA'],
    ['ecca', 'ECDSA'],
  ] as const) {
    test(`an ${caType} CA (OpenSSH private key from ssh-keygen) issues a certificate ssh-keygen -L reads and the bastion accepts`, async () => {
      const caText = fs.readFileSync(path.join(dir.path, caName), 'utf8');
      const userPub = fs.readFileSync(K.bob.pub, 'utf8');
      const issued = issueSshUserCert({ caKey: caText, publicKey: userPub, principals: ['carol', 'dave'], ttlSeconds: 600, keyId: 'portcullis:carol:session-1', forceCommand: 'id', sourceAddress: ['127.0.0.1/32'] });
      const certFile = path.join(dir.path, `issued-${caName}-cert.pub`);
      fs.writeFileSync(certFile, issued.certificate + '\n');
      const listing = keygen('-L', '-f', certFile);
      assert.match(listing, /Type: ssh-ed25519-cert-v01@openssh\.com user certificate/);
      assert.match(listing, /Key ID: "portcullis:carol:session-1"/);
      assert.match(listing, new RegExp(`Serial: ${issued.serial}`));
      assert.match(listing, /Principals: \n\s+carol\n\s+dave/);
      assert.match(listing, /force-command id/);
      assert.match(listing, /source-address 127\.0\.0\.1\/32/);
      assert.match(listing, /Extensions: \n\s+permit-port-forwarding\n\s+permit-pty/);
      const caFp = keygen('-l', '-E', 'sha256', '-f', path.join(dir.path, `${caName}.pub`)).split(' ')[1];
      assert.match(listing, new RegExp(`Signing CA: ${caType} ${caFp.replace(/[+/]/g, '\\$&')}`));
      assert.equal(issued.caFingerprint, caFp);
      const from = /Valid: from (\S+) to (\S+)/.exec(listing);
      assert.ok(from);
      // ssh-keygen prints local time; compare the window's length
      assert.equal((Date.parse(from[2]) - Date.parse(from[1])) / 1000, 660);
      // and the bastion accepts what it issued (corp, corp-rsa and corp-ec trust these CAs)
      const r = await service().verifySshCertificate('carol', issued.blob, ctx);
      assert.equal(r.identity.subject, caName === 'rsaca' ? 'rsa:carol' : 'carol');
      assert.equal(r.forceCommand, 'id');
      assert.equal(r.cert?.serial, issued.serial.toString());
    });
  }

  test('a fresh ed25519 key written in OpenSSH format is read by ssh-keygen -y', () => {
    const { privateKey } = generateKeyPairSync('ed25519');
    const file = path.join(dir.path, 'fresh');
    fs.writeFileSync(file, opensshPrivateKey(privateKey, 'fresh-key'), { mode: 0o600 });
    const pub = keygen('-y', '-f', file).trim();
    const mine = publicBlobOf(privateKey).blob.toString('base64');
    assert.equal(pub.split(' ')[1], mine);
    // and read back by our own parser
    assert.deepEqual(publicBlobOf(parsePrivateKey(fs.readFileSync(file, 'utf8'))).blob, publicBlobOf(privateKey).blob);
  });

  test('our certificate parser agrees with ssh-keygen on every field', () => {
    const cert = certify('ca', 'alice', { id: 'parse-me', principals: 'p1,p2', validity: '20300101:20300201', options: ['force-command=ls', 'no-pty'] });
    const c = parseSshCertificate(cert);
    assert.equal(c.keyId, 'parse-me');
    assert.deepEqual(c.principals, ['p1', 'p2']);
    assert.deepEqual(c.criticalOptions.map(([n]) => n), ['force-command']);
    assert.deepEqual(c.extensions.map(([n]) => n), ['permit-X11-forwarding', 'permit-agent-forwarding', 'permit-port-forwarding', 'permit-user-rc']);
    assert.deepEqual(c.signatureKey, blobOf(K.ca.line));
  });
});

describe('SSH signatures (ssh-keygen -Y sign) verify with verifySshSignature', () => {
  for (const k of ['alice', 'alicersa', 'aliceec'] as const) {
    test(`${k}`, () => {
      const msgFile = path.join(dir.path, `msg-${k}`);
      fs.writeFileSync(msgFile, 'hello bastion\n');
      keygen('-Y', 'sign', '-f', path.join(dir.path, k), '-n', 'file', msgFile);
      const armored = fs.readFileSync(`${msgFile}.sig`, 'utf8');
      const der = Buffer.from(armored.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
      assert.equal(der.subarray(0, 6).toString(), 'SSHSIG');
      const r = new SshReader(der.subarray(6));
      r.u32();
      const pub = Buffer.from(r.string());
      const ns = r.string();
      const reserved = r.string();
      const hashAlg = r.text();
      const sig = Buffer.from(r.string());
      const h = createHash(hashAlg).update(fs.readFileSync(msgFile)).digest();
      const signed = Buffer.concat([Buffer.from('SSHSIG'), sshString(ns), sshString(reserved), sshString(hashAlg), sshString(h)]);
      assert.deepEqual(pub, parsePublicKeyLine(fs.readFileSync(path.join(dir.path, `${k}.pub`), 'utf8')).blob);
      assert.equal(verifySshSignature(pub, signed, sig), true);
      const other = Buffer.from(signed);
      other[other.length - 1] ^= 1;
      assert.equal(verifySshSignature(pub, other, sig), false);
    });
  }
});

describe('credential injection', () => {
  test('targets get their credentials; a target covered by upstream_ssh_ca gets a fresh certificate', () => {
    process.env.PORTCULLIS_TEST_PG_PW = 'pg-secret-value';
    process.env.PORTCULLIS_TEST_KUBE_TOKEN = 'kube-token-value';
    fs.writeFileSync(path.join(dir.path, 'web2.key'), fs.readFileSync(K.bob.priv, 'utf8'));
    const yaml = `
targets:
  shop: { protocol: postgres, host: 127.0.0.1, port: 5432, database: shop, user: app, password: env:PORTCULLIS_TEST_PG_PW }
  web-1: { protocol: ssh, host: 127.0.0.1, port: 2200, user: deploy }
  web-2: { protocol: ssh, host: 127.0.0.1, user: deploy, private_key: file:${path.join(dir.path, 'web2.key')} }
  sandbox: { protocol: ssh, kind: local }
  cluster: { protocol: kubernetes, server: https://127.0.0.1:6443, token: env:PORTCULLIS_TEST_KUBE_TOKEN }
  broken: { protocol: kubernetes, server: https://127.0.0.1:6443, client_cert: literal-cert }
identity:
  upstream_ssh_ca:
    private_key: file:${path.join(dir.path, 'ca')}
    ttl: 2m
    targets: ["web-1"]
`;
    const src = YamlSource.parse(path.join(dir.path, 'full.yaml'), yaml);
    const raw = src.value() as { identity: unknown; targets: unknown };
    const id = parseIdentityConfig(src, raw.identity, ['identity'], { checkSecrets: true });
    const bastion = parseConfig(YamlSource.parse(path.join(dir.path, 'full.yaml'), yaml.replace(/\nidentity:[\s\S]*$/, '\n')));
    const pg = targetCredentials(bastion, 'shop');
    assert.equal(pg.protocol, 'postgres');
    assert.equal(pg.protocol === 'postgres' && pg.password?.reveal(), 'pg-secret-value');
    // secrets never print
    assert.equal(JSON.stringify(pg).includes('pg-secret-value'), false);
    assert.equal(inspect(pg, { depth: 5 }).includes('pg-secret-value'), false);
    assert.equal(String(pg.protocol === 'postgres' && pg.password), '[secret]');

    const ssh = targetCredentials(bastion, 'web-1', { upstreamSshCa: id.upstreamSshCa, identity: { subject: 'alice' }, session: 's-42' });
    assert.ok(ssh.protocol === 'ssh' && ssh.certificate && ssh.privateKey);
    fs.writeFileSync(path.join(dir.path, 'up'), ssh.privateKey.reveal(), { mode: 0o600 });
    fs.writeFileSync(path.join(dir.path, 'up-cert.pub'), ssh.certificate + '\n');
    const listing = keygen('-L', '-f', path.join(dir.path, 'up-cert.pub'));
    assert.match(listing, /Key ID: "portcullis:alice:s-42:web-1"/);
    assert.match(listing, /Principals: \n\s+deploy\n/);
    const certKey = /Public key: ED25519-CERT (\S+)/.exec(listing)?.[1];
    assert.equal(certKey, keygen('-l', '-E', 'sha256', '-f', path.join(dir.path, 'up')).split(' ')[1], 'the certificate certifies the fresh private key');
    assert.equal(ssh.issued?.validBefore && ssh.issued.validBefore - Date.now() <= 120_000, true);
    assert.equal(upstreamCaPublicKey(id.upstreamSshCa!).split(' ')[1], K.ca.line.split(' ')[1]);

    const ssh2 = targetCredentials(bastion, 'web-2', { upstreamSshCa: id.upstreamSshCa });
    assert.ok(ssh2.protocol === 'ssh' && ssh2.certificate === undefined);
    assert.equal(ssh2.privateKey?.reveal(), fs.readFileSync(K.bob.priv, 'utf8').replace(/\r?\n$/, ''));
    assert.deepEqual(targetCredentials(bastion, 'sandbox'), { protocol: 'ssh', target: 'sandbox', kind: 'local' });
    const kube = targetCredentials(bastion, 'cluster');
    assert.ok(kube.protocol === 'kubernetes' && kube.token?.reveal() === 'kube-token-value');
    assert.throws(() => targetCredentials(bastion, 'broken'), /client_cert and client_key go together/);
    assert.throws(() => targetCredentials(bastion, 'nope'), /no target named nope/);
  });

  test('a missing secret is a config error naming the field', () => {
    const yaml = `identity:\n  upstream_ssh_ca:\n    private_key: env:PORTCULLIS_TEST_UNSET_CA\n`;
    delete process.env.PORTCULLIS_TEST_UNSET_CA;
    const src = YamlSource.parse(path.join(dir.path, 'x.yaml'), yaml);
    assert.throws(() => parseIdentityConfig(src, (src.value() as { identity: unknown }).identity, ['identity'], { checkSecrets: true }), /x\.yaml:3:\d+: identity\.upstream_ssh_ca\.private_key: environment variable PORTCULLIS_TEST_UNSET_CA is not set/);
  });
});
