// Recordings end to end: the asciicast writer's files are accepted by the real asciinema CLI
// (`asciinema cat`, `asciinema play -s 100 -i 0.1`) byte for byte, including UTF-8 characters
// split across chunks, input, resizes and markers; the reader validates and names file:line;
// `portcullis replay` plays them; `portcullis export --html` is self-contained (and opens in
// headless Chromium when it is installed); a PostgreSQL session's transcript (a real session
// through the proxy) is rendered as text and HTML; `audit verify` fails on a tampered or missing
// .cast bound by its session.close event.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import pg from 'pg';
import pty from 'node-pty';
import { CastWriter, partPath } from '../recordings/asciicast.js';
import { exportHtml, PLAYER_JS } from '../recordings/export-html.js';
import { findSession, listRecordings } from '../recordings/library.js';
import { Player, timeline } from '../recordings/player.js';
import { castOutput, loadCast, loadCastParts, parseCast, readCastParts } from '../recordings/reader.js';
import { readTranscriptFile, renderTranscriptText } from '../recordings/transcript.js';
import { ConfigError, YamlSource } from '../src/config/source.js';
import { SessionActivity } from '../src/control/activity.js';
import { recordingOps } from '../src/control/recordings.js';
import { parseConfig } from '../src/config/config.js';
import { verifyAudit } from '../src/core/audit-verify.js';
import { Core } from '../src/core/core.js';
import { createLogger } from '../src/core/log.js';
import { createApiToken, verifyApiToken } from '../src/identity/tokens.js';
import { initFacts } from '../src/policy/actions.js';
import { startPostgresProxy, type PostgresProxy } from '../src/proxy/postgres/index.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { withPostgres } from './harness/pg.js';
import { tempDir, type TempDir } from './harness/tmp.js';

const CLI = resolve('dist/src/cli/main.js');
const log = createLogger('error', () => undefined);
const agent = { subject: 'demo-agent', groups: ['agents'] };
const db = withPostgres();

let tmp: TempDir;
let dataDir: string;
let store: Store;
let core: Core;
let proxy: PostgresProxy;

before(async () => {
  await initFacts();
  tmp = await tempDir('pc-rec-');
  dataDir = join(tmp.path, 'data');
  cpSync('examples/policies', join(tmp.path, 'policies'), { recursive: true });
  store = await openStore(dataDir);
  core = await Core.open({ dataDir, policiesDir: join(tmp.path, 'policies'), audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 1000 }, store, log });
  proxy = await startPostgresProxy(core, {
    port: 0,
    allowPlaintext: true,
    dataDir,
    log,
    authenticate: async (user, password) => {
      const rec = await verifyApiToken(store, password, Date.now());
      return { subject: rec.subject, groups: rec.groups, authMethod: 'api-token' };
    },
    targets: (name) => (name === 'shop' ? { host: db.host, port: db.port, database: 'shop', user: db.user, password: db.password } : undefined),
  });
});
after(async () => {
  await proxy?.close();
  await core?.close();
  await store?.close();
  await tmp?.remove();
});

function cli(args: string[], opts: { input?: string } = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, input: opts.input ?? '' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Run a command under a pseudo-terminal (asciinema cat reads /dev/tty); its output, exact. */
function underPty(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((res, rej) => {
    const p = pty.spawn(cmd, args, { name: 'xterm', cols: 200, rows: 50, cwd: tmp.path, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', HOME: tmp.path } });
    let out = '';
    const timer = setTimeout(() => {
      p.kill();
      rej(new Error(`${cmd} ${args.join(' ')} timed out; output so far: ${JSON.stringify(out)}`));
    }, 60_000);
    p.onData((d) => (out += d));
    p.onExit(({ exitCode }) => {
      clearTimeout(timer);
      // Let the last output drain.
      setTimeout(() => res({ code: exitCode, out }), 50);
    });
  });
}

/** A recording with everything the writer must get right; returns its file and expected output. */
function writeTricky(file: string, opts: { maxBytes?: number } = {}): { expected: string; summary: ReturnType<CastWriter['close']> } {
  let clock = 0;
  const w = CastWriter.open(file, { width: 80, height: 24, title: 'tricky', idle_time_limit: 5 }, { now: () => clock, ...(opts.maxBytes ? { maxBytes: opts.maxBytes } : {}) });
  const parts: string[] = [];
  const out = (b: Buffer | string, dt = 10) => {
    clock += dt;
    w.output(b);
    parts.push(typeof b === 'string' ? b : '');
  };
  out('$ printf "h\\u00e9llo"\r\n');
  // Multibyte characters split at every possible byte boundary.
  let expectedSplit = '';
  for (const ch of ['\u00e9', '\u20ac', '\u{1F600}', '\u4e2d']) {
    const b = Buffer.from(ch, 'utf8');
    for (let cut = 1; cut < b.length; cut++) {
      clock += 5;
      w.output(Buffer.concat([Buffer.from('['), b.subarray(0, cut)]));
      clock += 5;
      w.output(Buffer.concat([b.subarray(cut), Buffer.from(']')]));
      expectedSplit += `[${ch}]`;
    }
  }
  clock += 5;
  w.input(Buffer.from('ls -la\r'));
  out('\x1b[1;31mred bold\x1b[0m and a bell \x07 and a tab\t\r\n');
  w.resize(100, 30);
  w.marker('command: ls -la');
  out('after the resize: \u00ab\u00bb "quotes" \\ backslash\r\n', 30_000); // 30 s idle: -i caps it
  out(Buffer.from('bytes: \u00fc\u00f6\r\n$ ', 'utf8'));
  const summary = w.close();
  const expected = '$ printf "h\\u00e9llo"\r\n' + expectedSplit + '\x1b[1;31mred bold\x1b[0m and a bell \x07 and a tab\t\r\n' + 'after the resize: \u00ab\u00bb "quotes" \\ backslash\r\n' + 'bytes: \u00fc\u00f6\r\n$ ';
  void parts;
  return { expected, summary };
}

describe('asciicast writer and reader', () => {
  test('the reader parses what the writer wrote: output, input, resize, marker; times never go back', async () => {
    const f = join(tmp.path, 'tricky.cast');
    const { expected, summary } = writeTricky(f);
    const { header, events } = await loadCast(f);
    assert.deepEqual([header.version, header.width, header.height, header.title, header.idle_time_limit], [2, 80, 24, 'tricky', 5]);
    assert.equal(castOutput(events), expected);
    assert.deepEqual([...new Set(events.map((e) => e.code))].sort(), ['i', 'm', 'o', 'r']);
    assert.equal(events.find((e) => e.code === 'r')?.data, '100x30');
    assert.equal(events.find((e) => e.code === 'm')?.data, 'command: ls -la');
    assert.equal(events.find((e) => e.code === 'i')?.data, 'ls -la\r');
    assert.ok(events.every((e, i) => i === 0 || e.time >= events[i - 1]!.time));
    assert.equal(summary.events, events.length);
    assert.equal(summary.bytes, readFileSync(f).length);
    assert.equal(summary.truncated, false);
  });

  test('asciinema cat (the real CLI) prints exactly the recorded output', async () => {
    const f = join(tmp.path, 'cat.cast');
    const { expected } = writeTricky(f);
    const r = await underPty('asciinema', ['cat', f]);
    assert.equal(r.code, 0, r.out);
    assert.equal(r.out, expected);
  });

  test('asciinema play -s 100 -i 0.1 (the real CLI) plays it', async () => {
    const f = join(tmp.path, 'play.cast');
    const { expected } = writeTricky(f);
    const r = spawnSync('asciinema', ['play', '-s', '100', '-i', '0.1', f], { encoding: 'utf8', timeout: 60_000, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', HOME: tmp.path } });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, expected);
  });

  test('a recording made through Core.record and closed by Core.closeSession is accepted by asciinema', async () => {
    const s = await core.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent });
    const rec = core.record(s.id, { width: 80, height: 24 });
    const e = Buffer.from('\u00e9t\u00e9 \u20ac\r\n', 'utf8');
    for (let i = 0; i < e.length; i++) rec.output(e.subarray(i, i + 1)); // one byte at a time
    rec.resize(90, 20);
    rec.marker('done');
    await core.closeSession(s.id, 'test');
    const r = await underPty('asciinema', ['cat', rec.path]);
    assert.equal(r.code, 0);
    assert.equal(r.out, '\u00e9t\u00e9 \u20ac\r\n');
  });

  test('the size cap stops the recording with a marker; the file stays valid for asciinema', async () => {
    const f = join(tmp.path, 'capped.cast');
    const w = CastWriter.open(f, { width: 80, height: 24 }, { maxBytes: 600 });
    for (let i = 0; i < 50; i++) w.output(`line ${i} ${'x'.repeat(20)}\r\n`);
    const s = w.close();
    assert.equal(s.truncated, true);
    const { events } = parseCast(readFileSync(f, 'utf8'), f);
    assert.match(events[events.length - 1]!.data, /recording stopped: size cap of 600 bytes reached/);
    const r = await underPty('asciinema', ['cat', f]);
    assert.equal(r.code, 0);
    assert.equal(r.out, castOutput(events));
  });

  test('invalid recordings are refused with file:line and the reason', () => {
    const bad: [string, RegExp][] = [
      ['', /:1: empty recording/],
      ['{"version": 1, "width": 80, "height": 24}\n', /:1: unsupported version 1/],
      ['{"version": 2, "width": 0, "height": 24}\n', /:1: header.width must be a positive integer/],
      ['{"version": 2, "width": 80, "height": 24}\n[0.5, "o", "a"]\n[0.2, "o", "b"]\n', /:3: event time 0.2 is before the previous event's 0.5/],
      ['{"version": 2, "width": 80, "height": 24}\n[0.5, "x", "a"]\n', /:2: unknown event code "x"/],
      ['{"version": 2, "width": 80, "height": 24}\n[0.5, "r", "wide"]\n', /:2: a resize event's data must be COLSxROWS/],
      ['{"version": 2, "width": 80, "height": 24}\n[0.5, "o"]\n', /:2: an event must be a JSON array/],
      ['{"version": 2, "width": 80, "height": 24}\n\n[0.5, "o", "a"]\n', /:2: empty line/],
    ];
    for (const [text, re] of bad) assert.throws(() => parseCast(text, 'x.cast'), (e: Error & { code?: string }) => e.code === 'cast_invalid' && re.test(e.message) && e.message.startsWith('x.cast:'), JSON.stringify(text));
  });
});

describe('playback', () => {
  test('the timeline caps idle gaps; the player honours speed, pause and backward seeks (reset + replay)', () => {
    const events = [
      { time: 0.5, code: 'o' as const, data: 'a', line: 2 },
      { time: 30.5, code: 'o' as const, data: 'b', line: 3 },
      { time: 31, code: 'r' as const, data: '100x30', line: 4 },
      { time: 32, code: 'o' as const, data: 'c', line: 5 },
    ];
    assert.deepEqual(timeline(events, 2).map((f) => f.t), [0.5, 2.5, 3, 4]);
    let now = 0;
    const out: string[] = [];
    const sizes: string[] = [];
    let resets = 0;
    let ended = 0;
    const p = new Player(events, { output: (d) => out.push(d), resize: (c, r) => sizes.push(`${c}x${r}`), reset: () => resets++, end: () => ended++ }, { speed: 2, idleTimeLimit: 2, now: () => now });
    assert.equal(p.duration, 4);
    p.play();
    p.pause();
    now = 1000; // paused: the clock does not move the position
    assert.equal(p.position(), 0);
    p.play();
    now = 2000; // 1 s of wall time at 2x = 2 s of recording
    p.seek(p.position()); // deliver what is due
    assert.deepEqual(out, ['a']);
    p.seek(3.5);
    assert.deepEqual(out, ['a', 'b']);
    assert.deepEqual(sizes, ['100x30']);
    p.seek(1);
    assert.equal(resets, 1);
    assert.deepEqual(out, ['a', 'b', 'a']);
    assert.equal(ended, 0);
    p.seek(10); // past the end while playing: the rest, then the end
    assert.deepEqual(out, ['a', 'b', 'a', 'b', 'c']);
    assert.equal(ended, 1);
    assert.equal(p.ended, true);
    p.stop();
  });

  test('portcullis replay plays a session by id prefix (--speed, --idle-time-limit) and says what is wrong otherwise', async () => {
    const s = await core.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent });
    const rec = core.record(s.id, { width: 80, height: 24 });
    rec.output(Buffer.from('hello from the sandbox\r\n'));
    rec.output(Buffer.from('$ \u00e9\r\n'));
    await core.closeSession(s.id);
    const r = cli(['replay', s.id.slice(0, 8), '--data-dir', dataDir, '--speed', '100', '--idle-time-limit', '0.1']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'hello from the sandbox\r\n$ \u00e9\r\n');
    const missing = cli(['replay', 'nosuchsession', '--data-dir', dataDir]);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /no recording of session nosuchsession/);
    const badSpeed = cli(['replay', s.id, '--data-dir', dataDir, '--speed', 'fast']);
    assert.equal(badSpeed.status, 2);
    assert.match(badSpeed.stderr, /--speed must be a number/);
    assert.throws(() => findSession(dataDir, ''), { code: 'recording_not_found' });
  });
});

describe('export and transcripts', () => {
  test('export --html: one self-contained file with asciinema-player and the cast inlined, nothing fetched', async () => {
    const s = await core.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent, remote: '127.0.0.1:40000' });
    const rec = core.record(s.id, { width: 80, height: 24 });
    rec.output(Buffer.from('</script><script>alert(1)</script> \u2028 & done\r\n'));
    await core.closeSession(s.id, 'bye');
    const out = join(tmp.path, 'export.html');
    const r = cli(['export', s.id, '--html', out, '--data-dir', dataDir, '--idle-time-limit', '1']);
    assert.equal(r.status, 0, r.stderr);
    const html = readFileSync(out, 'utf8');
    const player = readFileSync(join('node_modules', ...PLAYER_JS.split('/').slice(1)), 'utf8');
    assert.ok(html.includes(player.slice(200, 400)), 'the player bundle is inlined');
    assert.match(html, /AsciinemaPlayer\.create\(\{data:cast\}/);
    // No external resources at all, and the recording cannot break out of its script element.
    assert.doesNotMatch(html, /<(script|link|img|iframe)[^>]+(src|href)=/i);
    assert.equal((html.match(/<\/script>/g) ?? []).length, (html.match(/<script[\s>]/g) ?? []).length);
    const m = /<script type="application\/json" id="pc-cast">([^<]*)<\/script>/.exec(html);
    assert.ok(m, 'the cast is embedded as JSON');
    assert.equal(JSON.parse(m[1]!), readFileSync(rec.path, 'utf8'));
    assert.match(html, /demo-agent \(agents\)/);
    assert.match(html, /sandbox \(ssh\)/);
  });

  test('the exported HTML opens in headless Chromium and the player loads the cast', async (t) => {
    const chromium = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
    if (!chromium) {
      t.skip('Chromium is not installed (/usr/bin/chromium): the browser check did not run; the HTML was checked statically by the test above');
      return;
    }
    const s = await core.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent });
    const rec = core.record(s.id, { width: 80, height: 24 });
    rec.output(Buffer.from('visible in the browser\r\n'));
    await core.closeSession(s.id);
    const out = join(tmp.path, 'browser.html');
    assert.equal(cli(['export', s.id, '--html', out, '--data-dir', dataDir]).status, 0);
    const r = spawnSync(chromium, ['--headless', '--no-sandbox', '--disable-gpu', '--virtual-time-budget=5000', '--dump-dom', `file://${out}`], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    // The rendered elements only: the inlined player JS/CSS name .ap-overlay-error too.
    const dom = r.stdout.replace(/<(script|style)\b[\s\S]*?<\/\1>/g, '');
    assert.match(dom, /class="ap-wrapper|class="ap-player/, 'the player element was created');
    assert.doesNotMatch(dom, /<[^>]*class="[^"]*ap-overlay-error/, 'the player shows no error');
  });

  test('a PostgreSQL session (through the proxy) has a transcript: replay prints it, export renders it, masked', async () => {
    const token = (await createApiToken(store, { subject: 'demo-agent', groups: ['agents'] }, Date.now())).token;
    const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'demo-agent', password: token, database: 'shop', ssl: false });
    await client.connect();
    const sessions = core.listSessions().filter((x) => x.protocol === 'postgres');
    const session = sessions[sessions.length - 1]!.id;
    await client.query('SELECT id, name, card_number FROM customers ORDER BY id LIMIT 2');
    await assert.rejects(client.query('DELETE FROM orders'));
    await client.end();
    const file = join(dataDir, 'recordings', `${session}.pg.jsonl`);
    const deadline = Date.now() + 10_000;
    while (!(existsSync(file) && readFileSync(file, 'utf8').includes('"type":"end"')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const entries = readTranscriptFile(file);
    const text = renderTranscriptText(entries);
    assert.match(text, /ALLOW\s+SELECT id, name, card_number FROM customers ORDER BY id LIMIT 2/);
    assert.match(text, /DENY\s+DELETE FROM orders/);
    assert.match(text, /no-unbounded-writes/);
    const r = cli(['replay', session, '--data-dir', dataDir]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, text);
    // The sample rows are masked: no full card number anywhere in the export.
    const direct = await db.connect();
    const cards = (await direct.query<{ card_number: string }>('SELECT card_number FROM customers ORDER BY id LIMIT 2')).rows;
    const out = join(tmp.path, 'pg.html');
    assert.equal(cli(['export', session, '--html', out, '--data-dir', dataDir]).status, 0);
    const html = readFileSync(out, 'utf8');
    assert.match(html, /DELETE FROM orders/);
    assert.match(html, /pc-entry pc-deny/);
    assert.equal(cards.length, 2);
    for (const c of cards) {
      assert.ok(!html.includes(c.card_number), 'a card number leaked into the export');
      assert.ok(html.includes(c.card_number.slice(-4)), 'the masked card keeps its last 4 digits');
    }
    assert.doesNotMatch(html, /<script/i, 'a transcript export needs no script');
  });

  test('transcript HTML escapes what the agent typed', () => {
    const html = exportHtml({ title: 't', transcript: [{ type: 'statement', time: '2024-01-01T00:00:00.000Z', statement: "SELECT '<img src=x onerror=alert(1)>'", decision: { effect: 'allow', rule: 'r', reason: '' } }] });
    assert.ok(html.includes('&lt;img src=x onerror=alert(1)&gt;'));
    assert.doesNotMatch(html, /<img/);
  });
});

describe('recordings in the audit chain', () => {
  test('audit verify checks every recording bound by session.close: tampered or missing .cast fails, naming the file', async () => {
    const s = await core.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent });
    const rec = core.record(s.id, { width: 80, height: 24 });
    rec.output(Buffer.from('rm -rf / was denied\r\n'));
    await core.closeSession(s.id, 'done');
    await core.audit.flush();
    const ok = await verifyAudit(dataDir);
    assert.equal(ok.ok, true, JSON.stringify(ok));
    assert.ok(ok.ok && ok.recordings >= 1);
    const original = readFileSync(rec.path);
    // One changed byte.
    writeFileSync(rec.path, Buffer.from(original.toString('utf8').replace('denied', 'allowed')));
    const bad = await verifyAudit(dataDir);
    assert.equal(bad.ok, false);
    assert.ok(!bad.ok && bad.problem.includes(rec.path) && /was modified/.test(bad.problem), JSON.stringify(bad));
    const r = cli(['audit', 'verify', '--data-dir', dataDir]);
    assert.equal(r.status, 1);
    assert.ok(r.stdout.includes(rec.path), r.stdout);
    assert.match(r.stdout, new RegExp(`line ${!bad.ok ? bad.line : 0} \\(seq \\d+\\)`));
    // Missing.
    rmSync(rec.path);
    const gone = await verifyAudit(dataDir);
    assert.ok(!gone.ok && gone.problem.includes(rec.path) && /is missing/.test(gone.problem), JSON.stringify(gone));
    // Restored: intact again.
    writeFileSync(rec.path, original);
    assert.equal((await verifyAudit(dataDir)).ok, true);
  });
});

describe('rotation: a recording goes on in <session>.<n>.cast parts, each audited', () => {
  test('a 4 KiB part cap gives 3 parts; each is valid for asciinema; replay of the whole equals the input; audit verify names a tampered or missing part', async () => {
    const rdir = join(tmp.path, 'rot');
    const rstore = await openStore(rdir);
    const rcore = await Core.open({ dataDir: rdir, policiesDir: join(tmp.path, 'policies'), audit: { sync: 'writes', intervalMs: 50, checkpointEvery: 1000 }, store: rstore, log, recordings: { maxFileBytes: 4096, maxSessionBytes: 1024 * 1024, fsync: 'close' } });
    try {
      const s = await rcore.openSession({ protocol: 'ssh', target: 'sandbox', identity: agent });
      const rec = rcore.record(s.id, { width: 100, height: 30 });
      let input = '';
      // ~10 KiB of output: two rotations. Split multibyte characters straddle the rotations too.
      for (let i = 0; i < 100; i++) {
        const line = `line ${String(i).padStart(3, '0')} \u00e9\u20ac ${'x'.repeat(60)}\r\n`;
        const b = Buffer.from(line, 'utf8');
        rec.output(b.subarray(0, 11));
        rec.output(b.subarray(11)); // cuts the é in two
        input += line;
        if (i === 50) rec.marker('half way');
      }
      await rcore.closeSession(s.id, 'done');
      await rcore.audit.flush();
      const files = [0, 1, 2].map((n) => partPath(rec.path, n));
      assert.ok(files.every((f) => existsSync(f)), 'three parts');
      assert.equal(existsSync(partPath(rec.path, 3)), false, 'no fourth part');
      assert.match(files[1]!, /\.1\.cast$/);
      let catted = '';
      let prevLast = 0;
      for (const [n, f] of files.entries()) {
        const bytes = readFileSync(f);
        assert.ok(bytes.length <= 4096, `${f} is ${bytes.length} bytes`);
        const { header, events } = parseCast(bytes.toString('utf8'), f);
        assert.deepEqual([header.width, header.height], [100, 30]);
        assert.equal(typeof header.timestamp, 'number');
        if (n > 0) assert.deepEqual([events[0]!.code, events[0]!.data], ['m', `continued from part ${n - 1}`]);
        assert.ok(events[0]!.time >= prevLast, 'time offsets go on from the session start');
        prevLast = events[events.length - 1]!.time;
        const r = await underPty('asciinema', ['cat', f]);
        assert.equal(r.code, 0, r.out);
        assert.equal(r.out, castOutput(events));
        catted += r.out;
      }
      assert.equal(catted, input);
      // Read as one: in order, one header, every event.
      const whole = await loadCastParts(files);
      assert.equal(castOutput(whole.events), input);
      assert.equal(castOutput(parseCast(readCastParts(files), 'joined').events), input);
      const found = findSession(rdir, s.id.slice(0, 8));
      assert.deepEqual(found.castParts, files);
      const listed = listRecordings(rdir).filter((f) => f.session === s.id);
      assert.equal(listed.length, 1);
      assert.deepEqual(listed[0]!.parts, files);
      assert.equal(listed[0]!.bytes, files.reduce((n, f) => n + readFileSync(f).length, 0));
      const replay = cli(['replay', s.id, '--data-dir', rdir, '--speed', '1000', '--idle-time-limit', '0.01']);
      assert.equal(replay.status, 0, replay.stderr);
      assert.equal(replay.stdout, input);
      const html = join(tmp.path, 'rot.html');
      const exp = cli(['export', s.id, '--data-dir', rdir, '--html', html]);
      assert.equal(exp.status, 0, exp.stderr);
      assert.ok(readFileSync(html, 'utf8').includes('continued from part 1'), 'the export holds the later parts');
      // The control socket's ops (the console's recordings screen): one entry, sent as one recording.
      const activity = new SessionActivity(rcore);
      const audited: Record<string, unknown>[] = [];
      const ops = recordingOps<null>(rcore, activity, async (_type, _conn, data) => void audited.push(data));
      const list = (await ops['recordings.list']!.run({}, null)) as { session: string; bytes: number }[];
      assert.deepEqual(list.filter((x) => x.session === s.id).map((x) => x.bytes), [listed[0]!.bytes]);
      const got = (await ops['recording.get']!.run({ session: s.id }, null)) as { kind: string; text: string };
      assert.equal(got.kind, 'cast');
      assert.equal(castOutput(parseCast(got.text, 'recording.get').events), input);
      assert.deepEqual(audited[0]?.parts, files);
      activity.close();
      // session.close binds every part.
      const ok = await verifyAudit(rdir);
      assert.equal(ok.ok, true, JSON.stringify(ok));
      assert.ok(ok.ok && ok.recordings === 3);
      // Part 2 tampered.
      const p2 = readFileSync(files[1]!);
      writeFileSync(files[1]!, Buffer.from(p2.toString('utf8').replace('line 0', 'line 9')));
      const bad = await verifyAudit(rdir);
      assert.ok(!bad.ok && bad.problem.includes(files[1]!) && /was modified/.test(bad.problem), JSON.stringify(bad));
      const r = cli(['audit', 'verify', '--data-dir', rdir]);
      assert.equal(r.status, 1);
      assert.ok(r.stdout.includes(files[1]!), r.stdout);
      writeFileSync(files[1]!, p2);
      // Part 3 deleted.
      const p3 = readFileSync(files[2]!);
      rmSync(files[2]!);
      const gone = await verifyAudit(rdir);
      assert.ok(!gone.ok && gone.problem.includes(files[2]!) && /is missing/.test(gone.problem), JSON.stringify(gone));
      writeFileSync(files[2]!, p3);
      assert.equal((await verifyAudit(rdir)).ok, true);
    } finally {
      await rcore.close();
      await rstore.close();
    }
  });

  test('the session cap stops the recording across parts with a marker; fsync: close', async () => {
    const f = join(tmp.path, 'rot-capped.cast');
    const w = CastWriter.open(f, { width: 80, height: 24 }, { maxFileBytes: 4096, maxBytes: 10_000, syncEvery: 0 });
    for (let i = 0; i < 300; i++) w.output(`line ${i} ${'y'.repeat(40)}\r\n`);
    const s = w.close();
    assert.equal(s.truncated, true);
    assert.equal(s.parts?.length, 3);
    assert.ok(s.total_bytes! <= 10_000 + 200, String(s.total_bytes));
    assert.deepEqual(s.parts!.map((p) => p.path), [0, 1, 2].map((n) => partPath(f, n)));
    for (const p of s.parts!) assert.equal(readFileSync(p.path).length, p.bytes);
    const last = s.parts![2]!.path;
    const { events } = parseCast(readFileSync(last, 'utf8'), last);
    assert.match(events[events.length - 1]!.data, /recording stopped: size cap of 10000 bytes reached/);
    const r = await underPty('asciinema', ['cat', last]);
    assert.equal(r.code, 0, r.out);
    assert.equal(r.out, castOutput(events));
  });

  test('config: recordings.max_file_size / max_session_size / fsync are validated with file:line:field', () => {
    const ok = parseConfig(YamlSource.parse('p.yaml', 'data_dir: /tmp/x\nrecordings:\n  max_file_size: 1MiB\n  max_session_size: 8MiB\n  fsync: close\n'));
    assert.deepEqual(ok.recordings, { maxFileBytes: 1024 * 1024, maxSessionBytes: 8 * 1024 * 1024, fsync: 'close' });
    assert.deepEqual(parseConfig(YamlSource.parse('d.yaml', 'data_dir: /tmp/x\n')).recordings, { maxFileBytes: 256 * 1024 ** 2, maxSessionBytes: 4 * 1024 ** 3, fsync: 'interval' });
    const bad: [string, RegExp][] = [
      ['recordings:\n  fsync: always\n', /p\.yaml:2:.*recordings\.fsync/],
      ['recordings:\n  max_file_size: 12 MB\n', /p\.yaml:2:.*recordings\.max_file_size/],
      ['recordings:\n  max_file_size: 1KiB\n', /p\.yaml:2:.*recordings\.max_file_size.*at least 4KiB/],
      ['recordings:\n  max_file_size: 2GiB\n  max_session_size: 1GiB\n', /p\.yaml:2:.*recordings\.max_file_size.*exceeds max_session_size/],
    ];
    for (const [text, re] of bad) {
      assert.throws(() => parseConfig(YamlSource.parse('p.yaml', text)), (e: Error) => e instanceof ConfigError && re.test(e.message), `${JSON.stringify(text)}`);
    }
  });
});

describe('single binary', () => {
  test('export works from dist/portcullis (player files embedded), when the binary is built', async (t) => {
    const bin = resolve('dist/portcullis');
    if (!existsSync(bin)) {
      t.skip('dist/portcullis is not built (./build.sh): the embedded player was not checked here');
      return;
    }
    const work = await tempDir('pc-bin-export-');
    try {
      const f = join(work.path, 'x.cast');
      writeTricky(f);
      const out = join(work.path, 'x.html');
      const r = await new Promise<{ code: number | null; err: string }>((res) => {
        const p = spawn(bin, ['export', f, '--html', out], { cwd: work.path, env: { PATH: '/usr/bin:/bin', PORTCULLIS_CACHE_DIR: join(work.path, 'cache') } });
        let err = '';
        p.stderr.on('data', (d: Buffer) => (err += d.toString()));
        p.on('close', (code) => res({ code, err }));
      });
      assert.equal(r.code, 0, r.err);
      const html = readFileSync(out, 'utf8');
      assert.match(html, /AsciinemaPlayer\.create/);
      assert.ok(html.length > 200_000, 'the player bundle is inside');
    } finally {
      await work.remove();
    }
  });
});
