// The `identity:` section of portcullis.yaml: OIDC issuers, API token limits, SSH keys bound to
// identities, SSH user CAs, the bastion's upstream SSH CA and failure rate limiting.
//
// `identityConfigSchema` is the JSON-schema fragment for the section (config.ts puts it under the
// top-level `identity` key); `parseIdentityConfig` checks what a schema cannot (URLs, algorithms,
// templates, keys, CIDRs, bounds) and reports every problem as file:line:field. It does not
// import config.ts at run time (config.ts imports this module).
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { BlockList, isIP } from 'node:net';
import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { globs, type Matcher } from '../policy/glob.js';
import { ConfigError, resolveSecret, validateAgainst, type PathSeg, type SourceProblem, type YamlSource } from '../config/source.js';
import { compileTemplate, type Template } from './template.js';
import {
  addressIn,
  cidrList,
  MIN_RSA_BITS,
  normalizeAddress,
  parseAuthorizedKeyLine,
  parsePrivateKey,
  parsePublicKeyBlob,
  parsePublicKeyLine,
  sshFingerprint,
  SshFormatError,
  type SshPublicKey,
} from './ssh-wire.js';

// --- types ------------------------------------------------------------------------------------

/** JWS algorithms an issuer may be pinned to. Never `none`, never HS* (shared secrets). */
export const JWS_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;
export type JwsAlgorithm = (typeof JWS_ALGORITHMS)[number];
export const DEFAULT_ALGORITHMS: JwsAlgorithm[] = ['RS256', 'ES256', 'EdDSA'];

export const MAX_CLOCK_SKEW_MS = 5 * 60_000;
export const DEFAULT_CLOCK_SKEW_MS = 60_000;

export interface ClaimRequirement {
  claim: string;
  /** Accepted values (globs: `refs/tags/v*`), compared with the claim's string form. */
  accept: Matcher;
}

export interface OidcIssuerConfig {
  /** Short label for messages and audit (default: the issuer's host). */
  name: string;
  /** Exactly as the tokens' `iss`. */
  issuer: string;
  audiences: string[];
  algorithms: JwsAlgorithm[];
  clockSkewMs: number;
  /** Refuse tokens whose exp − iat is longer (optional). */
  maxTokenLifetimeMs?: number;
  /** Skip discovery and fetch keys from here. */
  jwksUri?: string;
  /** Static keys (jwks_file): no network at all. */
  jwks?: { keys: JsonWebKey[] };
  /** Accepted `azp` (or `client_id`) values; absent: any. */
  authorizedParties?: string[];
  subject: Template;
  groups: Template[];
  require: ClaimRequirement[];
  /** Least time between two key refreshes caused by unknown `kid`s. */
  jwksCooldownMs: number;
  /** Keys older than this are refreshed in the background. */
  jwksMaxAgeMs: number;
  /** Discovery / JWKS request timeout. */
  timeoutMs: number;
}

export interface SshPermissions {
  pty: boolean;
  portForwarding: boolean;
  agentForwarding: boolean;
  x11Forwarding: boolean;
  userRc: boolean;
}

export const ALL_PERMISSIONS: Readonly<SshPermissions> = { pty: true, portForwarding: true, agentForwarding: true, x11Forwarding: true, userRc: true };

/** OpenSSH `from=` semantics for addresses: CIDRs, wildcard addresses, `!` negation. */
export interface AddressPattern {
  readonly source: string;
  matches(remote: string): boolean;
}

export interface BoundKey {
  key: SshPublicKey;
  fingerprint: string;
  comment: string;
  /** `cert-authority`: the key is a CA whose user certificates log in as this identity. */
  certAuthority: boolean;
  /** `principals="…"` of a cert-authority line (default: the login user name). */
  principals?: string[];
  forceCommand?: string;
  from?: AddressPattern;
  /** `expiry-time`, Unix ms. */
  expiresAt?: number;
  permissions: SshPermissions;
}

export interface SshKeyBinding {
  subject: string;
  groups: string[];
  keys: BoundKey[];
}

export interface SshUserCaConfig {
  name: string;
  key: SshPublicKey;
  fingerprint: string;
  /** Template over `{principal}`, `{key_id}`, `{serial}`. Default `{principal}`. */
  subject: Template;
  groups: Template[];
  /** A certificate extension carrying comma-separated group names (e.g. `groups@example.com`). */
  groupsExtension?: string;
  /** Principals this CA may vouch for (globs). Default: any. */
  principals: Matcher;
  /** Refuse certificates whose validity window is longer. */
  maxValidityMs?: number;
}

export interface UpstreamSshCaConfig {
  /** Resolve the CA's private key text (env:/file:/literal); errors name the config field. */
  privateKey(): string;
  ttlSeconds: number;
  /** Targets whose upstream login uses a fresh certificate (globs). */
  targets: Matcher;
}

export interface RateLimitConfig {
  /** Failures a source may have (bucket size)… */
  failures: number;
  /** …refilled over this period. */
  perMs: number;
  /** How long a source that ran out is refused. */
  cooldownMs: number;
  /** Sources never limited. */
  exempt?: BlockList;
  /** Most sources tracked at once. */
  maxSources: number;
}

export interface IdentityConfig {
  oidc: OidcIssuerConfig[];
  apiTokens: { defaultTtlMs: number | null; maxTtlMs: number | null };
  ssh: { clockSkewMs: number; authorizedKeys: SshKeyBinding[]; userCas: SshUserCaConfig[] };
  upstreamSshCa?: UpstreamSshCaConfig;
  rateLimit: RateLimitConfig;
}

export function defaultIdentityConfig(): IdentityConfig {
  return {
    oidc: [],
    apiTokens: { defaultTtlMs: 24 * 3_600_000, maxTtlMs: null },
    ssh: { clockSkewMs: DEFAULT_CLOCK_SKEW_MS, authorizedKeys: [], userCas: [] },
    rateLimit: { failures: 10, perMs: 60_000, cooldownMs: 60_000, maxSources: 10_000 },
  };
}

// --- schema -----------------------------------------------------------------------------------

const duration = { type: 'string', pattern: '^\\d+(ms|s|m|h|d)$' };
const strList = { type: 'array', items: { type: 'string', minLength: 1 } };
const name = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' };
const url = { type: 'string', pattern: '^https?://' };
const scalar = { type: ['string', 'number', 'boolean'] };

export const identityConfigSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    oidc: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['issuer', 'audiences'],
        properties: {
          name,
          issuer: url,
          audiences: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
          algorithms: { type: 'array', minItems: 1, items: { type: 'string' } },
          clock_skew: duration,
          max_token_lifetime: duration,
          jwks_uri: url,
          jwks_file: { type: 'string', minLength: 1 },
          jwks_cooldown: duration,
          jwks_max_age: duration,
          timeout: duration,
          authorized_parties: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
          claims: {
            type: 'object',
            additionalProperties: false,
            properties: {
              subject: { type: 'string', minLength: 1 },
              groups: strList,
              require: { type: 'object', additionalProperties: { anyOf: [scalar, { type: 'array', minItems: 1, items: scalar }] } },
            },
          },
        },
      },
    },
    api_tokens: {
      type: 'object',
      additionalProperties: false,
      properties: { default_ttl: { anyOf: [duration, { type: 'string', enum: ['never'] }] }, max_ttl: duration },
    },
    ssh: {
      type: 'object',
      additionalProperties: false,
      properties: {
        clock_skew: duration,
        authorized_keys: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['subject'],
            properties: {
              subject: { type: 'string', minLength: 1 },
              groups: strList,
              keys: strList,
              keys_file: { type: 'string', minLength: 1 },
            },
          },
        },
        user_cas: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['public_key'],
            properties: {
              name,
              public_key: { type: 'string', minLength: 1 },
              subject: { type: 'string', minLength: 1 },
              groups: strList,
              groups_extension: { type: 'string', minLength: 1 },
              principals: strList,
              max_validity: duration,
            },
          },
        },
      },
    },
    upstream_ssh_ca: {
      type: 'object',
      additionalProperties: false,
      required: ['private_key'],
      properties: { private_key: { type: 'string', minLength: 1 }, ttl: duration, targets: strList },
    },
    rate_limit: {
      type: 'object',
      additionalProperties: false,
      properties: {
        failures: { type: 'integer', minimum: 1, maximum: 100000 },
        per: duration,
        cooldown: duration,
        exempt: strList,
      },
    },
  },
};

// --- parsing ----------------------------------------------------------------------------------

export function parseDurationMs(s: string): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(s);
  if (!m) throw new Error(`bad duration "${s}"`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
}

const LOOPBACK_HOSTS = new Set(['localhost', '[::1]', '::1']);

export function isLoopbackHost(host: string): boolean {
  return LOOPBACK_HOSTS.has(host) || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** An issuer / JWKS URL: https, or http on a loopback host (tests). Returns an error or null. */
export function checkFetchUrl(u: string): string | null {
  let parsed: URL;
  try {
    parsed = new URL(u);
  } catch {
    return 'not a URL';
  }
  if (parsed.protocol === 'https:') return null;
  if (parsed.protocol === 'http:' && isLoopbackHost(parsed.hostname)) return null;
  return 'must be https (http is allowed only for loopback addresses)';
}

function ipPattern(p: string): RegExp | null {
  if (!/^[0-9a-fA-F.:*?]+$/.test(p) || !/[*?]/.test(p)) return null;
  let re = '^';
  for (const ch of p) re += ch === '*' ? '[0-9a-fA-F.:]*' : ch === '?' ? '[0-9a-fA-F.:]' : ch.replace('.', '\\.');
  return new RegExp(re + '$', 'i');
}

/** OpenSSH `from="…"` for addresses. Throws SshFormatError on host names (no reverse DNS here). */
export function addressPattern(source: string): AddressPattern {
  const pos = new BlockList();
  const neg = new BlockList();
  const posRe: RegExp[] = [];
  const negRe: RegExp[] = [];
  let positives = 0;
  for (const raw of source.split(',')) {
    const item = raw.trim();
    const negated = item.startsWith('!');
    const p = negated ? item.slice(1) : item;
    if (!p) throw new SshFormatError('empty pattern');
    const re = ipPattern(p);
    if (re) (negated ? negRe : posRe).push(re);
    else if (isIP(p.split('/')[0])) {
      cidrList(p, 'from'); // validates the prefix length
      (negated ? neg : pos).addSubnet(...subnetOf(p));
    } else throw new SshFormatError(`"${p.slice(0, 64)}" is not an address, CIDR or address wildcard (host names are not supported)`);
    if (!negated) positives++;
  }
  if (positives === 0) throw new SshFormatError('only negated patterns: nothing can match');
  return {
    source,
    matches(remote0: string): boolean {
      const remote = normalizeAddress(remote0);
      if (addressIn(neg, remote) || negRe.some((r) => r.test(remote))) return false;
      return addressIn(pos, remote) || posRe.some((r) => r.test(remote));
    },
  };
}

function subnetOf(p: string): [string, number, 'ipv4' | 'ipv6'] {
  const [addr, prefix] = p.split('/');
  const fam = isIP(addr);
  const max = fam === 4 ? 32 : 128;
  return [addr, prefix === undefined ? max : Number(prefix), fam === 4 ? 'ipv4' : 'ipv6'];
}

/** `expiry-time` of authorized_keys: YYYYMMDD[HHMM[SS]], local time unless suffixed with Z. */
export function parseExpiryTime(s: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?(Z)?$/.exec(s);
  if (!m) throw new SshFormatError(`expiry-time "${s.slice(0, 32)}" is not YYYYMMDD[HHMM[SS]][Z]`);
  const [y, mo, d, h = '0', mi = '0', se = '0'] = m.slice(1);
  const args = [Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(se)] as const;
  const t = m[7] ? Date.UTC(...args) : new Date(...args).getTime();
  if (!Number.isFinite(t)) throw new SshFormatError(`expiry-time "${s}" is not a valid date`);
  return t;
}

const FLAG_OPTIONS: Record<string, [keyof SshPermissions | 'all', boolean]> = {
  restrict: ['all', false],
  'no-pty': ['pty', false],
  'no-port-forwarding': ['portForwarding', false],
  'no-agent-forwarding': ['agentForwarding', false],
  'no-x11-forwarding': ['x11Forwarding', false],
  'no-user-rc': ['userRc', false],
  pty: ['pty', true],
  'port-forwarding': ['portForwarding', true],
  'agent-forwarding': ['agentForwarding', true],
  'x11-forwarding': ['x11Forwarding', true],
  'user-rc': ['userRc', true],
};

/** One authorized_keys line bound to an identity. Throws SshFormatError. */
export function parseBoundKey(line: string): BoundKey {
  const p = parseAuthorizedKeyLine(line);
  const key = parsePublicKeyBlob(p.blob);
  if (key.type !== p.keyType) throw new SshFormatError(`key type ${p.keyType.slice(0, 64)} does not match the key data (${key.type})`);
  if (key.bits !== undefined && key.bits < MIN_RSA_BITS) throw new SshFormatError(`RSA key of ${key.bits} bits; at least ${MIN_RSA_BITS} are required`);
  const out: BoundKey = { key, fingerprint: sshFingerprint(key.blob), comment: p.comment, certAuthority: false, permissions: { ...ALL_PERMISSIONS } };
  // restrict first, then the explicit permits (OpenSSH: `restrict,pty`)
  if (p.options.has('restrict')) out.permissions = { pty: false, portForwarding: false, agentForwarding: false, x11Forwarding: false, userRc: false };
  for (const [opt, value] of p.options) {
    const flag = FLAG_OPTIONS[opt];
    if (flag) {
      if (value !== true) throw new SshFormatError(`option ${opt} takes no value`);
      if (flag[0] !== 'all') out.permissions[flag[0]] = flag[1];
      continue;
    }
    if (opt === 'cert-authority') {
      if (value !== true) throw new SshFormatError('option cert-authority takes no value');
      out.certAuthority = true;
      continue;
    }
    if (value === true) throw new SshFormatError(`option ${opt} needs a value`);
    if (opt === 'command') out.forceCommand = value;
    else if (opt === 'from') out.from = addressPattern(value);
    else if (opt === 'expiry-time') out.expiresAt = parseExpiryTime(value);
    else if (opt === 'principals') out.principals = value.split(',').map((s) => s.trim()).filter(Boolean);
    else throw new SshFormatError(`option ${opt} is not supported here${/permit|tunnel/.test(opt) ? ' (forwarding is decided by the policy)' : ''}`);
  }
  if (out.principals && !out.certAuthority) throw new SshFormatError('option principals is only valid with cert-authority');
  return out;
}

function hostLabel(issuer: string): string {
  try {
    const u = new URL(issuer);
    return (u.host + u.pathname).replace(/\/+$/, '').replace(/[^A-Za-z0-9._-]+/g, '-');
  } catch {
    return issuer;
  }
}

export interface ParseIdentityOptions {
  /** Resolve secret references now (the upstream CA key), so a missing env var or file is a config error. */
  checkSecrets?: boolean;
}

function wrapSchema(path: readonly PathSeg[]): object {
  let s: object = identityConfigSchema;
  for (let i = path.length - 1; i >= 0; i--) s = { type: 'object', properties: { [String(path[i])]: s } };
  return s;
}
const wrapped = new Map<string, object>();

type Raw = Record<string, unknown>;
const isObj = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);
const strs = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);

/**
 * Parse the `identity:` section (`raw` is its JS value, `path` where it sits, normally
 * `['identity']`). Throws a ConfigError listing every problem with file:line:field.
 */
export function parseIdentityConfig(src: YamlSource, raw: unknown, path: readonly PathSeg[] = ['identity'], opts: ParseIdentityOptions = {}): IdentityConfig {
  const cfg = defaultIdentityConfig();
  if (raw === undefined || raw === null) return cfg;
  // Shape first (a no-op when config.ts already validated the whole file with the fragment).
  const key = JSON.stringify(path);
  let schema = wrapped.get(key);
  if (!schema) wrapped.set(key, (schema = wrapSchema(path)));
  let root: unknown = raw;
  for (let i = path.length - 1; i >= 0; i--) root = { [String(path[i])]: root };
  const problems: SourceProblem[] = validateAgainst(src, root, schema);
  if (problems.length) throw new ConfigError(problems);
  const r = raw as Raw;
  const at = (...p: PathSeg[]) => [...path, ...p];
  const problem = (p: PathSeg[], message: string, onKey = false) => problems.push(src.problem(at(...p), message, onKey));
  const base = dirname(resolve(src.file));
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const dur = (v: unknown, p: PathSeg[], def: number, max?: number, maxText?: string): number => {
    if (typeof v !== 'string') return def;
    const ms = parseDurationMs(v);
    if (max !== undefined && ms > max) problem(p, `at most ${maxText ?? `${max}ms`}`);
    return ms;
  };
  const template = (v: string, p: PathSeg[]): Template => {
    const t = compileTemplate(v);
    if (typeof t === 'string') {
      problem(p, `bad template: ${t}`);
      return { source: v, parts: [v], fields: [] };
    }
    return t;
  };

  // OIDC issuers
  const seenIss = new Set<string>();
  const seenNames = new Set<string>();
  (Array.isArray(r.oidc) ? r.oidc : []).forEach((o0: unknown, i: number) => {
    const o = o0 as Raw;
    const issuer = String(o.issuer);
    const bad = checkFetchUrl(issuer);
    if (bad) problem(['oidc', i, 'issuer'], bad);
    else {
      const u = new URL(issuer);
      if (u.search || u.hash) problem(['oidc', i, 'issuer'], 'an issuer has no query or fragment');
    }
    if (seenIss.has(issuer)) problem(['oidc', i, 'issuer'], `issuer ${issuer} is configured twice`);
    seenIss.add(issuer);
    const label = typeof o.name === 'string' ? o.name : hostLabel(issuer);
    if (seenNames.has(label)) problem(['oidc', i, typeof o.name === 'string' ? 'name' : 'issuer'], `two issuers are named "${label}"; give them distinct names`);
    seenNames.add(label);
    const algorithms: JwsAlgorithm[] = [];
    if (Array.isArray(o.algorithms)) {
      strs(o.algorithms).forEach((a, j) => {
        if ((JWS_ALGORITHMS as readonly string[]).includes(a)) algorithms.push(a as JwsAlgorithm);
        else if (a.toLowerCase() === 'none') problem(['oidc', i, 'algorithms', j], 'algorithm "none" (unsigned tokens) is never accepted');
        else if (/^HS\d+$/i.test(a)) problem(['oidc', i, 'algorithms', j], `${a} is a shared-secret (HMAC) algorithm; an issuer's published keys are public, so it is never accepted`);
        else problem(['oidc', i, 'algorithms', j], `unknown algorithm "${a}"; expected one of ${JWS_ALGORITHMS.join(', ')}`);
      });
    } else algorithms.push(...DEFAULT_ALGORITHMS);
    let jwks: { keys: JsonWebKey[] } | undefined;
    if (typeof o.jwks_uri === 'string') {
      const b = checkFetchUrl(o.jwks_uri);
      if (b) problem(['oidc', i, 'jwks_uri'], b);
    }
    if (typeof o.jwks_file === 'string') {
      if (typeof o.jwks_uri === 'string') problem(['oidc', i, 'jwks_file'], 'give either jwks_uri or jwks_file, not both');
      const file = abs(o.jwks_file);
      try {
        const parsed = JSON.parse(readFileSync(file, 'utf8')) as unknown;
        if (!isObj(parsed) || !Array.isArray(parsed.keys)) throw new Error('not a JWK set ({"keys": [...]})');
        const keys = parsed.keys.filter(isObj) as JsonWebKey[];
        for (const k of keys) createPublicKey({ key: k, format: 'jwk' });
        jwks = { keys };
      } catch (e) {
        problem(['oidc', i, 'jwks_file'], `cannot use ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    }
    const claims = isObj(o.claims) ? o.claims : {};
    const require: ClaimRequirement[] = [];
    if (isObj(claims.require)) {
      for (const [claim, v] of Object.entries(claims.require)) {
        const list = (Array.isArray(v) ? v : [v]).map((x) => String(x));
        require.push({ claim, accept: globs(list) });
      }
    }
    const maxLife = typeof o.max_token_lifetime === 'string' ? parseDurationMs(o.max_token_lifetime) : undefined;
    cfg.oidc.push({
      name: label,
      issuer,
      audiences: strs(o.audiences),
      algorithms,
      clockSkewMs: dur(o.clock_skew, ['oidc', i, 'clock_skew'], DEFAULT_CLOCK_SKEW_MS, MAX_CLOCK_SKEW_MS, '5m'),
      maxTokenLifetimeMs: maxLife,
      jwksUri: typeof o.jwks_uri === 'string' ? o.jwks_uri : undefined,
      jwks,
      authorizedParties: Array.isArray(o.authorized_parties) ? strs(o.authorized_parties) : undefined,
      subject: template(typeof claims.subject === 'string' ? claims.subject : '{sub}', ['oidc', i, 'claims', 'subject']),
      groups: strs(claims.groups).map((g, j) => template(g, ['oidc', i, 'claims', 'groups', j])),
      require,
      jwksCooldownMs: dur(o.jwks_cooldown, ['oidc', i, 'jwks_cooldown'], 30_000, 3_600_000, '1h'),
      jwksMaxAgeMs: dur(o.jwks_max_age, ['oidc', i, 'jwks_max_age'], 10 * 60_000, 7 * 86_400_000, '7d'),
      timeoutMs: dur(o.timeout, ['oidc', i, 'timeout'], 5000, 60_000, '1m'),
    });
  });

  // API tokens
  if (isObj(r.api_tokens)) {
    const t = r.api_tokens;
    cfg.apiTokens.maxTtlMs = typeof t.max_ttl === 'string' ? parseDurationMs(t.max_ttl) : null;
    if (t.default_ttl === 'never') cfg.apiTokens.defaultTtlMs = null;
    else if (typeof t.default_ttl === 'string') cfg.apiTokens.defaultTtlMs = parseDurationMs(t.default_ttl);
    if (cfg.apiTokens.maxTtlMs !== null) {
      if (cfg.apiTokens.defaultTtlMs === null) problem(['api_tokens', 'default_ttl'], 'tokens that never expire exceed max_ttl');
      else if (cfg.apiTokens.defaultTtlMs > cfg.apiTokens.maxTtlMs) problem(['api_tokens', 'default_ttl'], 'longer than max_ttl');
    }
  }

  // SSH
  if (isObj(r.ssh)) {
    const s = r.ssh;
    cfg.ssh.clockSkewMs = dur(s.clock_skew, ['ssh', 'clock_skew'], DEFAULT_CLOCK_SKEW_MS, MAX_CLOCK_SKEW_MS, '5m');
    (Array.isArray(s.authorized_keys) ? s.authorized_keys : []).forEach((b0: unknown, i: number) => {
      const b = b0 as Raw;
      const binding: SshKeyBinding = { subject: String(b.subject), groups: strs(b.groups), keys: [] };
      const problemsBefore = problems.length;
      strs(b.keys).forEach((line, j) => {
        try {
          binding.keys.push(parseBoundKey(line));
        } catch (e) {
          problem(['ssh', 'authorized_keys', i, 'keys', j], e instanceof SshFormatError ? e.message : `invalid key: ${(e as Error).message}`);
        }
      });
      if (typeof b.keys_file === 'string') {
        const file = abs(b.keys_file);
        let text = '';
        try {
          text = readFileSync(file, 'utf8');
        } catch (e) {
          problem(['ssh', 'authorized_keys', i, 'keys_file'], `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
        }
        text.split(/\r?\n/).forEach((line, n) => {
          if (!line.trim() || line.trim().startsWith('#')) return;
          try {
            binding.keys.push(parseBoundKey(line));
          } catch (e) {
            problem(['ssh', 'authorized_keys', i, 'keys_file'], `${file}:${n + 1}: ${e instanceof SshFormatError ? e.message : (e as Error).message}`);
          }
        });
      }
      if (binding.keys.length === 0 && problems.length === problemsBefore) problem(['ssh', 'authorized_keys', i], `no keys for ${binding.subject} (give keys or keys_file)`);
      cfg.ssh.authorizedKeys.push(binding);
    });
    const caNames = new Set<string>();
    (Array.isArray(s.user_cas) ? s.user_cas : []).forEach((c0: unknown, i: number) => {
      const c = c0 as Raw;
      const p = ['ssh', 'user_cas', i];
      let key: SshPublicKey | undefined;
      try {
        const text = resolveSecret(String(c.public_key), () => src.problem(at(...p, 'public_key'), ''));
        const line = text.split(/\r?\n/).find((l) => l.trim() && !l.trim().startsWith('#')) ?? '';
        key = parsePublicKeyLine(line.replace(/^@cert-authority\s+\S+\s+/, '').replace(/^cert-authority\s+/, ''));
        if (key.bits !== undefined && key.bits < MIN_RSA_BITS) problem([...p, 'public_key'], `RSA CA key of ${key.bits} bits; at least ${MIN_RSA_BITS} are required`);
      } catch (e) {
        if (e instanceof ConfigError) problems.push(...e.problems);
        else problem([...p, 'public_key'], `not an SSH public key: ${e instanceof SshFormatError ? e.message : (e as Error).message}`);
      }
      const fp = key ? sshFingerprint(key.blob) : '';
      const label = typeof c.name === 'string' ? c.name : `ca-${i + 1}`;
      if (caNames.has(label)) problem([...p, 'name'], `two user CAs are named "${label}"`);
      caNames.add(label);
      const subject = template(typeof c.subject === 'string' ? c.subject : '{principal}', [...p, 'subject']);
      for (const f of subject.fields) if (!['principal', 'key_id', 'serial'].includes(f)) problem([...p, 'subject'], `unknown field {${f}}; use {principal}, {key_id} or {serial}`);
      const groups = strs(c.groups).map((g, j) => {
        const t = template(g, [...p, 'groups', j]);
        for (const f of t.fields) if (!['principal', 'key_id', 'serial'].includes(f)) problem([...p, 'groups', j], `unknown field {${f}}; use {principal}, {key_id} or {serial}`);
        return t;
      });
      if (key) {
        cfg.ssh.userCas.push({
          name: label,
          key,
          fingerprint: fp,
          subject,
          groups,
          groupsExtension: typeof c.groups_extension === 'string' ? c.groups_extension : undefined,
          principals: globs(Array.isArray(c.principals) ? strs(c.principals) : ['*']),
          maxValidityMs: typeof c.max_validity === 'string' ? parseDurationMs(c.max_validity) : undefined,
        });
      }
    });
  }

  // The bastion's own CA for upstream SSH logins
  if (isObj(r.upstream_ssh_ca)) {
    const u = r.upstream_ssh_ca;
    const ref = String(u.private_key);
    const ttlMs = dur(u.ttl, ['upstream_ssh_ca', 'ttl'], 5 * 60_000, 86_400_000, '24h');
    if (ttlMs < 1000) problem(['upstream_ssh_ca', 'ttl'], 'at least 1s');
    cfg.upstreamSshCa = {
      privateKey: () => resolveSecret(ref, () => src.problem(at('upstream_ssh_ca', 'private_key'), '')),
      ttlSeconds: Math.max(1, Math.floor(ttlMs / 1000)),
      targets: globs(Array.isArray(u.targets) ? strs(u.targets) : ['*']),
    };
    if (opts.checkSecrets) {
      try {
        const text = cfg.upstreamSshCa.privateKey();
        void parsePrivateKeyChecked(text);
      } catch (e) {
        if (e instanceof ConfigError) problems.push(...e.problems);
        else problem(['upstream_ssh_ca', 'private_key'], `not a usable private key: ${(e as Error).message}`);
      }
    }
  }

  // Rate limiting of failures per source address
  if (isObj(r.rate_limit)) {
    const l = r.rate_limit;
    if (typeof l.failures === 'number') cfg.rateLimit.failures = l.failures;
    cfg.rateLimit.perMs = dur(l.per, ['rate_limit', 'per'], 60_000, 86_400_000, '1d');
    cfg.rateLimit.cooldownMs = dur(l.cooldown, ['rate_limit', 'cooldown'], 60_000, 86_400_000, '1d');
    if (cfg.rateLimit.perMs < 1000) problem(['rate_limit', 'per'], 'at least 1s');
    if (Array.isArray(l.exempt)) {
      try {
        cfg.rateLimit.exempt = cidrList(strs(l.exempt).join(','), 'exempt');
      } catch (e) {
        problem(['rate_limit', 'exempt'], (e as Error).message);
      }
    }
  }

  if (problems.length) throw new ConfigError(problems);
  return cfg;
}

function parsePrivateKeyChecked(text: string): void {
  const k = parsePrivateKey(text);
  if (k.asymmetricKeyType !== 'ed25519' && k.asymmetricKeyType !== 'ec' && k.asymmetricKeyType !== 'rsa') throw new SshFormatError(`unsupported key type ${String(k.asymmetricKeyType)}`);
}
