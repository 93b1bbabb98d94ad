// The Kubernetes proxy's pure parts: the streaming list splitter (property-based: any list, cut
// into any chunks, comes back element for element), response masking per mode (lists, Tables,
// watch events, single objects, logs) fed in arbitrary chunks, the Accept rewrite, the unmaskable
// checks, compression of masked responses, Status objects, and the kubeconfig reader/writer.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import fc from 'fast-check';
import YAML from 'yaml';
import { constants, gunzipSync } from 'node:zlib';
import { Masker } from '../src/masking/masker.js';
import { maskKube } from '../src/masking/kube.js';
import { kubeFacts } from '../src/policy/kube/index.js';
import { JsonListSplitter } from '../src/proxy/kube/jsonsplit.js';
import { buildKubeconfig, execCredential, readKubeconfig } from '../src/proxy/kube/kubeconfig.js';
import { acceptsGzip, GZIP_THRESHOLD, jsonAccept, pipeBody, planResponse, recompress, unmaskable } from '../src/proxy/kube/response.js';
import { kubeStatus } from '../src/proxy/kube/status.js';
import type { UpstreamResponse } from '../src/proxy/kube/upstream.js';

const masker = new Masker({
  masks: [
    { resource: 'secrets', field: 'data', strategy: 'redact', rule: 't:r' },
    { resource: 'secrets', field: 'stringData', strategy: 'redact', rule: 't:r' },
  ],
  defaultDetectors: true,
});

function split(text: string, cuts: number[]): { head: string[]; items: string[]; tail: string[]; whole: string[] } {
  const out = { head: [] as string[], items: [] as string[], tail: [] as string[], whole: [] as string[] };
  const s = new JsonListSplitter({ head: (t) => out.head.push(t), item: (t) => out.items.push(t), tail: (t) => out.tail.push(t), whole: (t) => out.whole.push(t) });
  const buf = Buffer.from(text);
  let at = 0;
  for (const c of [...cuts].sort((a, b) => a - b)) {
    const to = Math.min(buf.length, c);
    if (to > at) s.write(buf.subarray(at, to));
    at = Math.max(at, to);
  }
  s.write(buf.subarray(at));
  s.end();
  return out;
}

const jsonValue = fc.jsonValue({ maxDepth: 3 });

describe('JsonListSplitter', () => {
  test('any list, in any chunks: head, every element verbatim, tail', () => {
    fc.assert(
      fc.property(fc.array(jsonValue, { maxLength: 12 }), fc.dictionary(fc.string({ maxLength: 6 }).filter((k) => k !== 'items' && k !== 'rows'), jsonValue, { maxKeys: 3 }), fc.array(fc.nat(2000), { maxLength: 8 }), fc.boolean(), (items, extra, cuts, pretty) => {
        const doc = { kind: 'ThingList', apiVersion: 'v1', metadata: { resourceVersion: '7' }, items, ...extra };
        const text = pretty ? JSON.stringify(doc, null, 2) : JSON.stringify(doc);
        const out = split(text, cuts);
        assert.equal(out.whole.length, 0);
        assert.equal(out.head.length, 1);
        assert.deepEqual(out.items.map((t) => JSON.parse(t) as unknown), JSON.parse(JSON.stringify(items)) as unknown[]);
        // head + elements + tail put back together is the same document
        const again = JSON.parse(out.head[0] + out.items.join(',') + ']' + out.tail[0]) as unknown;
        assert.deepEqual(again, JSON.parse(text));
      }),
      { numRuns: 300 },
    );
  });

  test('brackets, quotes and escapes inside strings do not count; a document without items comes back whole', () => {
    const tricky = { kind: 'SecretList', metadata: { note: 'a "quoted" ] } [ { \\ \u2028 items' }, items: [{ a: '],"items":[' }, { b: '\\"' }, 3, 'x', null] };
    const out = split(JSON.stringify(tricky), [5, 17, 40, 41, 42, 60]);
    assert.deepEqual(out.items.map((t) => JSON.parse(t) as unknown), tricky.items);
    const single = { kind: 'Secret', metadata: { name: 'x' }, data: { items: '[]' } };
    const w = split(JSON.stringify(single), [3, 9]);
    assert.equal(w.items.length, 0);
    assert.deepEqual(JSON.parse(w.whole[0]!), single);
    const table = { kind: 'Table', columnDefinitions: [{ name: 'Name' }], rows: [{ cells: ['a'] }, { cells: ['b'] }] };
    assert.equal(split(JSON.stringify(table), []).items.length, 2);
  });

  test('a list cut off inside its items is an error', () => {
    const s = new JsonListSplitter({ head: () => undefined, item: () => undefined, tail: () => undefined, whole: () => undefined });
    s.write(Buffer.from('{"kind":"PodList","items":[{"a":1},{"b":'));
    assert.throws(() => s.end(), /ended inside its items/);
  });
});

async function run(plan: ReturnType<typeof planResponse>, headers: Record<string, string>, body: string, chunk = 7): Promise<{ text: string; error?: string }> {
  const src = new PassThrough();
  const up: UpstreamResponse = { status: 200, headers, body: src, httpVersion: '2' };
  let text = '';
  const res = new Writable({
    write(c: Buffer, _e, cb) {
      text += c.toString();
      cb();
    },
  }) as unknown as Parameters<typeof pipeBody>[1];
  const p = pipeBody(up, res, plan);
  const b = Buffer.from(body);
  for (let i = 0; i < b.length; i += chunk) src.write(b.subarray(i, i + chunk));
  src.end();
  const r = await p;
  return { text, ...(r.error ? { error: r.error } : {}) };
}

const secret = (name: string, pw: string) => ({ metadata: { name, namespace: 'default', annotations: { 'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify({ kind: 'Secret', metadata: { name }, stringData: { pw } }) } }, data: { pw: Buffer.from(pw).toString('base64') }, type: 'Opaque' });

describe('response masking', () => {
  const json = { 'content-type': 'application/json' };

  test('plans: masked resources as JSON or watch, logs as text, the rest untouched', () => {
    assert.equal(planResponse(kubeFacts('GET', '/api/v1/namespaces/default/secrets'), masker).mode, 'json');
    assert.equal(planResponse(kubeFacts('GET', '/api/v1/namespaces/default/secrets?watch=1'), masker).mode, 'watch');
    assert.equal(planResponse(kubeFacts('GET', '/api/v1/namespaces/default/configmaps/x'), masker).mode, 'json');
    assert.equal(planResponse(kubeFacts('GET', '/apis/apps/v1/namespaces/default/deployments'), masker).mode, 'json');
    assert.equal(planResponse(kubeFacts('GET', '/api/v1/namespaces/default/pods/x/log?follow=true'), masker).mode, 'text');
    assert.equal(planResponse(kubeFacts('GET', '/api/v1/namespaces/default/services'), masker).mode, 'none');
    assert.equal(planResponse(kubeFacts('GET', '/version'), masker).mode, 'none');
    assert.equal(jsonAccept('application/vnd.kubernetes.protobuf,application/json'), 'application/json');
    assert.equal(jsonAccept('application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json'), 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json');
    assert.equal(jsonAccept(undefined), 'application/json');
    assert.equal(jsonAccept('application/yaml'), 'application/json');
  });

  test('unmaskable answers are named before anything is sent', () => {
    const plan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/secrets'), masker);
    const up = (h: Record<string, string>, status = 200): UpstreamResponse => ({ status, headers: h, body: new PassThrough(), httpVersion: '1.1' });
    assert.match(unmaskable(plan, up({ 'content-type': 'application/vnd.kubernetes.protobuf' }))!, /protobuf, not JSON/);
    assert.match(unmaskable(plan, up({ 'content-type': 'application/yaml' }))!, /yaml, not JSON/);
    assert.match(unmaskable(plan, up({ 'content-type': 'application/json', 'content-encoding': 'br' }))!, /br-encoded/);
    assert.equal(unmaskable(plan, up({ 'content-type': 'application/json', 'content-encoding': 'gzip' })), null);
    assert.equal(unmaskable(plan, up({ 'content-length': '0' }, 204)), null);
    assert.equal(unmaskable(planResponse(kubeFacts('GET', '/api/v1/namespaces/default/services'), masker), up({ 'content-type': 'application/vnd.kubernetes.protobuf' })), null);
  });

  test('a Secret list, a Table with objects and a single Secret: values and last-applied masked, structure kept', async () => {
    const plan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/secrets'), masker);
    const list = { kind: 'SecretList', apiVersion: 'v1', metadata: { resourceVersion: '9' }, items: [secret('a', 'pw-one-111'), secret('b', 'pw-two-222')] };
    const r = await run(plan, json, JSON.stringify(list));
    assert.equal(r.error, undefined);
    const out = JSON.parse(r.text) as typeof list;
    assert.equal(out.items.length, 2);
    assert.equal(out.metadata.resourceVersion, '9');
    assert.doesNotMatch(r.text, /pw-one|pw-two|cHctb25l/);
    assert.equal(Buffer.from(out.items[0]!.data.pw, 'base64').toString(), '[REDACTED:data]');
    const table = { kind: 'Table', apiVersion: 'meta.k8s.io/v1', metadata: {}, columnDefinitions: [{ name: 'Name' }], rows: list.items.map((o) => ({ cells: [o.metadata.name], object: o })) };
    const t = await run(plan, json, JSON.stringify(table), 13);
    assert.equal((JSON.parse(t.text) as typeof table).rows.length, 2);
    assert.doesNotMatch(t.text, /pw-one|pw-two/);
    const one = await run(plan, json, JSON.stringify({ kind: 'Secret', apiVersion: 'v1', ...secret('c', 'pw-three-333') }), 3);
    assert.doesNotMatch(one.text, /pw-three|cHctdGhyZWU/);
    assert.equal((JSON.parse(one.text) as { metadata: { name: string } }).metadata.name, 'c');
  });

  test('watch events are masked one by one, in any chunking', async () => {
    const plan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/secrets?watch=true'), masker);
    const events = [1, 2, 3].map((i) => JSON.stringify({ type: i === 3 ? 'DELETED' : 'ADDED', object: { kind: 'Secret', ...secret(`s${i}`, `watch-secret-${i}`) } }) + '\n').join('');
    for (const chunk of [1, 5, 64, 10_000]) {
      const r = await run(plan, json, events, chunk);
      const lines = r.text.trim().split('\n').map((l) => JSON.parse(l) as { type: string; object: { metadata: { name: string } } });
      assert.deepEqual(lines.map((l) => [l.type, l.object.metadata.name]), [['ADDED', 's1'], ['ADDED', 's2'], ['DELETED', 's3']]);
      assert.doesNotMatch(r.text, /watch-secret/);
    }
  });

  test('a body that does not parse is cut (fail closed), never passed on', async () => {
    const plan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/secrets'), masker);
    const r = await run(plan, json, '{"kind":"SecretList","items":[{"metadata":{"name":"a"},"data":{"pw":"c2VjcmV0"}}, {broken');
    assert.ok(r.error);
    assert.doesNotMatch(r.text, /c2VjcmV0/);
    const w = await run(planResponse(kubeFacts('GET', '/api/v1/namespaces/default/secrets?watch=1'), masker), json, 'not json\n');
    assert.ok(w.error);
  });

  test('pod env and ConfigMap values by detector, in place and in last-applied', () => {
    const pod = {
      kind: 'Deployment',
      metadata: { name: 'd', annotations: { 'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify({ spec: { template: { spec: { containers: [{ env: [{ name: 'K', value: 'ghp_' + 'a'.repeat(36) }] }] } } } }) } },
      spec: { template: { spec: { containers: [{ name: 'c', env: [{ name: 'K', value: 'ghp_' + 'a'.repeat(36) }, { name: 'M', value: 'plain' }] }], initContainers: [{ name: 'i', env: [{ name: 'C', value: '4111 1111 1111 1111' }] }] } } },
    };
    const out = JSON.stringify(maskKube(masker, 'deployments', pod));
    assert.doesNotMatch(out, /ghp_a{36}|4111 1111/);
    assert.match(out, /plain/);
    const cm = maskKube(masker, 'configmaps', { metadata: { name: 'c' }, data: { a: 'AKIAIOSFODNN7EXAMPLE', b: 'ok' }, binaryData: { c: Buffer.from('key AKIAIOSFODNN7EXAMPLE').toString('base64') } }) as { data: Record<string, string>; binaryData: Record<string, string> };
    assert.equal(cm.data['b'], 'ok');
    assert.match(cm.data['a']!, /REDACTED/);
    assert.doesNotMatch(Buffer.from(cm.binaryData['c']!, 'base64').toString(), /AKIA/);
  });

  test('pods and ConfigMaps stream through the field rewriter: same result as parsing, in any chunking', async () => {
    const GH = 'ghp_' + 'b'.repeat(36);
    const podObj = (i: number) => ({
      metadata: { name: `p${i}`, labels: { env: 'prod' }, annotations: i % 2 ? { 'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify({ kind: 'Pod', spec: { containers: [{ env: [{ name: 'T', value: GH }] }] } }) } : { note: '"env":[{"value":"' + GH + '"}]' } },
      spec: { containers: [{ name: 'c', env: [{ name: 'T', value: i % 3 ? GH : 'plain' }, { name: 'U', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }] }] },
      status: { phase: 'Running' },
    });
    const list = { kind: 'PodList', apiVersion: 'v1', metadata: {}, items: [0, 1, 2, 3, 4].map(podObj) };
    const expected = maskKube(masker, 'pods', list);
    // The reference (parse path) masks env values and last-applied; other annotations are not
    // detector fields — the note, with an escaped "env":[…] inside, must not confuse the rewriter.
    assert.doesNotMatch(JSON.stringify((expected as typeof list).items.map((i) => [i.spec, i.metadata.annotations['kubectl.kubernetes.io/last-applied-configuration'] ?? ''])), /ghp_b{36}/);
    const plan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/pods'), masker);
    for (const text of [JSON.stringify(list), JSON.stringify(list, null, 2)]) {
      for (const chunk of [1, 3, 50, 100_000]) {
        const r = await run(plan, json, text, chunk);
        assert.equal(r.error, undefined);
        assert.deepEqual(JSON.parse(r.text), expected, `chunk ${chunk}`);
      }
    }
    const watchText = list.items.map((o) => JSON.stringify({ type: 'MODIFIED', object: o }) + '\n').join('');
    const w = await run(planResponse(kubeFacts('GET', '/api/v1/namespaces/default/pods?watch=1'), masker), json, watchText, 11);
    assert.deepEqual(w.text.trim().split('\n').map((l) => JSON.parse(l) as unknown), list.items.map((o) => ({ type: 'MODIFIED', object: maskKube(masker, 'pods', o) })));
    const cms = { kind: 'ConfigMapList', items: [{ metadata: { name: 'a', managedFields: [{ fieldsV1: { 'f:data': { 'f:k': {} } } }] }, data: { k: 'AKIAIOSFODNN7EXAMPLE', n: 'data' }, binaryData: { b: Buffer.from('AKIAIOSFODNN7EXAMPLE').toString('base64') } }] };
    const c = await run(planResponse(kubeFacts('GET', '/api/v1/namespaces/default/configmaps'), masker), json, JSON.stringify(cms), 5);
    assert.deepEqual(JSON.parse(c.text), maskKube(masker, 'configmaps', cms));
    assert.doesNotMatch(c.text, /AKIA/);
    // A body cut off inside a field is an error, not a pass.
    const whole = JSON.stringify(list);
    const cut = await run(plan, json, whole.slice(0, whole.indexOf(`"env":[{"name":"T","value":"${GH}`) + 35), 7);
    assert.ok(cut.error);
    assert.doesNotMatch(cut.text, /"value":"ghp_b/, 'the env value cut off is not passed on');
  });

  test('logs through the stream masker', async () => {
    const r = await run(planResponse(kubeFacts('GET', '/api/v1/namespaces/default/pods/p/log'), masker), { 'content-type': 'text/plain' }, 'paid with 4111 1111 1111 1111 today\n', 4);
    assert.equal(r.text, 'paid with [REDACTED:card] today\n');
  });
});

describe('response streaming: field rewriter in any chunking, write coalescing', () => {
  const json = { 'content-type': 'application/json' };
  const GH = 'ghp_' + 'c'.repeat(36);

  /** Feeds `body` to pipeBody cut at the given byte offsets (through multi-byte characters too). */
  async function runCuts(plan: ReturnType<typeof planResponse>, body: Buffer, cuts: number[]): Promise<{ text: string; raw: Buffer; error?: string; writes: number }> {
    const src = new PassThrough();
    const up: UpstreamResponse = { status: 200, headers: json, body: src, httpVersion: '2' };
    const out: Buffer[] = [];
    let writes = 0;
    const res = new Writable({
      writev(cs: { chunk: Buffer }[], cb) {
        writes++;
        for (const c of cs) out.push(Buffer.from(c.chunk));
        cb();
      },
      write(c: Buffer, _e, cb) {
        writes++;
        out.push(Buffer.from(c));
        cb();
      },
    }) as unknown as Parameters<typeof pipeBody>[1];
    const p = pipeBody(up, res, plan);
    let at = 0;
    for (const c of [...new Set(cuts)].sort((a, b) => a - b)) {
      if (c > at && c < body.length) {
        src.write(body.subarray(at, c));
        at = c;
      }
    }
    src.end(body.subarray(at));
    const r = await p;
    const raw = Buffer.concat(out);
    return { text: raw.toString('utf8'), raw, writes, ...(r.error ? { error: r.error } : {}) };
  }

  // Values with escapes, multi-byte characters (cut anywhere), look-alike keys inside strings, a
  // secret the detectors catch, pretty and compact JSON, env and last-applied in any mix.
  const envValue = fc.oneof(fc.constant(GH), fc.constant('AKIAIOSFODNN7EXAMPLE'), fc.string({ maxLength: 12 }), fc.constantFrom('é"\\', '日本語 "env":[', '\\"env\\":', '🔑 ' + GH, 'x\\'));
  const podArb = fc.record({
    name: fc.string({ minLength: 1, maxLength: 8 }),
    note: fc.constantFrom('', '"env":[{"value":"' + GH + '"}]', 'ünïcödé', '"kubectl.kubernetes.io/last-applied-configuration":"x"'),
    env: fc.array(fc.record({ name: fc.constantFrom('A', 'B', 'ç'), value: envValue }), { maxLength: 3 }),
    lastApplied: fc.boolean(),
    valueFrom: fc.boolean(),
  });
  const toPod = (p: { name: string; note: string; env: { name: string; value: string }[]; lastApplied: boolean; valueFrom: boolean }) => ({
    kind: 'Pod',
    metadata: { name: p.name, annotations: { note: p.note, ...(p.lastApplied ? { 'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify({ kind: 'Pod', spec: { containers: [{ name: 'c', env: p.env }] } }) } : {}) } },
    spec: { containers: [{ name: 'c', env: [...p.env, ...(p.valueFrom ? [{ name: 'R', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }] : [])] }] },
  });

  test('pods (list and watch), in any byte chunking: the same as parsing and masking whole objects', async () => {
    const listPlan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/pods'), masker);
    const watchPlan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/pods?watch=1'), masker);
    await fc.assert(
      fc.asyncProperty(fc.array(podArb, { maxLength: 5 }), fc.array(fc.nat(3000), { maxLength: 12 }), fc.boolean(), async (pods, cuts, pretty) => {
        const list = { kind: 'PodList', apiVersion: 'v1', metadata: {}, items: pods.map(toPod) };
        const text = pretty ? JSON.stringify(list, null, 2) : JSON.stringify(list);
        const r = await runCuts(listPlan, Buffer.from(text), cuts);
        assert.equal(r.error, undefined);
        assert.deepEqual(JSON.parse(r.text), maskKube(masker, 'pods', list));
        const events = list.items.map((o) => JSON.stringify({ type: 'MODIFIED', object: o }) + '\n').join('');
        const w = await runCuts(watchPlan, Buffer.from(events), cuts);
        assert.equal(w.error, undefined);
        assert.deepEqual(w.text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as unknown), list.items.map((o) => ({ type: 'MODIFIED', object: maskKube(masker, 'pods', o) })));
      }),
      { numRuns: 150 },
    );
  });

  test('ConfigMaps in any byte chunking: data and binaryData through the detectors, bytes elsewhere untouched', async () => {
    const plan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/configmaps'), masker);
    await fc.assert(
      fc.asyncProperty(fc.dictionary(fc.string({ maxLength: 5 }), envValue, { maxKeys: 4 }), fc.array(fc.nat(600), { maxLength: 10 }), async (data, cuts) => {
        const cms = { kind: 'ConfigMapList', items: [{ metadata: { name: 'a', labels: { data: 'x' } }, data, binaryData: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')])) }, { metadata: { name: 'b' }, data: null }] };
        const r = await runCuts(plan, Buffer.from(JSON.stringify(cms)), cuts);
        assert.equal(r.error, undefined);
        assert.deepEqual(JSON.parse(r.text), maskKube(masker, 'configmaps', cms));
      }),
      { numRuns: 100 },
    );
  });

  test('the same bytes as data and as binaryData are masked each as what they are (no cache hit across fields)', async () => {
    const plan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/configmaps'), masker);
    const b64 = Buffer.from('AKIAIOSFODNN7EXAMPLE').toString('base64');
    for (const cm of [
      { kind: 'ConfigMap', metadata: { name: 'x' }, data: { k: b64 }, binaryData: { k: b64 } },
      { kind: 'ConfigMapList', items: [{ metadata: { name: 'x' }, data: { k: b64 } }, { metadata: { name: 'y' }, binaryData: { k: b64 } }] },
    ]) {
      const r = await runCuts(plan, Buffer.from(JSON.stringify(cm)), []);
      assert.equal(r.error, undefined);
      assert.deepEqual(JSON.parse(r.text), maskKube(masker, 'configmaps', cm));
      const bins = [...r.text.matchAll(/"binaryData":\{"k":"([^"]*)"/g)].map((m) => Buffer.from(m[1]!, 'base64').toString());
      assert.equal(bins.length, 1);
      assert.doesNotMatch(bins[0]!, /AKIA/);
    }
  });

  test('bytes outside the masked fields pass as they came (multi-byte characters cut anywhere)', async () => {
    const plan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/pods'), masker);
    const head = Buffer.from('{"kind":"PodList","metadata":{"x":"é日本🔑"},"items":[{"metadata":{"name":"p"},"spec":{"containers":[{"env":');
    const body = Buffer.concat([head, Buffer.from(`[{"name":"T","value":"${GH}"}]}]}}]}`)]);
    for (const cuts of [[36, 37, 38, 40, 42], [35, 39, 41, 43], [80]]) {
      const r = await runCuts(plan, body, cuts);
      assert.equal(r.error, undefined);
      assert.ok(r.raw.subarray(0, head.length).equals(head), 'the bytes before the field are the bytes that came');
      assert.doesNotMatch(r.text, /ghp_c{36}/);
      assert.match(r.text, /"env":\[\{"name":"T","value":"\[REDACTED:/);
    }
  });

  test('pass-through: what arrives in one turn goes out as one write, byte for byte', async () => {
    const plan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/services'), masker);
    assert.equal(plan.mode, 'none');
    const body = Buffer.from(JSON.stringify({ kind: 'ServiceList', items: Array.from({ length: 400 }, (_, i) => ({ metadata: { name: `s${i}`, note: 'ü' } })) }));
    const cuts = Array.from({ length: 200 }, (_, i) => Math.floor((i * body.length) / 200));
    const r = await runCuts(plan, body, cuts);
    assert.equal(r.text, body.toString('utf8'));
    assert.ok(r.writes < 10, `${r.writes} writes for 200 chunks`);
  });

  test('a watch event goes out without waiting for more input', async () => {
    const plan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/pods?watch=1'), masker);
    const src = new PassThrough();
    const got: string[] = [];
    let wrote: () => void = () => undefined;
    const res = new Writable({
      write(c: Buffer, _e, cb) {
        got.push(c.toString());
        wrote();
        cb();
      },
    }) as unknown as Parameters<typeof pipeBody>[1];
    const p = pipeBody({ status: 200, headers: json, body: src, httpVersion: '2' }, res, plan);
    const ev = (n: string) => JSON.stringify({ type: 'ADDED', object: { kind: 'Pod', metadata: { name: n }, spec: { containers: [{ env: [{ name: 'T', value: GH }] }] } } }) + '\n';
    for (const name of ['a', 'b']) {
      const arrived = new Promise<void>((resolve) => (wrote = resolve));
      src.write(ev(name));
      const t0 = Date.now();
      await Promise.race([arrived, new Promise((resolve) => setTimeout(resolve, 2000))]);
      assert.ok(Date.now() - t0 < 1000, 'the event was held back');
      assert.match(got.join(''), new RegExp(`"name":"${name}"`));
    }
    src.end();
    await p;
    assert.doesNotMatch(got.join(''), /ghp_c{36}/);
  });
});

describe('compression of masked responses', () => {
  const secretList = (n: number) =>
    JSON.stringify({ kind: 'SecretList', apiVersion: 'v1', metadata: { resourceVersion: '7' }, items: Array.from({ length: n }, (_, i) => ({ kind: 'Secret', metadata: { name: `s${i}`, namespace: 'default', annotations: { note: `secret number ${i} `.repeat(10) } }, data: { password: Buffer.from(`hunter2-${i}`).toString('base64') } })) });

  async function deferredRun(body: string, chunk = 4096): Promise<{ gzip: boolean | null; raw: Buffer; result: Awaited<ReturnType<typeof pipeBody>> }> {
    const plan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/secrets'), masker);
    const src = new PassThrough();
    const chunks: Buffer[] = [];
    let gzip: boolean | null = null;
    let wroteBeforeHead = false;
    const res = new Writable({
      write(c: Buffer, _e, cb) {
        if (gzip === null) wroteBeforeHead = true;
        chunks.push(Buffer.from(c));
        cb();
      },
    }) as unknown as Parameters<typeof pipeBody>[1];
    const p = pipeBody({ status: 200, headers: { 'content-type': 'application/json' }, body: src, httpVersion: '2' }, res, plan, (g) => (gzip = g));
    const b = Buffer.from(body);
    for (let i = 0; i < b.length; i += chunk) {
      src.write(b.subarray(i, i + chunk));
      await new Promise((r) => setImmediate(r));
    }
    src.end();
    const result = await p;
    assert.ok(!wroteBeforeHead, 'no body byte before the headers');
    return { gzip, raw: Buffer.concat(chunks), result };
  }

  test('Accept-Encoding: gzip admitted unless refused with q=0', () => {
    assert.equal(acceptsGzip('gzip'), true);
    assert.equal(acceptsGzip('deflate, gzip;q=0.5, br'), true);
    assert.equal(acceptsGzip('*'), true);
    assert.equal(acceptsGzip(['br', 'GZIP']), true);
    assert.equal(acceptsGzip('gzip;q=0'), false);
    assert.equal(acceptsGzip('identity'), false);
    assert.equal(acceptsGzip(undefined), false);
    const plan = planResponse(kubeFacts('GET', '/api/v1/namespaces/default/secrets'), masker);
    assert.equal(recompress(plan, { 'accept-encoding': 'gzip' }), true);
    assert.equal(recompress(planResponse(kubeFacts('GET', '/api/v1/namespaces/default/secrets?watch=1'), masker), { 'accept-encoding': 'gzip' }), false, 'watches are never compressed');
    assert.equal(recompress(planResponse(kubeFacts('GET', '/api/v1/namespaces/default/services'), masker), { 'accept-encoding': 'gzip' }), false, 'pass-through keeps the API server encoding');
  });

  test('over 128 KiB: masked, then gzip-compressed; the same bytes as without compression', async () => {
    const body = secretList(600);
    assert.ok(body.length > GZIP_THRESHOLD);
    const r = await deferredRun(body);
    assert.equal(r.gzip, true);
    assert.equal(r.result.encoding, 'gzip');
    const text = gunzipSync(r.raw).toString('utf8');
    const expected = JSON.stringify(maskKube(masker, 'secrets', JSON.parse(body)));
    assert.deepEqual(JSON.parse(text), JSON.parse(expected));
    assert.doesNotMatch(text, /aHVudGVyMi0/, 'no password (base64) left');
    assert.equal(r.result.bytes, Buffer.byteLength(text), 'bytes counts the body before compression');
  });

  test('at most 128 KiB: held until the end, sent uncompressed', async () => {
    const body = secretList(20);
    const r = await deferredRun(body, 100);
    assert.equal(r.gzip, false);
    assert.equal(r.result.encoding, undefined);
    assert.doesNotMatch(r.raw.toString('utf8'), /aHVudGVyMi0/);
    assert.equal((JSON.parse(r.raw.toString('utf8')) as { items: unknown[] }).items.length, 20);
  });

  test('a body that breaks after the compressor started is cut, never completed', async () => {
    const good = secretList(600);
    const broken = good.slice(0, good.length - 5000) + '{"kind":';
    const r = await deferredRun(broken);
    assert.equal(r.gzip, true);
    assert.ok(r.result.error, 'cut with an error');
    assert.doesNotMatch(gunzipSync(r.raw, { finishFlush: constants.Z_SYNC_FLUSH }).toString('utf8'), /aHVudGVyMi0/);
  });
});

describe('Status and kubeconfig', () => {
  test('Status objects name the resource and carry the outcome', () => {
    const st = kubeStatus(403, 'portcullis: no', { facts: kubeFacts('DELETE', '/apis/apps/v1/namespaces/default/deployments/web'), outcome: { code: 'policy_denied', effect: 'deny', rule: 'p.yaml:x', reason: 'no' } });
    assert.deepEqual(
      { kind: st.kind, apiVersion: st.apiVersion, status: st.status, code: st.code, reason: st.reason, name: st.details?.name, group: st.details?.group, k: st.details?.kind },
      { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 403, reason: 'Forbidden', name: 'web', group: 'apps', k: 'deployments' },
    );
    assert.equal(JSON.parse(st.details!.causes![0]!.message).rule, 'p.yaml:x');
    assert.equal(kubeStatus(429, 'held').reason, 'TooManyRequests');
  });

  test('kubeconfig: built with a token or an exec plugin; read back from data or files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-kcfg-'));
    try {
      const ca = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
      const text = buildKubeconfig({ server: 'https://127.0.0.1:6443', ca, identity: 'demo-agent', target: 'demo-cluster', token: 'pcat_x' });
      const doc = YAML.parse(text) as { clusters: { cluster: Record<string, string> }[]; users: { user: Record<string, unknown> }[]; 'current-context': string };
      assert.equal(Buffer.from(doc.clusters[0]!.cluster['certificate-authority-data']!, 'base64').toString(), ca);
      assert.equal(doc.users[0]!.user['token'], 'pcat_x');
      assert.equal(doc['current-context'], 'demo-agent@demo-cluster');
      writeFileSync(join(dir, 'a.kubeconfig'), text);
      assert.deepEqual(readKubeconfig(join(dir, 'a.kubeconfig')), { server: 'https://127.0.0.1:6443', ca, token: 'pcat_x', context: 'demo-agent@demo-cluster' });
      const exec = YAML.parse(buildKubeconfig({ server: 'https://h:1', ca, identity: 'a', target: 't', exec: { command: '/bin/portcullis', args: ['kubeconfig', '--credential'] } })) as { users: { user: { exec: { apiVersion: string; command: string } } }[] };
      assert.equal(exec.users[0]!.user.exec.apiVersion, 'client.authentication.k8s.io/v1');
      writeFileSync(join(dir, 'ca.crt'), ca);
      writeFileSync(join(dir, 'c.crt'), 'CERT');
      writeFileSync(join(dir, 'c.key'), 'KEY');
      writeFileSync(join(dir, 'files.kubeconfig'), 'apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: "https://k:6443", certificate-authority: ca.crt}\nusers:\n- name: u\n  user: {client-certificate: c.crt, client-key: c.key}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n');
      assert.deepEqual(readKubeconfig(join(dir, 'files.kubeconfig')), { server: 'https://k:6443', ca, clientCert: 'CERT', clientKey: 'KEY', context: 'x' });
      writeFileSync(join(dir, 'plugin.kubeconfig'), 'apiVersion: v1\nclusters:\n- name: c\n  cluster: {server: "https://k:6443"}\nusers:\n- name: u\n  user: {exec: {command: gcloud}}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n');
      assert.throws(() => readKubeconfig(join(dir, 'plugin.kubeconfig')), /credential plugins .* are not supported/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('ExecCredential: the token, and the expiry of a JWT', () => {
    const plain = JSON.parse(execCredential('pcat_abc')) as { kind: string; status: { token: string; expirationTimestamp?: string } };
    assert.equal(plain.kind, 'ExecCredential');
    assert.equal(plain.status.token, 'pcat_abc');
    assert.equal(plain.status.expirationTimestamp, undefined);
    const jwt = ['{"alg":"RS256"}', '{"exp":2000000000}', 'sig'].map((p) => Buffer.from(p).toString('base64url')).join('.');
    assert.equal((JSON.parse(execCredential(jwt)) as typeof plain).status.expirationTimestamp, '2033-05-18T03:33:20Z');
  });
});
