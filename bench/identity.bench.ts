// Credential verification throughput on one thread (issue #4: ≥ 20,000 OIDC verifications/s with
// a warm JWKS cache). A small issuer on loopback serves the discovery document and the JWKS (the
// real OpenID provider of test/harness/idp.ts is not loaded here: its AsyncLocalStorage would slow
// every promise of the process, which the bastion does not pay); the keys are fetched once, then:
//   - distinct tokens: every verification checks a signature (RS256, ES256, EdDSA);
//   - a repeated token: the verified-token cache (times and key presence re-checked each time);
//   - API tokens: id lookup in the embedded store + SHA-256 + constant-time compare.
// Baselines measured in the same run, interleaved: node:crypto's bare signature check (the floor
// of the distinct-token case) and jose's jwtVerify on the same tokens.
import { createPublicKey, generateKeyPairSync, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { jwtVerify } from 'jose';
import { YamlSource } from '../src/config/source.js';
import { openStore } from '../src/store/index.js';
import { IdentityService, parseIdentityConfig } from '../src/identity/index.js';
import { tempDir } from '../test/harness/tmp.js';

type Alg = 'RS256' | 'ES256' | 'EdDSA';
const AUDIENCE = 'urn:portcullis:bastion';
const MAX_MS = 2000;
const DISTINCT = 3000;

interface Row {
  name: string;
  /** Per wall-clock second. */
  ops: number;
  /** Per second of this process's CPU time (user + system): steadier on a shared machine. */
  cpuOps: number;
  perOpUs: number;
  baseline?: string;
}

async function measure(name: string, n: number, fn: (i: number) => Promise<unknown> | unknown): Promise<Row> {
  for (let i = 0; i < Math.min(1500, n); i++) await fn(i); // warm-up (JIT, caches)
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  let done = 0;
  while (done < n && performance.now() - t0 < MAX_MS) {
    await fn(done);
    done++;
  }
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  const cpuMs = (c.user + c.system) / 1000;
  return { name, ops: (done / ms) * 1000, cpuOps: (done / cpuMs) * 1000, perOpUs: (cpuMs * 1000) / done };
}

/**
 * Several cases measured in interleaved chunks (so that a change of machine load hits them all
 * alike): each runs `n` operations at most, all within MAX_MS * cases.length.
 */
async function interleaved(cases: { name: string; fn: (i: number) => Promise<unknown> | unknown }[], n: number): Promise<Row[]> {
  const CHUNK = 50;
  for (const c of cases) for (let i = 0; i < 1500; i++) await c.fn(i); // warm-up: let the JIT settle
  const acc = cases.map(() => ({ done: 0, wallMs: 0, cpuMs: 0 }));
  const deadline = performance.now() + MAX_MS * cases.length;
  while (acc.some((a) => a.done < n) && performance.now() < deadline) {
    for (let k = 0; k < cases.length; k++) {
      const a = acc[k];
      if (a.done >= n) continue;
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      for (let j = 0; j < CHUNK && a.done < n; j++, a.done++) await cases[k].fn(a.done);
      const c = process.cpuUsage(c0);
      a.wallMs += performance.now() - t0;
      a.cpuMs += (c.user + c.system) / 1000;
    }
  }
  return cases.map((c, k) => ({ name: c.name, ops: (acc[k].done / acc[k].wallMs) * 1000, cpuOps: (acc[k].done / acc[k].cpuMs) * 1000, perOpUs: (acc[k].cpuMs * 1000) / acc[k].done }));
}

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

function mint(alg: Alg, key: KeyObject, kid: string, issuer: string, i: number): string {
  const now = Math.floor(Date.now() / 1000);
  const h = b64({ alg, kid, typ: 'at+jwt' });
  const p = b64({ iss: issuer, aud: AUDIENCE, sub: `ci-job-${i}`, client_id: 'ci', iat: now, exp: now + 600, jti: `j${i}`, repository: 'acme/shop', ref: 'refs/heads/main' });
  const data = Buffer.from(`${h}.${p}`);
  const sig = alg === 'RS256' ? cryptoSign('sha256', data, key) : alg === 'ES256' ? cryptoSign('sha256', data, { key, dsaEncoding: 'ieee-p1363' }) : cryptoSign(null, data, key);
  return `${h}.${p}.${sig.toString('base64url')}`;
}

const keys: Record<Alg, { priv: KeyObject; pub: KeyObject; kid: string }> = {
  RS256: { ...pair(generateKeyPairSync('rsa', { modulusLength: 2048 })), kid: 'rsa-1' },
  ES256: { ...pair(generateKeyPairSync('ec', { namedCurve: 'P-256' })), kid: 'ec-1' },
  EdDSA: { ...pair(generateKeyPairSync('ed25519')), kid: 'ed-1' },
};
function pair(k: { privateKey: KeyObject; publicKey: KeyObject }): { priv: KeyObject; pub: KeyObject } {
  return { priv: k.privateKey, pub: k.publicKey };
}
let jwksFetches = 0;
const issuerServer = http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  if (req.url === '/.well-known/openid-configuration') {
    res.end(JSON.stringify({ issuer: idp.issuer, jwks_uri: `${idp.issuer}/jwks`, id_token_signing_alg_values_supported: ['RS256', 'ES256', 'EdDSA'] }));
  } else {
    jwksFetches++;
    res.end(JSON.stringify({ keys: (Object.keys(keys) as Alg[]).map((a) => ({ ...keys[a].pub.export({ format: 'jwk' }), kid: keys[a].kid, alg: a, use: 'sig' })) }));
  }
});
await new Promise<void>((resolve) => issuerServer.listen({ host: '127.0.0.1', port: 0 }, resolve));
const idp = { issuer: `http://127.0.0.1:${(issuerServer.address() as AddressInfo).port}` };
const dir = await tempDir('portcullis-bench-');
const store = await openStore(dir.path);
try {
  const src = YamlSource.parse('bench.yaml', `identity:
  oidc:
    - issuer: ${idp.issuer}
      audiences: [${AUDIENCE}]
      claims:
        subject: "gh:{repository}:{ref}"
        groups: ["ci", "job:{sub}"]
`);
  const svc = new IdentityService(parseIdentityConfig(src, (src.value() as { identity: unknown }).identity), store);
  const ctx = { remote: '127.0.0.1', protocol: 'postgres' as const };
  const rows: Row[] = [];

  for (const alg of ['RS256', 'ES256', 'EdDSA'] as const) {
    const { priv, kid } = keys[alg];
    const pub = createPublicKey(priv);
    const tokens = Array.from({ length: DISTINCT + 200 }, (_, i) => mint(alg, priv, kid, idp.issuer, i));
    await svc.verifyBearer(tokens[0], ctx); // discovery + JWKS fetched here, once
    const parts = tokens.map((t) => t.split('.'));
    // a fresh service without the verified-token cache: every verification checks the signature
    const fresh = new IdentityService(parseIdentityConfig(src, (src.value() as { identity: unknown }).identity), store, { oidcCacheSize: 0 });
    await fresh.verifyBearer(tokens[0], ctx);
    const [bare, distinct] = await interleaved(
      [
        {
          name: `${alg} bare node:crypto verify`,
          fn: (i) => {
            const [h, p, sg] = parts[i % parts.length];
            const data = Buffer.from(`${h}.${p}`);
            const sig = Buffer.from(sg, 'base64url');
            return alg === 'RS256' ? cryptoVerify('sha256', data, pub, sig) : alg === 'ES256' ? cryptoVerify('sha256', data, { key: pub, dsaEncoding: 'ieee-p1363' }, sig) : cryptoVerify(null, data, pub, sig);
          },
        },
        { name: `${alg} portcullis, distinct tokens`, fn: (i) => fresh.verifyBearer(tokens[i % tokens.length], ctx) },
      ],
      DISTINCT,
    );
    // jose runs WebCrypto jobs on the libuv pool: measured on its own so its threads do not colour the others
    const jose = await measure(`${alg} jose jwtVerify`, DISTINCT, (i) => jwtVerify(tokens[i % tokens.length], pub, { issuer: idp.issuer, audience: AUDIENCE, algorithms: [alg] }));
    distinct.baseline = `${(distinct.cpuOps / jose.cpuOps).toFixed(1)}x jose, ${((distinct.cpuOps / bare.cpuOps) * 100).toFixed(0)}% of bare verify`;
    const repeated = await measure(`${alg} portcullis, repeated token`, 200_000, () => svc.verifyBearer(tokens[1], ctx));
    repeated.baseline = `${(repeated.cpuOps / distinct.cpuOps).toFixed(0)}x distinct`;
    rows.push(bare, jose, distinct, repeated);
  }

  const apiTokens: string[] = [];
  for (let i = 0; i < 1000; i++) apiTokens.push((await svc.createToken({ subject: `agent-${i}`, groups: ['agents'] })).token);
  rows.push(await measure('API token (embedded store, 1,000 tokens)', 200_000, (i) => svc.verifyBearer(apiTokens[i % apiTokens.length], ctx)));

  const fmt = (v: number) => Math.round(v).toLocaleString('en-US');
  console.log(`credential verifications, one thread (each row ≤ ${MAX_MS / 1000}s; JWKS warm; ratios on CPU time)`);
  console.log('case'.padEnd(44), 'ops/cpu-s'.padStart(10), 'ops/s wall'.padStart(11), 'cpu µs/op'.padStart(10), '  vs baseline');
  for (const r of rows) console.log(r.name.padEnd(44), fmt(r.cpuOps).padStart(10), fmt(r.ops).padStart(11), r.perOpUs.toFixed(1).padStart(10), r.baseline ? `  ${r.baseline}` : '');
  console.log(`JWKS fetches during the whole run: ${jwksFetches}`);
} finally {
  await store.close();
  await new Promise<void>((resolve) => issuerServer.close(() => resolve()));
  await dir.remove();
}
