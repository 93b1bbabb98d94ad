// Stream masker: chunk boundaries at every offset, ANSI escape sequences, UTF-8 boundaries, the
// hold-back rule and its timers, fail-closed behaviour.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Masker, RuleSet, StreamMasker, createStreamMasker } from '../src/masking/index.js';
import type { MaskSpec } from '../src/policy/types.js';
import { Collector } from '../src/masking/text.js';

const KEY = 'unit-test-masking-key-0123456789';
const MASKS: MaskSpec[] = [{ detector: 'card', strategy: 'last4', rule: 'r' }];
const masker = new Masker({ masks: MASKS, hmacKey: KEY });

function collect(): { chunks: Buffer[]; onOutput: (c: Buffer) => void; text: () => string } {
  const chunks: Buffer[] = [];
  return { chunks, onOutput: (c) => chunks.push(Buffer.from(c)), text: () => Buffer.concat(chunks).toString('utf8') };
}

/** Feeds `input` split at the given byte offsets, then ends the stream; returns the output. */
function through(m: Masker, input: Buffer, cuts: number[], opts: { lookBehindBytes?: number } = {}): { out: string; chunks: Buffer[] } {
  const c = collect();
  const s = m.streamMasker({ onOutput: c.onOutput, ...opts });
  let prev = 0;
  for (const cut of [...cuts, input.length]) {
    s.write(input.subarray(prev, cut));
    prev = cut;
  }
  s.end();
  return { out: c.text(), chunks: c.chunks };
}

const stripAnsi = (s: string): string => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, ''); // eslint-disable-line no-control-regex

const CORPUS = [
  'hello 4111 1111 1111 1111 there',
  'mail john.doe@example.com ok',
  'é ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5 ü',
  'export DB_PASSWORD=hunter2',
  'GET https://admin:pa55w0rd@db.internal/x',
  'ssn 123-45-6789 iban DE89 3704 0044 0532 0130 00',
  'jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl end',
  'aws AKIAIOSFODNN7EXAMPLE aws_secret_access_key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----',
  'call +1 (555) 123-4567 or 555-123-4567',
  'slack xoxb-1234567890-0987654321-AbCdEfGhIjKl glpat-AbCdEfGhIjKlMnOpQrSt',
  'tail 5555 5555 5555 4444',
].join('\n');

describe('chunk boundaries', () => {
  const input = Buffer.from(CORPUS, 'utf8');
  const expected = masker.maskText(CORPUS);

  test('the corpus masks the same as a whole text', () => {
    assert.equal(through(masker, input, []).out, expected);
    for (const secret of ['4111 1111 1111 1111', 'john.doe@example.com', 'hunter2', 'pa55w0rd', '123-45-6789', 'AKIAIOSFODNN7EXAMPLE', 'b3BlbnNzaC1rZXktdjEAAAAABG5vbmU', '5555 5555 5555 4444']) {
      assert.ok(!expected.includes(secret), secret);
    }
  });

  test('split into two chunks at every offset', () => {
    for (let cut = 0; cut <= input.length; cut++) assert.equal(through(masker, input, [cut]).out, expected, `cut at ${cut}`);
  });

  test('split into three chunks around every offset, and byte by byte', () => {
    for (let cut = 1; cut < input.length - 7; cut += 3) assert.equal(through(masker, input, [cut, cut + 7]).out, expected, `cuts at ${cut}`);
    const every = Array.from({ length: input.length - 1 }, (_, i) => i + 1);
    assert.equal(through(masker, input, every).out, expected);
  });

  test('never emits a prefix of a secret that a later chunk completes', () => {
    const secrets = ['4111 1111 1111 1111', 'jane@example.org', 'ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5', 'AKIAIOSFODNN7EXAMPLE', '123-45-6789'];
    for (const secret of secrets) {
      const text = `line one\nvalue ${secret}\n`;
      const start = text.indexOf(secret);
      for (let cut = start + 1; cut <= start + secret.length; cut++) {
        const c = collect();
        const s = masker.streamMasker({ onOutput: c.onOutput });
        s.write(text.slice(0, cut));
        const soFar = c.text();
        assert.ok(soFar.length <= start, `${secret} cut at ${cut}: emitted ${JSON.stringify(soFar)}`);
        s.write(text.slice(cut));
        s.end();
        assert.ok(!c.text().includes(secret), `${secret} cut at ${cut}`);
      }
    }
  });
});

describe('ANSI escape sequences', () => {
  test('a card interrupted by colour codes is masked, the codes are kept', () => {
    const input = 'x \x1b[31m4111\x1b[0m 1111 1111 1111 y\n';
    const r = through(masker, Buffer.from(input), []);
    assert.equal(r.out, 'x \x1b[31m**** **** **** 1111\x1b[0m y\n');
  });

  test('colour codes around and inside secrets at every split, no escape sequence ever split', () => {
    const input = Buffer.from('\x1b[1;32mok\x1b[0m card \x1b[33m4111 1111\x1b[39m 1111 1111\x1b[0m mail \x1b[4mann@example.com\x1b[24m\n\x1b]0;title\x07done\n');
    const expected = through(masker, input, []).out;
    assert.ok(!stripAnsi(expected).includes('4111 1111 1111'));
    assert.ok(stripAnsi(expected).includes('**** **** **** 1111'));
    for (let cut = 0; cut <= input.length; cut++) {
      const r = through(masker, input, [cut]);
      assert.equal(r.out, expected, `cut at ${cut}`);
      // no chunk boundary falls inside an escape sequence of the output
      const out = Buffer.concat(r.chunks).toString('latin1');
      const spans = [...out.matchAll(/\x1b(?:\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07)/g)].map((m) => [m.index, m.index + m[0].length]); // eslint-disable-line no-control-regex
      let at = 0;
      for (const ch of r.chunks.slice(0, -1)) {
        at += ch.length;
        assert.ok(!spans.some(([a, e]) => at > a! && at < e!), `cut ${cut}: a chunk ends inside an escape sequence at ${at}`);
      }
    }
  });

  test('an OSC sequence is held until it is terminated', () => {
    const c = collect();
    const s = masker.streamMasker({ onOutput: c.onOutput });
    s.write('a\x1b]0;my ti');
    assert.equal(c.text(), 'a');
    s.write('tle\x07b\n');
    s.end();
    assert.equal(c.text(), 'a\x1b]0;my title\x07b\n');
  });
});

describe('UTF-8', () => {
  test('multi-byte characters around secrets, split everywhere, never split in an output chunk', () => {
    const input = Buffer.from('ünïcödé→4111111111111111←日本語 ann@example.com😀\n', 'utf8');
    const expected = masker.maskText(input.toString('utf8'));
    assert.ok(expected.includes('→************1111←'));
    for (let cut = 0; cut <= input.length; cut++) {
      const r = through(masker, input, [cut]);
      assert.equal(r.out, expected, `cut at ${cut}`);
      for (const ch of r.chunks) assert.ok(Buffer.from(ch.toString('utf8'), 'utf8').equals(ch), `chunk is valid UTF-8 (cut ${cut})`);
    }
  });

  test('bytes that are not UTF-8 pass through unchanged', () => {
    const input = Buffer.from([0x66, 0xff, 0xfe, 0x20, 0x61, 0x0a]);
    assert.deepEqual(Buffer.from(through(masker, input, [2]).out, 'utf8').length > 0, true);
    const c: Buffer[] = [];
    const s = masker.streamMasker({ onOutput: (b) => c.push(Buffer.from(b)) });
    s.write(input);
    s.end();
    assert.deepEqual(Buffer.concat(c), input);
  });
});

describe('timers: interactive echo keeps flowing, candidates are held or masked', () => {
  test('plain typed text is released by the short timer', async () => {
    const c = collect();
    const s = masker.streamMasker({ onOutput: c.onOutput, flushAfterMs: 2, holdMaxMs: 1000 });
    for (const ch of ['l', 's', ' ', '-', 'l', 'a']) {
      s.write(ch);
      await sleep(30);
    }
    assert.equal(c.text(), 'ls -la', 'every keystroke was echoed without waiting for more input');
    assert.equal(s.heldBytes, 0);
    s.end();
  });

  test('a weak candidate is released by the timer; a strong one is held, then masked whole', async () => {
    const c = collect();
    const s = masker.streamMasker({ onOutput: c.onOutput, flushAfterMs: 2, holdMaxMs: 600 });
    s.write('user john');
    assert.equal(c.text(), 'user ', 'the trailing word is held: it could become an email');
    await sleep(40);
    assert.equal(c.text(), 'user john', 'a word without @ is weak: released');
    s.write(' card 4111 1111');
    await sleep(40);
    assert.equal(c.text(), 'user john card ', '6+ digits in a card-shaped run: still held');
    await sleep(1200);
    assert.equal(c.text(), 'user john card **** ****', 'idle past holdMaxMs: masked whole');
    s.write(' 1111 1111\nnext');
    s.end();
    assert.equal(c.text(), 'user john card **** **** **** ****\nnext', 'what continues it is masked too');
  });

  test('a released weak prefix that a later chunk completes: the rest is masked', async () => {
    const c = collect();
    const s = masker.streamMasker({ onOutput: c.onOutput, flushAfterMs: 1, holdMaxMs: 1000 });
    s.write('pay 4111');
    await sleep(40);
    assert.equal(c.text(), 'pay 4111', 'four digits are not yet distinctive (within the issuer prefix PCI allows)');
    s.write(' 1111 1111 1111 ok');
    s.end();
    assert.equal(c.text(), 'pay 4111 **** **** 1111 ok');
  });

  test('a typed secret value after password= is never echoed', async () => {
    const c = collect();
    const s = masker.streamMasker({ onOutput: c.onOutput, flushAfterMs: 1, holdMaxMs: 2000 });
    for (const ch of 'PASSWORD=hunter2') {
      s.write(ch);
      await sleep(5);
    }
    assert.ok(!c.text().includes('h'), JSON.stringify(c.text()));
    s.write('\n');
    s.end();
    assert.equal(c.text(), 'PASSWORD=[REDACTED:secret_assignment]\n');
  });

  test('a PEM block is held until its END line, then masked whole', () => {
    const c = collect();
    const s = masker.streamMasker({ onOutput: c.onOutput, flushAfterMs: 1000, holdMaxMs: 5000 });
    s.write('before\n-----BEGIN PRIVATE KEY-----\n');
    s.write('MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n');
    assert.equal(c.text(), 'before\n');
    s.write('-----END PRIVATE KEY-----\nafter\n');
    s.end();
    assert.equal(c.text(), 'before\n[REDACTED:pem_private_key]\nafter\n');
  });

  test('a PEM block longer than lookBehindBytes is masked whole and its lines swallowed to END', () => {
    const body = Array.from({ length: 40 }, (_, i) => `MIIEvQIBADANBgkqhkiG9w0BAQEFAASC${String(i).padStart(4, '0')}`).join('\n');
    const input = `x\n-----BEGIN RSA PRIVATE KEY-----\n${body}\n-----END RSA PRIVATE KEY-----\ny\n`;
    for (const cuts of [[], [100, 900, 1200]]) {
      const r = through(masker, Buffer.from(input), cuts, { lookBehindBytes: 256 });
      assert.equal(r.out, 'x\n[REDACTED:pem_private_key]\ny\n');
    }
  });
});

describe('lifecycle and fail closed', () => {
  test('end() emits everything; write after end() is refused; flush() empties the hold', () => {
    const c = collect();
    const s = createStreamMasker({ onOutput: c.onOutput });
    s.write('abc 4111 1111');
    s.flush();
    assert.equal(c.text(), 'abc **** ****', 'flush masks a strong candidate whole');
    s.write(' 1111 1111 x');
    s.end();
    assert.equal(c.text(), 'abc **** **** **** **** x');
    assert.throws(() => s.write('more'), /after end/);
  });

  test('createStreamMasker with detector ids and a strategy', () => {
    const c = collect();
    const s = createStreamMasker({ detectors: ['email', 'card'], strategy: 'partial', onOutput: c.onOutput });
    s.write('ann@example.com 4242 4242 4242 4242 DB_PASSWORD=x\n');
    s.end();
    assert.equal(c.text(), 'a***@example.com **** **** **** 4242 DB_PASSWORD=x\n');
    assert.throws(() => createStreamMasker({ detectors: ['card'], strategy: 'hash', onOutput: () => undefined }), /hmacKey/);
  });

  test('an error inside masking replaces the data with a marker, never the raw bytes', () => {
    class Broken extends RuleSet {
      override collect(text: string, sink: Collector): Collector {
        if (text.includes('boom')) throw new Error('detector failure');
        return super.collect(text, sink);
      }
    }
    const c = collect();
    const s = new StreamMasker({ rules: new Broken([{ detector: 'card', strategy: 'redact' }], undefined), onOutput: c.onOutput });
    s.write('fine\n');
    s.write('boom 4111111111111111 secret\n');
    s.write('after\n');
    s.end();
    assert.equal(c.text(), 'fine\n[REDACTED:masking-error]after\n');
  });

  test('a consumer that throws during a timer flush reaches onError, not the process', async () => {
    const errors: unknown[] = [];
    const s = masker.streamMasker({
      onOutput: () => {
        throw new Error('consumer gone');
      },
      onError: (e) => errors.push(e),
      flushAfterMs: 1,
    });
    assert.throws(() => s.write('x '), /consumer gone/, 'emitted synchronously: the throw reaches the writer');
    s.write('word'); // held: a word could be an email's local part
    await sleep(40);
    assert.equal(errors.length, 1, 'the held word was flushed by the timer');
    assert.match(String(errors[0]), /consumer gone/);
  });

  test('options are validated', () => {
    assert.throws(() => masker.streamMasker({ onOutput: () => undefined, lookBehindBytes: 10 }), /lookBehindBytes/);
    assert.throws(() => masker.streamMasker({ onOutput: () => undefined, flushAfterMs: -1 }), /flushAfterMs/);
  });
});

describe('reused buffers: held bytes and the scanned text are assembled in memory the masker reuses', () => {
  /** Lines of log output: plain ASCII, multi-byte UTF-8, colour codes, and a secret every few lines. */
  function bigLog(lines: number): { text: string; secrets: string[] } {
    const secrets: string[] = [];
    const out: string[] = [];
    for (let i = 0; i < lines; i++) {
      switch (i % 9) {
        case 2:
          out.push(`2024-05-01T12:00:${String(i % 60).padStart(2, '0')}Z INFO charged card 4111 1111 1111 1111 amount=12.50`);
          secrets.push('4111 1111 1111 1111');
          break;
        case 4:
          out.push(`2024-05-01 Grüße, 日本語 → user${i}@example.org ✓ naïve`);
          secrets.push(`user${i}@example.org`);
          break;
        case 6:
          out.push(`\x1b[32mINFO\x1b[0m loaded DB_PASSWORD=s3cr3t-${i}x \x1b[1mtoken\x1b[0m ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5`);
          secrets.push(`s3cr3t-${i}x`, 'ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5');
          break;
        case 7:
          out.push(`ssn 123-45-6789 café 5555\x1b[0m 5555 5555 4444 fin`);
          secrets.push('123-45-6789');
          break;
        default:
          out.push(`2024-05-01T12:00:00.${String(i % 1000).padStart(3, '0')}Z DEBUG [worker-${i % 8}] GET /api/v1/orders/${i}?page=2 200 ${i % 300}ms`);
      }
    }
    return { text: out.join('\n') + '\n', secrets };
  }

  function run(input: Buffer, cuts: number[], keep?: Buffer[]): Buffer {
    const copies: Buffer[] = [];
    const s = masker.streamMasker({
      onOutput: (c) => {
        keep?.push(c); // the very Buffer the masker emitted, not a copy
        copies.push(Buffer.from(c));
      },
    });
    let prev = 0;
    for (const cut of [...cuts, input.length]) {
      s.write(input.subarray(prev, cut));
      prev = cut;
    }
    s.end();
    return Buffer.concat(copies);
  }

  const { text, secrets } = bigLog(4000);
  const input = Buffer.from(text, 'utf8');
  const whole = run(input, []);

  test('the whole text: every secret masked, multi-byte characters and colour codes intact', () => {
    const out = whole.toString('utf8');
    for (const v of secrets) assert.ok(!stripAnsi(out).includes(v), `leaked ${v}`);
    assert.equal(stripAnsi(out), stripAnsi(masker.maskText(stripAnsi(text))));
    assert.ok(out.includes('Grüße, 日本語 → [REDACTED:email] ✓ naïve'));
    assert.ok(out.includes('\x1b[32mINFO\x1b[0m loaded DB_PASSWORD=[REDACTED:secret_assignment]'));
  });

  test('emitted chunks are never overwritten by later writes', () => {
    const keep: Buffer[] = [];
    const cuts: number[] = [];
    // chunk ends that fall inside numbers and words, so that every write holds a tail back
    for (let o = 997; o < input.length; o += 997 + (o % 13)) cuts.push(o);
    const out = run(input, cuts, keep);
    assert.deepEqual(out, whole);
    assert.deepEqual(Buffer.concat(keep), whole, 'a Buffer handed to onOutput changed after it was emitted');
  });

  test('chunks of 64 KiB, of more than the reused buffer (128 KiB) and of odd sizes give the same bytes', () => {
    for (const size of [65536, 131072 + 5, 200_000, 4099, 513]) {
      const cuts: number[] = [];
      for (let o = size; o < input.length; o += size) cuts.push(o);
      const keep: Buffer[] = [];
      assert.deepEqual(run(input, cuts, keep), whole, `chunks of ${size}`);
      assert.deepEqual(Buffer.concat(keep), whole, `chunks of ${size}: emitted Buffers unchanged`);
    }
  });

  test('a secret cut at every offset after a chunk longer than the context window', () => {
    const filler = Buffer.from(`${'plain ascii line with numbers 12 345\n'.repeat(2000)}naïve → `, 'utf8');
    for (const secret of ['4111 1111 1111 1111', 'jane.doe@example.org', 'ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5', 'DB_PASSWORD=hunter2x']) {
      const tailText = `${secret} 日本 end\n`;
      const data = Buffer.concat([filler, Buffer.from(tailText, 'utf8')]);
      const expected = run(data, []);
      assert.ok(!expected.toString('utf8').includes(secret.replace('DB_PASSWORD=', '')), secret);
      for (let k = 0; k <= Buffer.byteLength(tailText); k++) {
        const keep: Buffer[] = [];
        const out = run(data, [filler.length - 3, filler.length + k], keep);
        assert.deepEqual(out, expected, `${secret} cut at +${k}`);
        assert.deepEqual(Buffer.concat(keep), expected, `${secret} cut at +${k}: emitted Buffers unchanged`);
      }
    }
  });

  test('two maskers written alternately (they share the text buffer) give the same bytes as each alone', () => {
    const other = Buffer.from(bigLog(1500).text.replace(/4111 1111 1111 1111/g, '5555 5555 5555 4444'), 'utf8');
    const aloneA = whole;
    const aloneB = run(other, []);
    const outA: Buffer[] = [];
    const outB: Buffer[] = [];
    const a = masker.streamMasker({ onOutput: (c) => outA.push(c) });
    const b = masker.streamMasker({ onOutput: (c) => outB.push(c) });
    const step = 1777; // odd chunk ends: both hold tails and keep a context between writes
    for (let o = 0; o < Math.max(input.length, other.length); o += step) {
      if (o < input.length) a.write(input.subarray(o, Math.min(o + step, input.length)));
      if (o < other.length) b.write(other.subarray(o, Math.min(o + step, other.length)));
    }
    a.end();
    b.end();
    assert.deepEqual(Buffer.concat(outA), aloneA);
    assert.deepEqual(Buffer.concat(outB), aloneB);
  });

  test('a weak prefix released after more than the context window of text is still completed and masked', async () => {
    const c = collect();
    const s = masker.streamMasker({ onOutput: c.onOutput, flushAfterMs: 1, holdMaxMs: 1000 });
    const long = `${'é'.repeat(300)} ${'x'.repeat(700)} pay 4111`;
    s.write(long);
    await sleep(40);
    assert.equal(c.text(), long, 'four digits are not yet distinctive: released');
    s.write(' 1111 1111 1111 ok');
    s.end();
    assert.equal(c.text(), `${long} **** **** 1111 ok`);
  });

  test('a token prefix released after a long line: what completes it is one marker, once', async () => {
    const c = collect();
    const s = masker.streamMasker({ onOutput: c.onOutput, flushAfterMs: 1, holdMaxMs: 1000 });
    const long = `${'y'.repeat(2000)} ghp_`;
    s.write(long);
    await sleep(40);
    assert.equal(c.text(), long, "a token's literal prefix alone is weak: released");
    s.write('aB3dE5gH7jK9mN1pQ3sT5v');
    s.write('W7yZ9bC1dE3fG5 done\n');
    s.end();
    assert.equal(c.text(), `${long}[REDACTED:github_token] done\n`);
  });
});
