// OIDC workload tokens against a real OpenID provider (oidc-provider on loopback, see
// test/harness/idp.ts): real discovery, real JWKS, JWT access tokens from the client-credentials
// grant (GitHub-Actions-style claims added by the provider's extraTokenClaims), ID tokens from
// the authorization-code flow, and hand-crafted tokens signed with the provider's own keys.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, createPublicKey } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { YamlSource } from '../src/config/source.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { IdentityError, IdentityService, parseIdentityConfig, type IdentityRejection } from '../src/identity/index.js';
import { startIdp, DEFAULT_RESOURCE, WEB_CLIENT, type TestIdp } from './harness/idp.js';
import { freePort } from './harness/ports.js';
import { tempDir, type TempDir } from './harness/tmp.js';

let idp: TestIdp;
let dir: TempDir;
let store: Store;

const GH_CLAIMS = { repository: 'acme/shop', repository_owner: 'acme', ref: 'refs/heads/main', environment: 'production', workflow: 'deploy' };

before(async () => {
  dir = await tempDir('portcullis-oidc-');
  store = await openStore(dir.path, { inMemory: true });
  idp = await startIdp({
    clients: [
      { clientId: 'ci-deploy', clientSecret: 'ci-deploy-secret-0123456789abcdef', claims: GH_CLAIMS },
      { clientId: 'ci-feature', clientSecret: 'ci-feature-secret-0123456789abcdef', claims: { ...GH_CLAIMS, ref: 'refs/heads/feature-x', environment: 'preview' } },
      { clientId: 'ci-release', clientSecret: 'ci-release-secret-0123456789abcdef', claims: { ...GH_CLAIMS, ref: 'refs/tags/v1.2.3' } },
      { clientId: 'other-app', clientSecret: 'other-app-secret-0123456789abcdef' },
    ],
    accounts: [{ sub: 'alice', groups: ['dev', 'oncall'] }],
  });
});
after(async () => {
  await idp.close();
  await store.close();
  await dir.remove();
});

function cfgFrom(yaml: string): ReturnType<typeof parseIdentityConfig> {
  const src = YamlSource.parse(path.join(dir.path, 'portcullis.yaml'), yaml);
  return parseIdentityConfig(src, (src.value() as { identity: unknown }).identity, ['identity']);
}

interface Svc {
  s: IdentityService;
  clock: { now: number };
  events: IdentityRejection[];
}

function svc(issuerExtra = '', top = ''): Svc {
  const clock = { now: Date.now() };
  const events: IdentityRejection[] = [];
  const cfg = cfgFrom(`
identity:
  oidc:
    - name: test-idp
      issuer: ${idp.issuer}
      audiences: [${DEFAULT_RESOURCE}, ${WEB_CLIENT.clientId}]
${issuerExtra}
${top}`);
  const s = new IdentityService(cfg, store, { now: () => clock.now, audit: async (e) => void events.push(e) });
  return { s, clock, events };
}

const ctx = { remote: '127.0.0.1', protocol: 'postgres' as const };

async function rejects(p: Promise<unknown>, code: string, message?: RegExp): Promise<IdentityError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof IdentityError, `expected IdentityError, got ${(e as Error)?.stack ?? String(e)}`);
    assert.equal(e.code, code, `code (message: ${e.message})`);
    if (message) assert.match(e.message, message);
    return e;
  }
  assert.fail(`expected ${code}, but it was accepted`);
}

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const payloadOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()) as Record<string, unknown>;
const jwks = () => idp.hits.get('/jwks') ?? 0;
const nowS = () => Math.floor(Date.now() / 1000);

describe('tokens from the real provider', () => {
  for (const alg of ['RS256', 'ES256', 'EdDSA'] as const) {
    test(`a client-credentials JWT access token (${alg}) is accepted`, async () => {
      const { s } = svc('      claims: { groups: ["client:{client_id}", "{groups}"] }');
      const token = await idp.clientCredentialsToken('other-app', { alg });
      const id = await s.verifyBearer(token, ctx);
      const p = payloadOf(token);
      assert.equal(id.subject, 'other-app');
      assert.deepEqual(id.groups, ['client:other-app']);
      assert.equal(id.issuer, idp.issuer);
      assert.equal(id.authMethod, 'oidc');
      assert.equal(id.expiresAt, (p.exp as number) * 1000);
      assert.match(id.credentialId, /^oidc:test-idp:[0-9a-f]{16}$/);
    });
  }

  test('an ID token from the authorization-code flow is accepted; groups from the groups claim', async () => {
    const { s } = svc('      claims: { groups: ["{groups}", "client:{client_id}"] }');
    const token = await idp.idToken('alice');
    assert.equal(payloadOf(token).aud, WEB_CLIENT.clientId);
    const id = await s.verifyBearer(token, { ...ctx, userHint: 'alice' });
    assert.equal(id.subject, 'alice');
    assert.deepEqual(id.groups, ['dev', 'oncall']);
  });

  test('discovery and JWKS are fetched once; keys stay cached', async () => {
    const { s } = svc();
    const before = jwks();
    for (let i = 0; i < 5; i++) await s.verifyBearer(await idp.clientCredentialsToken('other-app'), ctx);
    assert.equal(jwks() - before, 1);
  });

  test('expired: "token expired at <exp>"', async () => {
    const { s, clock } = svc();
    const token = await idp.clientCredentialsToken('other-app');
    await s.verifyBearer(token, ctx); // also cached now: the cache must not outlive exp
    clock.now = (payloadOf(token).exp as number) * 1000 + 61_000;
    await rejects(s.verifyBearer(token, ctx), 'token_expired', new RegExp(`^token expired at ${new Date((payloadOf(token).exp as number) * 1000).toISOString()}$`));
    // within the skew it is still fine
    clock.now = (payloadOf(token).exp as number) * 1000 + 30_000;
    await s.verifyBearer(token, ctx);
  });

  test('not yet valid (nbf) and issued in the future (iat) are refused beyond the skew', async () => {
    const { s } = svc('      clock_skew: 30s');
    const t = nowS();
    const nbf = await idp.sign({ iss: idp.issuer, aud: DEFAULT_RESOURCE, sub: 'x', exp: t + 3600, nbf: t + 600, iat: t });
    await rejects(s.verifyBearer(nbf, ctx), 'token_not_yet_valid', new RegExp(`not valid before ${new Date((t + 600) * 1000).toISOString()}`));
    const iat = await idp.sign({ iss: idp.issuer, aud: DEFAULT_RESOURCE, sub: 'x', exp: t + 3600, iat: t + 600 });
    await rejects(s.verifyBearer(iat, ctx), 'token_issued_in_future');
    const fine = await idp.sign({ iss: idp.issuer, aud: DEFAULT_RESOURCE, sub: 'x', exp: t + 3600, nbf: t + 20, iat: t + 20 });
    assert.equal((await s.verifyBearer(fine, ctx)).subject, 'x');
  });

  test('wrong audience: a token for another resource server', async () => {
    const { s } = svc();
    const token = await idp.clientCredentialsToken('ci-deploy', { resource: 'urn:other:service' });
    assert.equal(payloadOf(token).aud, 'urn:other:service');
    await rejects(s.verifyBearer(token, ctx), 'audience_rejected', /^audience not accepted$/);
  });

  test('wrong issuer: tokens of an issuer that is not configured', async () => {
    const other = new IdentityService(cfgFrom(`identity:\n  oidc:\n    - issuer: http://127.0.0.1:1/not-this-one\n      audiences: [${DEFAULT_RESOURCE}]\n`), store);
    await rejects(other.verifyBearer(await idp.clientCredentialsToken('other-app'), ctx), 'issuer_unknown', new RegExp(`unknown issuer "${idp.issuer}"`));
    const { s } = svc();
    const forged = await idp.sign({ iss: 'https://evil.example', aud: DEFAULT_RESOURCE, sub: 'x', exp: nowS() + 60 });
    await rejects(s.verifyBearer(forged, ctx), 'issuer_unknown');
  });

  test('alg none (hand-crafted) is refused', async () => {
    const { s } = svc();
    const token = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: idp.issuer, aud: DEFAULT_RESOURCE, sub: 'admin', exp: nowS() + 600 })}.`;
    await rejects(s.verifyBearer(token, ctx), 'algorithm_rejected', /algorithm "none" not allowed for issuer test-idp/);
  });

  test('HS256 signed with the RSA public key as the HMAC secret (key confusion) is refused', async () => {
    const { s } = svc();
    const rsaPub = createPublicKey({ key: idp.keys.RS256, format: 'jwk' });
    const h = b64({ alg: 'HS256', typ: 'JWT', kid: idp.keys.RS256.kid });
    const p = b64({ iss: idp.issuer, aud: DEFAULT_RESOURCE, sub: 'admin', exp: nowS() + 600 });
    for (const secret of [rsaPub.export({ format: 'pem', type: 'spki' }), rsaPub.export({ format: 'der', type: 'spki' })]) {
      const sig = createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url');
      await rejects(s.verifyBearer(`${h}.${p}.${sig}`, ctx), 'algorithm_rejected', /algorithm "HS256" not allowed/);
    }
    // and no config can allow it
    assert.throws(() => cfgFrom(`identity:\n  oidc:\n    - issuer: ${idp.issuer}\n      audiences: [a]\n      algorithms: [RS256, HS256, none]\n`), (e: Error) => {
      assert.match(e.message, /identity\.oidc\[0\]\.algorithms\[1\]: HS256 is a shared-secret \(HMAC\) algorithm/);
      assert.match(e.message, /identity\.oidc\[0\]\.algorithms\[2\]: algorithm "none" \(unsigned tokens\) is never accepted/);
      return true;
    });
  });

  test('an algorithm not pinned for the issuer is refused', async () => {
    const { s } = svc('      algorithms: [ES256]');
    await rejects(s.verifyBearer(await idp.clientCredentialsToken('other-app', { alg: 'RS256' }), ctx), 'algorithm_rejected', /algorithm "RS256" not allowed for issuer test-idp/);
    assert.equal((await s.verifyBearer(await idp.clientCredentialsToken('other-app', { alg: 'ES256' }), ctx)).subject, 'other-app');
  });

  test('tampered payload or signature: "signature invalid"', async () => {
    const { s } = svc();
    const token = await idp.clientCredentialsToken('other-app');
    const [h, p, sig] = token.split('.');
    const evil = b64({ ...payloadOf(token), sub: 'admin' });
    await rejects(s.verifyBearer(`${h}.${evil}.${sig}`, ctx), 'signature_invalid', /^signature invalid$/);
    const flipped = Buffer.from(sig, 'base64url');
    flipped[10] ^= 0xff;
    await rejects(s.verifyBearer(`${h}.${p}.${flipped.toString('base64url')}`, ctx), 'signature_invalid');
    // a token signed with the EC key but claiming the RSA key's kid
    const ec = await idp.sign({ iss: idp.issuer, aud: DEFAULT_RESOURCE, sub: 'x', exp: nowS() + 60 }, { alg: 'ES256', kid: idp.keys.RS256.kid });
    await rejects(s.verifyBearer(ec, ctx), 'key_unknown');
  });

  test('a token for another client: authorized_parties (azp / client_id) is enforced', async () => {
    const { s } = svc('      authorized_parties: [ci-deploy]');
    assert.equal((await s.verifyBearer(await idp.clientCredentialsToken('ci-deploy'), ctx)).subject, 'ci-deploy');
    await rejects(s.verifyBearer(await idp.clientCredentialsToken('other-app'), ctx), 'client_rejected', /client "other-app" not accepted/);
  });

  test('malformed credentials', async () => {
    const { s } = svc();
    await rejects(s.verifyBearer('hunter2', ctx), 'token_malformed', /neither an API token/);
    await rejects(s.verifyBearer('a.b.c', ctx), 'token_malformed');
    await rejects(s.verifyBearer(`${b64({ alg: 'RS256' })}.${b64({ aud: 'x' })}.sig`, ctx), 'token_malformed', /no iss claim/);
    await rejects(s.verifyBearer('x'.repeat(20_000) + '.a.b', ctx), 'token_malformed');
    await rejects(s.verifyBearer('', ctx), 'token_malformed');
  });

  test('the user name must match the subject', async () => {
    const { s } = svc();
    const token = await idp.clientCredentialsToken('other-app');
    await rejects(s.verifyBearer(token, { ...ctx, userHint: 'postgres' }), 'subject_mismatch', /user name "postgres" does not match the credential's subject "other-app"/);
    assert.equal((await s.verifyBearer(token, { ...ctx, userHint: 'other-app' })).subject, 'other-app');
  });

  test('an issuer that cannot be reached: issuer_unavailable, not counted against the source', async () => {
    const port = await freePort();
    const clock = { now: Date.now() };
    const s = new IdentityService(cfgFrom(`identity:\n  oidc:\n    - issuer: http://127.0.0.1:${port}\n      audiences: [a]\n      timeout: 2s\n  rate_limit: { failures: 1 }\n`), store, { now: () => clock.now });
    const token = `${b64({ alg: 'RS256', kid: 'k' })}.${b64({ iss: `http://127.0.0.1:${port}`, aud: 'a', exp: nowS() + 60 })}.${Buffer.alloc(256).toString('base64url')}`;
    await rejects(s.verifyBearer(token, ctx), 'issuer_unavailable', /cannot be fetched right now/);
    await rejects(s.verifyBearer(token, ctx), 'issuer_unavailable');
  });
});

describe('key rotation at the IdP', () => {
  test('unknown kid → refresh (rate-limited) → new key accepted; the old key is refused once removed', async () => {
    const { s, clock } = svc('      jwks_cooldown: 30s');
    const oldToken = await idp.clientCredentialsToken('other-app');
    await s.verifyBearer(oldToken, ctx);
    const fetched = jwks();

    await idp.rotateKeys();
    const newToken = await idp.clientCredentialsToken('other-app');
    assert.notEqual(JSON.parse(Buffer.from(newToken.split('.')[0], 'base64url').toString()).kid, JSON.parse(Buffer.from(oldToken.split('.')[0], 'base64url').toString()).kid);

    // right after a fetch, an unknown kid does not trigger another (cooldown)
    clock.now += 1000;
    await rejects(s.verifyBearer(newToken, ctx), 'key_unknown', /signing key "rsa-[0-9a-f]+" is not published by issuer test-idp/);
    // a flood of random kids within the cooldown fetches nothing
    for (let i = 0; i < 20; i++) {
      const t = await idp.sign({ iss: idp.issuer, aud: DEFAULT_RESOURCE, sub: 'x', exp: nowS() + 60 }, { kid: `random-${i}` });
      await rejects(s.verifyBearer(t, { ...ctx, remote: `127.0.1.${i}` }), 'key_unknown');
    }
    assert.equal(jwks(), fetched);

    // after the cooldown the unknown kid refreshes the keys once
    clock.now += 30_000;
    const id = await s.verifyBearer(newToken, ctx);
    assert.equal(id.subject, 'other-app');
    assert.equal(jwks(), fetched + 1);

    // the old token was cached as verified; its key is gone, so it is refused now
    await rejects(s.verifyBearer(oldToken, ctx), 'key_unknown', /is not published/);
  });

  test('a graceful rotation (old and new keys published) accepts both', async () => {
    const { s, clock } = svc();
    const oldToken = await idp.clientCredentialsToken('other-app', { alg: 'ES256' });
    await s.verifyBearer(oldToken, ctx);
    await idp.rotateKeys({ keepOld: true });
    clock.now += 31_000;
    await s.verifyBearer(await idp.clientCredentialsToken('other-app', { alg: 'ES256' }), ctx);
    await s.verifyBearer(oldToken, ctx);
  });

  test('keys older than jwks_max_age are refreshed in the background', async () => {
    const { s, clock } = svc('      jwks_max_age: 1m');
    await s.verifyBearer(await idp.clientCredentialsToken('other-app'), ctx);
    const n = jwks();
    clock.now += 61_000;
    await s.verifyBearer(await idp.clientCredentialsToken('other-app'), ctx);
    for (let i = 0; i < 50 && jwks() === n; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(jwks(), n + 1);
  });

  test('static keys from jwks_file need no network', async () => {
    const pub = Object.values(idp.keys).map((k) => {
      const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...rest } = k as Record<string, unknown>;
      return rest;
    });
    const file = path.join(dir.path, 'jwks.json');
    fs.writeFileSync(file, JSON.stringify({ keys: pub }));
    const s = new IdentityService(cfgFrom(`identity:\n  oidc:\n    - issuer: https://kubernetes.default.svc.cluster.local\n      audiences: [portcullis]\n      jwks_file: ${file}\n      claims:\n        groups: ["k8s-ns:{kubernetes.io.namespace}", "k8s-sa:{kubernetes.io.serviceaccount.name}"]\n`), store);
    const t = nowS();
    const token = await idp.sign({
      iss: 'https://kubernetes.default.svc.cluster.local',
      aud: ['portcullis'],
      sub: 'system:serviceaccount:ci:deployer',
      exp: t + 600,
      iat: t,
      nbf: t,
      'kubernetes.io': { namespace: 'ci', serviceaccount: { name: 'deployer', uid: 'u-1' }, pod: { name: 'runner-1', uid: 'u-2' } },
    });
    const id = await s.verifyBearer(token, ctx);
    assert.equal(id.subject, 'system:serviceaccount:ci:deployer');
    assert.deepEqual(id.groups, ['k8s-ns:ci', 'k8s-sa:deployer']);
  });
});

describe('claim mapping (GitHub Actions style claims, added by the provider)', () => {
  const gh = `      claims:
        subject: "gh:{repository}:{ref}"
        groups: [ci, "gh-owner:{repository_owner}", "gh-env:{environment}", "wf:{job_workflow_ref}"]
        require:
          repository_owner: acme
          ref: [refs/heads/main, "refs/tags/v*"]`;

  test('subject and groups from claims; the require constraints hold', async () => {
    const { s } = svc(gh);
    const id = await s.verifyBearer(await idp.clientCredentialsToken('ci-deploy'), { ...ctx, userHint: 'gh:acme/shop:refs/heads/main' });
    assert.equal(id.subject, 'gh:acme/shop:refs/heads/main');
    assert.deepEqual(id.groups, ['ci', 'gh-owner:acme', 'gh-env:production']);
    const rel = await s.verifyBearer(await idp.clientCredentialsToken('ci-release'), ctx);
    assert.equal(rel.subject, 'gh:acme/shop:refs/tags/v1.2.3');
  });

  test('a token from another branch is refused; a token without the claims too', async () => {
    const { s, events } = svc(gh);
    await rejects(s.verifyBearer(await idp.clientCredentialsToken('ci-feature'), ctx), 'claim_rejected', /claim "ref" not accepted/);
    await rejects(s.verifyBearer(await idp.clientCredentialsToken('other-app'), ctx), 'claim_missing', /claim "repository_owner" is required/);
    assert.deepEqual(events.map((e) => [e.code, e.method, e.protocol]), [
      ['claim_rejected', 'oidc', 'postgres'],
      ['claim_missing', 'oidc', 'postgres'],
    ]);
  });

  test('revalidate: an OIDC session ends when its token expires', async () => {
    const { s, clock } = svc(gh);
    const id = await s.verifyBearer(await idp.clientCredentialsToken('ci-deploy'), ctx);
    assert.equal(await s.revalidate(id), true);
    clock.now = (id.expiresAt as number) + 61_000;
    const r = await s.check(id);
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.code, 'token_expired');
  });
});

describe('OIDC config problems name file:line:field', () => {
  test('http for a non-loopback issuer, skew too large, bad templates, duplicate issuers', () => {
    assert.throws(
      () =>
        cfgFrom(`identity:
  oidc:
    - issuer: http://idp.example.com
      audiences: [a]
      clock_skew: 10m
      claims:
        subject: "gh:{repository"
    - issuer: http://idp.example.com
      audiences: [b]
    - issuer: https://ok.example.com
      audiences: []
`),
      (e: Error) => {
        assert.match(e.message, /portcullis\.yaml:11:\d+: identity\.oidc\[2\]\.audiences: /);
        return true;
      },
    );
    assert.throws(
      () =>
        cfgFrom(`identity:
  oidc:
    - issuer: http://idp.example.com
      audiences: [a]
      clock_skew: 10m
      claims:
        subject: "gh:{repository"
    - issuer: http://idp.example.com
      audiences: [b]
`),
      (e: Error) => {
        const m = e.message;
        assert.match(m, /:3:\d+: identity\.oidc\[0\]\.issuer: must be https \(http is allowed only for loopback addresses\)/);
        assert.match(m, /:5:\d+: identity\.oidc\[0\]\.clock_skew: at most 5m/);
        assert.match(m, /:7:\d+: identity\.oidc\[0\]\.claims\.subject: bad template: unclosed "\{"/);
        assert.match(m, /:8:\d+: identity\.oidc\[1\]\.issuer: issuer http:\/\/idp\.example\.com is configured twice/);
        return true;
      },
    );
  });
});
