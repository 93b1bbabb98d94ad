// The operator console driven for real: `portcullis console` runs in a pseudo-terminal
// (node-pty, 80x24, TERM=xterm-256color) against a running core and control server; the test
// reads the screen through a headless xterm, presses keys, and checks what an operator sees:
// the sessions list, help, the live view of a terminal session, the approvals queue — where it
// approves a DELETE held on a real PostgreSQL session through the proxy, which then runs —, a
// resize, recordings with replay, audit search, and a reconnect after the daemon restarts.
// With PORTCULLIS_CONSOLE_CAPTURES=DIR the screens are written there (docs/console.md).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import pg from 'pg';
import pty from 'node-pty';
import xterm from '@xterm/headless';
import { startControlServer } from '../src/control/server.js';
import { Core, type SessionRecording } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { createApiToken, verifyApiToken } from '../src/identity/tokens.js';
import { initFacts } from '../src/policy/actions.js';
import { startPostgresProxy, type PostgresProxy } from '../src/proxy/postgres/index.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { withPostgres } from './harness/pg.js';
import { tempDir, type TempDir } from './harness/tmp.js';

const CLI = resolve('dist/src/cli/main.js');
const CAPTURES = process.env.PORTCULLIS_CONSOLE_CAPTURES;
const log = createLogger('error', () => undefined);
const agent = { subject: 'demo-agent', groups: ['agents'] };
const db = withPostgres();

let tmp: TempDir;
let dataDir: string;
let store: Store;
let core: Core;
let proxy: PostgresProxy;
let control: { close(): Promise<void> };
let sock: string;

before(async () => {
  await initFacts();
  tmp = await tempDir('pc-console-');
  dataDir = join(tmp.path, 'data');
  cpSync('examples/policies', join(tmp.path, 'policies'), { recursive: true });
  store = await openStore(dataDir);
  core = await Core.open({ dataDir, policiesDir: join(tmp.path, 'policies'), audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 1000 }, store, log, approvalTimeoutMs: 120_000 });
  proxy = await startPostgresProxy(core, {
    port: 0,
    allowPlaintext: true,
    dataDir,
    log,
    authenticate: async (_user, password) => {
      const rec = await verifyApiToken(store, password, Date.now());
      return { subject: rec.subject, groups: rec.groups, authMethod: 'api-token' };
    },
    targets: (name) => (name === 'shop' ? { host: db.host, port: db.port, database: 'shop', user: db.user, password: db.password } : undefined),
  });
  sock = join(dataDir, 'control.sock');
  control = await startControlServer(core, { socket: sock, log });
});
after(async () => {
  await control?.close();
  await proxy?.close();
  await core?.close();
  await store?.close();
  await tmp?.remove();
});

/** The console in a pseudo-terminal, read through a headless xterm. */
class ConsoleUnderTest {
  readonly p: pty.IPty;
  readonly term: InstanceType<typeof xterm.Terminal>;
  exit: { code: number } | null = null;
  private writes = 0;

  constructor(args: string[], cols = 80, rows = 24) {
    this.term = new xterm.Terminal({ cols, rows, allowProposedApi: true });
    this.p = pty.spawn(process.execPath, [CLI, 'console', ...args], { name: 'xterm-256color', cols, rows, cwd: tmp.path, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TERM: 'xterm-256color', LANG: 'C.UTF-8', HOME: tmp.path } });
    this.p.onData((d) => {
      this.writes++;
      this.term.write(d, () => this.writes--);
    });
    this.p.onExit(({ exitCode }) => (this.exit = { code: exitCode }));
  }

  lines(): string[] {
    const b = this.term.buffer.active;
    const out: string[] = [];
    for (let y = 0; y < this.term.rows; y++) out.push(b.getLine(b.viewportY + y)?.translateToString(true) ?? '');
    return out;
  }

  text(): string {
    return this.lines().join('\n');
  }

  /** Wait (bounded, 20 s) until the screen matches every pattern. */
  waitFor(what: string, ...res: RegExp[]): Promise<string> {
    return this.waitUntil(what, (t) => res.every((r) => r.test(t)), () => res.filter((r) => !r.test(this.text())).join(', '));
  }

  /** Wait (bounded, 20 s) until `ok(screen text, lines)`. */
  async waitUntil(what: string, ok: (t: string, lines: string[]) => boolean, missing: () => string = () => ''): Promise<string> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const t = this.text();
      if (this.writes === 0 && ok(t, this.lines())) return t;
      if (this.exit) throw new Error(`the console exited (${this.exit.code}) while waiting for ${what}; screen:\n${t}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} ${missing()}; screen:\n${t}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  keys(s: string): void {
    this.p.write(s);
  }

  resize(cols: number, rows: number): void {
    this.p.resize(cols, rows);
    this.term.resize(cols, rows);
  }

  capture(name: string): void {
    if (!CAPTURES) return;
    mkdirSync(CAPTURES, { recursive: true });
    writeFileSync(join(CAPTURES, `${name}.txt`), this.lines().map((l) => l.trimEnd()).join('\n') + '\n');
  }
}

const ESC = '\x1b';
const ENTER = '\r';

describe('portcullis console', () => {
  let ssh: { id: string };
  let rec: SessionRecording;
  let c: ConsoleUnderTest;

  test('sessions: the live list with identity, target, protocol, duration and last command, in 80x24', async () => {
    const s = await core.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent, remote: '127.0.0.1:50022' });
    ssh = s;
    rec = core.record(s.id, { width: 80, height: 24 });
    rec.output(Buffer.from('demo-agent@sandbox:~$ ls\r\nnotes.txt  report.csv\r\ndemo-agent@sandbox:~$ '));
    await core.decide(s.id, { protocol: 'ssh', identity: agent, target: 'sandbox', command: 'ls' });
    await core.decide(s.id, { protocol: 'ssh', identity: agent, target: 'sandbox', command: 'rm -rf /srv/data' });
    c = new ConsoleUnderTest(['--socket', sock]);
    const t = await c.waitFor('the sessions list', /sessions \(1\)/, /demo-agent/, /sandbox/, /ssh/, /rm -rf \/srv\/data/, /connected/);
    const lines = c.lines();
    assert.equal(lines.length, 24);
    assert.match(lines[0]!, /Portcullis │ sessions/);
    assert.match(lines[23]!, /\? help {2}\/ filter {2}: cmd {2}Esc back {2}q quit/);
    assert.match(t, new RegExp(s.id.slice(0, 8)));
    c.capture('sessions');
  });

  test('help: ? shows the keymap; any key closes it', async () => {
    c.keys('?');
    await c.waitFor('the help screen', /help \(any key closes\)/, /Enter +live view of the selected session/, /\? +this help/, /Esc +back/, /q, Ctrl-C +quit/);
    c.capture('help');
    c.keys(ESC);
    const t = await c.waitUntil('help closed', (text) => !/any key closes/.test(text));
    assert.match(t, /sessions \(1\)/);
  });

  test('live view: the terminal as the agent sees it (recording so far, then live), decisions inline', async () => {
    c.keys(ENTER);
    await c.waitFor('the live view', /terminal 80x24/, /notes\.txt {2}report\.csv/, /ALLOW +ls/, /DENY +rm -rf \/srv\/data/);
    rec.output(Buffer.from('uptime\r\n 12:00:01 up 3 days,  load average: 0.01\r\ndemo-agent@sandbox:~$ '));
    await core.decide(ssh.id, { protocol: 'ssh', identity: agent, target: 'sandbox', command: 'uptime' });
    await c.waitFor('live output', /up 3 days, {2}load average: 0\.01/, /ALLOW +uptime/);
    c.capture('live');
    c.keys(ESC);
    await c.waitFor('back to the list', /sessions \(1\)/);
  });

  test('approvals: a DELETE held on a real PostgreSQL session is approved from the console (a, reason, Enter) and then runs', async () => {
    const token = (await createApiToken(store, { subject: 'demo-agent', groups: ['agents'] }, Date.now())).token;
    const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'demo-agent', password: token, database: 'shop', ssl: false, application_name: 'console-test' });
    await client.connect();
    await client.query("SET portcullis.reason = 'customer 1000 asked to be forgotten (GDPR)'");
    const notices: string[] = [];
    client.on('notice', (n) => notices.push(n.message ?? ''));
    const held = client.query('DELETE FROM customers WHERE id = 1000');
    const deadline = Date.now() + 20_000;
    while (!notices.some((n) => /held for approval/.test(n)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const id = /held for approval (\w+)/.exec(notices.join('\n'))?.[1];
    assert.ok(id, `no hold notice: ${notices.join('; ')}`);
    // The bell rang and the header counts it on any screen.
    await c.waitFor('the pending count', /1 pending/, new RegExp(`new approval ${id}`));
    // The PostgreSQL session's live view: its statements, and the held one inline.
    await c.waitFor('two sessions', /sessions \(2\)/, /shop +postgres/);
    c.keys('\x1b[H'); // Home: the newest session
    c.keys(ENTER);
    await c.waitFor('the PostgreSQL live view', /demo-agent → shop \(postgres\)/, /statements \(\d+\)/, /SET portcullis\.reason/, new RegExp(`HELD ${id}: DELETE FROM customers WHERE id = 1000`), /REVIEW +DELETE FROM customers/);
    c.capture('live-pg');
    c.keys(ESC);
    await c.waitFor('back to the list', /sessions \(2\)/);
    c.keys('2');
    await c.waitFor('the approvals queue', new RegExp(id), /DELETE FROM customers WHERE id = 1000/, /agent's why customer 1000 asked to be forgotten \(GDPR\)/, /rule +.*postgres\.yaml:/, /identity +demo-agent \(groups agents\)/);
    c.capture('approvals');
    c.keys('a');
    await c.waitFor('the reason prompt', new RegExp(`approve ${id} — reason`));
    c.keys('checked the ticket');
    await c.waitFor('the typed reason', /checked the ticket█/);
    c.capture('approve-prompt');
    c.keys(ENTER);
    const result = await held;
    assert.equal(result.rowCount, 1, 'the approved DELETE ran');
    await c.waitFor('the confirmation', new RegExp(`${id} approved by \\w+`), /no pending approvals/);
    const left = await client.query('SELECT count(*)::int AS n FROM customers WHERE id = 1000');
    assert.equal(left.rows[0].n, 0);
    await client.end();
    // t shows every state: the decided one is listed with who decided.
    c.keys('t');
    await c.waitFor('all approvals', new RegExp(`${id} +approved`), /state +approved by \w+ at .*: checked the ticket/);
    c.capture('approvals-all');
  });

  test('resize: the layout follows the terminal (100x30), and back to 80x24', async () => {
    c.resize(100, 30);
    await c.waitUntil('the wider layout', (text, l) => /approvals: 0 pending of 1/.test(text) && l[0]!.length > 90 && /q quit/.test(l[29]!));
    let lines = c.lines();
    assert.equal(lines.length, 30);
    assert.match(lines[0]!, /connected $/);
    assert.ok(lines[0]!.length > 90, `the header spans the new width: ${JSON.stringify(lines[0])}`);
    assert.match(lines[29]!, /q quit/);
    assert.ok(lines.some((l) => /^└─+┘$/.test(l) && l.length === 100), 'a border spans 100 columns');
    c.resize(80, 24);
    const t = await c.waitUntil('the 80x24 layout again', (text, l) => /approvals: 0 pending of 1/.test(text) && l.some((x) => /^└─+┘$/.test(x) && x.length === 80));
    lines = c.lines();
    assert.ok(lines.some((l) => /^└─+┘$/.test(l) && l.length === 80), `a border spans 80 columns:\n${t}`);
  });

  test('recordings: the list and an in-console replay (pause with space)', async () => {
    c.keys('3');
    await c.waitFor('the recordings list', /recordings \(\d+\)/, new RegExp(`${ssh.id.slice(0, 8)} +terminal`), /transcript/);
    c.capture('recordings');
    // The ssh session's cast is the live one at the top or among the rows: select it by filter.
    c.keys('/');
    c.keys(ssh.id.slice(0, 8));
    c.keys(ENTER);
    await c.waitFor('the filtered list', /recordings \(\d+\)/, new RegExp(`\\[/${ssh.id.slice(0, 8)}\\]`));
    c.keys(ENTER);
    await c.waitFor('the replay', /notes\.txt {2}report\.csv/, /up 3 days/, /(playing|ended) +\d+:\d\d\/\d+:\d\d +speed 1x/);
    c.keys(' ');
    c.capture('replay');
    c.keys(ESC);
    await c.waitFor('back to recordings', /recordings \(\d+\)/);
  });

  test('audit search: / with a query, the most recent matches, Enter for the whole event', async () => {
    c.keys('4');
    await c.waitFor('the audit list', /audit: \d+ most recent/, /session\.open/);
    c.keys('/');
    c.keys('effect=deny');
    c.keys(ENTER);
    const t = await c.waitUntil('the search result', (text) => /matching effect=deny/.test(text) && /rm -rf \/srv\/data/.test(text) && !/searching/.test(text));
    assert.doesNotMatch(t, / allow /);
    assert.doesNotMatch(t, /session\.open/);
    c.capture('audit');
    c.keys(ENTER);
    await c.waitFor('the event', /"type": "request"/, /"command": "rm -rf \/srv\/data"/);
    c.capture('audit-event');
    c.keys('\x1b[6~'); // PgDn
    await c.waitFor('the rest of the event', /"effect": "deny"/, /"hash": "[0-9a-f]{64}"/);
    c.keys(ESC);
    await c.waitFor('back to the list', /matching effect=deny/);
  });

  test('the console survives the daemon restarting: it reconnects and reloads', async () => {
    c.keys(':sessions');
    c.keys(ENTER);
    await c.waitFor('sessions', /sessions \(1\)/);
    await control.close();
    await c.waitFor('the disconnection', /reconnecting/);
    c.capture('disconnected');
    await core.closeSession(ssh.id, 'done');
    control = await startControlServer(core, { socket: sock, log });
    const t = await c.waitFor('the reconnection', / connected $/m, /sessions \(0\)/, /no live sessions/);
    assert.doesNotMatch(t, /reconnecting/);
  });

  test('q quits with exit code 0', async () => {
    c.keys('q');
    const deadline = Date.now() + 10_000;
    while (!c.exit && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(c.exit, { code: 0 });
  });
});
