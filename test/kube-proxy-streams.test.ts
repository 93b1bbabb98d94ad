// The Kubernetes proxy beyond the reference policy's reads, under a permissive test policy (writes,
// exec, attach and port-forward allowed in `default`, Secret data masked): protobuf request bodies
// forwarded unchanged, responses of writes masked, the last-applied annotation masked, big lists
// streamed and masked, exec with stdin and with a real TTY (node-pty) recorded, attach,
// port-forward relayed, protobuf answers refused (fail closed), HTTP/1.1 + client-certificate
// upstreams, target routing, session kill and idle close, a hold released while the client waits.
// Real kubectl, the stand-in API server (test/harness/kubeapi.ts), the real core.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import pty from 'node-pty';
import WebSocket from 'ws';
import { startKubeBastion, KUBECTL, type KubeBastion } from './harness/kubebastion.js';
import { tempDir, type TempDir } from './harness/tmp.js';

const SECRET = 'Tr0ub4dor&3-horse';
const SECRET_B64 = Buffer.from(SECRET).toString('base64');

const POLICY = `version: 1
scope:
  protocol: kubernetes
rules:
  - id: discovery
    effect: allow
    kube: { discovery: true }
  - id: default-namespace
    effect: allow
    kube:
      namespaces: [default]
    masks:
      - { resource: secrets, field: data, strategy: redact }
      - { resource: secrets, field: stringData, strategy: redact }
  - id: no-kube-system
    effect: deny
    kube:
      namespaces: [kube-system]
    reason: kube-system is off limits
`;

const REVIEW_POLICY = POLICY + `
  - id: configmap-deletes-need-approval
    effect: review
    kube:
      verbs: [delete]
      resources: [configmaps]
`;

let tmp: TempDir;
let kb: KubeBastion;

function noLeak(text: string, what: string): void {
  for (const l of [SECRET, SECRET_B64]) assert.ok(!text.includes(l), `${what} leaks ${l}:\n${text.slice(0, 1500)}`);
}

function policiesDir(name: string, text: string): string {
  const d = join(tmp.path, name);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'kubernetes.yaml'), text);
  return d;
}

async function waitUntil(what: string, fn: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`timed out waiting for ${what}`);
}

before(async () => {
  tmp = await tempDir('pc-kube-streams-');
  kb = await startKubeBastion({
    policies: policiesDir('open', REVIEW_POLICY),
    proxy: { holdWaitMs: 15_000 },
    extraTargets: (api) => [{ name: 'h1-cert', server: api.url, ca: api.ca, clientCert: api.clientCert, clientKey: api.clientKey, impersonate: false, http2: false }],
  });
  kb.api.put({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-1', namespace: 'default' }, spec: { containers: [{ name: 'web', image: 'nginx' }] } });
});

after(async () => {
  await kb?.close();
  await tmp?.remove();
});

describe('writes, exec and streams through the bastion', () => {
  test('kubectl create secret: the protobuf body is forwarded unchanged; the answer is masked', async () => {
    const r = await kb.kubectl(['create', 'secret', 'generic', 'made', `--from-literal=pw=${SECRET}`, '-o', 'yaml']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /name: made/);
    noLeak(r.stdout, 'create -o yaml');
    const post = kb.api.seen.find((s) => s.method === 'POST' && s.url.startsWith('/api/v1/namespaces/default/secrets'));
    assert.match(post?.contentType ?? '', /protobuf/);
    assert.doesNotMatch(post?.accept ?? '', /protobuf/, 'the answer was asked for as JSON');
    const stored = kb.api.get('secrets', 'default', 'made');
    assert.equal(Buffer.from(String((stored?.['data'] as Record<string, string>)['pw']), 'base64').toString(), SECRET, 'the API server got the real value');
  });

  test('kubectl apply (create, then patch): responses and the last-applied annotation are masked', async () => {
    const manifest = (v: string) => `apiVersion: v1\nkind: Secret\nmetadata:\n  name: applied\nstringData:\n  pw: "${v}"\n`;
    const a1 = await kb.kubectl(['apply', '-f', '-', '-o', 'yaml'], { input: manifest(SECRET) });
    assert.equal(a1.code, 0, a1.stderr);
    noLeak(a1.stdout, 'apply (create)');
    const a2 = await kb.kubectl(['apply', '-f', '-', '-o', 'json'], { input: manifest(SECRET + '-2') });
    assert.equal(a2.code, 0, a2.stderr);
    noLeak(a2.stdout, 'apply (patch)');
    assert.ok(kb.api.seen.some((s) => s.method === 'PATCH' && s.url.includes('/secrets/applied')));
    const g = await kb.kubectl(['get', 'secret', 'applied', '-o', 'yaml']);
    assert.match(g.stdout, /last-applied-configuration/);
    assert.match(g.stdout, /REDACTED/);
    noLeak(g.stdout, 'get with last-applied');
  });

  test('a big list is streamed and masked object by object (raw, and chunked by kubectl)', async () => {
    for (let i = 0; i < 1500; i++) kb.api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: `bulk-${String(i).padStart(4, '0')}`, namespace: 'default', labels: { bulk: 'yes' } }, data: { pw: SECRET_B64 } });
    const raw = await kb.kubectl(['get', '--raw', '/api/v1/namespaces/default/secrets?labelSelector=bulk%3Dyes']);
    assert.equal(raw.code, 0, raw.stderr);
    const list = JSON.parse(raw.stdout) as { kind: string; items: { metadata: { name: string }; data: { pw: string } }[] };
    assert.equal(list.kind, 'SecretList');
    assert.equal(list.items.length, 1500);
    assert.equal(list.items[1499]!.metadata.name, 'bulk-1499');
    assert.ok(list.items.every((s) => Buffer.from(s.data.pw, 'base64').toString() === '[REDACTED:data]'));
    noLeak(raw.stdout, 'raw list');
    const chunked = await kb.kubectl(['get', 'secrets', '-l', 'bulk=yes', '-o', 'json']);
    assert.equal(chunked.code, 0, chunked.stderr);
    assert.equal((JSON.parse(chunked.stdout) as { items: unknown[] }).items.length, 1500);
    noLeak(chunked.stdout, 'chunked list');
    assert.ok(kb.api.seen.some((s) => s.url.includes('continue=')), 'kubectl paged through the list');
  });

  test('exec with stdin (v5 close signal) and a non-zero exit code; stdin recorded masked', async () => {
    const r = await kb.kubectl(['exec', '-i', 'web-1', '--', 'sh', '-c', 'cat; exit 3'], { input: `line one\npassword=${SECRET}\n` });
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /command terminated with exit code 3/);
    assert.match(r.stdout, /^line one\npassword=/);
    noLeak(r.stdout, 'exec output');
    const open = kb.auditLines().filter((e) => e['type'] === 'session.open' && (e['data'] as Record<string, string>)['kind'] === 'exec');
    const cast = readFileSync(join(kb.dataDir, 'recordings', `${open[open.length - 1]!['session'] as string}.cast`), 'utf8');
    assert.match(cast, /"i", "line one/);
    noLeak(cast, 'recording');
  });

  test('exec -it in a real terminal: interactive shell, resizes recorded', async () => {
    const term = pty.spawn(KUBECTL, ['exec', '-it', 'web-1', '--', 'sh'], { cols: 100, rows: 30, env: { PATH: process.env.PATH ?? '', HOME: join(kb.dir, 'home'), KUBECONFIG: kb.kubeconfig, TERM: 'xterm' } });
    let out = '';
    term.onData((d) => (out += d));
    const exited = new Promise<number>((r) => term.onExit(({ exitCode }) => r(exitCode)));
    await waitUntil('a prompt', () => /[$#] $/m.test(out));
    term.write('echo $((6*7))\r');
    await waitUntil('the answer', () => out.includes('42'));
    term.resize(120, 40);
    await new Promise((r) => setTimeout(r, 300));
    term.write('exit\r');
    assert.equal(await exited, 0, out);
    const open = kb.auditLines().filter((e) => e['type'] === 'session.open' && (e['data'] as Record<string, string>)['tty'] === 'true');
    const cast = readFileSync(join(kb.dataDir, 'recordings', `${open[open.length - 1]!['session'] as string}.cast`), 'utf8').trim().split('\n');
    const events = cast.slice(1).map((l) => JSON.parse(l) as [number, string, string]);
    assert.ok(events.some((e) => e[1] === 'r' && e[2] === '100x30'), 'the initial size');
    assert.ok(events.some((e) => e[1] === 'r' && e[2] === '120x40'), 'the resize');
    assert.ok(events.some((e) => e[1] === 'o' && e[2].includes('42')));
  });

  test('attach: stdin in, stdout out', async () => {
    const r = await kb.kubectl(['attach', '-i', 'web-1'], { input: 'hello attach\n', timeoutMs: 20_000 });
    assert.match(r.stdout, /hello attach/);
  });

  test('port-forward: the WebSocket upgrade and its frames are relayed as they are', async () => {
    const echo = net.createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const port = (echo.address() as net.AddressInfo).port;
    try {
      const ws = new WebSocket(`${kb.proxy.url.replace('https', 'wss')}/api/v1/namespaces/default/pods/web-1/portforward?ports=${port}`, ['portforward.k8s.io'], { ca: kb.cert, headers: { authorization: `Bearer ${kb.token}` } });
      const frames: Buffer[] = [];
      ws.on('message', (d: Buffer) => frames.push(d));
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      assert.equal(ws.protocol, 'portforward.k8s.io');
      await waitUntil('the port frames', () => frames.length >= 2);
      assert.deepEqual([...frames[0]!], [0, port & 0xff, port >> 8]);
      ws.send(Buffer.concat([Buffer.from([0]), Buffer.from('ping through the bastion')]));
      await waitUntil('the echo', () => frames.some((f) => f[0] === 0 && f.subarray(1).toString() === 'ping through the bastion'));
      ws.close();
    } finally {
      echo.close();
    }
    await waitUntil('the response event', async () => {
      await kb.core.audit.flush();
      return kb.auditLines().some((e) => e['type'] === 'response' && (e['data'] as { stream?: string }).stream === 'portforward');
    });
  });

  test('HTTP/1.1 upstream with a client certificate, routed by /targets/<name>; unknown targets are 404', async () => {
    const cfg = kb.writeKubeconfig('h1', { token: kb.token, server: `${kb.proxy.url}/targets/h1-cert` });
    const before = kb.api.seen.length;
    const r = await kb.kubectl(['get', 'pods', '-o', 'name'], { kubeconfig: cfg });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /pod\/web-1/);
    const seen = kb.api.seen.slice(before).filter((s) => s.url.startsWith('/api/v1/namespaces/default/pods'));
    assert.ok(seen.length > 0);
    for (const s of seen) {
      assert.equal(s.user, 'portcullis-bastion', 'authenticated with the client certificate, no impersonation');
      assert.equal(s.httpVersion, '1.1');
    }
    // The other target speaks HTTP/2 upstream (WebSocket upgrades are always HTTP/1.1).
    const h2 = kb.api.seen.filter((s) => s.user === 'demo-agent' && !/\/(exec|attach|portforward)\b/.test(s.url));
    assert.ok(h2.length > 0 && h2.every((s) => s.httpVersion === '2.0'), JSON.stringify(h2.filter((s) => s.httpVersion !== '2.0').slice(0, 3)));
    const nowhere = kb.writeKubeconfig('nowhere', { token: kb.token, server: `${kb.proxy.url}/targets/nowhere` });
    // get --raw takes a path from the host root: the target prefix is part of it.
    const n = await kb.kubectl(['get', '--raw', '/targets/nowhere/api/v1/namespaces/default/pods'], { kubeconfig: nowhere });
    assert.notEqual(n.code, 0);
    assert.match(n.stderr, /NotFound.*no Kubernetes target named "nowhere"/);
  });

  test('a hold released while kubectl waits lets the same call through', async () => {
    kb.api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'held', namespace: 'default' }, data: { k: 'v' } });
    const del = kb.kubectl(['delete', 'configmap', 'held']);
    await waitUntil('the pending approval', async () => (await kb.core.approvals.list('pending')).length === 1);
    const [p] = await kb.core.approvals.list('pending');
    await kb.core.approvals.decide(p!.id, 'approved', 'demo-oncall');
    const r = await del;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /configmap "held" deleted/);
    assert.equal(kb.api.get('configmaps', 'default', 'held'), undefined);
  });

  test('an operator kill ends the session and cuts its watch', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(KUBECTL, ['get', 'pods', '-w'], { env: { PATH: process.env.PATH ?? '', HOME: join(kb.dir, 'home'), KUBECONFIG: kb.kubeconfig } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    await waitUntil('the watch', () => out.includes('web-1'));
    await new Promise((r) => setTimeout(r, 300));
    const s = kb.core.listSessions().find((x) => x.protocol === 'kubernetes' && x.meta['kind'] === 'kubernetes-api');
    assert.ok(s);
    assert.equal(await kb.core.killSession(s.id, 'operator kill'), true);
    const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(t);
    await kb.core.audit.flush();
    assert.ok(kb.auditLines().some((e) => e['type'] === 'session.close' && e['session'] === s.id && (e['data'] as { reason: string }).reason === 'operator kill'));
    const again = await kb.kubectl(['get', 'pods', '-o', 'name']);
    assert.equal(again.code, 0, 'the next request opens a new session');
    assert.ok(kb.core.listSessions().some((x) => x.protocol === 'kubernetes' && x.id !== s.id));
  });
});

describe('fail closed and session windows', () => {
  test('a protobuf answer for a masked resource is refused; other resources pass', async () => {
    const pb = await startKubeBastion({ policies: policiesDir('open-pb', POLICY), api: { answerProtobuf: ['secrets'] } });
    try {
      pb.api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'db', namespace: 'default' }, data: { pw: SECRET_B64 } });
      const r = await pb.kubectl(['get', 'secrets', '-o', 'json']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /secrets must be masked and the API server answered application\/vnd\.kubernetes\.protobuf, not JSON; refusing the response \(fail closed\)/);
      noLeak(r.stdout + r.stderr, 'refused protobuf');
      const ok = await pb.kubectl(['get', 'configmaps', '-o', 'name']);
      assert.equal(ok.code, 0, ok.stderr);
    } finally {
      await pb.close();
    }
  });

  test('session.revalidate: revoking the token ends the session and its watch', async () => {
    const rv = await startKubeBastion({ policies: policiesDir('open-rv', POLICY) });
    await rv.proxy.close();
    try {
      const { startKubeProxy } = await import('../src/proxy/kube/index.js');
      const proxy = await startKubeProxy(rv.core, {
        port: 0,
        log: (await import('../src/core/log.js')).createLogger('error', () => undefined),
        tls: { cert: rv.cert, key: readFileSync(join(rv.dir, 'tls.key'), 'utf8') },
        defaultTarget: 'demo-cluster',
        targets: (n) => (n === 'demo-cluster' ? { name: n, server: rv.api.url, ca: rv.api.ca, token: rv.api.token, impersonate: true } : undefined),
        authenticate: (t, ctx) => rv.identity.verifyBearer(t, { remote: ctx.remote, protocol: 'kubernetes' }),
        session: { revalidateMs: 200, revalidate: (id) => rv.identity.check(id) },
      });
      try {
        const cfg = rv.writeKubeconfig('rv', { token: rv.token, server: proxy.url });
        const { spawn } = await import('node:child_process');
        const child = spawn(KUBECTL, ['get', 'configmaps', '-w'], { env: { PATH: process.env.PATH ?? '', HOME: join(rv.dir, 'home'), KUBECONFIG: cfg } });
        let err = '';
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        await waitUntil('the session', () => rv.core.listSessions().length === 1);
        await new Promise((r) => setTimeout(r, 500));
        await rv.identity.revokeToken(rv.token);
        const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(t);
        await rv.core.audit.flush();
        const closed = rv.auditLines().find((e) => e['type'] === 'session.close');
        assert.match(String((closed?.['data'] as { reason?: string })?.reason), /credential no longer valid: token revoked/);
        const again = await rv.kubectl(['get', 'pods'], { kubeconfig: cfg });
        assert.notEqual(again.code, 0);
        assert.match(again.stderr, /Unauthorized|logged in/);
        void err;
      } finally {
        await proxy.close();
      }
    } finally {
      await rv.close();
    }
  });

  test('an idle session is closed after the idle timeout; the next request opens a new one', async () => {
    const idle = await startKubeBastion({ policies: policiesDir('open-idle', POLICY), proxy: { session: { idleTimeoutMs: 400 } } });
    try {
      const r = await idle.kubectl(['get', 'pods']);
      assert.equal(r.code, 0, r.stderr);
      await waitUntil('the idle close', async () => {
        await idle.core.audit.flush();
        return idle.auditLines().some((e) => e['type'] === 'session.close' && (e['data'] as { reason: string }).reason === 'idle timeout');
      });
      assert.equal(idle.core.listSessions().length, 0);
      const opens = idle.auditLines().filter((e) => e['type'] === 'session.open').length;
      await idle.kubectl(['get', 'pods']);
      await idle.core.audit.flush();
      assert.equal(idle.auditLines().filter((e) => e['type'] === 'session.open').length, opens + 1);
    } finally {
      await idle.close();
    }
  });
});
