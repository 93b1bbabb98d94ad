// A real OpenID provider for tests: the `oidc-provider` package on 127.0.0.1 (free port), with
// - the client-credentials grant issuing JWT access tokens (features.clientCredentials +
//   features.resourceIndicators: the audience is the requested resource; extraTokenClaims adds
//   per-client claims such as GitHub-Actions-style `repository`, `ref`, `environment`);
// - an authorization-code flow issuing ID tokens (the interaction is completed by the harness:
//   login as the given account and grant `openid groups`), driven by the real `openid-client` RP;
// - real discovery (/.well-known/openid-configuration) and JWKS with RSA, EC (P-256) and Ed25519
//   keys generated here;
// - key rotation: a new Provider with a new JWKS replaces the request handler of the same http
//   server (same port, same issuer);
// - `sign()`: hand-crafted JWTs signed with the IdP's own current private keys (served by its JWKS)
//   for the cases a conforming IdP never issues (nbf in the future, tampered payloads, …).
import { generateKeyPairSync, randomUUID, type JsonWebKey } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, importJWK } from 'jose';
import * as oidc from 'openid-client';

export type IdpAlg = 'RS256' | 'ES256' | 'EdDSA';

export interface IdpClient {
  clientId: string;
  clientSecret: string;
  /** Extra claims put in this client's access tokens (client-credentials grant). */
  claims?: Record<string, unknown>;
}

export interface IdpAccount {
  sub: string;
  groups?: string[];
  email?: string;
}

export interface StartIdpOptions {
  clients?: IdpClient[];
  accounts?: IdpAccount[];
  /** Access token lifetime, seconds (default 300). */
  accessTokenTtl?: number;
}

export interface IdpKeys {
  RS256: JsonWebKey & { kid: string };
  ES256: JsonWebKey & { kid: string };
  EdDSA: JsonWebKey & { kid: string };
}

export interface TestIdp {
  readonly issuer: string;
  readonly port: number;
  /** The private JWKs in use now (one per algorithm). */
  readonly keys: IdpKeys;
  /** Requests served, by path (e.g. `/jwks`, `/.well-known/openid-configuration`). */
  readonly hits: Map<string, number>;
  /** A JWT access token from the client-credentials grant, signed with `alg`, audience `resource`. */
  clientCredentialsToken(clientId: string, opts?: { resource?: string; alg?: IdpAlg }): Promise<string>;
  /** An ID token for `account` (authorization-code flow with PKCE; audience = the web client id). */
  idToken(account: string): Promise<string>;
  /** Sign arbitrary claims with the IdP's current key for `alg` (its kid in the header). */
  sign(claims: Record<string, unknown>, opts?: { alg?: IdpAlg; kid?: string; header?: Record<string, unknown> }): Promise<string>;
  /** New keys: a new Provider serving a JWKS of the new keys (plus the old ones when `keepOld`). */
  rotateKeys(opts?: { keepOld?: boolean }): Promise<void>;
  close(): Promise<void>;
}

/** The id of the client used by the ID token flow. */
export const WEB_CLIENT = { clientId: 'web-app', clientSecret: 'web-app-secret-0123456789abcdef' };
const REDIRECT_URI = 'http://127.0.0.1/callback';
export const DEFAULT_RESOURCE = 'urn:portcullis:bastion';

// oidc-provider ships no type declarations: the harness types the few members it uses.
type NodeHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;
interface GrantInstance {
  addOIDCScope(scope: string): void;
  save(): Promise<string>;
}
interface OidcProviderInstance {
  callback(): NodeHandler;
  interactionDetails(req: http.IncomingMessage, res: http.ServerResponse): Promise<{ uid: string; params: Record<string, unknown>; prompt: { name: string } }>;
  interactionFinished(req: http.IncomingMessage, res: http.ServerResponse, result: Record<string, unknown>, opts?: { mergeWithLastSubmission?: boolean }): Promise<void>;
  Grant: new (init: { accountId: string; clientId: string }) => GrantInstance;
}
type ProviderCtor = new (issuer: string, config: Record<string, unknown>) => OidcProviderInstance;

/** Run `fn` with oidc-provider's start-up warnings (Node 20 "unsupported runtime", in-memory adapter) muted. */
async function quiet<T>(fn: () => T | Promise<T>): Promise<T> {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].startsWith('oidc-provider WARNING')) return;
    warn(...args);
  };
  try {
    return await fn();
  } finally {
    console.warn = warn;
  }
}

let providerCtor: ProviderCtor | undefined;
async function loadProvider(): Promise<ProviderCtor> {
  if (!providerCtor) {
    // A non-literal specifier: the package is untyped, its shape is declared above.
    const spec = 'oidc-provider';
    const mod = await quiet(() => import(spec) as Promise<{ default: ProviderCtor }>);
    providerCtor = mod.default;
  }
  return providerCtor;
}

function newKeys(): IdpKeys {
  const tag = randomUUID().slice(0, 8);
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const ed = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' });
  return {
    RS256: { ...rsa, kid: `rsa-${tag}`, alg: 'RS256', use: 'sig' },
    ES256: { ...ec, kid: `ec-${tag}`, alg: 'ES256', use: 'sig' },
    EdDSA: { ...ed, kid: `ed-${tag}`, alg: 'EdDSA', use: 'sig' },
  };
}

/** A cookie jar good enough for one flow against one origin. */
class Jar {
  private readonly cookies = new Map<string, string>();
  take(res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq > 0) this.cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
  }
  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

export async function startIdp(opts: StartIdpOptions = {}): Promise<TestIdp> {
  const Provider = await loadProvider();
  const clients = opts.clients ?? [];
  const accounts = new Map((opts.accounts ?? [{ sub: 'alice', groups: ['dev'] }]).map((a) => [a.sub, a]));
  const hits = new Map<string, number>();
  let keys = newKeys();
  let published: JsonWebKey[] = Object.values(keys);
  let nextAlg: IdpAlg = 'RS256';
  let provider: OidcProviderInstance;
  let handler: NodeHandler;

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    hits.set(path, (hits.get(path) ?? 0) + 1);
    if (path.startsWith('/interaction/')) {
      void finishInteraction(req, res).catch((e: unknown) => {
        res.statusCode = 500;
        res.end(String(e));
      });
      return;
    }
    handler(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;

  async function finishInteraction(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const details = await provider.interactionDetails(req, res);
    const accountId = String(details.params.login_hint ?? 'alice');
    const grant = new provider.Grant({ accountId, clientId: String(details.params.client_id) });
    grant.addOIDCScope('openid groups');
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false });
  }

  async function build(): Promise<void> {
    provider = await quiet(() => new Provider(issuer, {
      clients: [
        ...clients.map((c) => ({ client_id: c.clientId, client_secret: c.clientSecret, grant_types: ['client_credentials'], redirect_uris: [], response_types: [] })),
        { client_id: WEB_CLIENT.clientId, client_secret: WEB_CLIENT.clientSecret, grant_types: ['authorization_code'], redirect_uris: [REDIRECT_URI], response_types: ['code'] },
      ],
      jwks: { keys: published },
      cookies: { keys: ['harness-cookie-key-0123456789'] },
      scopes: ['openid', 'groups'],
      claims: { openid: ['sub'], groups: ['groups'], email: ['email'] },
      conformIdTokenClaims: false,
      enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256', 'EdDSA'] },
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => DEFAULT_RESOURCE,
          useGrantedResource: () => false,
          getResourceServerInfo: (_ctx: unknown, resource: string) => ({
            scope: 'deploy',
            audience: resource,
            accessTokenTTL: opts.accessTokenTtl ?? 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: nextAlg } },
          }),
        },
      },
      interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
      findAccount: (_ctx: unknown, id: string) => {
        const a = accounts.get(id);
        if (!a) return undefined;
        return { accountId: id, claims: () => ({ sub: id, groups: a.groups ?? [], email: a.email }) };
      },
      extraTokenClaims: (_ctx: unknown, token: { clientId?: string }) => clients.find((c) => c.clientId === token.clientId)?.claims,
      ttl: { IdToken: 300, AccessToken: opts.accessTokenTtl ?? 300, ClientCredentials: opts.accessTokenTtl ?? 300, Interaction: 300, Session: 300, Grant: 300 },
      pkce: { required: () => true },
    }));
    handler = provider.callback();
  }
  await build();

  const rp = new Map<string, oidc.Configuration>();
  async function rpFor(clientId: string, secret: string): Promise<oidc.Configuration> {
    let c = rp.get(clientId);
    if (!c) {
      c = await oidc.discovery(new URL(issuer), clientId, secret, oidc.ClientSecretBasic(secret), { execute: [oidc.allowInsecureRequests] });
      rp.set(clientId, c);
    }
    return c;
  }

  return {
    issuer,
    port,
    hits,
    get keys() {
      return keys;
    },
    async clientCredentialsToken(clientId, o = {}) {
      const c = clients.find((x) => x.clientId === clientId);
      if (!c) throw new Error(`idp harness: no client ${clientId}`);
      nextAlg = o.alg ?? 'RS256';
      const config = await rpFor(c.clientId, c.clientSecret);
      const t = await oidc.clientCredentialsGrant(config, { resource: o.resource ?? DEFAULT_RESOURCE });
      return t.access_token;
    },
    async idToken(account) {
      const config = await rpFor(WEB_CLIENT.clientId, WEB_CLIENT.clientSecret);
      const verifier = oidc.randomPKCECodeVerifier();
      const nonce = oidc.randomNonce();
      let url: URL = oidc.buildAuthorizationUrl(config, {
        redirect_uri: REDIRECT_URI,
        scope: 'openid groups',
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        nonce,
        login_hint: account,
      });
      const jar = new Jar();
      for (let hop = 0; hop < 10; hop++) {
        if (url.href.startsWith(REDIRECT_URI)) {
          const tokens = await oidc.authorizationCodeGrant(config, url, { pkceCodeVerifier: verifier, expectedNonce: nonce, idTokenExpected: true }, { redirect_uri: REDIRECT_URI });
          if (!tokens.id_token) throw new Error('idp harness: no id_token');
          return tokens.id_token;
        }
        const res = await fetch(url, { redirect: 'manual', headers: { cookie: jar.header() } });
        jar.take(res);
        const loc = res.headers.get('location');
        if (!loc) throw new Error(`idp harness: ${url.pathname} answered ${res.status} without a redirect: ${(await res.text()).slice(0, 300)}`);
        url = new URL(loc, url);
      }
      throw new Error('idp harness: too many redirects in the authorization flow');
    },
    async sign(claims, o = {}) {
      const alg = o.alg ?? 'RS256';
      const jwk = keys[alg];
      const key = await importJWK(jwk, alg);
      return new SignJWT(claims).setProtectedHeader({ alg, kid: o.kid ?? jwk.kid, typ: 'JWT', ...o.header }).sign(key);
    },
    async rotateKeys(o = {}) {
      const old = published;
      keys = newKeys();
      published = o.keepOld ? [...Object.values(keys), ...old] : Object.values(keys);
      await build();
    },
    close() {
      return new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}
