// `portcullis token create|list|revoke`: API tokens in the store under --data-dir. The token is
// printed once, at creation; the store keeps only its hash; `list` never prints hashes.
// Exit codes: 0 ok, 1 failed (unknown id, …), 2 usage.
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openStore } from '../store/index.js';
import { PortcullisError } from '../policy/types.js';
import { createApiToken, listApiTokens, revokeApiToken, type CreatedToken, type TokenInfo } from '../identity/tokens.js';
import { ControlClient } from '../control/client.js';
import { dataDirFrom, EXIT } from './util.js';

export const TOKEN_USAGE = [
  'portcullis token create --subject S [--groups G[,G…]] [--ttl 24h|never] [--data-dir DIR] [--json]',
  'portcullis token list [--data-dir DIR] [--json]',
  'portcullis token revoke ID [--data-dir DIR]',
].join('\n');

const HELP = `${TOKEN_USAGE}

API tokens for agents: PGPASSWORD for PostgreSQL, a bearer token for the Kubernetes API.
  create   makes a token and prints it ONCE (only its hash is stored), with its id and expiry.
           --groups is comma separated (or repeated); --ttl is a duration (30m, 24h, 90d) or
           "never" (default 24h).
  list     id, subject, groups, creation, expiry and status of every token (never the secret).
  revoke   refuses the token from now on, also for sessions already open (session.revalidate).
           ID is the token id, a unique prefix of it (at least 4 digits), or the token itself.`;

function parseTtl(v: string): number | null {
  if (v === 'never') return null;
  const m = /^(\d+)(s|m|h|d|w)$/.exec(v);
  if (!m || Number(m[1]) <= 0) throw new UsageProblem(`--ttl "${v}" is not a duration like 30m, 24h, 90d, or "never"`);
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd' | 'w'];
}

class UsageProblem extends Error {}

/**
 * Is a bastion serving from this data dir (its control socket accepts connections)? The embedded
 * store is read once by the process that opens it: a token created or revoked here would not be
 * seen by a running bastion, and its next compaction would write the change away.
 */
function bastionRunning(dataDir: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ path: path.join(dataDir, 'control.sock') });
    const done = (v: boolean) => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

function when(ms: number | undefined): string {
  return ms === undefined ? 'never' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function table(rows: TokenInfo[]): string {
  const head = ['ID', 'SUBJECT', 'GROUPS', 'CREATED', 'EXPIRES', 'STATUS'];
  const body = rows.map((r) => [r.id, r.subject, r.groups.join(',') || '-', when(r.createdAt), when(r.expiresAt), r.status + (r.revokedAt !== undefined ? ` ${when(r.revokedAt)}` : '')]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  return [head, ...body].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join('  ')).join('\n');
}

function publicInfo(r: TokenInfo): Record<string, unknown> {
  return { id: r.id, subject: r.subject, groups: r.groups, createdAt: when(r.createdAt), expiresAt: r.expiresAt === undefined ? null : when(r.expiresAt), revokedAt: r.revokedAt === undefined ? null : when(r.revokedAt), status: r.status };
}

interface TokenOps {
  create(): Promise<CreatedToken>;
  list(): Promise<TokenInfo[]>;
  revoke(): Promise<{ info: TokenInfo; already: boolean }>;
}

/** Run one subcommand (against the store, or through a running bastion) and print its result. */
async function printResult(sub: string, json: boolean, ops: TokenOps): Promise<number> {
  const out = (s: string) => process.stdout.write(s + '\n');
  if (sub === 'create') {
    const { token, record } = await ops.create();
    if (json) out(JSON.stringify({ token, ...publicInfo(record) }));
    else {
      out(token);
      out('');
      out(`id:       ${record.id}`);
      out(`subject:  ${record.subject}`);
      out(`groups:   ${record.groups.join(',') || '-'}`);
      out(`expires:  ${when(record.expiresAt)}`);
      out('The token is shown only this once; the bastion keeps only its hash.');
    }
    return EXIT.OK;
  }
  if (sub === 'list') {
    const rows = await ops.list();
    if (json) out(JSON.stringify(rows.map(publicInfo)));
    else out(rows.length ? table(rows) : 'no API tokens');
    return EXIT.OK;
  }
  const { info, already } = await ops.revoke();
  if (json) out(JSON.stringify({ ...publicInfo(info), alreadyRevoked: already }));
  else out(already ? `token ${info.id} (${info.subject}) was already revoked at ${when(info.revokedAt)}` : `revoked token ${info.id} (${info.subject})`);
  return EXIT.OK;
}

/** `portcullis token <sub> [args]`. Writes to stdout / stderr; resolves the exit code. */
export async function tokenCommand(sub: string, args: string[]): Promise<number> {
  const out = (s: string) => process.stdout.write(s + '\n');
  const err = (s: string) => process.stderr.write(s + '\n');
  if (sub === 'help' || sub === '--help' || sub === '-h' || args.includes('--help') || args.includes('-h')) {
    out(HELP);
    return EXIT.OK;
  }
  const options = {
    'data-dir': { type: 'string' },
    json: { type: 'boolean' },
    subject: { type: 'string' },
    groups: { type: 'string', multiple: true },
    ttl: { type: 'string' },
  } as const;
  let values: { 'data-dir'?: string; json?: boolean; subject?: string; groups?: string[]; ttl?: string };
  let positionals: string[];
  try {
    if (!['create', 'list', 'revoke'].includes(sub)) throw new UsageProblem(sub ? `unknown subcommand "${sub}"` : 'a subcommand is needed');
    ({ values, positionals } = parseArgs({ args, options, allowPositionals: true, strict: true }));
    const allowed: Record<string, string[]> = { create: ['data-dir', 'json', 'subject', 'groups', 'ttl'], list: ['data-dir', 'json'], revoke: ['data-dir', 'json'] };
    for (const k of Object.keys(values)) if (!allowed[sub].includes(k)) throw new UsageProblem(`--${k} does not apply to "token ${sub}"`);
    if (sub === 'revoke' ? positionals.length !== 1 : positionals.length !== 0) throw new UsageProblem(sub === 'revoke' ? 'give exactly one token ID' : `unexpected argument "${positionals[0]}"`);
    if (sub === 'create' && !values.subject) throw new UsageProblem('--subject is required');
  } catch (e) {
    err(`portcullis token: ${(e as Error).message}\nusage:\n${TOKEN_USAGE.replace(/^/gm, '  ')}`);
    return EXIT.USAGE;
  }

  let ttlMs: number | null = 24 * 3_600_000;
  if (sub === 'create' && values.ttl !== undefined) {
    try {
      ttlMs = parseTtl(values.ttl);
    } catch (e) {
      err(`portcullis token create: ${(e as Error).message}`);
      return EXIT.USAGE;
    }
  }

  const dataDir = dataDirFrom(values['data-dir']);
  if (await bastionRunning(dataDir)) {
    // A running bastion owns the store: go through its control socket.
    let c: ControlClient | null = null;
    try {
      c = await ControlClient.connect(path.join(dataDir, 'control.sock'));
      const client = c;
      const groups = (values.groups ?? []).flatMap((g) => g.split(',')).map((g) => g.trim()).filter(Boolean);
      return await printResult(sub, values.json === true, {
        create: () => client.call<CreatedToken>('token.create', { subject: values.subject, groups, ttlMs }),
        list: () => client.call<TokenInfo[]>('token.list'),
        revoke: () => client.call<{ info: TokenInfo; already: boolean }>('token.revoke', { id: positionals[0] }),
      });
    } catch (e) {
      if (e instanceof PortcullisError) {
        err(`portcullis token ${sub}: ${e.message}`);
        return EXIT.FAILED;
      }
      throw e;
    } finally {
      c?.close();
    }
  }
  const store = await openStore(dataDir);
  try {
    const now = Date.now();
    const groups = (values.groups ?? []).flatMap((g) => g.split(',')).map((g) => g.trim()).filter(Boolean);
    return await printResult(sub, values.json === true, {
      create: () => createApiToken(store, { subject: values.subject as string, groups, ttlMs }, now),
      list: () => listApiTokens(store, now),
      revoke: () => revokeApiToken(store, positionals[0], now),
    });
  } catch (e) {
    if (e instanceof PortcullisError) {
      err(`portcullis token ${sub}: ${e.message} (${e.code})`);
      return e.code === 'token_malformed' ? EXIT.USAGE : EXIT.FAILED;
    }
    throw e;
  } finally {
    await store.close();
  }
}
