// Property tests (fast-check): secrets inserted into random text never survive masking, whole text
// or streamed in random chunks; masking is idempotent; output length is bounded; the stream masker
// does not depend on how its input is chunked.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Masker, luhnValid } from '../src/masking/index.js';
import type { MaskSpec } from '../src/policy/types.js';

const KEY = 'unit-test-masking-key-0123456789';
const RUNS = 300;

function withLuhn(prefix: string): string {
  for (let d = 0; d < 10; d++) if (luhnValid(prefix + d)) return prefix + d;
  throw new Error('unreachable');
}

const digits = (n: number): fc.Arbitrary<string> => fc.array(fc.constantFrom(...'0123456789'), { minLength: n, maxLength: n }).map((a) => a.join(''));

/** Luhn-valid cards of common issuers, compact or grouped with spaces or dashes. */
const cardArb = fc
  .tuple(fc.constantFrom(['4', 16], ['51', 16], ['55', 16], ['2221', 16], ['34', 15], ['37', 15], ['6011', 16], ['353', 16], ['4', 13]), digits(18), fc.constantFrom('', ' ', '-'))
  .map(([[prefix, len], rest, sep]) => {
    const p = String(prefix);
    const card = withLuhn(p + rest.slice(0, Number(len) - p.length - 1));
    const groups = card.length === 15 ? [card.slice(0, 4), card.slice(4, 10), card.slice(10)] : (card.match(/.{1,4}/g) ?? []);
    return { compact: card, shown: sep === '' ? card : groups.join(sep) };
  });

const word = fc.array(fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz'), { minLength: 1, maxLength: 8 }).map((a) => a.join(''));
const emailArb = fc.tuple(word, fc.option(word, { nil: undefined }), word, fc.constantFrom('com', 'org', 'io', 'co.uk')).map(([a, b, d, tld]) => `${a}${b ? '.' + b : ''}@${d}.${tld}`);
const alnum = (n: number): fc.Arbitrary<string> =>
  fc.array(fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'), { minLength: n, maxLength: n }).map((a) => a.join(''));
const tokenArb = fc.oneof(
  alnum(36).map((s) => `ghp_${s}`),
  alnum(20).map((s) => `glpat-${s}`),
  alnum(24).map((s) => `xoxb-1234567890-${s}`),
  alnum(16).map((s) => `AKIA${s.toUpperCase()}`),
);
const secretValueArb = alnum(12).map((s) => `Zz${s}`);

/** Filler text: words, punctuation, newlines, a few multi-byte characters and colour codes. */
const fillerArb = fc
  .array(fc.oneof(word, fc.constantFrom(' ', '  ', ', ', '. ', '\n', '\t', 'é', '日本', '→', '\x1b[31m', '\x1b[0m', ' 42 ', ' (x) ')), { maxLength: 12 })
  .map((a) => a.join(''));

type Secret = { raw: string; mustNotContain: string[] };
const secretArb: fc.Arbitrary<Secret> = fc.oneof(
  cardArb.map((c) => ({ raw: c.shown, mustNotContain: [c.compact, c.shown] })),
  emailArb.map((e) => ({ raw: e, mustNotContain: [e] })),
  tokenArb.map((t) => ({ raw: t, mustNotContain: [t] })),
  secretValueArb.map((v) => ({ raw: `API_KEY=${v}`, mustNotContain: [v] })),
  secretValueArb.map((v) => ({ raw: `"password": "${v}"`, mustNotContain: [v] })),
  secretValueArb.map((v) => ({ raw: `https://u:${v}@example.com/`, mustNotContain: [v] })),
);

/** A document: filler and secrets, each secret set off by spaces (glued to a word it is another word). */
const docArb = fc.array(fc.tuple(fillerArb, secretArb), { minLength: 1, maxLength: 5 }).map((parts) => {
  let text = '';
  const secrets: Secret[] = [];
  for (const [f, s] of parts) {
    text += `${f} ${s.raw} `;
    secrets.push(s);
  }
  return { text, secrets };
});

const stripAnsi = (s: string): string => s.replace(/\x1b\[[0-9;]*m/g, ''); // eslint-disable-line no-control-regex

function strategiesMasker(strategy: 'redact' | 'last4' | 'partial'): Masker {
  const masks: MaskSpec[] = ['card', 'email', 'github_token', 'gitlab_token', 'slack_token', 'aws_access_key', 'secret_assignment'].map((detector) => ({
    detector,
    strategy,
    rule: 'prop',
  }));
  return new Masker({ masks, hmacKey: KEY });
}

function assertNoSecret(out: string, secrets: Secret[]): void {
  const plain = stripAnsi(out);
  for (const s of secrets) for (const v of s.mustNotContain) assert.ok(!plain.includes(v), `leaked ${JSON.stringify(v)} in ${JSON.stringify(out)}`);
}

function streamed(m: Masker, text: string, cuts: number[]): string {
  const input = Buffer.from(text, 'utf8');
  const out: Buffer[] = [];
  const s = m.streamMasker({ onOutput: (c) => out.push(Buffer.from(c)) });
  let prev = 0;
  for (const c of [...new Set(cuts.map((x) => x % (input.length + 1)))].sort((a, b) => a - b)) {
    s.write(input.subarray(prev, c));
    prev = c;
  }
  s.write(input.subarray(prev));
  s.end();
  return Buffer.concat(out).toString('utf8');
}

describe('properties', () => {
  for (const strategy of ['redact', 'last4', 'partial'] as const) {
    test(`${strategy}: masked text never contains an inserted secret`, () => {
      const m = strategiesMasker(strategy);
      fc.assert(
        fc.property(docArb, ({ text, secrets }) => assertNoSecret(m.maskText(text), secrets)),
        { numRuns: RUNS },
      );
    });
  }

  test('stream in random chunks: never a secret, and the same output as the whole text', () => {
    const m = strategiesMasker('last4');
    fc.assert(
      fc.property(docArb, fc.array(fc.nat(), { maxLength: 12 }), ({ text, secrets }, cuts) => {
        const out = streamed(m, text, cuts);
        assertNoSecret(out, secrets);
        assert.equal(stripAnsi(out), stripAnsi(m.maskText(stripAnsi(text))));
      }),
      { numRuns: RUNS },
    );
  });

  test('masking is idempotent', () => {
    for (const strategy of ['redact', 'last4', 'partial'] as const) {
      const m = strategiesMasker(strategy);
      fc.assert(
        fc.property(docArb, ({ text }) => {
          const once = m.maskText(text);
          assert.equal(m.maskText(once), once);
        }),
        { numRuns: Math.ceil(RUNS / 3) },
      );
    }
  });

  test('output length is bounded by the input plus one marker per finding', () => {
    const m = strategiesMasker('redact');
    fc.assert(
      fc.property(docArb, ({ text }) => {
        const findings = m.findings(text).length;
        assert.ok(m.maskText(text).length <= text.length + 28 * findings);
      }),
      { numRuns: RUNS },
    );
  });

  test('the stream masker does not depend on chunking, whatever the bytes', () => {
    const m = new Masker({ masks: [{ detector: 'card', strategy: 'last4', rule: 'p' }], hmacKey: KEY });
    const byte = fc.constantFrom(0x1b, 0x5b, 0x6d, 0x3b, 0x5d, 0x07, 0x20, 0x0a, 0x2d, 0x40, 0x3d, 0x3a, 0x2f, 0xc3, 0xa9, 0xe6, 0x97, 0xa5, 0xff, ...Buffer.from('0123456789'), ...Buffer.from('aepxAK_'));
    fc.assert(
      fc.property(fc.array(byte, { maxLength: 300 }), fc.array(fc.nat(), { maxLength: 10 }), (bytes, cuts) => {
        const input = Buffer.from(bytes);
        const whole: Buffer[] = [];
        const a = m.streamMasker({ onOutput: (c) => whole.push(Buffer.from(c)) });
        a.write(input);
        a.end();
        const parts: Buffer[] = [];
        const b = m.streamMasker({ onOutput: (c) => parts.push(Buffer.from(c)) });
        let prev = 0;
        for (const c of [...new Set(cuts.map((x) => x % (input.length + 1)))].sort((x, y) => x - y)) {
          b.write(input.subarray(prev, c));
          prev = c;
        }
        b.write(input.subarray(prev));
        b.end();
        assert.deepEqual(Buffer.concat(parts), Buffer.concat(whole));
      }),
      { numRuns: RUNS },
    );
  });
});
