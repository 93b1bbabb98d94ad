// Detector corpus: true positives and near misses for every detector id policy rules can name.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DIGIT_SEED_ANYWHERE, digitWindows } from '../src/masking/detectors.js';
import {
  ALL_DETECTORS,
  DETECTORS,
  DETECTOR_IDS,
  RuleSet,
  ibanValid,
  isCardNumber,
  jwtHeaderValid,
  luhnValid,
  ssnValid,
  type DetectorId,
} from '../src/masking/index.js';

/** The substrings a detector finds in a text (alone, complete text). */
function found(id: DetectorId, text: string): string[] {
  return new RuleSet([{ detector: id, strategy: 'redact' }], undefined).find(text).map((f) => text.slice(f.start, f.end));
}

/** Appends the Luhn check digit to a digit string. */
function withLuhn(prefix: string): string {
  for (let d = 0; d < 10; d++) if (luhnValid(prefix + d)) return prefix + d;
  throw new Error('unreachable');
}

function b64url(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64url');
}

describe('digit windows (where the digit-shaped detectors look)', () => {
  test('seeding only at the start of a block of digits finds the same windows as seeding anywhere', () => {
    const ch = fc.constantFrom('0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ' ', '.', '(', ')', '/', '-', 'x', 'A', '\n', 'é');
    const text = fc.array(ch, { maxLength: 300 }).map((a) => a.join(''));
    fc.assert(
      fc.property(text, (t) => assert.deepEqual(digitWindows(t), digitWindows(t, DIGIT_SEED_ANYWHERE))),
      { numRuns: 5000 },
    );
    for (const t of ['4111 1111 1111 1111', '12 34 56 78 90 12', '12-34-567-890-123', '123456789', '12345678', 'x123--45---6789012', '(555) 123-4567', '']) {
      assert.deepEqual(digitWindows(t), digitWindows(t, DIGIT_SEED_ANYWHERE), t);
    }
    assert.deepEqual(digitWindows('ab 4111 1111 1111 1111 cd'), [0, 25]);
  });
});

describe('detector registry', () => {
  test('every id has a detector with a false-positive note and a default', () => {
    assert.deepEqual(Object.keys(DETECTORS).sort(), [...DETECTOR_IDS].sort());
    for (const d of ALL_DETECTORS) {
      assert.equal(DETECTORS[d.id], d);
      assert.ok(d.falsePositives.length > 20, `${d.id} falsePositives`);
      assert.ok(d.title.length > 3, `${d.id} title`);
      assert.equal(typeof d.defaultOn, 'boolean');
    }
    assert.equal(DETECTORS.ipv4.defaultOn, false);
    assert.equal(DETECTORS.ipv6.defaultOn, false);
    assert.equal(DETECTORS.card.defaultOn, true);
    assert.equal(DETECTORS.secret_assignment.defaultOn, true);
  });
});

describe('card', () => {
  const valid = [
    '4111111111111111', // Visa
    '4222222222222', // Visa 13
    '5555555555554444', // Mastercard
    '2223003122003222', // Mastercard 2-series
    '378282246310005', // Amex
    '6011111111111117', // Discover
    '3530111333300000', // JCB
    '30569309025904', // Diners
    '6200000000000005', // UnionPay
  ];
  test('test numbers are Luhn-valid and in issuer ranges', () => {
    for (const c of valid) assert.ok(isCardNumber(c), c);
  });
  test('finds cards plain, spaced, dashed and in context', () => {
    for (const c of valid) assert.deepEqual(found('card', `pay ${c} now`), [c]);
    assert.deepEqual(found('card', 'card 4111 1111 1111 1111.'), ['4111 1111 1111 1111']);
    assert.deepEqual(found('card', 'card=4111-1111-1111-1111&x=1'), ['4111-1111-1111-1111']);
    assert.deepEqual(found('card', 'amex 3782 822463 10005'), ['3782 822463 10005']);
    assert.deepEqual(found('card', '"4242424242424242"'), ['4242424242424242']);
    assert.deepEqual(found('card', 'ref 12 4111 1111 1111 1111 end'), ['4111 1111 1111 1111']);
    assert.deepEqual(found('card', 'a 4111111111111111 b 5555555555554444'), ['4111111111111111', '5555555555554444']);
  });
  test('near misses stay visible', () => {
    assert.deepEqual(found('card', 'visa-like 4111111111111112'), [], 'fails Luhn');
    const orderId = withLuhn('900000001234567'); // Luhn-valid, no issuer starts with 9
    assert.ok(luhnValid(orderId));
    assert.deepEqual(found('card', `order ${orderId}`), [], 'order id passing Luhn but no IIN');
    assert.deepEqual(found('card', `order ${withLuhn('123456781234567')}`), [], 'prefix 1 is not an issuer here');
    assert.deepEqual(found('card', 'id 41111111111111110000'), [], '20+ digits');
    assert.deepEqual(found('card', '2024-05-01 12:34:56.789 took 1234 ms'), []);
    assert.deepEqual(found('card', 'amex length wrong 37828224631000'), [], 'Amex must be 15 digits');
    assert.deepEqual(found('card', '4111  1111  1111  1111'), [], 'double spaces split the run');
  });
});

describe('iban', () => {
  const valid = ['DE89370400440532013000', 'GB82WEST12345698765432', 'NL91ABNA0417164300', 'FR1420041010050500013M02606', 'BE68539007547034', 'NO9386011117947'];
  test('validation: country length and mod-97', () => {
    for (const i of valid) assert.ok(ibanValid(i), i);
    assert.ok(!ibanValid('DE89370400440532013001'));
    assert.ok(!ibanValid('DE8937040044053201300'));
    assert.ok(!ibanValid('XX89370400440532013000'));
  });
  test('finds compact and grouped IBANs', () => {
    for (const i of valid) assert.deepEqual(found('iban', `acct ${i}.`), [i]);
    assert.deepEqual(found('iban', 'IBAN: DE89 3704 0044 0532 0130 00 (main)'), ['DE89 3704 0044 0532 0130 00']);
    assert.deepEqual(found('iban', 'GB82 WEST 1234 5698 7654 32'), ['GB82 WEST 1234 5698 7654 32']);
  });
  test('near misses: wrong check digit, unknown country, wrong length', () => {
    assert.deepEqual(found('iban', 'DE89 3704 0044 0532 0130 01'), []);
    assert.deepEqual(found('iban', 'QQ89 3704 0044 0532 0130 00'), []);
    assert.deepEqual(found('iban', 'DE89 3704 0044 0532 0130'), []);
  });
});

describe('ssn', () => {
  test('area, group and serial rules', () => {
    assert.ok(ssnValid('123', '45', '6789'));
    assert.ok(!ssnValid('000', '12', '3456'));
    assert.ok(!ssnValid('666', '12', '3456'));
    assert.ok(!ssnValid('912', '12', '3456'));
    assert.ok(!ssnValid('123', '00', '3456'));
    assert.ok(!ssnValid('123', '45', '0000'));
  });
  test('finds dashed SSNs, skips invalid and other layouts', () => {
    assert.deepEqual(found('ssn', 'ssn 123-45-6789, x'), ['123-45-6789']);
    for (const near of ['000-12-3456', '666-12-3456', '901-12-3456', '123-00-4567', '123-45-0000', '123456789', '1234-56-7890', '12-345-6789']) {
      assert.deepEqual(found('ssn', `ssn ${near} x`), [], near);
    }
  });
});

describe('email', () => {
  test('finds addresses', () => {
    assert.deepEqual(found('email', 'to john.doe@example.com, cc j+tag@mail.example.co.uk.'), ['john.doe@example.com', 'j+tag@mail.example.co.uk']);
    assert.deepEqual(found('email', "WHERE email = 'ann@shop.io'"), ['ann@shop.io']);
    assert.deepEqual(found('email', 'user=bob@example.org&x'), ['bob@example.org']);
  });
  test('near misses', () => {
    for (const near of ['user@localhost', 'a@b', '@example.com', 'john..doe@example.com', 'x@example.c0m', 'me@-bad.com', 'npm i @scope/pkg', 'https://u:pw@example.com/']) {
      assert.deepEqual(found('email', near), [], near);
    }
  });
});

describe('phone', () => {
  test('E.164 and North American layouts', () => {
    for (const p of ['+1 (555) 123-4567', '+44 20 7946 0958', '+4915112345678', '+1-555-123-4567', '(555) 123-4567', '555-123-4567', '555.123.4567', '1-800-555-1234']) {
      assert.deepEqual(found('phone', `call ${p} now`), [p], p);
    }
  });
  test('near misses', () => {
    for (const near of ['123-456-7890', '+0 123 456 789', '+1 23', '555-1234', '2024-05-01', '555-123.4567', 'v1.555.123.4567']) {
      assert.deepEqual(found('phone', `x ${near} y`), [], near);
    }
  });
});

describe('ipv4 and ipv6 (off by default)', () => {
  test('validated octets and addresses', () => {
    assert.deepEqual(found('ipv4', 'from 192.168.1.10 and 10.0.0.1.'), ['192.168.1.10', '10.0.0.1']);
    assert.deepEqual(found('ipv4', '256.1.1.1 1.2.3 1.2.3.4.5'), []);
    assert.deepEqual(found('ipv6', 'addr 2001:db8::1 and fe80::1ff:fe23:4567:890a'), ['2001:db8::1', 'fe80::1ff:fe23:4567:890a']);
    assert.deepEqual(found('ipv6', 'at 12:30:45 std::string 00:1a:2b:3c:4d:5e'), []);
  });
});

describe('jwt', () => {
  const jwt =
    'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c';
  test('header must decode to JSON with alg', () => {
    assert.ok(jwtHeaderValid('eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9'));
    assert.ok(!jwtHeaderValid(b64url('{"typ":"JWT"}')));
    assert.ok(!jwtHeaderValid('eyJub3Rqc29u'));
  });
  test('finds JWS, unsecured and JWE compact tokens', () => {
    assert.deepEqual(found('jwt', `Bearer ${jwt}`), [jwt]);
    const none = `${b64url('{"alg":"none"}')}.${b64url('{"sub":"x"}')}.`;
    assert.deepEqual(found('jwt', `t=${none} `), [none]);
    const spaced = `${b64url('{ "alg": "RS256" }')}.${b64url('{}')}.sig`;
    assert.deepEqual(found('jwt', spaced), [spaced]);
  });
  test('near misses: JWT-looking text whose header is not JSON with alg', () => {
    assert.deepEqual(found('jwt', 'eyJub3Rqc29u.abc.def'), []);
    assert.deepEqual(found('jwt', `${b64url('{"typ":"JWT"}')}.${b64url('{}')}.sig`), []);
    assert.deepEqual(found('jwt', 'x' + jwt), [], 'glued to a word');
  });
});

describe('pem_private_key', () => {
  const block = '-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx\nYWJjZGVm==\n-----END RSA PRIVATE KEY-----';
  test('whole block, also JSON-escaped and OpenSSH / encrypted labels', () => {
    assert.deepEqual(found('pem_private_key', `key:\n${block}\nnext`), [block]);
    const json = '-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBg\\nkqhkiG9w==\\n-----END PRIVATE KEY-----\\n';
    assert.deepEqual(found('pem_private_key', `{"private_key": "${json}"}`), [json.slice(0, -2)]);
    for (const label of ['OPENSSH PRIVATE KEY', 'ENCRYPTED PRIVATE KEY', 'EC PRIVATE KEY', 'PGP PRIVATE KEY BLOCK']) {
      const b = `-----BEGIN ${label}-----\nAAAA\n-----END ${label}-----`;
      assert.deepEqual(found('pem_private_key', b), [b], label);
    }
  });
  test('a BEGIN without END masks the body lines, not the prose after them', () => {
    const t = '-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nkqhkiG9w==\nThis line is prose, not base64.';
    assert.deepEqual(found('pem_private_key', t), ['-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nkqhkiG9w==\n']);
  });
  test('certificates and public keys are not private keys', () => {
    assert.deepEqual(found('pem_private_key', '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----'), []);
    assert.deepEqual(found('pem_private_key', '-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----'), []);
  });
});

describe('AWS credentials', () => {
  test('access key ids', () => {
    assert.deepEqual(found('aws_access_key', 'id AKIAIOSFODNN7EXAMPLE, ASIAY34FZKBOKMUTVV7A'), ['AKIAIOSFODNN7EXAMPLE', 'ASIAY34FZKBOKMUTVV7A']);
    assert.deepEqual(found('aws_access_key', 'AKIAIOSFODNN7EXAMPL XAKIAIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPLEX'), []);
  });
  const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
  test('secret keys in AWS context', () => {
    assert.deepEqual(found('aws_secret_key', `aws_secret_access_key = ${secret}`), [secret]);
    assert.deepEqual(found('aws_secret_key', `{"AccessKeyId": "ASIAY34FZKBOKMUTVV7A", "SecretAccessKey": "${secret}"}`), [secret]);
    assert.deepEqual(found('aws_secret_key', `AKIAIOSFODNN7EXAMPLE,${secret}`), [secret]);
  });
  test('near misses: no AWS context, not mixed case, wrong length', () => {
    assert.deepEqual(found('aws_secret_key', `checksum ${secret}`), []);
    assert.deepEqual(found('aws_secret_key', 'aws sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709'), []);
    assert.deepEqual(found('aws_secret_key', `aws ${secret}X`), []);
  });
});

describe('forge and chat tokens', () => {
  const ghp = 'ghp_' + 'aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5';
  const pat = 'github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456';
  test('GitHub', () => {
    assert.deepEqual(found('github_token', `token ${ghp} and ${pat}`), [ghp, pat]);
    for (const p of ['gho_', 'ghu_', 'ghs_', 'ghr_']) assert.equal(found('github_token', p + ghp.slice(4)).length, 1, p);
    assert.deepEqual(found('github_token', 'ghp_short xghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5'), []);
  });
  test('GitLab', () => {
    assert.deepEqual(found('gitlab_token', 'GITLAB_TOKEN glpat-AbCdEfGhIjKlMnOpQrSt and glrt-0123456789abcdefghij'), [
      'glpat-AbCdEfGhIjKlMnOpQrSt',
      'glrt-0123456789abcdefghij',
    ]);
    assert.deepEqual(found('gitlab_token', 'glpat-short glxyz-AbCdEfGhIjKlMnOpQrSt'), []);
  });
  test('Slack tokens and webhook paths', () => {
    assert.deepEqual(found('slack_token', 'xoxb-1234567890-0987654321-AbCdEfGhIjKl'), ['xoxb-1234567890-0987654321-AbCdEfGhIjKl']);
    assert.deepEqual(found('slack_token', 'post to https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXX'), ['services/T000/B000/XXXXXXXXXXXX']);
    assert.deepEqual(found('slack_token', 'xoxz-1234567890-abc xoxb-short'), []);
  });
});

describe('secret_assignment', () => {
  const cases: [string, string][] = [
    ['DB_PASSWORD=hunter2', 'hunter2'],
    ['export PASSWORD="hunter two"', 'hunter two'],
    ['password: hunter2', 'hunter2'],
    ['  client_secret: "s3cr3t"', 's3cr3t'],
    ['{"password":"p@ss","user":"x"}', 'p@ss'],
    ['{"api_key": "k-123", "n": 1}', 'k-123'],
    ['https://x/cb?code=1&access_token=abc.def&state=2', 'abc.def'],
    ['mysql --password hunter2 db', 'hunter2'],
    ["CREATE ROLE app LOGIN PASSWORD 'pw-1'", 'pw-1'],
    ['Authorization: Bearer abc.def.ghi', 'abc.def.ghi'],
    ['dbPassword=xyz', 'xyz'],
    ['apiKey: AKxyz', 'AKxyz'],
    ['postgres://admin:pa55w0rd@db.internal:5432/shop', 'pa55w0rd'],
    ['redis://:s3cret@cache:6379', 's3cret'],
    ['spring.datasource.password=topsecret', 'topsecret'],
    ['curl -u admin:s3cret https://api', 's3cret'],
    ['curl --user="bob:pw-9" x', 'pw-9'],
    ['curl -uadmin:pw7 https://x', 'pw7'],
  ];
  for (const [text, value] of cases) {
    test(`masks only the value in ${JSON.stringify(text)}`, () => {
      assert.deepEqual(found('secret_assignment', text), [value]);
    });
  }
  test('near misses', () => {
    for (const near of [
      'passed=3',
      'max_tokens=100',
      'PWD=/home/me',
      'the password is long',
      'Token::new(x)',
      'secrets: 3',
      'https://localhost:8080/x',
      '"password": null',
      'bypass=1',
      'author=jane',
      'ssh://git@github.com/org/repo',
      'git log --user-agent:x',
    ]) {
      assert.deepEqual(found('secret_assignment', near), [], near);
    }
  });
});
