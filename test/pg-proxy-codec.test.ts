// The PostgreSQL codec (pure): framing, client and backend messages, round trips, and a fuzz test
// (fast-check) that random bytes never throw anything but a typed PgProtocolError and never hang.
// Also the upstream login's SCRAM-SHA-256 client against RFC 7677's test vector, md5, the COPY
// row codecs and the startup `options` splitter.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import {
  FrameReader,
  PgProtocolError,
  SYNC,
  decodeAuthentication,
  decodeBackendKeyData,
  decodeClientMessage,
  decodeCommandComplete,
  decodeCopyResponse,
  decodeDataRow,
  decodeNoticeFields,
  decodeNotification,
  decodeParameterStatus,
  decodeReadyForQuery,
  decodeRowDescription,
  decodeSaslMechanisms,
  decodeStartupPacket,
  encodeBind,
  encodeCancelRequest,
  encodeClose,
  encodeDataRow,
  encodeDescribe,
  encodeErrorResponse,
  encodeExecute,
  encodeParse,
  encodeQuery,
  encodeRowDescription,
  encodeSslRequest,
  encodeStartupMessage,
  noticeField,
  tagRowCount,
  type FieldDescription,
} from '../src/proxy/postgres/codec.js';
import { md5PasswordResponse, ScramClient } from '../src/proxy/postgres/scram.js';
import { CopyOutMasker, joinCsvRow, joinTextRow, splitCsvRow, splitTextRow, type CopyOptions } from '../src/proxy/postgres/copy.js';
import { splitOptions } from '../src/proxy/postgres/session.js';
import { SessionMasks, rewriteRowDescription } from '../src/proxy/postgres/maskstate.js';

function onlyProtocolErrors(fn: () => void): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof PgProtocolError)) throw new Error(`threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`, { cause: e });
  }
}

/** Feeds bytes in random-sized chunks and decodes every frame the reader yields. */
function feed(bytes: Uint8Array, cuts: number[], startup: boolean): number {
  const r = new FrameReader(1 << 20);
  let pos = 0;
  let frames = 0;
  const chunks: Buffer[] = [];
  for (const c of cuts) {
    const end = Math.min(bytes.length, pos + c);
    chunks.push(Buffer.from(bytes.subarray(pos, end)));
    pos = end;
  }
  chunks.push(Buffer.from(bytes.subarray(pos)));
  let inStartup = startup;
  for (const ch of chunks) {
    r.push(ch);
    for (let i = 0; i < 10_000; i++) {
      if (inStartup) {
        const f = r.nextStartup();
        if (!f) break;
        frames++;
        decodeStartupPacket(f.body);
        inStartup = false;
      } else {
        const f = r.next();
        if (!f) break;
        frames++;
        decodeClientMessage(f.type, f.body);
      }
    }
  }
  return frames;
}

describe('framing', () => {
  test('frames split across chunks are reassembled; frames inside one chunk are not copied', () => {
    const q = encodeQuery('SELECT 1');
    const both = Buffer.concat([q, SYNC]);
    const r = new FrameReader();
    r.push(both.subarray(0, 3));
    assert.equal(r.next(), null);
    r.push(both.subarray(3, 14));
    const f1 = r.next();
    assert.ok(f1);
    assert.deepEqual(decodeClientMessage(f1.type, f1.body), { type: 'Query', sql: 'SELECT 1' });
    r.push(both.subarray(14));
    const f2 = r.next()!;
    assert.equal(f2.type, 0x53);
    const one = Buffer.concat([q, q]);
    const r2 = new FrameReader();
    r2.push(one);
    const a = r2.next()!;
    assert.equal(a.raw.buffer, one.buffer, 'zero-copy subarray');
  });

  test('an absurd length fails at once (no waiting for a gigabyte)', () => {
    const r = new FrameReader(1024);
    r.push(Buffer.from([0x51, 0x7f, 0xff, 0xff, 0xff]));
    assert.throws(() => r.next(), (e: unknown) => e instanceof PgProtocolError && e.sqlstate === '54000');
    const r2 = new FrameReader();
    r2.push(Buffer.from([0x51, 0, 0, 0, 2]));
    assert.throws(() => r2.next(), PgProtocolError);
  });

  test('startup packets: SSL, cancel, startup with parameters, unsupported versions', () => {
    assert.deepEqual(decodeStartupPacket(encodeSslRequest().subarray(4)), { kind: 'ssl' });
    const c = decodeStartupPacket(encodeCancelRequest(1234, Buffer.from([1, 2, 3, 4])).subarray(4));
    assert.deepEqual(c, { kind: 'cancel', pid: 1234, secret: Buffer.from([1, 2, 3, 4]) });
    const s = decodeStartupPacket(encodeStartupMessage([['user', 'a'], ['database', 'shop']]).subarray(4));
    assert.deepEqual(s, { kind: 'startup', major: 3, minor: 0, params: [['user', 'a'], ['database', 'shop']] });
    const v2 = Buffer.alloc(8);
    v2.writeInt32BE(2 << 16, 4);
    assert.throws(() => decodeStartupPacket(v2.subarray(4)), (e: unknown) => e instanceof PgProtocolError && e.sqlstate === '0A000');
  });
});

describe('round trips', () => {
  test('client messages', () => {
    const cases: [Buffer, unknown][] = [
      [encodeParse('s1', 'SELECT $1', [23]), { type: 'Parse', name: 's1', sql: 'SELECT $1', paramTypes: [23] }],
      [encodeDescribe('P', 'p'), { type: 'Describe', target: 'P', name: 'p' }],
      [encodeExecute('p', 5), { type: 'Execute', portal: 'p', maxRows: 5 }],
      [encodeClose('S', 's1'), { type: 'Close', target: 'S', name: 's1' }],
    ];
    for (const [buf, want] of cases) assert.deepEqual(decodeClientMessage(buf[0]!, buf.subarray(5)), want);
    const b = encodeBind('p', 's', [Buffer.from('x'), null], [0], [1, 0]);
    const m = decodeClientMessage(b[0]!, b.subarray(5));
    assert.equal(m.type, 'Bind');
    if (m.type === 'Bind') {
      assert.deepEqual(m.params, [Buffer.from('x'), null]);
      assert.deepEqual(m.resultFormats, [1, 0]);
    }
  });

  test('backend messages', () => {
    const fields: FieldDescription[] = [{ name: 'email', tableOid: 16384, attnum: 3, typeOid: 25, typlen: -1, typmod: -1, format: 0 }];
    const rd = encodeRowDescription(fields);
    assert.deepEqual(decodeRowDescription(rd.subarray(5)), fields);
    const dr = encodeDataRow([Buffer.from('a'), null, Buffer.alloc(0)]);
    assert.deepEqual(decodeDataRow(dr.subarray(5)), [Buffer.from('a'), null, Buffer.alloc(0)]);
    const er = encodeErrorResponse({ code: '42501', message: 'blocked', detail: 'why', hint: 'how' });
    const ef = decodeNoticeFields(er.subarray(5));
    assert.equal(noticeField(ef, 'C'), '42501');
    assert.equal(noticeField(ef, 'H'), 'how');
    assert.equal(tagRowCount('INSERT 0 3'), 3);
    assert.equal(tagRowCount('BEGIN'), null);
  });
});

describe('fuzz', () => {
  test('random bytes: only PgProtocolError, never a hang (client side)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), fc.array(fc.nat(64), { maxLength: 8 }), fc.boolean(), (bytes, cuts, startup) => {
        onlyProtocolErrors(() => feed(bytes, cuts, startup));
      }),
      { numRuns: 3000 },
    );
  });

  test('valid frame headers with random bodies: only PgProtocolError', () => {
    const types = [0x51, 0x50, 0x42, 0x44, 0x45, 0x43, 0x53, 0x48, 0x58, 0x64, 0x63, 0x66, 0x46, 0x70, 0x7a];
    fc.assert(
      fc.property(fc.constantFrom(...types), fc.uint8Array({ maxLength: 256 }), (type, body) => {
        const msg = Buffer.alloc(5 + body.length);
        msg[0] = type;
        msg.writeInt32BE(4 + body.length, 1);
        Buffer.from(body).copy(msg, 5);
        onlyProtocolErrors(() => feed(msg, [], false));
      }),
      { numRuns: 3000 },
    );
  });

  test('backend decoders on random bodies: only PgProtocolError', () => {
    const decoders: ((b: Buffer) => unknown)[] = [
      decodeRowDescription,
      decodeDataRow,
      (b) => decodeNoticeFields(b),
      decodeCommandComplete,
      decodeReadyForQuery,
      decodeParameterStatus,
      decodeBackendKeyData,
      decodeAuthentication,
      decodeSaslMechanisms,
      decodeCopyResponse,
      decodeNotification,
    ];
    fc.assert(
      fc.property(fc.nat(decoders.length - 1), fc.uint8Array({ maxLength: 256 }), (i, body) => {
        onlyProtocolErrors(() => decoders[i]!(Buffer.from(body)));
      }),
      { numRuns: 3000 },
    );
  });

  test('mutated valid messages: only PgProtocolError', () => {
    const valid = [encodeParse('s', 'SELECT 1', [23]), encodeBind('', 's', [Buffer.from('1')], [0], [1]), encodeDescribe('S', 's'), encodeExecute('', 0), encodeQuery('SELECT 1'), encodeClose('P', '')];
    fc.assert(
      fc.property(fc.constantFrom(...valid), fc.nat(64), fc.nat(255), (msg, at, byte) => {
        const m = Buffer.from(msg);
        if (m.length > 0) m[at % m.length] = byte;
        onlyProtocolErrors(() => feed(m, [], false));
      }),
      { numRuns: 3000 },
    );
  });
});

describe('upstream login primitives', () => {
  test('SCRAM-SHA-256: RFC 7677 test vector', async () => {
    const c = new ScramClient('pencil', 'rOprNGfwEbeRWgbNEkqO', 'user');
    assert.equal(c.clientFirst().toString(), 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO');
    const final = await c.clientFinal('r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096');
    assert.equal(final.toString(), 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=');
    c.verifyServerFinal('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=');
    assert.throws(() => c.verifyServerFinal('v=AAAA'), /server signature is wrong/);
    await assert.rejects(new ScramClient('x', 'abc').clientFinal('r=zzz,s=AA==,i=4096'), /does not extend the client nonce/);
  });

  test('md5 password response: md5(md5(password + user) + salt)', () => {
    // PostgreSQL stores md5(password + user): for alice/secret that is md5('secretalice').
    const stored = createHash('md5').update('secretalice').digest('hex');
    const salt = Buffer.from([1, 2, 3, 4]);
    const want = 'md5' + createHash('md5').update(Buffer.concat([Buffer.from(stored), salt])).digest('hex');
    assert.equal(md5PasswordResponse('alice', 'secret', salt), want);
    assert.notEqual(md5PasswordResponse('alice', 'secret', Buffer.from([1, 2, 3, 5])), want);
  });

  test('startup options are split like PostgreSQL does', () => {
    assert.deepEqual(splitOptions('-c a=b   -c portcullis.reason=two\\ words --x-y=1'), ['-c', 'a=b', '-c', 'portcullis.reason=two words', '--x-y=1']);
  });
});

describe('COPY rows', () => {
  const text: CopyOptions = { format: 'text', delimiter: '\t', null: '\\N', quote: '"', escape: '"', header: false };
  const csv: CopyOptions = { format: 'csv', delimiter: ',', null: '', quote: '"', escape: '"', header: true };

  test('text format: escapes and NULL round-trip', () => {
    const line = 'a\\tb\t\\N\tx\\\\y\\nz';
    assert.deepEqual(splitTextRow(line, text), ['a\tb', null, 'x\\y\nz']);
    assert.equal(joinTextRow(['a\tb', null, 'x\\y\nz'], text), line + '\n');
  });

  test('csv format: quotes, embedded delimiters and newlines, NULL vs empty', () => {
    assert.deepEqual(splitCsvRow('1,"a,b","say ""hi""",,""', csv), ['1', 'a,b', 'say "hi"', null, '']);
    assert.equal(joinCsvRow(['1', 'a,b', 'say "hi"', null, ''], csv), '1,"a,b","say ""hi""",,""\n');
  });

  test('the streaming masker splits rows across chunks and keeps the header', () => {
    const m = new CopyOutMasker(csv, (row) => row.map((c) => (c === null ? null : Buffer.from(c.toString().toUpperCase()))));
    const out = [...m.push(Buffer.from('id,name\n1,"multi\nli')), ...m.push(Buffer.from('ne"\n2,b\n')), ...m.end()].map((b) => b.toString());
    assert.deepEqual(out, ['id,name\n', '1,"MULTI\nLINE"\n', '2,B\n']);
    assert.equal(m.rows, 2);
  });

  test('binary format rows are masked value by value', () => {
    const bin: CopyOptions = { ...text, format: 'binary' };
    const header = Buffer.concat([Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.alloc(8)]);
    const row = Buffer.from([0, 2, 0, 0, 0, 1, 0x61, 0xff, 0xff, 0xff, 0xff]);
    const trailer = Buffer.from([0xff, 0xff]);
    const m = new CopyOutMasker(bin, (r) => r.map((c) => (c === null ? null : Buffer.from('ZZ'))));
    const all = Buffer.concat([header, row, trailer]);
    const out = Buffer.concat([...m.push(all.subarray(0, 20)), ...m.push(all.subarray(20))]);
    assert.deepEqual(out, Buffer.concat([header, Buffer.from([0, 2, 0, 0, 0, 2, 0x5a, 0x5a, 0xff, 0xff, 0xff, 0xff]), trailer]));
  });
});

describe('session masks', () => {
  const fields: FieldDescription[] = [
    { name: 'id', tableOid: 1, attnum: 1, typeOid: 23, typlen: 4, typmod: -1, format: 0 },
    { name: 'ssn', tableOid: 1, attnum: 2, typeOid: 20, typlen: 8, typmod: -1, format: 1 },
    { name: 'total', tableOid: 1, attnum: 3, typeOid: 20, typlen: 8, typmod: -1, format: 1 },
  ];
  const cols = [
    { table: 'public.people', column: 'id', typeOid: 23, format: 'text' as const },
    { table: 'public.people', column: 'ssn', typeOid: 20, format: 'binary' as const },
    { table: 'public.people', column: 'total', typeOid: 20, format: 'binary' as const },
  ];
  const int8 = (v: bigint): Buffer => {
    const b = Buffer.alloc(8);
    b.writeBigInt64BE(v);
    return b;
  };

  test('a column rule on a type that cannot hold the mask: advertised as text, value sent as text', () => {
    const m = new SessionMasks(undefined, 'text');
    m.add([{ column: 'public.people.ssn', strategy: 'redact', rule: 't:ssn' }, { detector: 'card', strategy: 'last4', rule: 't:card' }]);
    const rm = m.rowMasker(cols);
    assert.deepEqual([...rm.advertisedTypes], [23, 25, 20]);
    const rd = rewriteRowDescription(fields, rm)!;
    const back = decodeRowDescription(rd.subarray(5));
    assert.deepEqual(back.map((f) => [f.typeOid, f.typlen, f.format]), [[23, 4, 0], [25, -1, 1], [20, 8, 1]]);
    const out = rm([Buffer.from('7'), int8(123456789n), int8(4111111111111111n)]);
    assert.equal(out[0]!.toString(), '7');
    assert.ok(!out[1]!.toString('utf8').includes('123456789'));
    assert.equal(out[2], null, 'a card in an int8 (binary) becomes NULL, the column stays int8');
    const plain = rm([Buffer.from('8'), null, int8(1000n)]);
    assert.equal(plain[2]!.readBigInt64BE(0), 1000n);
  });

  test("'preserve': the column keeps its type and a value it cannot hold is NULL", () => {
    const m = new SessionMasks(undefined, 'preserve');
    m.add([{ column: 'public.people.ssn', strategy: 'redact', rule: 't:ssn' }]);
    const rm = m.rowMasker(cols);
    assert.deepEqual([...rm.advertisedTypes], [23, 20, 20]);
    assert.equal(rewriteRowDescription(fields, rm), null);
    assert.equal(rm([Buffer.from('7'), int8(123456789n), int8(5n)])[1], null);
  });

  test('an expression column (no origin) is scanned by the default detectors when column rules exist', () => {
    const m = new SessionMasks(undefined, 'text');
    m.add([{ column: 'public.customers.email', strategy: 'partial', rule: 't:email' }]);
    const rm = m.rowMasker([{ column: 'lower', typeOid: 25, format: 'text' }]);
    const out = rm([Buffer.from('jane.doe@example.com')])[0]!.toString();
    assert.ok(!out.includes('jane.doe'), out);
  });
});
