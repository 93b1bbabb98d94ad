// The Kubernetes proxy end to end under the reference policy (examples/policies): the real
// kubectl (1.32) → the bastion (real core, audit, approvals, API tokens) → the stand-in API
// server of test/harness/kubeapi.ts (there is no real kube-apiserver on these machines). Every
// Kubernetes rule of the reference policy is exercised as kubectl sees it, and Secret masking is
// checked in every output format.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { startKubeBastion, KUBECTL, type KubeBastion } from './harness/kubebastion.js';

let kb: KubeBastion;

const SECRET = 'hunter2-Sup3r';
const SECRET_B64 = Buffer.from(SECRET).toString('base64');
const API_KEY = 'AKIAIOSFODNN7EXAMPLE';
const CARD = '4111 1111 1111 1111';
const LEAKS = [SECRET, SECRET_B64, API_KEY, CARD, '4111111111111111', Buffer.from(API_KEY).toString('base64')];

function noLeak(text: string, what: string): void {
  for (const l of LEAKS) assert.ok(!text.includes(l), `${what} leaks ${l}:\n${text.slice(0, 2000)}`);
}

before(async () => {
  kb = await startKubeBastion();
  const api = kb.api;
  api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'prod' } });
  for (const name of ['web-1', 'web-2']) {
    api.put({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: 'default', labels: { app: 'web' } },
      spec: { containers: [{ name: 'web', image: 'nginx:1.27', env: [{ name: 'CARD', value: CARD }, { name: 'AWS_KEY', value: API_KEY }, { name: 'MODE', value: 'production' }] }] },
    });
  }
  api.put({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'coredns-1', namespace: 'kube-system' }, spec: { containers: [{ name: 'coredns', image: 'coredns' }] } });
  api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'db', namespace: 'default' }, data: { password: SECRET_B64, 'api-key': Buffer.from(API_KEY).toString('base64') } });
  api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'bootstrap', namespace: 'kube-system' }, data: { token: SECRET_B64 } });
  api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'app', namespace: 'default' }, data: { mode: 'production', aws: API_KEY } });
  api.appendLog('default', 'web-1', 'started');
  api.appendLog('default', 'web-1', `charged card ${CARD}`);
});

after(async () => {
  await kb?.close();
});

describe('kubectl through the bastion (reference policy)', () => {
  test('discovery and version are allowed', async () => {
    const v = await kb.kubectl(['version', '-o', 'json']);
    assert.equal(v.code, 0, v.stderr);
    assert.equal((JSON.parse(v.stdout) as { serverVersion: { gitVersion: string } }).serverVersion.gitVersion, 'v1.32.0');
    const r = await kb.kubectl(['api-resources', '--namespaced=true', '-o', 'name']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^secrets$/m);
    assert.match(r.stdout, /^deployments\.apps$/m);
  });

  test('get/list pods in default (table, wide, json, yaml, describe): allowed, env values masked by detector', async () => {
    const t = await kb.kubectl(['get', 'pods']);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /^NAME\s+READY\s+STATUS/m);
    assert.match(t.stdout, /^web-1\s+1\/1\s+Running/m);
    const w = await kb.kubectl(['get', 'pods', '-o', 'wide']);
    assert.equal(w.code, 0, w.stderr);
    assert.match(w.stdout, /standin-node/);
    for (const fmt of ['json', 'yaml']) {
      const r = await kb.kubectl(['get', 'pods', '-o', fmt]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /web-2/);
      assert.match(r.stdout, /production/, 'values the detectors do not flag stay');
      assert.match(r.stdout, /\[REDACTED:card\]/);
      noLeak(r.stdout, `get pods -o ${fmt}`);
    }
    const d = await kb.kubectl(['describe', 'pod', 'web-1']);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /CARD:\s+\[REDACTED:card\]/);
    noLeak(d.stdout, 'describe pod');
    // The upstream was asked for JSON and got the agent's identity as impersonation headers.
    const seen = kb.api.seen.filter((s) => s.url.startsWith('/api/v1/namespaces/default/pods'));
    assert.ok(seen.length > 0);
    for (const s of seen) {
      assert.equal(s.user, 'demo-agent');
      assert.deepEqual(s.impersonateGroups, ['agents']);
      assert.doesNotMatch(s.accept ?? '', /protobuf/);
    }
  });

  test('Secret values are masked in every output format', async () => {
    const outputs: [string, string[]][] = [
      ['table', ['get', 'secrets']],
      ['json', ['get', 'secret', 'db', '-o', 'json']],
      ['yaml', ['get', 'secret', 'db', '-o', 'yaml']],
      ['list json', ['get', 'secrets', '-o', 'json']],
      ['list yaml', ['get', 'secrets', '-o', 'yaml']],
      ['wide', ['get', 'secrets', '-o', 'wide']],
      ['jsonpath', ['get', 'secret', 'db', '-o', 'jsonpath={.data.password}']],
      ['go-template', ['get', 'secret', 'db', '-o', 'go-template={{index .data "api-key"}}']],
      ['sorted (Table with full objects)', ['get', 'secrets', '--sort-by=.metadata.name']],
      ['describe', ['describe', 'secret', 'db']],
      ['raw object', ['get', '--raw', '/api/v1/namespaces/default/secrets/db']],
      ['raw list', ['get', '--raw', '/api/v1/namespaces/default/secrets']],
      ['raw table', ['get', '--raw', '/api/v1/namespaces/default/secrets?includeObject=Object']],
    ];
    for (const [what, args] of outputs) {
      const r = await kb.kubectl(args);
      assert.equal(r.code, 0, `${what}: ${r.stderr}`);
      assert.match(r.stdout, /db|W1JFREFDVEVE|REDACTED|bytes/, what);
      noLeak(r.stdout + r.stderr, what);
    }
    const jp = await kb.kubectl(['get', 'secret', 'db', '-o', 'jsonpath={.data.password}']);
    assert.equal(Buffer.from(jp.stdout, 'base64').toString('utf8'), '[REDACTED:data]', 'the masked value is still valid base64');
    const table = await kb.kubectl(['get', 'secrets']);
    assert.match(table.stdout, /^db\s+Opaque\s+2\s+/m);
  });

  test('ConfigMap values are masked by detector', async () => {
    const r = await kb.kubectl(['get', 'configmap', 'app', '-o', 'yaml']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /mode: production/);
    assert.match(r.stdout, /aws: '\[REDACTED:aws_access_key\]'/);
    noLeak(r.stdout, 'configmap');
    const d = await kb.kubectl(['describe', 'configmap', 'app']);
    noLeak(d.stdout, 'describe configmap');
  });

  test('watch: events stream through, masked per event', async () => {
    const child = spawn(KUBECTL, ['get', 'secrets', '--watch', '-o', 'json', '--output-watch-events'], { env: { PATH: process.env.PATH ?? '', HOME: join(kb.dir, 'home'), KUBECONFIG: kb.kubeconfig } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const waitFor = async (re: RegExp) => {
      for (let i = 0; i < 200 && !re.test(out); i++) await new Promise((r) => setTimeout(r, 50));
      assert.match(out, re, err);
    };
    await waitFor(/"name":\s*"db"/);
    kb.api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'watched', namespace: 'default' }, stringData: { pw: SECRET } });
    await waitFor(/"name":\s*"watched"/);
    child.kill();
    assert.match(out, /"type":\s*"ADDED"/);
    noLeak(out, 'watch');
  });

  test('logs (and logs -f) are allowed and masked', async () => {
    const r = await kb.kubectl(['logs', 'web-1']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /started\ncharged card \[REDACTED:card\]/);
    const child = spawn(KUBECTL, ['logs', '-f', 'web-1'], { env: { PATH: process.env.PATH ?? '', HOME: join(kb.dir, 'home'), KUBECONFIG: kb.kubeconfig } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    for (let i = 0; i < 200 && !out.includes('charged'); i++) await new Promise((r) => setTimeout(r, 50));
    kb.api.appendLog('default', 'web-1', `later: key ${API_KEY} done`);
    for (let i = 0; i < 200 && !out.includes('done'); i++) await new Promise((r) => setTimeout(r, 50));
    child.kill();
    assert.match(out, /later: key \[REDACTED:aws_access_key\] done/);
    noLeak(out, 'logs -f');
  });

  test('cluster-wide reads are denied (no-cluster-wide-reads) and never reach the API server', async () => {
    const before = kb.api.seen.length;
    for (const args of [['get', 'secrets', '-A'], ['get', 'pods', '--all-namespaces']]) {
      const r = await kb.kubectl(args);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /Error from server \(Forbidden\): portcullis: list (secrets|pods) denied by policy rule .*kubernetes\.yaml:no-cluster-wide-reads: .*across all namespaces includes kube-system \(name a namespace \(-n default\)\)/);
    }
    assert.ok(!kb.api.seen.slice(before).some((s) => /^\/api\/v1\/(secrets|pods)/.test(s.url)), 'a denied request reached the API server');
  });

  test('anything in kube-system is denied (no-kube-system)', async () => {
    for (const args of [['-n', 'kube-system', 'get', 'pods'], ['-n', 'kube-system', 'get', 'secret', 'bootstrap', '-o', 'yaml'], ['-n', 'kube-system', 'delete', 'pod', 'coredns-1'], ['-n', 'kube-system', 'logs', 'coredns-1']]) {
      const r = await kb.kubectl(args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, /Error from server \(Forbidden\): portcullis: .* denied by policy rule .*kubernetes\.yaml:no-kube-system: kube-system is off limits/, args.join(' '));
      noLeak(r.stdout + r.stderr, args.join(' '));
    }
    assert.ok(kb.api.get('pods', 'kube-system', 'coredns-1'), 'the delete in kube-system was not held, and not forwarded');
  });

  test('writes and other namespaces are default-denied', async () => {
    const cases: string[][] = [
      ['create', 'secret', 'generic', 'new', '--from-literal=a=b'],
      ['create', 'configmap', 'x', '--from-literal=a=b'],
      ['label', 'pod', 'web-1', 'x=y'],
      ['-n', 'prod', 'get', 'pods'],
      ['get', '--raw', '/api/v1/nodes'],
      ['get', 'namespaces'],
    ];
    for (const args of cases) {
      const r = await kb.kubectl(args);
      assert.notEqual(r.code, 0, args.join(' '));
      // kubectl create prints "failed to create …: <message>"; the others "Error from server (Forbidden): <message>".
      assert.match(r.stderr, /(Error from server \(Forbidden\)|failed to create \w+):? portcullis: .* denied by policy rule default-deny/, `${args.join(' ')}: ${r.stderr}`);
    }
    const manifest = 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: v\n';
    const a = await kb.kubectl(['apply', '-f', '-'], { input: manifest });
    assert.notEqual(a.code, 0);
    assert.match(a.stderr, /Forbidden.*create configmaps denied by policy rule default-deny/);
    assert.equal(kb.api.get('configmaps', 'default', 'applied'), undefined);
  });

  test('the outcome object rides in Status.details', async () => {
    const r = await kb.kubectl(['get', '--raw', '/api/v1/namespaces/kube-system/pods'], {});
    assert.notEqual(r.code, 0);
    // kubectl get --raw prints the Status body for errors it cannot decode as such; ask directly.
    const res = await fetchStatus('/api/v1/namespaces/kube-system/pods');
    assert.equal(res.status, 403);
    const st = res.body as { kind: string; code: number; reason: string; details: { kind: string; causes: { reason: string; message: string }[] } };
    assert.equal(st.kind, 'Status');
    assert.equal(st.reason, 'Forbidden');
    assert.equal(st.details.kind, 'pods');
    const cause = st.details.causes.find((c) => c.reason === 'PortcullisOutcome');
    const outcome = JSON.parse(cause!.message) as { code: string; effect: string; rule: string };
    assert.equal(outcome.code, 'policy_denied');
    assert.match(outcome.rule, /no-kube-system$/);
  });

  test('delete is held for review; the retry after approval passes (one approval, one DELETE)', async () => {
    const r1 = await kb.kubectl(['delete', 'pod', 'web-2']);
    assert.notEqual(r1.code, 0);
    const m = /Error from server \(TooManyRequests\): portcullis: held for approval ([a-z2-9]{10}) \(rule .*kubernetes\.yaml:delete-needs-approval: delete of pods web-2 needs an on-call approval\)/.exec(r1.stderr);
    assert.ok(m, r1.stderr);
    const id = m[1]!;
    // A retry before the decision waits on the same approval, not a new one.
    const r2 = await kb.kubectl(['delete', 'pod', 'web-2']);
    assert.match(r2.stderr, new RegExp(`held for approval ${id}`));
    assert.equal((await kb.core.approvals.list('pending')).length, 1);
    assert.ok(kb.api.get('pods', 'default', 'web-2'), 'nothing was deleted while held');
    await kb.core.approvals.decide(id, 'approved', 'demo-oncall', 'ok');
    const r3 = await kb.kubectl(['delete', 'pod', 'web-2']);
    assert.equal(r3.code, 0, r3.stderr);
    assert.match(r3.stdout, /pod "web-2" deleted/);
    assert.equal(kb.api.get('pods', 'default', 'web-2'), undefined);
    assert.equal(kb.api.seen.filter((s) => s.method === 'DELETE' && s.url.includes('/pods/web-2')).length, 1);
    const used = kb.auditLines().filter((e) => e['type'] === 'approval.used');
    assert.ok(used.some((e) => (e['data'] as { approval: string }).approval === id));
    // The grant was for one retry: the same request again needs a new approval.
    const r4 = await kb.kubectl(['delete', 'pod', 'web-2']);
    assert.match(r4.stderr, /held for approval/);
    assert.doesNotMatch(r4.stderr, new RegExp(id));
  });

  test('a denied approval answers Forbidden naming it', async () => {
    const r1 = await kb.kubectl(['delete', 'secret', 'db']);
    const id = /held for approval ([a-z2-9]{10})/.exec(r1.stderr)?.[1];
    assert.ok(id, r1.stderr);
    const retry = kb.kubectl(['delete', 'secret', 'db']);
    await new Promise((r) => setTimeout(r, 1000));
    await kb.core.approvals.decide(id, 'denied', 'demo-oncall', 'not today');
    const r2 = await retry;
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, new RegExp(`Error from server \\(Forbidden\\): portcullis: approval ${id} for delete secrets db was denied by demo-oncall: not today`));
    assert.ok(kb.api.get('secrets', 'default', 'db'));
  });

  test('exec is held for review; after approval it runs, output masked and recorded (asciicast v2)', async () => {
    const cmd = ['exec', 'web-1', '--', 'sh', '-c', `echo card ${CARD.replace(/ /g, '')}; echo to-stderr >&2; id -un`];
    const r1 = await kb.kubectl(cmd);
    const id = /held for approval ([a-z2-9]{10}) \(rule .*exec-attach-need-approval: pods\/exec into web-1 needs an on-call approval\)/.exec(r1.stderr)?.[1];
    assert.ok(id, r1.stderr);
    assert.equal(kb.api.seen.filter((s) => s.url.includes('/exec')).length, 0, 'nothing reached the API server while held');
    await kb.core.approvals.decide(id, 'approved', 'demo-oncall');
    const r2 = await kb.kubectl(cmd);
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(r2.stdout, 'card [REDACTED:card]\nnobody\n');
    assert.equal(r2.stderr, 'to-stderr\n');
    const opened = kb.auditLines().filter((e) => e['type'] === 'session.open' && (e['data'] as Record<string, string>)['kind'] === 'exec');
    assert.equal(opened.length, 1);
    const sid = opened[0]!['session'] as string;
    const cast = join(kb.dataDir, 'recordings', `${sid}.cast`);
    assert.ok(existsSync(cast));
    const lines = readFileSync(cast, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as unknown);
    const header = lines[0] as { version: number; width: number };
    assert.equal(header.version, 2);
    const text = lines.slice(1).map((e) => (e as [number, string, string])[2]).join('');
    assert.match(text, /card \[REDACTED:card\]/);
    assert.match(text, /to-stderr/);
    noLeak(readFileSync(cast, 'utf8'), 'recording');
    const closed = kb.auditLines().find((e) => e['type'] === 'session.close' && e['session'] === sid);
    assert.match(String((closed?.['data'] as { recording?: { sha256: string } })?.recording?.sha256), /^[0-9a-f]{64}$/);
    assert.equal((closed?.['data'] as { exitCode?: number }).exitCode, 0);
  });

  test('port-forward and the proxy subresources are denied (no-proxy-or-port-forward)', async () => {
    const r = await kb.kubectl(['port-forward', 'web-1', '18081:80'], { timeoutMs: 20_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /portcullis: .*pods\/portforward web-1 denied by policy rule .*no-proxy-or-port-forward/);
    const p = await kb.kubectl(['get', '--raw', '/api/v1/namespaces/default/pods/web-1/proxy/']);
    assert.notEqual(p.code, 0);
    assert.match(p.stderr, /Forbidden|no-proxy-or-port-forward/);
  });

  test('credentials: an unknown token is refused as kubectl expects; impersonation by the agent is refused', async () => {
    const bad = kb.writeKubeconfig('bad', { token: 'pcat_0123456789abcdef_' + 'A'.repeat(43) });
    const r = await kb.kubectl(['get', 'pods'], { kubeconfig: bad });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /You must be logged in to the server|Unauthorized/);
    const as = await kb.kubectl(['get', 'pods', '--as', 'system:admin']);
    assert.notEqual(as.code, 0);
    assert.match(as.stderr, /Forbidden.*impersonate-user header is not allowed/);
  });

  test('X-Portcullis-Reason: the stated reason is in the request, the audit and the approval; require_reason refuses a hold without it; never forwarded', async () => {
    const extras = join(kb.dir, 'policies', 'aa-reason.yaml');
    writeFileSync(extras, [
      'version: 1',
      'scope: { protocol: kubernetes, targets: [demo-cluster], groups: [agents] }',
      'rules:',
      '  - id: configmap-delete-needs-reason',
      '    effect: review',
      '    kube: { verbs: [delete], resources: [configmaps] }',
      '    require_reason: { min_length: 10 }',
      '    reason: "delete of configmap {name} needs a stated reason and an approval"',
      '',
    ].join('\n'));
    const loaded = kb.core.reloadPolicies();
    assert.ok(loaded.ok, JSON.stringify(loaded));
    try {
      kb.api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'scratch', namespace: 'default' }, data: { a: 'b' } });
      const url = '/api/v1/namespaces/default/configmaps/scratch';
      const before = (await kb.core.approvals.list('pending')).length;
      for (const reason of [undefined, 'too short']) {
        const r = await rawRequest('DELETE', url, reason === undefined ? {} : { 'x-portcullis-reason': reason });
        assert.equal(r.status, 403, JSON.stringify(r.body));
        const st = r.body as { message: string; details?: { causes?: { reason: string; message: string }[] } };
        assert.match(st.message, /reason/i);
        assert.match(JSON.stringify(st), /reason_required/);
      }
      assert.equal((await kb.core.approvals.list('pending')).length, before, 'no approval without a (long enough) reason');

      const why = 'cleaning up the scratch config after the load test';
      const created = new Promise<{ id: string; justification?: string }>((res) => kb.core.approvals.once('created', res));
      const pending = rawRequest('DELETE', url, { 'x-portcullis-reason': why });
      const rec = await created;
      assert.equal(rec.justification, why, 'approvers see the reason');
      await kb.core.approvals.decide(rec.id, 'approved', 'demo-oncall', 'ok');
      const held = await pending;
      if (held.status === 429) {
        // the hold outlived the proxy's wait: the retry with the same reason uses the approval
        const again = await rawRequest('DELETE', url, { 'x-portcullis-reason': why });
        assert.equal(again.status, 200, JSON.stringify(again.body));
      } else assert.equal(held.status, 200, JSON.stringify(held.body));
      const upstream = kb.api.seen.filter((s) => s.method === 'DELETE' && s.url === url);
      assert.equal(upstream.length, 1, 'one DELETE reached the API server');
      assert.equal(upstream[0]!.portcullisReason, undefined, 'the header is not forwarded upstream');
      await kb.core.audit.flush();
      const audited = kb.auditLines().filter((e) => e['type'] === 'request' && (e['request'] as { http?: { path?: string } } | undefined)?.http?.path === url);
      assert.ok(audited.some((e) => (e['request'] as { reason?: string }).reason === why), `the audit event carries request.reason: ${JSON.stringify(audited.map((e) => e['request']))}`);
    } finally {
      rmSync(extras);
      assert.ok(kb.core.reloadPolicies().ok);
    }
  });

  test("large lists: the API server's gzip reaches kubectl untouched when nothing is masked; masked resources are asked for uncompressed and compressed again for the agent", async () => {
    // Over 128 KiB the stand-in compresses as kube-apiserver does, for clients that accept gzip (kubectl does).
    for (let i = 0; i < 700; i++) {
      kb.api.put({ apiVersion: 'v1', kind: 'Service', metadata: { name: `bulk-${String(i).padStart(4, '0')}`, namespace: 'default', labels: { tier: 'bulk' } }, spec: { selector: { app: 'bulk' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'ClusterIP', clusterIP: `10.97.${i >> 8}.${i & 255}` } });
    }
    for (let i = 0; i < 400; i++) {
      kb.api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: `bulk-${String(i).padStart(4, '0')}`, namespace: 'default', labels: { tier: 'bulk' }, annotations: { 'example.com/description': `bulk secret ${i} for the compression test `.repeat(5) } }, data: { password: SECRET_B64, note: Buffer.from(`bulk secret number ${i} `.repeat(8)).toString('base64') } });
    }
    const before = kb.api.seen.length;
    const svc = await kb.kubectl(['get', 'services', '-l', 'tier=bulk', '-o', 'json']);
    assert.equal(svc.code, 0, svc.stderr);
    const items = (JSON.parse(svc.stdout) as { items: { metadata: { name: string } }[] }).items;
    assert.equal(items.length, 700);
    assert.equal(items[699]!.metadata.name, 'bulk-0699');
    const svcSeen = kb.api.seen.slice(before).find((r) => r.url.startsWith('/api/v1/namespaces/default/services'))!;
    assert.match(svcSeen.acceptEncoding ?? '', /gzip/, 'kubectl asked for gzip and the bastion passed that on');
    assert.equal(svcSeen.responseEncoding, 'gzip', 'the API server compressed the list; the bastion relayed it compressed');

    const mid = kb.api.seen.length;
    const sec = await kb.kubectl(['get', 'secrets', '-l', 'tier=bulk', '-o', 'json']);
    assert.equal(sec.code, 0, sec.stderr);
    const secrets = (JSON.parse(sec.stdout) as { items: { data: Record<string, string> }[] }).items;
    assert.equal(secrets.length, 400);
    for (const s of secrets) assert.equal(Buffer.from(s.data['password']!, 'base64').toString('utf8'), '[REDACTED:data]');
    noLeak(sec.stdout, 'large secret list');
    const secSeen = kb.api.seen.slice(mid).find((r) => r.url.startsWith('/api/v1/namespaces/default/secrets'))!;
    assert.doesNotMatch(secSeen.acceptEncoding ?? '', /gzip/, 'a masked resource is asked for uncompressed');
    assert.equal(secSeen.responseEncoding, undefined);

    // Masked on the way and compressed again for the agent (it accepts gzip, the body is over 128 KiB).
    const asked = await rawBytes('/api/v1/namespaces/default/secrets?labelSelector=tier%3Dbulk', { 'accept-encoding': 'gzip' });
    assert.equal(asked.status, 200);
    assert.equal(asked.headers['content-encoding'], 'gzip', `${asked.body.length} bytes: ${JSON.stringify(asked.headers)}`);
    assert.match(String(asked.headers['vary']), /Accept-Encoding/);
    const text = gunzipSync(asked.body).toString('utf8');
    assert.equal((JSON.parse(text) as { items: unknown[] }).items.length, 400);
    noLeak(text, 'large secret list (gzip)');
    assert.ok(asked.body.length < text.length / 4, `compressed: ${asked.body.length} of ${text.length} bytes`);
    // Not asked for gzip: not compressed; small bodies never are.
    const plain = await rawBytes('/api/v1/namespaces/default/secrets?labelSelector=tier%3Dbulk', {});
    assert.equal(plain.headers['content-encoding'], undefined);
    noLeak(plain.body.toString('utf8'), 'large secret list');
    const small = await rawBytes('/api/v1/namespaces/default/secrets/db', { 'accept-encoding': 'gzip' });
    assert.equal(small.headers['content-encoding'], undefined);
    noLeak(small.body.toString('utf8'), 'one secret');
  });

  test('every API call has a response audit event with its status; the chain verifies', async () => {
    await new Promise((r) => setTimeout(r, 200)); // the last response events are appended after kubectl exits
    await kb.core.audit.flush();
    const ev = kb.auditLines();
    const responses = ev.filter((e) => e['type'] === 'response');
    const codes = new Set(responses.map((e) => (e['data'] as { status?: number }).status));
    for (const c of [200, 403, 429]) assert.ok(codes.has(c), `a response with status ${c}`);
    const requests = ev.filter((e) => e['type'] === 'request' && e['protocol'] === 'kubernetes');
    const seqs = new Set(responses.map((e) => (e['data'] as { request_seq?: number }).request_seq));
    for (const rq of requests) assert.ok(seqs.has(rq['seq'] as number), `request ${String(rq['seq'])} has a response event`);
    noLeak(readFileSync(join(kb.dataDir, 'audit', 'audit.jsonl'), 'utf8'), 'audit log');
    const { verifyAudit } = await import('../src/core/audit-verify.js');
    const v = await verifyAudit(kb.dataDir);
    assert.equal(v.ok, true, JSON.stringify(v));
  });
});

async function fetchStatus(path: string): Promise<{ status: number; body: unknown }> {
  const https = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = https.request(`${kb.proxy.url}${path}`, { ca: kb.cert, headers: { authorization: `Bearer ${kb.token}` } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function rawBytes(path: string, headers: Record<string, string>): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  const https = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = https.request(`${kb.proxy.url}${path}`, { ca: kb.cert, headers: { authorization: `Bearer ${kb.token}`, accept: 'application/json', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function rawRequest(method: string, path: string, headers: Record<string, string>): Promise<{ status: number; body: unknown }> {
  const https = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = https.request(`${kb.proxy.url}${path}`, { method, ca: kb.cert, headers: { authorization: `Bearer ${kb.token}`, accept: 'application/json', ...headers } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown }));
    });
    req.on('error', reject);
    req.end();
  });
}
