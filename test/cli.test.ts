// The CLI as a user runs it: the compiled `portcullis` entry point in a child process.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const BIN = resolve('dist/src/cli/main.js');

function pc(args: string[], input?: string, env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { input, encoding: 'utf8', env: Object.fromEntries(Object.entries({ ...process.env, ...env }).filter(([, v]) => v !== undefined)) as NodeJS.ProcessEnv, timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

let tmp: string;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'pc-cli-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

describe('portcullis CLI', () => {
  test('--help lists the commands; every command has --help', () => {
    const r = pc(['--help']);
    assert.equal(r.code, 0);
    for (const c of ['serve', 'config check', 'policy eval', 'policy explain', 'policy test', 'audit verify', 'audit tail', 'audit search']) assert.match(r.out, new RegExp(`\\n  ${c} `));
    for (const c of [['serve'], ['config', 'check'], ['policy', 'eval'], ['policy', 'explain'], ['policy', 'test'], ['audit', 'verify'], ['audit', 'search'], ['console'], ['approve']]) {
      const h = pc([...c, '--help']);
      assert.equal(h.code, 0, c.join(' '));
      assert.match(h.out, /^portcullis /);
    }
  });

  test('usage errors exit 2', () => {
    assert.equal(pc(['frobnicate']).code, 2);
    assert.equal(pc(['policy', 'eval', '--bogus']).code, 2);
    assert.equal(pc(['policy', 'eval']).code, 2, 'missing --policies');
    const noTty = pc(['console']);
    assert.equal(noTty.code, 2);
    assert.match(noTty.err, /the console needs a terminal/);
  });

  test('policy eval: one line out per line in, same order; bad lines get an error object', () => {
    const lines = [
      '{"protocol":"postgres","identity":{"subject":"demo-agent","groups":["agents"]},"target":"shop","sql":"DELETE FROM customers"}',
      'not json',
      '{"protocol":"ssh","identity":{"subject":"demo-agent","groups":["agents"]},"target":"sandbox","command":"ls -la; rm -rf /srv"}',
      '{"protocol":"kubernetes","identity":{"subject":"demo-agent","groups":["agents"]},"target":"demo-cluster","http":{"method":"GET","path":"/api/v1/namespaces/default/pods"}}',
      '{"protocol":"ftp","identity":{"subject":"x","groups":[]},"target":"t"}',
      '{"protocol":"postgres","identity":{"subject":"demo-agent","groups":["agents"]},"target":"shop","sql":"SELECT 1","extra":true}',
      '{"protocol":"postgres","identity":{"subject":"demo-agent","groups":["agents"]},"target":"shop","sql":"SELECT * FROM customers"}',
    ];
    const r = pc(['policy', 'eval', '--policies', 'examples/policies', '--request', '-'], lines.join('\n') + '\n');
    assert.equal(r.code, 0, r.err);
    const out = r.out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(out.length, lines.length);
    assert.deepEqual(out[0], {
      effect: 'deny',
      rule: 'examples/policies/postgres.yaml:no-unbounded-writes',
      reason: 'UPDATE/DELETE without WHERE on public.customers',
      remedy: 'add a WHERE clause',
      masks: [],
    });
    assert.equal((out[1].error as { code: string }).code, 'bad_json');
    assert.match((out[1].error as { message: string }).message, /^line 2: /);
    assert.equal(out[2].effect, 'deny');
    assert.equal(out[2].rule, 'examples/policies/ssh.yaml:no-recursive-or-forced-rm');
    assert.equal(out[3].effect, 'allow');
    assert.equal((out[4].error as { code: string }).code, 'bad_request');
    assert.match((out[4].error as { message: string }).message, /protocol/);
    assert.match((out[5].error as { message: string }).message, /"extra"/);
    assert.equal(out[6].effect, 'allow');
    assert.equal((out[6].masks as unknown[]).length, 4);
  });

  test('policy eval reads a request file', () => {
    const f = join(tmp, 'req.jsonl');
    writeFileSync(f, '{"protocol":"ssh","identity":{"subject":"demo-agent","groups":["agents"]},"target":"sandbox","command":"sudo ls"}\n');
    const r = pc(['policy', 'eval', '--policies', 'examples/policies', '--request', f]);
    assert.equal(JSON.parse(r.out).effect, 'review');
  });

  test('policy eval with a broken policy exits 2 naming file:line:field', () => {
    const d = join(tmp, 'broken');
    cpSync('examples/policies', d, { recursive: true });
    const text = readFileSync(join(d, 'ssh.yaml'), 'utf8').replace('effect: review', 'effect: reveiw');
    writeFileSync(join(d, 'ssh.yaml'), text);
    const line = text.split('\n').findIndex((l) => l.includes('reveiw')) + 1;
    const r = pc(['policy', 'eval', '--policies', d], '');
    assert.equal(r.code, 2);
    assert.match(r.err, new RegExp(`ssh\\.yaml:${line}:\\d+: rules\\[\\d+\\]\\.effect: expected one of`));
  });

  test('policy test passes on the reference policy and fails with a diff on a mismatch', () => {
    const ok = pc(['policy', 'test', '--policies', 'examples/policies']);
    assert.equal(ok.code, 0, ok.out + ok.err);
    assert.match(ok.out, /^\d+ passed, 0 failed$/m);
    const t = join(tmp, 'wrong.yaml');
    writeFileSync(t, 'tests:\n  - name: wrong on purpose\n    sql: SELECT 1\n    target: shop\n    identity: { subject: a, groups: [agents] }\n    expect: { effect: deny, rule: nope }\n');
    const bad = pc(['policy', 'test', '--policies', 'examples/policies', t]);
    assert.equal(bad.code, 1);
    assert.match(bad.out, /FAIL .*wrong\.yaml:2 wrong on purpose/);
    assert.match(bad.out, /effect: expected deny, got allow/);
    assert.match(bad.out, /rule: expected nope, got examples\/policies\/postgres\.yaml:reads-without-relations/);
    assert.match(bad.out, /0 passed, 1 failed/);
  });

  test('policy explain prints the trace', () => {
    const f = join(tmp, 'explain.json');
    writeFileSync(f, '{"protocol":"ssh","identity":{"subject":"demo-agent","groups":["agents"]},"target":"sandbox","command":"ls; sudo reboot"}\n');
    const r = pc(['policy', 'explain', '--policies', 'examples/policies', '--request', f]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /action 3: exec reboot \[via sudo\]/);
    assert.match(r.out, /decision: deny by examples\/policies\/ssh\.yaml:no-power-control/);
  });

  test('config check: the example config is valid; errors name file:line:field and exit 1; secrets are never printed', () => {
    const ok = pc(['config', 'check', '--config', 'examples/portcullis.yaml'], undefined, { SHOP_DB_PASSWORD: 'hunter2-secret', KUBE_TOKEN: 'kt-secret' });
    assert.match(ok.err + ok.out, /web-1.*private_key: cannot read secret file/s, 'the example points at a key file that does not exist here');
    assert.equal(ok.code, 1);
    const key = join(tmp, 'key');
    writeFileSync(key, 'not-really-a-key\n');
    const cfgText = readFileSync('examples/portcullis.yaml', 'utf8').replace('file:/etc/portcullis/keys/web-1', `file:${key}`).replace('file:/etc/portcullis/kube-ca.pem', `file:${key}`).replace('policies: policies', `policies: ${resolve('examples/policies')}`);
    const cfg = join(tmp, 'portcullis.yaml');
    writeFileSync(cfg, cfgText);
    const good = pc(['config', 'check', '--config', cfg], undefined, { SHOP_DB_PASSWORD: 'hunter2-secret', KUBE_TOKEN: 'kt-secret' });
    assert.equal(good.code, 0, good.err);
    assert.match(good.out, /4 targets/);
    assert.match(good.out, /policies .*: ok \(\d+ rules in 3 files/);
    assert.doesNotMatch(good.out + good.err, /hunter2|kt-secret|not-really-a-key/);

    const missingEnv = pc(['config', 'check', '--config', cfg], undefined, { SHOP_DB_PASSWORD: '', KUBE_TOKEN: undefined });
    assert.equal(missingEnv.code, 1);
    assert.match(missingEnv.err, /portcullis\.yaml:\d+:\d+: targets\.demo-cluster\.token: environment variable KUBE_TOKEN is not set/);

    const typo = cfgText.replace('  idle_timeout: 30m', '  idle_timout: 30m').replace('sync: writes', 'sync: sometimes');
    writeFileSync(cfg, typo);
    const bad = pc(['config', 'check', '--config', cfg], undefined, { SHOP_DB_PASSWORD: 'x', KUBE_TOKEN: 'y' });
    assert.equal(bad.code, 1);
    const lineOf = (s: string) => typo.split('\n').findIndex((l) => l.includes(s)) + 1;
    assert.match(bad.err, new RegExp(`portcullis\\.yaml:${lineOf('idle_timout')}:3: session\\.idle_timout: unknown key "idle_timout"`));
    assert.match(bad.err, new RegExp(`portcullis\\.yaml:${lineOf('sometimes')}:\\d+: audit\\.sync: expected one of "always", "writes", "interval"`));
  });
});
