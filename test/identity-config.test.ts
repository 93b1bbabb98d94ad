// The `identity:` config section: the documented issuer snippets (GitHub Actions, GitLab CI,
// Kubernetes service accounts) parse and map realistic claim sets; the schema fragment wired into
// the bastion config reports file:line:field; the failure limiter's buckets.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign as cryptoSign } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { configSchema } from '../src/config/config.js';
import { ConfigError, validateAgainst, YamlSource } from '../src/config/source.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { IdentityError, IdentityService, identityConfigSchema, parseIdentityConfig } from '../src/identity/index.js';
import { FailureLimiter, ipv6Prefix64, sourceKey } from '../src/identity/ratelimit.js';
import { tempDir, type TempDir } from './harness/tmp.js';

let dir: TempDir;
let store: Store;
before(async () => {
  dir = await tempDir('portcullis-idcfg-');
  store = await openStore(dir.path, { inMemory: true });
});
after(async () => {
  await store.close();
  await dir.remove();
});

// The snippets of the closing note, verbatim (only jwks_file is added in the test, because the
// real issuers are not reachable from a test).
const GITHUB = `identity:
  oidc:
    - name: github
      issuer: https://token.actions.githubusercontent.com
      audiences: [https://portcullis.example.com]
      algorithms: [RS256]
      claims:
        subject: "gh:{repository}:{ref}"
        groups: [ci, "gh-repo:{repository}", "gh-env:{environment}", "gh-workflow:{job_workflow_ref}"]
        require:
          repository_owner: acme
          repository_owner_id: "1234567"
          ref: [refs/heads/main, "refs/tags/v*"]
`;
const GITLAB = `identity:
  oidc:
    - name: gitlab
      issuer: https://gitlab.com
      audiences: [https://portcullis.example.com]
      algorithms: [RS256]
      claims:
        subject: "gl:{project_path}:{ref_type}:{ref}"
        groups: [ci, "gl-group:{namespace_path}", "gl-env:{environment}"]
        require:
          namespace_path: acme
          ref_protected: "true"
`;
const KUBERNETES = `identity:
  oidc:
    - name: k8s-prod
      issuer: https://kubernetes.default.svc.cluster.local
      audiences: [portcullis]
      algorithms: [RS256, ES256]
      claims:
        subject: "{sub}"
        groups: ["k8s-ns:{kubernetes.io.namespace}", "k8s-sa:{kubernetes.io.serviceaccount.name}"]
        require:
          kubernetes.io.namespace: [ci, deploy]
`;

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const KID = 'test-kid-1';
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
function signRs256(claims: Record<string, unknown>): string {
  const h = b64({ typ: 'JWT', alg: 'RS256', kid: KID, x5t: 'abc' });
  const p = b64(claims);
  return `${h}.${p}.${cryptoSign('sha256', Buffer.from(`${h}.${p}`), rsa.privateKey).toString('base64url')}`;
}

function withStaticKeys(yaml: string): IdentityService {
  const file = path.join(dir.path, 'jwks.json');
  fs.writeFileSync(file, JSON.stringify({ keys: [{ ...rsa.publicKey.export({ format: 'jwk' }), kid: KID, use: 'sig', alg: 'RS256' }] }));
  const src = YamlSource.parse(path.join(dir.path, 'portcullis.yaml'), yaml.replace(/(\n {6}algorithms: .*\n)/, `$1      jwks_file: ${file}\n`));
  return new IdentityService(parseIdentityConfig(src, (src.value() as { identity: unknown }).identity, ['identity']), store);
}

const ctx = { remote: '127.0.0.1', protocol: 'kubernetes' as const };
const t = Math.floor(Date.now() / 1000);

describe('documented issuer snippets', () => {
  test('GitHub Actions: a deploy job of acme/shop on main', async () => {
    const s = withStaticKeys(GITHUB);
    const claims = {
      jti: 'example-id', sub: 'repo:acme/shop:environment:production', environment: 'production', aud: 'https://portcullis.example.com',
      ref: 'refs/heads/main', sha: 'd6c8f3f5', repository: 'acme/shop', repository_owner: 'acme', actor_id: '12', repository_visibility: 'private',
      repository_id: '74', repository_owner_id: '1234567', run_id: '100', run_number: '10', run_attempt: '1', runner_environment: 'github-hosted',
      actor: 'octocat', workflow: 'deploy', head_ref: '', base_ref: '', event_name: 'push', ref_type: 'branch',
      job_workflow_ref: 'acme/shop/.github/workflows/deploy.yml@refs/heads/main', iss: 'https://token.actions.githubusercontent.com', nbf: t - 5, exp: t + 300, iat: t - 5,
    };
    const id = await s.verifyBearer(signRs256(claims), ctx);
    assert.equal(id.subject, 'gh:acme/shop:refs/heads/main');
    assert.deepEqual(id.groups, ['ci', 'gh-repo:acme/shop', 'gh-env:production', 'gh-workflow:acme/shop/.github/workflows/deploy.yml@refs/heads/main']);
    // a pull request build (no environment, another ref) is refused
    await assert.rejects(s.verifyBearer(signRs256({ ...claims, ref: 'refs/pull/7/merge', environment: undefined }), ctx), (e: IdentityError) => e.code === 'claim_rejected');
    // an org re-created under the same name has another id
    await assert.rejects(s.verifyBearer(signRs256({ ...claims, repository_owner_id: '999' }), ctx), (e: IdentityError) => e.code === 'claim_rejected');
    // GitHub's default audience (the owner URL) is not this bastion
    await assert.rejects(s.verifyBearer(signRs256({ ...claims, aud: 'https://github.com/acme' }), ctx), (e: IdentityError) => e.code === 'audience_rejected');
  });

  test('GitLab CI: a protected branch of the acme group', async () => {
    const s = withStaticKeys(GITLAB);
    const claims = {
      namespace_id: '72', namespace_path: 'acme', project_id: '20', project_path: 'acme/shop', user_id: '5', user_login: 'deployer', user_email: 'd@example.com',
      pipeline_id: '1212', pipeline_source: 'push', job_id: '1212', ref: 'main', ref_type: 'branch', ref_path: 'refs/heads/main', ref_protected: 'true',
      environment: 'production', environment_protected: 'true', deployment_tier: 'production', runner_id: 1, runner_environment: 'gitlab-hosted', sha: 'abc',
      jti: 'x', iss: 'https://gitlab.com', iat: t, nbf: t - 5, exp: t + 300, sub: 'project_path:acme/shop:ref_type:branch:ref:main', aud: 'https://portcullis.example.com',
    };
    const id = await s.verifyBearer(signRs256(claims), ctx);
    assert.equal(id.subject, 'gl:acme/shop:branch:main');
    assert.deepEqual(id.groups, ['ci', 'gl-group:acme', 'gl-env:production']);
    await assert.rejects(s.verifyBearer(signRs256({ ...claims, ref_protected: 'false' }), ctx), /claim "ref_protected" not accepted/);
  });

  test('Kubernetes service account: namespace and service account from the nested claims', async () => {
    const s = withStaticKeys(KUBERNETES);
    const claims = {
      aud: ['portcullis'], exp: t + 3600, iat: t, nbf: t, iss: 'https://kubernetes.default.svc.cluster.local', sub: 'system:serviceaccount:ci:deployer',
      'kubernetes.io': { namespace: 'ci', node: { name: 'n1', uid: 'u0' }, pod: { name: 'runner-abc', uid: 'u1' }, serviceaccount: { name: 'deployer', uid: 'u2' } },
    };
    const id = await s.verifyBearer(signRs256(claims), ctx);
    assert.equal(id.subject, 'system:serviceaccount:ci:deployer');
    assert.deepEqual(id.groups, ['k8s-ns:ci', 'k8s-sa:deployer']);
    await assert.rejects(s.verifyBearer(signRs256({ ...claims, 'kubernetes.io': { ...claims['kubernetes.io'], namespace: 'default' } }), ctx), /claim "kubernetes.io.namespace" not accepted/);
  });
});

describe('the schema fragment in the bastion config', () => {
  test('wired under the top-level identity key, problems name file:line:field', () => {
    const schema = { ...configSchema, properties: { ...configSchema.properties, identity: identityConfigSchema } };
    const src = YamlSource.parse('/etc/portcullis/portcullis.yaml', `data_dir: /var/lib/portcullis
identity:
  oidc:
    - issuer: https://token.actions.githubusercontent.com
      audience: [x]
  ssh:
    user_cas:
      - name: corp
  rate_limit:
    failures: 0
`);
    const problems = validateAgainst(src, src.value(), schema).map((p) => `${p.line}:${p.field}: ${p.message}`);
    assert.ok(problems.includes('4:identity.oidc[0]: missing required key "audiences"'), problems.join('\n'));
    assert.ok(problems.includes('5:identity.oidc[0].audience: unknown key "audience"'), problems.join('\n'));
    assert.ok(problems.includes('8:identity.ssh.user_cas[0]: missing required key "public_key"'), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('10:identity.rate_limit.failures: ')), problems.join('\n'));
    // parseIdentityConfig alone reports the same shape problems
    assert.throws(() => parseIdentityConfig(src, (src.value() as { identity: unknown }).identity, ['identity']), (e: ConfigError) => e.problems.some((p) => p.line === 4 && p.field === 'identity.oidc[0]'));
  });

  test('an absent identity section gives the defaults', () => {
    const src = YamlSource.parse('/etc/p.yaml', 'data_dir: /x\n');
    const cfg = parseIdentityConfig(src, undefined, ['identity']);
    assert.deepEqual(cfg.oidc, []);
    assert.equal(cfg.apiTokens.defaultTtlMs, 24 * 3_600_000);
    assert.equal(cfg.rateLimit.failures, 10);
  });
});

describe('failure limiter', () => {
  test('IPv6 sources share a bucket per /64; IPv4-mapped addresses are IPv4', () => {
    assert.equal(ipv6Prefix64('2001:db8:0:1::5'), '2001:db8:0:1::/64');
    assert.equal(ipv6Prefix64('2001:0db8:0000:0001:ffff:1:2:3'), '2001:db8:0:1::/64');
    assert.equal(ipv6Prefix64('::1'), '0:0:0:0::/64');
    assert.equal(ipv6Prefix64('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(ipv6Prefix64('64:ff9b::192.0.2.33'), '64:ff9b:0:0::/64');
    assert.equal(ipv6Prefix64('10.0.0.1'), null);
    assert.equal(sourceKey('::ffff:10.0.0.1'), '10.0.0.1');
    const now = 1_000_000;
    const l = new FailureLimiter({ failures: 2, perMs: 60_000, cooldownMs: 60_000, maxSources: 100 }, () => now);
    l.fail('2001:db8:0:1::a');
    assert.equal(l.fail('2001:db8:0:1::b').blocked, true);
    assert.equal(l.blockedUntil('2001:db8:0:1::c'), now + 60_000);
    assert.equal(l.blockedUntil('2001:db8:0:2::c'), undefined);
  });

  test('memory stays bounded under many sources', () => {
    let now = 0;
    const l = new FailureLimiter({ failures: 5, perMs: 60_000, cooldownMs: 60_000, maxSources: 1000 }, () => now);
    for (let i = 0; i < 5000; i++) {
      now += 10;
      l.fail(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    }
    assert.ok(l.size <= 1000, `tracked ${l.size}`);
  });
});
