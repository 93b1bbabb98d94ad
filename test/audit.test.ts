// The write-ahead, hash-chained audit log: chain and checkpoints on real files, every tamper case
// found at the right first line, concurrency, group commit, durability ordering, fail-closed
// writes, reopening, and the readers.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import fc from 'fast-check';
import { AuditLog, type AuditEvent, type AuditInput, type AuditIo } from '../src/core/audit.js';
import { verifyAudit } from '../src/core/audit-verify.js';
import { readAudit, tailAudit } from '../src/core/audit-read.js';
import { canonicalJson, canonicalJsonCareful } from '../src/core/canonical-json.js';
import { PortcullisError } from '../src/policy/types.js';

const made: string[] = [];
function tmpDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pc-audit-'));
  made.push(dir);
  return dir;
}
after(() => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

function logFile(dir: string): string {
  return path.join(dir, 'audit', 'audit.jsonl');
}

function headFile(dir: string): string {
  return path.join(dir, 'audit', 'HEAD.json');
}

function readLogLines(dir: string): string[] {
  const text = fs.readFileSync(logFile(dir), 'utf8');
  const lines = text.split('\n');
  assert.equal(lines.pop(), '', 'the log ends with a newline');
  return lines;
}

function writeLogLines(dir: string, lines: string[]): void {
  fs.writeFileSync(logFile(dir), lines.map((l) => `${l}\n`).join(''));
}

function parse(line: string): AuditEvent {
  return JSON.parse(line) as AuditEvent;
}

function sha(ev: Omit<AuditEvent, 'hash'>): string {
  return createHash('sha256').update(canonicalJson(ev)).digest('hex');
}

function isCode(code: string) {
  return (err: unknown) => err instanceof PortcullisError && err.code === code;
}

const SUBJECTS = ['demo-agent', 'ci-bot', 'demo-oncall'];
const TARGETS = ['shop', 'sandbox', 'demo-cluster'];
const PROTOCOLS = ['postgres', 'ssh', 'kubernetes'];
const EFFECTS = ['allow', 'deny', 'review'] as const;

function sampleEvent(i: number): AuditInput {
  return {
    type: 'request',
    session: `sess-${i % 7}`,
    identity: { subject: SUBJECTS[i % 3]!, groups: ['agents'], authMethod: 'api-token' },
    target: TARGETS[i % 3]!,
    protocol: PROTOCOLS[i % 3]!,
    request: { n: i, sql: `SELECT ${i} FROM public.orders` },
    decision: { effect: EFFECTS[i % 3]!, rule: 'examples/policies/postgres.yaml:reads', reason: `reason ${i}` },
  };
}

async function writeLog(dir: string, n: number, checkpointEvery = 100): Promise<void> {
  const log = await AuditLog.open(dir, { sync: 'writes', checkpointEvery });
  for (let i = 0; i < n; i++) await log.append(sampleEvent(i), { durable: i % 10 === 0 });
  await log.close();
}

/** Recompute prev/hash from line index `from` (0-based) on, as an attacker without the key would. */
function rechain(lines: string[], from: number, fixCheckpoints = true): string[] {
  const out = lines.slice(0, from);
  let prev = from === 0 ? '0'.repeat(64) : parse(lines[from - 1]!).hash;
  for (let i = from; i < lines.length; i++) {
    const { hash: _h, ...ev } = parse(lines[i]!);
    ev.seq = i + 1;
    ev.prev = prev;
    if (fixCheckpoints && ev.type === 'checkpoint' && ev.data) {
      ev.data = { ...ev.data, upto: ev.seq - 1, head: prev };
    }
    const hash = sha(ev);
    out.push(JSON.stringify({ ...ev, hash }));
    prev = hash;
  }
  return out;
}

function firstCheckpointLine(lines: string[], after = 0): number {
  for (let i = after; i < lines.length; i++) if (parse(lines[i]!).type === 'checkpoint') return i + 1;
  throw new Error('no checkpoint');
}

async function waitFor(cond: () => boolean, what: string, maxMs = 5000): Promise<void> {
  for (let waited = 0; waited < maxMs; waited += 5) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.fail(`timed out waiting for ${what}`);
}

// ---------------------------------------------------------------------------------------------

describe('canonical JSON', () => {
  test('sorted keys, no whitespace, JSON formatting', () => {
    assert.equal(canonicalJson({ b: 1, a: [true, null, 'x'], c: { z: 1.5, y: 'é"' } }), '{"a":[true,null,"x"],"b":1,"c":{"y":"é\\"","z":1.5}}');
    assert.equal(canonicalJson({ u: undefined, d: new Date(0), n: Number.NaN, arr: [undefined] }), '{"arr":[null],"d":"1970-01-01T00:00:00.000Z","n":null}');
    const cyc: Record<string, unknown> = {};
    cyc.self = cyc;
    assert.throws(() => canonicalJson(cyc), isCode('canonical_json_cycle'));
    assert.throws(() => canonicalJson({ big: 1n }), isCode('canonical_json_unsupported'));
  });

  test('independent of key order, and stable through a JSON round trip', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const c = canonicalJson(v);
        assert.equal(canonicalJson(JSON.parse(c)), c);
        assert.equal(canonicalJson(JSON.parse(JSON.stringify(v))), c);
        assert.ok(!/[\n\t]/.test(c.replace(/"(?:[^"\\]|\\.)*"/g, '')), 'no whitespace outside strings');
      }),
      { numRuns: 300 },
    );
    const a = canonicalJson({ x: 1, y: { p: 2, q: 3 } });
    const b = canonicalJson({ y: { q: 3, p: 2 }, x: 1 });
    assert.equal(a, b);
  });

  test('the JSON.stringify fast path writes exactly what the careful encoder writes', () => {
    // fc.anything: index-like keys, undefined, NaN/±0/±Infinity, sparse arrays, Dates, boxed values, typed arrays.
    const value = fc.anything({ withDate: true, withSparseArray: true, withNullPrototype: true, withBoxedValues: true, withMap: true, withSet: true, withTypedArray: true, withObjectString: true, maxDepth: 5 });
    fc.assert(
      fc.property(value, (v) => {
        let careful: string | Error;
        try {
          careful = canonicalJsonCareful(v);
        } catch (e) {
          careful = e as Error;
        }
        if (careful instanceof Error) assert.throws(() => canonicalJson(v));
        else assert.equal(canonicalJson(v), careful);
      }),
      { numRuns: 2000 },
    );
    // Shapes the fast path must hand over: index keys, nesting deeper than it walks, cycles.
    assert.equal(canonicalJson({ b: 1, 10: 'x', 9: 'y', a: { 2: 0, 1: 0 } }), '{"10":"x","9":"y","a":{"1":0,"2":0},"b":1}');
    let deep: unknown = 'leaf';
    for (let i = 0; i < 100; i++) deep = i % 2 ? [deep] : { z: deep, a: i };
    assert.equal(canonicalJson(deep), canonicalJsonCareful(deep));
    const cyc: Record<string, unknown> = { a: 1 };
    cyc.z = { inner: [cyc] };
    assert.throws(() => canonicalJson(cyc), isCode('canonical_json_cycle'));
  });
});

describe('audit: chain and checkpoints', () => {
  test('a chain of 500 events verifies, with signed checkpoints and HEAD.json', async () => {
    const dir = tmpDir();
    await writeLog(dir, 500, 100);
    const lines = readLogLines(dir);
    const events = lines.map(parse);
    // gap-free seq, each prev is the previous hash, each hash is over the canonical JSON without hash
    events.forEach((ev, i) => {
      assert.equal(ev.seq, i + 1);
      assert.equal(ev.prev, i === 0 ? '0'.repeat(64) : events[i - 1]!.hash);
      const { hash, ...rest } = ev;
      assert.equal(hash, sha(rest));
      assert.match(ev.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    });
    const checkpoints = events.filter((e) => e.type === 'checkpoint');
    // after seq 100, 200, 300, 400, 500 (seq counts checkpoints too) and one on close
    assert.ok(checkpoints.length >= 5, `checkpoints: ${checkpoints.length}`);
    assert.equal(events[events.length - 1]!.type, 'checkpoint', 'close writes a checkpoint');
    const pub = createPublicKey(fs.readFileSync(path.join(dir, 'keys', 'audit-ed25519.pub.pem')));
    for (const cp of checkpoints) {
      const data = cp.data as { upto: number; head: string; sig: string };
      assert.equal(data.upto, cp.seq - 1);
      assert.equal(data.head, cp.prev);
      assert.ok(verify(null, Buffer.from(`portcullis-audit-checkpoint:${data.upto}:${data.head}`), pub, Buffer.from(data.sig, 'base64')));
    }
    const head = JSON.parse(fs.readFileSync(headFile(dir), 'utf8')) as { seq: number; hash: string; sig: string };
    assert.equal(head.seq, events.length);
    assert.equal(head.hash, events[events.length - 1]!.hash);
    assert.ok(verify(null, Buffer.from(`portcullis-audit-checkpoint:${head.seq}:${head.hash}`), pub, Buffer.from(head.sig, 'base64')));

    const result = await verifyAudit(dir);
    assert.deepEqual({ ok: result.ok, events: result.ok && result.events, checkpoints: result.ok && result.checkpoints }, { ok: true, events: lines.length, checkpoints: checkpoints.length });

    // the private key is 0600; the request summary is stored exactly as given
    assert.equal(fs.statSync(path.join(dir, 'keys', 'audit-ed25519.pem')).mode & 0o777, 0o600);
    assert.deepEqual(events[0]!.request, { n: 0, sql: 'SELECT 0 FROM public.orders' });
    assert.deepEqual(events[0]!.identity, { subject: 'demo-agent', groups: ['agents'], authMethod: 'api-token' });
  });

  test('an empty data dir verifies; a new log writes HEAD.json at seq 0', async () => {
    const dir = tmpDir();
    assert.deepEqual(await verifyAudit(dir), { ok: true, events: 0, checkpoints: 0, key: null, headSeq: null, recordings: 0 });
    const log = await AuditLog.open(dir, {});
    await log.close();
    const head = JSON.parse(fs.readFileSync(headFile(dir), 'utf8')) as { seq: number };
    assert.equal(head.seq, 0);
    const r = await verifyAudit(dir);
    assert.equal(r.ok, true);
  });
});

describe('audit: tampering is found at the first bad line', () => {
  let base = '';
  let baseLines: string[] = [];
  before(async () => {
    base = tmpDir();
    await writeLog(base, 500, 100);
    baseLines = readLogLines(base);
  });
  function copy(): string {
    const dir = tmpDir();
    fs.cpSync(base, dir, { recursive: true });
    return dir;
  }
  async function expectBad(dir: string, line: number, problem: RegExp, opts: Parameters<typeof verifyAudit>[1] = {}): Promise<void> {
    const r = await verifyAudit(dir, opts);
    assert.equal(r.ok, false, 'tampering not detected');
    if (r.ok) return;
    assert.equal(r.line, line, `first bad line (problem: ${r.problem})`);
    assert.match(r.problem, problem);
  }

  test('an edited field', async () => {
    const dir = copy();
    const lines = [...baseLines];
    const ev = parse(lines[122]!);
    (ev.request as { sql: string }).sql = 'SELECT 1';
    lines[122] = JSON.stringify(ev);
    writeLogLines(dir, lines);
    await expectBad(dir, 123, /hash mismatch/);
  });

  test('an edited decision, re-hashed and re-chained, is caught by the next checkpoint', async () => {
    const dir = copy();
    const lines = [...baseLines];
    const ev = parse(lines[149]!);
    ev.decision = { effect: 'allow', rule: 'forged', reason: 'forged' };
    lines[149] = JSON.stringify(ev);
    const tampered = rechain(lines, 149);
    writeLogLines(dir, tampered);
    await expectBad(dir, firstCheckpointLine(tampered, 149), /forged checkpoint: the signature does not verify/);
  });

  test('a deleted middle line', async () => {
    const dir = copy();
    const lines = [...baseLines];
    lines.splice(249, 1);
    writeLogLines(dir, lines);
    await expectBad(dir, 250, /seq 251 where 250 was expected/);
  });

  test('the first line deleted', async () => {
    const dir = copy();
    writeLogLines(dir, baseLines.slice(1));
    await expectBad(dir, 1, /seq 2 where 1 was expected/);
  });

  test('an inserted copy of another line', async () => {
    const dir = copy();
    const lines = [...baseLines];
    lines.splice(300, 0, lines[99]!);
    writeLogLines(dir, lines);
    await expectBad(dir, 301, /inserted/);
  });

  test('a duplicated line', async () => {
    const dir = copy();
    const lines = [...baseLines];
    lines.splice(42, 0, lines[41]!);
    writeLogLines(dir, lines);
    await expectBad(dir, 43, /seq 42 where 43 was expected/);
  });

  test('two swapped lines', async () => {
    const dir = copy();
    const lines = [...baseLines];
    [lines[199], lines[200]] = [lines[200]!, lines[199]!];
    writeLogLines(dir, lines);
    await expectBad(dir, 200, /seq 201 where 200 was expected/);
  });

  test('the last line truncated halfway', async () => {
    const dir = copy();
    const size = fs.statSync(logFile(dir)).size;
    const last = Buffer.byteLength(baseLines[baseLines.length - 1]!) + 1;
    fs.truncateSync(logFile(dir), size - Math.floor(last / 2));
    await expectBad(dir, baseLines.length, /partial last line/);
    await assert.rejects(AuditLog.open(dir, {}), (err: unknown) => isCode('audit_corrupt')(err) && /partial line/.test((err as Error).message));
  });

  test('the last 10 lines removed: HEAD.json says more', async () => {
    const dir = copy();
    writeLogLines(dir, baseLines.slice(0, -10));
    await expectBad(dir, baseLines.length - 9, new RegExp(`truncated: HEAD.json records seq ${baseLines.length} but the log ends at seq ${baseLines.length - 10}`));
    await assert.rejects(AuditLog.open(dir, {}), (err: unknown) => isCode('audit_corrupt')(err) && /truncated/.test((err as Error).message));
  });

  test('a forged checkpoint signature (edited in place)', async () => {
    const dir = copy();
    const lines = [...baseLines];
    const at = firstCheckpointLine(lines) - 1;
    const ev = parse(lines[at]!);
    const data = ev.data as { sig: string };
    data.sig = Buffer.from(Buffer.from(data.sig, 'base64').map((b, i) => (i === 0 ? b ^ 1 : b))).toString('base64');
    lines[at] = JSON.stringify(ev);
    writeLogLines(dir, lines);
    await expectBad(dir, at + 1, /hash mismatch/);
    // ... and with the chain recomputed around it, the signature itself is what fails
    writeLogLines(dir, rechain(lines, at));
    await expectBad(dir, at + 1, /forged checkpoint: the signature does not verify/);
  });

  test('a checkpoint signed by another key', async () => {
    const dir = copy();
    const lines = [...baseLines];
    const at = firstCheckpointLine(lines, 150) - 1;
    const ev = parse(lines[at]!);
    const other = generateKeyPairSync('ed25519');
    const data = ev.data as { upto: number; head: string; sig: string; key?: string };
    data.sig = sign(null, Buffer.from(`portcullis-audit-checkpoint:${data.upto}:${data.head}`), other.privateKey).toString('base64');
    delete data.key;
    lines[at] = JSON.stringify(ev);
    writeLogLines(dir, rechain(lines, at));
    await expectBad(dir, at + 1, /forged checkpoint: the signature does not verify/);
  });

  test('the key pair replaced and everything re-signed: found with the public key kept elsewhere', async () => {
    const dir = copy();
    const trustedPub = fs.readFileSync(path.join(dir, 'keys', 'audit-ed25519.pub.pem'), 'utf8');
    const other = generateKeyPairSync('ed25519');
    const fp = createHash('sha256').update(other.publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
    fs.writeFileSync(path.join(dir, 'keys', 'audit-ed25519.pem'), other.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    fs.writeFileSync(path.join(dir, 'keys', 'audit-ed25519.pub.pem'), other.publicKey.export({ type: 'spki', format: 'pem' }));
    // edit line 10, then re-sign every checkpoint and HEAD.json with the new key
    const lines = [...baseLines];
    const ev = parse(lines[9]!);
    ev.target = 'elsewhere';
    lines[9] = JSON.stringify(ev);
    let prev = parse(lines[8]!).hash;
    for (let i = 9; i < lines.length; i++) {
      const { hash: _h, ...e } = parse(lines[i]!);
      e.prev = prev;
      if (e.type === 'checkpoint') {
        e.data = { upto: e.seq - 1, head: prev, sig: sign(null, Buffer.from(`portcullis-audit-checkpoint:${e.seq - 1}:${prev}`), other.privateKey).toString('base64'), key: fp };
      }
      const hash = sha(e);
      lines[i] = JSON.stringify({ ...e, hash });
      prev = hash;
    }
    writeLogLines(dir, lines);
    const last = parse(lines[lines.length - 1]!);
    fs.writeFileSync(
      headFile(dir),
      JSON.stringify({ seq: last.seq, hash: last.hash, sig: sign(null, Buffer.from(`portcullis-audit-checkpoint:${last.seq}:${last.hash}`), other.privateKey).toString('base64'), key: fp }),
    );
    await expectBad(dir, firstCheckpointLine(lines), /forged checkpoint: signed by another key/, { publicKey: trustedPub });
  });

  test('the key pair replaced to re-sign HEAD.json over a truncation: the old checkpoints betray it', async () => {
    const dir = copy();
    const lines = baseLines.slice(0, -10);
    writeLogLines(dir, lines);
    const other = generateKeyPairSync('ed25519');
    fs.writeFileSync(path.join(dir, 'keys', 'audit-ed25519.pem'), other.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    fs.writeFileSync(path.join(dir, 'keys', 'audit-ed25519.pub.pem'), other.publicKey.export({ type: 'spki', format: 'pem' }));
    const last = parse(lines[lines.length - 1]!);
    fs.writeFileSync(headFile(dir), JSON.stringify({ seq: last.seq, hash: last.hash, sig: sign(null, Buffer.from(`portcullis-audit-checkpoint:${last.seq}:${last.hash}`), other.privateKey).toString('base64') }));
    await expectBad(dir, firstCheckpointLine(lines), /forged checkpoint: signed by another key/);
  });

  test('a forged or missing HEAD.json', async () => {
    const dir = copy();
    const head = JSON.parse(fs.readFileSync(headFile(dir), 'utf8')) as { seq: number; hash: string; sig: string };
    fs.writeFileSync(headFile(dir), JSON.stringify({ ...head, seq: head.seq + 5 }));
    await expectBad(dir, 0, /forged HEAD.json: the signature over seq/);
    await assert.rejects(AuditLog.open(dir, {}), isCode('audit_corrupt'));
    fs.writeFileSync(headFile(dir), '{"seq":');
    await expectBad(dir, 0, /HEAD.json is not valid JSON/);
    fs.rmSync(headFile(dir));
    await expectBad(dir, 0, /HEAD.json is missing/);
    await assert.rejects(AuditLog.open(dir, {}), isCode('audit_corrupt'));
  });

  test('an edited last line refuses to open', async () => {
    const dir = copy();
    const lines = [...baseLines];
    const ev = parse(lines[lines.length - 1]!);
    ev.time = '2000-01-01T00:00:00.000Z';
    lines[lines.length - 1] = JSON.stringify(ev);
    writeLogLines(dir, lines);
    await assert.rejects(AuditLog.open(dir, {}), (err: unknown) => isCode('audit_corrupt')(err) && /edited/.test((err as Error).message));
    await expectBad(dir, lines.length, /hash mismatch/);
  });

  test('the untouched copy still verifies', async () => {
    const r = await verifyAudit(copy());
    assert.equal(r.ok, true);
  });
});

describe('audit: concurrency and durability', () => {
  test('200 concurrent appends: seq 1..200 gap-free and the chain verifies', async () => {
    const dir = tmpDir();
    const log = await AuditLog.open(dir, { sync: 'writes' });
    const appends: Promise<AuditEvent>[] = [];
    // interleave: bursts from "sessions" in different ticks, durable and not
    for (let s = 0; s < 20; s++) {
      for (let i = 0; i < 10; i++) appends.push(log.append({ ...sampleEvent(s * 10 + i), session: `s${s}` }, { durable: i % 2 === 0 }));
      await new Promise((r) => setImmediate(r));
    }
    const events = await Promise.all(appends);
    assert.deepEqual(
      events.map((e) => e.seq).sort((a, b) => a - b),
      Array.from({ length: 200 }, (_, i) => i + 1),
    );
    await log.close();
    const lines = readLogLines(dir).map(parse);
    assert.deepEqual(
      lines.slice(0, 200).map((e) => e.seq),
      Array.from({ length: 200 }, (_, i) => i + 1),
    );
    // what each append resolved with is what is on disk
    for (const e of events) assert.equal(lines[e.seq - 1]!.hash, e.hash);
    assert.equal((await verifyAudit(dir)).ok, true);
  });

  test('group commit: concurrent durable appends share fsyncs', async () => {
    const dir = tmpDir();
    const log = await AuditLog.open(dir, { sync: 'always' });
    // 32 appenders, each appending 20 events one after another (like 32 busy sessions)
    await Promise.all(
      Array.from({ length: 32 }, async (_, a) => {
        for (let i = 0; i < 20; i++) await log.append({ ...sampleEvent(i), session: `appender-${a}` });
      }),
    );
    const { appends, fsyncs, writes, maxBatch, syncedSeq } = log.stats;
    assert.equal(appends, 640);
    assert.equal(syncedSeq, 640);
    assert.ok(fsyncs <= appends / 8, `fsyncs ${fsyncs} for ${appends} durable appends`);
    assert.ok(writes <= fsyncs + 1, `one write per batch (writes ${writes}, fsyncs ${fsyncs})`);
    assert.ok(maxBatch >= 16, `largest batch ${maxBatch}`);
    await log.close();
    assert.equal((await verifyAudit(dir)).ok, true);
  });

  test('a durable append resolves only after its fsync; a non-durable one after its write', async () => {
    const dir = tmpDir();
    const order: string[] = [];
    const io: Partial<AuditIo> = {
      async write(fh, data) {
        order.push('write');
        await fh.write(data);
      },
      async sync(fh) {
        order.push('sync-start');
        await new Promise((r) => setTimeout(r, 20)); // a slow disk
        await fh.datasync();
        order.push('sync-done');
      },
    };
    const log = await AuditLog.open(dir, { sync: 'writes', intervalMs: 60_000, io });
    const ev1 = await log.append({ type: 'request', request: { sql: 'SELECT 1' } });
    order.push(`resolved:${ev1.seq}`);
    assert.equal(log.stats.writtenSeq >= ev1.seq, true);
    assert.equal(log.stats.syncedSeq < ev1.seq, true, 'a non-durable append does not wait for fsync');
    assert.equal(log.stats.fsyncs, 0);

    const ev2 = await log.append({ type: 'request', request: { sql: 'DELETE FROM t WHERE id = 1' } }, { durable: true });
    order.push(`resolved:${ev2.seq}`);
    assert.ok(log.stats.syncedSeq >= ev2.seq, 'durable append resolved before its fsync');
    assert.deepEqual(order, ['write', 'resolved:1', 'write', 'sync-start', 'sync-done', 'resolved:2']);
    await log.close();
  });

  test("sync 'interval' fsyncs on a timer and updates HEAD.json", async () => {
    const dir = tmpDir();
    const log = await AuditLog.open(dir, { sync: 'interval', intervalMs: 10 });
    const ev = await log.append({ type: 'approval', data: { id: 'a1' } }, { durable: true });
    assert.equal(log.stats.fsyncs, 0, "'interval' does not fsync before resolving");
    await waitFor(() => log.stats.syncedSeq >= ev.seq && log.stats.headWrites >= 2, 'the interval fsync');
    const head = JSON.parse(fs.readFileSync(headFile(dir), 'utf8')) as { seq: number };
    assert.equal(head.seq, ev.seq);
    await log.close();
  });

  test('HEAD.json follows durable batches (every batch with headEveryMs 0) and never runs ahead of fsync', async () => {
    const dir = tmpDir();
    const readHeadSeq = () => (JSON.parse(fs.readFileSync(headFile(dir), 'utf8')) as { seq: number }).seq;
    const log = await AuditLog.open(dir, { sync: 'writes', intervalMs: 60_000, headEveryMs: 0 });
    for (let i = 1; i <= 5; i++) {
      const ev = await log.append(sampleEvent(i), { durable: true });
      await waitFor(() => log.stats.headWrites >= i + 1, `HEAD.json after batch ${i}`);
      assert.equal(readHeadSeq(), ev.seq);
    }
    const read = await log.append(sampleEvent(6)); // written, not fsynced: HEAD stays behind
    assert.equal(readHeadSeq(), read.seq - 1);
    await log.flush();
    assert.equal(readHeadSeq(), read.seq);
    await log.close();

    // with the default spacing, close still leaves HEAD.json at the last event
    const again = await AuditLog.open(dir, { sync: 'always' });
    await Promise.all(Array.from({ length: 50 }, (_, i) => again.append(sampleEvent(i))));
    await again.close();
    assert.equal(readHeadSeq(), readLogLines(dir).length);
    assert.equal((await verifyAudit(dir)).ok, true);
  });

  test('a failed write rejects every pending append and the log refuses more (fail closed)', async () => {
    const dir = tmpDir();
    let failWrites = false;
    const io: Partial<AuditIo> = {
      async write(fh, data) {
        if (failWrites) throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
        await fh.write(data);
      },
    };
    const log = await AuditLog.open(dir, { sync: 'always', io });
    await log.append(sampleEvent(1));
    failWrites = true;
    const pending = Array.from({ length: 5 }, (_, i) => log.append(sampleEvent(i)));
    for (const p of pending) await assert.rejects(p, (err: unknown) => isCode('audit_write_failed')(err) && /EIO/.test((err as Error).message));
    failWrites = false; // even once the disk is back, this log stays closed
    await assert.rejects(log.append(sampleEvent(9)), isCode('audit_write_failed'));
    await assert.rejects(log.flush(), isCode('audit_write_failed'));
    await assert.rejects(log.close(), isCode('audit_write_failed'));

    // reopening continues after the last good line
    const again = await AuditLog.open(dir, { sync: 'always' });
    const next = await again.append(sampleEvent(10));
    assert.equal(next.seq, 2);
    await again.close();
    assert.equal((await verifyAudit(dir)).ok, true);
  });

  test('a failed fsync rejects the durable appends waiting on it', async () => {
    const dir = tmpDir();
    const io: Partial<AuditIo> = {
      async sync() {
        throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
      },
    };
    const log = await AuditLog.open(dir, { sync: 'writes', intervalMs: 60_000, io });
    const read = await log.append({ type: 'request' }); // written, not waiting for fsync
    assert.equal(read.seq, 1);
    await assert.rejects(log.append({ type: 'request' }, { durable: true }), (err: unknown) => isCode('audit_write_failed')(err) && (err as PortcullisError).details.operation === 'fsync');
    await assert.rejects(log.append({ type: 'request' }), isCode('audit_write_failed'));
    await assert.rejects(log.close(), isCode('audit_write_failed'));
  });

  test('a real ENOSPC (the log on /dev/full) fails closed', async () => {
    const dir = tmpDir();
    fs.mkdirSync(path.join(dir, 'audit'));
    fs.symlinkSync('/dev/full', logFile(dir));
    const log = await AuditLog.open(dir, { sync: 'always' });
    await assert.rejects(log.append(sampleEvent(0)), (err: unknown) => isCode('audit_write_failed')(err) && (err as PortcullisError).details.errno === 'ENOSPC');
    await assert.rejects(log.append(sampleEvent(1)), isCode('audit_write_failed'));
    await assert.rejects(log.close(), isCode('audit_write_failed'));
  });
});

describe('audit: lifecycle and hooks', () => {
  test('reopening continues the chain', async () => {
    const dir = tmpDir();
    for (let round = 0; round < 3; round++) {
      const log = await AuditLog.open(dir, { sync: 'writes', checkpointEvery: 7 });
      for (let i = 0; i < 10; i++) await log.append(sampleEvent(i), { durable: i === 9 });
      await log.close();
    }
    const events = readLogLines(dir).map(parse);
    events.forEach((e, i) => {
      assert.equal(e.seq, i + 1);
      if (i > 0) assert.equal(e.prev, events[i - 1]!.hash);
    });
    assert.equal(events.filter((e) => e.type === 'request').length, 30);
    const r = await verifyAudit(dir);
    assert.ok(r.ok && r.events === events.length && r.checkpoints >= 3);
  });

  test('the summarize hook decides what is stored; bad events are refused without using a seq', async () => {
    const dir = tmpDir();
    const log = await AuditLog.open(dir, {
      summarize: (req) => ({ kind: 'sql', length: String((req as { sql: string }).sql).length }),
    });
    const ev = await log.append({ type: 'request', request: { sql: "SELECT * FROM customers WHERE ssn = '123-45-6789'" } });
    assert.deepEqual(ev.request, { kind: 'sql', length: 49 });
    const own = await log.append({ type: 'request', request: { sql: 'x' } }, { summarize: () => ({ redacted: true }) });
    assert.deepEqual(own.request, { redacted: true });
    await assert.rejects(
      log.append({ type: 'request', request: {} }, {
        summarize: () => {
          throw new Error('boom');
        },
      }),
      isCode('audit_summarize_failed'),
    );
    await assert.rejects(log.append({ type: 'checkpoint' }), isCode('audit_bad_event'));
    await assert.rejects(log.append({ type: '' }), isCode('audit_bad_event'));
    const cyc: Record<string, unknown> = {};
    cyc.self = cyc;
    await assert.rejects(log.append({ type: 'request', data: cyc }), isCode('canonical_json_cycle'));
    const next = await log.append({ type: 'session.close', session: 's1', data: { reason: 'done' } }, { durable: true });
    assert.equal(next.seq, 3);
    await assert.rejects(AuditLog.open(dir, {}), isCode('audit_already_open'));
    await log.close();
    await assert.rejects(log.append({ type: 'request' }), isCode('audit_closed'));
    const text = fs.readFileSync(logFile(dir), 'utf8');
    assert.ok(!text.includes('123-45-6789'), 'the unsummarized request never reaches the file');
    assert.equal((await verifyAudit(dir)).ok, true);
  });

  test('options are validated', async () => {
    const dir = tmpDir();
    await assert.rejects(AuditLog.open(dir, { sync: 'sometimes' as 'always' }), isCode('audit_bad_option'));
    await assert.rejects(AuditLog.open(dir, { intervalMs: 0 }), isCode('audit_bad_option'));
    await assert.rejects(AuditLog.open(dir, { checkpointEvery: 1.5 }), isCode('audit_bad_option'));
  });

  test('a log whose signing key went missing refuses to open', async () => {
    const dir = tmpDir();
    await writeLog(dir, 3);
    fs.rmSync(path.join(dir, 'keys', 'audit-ed25519.pem'));
    await assert.rejects(AuditLog.open(dir, {}), isCode('audit_key_missing'));
  });
});

describe('audit: reading', () => {
  let dir = '';
  const t0 = Date.parse('2025-03-01T10:00:00.000Z');
  before(async () => {
    dir = tmpDir();
    let tick = 0;
    const log = await AuditLog.open(dir, { checkpointEvery: 1000, now: () => new Date(t0 + tick++ * 60_000) });
    for (let i = 0; i < 60; i++) await log.append(sampleEvent(i));
    await log.append({ type: 'session.open', session: 'sess-x', identity: { subject: 'demo-agent', groups: ['agents'] }, target: 'sandbox', protocol: 'ssh' });
    await log.close();
  });

  async function collect(it: AsyncIterable<AuditEvent>): Promise<AuditEvent[]> {
    const out: AuditEvent[] = [];
    for await (const e of it) out.push(e);
    return out;
  }

  test('readAudit filters by subject, target, effect, protocol, type, time and text', async () => {
    const all = await collect(readAudit(dir, {}));
    assert.equal(all.length, 62); // 60 + session.open + closing checkpoint
    const bySubject = await collect(readAudit(dir, { subject: 'ci-bot' }));
    assert.equal(bySubject.length, 20);
    assert.ok(bySubject.every((e) => e.identity?.subject === 'ci-bot'));
    assert.equal((await collect(readAudit(dir, { target: 'sandbox' }))).length, 21);
    const denies = await collect(readAudit(dir, { effect: 'deny', protocol: 'ssh' }));
    assert.equal(denies.length, 20);
    assert.ok(denies.every((e) => e.decision?.effect === 'deny' && e.protocol === 'ssh'));
    assert.deepEqual((await collect(readAudit(dir, { type: 'session.open' }))).map((e) => e.session), ['sess-x']);
    assert.equal((await collect(readAudit(dir, { type: 'checkpoint' }))).length, 1);
    // time: [since, until)
    const window = await collect(readAudit(dir, { since: new Date(t0 + 10 * 60_000), until: new Date(t0 + 20 * 60_000) }));
    assert.deepEqual(
      window.map((e) => e.seq),
      [11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
    );
    // text: case-insensitive, over the content (not prev/hash)
    assert.deepEqual((await collect(readAudit(dir, { text: 'select 42 FROM' }))).map((e) => e.seq), [43]);
    const hashText = all[5]!.hash.slice(0, 16);
    assert.deepEqual(await collect(readAudit(dir, { text: hashText })), []);
    const limited = await collect(readAudit(dir, { subject: 'demo-agent', limit: 3 }));
    assert.deepEqual(
      limited.map((e) => e.seq),
      [1, 4, 7],
    );
    await assert.rejects(collect(readAudit(dir, { since: new Date('nope') })), isCode('audit_bad_filter'));
  });

  test('tailAudit gives the last N events, filtered or not', async () => {
    const last = await collect(tailAudit(dir, 5));
    assert.deepEqual(
      last.map((e) => e.seq),
      [58, 59, 60, 61, 62],
    );
    assert.deepEqual(await collect(tailAudit(dir, 0)), []);
    assert.equal((await collect(tailAudit(dir, 1000))).length, 62);
    const lastDenies = await collect(tailAudit(dir, 2, false, undefined, { filter: { effect: 'deny' } }));
    assert.deepEqual(
      lastDenies.map((e) => e.seq),
      [56, 59], // sampleEvent(i) has seq i + 1 and denies when i % 3 === 1
    );
  });

  test('tailAudit -f follows new events until aborted', async () => {
    const fdir = tmpDir();
    const log = await AuditLog.open(fdir, {});
    for (let i = 0; i < 3; i++) await log.append(sampleEvent(i));
    const ac = new AbortController();
    const seen: number[] = [];
    const follower = (async () => {
      for await (const e of tailAudit(fdir, 2, true, ac.signal, { pollMs: 5 })) {
        seen.push(e.seq);
        if (seen.length === 6) ac.abort();
      }
    })();
    await waitFor(() => seen.length >= 2, 'the first two events');
    for (let i = 3; i < 7; i++) await log.append(sampleEvent(i));
    await follower;
    assert.deepEqual(seen, [2, 3, 4, 5, 6, 7]);
    await log.close();
  });
});
