// Row masker: column rules, detector rules over values of the right types, identity for untouched
// cells, binary format, fail-closed handling of what cannot be inspected.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Masker, TEXT_OID, columnMatches, createRowMasker, type ColumnDescriptor } from '../src/masking/index.js';
import { numericToBinary } from '../src/masking/pgtypes.js';
import type { MaskSpec } from '../src/policy/types.js';
import { PortcullisError } from '../src/policy/types.js';

const KEY = 'unit-test-masking-key-0123456789';

/** The reference policy's masks for the demo `customers` table (CONTRACT.md). */
const REFERENCE: MaskSpec[] = [
  { column: 'public.customers.email', strategy: 'partial', rule: 'postgres.yaml:mask-customers' },
  { column: 'public.customers.card_number', strategy: 'last4', rule: 'postgres.yaml:mask-customers' },
  { column: 'public.customers.ssn', strategy: 'redact', rule: 'postgres.yaml:mask-customers' },
  { detector: 'card', strategy: 'last4', rule: 'postgres.yaml:mask-cards-everywhere' },
];

function customers(format: 'text' | 'binary' = 'text'): ColumnDescriptor[] {
  return ['id', 'name', 'email', 'phone', 'card_number', 'ssn'].map((column, i) => ({
    table: 'public.customers',
    column,
    typeOid: i === 0 ? 23 : 25,
    format,
  }));
}

const b = (s: string): Buffer => Buffer.from(s, 'utf8');
const str = (row: (Buffer | null)[]): (string | null)[] => row.map((c) => (c === null ? null : c.toString('utf8')));

describe('row masker on the demo customers shape', () => {
  const masker = new Masker({ masks: REFERENCE, hmacKey: KEY });

  test('reference masks: email partial, card last4, ssn redacted, cards found anywhere', () => {
    const rm = masker.rowMasker(customers());
    const row = [b('7'), b('Zoë Ångström 4111 1111 1111 1111'), b('zoe@example.com'), b('555-123-4567'), b('4242 4242 4242 4242'), b('123-45-6789')];
    const out = rm(row);
    assert.deepEqual(str(out), ['7', 'Zoë Ångström **** **** **** 1111', 'z***@example.com', '555-123-4567', '**** **** **** 4242', '[REDACTED:ssn]']);
    assert.deepEqual(rm.advertisedTypes, [23, 25, 25, 25, 25, 25]);
    assert.deepEqual(
      rm.plan.map((p) => p.action),
      ['pass', 'scan', 'column', 'scan', 'column', 'column'],
    );
  });

  test('untouched cells are the same Buffer objects; an untouched row is the same array', () => {
    const rm = masker.rowMasker(customers());
    const row = [b('1'), b('Ann Lee'), b('ann@example.com'), b('555-123-4567'), b('4242424242424242'), b('123-45-6789')];
    const out = rm(row);
    assert.notEqual(out, row, 'masked columns: a new array');
    assert.equal(out[0], row[0]);
    assert.equal(out[1], row[1]);
    assert.equal(out[3], row[3]);
    const idOnly = createRowMasker([{ table: 'public.customers', column: 'id', typeOid: 23, format: 'text' }], REFERENCE);
    assert.equal(idOnly.passthrough, true);
    const r2 = [b('5')];
    assert.equal(idOnly(r2), r2);
    const nameOnly = masker.rowMasker([{ table: 'public.customers', column: 'name', typeOid: 25, format: 'text' }]);
    const r3 = [b('Nothing to see 12345')];
    assert.equal(nameOnly(r3), r3);
    assert.equal(nameOnly([null])[0], null);
  });

  test('binary-format text cells are masked the same way', () => {
    const rm = masker.rowMasker(customers('binary'));
    const id = Buffer.alloc(4);
    id.writeInt32BE(9);
    const out = rm([id, b('x 4111111111111111'), b('bo@example.org'), b('n/a'), b('4242 4242 4242 4242'), b('123-45-6789')]);
    assert.equal(out[0], id);
    assert.deepEqual(str(out.slice(1)), ['x ************1111', 'b***@example.org', 'n/a', '**** **** **** 4242', '[REDACTED:ssn]']);
  });
});

describe('column rules', () => {
  test('matching: qualified, unqualified, wildcard, unknown source table', () => {
    assert.ok(columnMatches('public.customers.email', { table: 'public.customers', column: 'email' }));
    assert.ok(columnMatches('public.customers.email', { table: 'customers', column: 'email' }));
    assert.ok(!columnMatches('public.customers.email', { table: 'public.orders', column: 'email' }));
    assert.ok(!columnMatches('public.customers.email', { table: 'crm.customers', column: 'email' }));
    assert.ok(columnMatches('customers.email', { table: 'crm.customers', column: 'email' }));
    assert.ok(columnMatches('public.*.email', { table: 'public.leads', column: 'EMAIL' }));
    assert.ok(columnMatches('public.customers.email', { column: 'email' }), 'source unknown: matched by name (fail closed)');
    assert.ok(!columnMatches('public.customers.email', { column: 'mail' }));
  });

  test('type-aware: integers, uuids, dates, json', () => {
    const masks: MaskSpec[] = [
      { column: 'public.t.n', strategy: 'hash', rule: 'r' },
      { column: 'public.t.m', strategy: 'redact', rule: 'r' },
      { column: 'public.t.u', strategy: 'hash', rule: 'r' },
      { column: 'public.t.d', strategy: 'partial', rule: 'r' },
      { column: 'public.t.j', strategy: 'redact', rule: 'r' },
    ];
    const cols: ColumnDescriptor[] = [
      { table: 'public.t', column: 'n', typeOid: 20, format: 'text' },
      { table: 'public.t', column: 'm', typeOid: 23, format: 'binary' },
      { table: 'public.t', column: 'u', typeOid: 2950, format: 'text' },
      { table: 'public.t', column: 'd', typeOid: 1082, format: 'text' },
      { table: 'public.t', column: 'j', typeOid: 3802, format: 'text' },
    ];
    const m = new Masker({ masks, hmacKey: KEY });
    const rm = m.rowMasker(cols);
    const out = rm([b('123'), Buffer.from([0, 0, 0, 5]), b('3f2504e0-4f89-11d3-9a0c-0305e82c3301'), b('2024-05-01'), b('{"a":1}')]);
    assert.match(out[0]!.toString(), /^\d+$/);
    assert.equal(out[1], null);
    assert.match(out[2]!.toString(), /^[0-9a-f-]{36}$/);
    assert.equal(out[3], null);
    assert.equal(JSON.parse(out[4]!.toString()), '[REDACTED:j]');
    assert.deepEqual(rm.advertisedTypes, [20, 23, 2950, 1082, 3802]);
    const again = rm([b('123'), null, b('3f2504e0-4f89-11d3-9a0c-0305e82c3301'), null, null]);
    assert.deepEqual(again[0], out[0], 'hash is stable: joins keep working');
    const textMode = m.rowMasker(cols, { typeMode: 'text' });
    assert.deepEqual(textMode.advertisedTypes, [20, TEXT_OID, 2950, TEXT_OID, 3802]);
    const t = textMode([b('1'), Buffer.from([0, 0, 0, 5]), null, b('2024-05-01'), null]);
    assert.equal(t[1]!.toString(), '[REDACTED:m]');
    assert.equal(t[3]!.toString(), '****-05-01', 'partial of a date as text: digit-shaped, last 4 digits kept');
  });

  test('citext-like columns via textTypeOids', () => {
    const m = new Masker({ masks: [{ column: 'public.u.email', strategy: 'partial', rule: 'r' }], hmacKey: KEY });
    const cols: ColumnDescriptor[] = [{ table: 'public.u', column: 'email', typeOid: 90001, format: 'text' }];
    assert.equal(m.rowMasker(cols)([b('al@x.io')])[0], null, 'unknown type: NULL rather than an invalid value');
    assert.equal(m.rowMasker(cols, { textTypeOids: [90001] })([b('al@x.io')])[0]!.toString(), 'a***@x.io');
  });
});

describe('detector rules by column type', () => {
  const masker = new Masker({ masks: [{ detector: 'card', strategy: 'last4', rule: 'r' }, { detector: 'email', strategy: 'redact', rule: 'r' }], hmacKey: KEY });

  test('a card in an int8 or numeric column: NULL (preserve) or text (text mode)', () => {
    const cols: ColumnDescriptor[] = [
      { column: 'a', typeOid: 20, format: 'text' },
      { column: 'b', typeOid: 20, format: 'binary' },
      { column: 'c', typeOid: 1700, format: 'text' },
      { column: 'd', typeOid: 1700, format: 'binary' },
      { column: 'e', typeOid: 23, format: 'text' },
    ];
    const rm = masker.rowMasker(cols);
    assert.deepEqual(
      rm.plan.map((p) => p.action),
      ['scan', 'scan', 'scan', 'scan', 'pass'],
      'int4 cannot hold 13 digits',
    );
    const i8 = Buffer.alloc(8);
    i8.writeBigInt64BE(4111111111111111n);
    const row = [b('4111111111111111'), i8, b('4111111111111111.00'), numericToBinary('4111111111111111'), b('42')];
    assert.deepEqual(rm(row), [null, null, null, null, row[4]]);
    const plain = [b('4111111111111112'), Buffer.from(i8).fill(0), b('12.5'), numericToBinary('12.5'), b('42')];
    const out = rm(plain);
    plain.forEach((c, i) => assert.equal(out[i], c, `untouched ${i}`));
    const text = masker.rowMasker(cols, { typeMode: 'text' });
    assert.deepEqual(text.advertisedTypes, [TEXT_OID, TEXT_OID, TEXT_OID, TEXT_OID, 23]);
    assert.deepEqual(str(text(row)), ['************1111', '************1111', '************1111', '************1111', '42']);
    const reencoded = text([b('1'), Buffer.from([0, 0, 0, 0, 0, 0, 0, 7]), b('2'), numericToBinary('3'), b('4')]);
    assert.deepEqual(str(reencoded), ['1', '7', '2', '3', '4'], 'binary cells advertised as text are re-sent as text');
  });

  test('createRowMasker takes the HMAC key directly', () => {
    const rm = createRowMasker([{ column: 'e', typeOid: 25, format: 'text' }], [{ column: 'e', strategy: 'hash', rule: 'r' }], { hmacKey: KEY });
    const out = rm([b('x@y.io')])[0]!;
    assert.match(out.toString(), /^[0-9a-f]{16}$/);
    const viaMasker = new Masker({ masks: [{ column: 'e', strategy: 'hash', rule: 'r' }], hmacKey: KEY }).rowMasker([{ column: 'e', typeOid: 25, format: 'text' }]);
    assert.deepEqual(viaMasker([b('x@y.io')])[0], out, 'same key, same hash');
  });

  test('a card in an int8 column with hash: a deterministic integer', () => {
    const m = new Masker({ masks: [{ detector: 'card', strategy: 'hash', rule: 'r' }], hmacKey: KEY });
    const rm = m.rowMasker([{ column: 'n', typeOid: 20, format: 'binary' }]);
    const i8 = Buffer.alloc(8);
    i8.writeBigInt64BE(4111111111111111n);
    const a = rm([i8])[0]!;
    assert.equal(a.length, 8);
    assert.notEqual(a.readBigInt64BE(0), 4111111111111111n);
    assert.deepEqual(rm([Buffer.from(i8)])[0], a);
  });

  test('json: a card written as a number is replaced by a JSON string, the document stays valid', () => {
    const rm = masker.rowMasker([{ column: 'doc', typeOid: 114, format: 'text' }, { column: 'docb', typeOid: 3802, format: 'binary' }]);
    const doc = '{"card": 4111111111111111, "note": "mail bo@example.com", "n": 1}';
    const out = rm([b(doc), Buffer.concat([Buffer.from([1]), b(doc)])]);
    assert.deepEqual(JSON.parse(out[0]!.toString()), { card: '************1111', note: 'mail [REDACTED:email]', n: 1 });
    assert.equal(out[1]![0], 1);
    assert.deepEqual(JSON.parse(out[1]!.subarray(1).toString()), { card: '************1111', note: 'mail [REDACTED:email]', n: 1 });
  });

  test('bytea is decoded, masked and re-encoded', () => {
    const rm = masker.rowMasker([{ column: 'blob', typeOid: 17, format: 'text' }, { column: 'blob2', typeOid: 17, format: 'binary' }]);
    const raw = b('card 4111111111111111 end');
    const out = rm([b('\\x' + raw.toString('hex')), raw]);
    assert.equal(Buffer.from(out[0]!.toString().slice(2), 'hex').toString(), 'card ************1111 end');
    assert.equal(out[1]!.toString(), 'card ************1111 end');
  });

  test('arrays of text are scanned; numeric arrays with a card become NULL', () => {
    const rm = masker.rowMasker([{ column: 'tags', typeOid: 1009, format: 'text' }, { column: 'ids', typeOid: 1016, format: 'text' }]);
    const out = rm([b('{a,4111111111111111}'), b('{1,4111111111111111}')]);
    assert.equal(out[0]!.toString(), '{a,************1111}');
    assert.equal(out[1], null);
  });

  test('types that cannot hold a detected value are not inspected', () => {
    const cols: ColumnDescriptor[] = [
      { column: 'd', typeOid: 1082, format: 'text' },
      { column: 'u', typeOid: 2950, format: 'binary' },
      { column: 'f', typeOid: 16, format: 'text' },
    ];
    const rm = masker.rowMasker(cols);
    assert.equal(rm.passthrough, true);
  });
});

describe('fail closed', () => {
  const masks: MaskSpec[] = [{ detector: 'card', strategy: 'last4', rule: 'r' }];

  test('binary cells of types the masker cannot decode: NULL, marker, or refusal', () => {
    const cols: ColumnDescriptor[] = [{ column: 'x', typeOid: 90001, format: 'binary' }];
    const cell = b('4111111111111111');
    assert.deepEqual(createRowMasker(cols, masks)([cell]), [null]);
    assert.equal(createRowMasker(cols, masks, { onUninspectable: 'redact' })([cell])[0]!.toString(), '[REDACTED:x]');
    assert.throws(
      () => createRowMasker(cols, masks, { onUninspectable: 'refuse' })([cell]),
      (e: unknown) => e instanceof PortcullisError && e.code === 'mask_refused' && /column x/.test(e.message),
    );
    const colRule: MaskSpec[] = [{ column: 'x', strategy: 'last4', rule: 'r' }];
    assert.deepEqual(createRowMasker(cols, colRule)([cell]), [null], 'a column rule that needs the value');
  });

  test('cells over maxCellBytes are masked whole or refused', () => {
    const cols: ColumnDescriptor[] = [{ column: 'big', typeOid: 25, format: 'text' }];
    const big = Buffer.alloc(2048, 'a');
    assert.deepEqual(createRowMasker(cols, masks, { maxCellBytes: 1024 })([big]), [null]);
    assert.equal(createRowMasker(cols, masks, { maxCellBytes: 1024, onUninspectable: 'redact' })([big])[0]!.toString(), '[REDACTED:big]');
    assert.throws(() => createRowMasker(cols, masks, { maxCellBytes: 1024, onUninspectable: 'refuse' })([big]), /maxCellBytes/);
    const small = Buffer.alloc(512, 'a');
    assert.equal(createRowMasker(cols, masks, { maxCellBytes: 1024 })([small])[0], small);
  });

  test('an error while masking a cell makes it NULL', () => {
    const cols: ColumnDescriptor[] = [{ column: 'n', typeOid: 1700, format: 'binary' }];
    const malformed = Buffer.from([0, 9, 0, 0]); // numeric header cut short
    assert.deepEqual(createRowMasker(cols, masks)([malformed]), [null]);
  });

  test('a row with the wrong number of values is refused', () => {
    const rm = createRowMasker([{ column: 'a', typeOid: 25, format: 'text' }], masks);
    assert.throws(() => rm([b('x'), b('y')]), (e: unknown) => e instanceof PortcullisError && e.code === 'mask_row_shape');
  });

  test('invalid masks are rejected at construction with a precise message', () => {
    const cols: ColumnDescriptor[] = [{ column: 'a', typeOid: 25, format: 'text' }];
    const bad = (m: MaskSpec, code: string): void =>
      assert.throws(() => createRowMasker(cols, [m]), (e: unknown) => e instanceof PortcullisError && e.code === code && e.message.includes('f.yaml:r'));
    bad({ detector: 'cards', strategy: 'redact', rule: 'f.yaml:r' }, 'mask_unknown_detector');
    bad({ column: 'a', strategy: 'blur' as 'redact', rule: 'f.yaml:r' }, 'mask_bad_strategy');
    bad({ column: 'a', strategy: 'hash', rule: 'f.yaml:r' }, 'mask_no_hmac_key');
    bad({ column: 'a', strategy: 'fixed', rule: 'f.yaml:r' }, 'mask_bad_option');
    bad({ column: 'a', strategy: 'partial', keepFirst: -1, rule: 'f.yaml:r' }, 'mask_bad_option');
  });
});
