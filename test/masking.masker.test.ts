// The Masker as the one path out: text, values, log objects, Kubernetes objects, the mask-test
// report; and that none of the output paths lets a raw value through.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { Masker, describeDetectors, runMaskTest } from '../src/masking/index.js';
import type { MaskSpec } from '../src/policy/types.js';
import { PortcullisError } from '../src/policy/types.js';

const KEY = 'unit-test-masking-key-0123456789';
const REFERENCE: MaskSpec[] = [
  { column: 'public.customers.email', strategy: 'partial', rule: 'postgres.yaml:mask-customers' },
  { column: 'public.customers.card_number', strategy: 'last4', rule: 'postgres.yaml:mask-customers' },
  { column: 'public.customers.ssn', strategy: 'redact', rule: 'postgres.yaml:mask-customers' },
  { detector: 'card', strategy: 'last4', rule: 'postgres.yaml:mask-cards-everywhere' },
  { resource: 'secrets', field: 'data', strategy: 'redact', rule: 'kubernetes.yaml:reads-in-default' },
  { resource: 'secrets', field: 'stringData', strategy: 'redact', rule: 'kubernetes.yaml:reads-in-default' },
];

const SECRETS = {
  card: '4111 1111 1111 1111',
  email: 'jane.roe@example.com',
  ssn: '123-45-6789',
  token: 'ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5',
  password: 'hunter2-very-secret',
  jwt: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNpZw',
  aws: 'AKIAIOSFODNN7EXAMPLE',
};

function assertClean(out: string, where: string): void {
  for (const [k, v] of Object.entries(SECRETS)) assert.ok(!out.includes(v), `${where} leaks ${k}: ${out}`);
  assert.ok(!out.includes('4111111111111111'), `${where} leaks the compact card`);
}

describe('Masker', () => {
  const m = new Masker({ masks: REFERENCE, hmacKey: KEY });

  test('maskText: policy detectors with their strategy, defaults with redact', () => {
    assert.equal(
      m.maskText(`card ${SECRETS.card} mail ${SECRETS.email} token ${SECRETS.token}`),
      'card **** **** **** 1111 mail [REDACTED:email] token [REDACTED:github_token]',
    );
    const bare = new Masker({ masks: REFERENCE, hmacKey: KEY, defaultDetectors: false });
    assert.equal(bare.maskText(`mail ${SECRETS.email} card ${SECRETS.card}`), `mail ${SECRETS.email} card **** **** **** 1111`);
  });

  test('findings name the detector, strategy and rule', () => {
    const f = m.findings(`x ${SECRETS.card} ${SECRETS.email}`);
    assert.deepEqual(
      f.map((x) => [x.detector, x.strategy, x.rule]),
      [
        ['card', 'last4', 'postgres.yaml:mask-cards-everywhere'],
        ['email', 'redact', 'default:email'],
      ],
    );
  });

  test('maskValue: column rule (type-aware when a type is given), else detectors', () => {
    assert.equal(m.maskValue('ann@shop.io', { column: 'public.customers.email' }), 'a***@shop.io');
    assert.equal(m.maskValue('123-45-6789', { column: 'public.customers.ssn', typeOid: 25 }), '[REDACTED:ssn]');
    assert.equal(m.maskValue('123456789', { column: 'public.customers.ssn', typeOid: 23 }), null);
    assert.equal(m.maskValue(`note ${SECRETS.card}`, { column: 'public.orders.note' }), 'note **** **** **** 1111');
    assert.equal(m.maskValue(null), null);
  });

  test('construction validates masks and names the rule', () => {
    const bad = (masks: MaskSpec[], code: string, opts: { hmacKey?: string } = {}): void =>
      assert.throws(() => new Masker({ masks, ...opts }), (e: unknown) => e instanceof PortcullisError && e.code === code && e.message.includes('p.yaml:x'));
    bad([{ detector: 'creditcard', strategy: 'redact', rule: 'p.yaml:x' }], 'mask_unknown_detector');
    bad([{ detector: 'card', strategy: 'hash', rule: 'p.yaml:x' }], 'mask_no_hmac_key');
    bad([{ strategy: 'redact', rule: 'p.yaml:x' }], 'mask_bad_option');
    assert.throws(() => new Masker({ masks: [], hmacKey: 'short' }), (e: unknown) => e instanceof PortcullisError && e.code === 'mask_hmac_key_short');
  });

  test('describeDetectors lists every detector with its note', () => {
    const d = describeDetectors();
    assert.equal(d.length, 15);
    assert.ok(d.every((x) => x.falsePositives.length > 0));
  });
});

describe('maskForLog', () => {
  const m = new Masker({ masks: REFERENCE, hmacKey: KEY });

  test('deep-masks strings, secret-named keys, card numbers, errors and buffers', () => {
    const cyclic: Record<string, unknown> = { name: 'loop' };
    cyclic['self'] = cyclic;
    const input = {
      sql: `SELECT * FROM customers WHERE email = '${SECRETS.email}'`,
      identity: { subject: 'demo-agent', groups: ['agents'] },
      password: SECRETS.password,
      headers: { Authorization: `Bearer ${SECRETS.jwt}`, 'X-Api-Key': 'k-123' },
      list: [SECRETS.token, 4111111111111111, true, null],
      err: Object.assign(new Error(`bad card ${SECRETS.card}`), { code: 'E1' }),
      raw: Buffer.from(`ssn ${SECRETS.ssn}`),
      at: new Date(0),
      cyclic,
    };
    const out = m.maskForLog(input) as Record<string, unknown>;
    assertClean(JSON.stringify(out), 'maskForLog');
    assert.ok(!JSON.stringify(out).includes('k-123'));
    assert.equal(out['password'], '[REDACTED:secret_assignment]');
    assert.deepEqual(out['identity'], { subject: 'demo-agent', groups: ['agents'] });
    assert.deepEqual((out['list'] as unknown[]).slice(1), ['************1111', true, null]);
    assert.deepEqual(out['err'], { name: 'Error', message: 'bad card **** **** **** 1111', code: 'E1' });
    assert.equal(out['at'], '1970-01-01T00:00:00.000Z');
    assert.equal((out['cyclic'] as Record<string, unknown>)['self'], '[CIRCULAR]');
    assert.equal(input.password, SECRETS.password, 'the input is not modified');
  });

  test('bounded depth', () => {
    let deep: unknown = SECRETS.password;
    for (let i = 0; i < 100; i++) deep = { next: deep };
    const out = JSON.stringify(m.maskForLog(deep));
    assert.ok(out.includes('[TRUNCATED]'));
    assert.ok(!out.includes(SECRETS.password));
  });
});

describe('one path out: every consumer gets masked data only', () => {
  test('audit summary, recording, live view fan-out and log lines of one SSH/SQL session', () => {
    const m = new Masker({ masks: REFERENCE, hmacKey: KEY });
    const terminal = [
      `$ cat .env\r\nDB_PASSWORD=${SECRETS.password}\r\nGITHUB_TOKEN=${SECRETS.token}\r\n`,
      `$ psql -c "select * from customers"\r\n ${SECRETS.email} | \x1b[1m${SECRETS.card}\x1b[0m | ${SECRETS.ssn}\r\n`,
      `$ aws configure get aws_access_key_id\r\n${SECRETS.aws}\r\n$ curl -H "Authorization: Bearer ${SECRETS.jwt}"\r\n`,
    ].join('');
    // the recorder and the live view take the same masked stream, chunked as the PTY delivers it
    const recording: Buffer[] = [];
    const liveViewers: string[][] = [[], []];
    const s = m.streamMasker({
      onOutput: (chunk) => {
        recording.push(Buffer.from(chunk));
        for (const v of liveViewers) v.push(chunk.toString('utf8'));
      },
    });
    const bytes = Buffer.from(terminal);
    for (let i = 0; i < bytes.length; i += 7) s.write(bytes.subarray(i, i + 7));
    s.end();
    assertClean(Buffer.concat(recording).toString('utf8'), 'recording');
    for (const v of liveViewers) assertClean(v.join(''), 'live view');
    // the audit event and log line for the same session
    const audit = m.maskForLog({ request: { sql: `UPDATE customers SET email='${SECRETS.email}' WHERE ssn='${SECRETS.ssn}'`, command: `export PASSWORD=${SECRETS.password}` } });
    assertClean(JSON.stringify(audit), 'audit');
    const log = m.maskText(`session 7 user typed: curl -u admin:${SECRETS.password}@h https://x:${SECRETS.password}@example.com`);
    assertClean(log, 'log line');
    // and rows sent to the agent
    const row = m.rowMasker(['email', 'card_number', 'ssn', 'notes'].map((column) => ({ table: 'public.customers', column, typeOid: 25, format: 'text' as const })))(
      [SECRETS.email, SECRETS.card, SECRETS.ssn, `call me, card ${SECRETS.card}`].map((x) => Buffer.from(x)),
    );
    assertClean(row.map((c) => c?.toString() ?? '').join('|'), 'rows');
  });
});

describe('Kubernetes objects', () => {
  const m = new Masker({ masks: REFERENCE, hmacKey: KEY });
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  const secret = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: 'db',
      namespace: 'default',
      annotations: {
        'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify({ kind: 'Secret', metadata: { name: 'db' }, data: { password: b64(SECRETS.password) } }),
      },
    },
    data: { password: b64(SECRETS.password), user: b64('admin') },
    stringData: { token: SECRETS.token },
  };

  test('a Secret: data values stay valid base64 of a marker, stringData masked, annotation masked', () => {
    assert.ok(m.masksResource('secrets'));
    assert.ok(!m.masksResource('pods'));
    const out = m.maskKubeObject('secrets', secret) as typeof secret;
    assert.equal(Buffer.from(out.data.password, 'base64').toString(), '[REDACTED:data]');
    assert.equal(Buffer.from(out.data.user, 'base64').toString(), '[REDACTED:data]');
    assert.equal(out.stringData.token, '[REDACTED:stringData]');
    const applied = JSON.parse(out.metadata.annotations['kubectl.kubernetes.io/last-applied-configuration']) as { data: { password: string } };
    assert.equal(Buffer.from(applied.data.password, 'base64').toString(), '[REDACTED:data]');
    assert.equal(secret.data.password, b64(SECRETS.password), 'the input is not modified');
    const text = JSON.stringify(out);
    assert.ok(!text.includes(b64(SECRETS.password)) && !text.includes(SECRETS.token));
  });

  test('lists, watch events and tables', () => {
    const list = { kind: 'SecretList', metadata: { resourceVersion: '1' }, items: [{ metadata: { name: 'a' }, data: { k: b64('v1') } }] };
    const l = m.maskKubeObject('secrets', list) as typeof list;
    assert.equal(Buffer.from(l.items[0]!.data.k, 'base64').toString(), '[REDACTED:data]');
    const ev = m.maskKubeObject('secrets', { type: 'ADDED', object: secret }) as { object: typeof secret };
    assert.equal(Buffer.from(ev.object.data.password, 'base64').toString(), '[REDACTED:data]');
    const table = { kind: 'Table', rows: [{ cells: ['db', 'Opaque', 2], object: { kind: 'PartialObjectMetadata', metadata: secret.metadata } }] };
    assert.ok(!JSON.stringify(m.maskKubeObject('secrets', table)).includes(b64(SECRETS.password)));
    assert.equal(m.maskKubeObject('pods', secret), secret, 'no masks for pods: unchanged');
  });
});

describe('portcullis mask test', () => {
  test('prints the masked text and where each detector fired', () => {
    const out = new PassThrough();
    let printed = '';
    out.on('data', (d: Buffer) => (printed += d.toString()));
    const input = `first line\ncard 4111 1111 1111 1111 and mail ann@example.com\n  DB_PASSWORD=hunter2\n`;
    const r = runMaskTest(input, REFERENCE, out);
    assert.deepEqual(
      r.findings.map((f) => [f.line, f.col, f.detector, f.strategy]),
      [
        [2, 6, 'card', 'last4'],
        [2, 35, 'email', 'redact'],
        [3, 15, 'secret_assignment', 'redact'],
      ],
    );
    assert.ok(printed.startsWith('first line\ncard **** **** **** 1111 and mail [REDACTED:email]\n  DB_PASSWORD=[REDACTED:secret_assignment]\n'));
    assert.match(printed, /--- 3 findings\n2:6 +card +last4 +postgres\.yaml:mask-cards-everywhere\n/);
    assert.match(printed, /column masks \(query results only/);
    assert.match(printed, /public\.customers\.email {2}partial/);
  });

  test('hash masks without a configured key use an ephemeral key and say so', () => {
    const out = new PassThrough();
    let printed = '';
    out.on('data', (d: Buffer) => (printed += d.toString()));
    runMaskTest('ssn 123-45-6789', [{ detector: 'ssn', strategy: 'hash', rule: 'p:x' }], out);
    assert.match(printed, /^ssn [0-9a-f]{16}\n/);
    assert.match(printed, /ephemeral key/);
  });
});
