#!/usr/bin/env node
// Portcullis CLI entry point. Every command has --help; exit codes: 0 ok, 1 check failed /
// denied, 2 usage or config error (CONTRACT.md "Commands").
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from '../config/source.js';
import { PortcullisError } from '../policy/types.js';
// Command modules are imported lazily so that `--help` does not load the SQL parser, ssh2, ...
import { EXIT, UsageError } from './util.js';

type Options = NonNullable<ParseArgsConfig['options']>;
type Values = Record<string, string | boolean | string[] | undefined>;

interface Command {
  name: string;
  summary: string;
  usage: string;
  options: Options;
  positionals?: boolean;
  /** Set for commands whose issue has not landed: the CLI says so and exits 2. */
  pending?: string;
  run?(v: Values, positionals: string[]): Promise<number>;
}

const s = (v: Values, k: string): string | undefined => (typeof v[k] === 'string' ? (v[k] as string) : undefined);

const COMMANDS: Command[] = [
  {
    name: 'serve',
    summary: 'run the bastion',
    usage: 'serve [--config FILE] [--data-dir DIR] [--policies DIR] | serve --demo [--data-dir DIR]   [--listen NAME=HOST:PORT]... (NAME: ssh, postgres, kubernetes, http)',
    options: { config: { type: 'string' }, 'data-dir': { type: 'string' }, policies: { type: 'string' }, demo: { type: 'boolean' }, 'kube-upstream': { type: 'string' }, listen: { type: 'string', multiple: true } },
    run: async (v) => (await import('./serve.js')).serve({ config: s(v, 'config'), dataDir: s(v, 'data-dir'), policies: s(v, 'policies'), demo: v.demo === true, kubeUpstream: s(v, 'kube-upstream'), listen: Array.isArray(v.listen) ? v.listen : [] }),
  },
  {
    name: 'config check',
    summary: 'validate the config and the policies (errors name file:line:field)',
    usage: 'config check [--config FILE] [--policies DIR]',
    options: { config: { type: 'string' }, policies: { type: 'string' } },
    run: async (v) => (await import('./config.js')).configCheck({ config: s(v, 'config'), policies: s(v, 'policies') }),
  },
  {
    name: 'policy eval',
    summary: 'decide requests: JSON lines in, one decision JSON line out each',
    usage: 'policy eval --policies DIR [--request FILE|-]',
    options: { policies: { type: 'string' }, request: { type: 'string' } },
    run: async (v) => (await import('./policy.js')).policyEval({ policies: s(v, 'policies'), request: s(v, 'request') }),
  },
  {
    name: 'policy explain',
    summary: 'the full trace of rules tried for a request',
    usage: 'policy explain --policies DIR --request FILE|-',
    options: { policies: { type: 'string' }, request: { type: 'string' } },
    run: async (v) => (await import('./policy.js')).policyExplain({ policies: s(v, 'policies'), request: s(v, 'request') }),
  },
  {
    name: 'policy test',
    summary: 'run policy test files (default DIR/tests/*.yaml); exit 1 on any mismatch',
    usage: 'policy test --policies DIR [--verbose] [TESTS...]',
    options: { policies: { type: 'string' }, verbose: { type: 'boolean', short: 'v' } },
    positionals: true,
    run: async (v, p) => (await import('./policy.js')).policyTest({ policies: s(v, 'policies'), tests: p, verbose: v.verbose === true }),
  },
  {
    name: 'policy simulate',
    summary: 'replay the audited requests of a period against candidate policies; exit 1 if an allowed request would now be denied (unless --accept)',
    usage: 'policy simulate --policies DIR [--since 7d] [--until ISO] [--data-dir DIR] [--accept] [--json]',
    options: { policies: { type: 'string' }, since: { type: 'string' }, until: { type: 'string' }, 'data-dir': { type: 'string' }, accept: { type: 'boolean' }, json: { type: 'boolean' } },
    run: async (v) =>
      (await import('./simulate.js')).policySimulate({ policies: s(v, 'policies'), since: s(v, 'since'), until: s(v, 'until'), dataDir: s(v, 'data-dir'), accept: v.accept === true, json: v.json === true }),
  },
  {
    name: 'audit verify',
    summary: 'exit 0 if the audit chain is intact; exit 1 and the first bad line otherwise',
    usage: 'audit verify [--data-dir DIR] [--public-key FILE]',
    options: { 'data-dir': { type: 'string' }, 'public-key': { type: 'string' } },
    run: async (v) => (await import('./audit.js')).auditVerify({ dataDir: s(v, 'data-dir'), publicKey: s(v, 'public-key') }),
  },
  {
    name: 'audit tail',
    summary: 'print the last audit events (-f to follow)',
    usage: 'audit tail [--data-dir DIR] [-n N] [-f] [--json]',
    options: { 'data-dir': { type: 'string' }, lines: { type: 'string', short: 'n' }, follow: { type: 'boolean', short: 'f' }, json: { type: 'boolean' } },
    run: async (v) => (await import('./audit.js')).auditTail({ dataDir: s(v, 'data-dir'), lines: s(v, 'lines'), follow: v.follow === true, json: v.json === true }),
  },
  {
    name: 'audit search',
    summary: 'search the audit log by identity, target, decision, protocol, time, text',
    usage: 'audit search [--data-dir DIR] [--subject S] [--target T] [--effect allow|deny|review] [--protocol P] [--type TYPE] [--since ISO|7d] [--until ISO] [--text STR] [--shadow] [--limit N] [--json]',
    options: {
      'data-dir': { type: 'string' }, subject: { type: 'string' }, target: { type: 'string' }, effect: { type: 'string' }, protocol: { type: 'string' },
      type: { type: 'string' }, since: { type: 'string' }, until: { type: 'string' }, text: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' }, shadow: { type: 'boolean' },
    },
    run: async (v) => (await import('./audit.js')).auditSearch(v as Record<string, string | boolean | undefined>),
  },
  {
    name: 'mask test',
    summary: "print stdin masked by the policies' detectors, and which detector fired where",
    usage: 'mask test --policies DIR [--all-detectors] < FILE',
    options: { policies: { type: 'string' }, 'all-detectors': { type: 'boolean' } },
    run: async (v) => (await import('./mask.js')).maskTest({ policies: s(v, 'policies'), allDetectors: v['all-detectors'] === true }),
  },
  {
    name: 'console',
    summary: 'the operator console (blessed TUI) over the control socket',
    usage: 'console [--data-dir DIR | --socket PATH]',
    options: { 'data-dir': { type: 'string' }, socket: { type: 'string' } },
    run: async (v) => (await import('../../tui/main.js')).consoleCommand({ dataDir: s(v, 'data-dir'), socket: s(v, 'socket') }),
  },
  {
    name: 'kubeconfig',
    summary: 'print a kubeconfig that points kubectl at the bastion (token or exec credential plugin)',
    usage: 'kubeconfig --identity X --target Y (--token T | --exec [--token-file F | --token-env VAR]) [--config FILE | --data-dir DIR] [--server URL] [--namespace NS] [-o FILE] | kubeconfig --credential [--token-file F | --token-env VAR]',
    options: { config: { type: 'string' }, 'data-dir': { type: 'string' }, identity: { type: 'string' }, target: { type: 'string' }, token: { type: 'string' }, exec: { type: 'boolean' }, 'token-file': { type: 'string' }, 'token-env': { type: 'string' }, credential: { type: 'boolean' }, server: { type: 'string' }, namespace: { type: 'string' }, output: { type: 'string', short: 'o' } },
    run: async (v) => (await import('./kubeconfig.js')).kubeconfigCommand({ config: s(v, 'config'), dataDir: s(v, 'data-dir'), identity: s(v, 'identity'), target: s(v, 'target'), token: s(v, 'token'), exec: v.exec === true, tokenFile: s(v, 'token-file'), tokenEnv: s(v, 'token-env'), credential: v.credential === true, server: s(v, 'server'), namespace: s(v, 'namespace'), output: s(v, 'output') }),
  },
  {
    name: 'sessions',
    summary: 'list live sessions (over the control socket)',
    usage: 'sessions [--data-dir DIR | --socket PATH] [--json]',
    options: { 'data-dir': { type: 'string' }, socket: { type: 'string' }, json: { type: 'boolean' } },
    run: async (v) => (await import('./ops.js')).sessionsCommand({ dataDir: s(v, 'data-dir'), socket: s(v, 'socket'), json: v.json === true }),
  },
  {
    name: 'approvals',
    summary: 'list pending approvals (--all: every state)',
    usage: 'approvals [--data-dir DIR | --socket PATH] [--all] [--json]',
    options: { 'data-dir': { type: 'string' }, socket: { type: 'string' }, all: { type: 'boolean' }, json: { type: 'boolean' } },
    run: async (v) => (await import('./ops.js')).approvalsCommand({ dataDir: s(v, 'data-dir'), socket: s(v, 'socket'), all: v.all === true, json: v.json === true }),
  },
  {
    name: 'approve',
    summary: 'approve a held request (the requester cannot approve itself); --scope same-request --for 10m lets retries of the same request through',
    usage: 'approve ID [--reason TEXT] [--scope once|same-request] [--for 10m] [--data-dir DIR | --socket PATH]',
    options: { 'data-dir': { type: 'string' }, socket: { type: 'string' }, reason: { type: 'string' }, scope: { type: 'string' }, for: { type: 'string' } },
    positionals: true,
    run: async (v, p) =>
      (await import('./ops.js')).decideCommand('approved', p[0], { dataDir: s(v, 'data-dir'), socket: s(v, 'socket'), reason: s(v, 'reason'), scope: s(v, 'scope'), for: s(v, 'for') }),
  },
  {
    name: 'deny',
    summary: 'deny a held request',
    usage: 'deny ID [--reason TEXT] [--data-dir DIR | --socket PATH]',
    options: { 'data-dir': { type: 'string' }, socket: { type: 'string' }, reason: { type: 'string' } },
    positionals: true,
    run: async (v, p) => (await import('./ops.js')).decideCommand('denied', p[0], { dataDir: s(v, 'data-dir'), socket: s(v, 'socket'), reason: s(v, 'reason') }),
  },
  {
    name: 'kill',
    summary: 'end a live session',
    usage: 'kill ID [--data-dir DIR | --socket PATH]',
    options: { 'data-dir': { type: 'string' }, socket: { type: 'string' } },
    positionals: true,
    run: async (v, p) => (await import('./ops.js')).killCommand(p[0], { dataDir: s(v, 'data-dir'), socket: s(v, 'socket') }),
  },
  {
    name: 'budgets',
    summary: 'damage budget counters with their limits (over the control socket)',
    usage: 'budgets [--data-dir DIR | --socket PATH] [--json]',
    options: { 'data-dir': { type: 'string' }, socket: { type: 'string' }, json: { type: 'boolean' } },
    run: async (v) => (await import('./ops.js')).budgetsCommand({ dataDir: s(v, 'data-dir'), socket: s(v, 'socket'), json: v.json === true }),
  },
  {
    name: 'replay',
    summary: 'replay a recording in the terminal (space pause, arrows seek, q quit); transcripts as text',
    usage: 'replay SESSION [--speed N] [--idle-time-limit S] [--data-dir DIR]',
    options: { 'data-dir': { type: 'string' }, speed: { type: 'string' }, 'idle-time-limit': { type: 'string' } },
    positionals: true,
    run: async (v, p) => (await import('./recordings.js')).replayCommand(p[0], { dataDir: s(v, 'data-dir'), speed: s(v, 'speed'), idleTimeLimit: s(v, 'idle-time-limit') }),
  },
  {
    name: 'export',
    summary: 'export a recording as self-contained HTML (asciinema-player inlined; transcripts as HTML)',
    usage: 'export SESSION --html FILE [--idle-time-limit S] [--speed N] [--data-dir DIR]',
    options: { 'data-dir': { type: 'string' }, html: { type: 'string' }, speed: { type: 'string' }, 'idle-time-limit': { type: 'string' } },
    positionals: true,
    run: async (v, p) => (await import('./recordings.js')).exportCommand(p[0], { dataDir: s(v, 'data-dir'), html: s(v, 'html'), speed: s(v, 'speed'), idleTimeLimit: s(v, 'idle-time-limit') }),
  },
  { name: 'ssh ca', summary: 'print the @cert-authority line agents put in known_hosts for ProxyJump', usage: 'ssh ca [--data-dir DIR]', options: { 'data-dir': { type: 'string' } }, run: async (v) => (await import('./sshca.js')).sshCa({ dataDir: s(v, 'data-dir') }) },
  { name: 'token', summary: 'create, list and revoke API tokens (the secret is printed once)', usage: 'token create --subject S [--groups G,G] [--ttl 24h] | token list [--json] | token revoke ID  [--data-dir DIR]', options: {} },
  {
    name: 'install',
    summary: 'install binary, config, user, directories and the systemd unit',
    usage: 'install [--prefix DIR] [--dry-run] [--binary PATH]',
    options: { prefix: { type: 'string' }, 'dry-run': { type: 'boolean' }, binary: { type: 'string' } },
    run: async (v) => (await import('./install.js')).install({ prefix: s(v, 'prefix'), dryRun: v['dry-run'] === true, binary: s(v, 'binary') }),
  },
];

function mainHelp(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'portcullis — a policy-as-code bastion for tool-using agents (SSH, PostgreSQL, Kubernetes API)',
    '',
    'usage: portcullis <command> [options]     portcullis <command> --help',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}${c.pending ? `  [not in this build yet: ${c.pending}]` : ''}`),
    '',
    'exit codes: 0 ok, 1 check failed / denied, 2 usage or config error',
    'docs: README.md, ../shared/CONTRACT.md (commands, policy eval format, demo, reference policy)',
  ].join('\n');
}

function commandHelp(c: Command): string {
  const opts = Object.entries(c.options).map(([k, o]) => `  --${k}${o.short ? `, -${o.short}` : ''}${o.type === 'string' ? ' VALUE' : ''}`);
  return [`portcullis ${c.usage}`, '', c.summary, ...(opts.length ? ['', 'options:', ...opts, '  --help'] : ['', 'options:', '  --help'])].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    process.stdout.write(mainHelp() + '\n');
    return argv.length === 0 ? EXIT.USAGE : EXIT.OK;
  }
  if (argv[0] === '--version' || argv[0] === 'version') {
    process.stdout.write('portcullis 0.1.0\n');
    return EXIT.OK;
  }
  if (argv[0] === 'token' && !(argv.length === 2 && (argv[1] === '--help' || argv[1] === '-h'))) return (await import('./token.js')).tokenCommand(argv[1] ?? '', argv.slice(2));
  const two = `${argv[0]} ${argv[1] ?? ''}`;
  const cmd = COMMANDS.find((c) => c.name === two) ?? COMMANDS.find((c) => c.name === argv[0]);
  if (!cmd) {
    const group = COMMANDS.filter((c) => c.name.startsWith(argv[0] + ' '));
    if (group.length) {
      const helpAsked = argv.includes('--help') || argv.includes('-h');
      process[helpAsked ? 'stdout' : 'stderr'].write(`usage:\n${group.map((c) => `  portcullis ${c.usage}`).join('\n')}\n`);
      return helpAsked ? EXIT.OK : EXIT.USAGE;
    }
    process.stderr.write(`portcullis: unknown command "${argv[0]}" (see portcullis --help)\n`);
    return EXIT.USAGE;
  }
  const rest = argv.slice(cmd.name.split(' ').length);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(commandHelp(cmd) + '\n');
    return EXIT.OK;
  }
  if (cmd.pending || !cmd.run) {
    process.stderr.write(`portcullis: "${cmd.name}" is not in this build yet; it lands with ${cmd.pending}\n`);
    return EXIT.USAGE;
  }
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: rest, options: cmd.options, allowPositionals: cmd.positionals === true, strict: true }) as { values: Values; positionals: string[] };
  } catch (e) {
    process.stderr.write(`portcullis ${cmd.name}: ${(e as Error).message}\nusage: portcullis ${cmd.usage}\n`);
    return EXIT.USAGE;
  }
  try {
    return await cmd.run(parsed.values, parsed.positionals);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`portcullis ${cmd.name}: ${e.message}\nusage: portcullis ${cmd.usage}\n`);
      return EXIT.USAGE;
    }
    if (e instanceof ConfigError) {
      process.stderr.write(`${e.message}\n`);
      return EXIT.USAGE;
    }
    if (e instanceof PortcullisError) {
      process.stderr.write(`portcullis ${cmd.name}: ${e.message} (${e.code})\n`);
      return EXIT.USAGE;
    }
    throw e;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`portcullis: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exitCode = 70;
  },
);
