// `portcullis kubeconfig`: the CLI (built, as users run it) prints a kubeconfig for a config's
// Kubernetes front; real kubectl uses it against a running bastion, with the token in the file and
// with the exec credential plugin (the same CLI, `--credential`, reading a token file).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { startKubeBastion, type KubeBastion } from './harness/kubebastion.js';

const CLI = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');
let kb: KubeBastion;
let config: string;

function cli(args: string[], env: Record<string, string> = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '', ...env }, timeout: 60_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

before(async () => {
  kb = await startKubeBastion();
  kb.api.put({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-1', namespace: 'default' }, spec: { containers: [{ name: 'web', image: 'nginx' }] } });
  config = join(kb.dir, 'portcullis.yaml');
  writeFileSync(
    config,
    [
      `data_dir: ${JSON.stringify(join(kb.dir, 'cli-data'))}`,
      `policies: ${JSON.stringify(join(kb.dir, 'policies'))}`,
      'listen:',
      `  kubernetes: 127.0.0.1:${kb.proxy.port}`,
      'tls:',
      `  cert: ${JSON.stringify('file:' + join(kb.dir, 'tls.crt'))}`,
      `  key: ${JSON.stringify('file:' + join(kb.dir, 'tls.key'))}`,
      'targets:',
      '  demo-cluster:',
      '    protocol: kubernetes',
      `    server: ${kb.api.url}`,
      '    token: env:NOT_NEEDED_HERE',
      '',
    ].join('\n'),
  );
});

after(async () => {
  await kb?.close();
});

describe('portcullis kubeconfig', () => {
  test('--token: server from listen.kubernetes, the bastion certificate as CA; kubectl works with it', async () => {
    const r = cli(['kubeconfig', '--config', config, '--identity', 'demo-agent', '--target', 'demo-cluster', '--token', kb.token]);
    assert.equal(r.code, 0, r.stderr);
    const doc = YAML.parse(r.stdout) as { clusters: { cluster: Record<string, string> }[]; users: { name: string; user: { token: string } }[] };
    assert.equal(doc.clusters[0]!.cluster['server'], `https://127.0.0.1:${kb.proxy.port}`, 'one kubernetes target: no /targets/ prefix');
    assert.equal(Buffer.from(doc.clusters[0]!.cluster['certificate-authority-data']!, 'base64').toString(), kb.cert);
    assert.equal(doc.users[0]!.name, 'demo-agent');
    const file = join(kb.dir, 'from-cli.kubeconfig');
    writeFileSync(file, r.stdout);
    const k = await kb.kubectl(['get', 'pods', '-o', 'name'], { kubeconfig: file });
    assert.equal(k.code, 0, k.stderr);
    assert.equal(k.stdout.trim(), 'pod/web-1');
  });

  test('--exec: kubectl runs the credential plugin, which reads the token file on every use', async () => {
    const tokenFile = join(kb.dir, 'agent.token');
    writeFileSync(tokenFile, kb.token + '\n', { mode: 0o600 });
    const out = join(kb.dir, 'exec.kubeconfig');
    const r = cli(['kubeconfig', '--config', config, '--identity', 'demo-agent', '--target', 'demo-cluster', '--exec', '--token-file', tokenFile, '-o', out]);
    assert.equal(r.code, 0, r.stderr);
    const k = await kb.kubectl(['get', 'pods', '-o', 'name'], { kubeconfig: out });
    assert.equal(k.code, 0, k.stderr);
    assert.equal(k.stdout.trim(), 'pod/web-1');
    writeFileSync(tokenFile, 'pcat_0000000000000000_' + 'B'.repeat(43) + '\n');
    const bad = await kb.kubectl(['get', 'pods'], { kubeconfig: out });
    assert.notEqual(bad.code, 0, 'a rotated (here: unknown) token is read again');
    const cred = cli(['kubeconfig', '--credential', '--token-env', 'SOME_TOKEN'], { SOME_TOKEN: 'pcat_xyz' });
    assert.equal(cred.code, 0, cred.stderr);
    assert.deepEqual(JSON.parse(cred.stdout), { apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: { token: 'pcat_xyz' } });
  });

  test('usage errors exit 2 with a precise message', () => {
    const cases: [string[], RegExp][] = [
      [['kubeconfig', '--config', config, '--target', 'demo-cluster', '--token', 't'], /--identity is required/],
      [['kubeconfig', '--config', config, '--identity', 'a', '--target', 'nope', '--token', 't'], /no kubernetes target "nope".*kubernetes targets: demo-cluster/],
      [['kubeconfig', '--config', config, '--identity', 'a', '--target', 'demo-cluster'], /give --token TOKEN .* or --exec/],
      [['kubeconfig', '--config', config, '--identity', 'a', '--target', 'demo-cluster', '--token', 't', '--exec'], /either --token or --exec/],
      [['kubeconfig', '--credential', '--token-env', 'UNSET_VAR_X'], /no token: set UNSET_VAR_X/],
    ];
    for (const [args, re] of cases) {
      const r = cli(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
    }
  });
});
