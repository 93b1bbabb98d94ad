// Strategies (redact, partial, last4, hash, null, fixed) and the type-aware masks for SQL columns.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Hasher, Masker, TEXT_OID, maskLast4, maskPartial, maskString, maskedTypeFor } from '../src/masking/index.js';
import { maskCell, numericFromBinary, numericToBinary, NEED_VALUE } from '../src/masking/pgtypes.js';
import { PortcullisError } from '../src/policy/types.js';

const KEY = 'unit-test-masking-key-0123456789';
const hasher = new Hasher(KEY);

describe('string strategies', () => {
  test('redact names the detector or column', () => {
    assert.equal(maskString('4111111111111111', { strategy: 'redact' }, 'card', 'digits', undefined), '[REDACTED:card]');
    assert.equal(maskString('123-45-6789', { strategy: 'redact' }, 'ssn', 'auto', undefined), '[REDACTED:ssn]');
  });

  test('partial: email form, digits with separators kept, generic first/last', () => {
    assert.equal(maskPartial('john@example.com', 'email', undefined, undefined), 'j***@example.com');
    assert.equal(maskPartial('john@example.com', 'email', 2, undefined), 'jo***@example.com');
    assert.equal(maskPartial('j@example.com', 'email', 1, undefined), '***@example.com', 'never the whole local part');
    assert.equal(maskPartial('4242 4242 4242 4242', 'digits', undefined, undefined), '**** **** **** 4242');
    assert.equal(maskPartial('4242-4242-4242-4242', 'digits', 6, 4), '4242-42**-****-4242');
    assert.equal(maskPartial('+1 (555) 123-4567', 'digits', undefined, 4), '+* (***) ***-4567');
    assert.equal(maskPartial('Jonathan', 'token', 1, 0), 'J***');
    assert.equal(maskPartial('Jonathan', 'token', 2, 2), 'Jo***an');
    assert.equal(maskPartial('Jo', 'token', 1, 1), '***', 'nothing would be hidden: everything is');
    assert.equal(maskPartial('1234', 'digits', 2, 2), '****');
  });

  test('partial on column values infers the shape', () => {
    assert.equal(maskString('ann.lee@shop.io', { strategy: 'partial' }, 'email', 'auto', undefined), 'a***@shop.io');
    assert.equal(maskString('4242 4242 4242 4242', { strategy: 'partial' }, 'card_number', 'auto', undefined), '**** **** **** 4242');
    assert.equal(maskString('Ann Lee', { strategy: 'partial' }, 'name', 'auto', undefined), 'A***');
  });

  test('last4 keeps the last four digits and the separators, at most half of the digits', () => {
    assert.equal(maskLast4('4242 4242 4242 4242'), '**** **** **** 4242');
    assert.equal(maskLast4('4242-4242-4242-4242'), '****-****-****-4242');
    assert.equal(maskLast4('123-45-6789'), '***-**-6789');
    assert.equal(maskLast4('AB12 CD34 5678'), '**** **** 5678');
    assert.equal(maskLast4('123456'), '***456', 'six digits: three kept');
    assert.equal(maskLast4('42'), '*2');
    assert.equal(maskLast4('no digits'), '** ******');
    assert.equal(maskLast4('Jürgen 4111111111111111'), '****** ************1111');
  });

  test('hash: HMAC-SHA-256, 16 hex characters, stable, key-dependent', () => {
    const a = maskString('4111111111111111', { strategy: 'hash' }, 'card', 'digits', hasher);
    assert.match(a ?? '', /^[0-9a-f]{16}$/);
    assert.equal(maskString('4111111111111111', { strategy: 'hash' }, 'card', 'digits', new Hasher(KEY)), a, 'stable across instances');
    assert.notEqual(maskString('4111111111111112', { strategy: 'hash' }, 'card', 'digits', hasher), a);
    assert.notEqual(maskString('4111111111111111', { strategy: 'hash' }, 'card', 'digits', new Hasher('another-key-0123456789abcdef')), a);
    assert.throws(() => maskString('x', { strategy: 'hash' }, 'card', 'digits', undefined), (e: unknown) => e instanceof PortcullisError && e.code === 'mask_no_hmac_key');
    assert.throws(() => new Hasher('short'), (e: unknown) => e instanceof PortcullisError && e.code === 'mask_hmac_key_short');
  });

  test('null and fixed', () => {
    assert.equal(maskString('x', { strategy: 'null' }, 'c', 'auto', undefined), null);
    assert.equal(maskString('x', { strategy: 'fixed', value: 'n/a' }, 'c', 'auto', undefined), 'n/a');
  });

  test('strategies through detector rules in text', () => {
    const m = new Masker({
      masks: [
        { detector: 'card', strategy: 'partial', keepFirst: 6, rule: 't:card' },
        { detector: 'email', strategy: 'partial', rule: 't:email' },
        { detector: 'ssn', strategy: 'hash', rule: 't:ssn' },
        { detector: 'phone', strategy: 'null', rule: 't:phone' },
        { detector: 'iban', strategy: 'fixed', value: '<iban>', rule: 't:iban' },
      ],
      hmacKey: KEY,
      defaultDetectors: false,
    });
    const out = m.maskText('c 4111 1111 1111 1111 e jane@corp.example s 123-45-6789 p (555) 123-4567. i DE89370400440532013000');
    const ssnHash = hasher.hex16('123-45-6789');
    assert.equal(out, `c 4111 11** **** 1111 e j***@corp.example s ${ssnHash} p . i <iban>`);
  });
});

describe('type-aware masks for SQL columns', () => {
  const redact = { strategy: 'redact' as const };
  const hash = { strategy: 'hash' as const };

  test('maskedTypeFor: preserve keeps types, text mode advertises text when the type cannot hold the mask', () => {
    assert.equal(maskedTypeFor(23, 'redact'), 23);
    assert.equal(maskedTypeFor(23, 'redact', 'text'), TEXT_OID);
    assert.equal(maskedTypeFor(23, 'hash', 'text'), 23);
    assert.equal(maskedTypeFor(23, { strategy: 'fixed', value: '0' }, 'text'), 23);
    assert.equal(maskedTypeFor(23, { strategy: 'fixed', value: 'zero' }, 'text'), TEXT_OID);
    assert.equal(maskedTypeFor(25, 'last4', 'text'), 25);
    assert.equal(maskedTypeFor(1043, 'partial', 'text'), 1043);
    assert.equal(maskedTypeFor(2950, 'hash', 'text'), 2950);
    assert.equal(maskedTypeFor(2950, 'partial', 'text'), TEXT_OID);
    assert.equal(maskedTypeFor(1082, 'hash', 'text'), TEXT_OID);
    assert.equal(maskedTypeFor(1082, 'null', 'text'), 1082);
    assert.equal(maskedTypeFor(3802, 'redact', 'text'), 3802);
    assert.equal(maskedTypeFor(18, 'redact'), TEXT_OID, '"char" cannot hold a marker in any mode');
  });

  test('integers: hash gives a deterministic integer in range, other strategies NULL', () => {
    const t = maskCell('int4', false, '42', hash, 'id', hasher, 'preserve');
    assert.ok(Buffer.isBuffer(t));
    const v = Number(t.toString());
    assert.ok(Number.isInteger(v) && v >= 0 && v <= 2147483647);
    assert.deepEqual(maskCell('int4', false, '42', hash, 'id', hasher, 'preserve'), t, 'deterministic');
    const bin = maskCell('int4', true, '42', hash, 'id', hasher, 'preserve');
    assert.ok(Buffer.isBuffer(bin) && bin.length === 4);
    assert.equal(bin.readInt32BE(0), v, 'binary and text formats agree');
    const i2 = maskCell('int2', true, '7', hash, 'n', hasher, 'preserve');
    assert.ok(Buffer.isBuffer(i2) && i2.length === 2 && i2.readInt16BE(0) >= 0);
    const i8 = maskCell('int8', true, '4111111111111111', hash, 'n', hasher, 'preserve');
    assert.ok(Buffer.isBuffer(i8) && i8.length === 8 && i8.readBigInt64BE(0) >= 0n);
    assert.equal(maskCell('int4', false, '42', redact, 'id', hasher, 'preserve'), null);
    assert.equal(maskCell('int8', false, '42', { strategy: 'last4' }, 'id', hasher, 'preserve'), null);
    assert.equal(maskCell('int4', false, '42', { strategy: 'fixed', value: '0' }, 'id', hasher, 'preserve')?.toString(), '0');
    assert.equal(maskCell('int4', false, '42', { strategy: 'fixed', value: '99999999999' }, 'id', hasher, 'preserve'), null, 'out of range');
    assert.equal(maskCell('int4', false, '42', redact, 'id', hasher, 'text')?.toString(), '[REDACTED:id]');
  });

  test('numeric and float: hash numbers valid in both formats', () => {
    const t = maskCell('numeric', false, '12.50', hash, 'amount', hasher, 'preserve');
    assert.match(t!.toString(), /^\d+$/);
    const b = maskCell('numeric', true, '12.50', hash, 'amount', hasher, 'preserve');
    assert.ok(Buffer.isBuffer(b));
    assert.equal(numericFromBinary(b), t!.toString());
    const f = maskCell('float8', true, '1.5', hash, 'x', hasher, 'preserve');
    assert.ok(Buffer.isBuffer(f) && f.length === 8 && Number.isInteger(f.readDoubleBE(0)));
    assert.equal(maskCell('float4', false, '1.5', redact, 'x', hasher, 'preserve'), null);
  });

  test('binary numeric round trip', () => {
    for (const v of ['0', '1', '-1', '12.50', '0.0001', '10000', '123456789012345678901234567890.123', '-0.5']) {
      assert.equal(numericFromBinary(numericToBinary(v)), v === '-0.5' ? '-0.5' : v, v);
    }
  });

  test('uuid: hash gives a deterministic valid uuid, others NULL', () => {
    const u = maskCell('uuid', false, '3f2504e0-4f89-11d3-9a0c-0305e82c3301', hash, 'id', hasher, 'preserve');
    assert.match(u!.toString(), /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const ub = maskCell('uuid', true, '3f2504e0-4f89-11d3-9a0c-0305e82c3301', hash, 'id', hasher, 'preserve');
    assert.ok(Buffer.isBuffer(ub) && ub.length === 16);
    assert.equal(ub.toString('hex'), u!.toString().replace(/-/g, ''));
    assert.equal(maskCell('uuid', false, '3f2504e0-4f89-11d3-9a0c-0305e82c3301', redact, 'id', hasher, 'preserve'), null);
  });

  test('dates are NULL, bool only takes fixed booleans', () => {
    for (const s of ['redact', 'partial', 'last4', 'hash', 'fixed'] as const) {
      assert.equal(maskCell('datetime', false, '2024-05-01', { strategy: s, value: '2000-01-01' }, 'd', hasher, 'preserve'), null, s);
    }
    assert.equal(maskCell('bool', false, 't', { strategy: 'fixed', value: 'false' }, 'b', hasher, 'preserve')?.toString(), 'f');
    assert.deepEqual(maskCell('bool', true, 't', { strategy: 'fixed', value: 'true' }, 'b', hasher, 'preserve'), Buffer.from([1]));
    assert.equal(maskCell('bool', false, 't', hash, 'b', hasher, 'preserve'), null);
  });

  test('json and jsonb stay valid JSON; bytea stays valid bytea', () => {
    const j = maskCell('json', false, '{"a":1}', redact, 'doc', hasher, 'preserve');
    assert.equal(JSON.parse(j!.toString()), '[REDACTED:doc]');
    const jb = maskCell('jsonb', true, '{"a":1}', hash, 'doc', hasher, 'preserve');
    assert.ok(Buffer.isBuffer(jb));
    assert.equal(jb[0], 1, 'jsonb binary version byte');
    assert.match(JSON.parse(jb.subarray(1).toString()) as string, /^[0-9a-f]{16}$/);
    const bt = maskCell('bytea', false, '\\x0102', hash, 'blob', hasher, 'preserve');
    assert.match(bt!.toString(), /^\\x[0-9a-f]{16}$/);
    const bb = maskCell('bytea', true, '\\x0102', redact, 'blob', hasher, 'preserve');
    assert.equal(bb!.toString(), '[REDACTED:blob]');
    assert.equal(maskCell('text', false, null, { strategy: 'last4' }, 't', hasher, 'preserve'), NEED_VALUE, 'value needed but unreadable');
  });
});
