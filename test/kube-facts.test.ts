import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { kubeFacts, parseQuery } from '../src/policy/kube/index.js';
import { PortcullisError, type KubeFacts } from '../src/policy/types.js';

type Expect = Partial<Omit<KubeFacts, 'query'>> & { query?: Record<string, string[]> };

function check(method: string, path: string, expected: Expect, query?: string): KubeFacts {
  const facts = kubeFacts(method, path, query);
  for (const [key, value] of Object.entries(expected)) {
    assert.deepEqual(facts[key as keyof KubeFacts], value, `${method} ${path}: ${key}`);
  }
  return facts;
}

function rejects(method: string, path: string, code = 'kube_noncanonical_path', query?: string): void {
  assert.throws(
    () => kubeFacts(method, path, query),
    (err: unknown) => err instanceof PortcullisError && err.code === code,
    `${method} ${path} must be rejected with ${code}`,
  );
}

describe('resource requests', () => {
  test('core, namespaced, with a name', () => {
    const f = kubeFacts('GET', '/api/v1/namespaces/default/pods/web-1');
    assert.deepEqual(f, {
      path: '/api/v1/namespaces/default/pods/web-1',
      isResourceRequest: true,
      verb: 'get',
      apiPrefix: 'api',
      apiGroup: '',
      apiVersion: 'v1',
      namespace: 'default',
      resource: 'pods',
      subresource: '',
      name: 'web-1',
      scope: 'namespace',
      discovery: false,
      query: {},
    });
  });

  test('core, namespaced list', () => {
    check('GET', '/api/v1/namespaces/default/pods', { verb: 'list', namespace: 'default', resource: 'pods', name: '', scope: 'namespace' });
  });

  test('grouped: apps/v1 deployments', () => {
    check('GET', '/apis/apps/v1/namespaces/prod/deployments/api', {
      isResourceRequest: true,
      apiPrefix: 'apis',
      apiGroup: 'apps',
      apiVersion: 'v1',
      namespace: 'prod',
      resource: 'deployments',
      name: 'api',
      verb: 'get',
      scope: 'namespace',
    });
    check('POST', '/apis/apps/v1/namespaces/prod/deployments', { verb: 'create', resource: 'deployments', name: '' });
    check('PUT', '/apis/apps/v1/namespaces/prod/deployments/api', { verb: 'update', name: 'api' });
  });

  test('cluster-scoped: nodes', () => {
    check('GET', '/api/v1/nodes', { verb: 'list', resource: 'nodes', namespace: '', scope: 'cluster' });
    check('GET', '/api/v1/nodes/node-1', { verb: 'get', resource: 'nodes', name: 'node-1', scope: 'cluster' });
    check('GET', '/apis/rbac.authorization.k8s.io/v1/clusterroles/admin', {
      apiGroup: 'rbac.authorization.k8s.io',
      resource: 'clusterroles',
      name: 'admin',
      scope: 'cluster',
    });
  });

  test('cluster-scoped: namespaces and namespaces/<name>', () => {
    check('GET', '/api/v1/namespaces', { verb: 'list', resource: 'namespaces', name: '', namespace: '', scope: 'cluster' });
    // As the API server reports it, the namespace of a namespace object request is its name.
    check('GET', '/api/v1/namespaces/foo', { verb: 'get', resource: 'namespaces', name: 'foo', namespace: 'foo', scope: 'cluster' });
    check('DELETE', '/api/v1/namespaces/kube-system', { verb: 'delete', resource: 'namespaces', name: 'kube-system', namespace: 'kube-system' });
    check('PUT', '/api/v1/namespaces/foo/finalize', { verb: 'update', resource: 'namespaces', name: 'foo', subresource: 'finalize' });
    check('GET', '/api/v1/namespaces/foo/status', { verb: 'get', resource: 'namespaces', name: 'foo', subresource: 'status' });
  });

  test('a cluster-scoped resource of another group with the same name is not cluster-scoped', () => {
    check('GET', '/apis/example.com/v1/nodes', { resource: 'nodes', apiGroup: 'example.com', scope: 'all-namespaces' });
  });

  test('subresources', () => {
    check('GET', '/api/v1/namespaces/default/pods/web-1/log', { verb: 'get', resource: 'pods', name: 'web-1', subresource: 'log' });
    check('GET', '/api/v1/namespaces/default/pods/web-1/log?container=app&follow=true', {
      subresource: 'log',
      query: { container: ['app'], follow: ['true'] },
    });
    check('PUT', '/api/v1/namespaces/default/pods/web-1/status', { verb: 'update', subresource: 'status' });
    check('PATCH', '/apis/apps/v1/namespaces/default/deployments/api/scale', {
      verb: 'patch',
      apiGroup: 'apps',
      resource: 'deployments',
      name: 'api',
      subresource: 'scale',
    });
    check('GET', '/apis/apps/v1/namespaces/default/deployments/api/scale', { verb: 'get', subresource: 'scale' });
  });

  test('pods/exec with command in the query (POST and the websocket GET)', () => {
    const q = 'command=sh&command=-c&command=echo+hi%3B+id&container=app&stdin=true&stdout=true&tty=false';
    const f = check('POST', `/api/v1/namespaces/default/pods/web-1/exec?${q}`, {
      verb: 'create',
      resource: 'pods',
      name: 'web-1',
      subresource: 'exec',
      namespace: 'default',
    });
    assert.deepEqual(f.query.command, ['sh', '-c', 'echo hi; id']);
    assert.deepEqual(f.query.container, ['app']);
    // kubectl >= 1.30 opens exec as a websocket upgrade: a GET, still subresource exec.
    check('GET', `/api/v1/namespaces/default/pods/web-1/exec?${q}`, { verb: 'get', subresource: 'exec', name: 'web-1' });
    check('POST', '/api/v1/namespaces/default/pods/web-1/attach?stdin=true', { verb: 'create', subresource: 'attach' });
    check('POST', '/api/v1/namespaces/default/pods/web-1/portforward?ports=8080', { verb: 'create', subresource: 'portforward' });
  });

  test('parts after the subresource are kept in the path but not interpreted', () => {
    check('GET', '/api/v1/namespaces/default/pods/web-1/proxy/metrics/x', {
      verb: 'get',
      resource: 'pods',
      name: 'web-1',
      subresource: 'proxy',
      path: '/api/v1/namespaces/default/pods/web-1/proxy/metrics/x',
    });
  });

  test('watch via the query', () => {
    check('GET', '/api/v1/namespaces/default/pods?watch=true', { verb: 'watch', name: '' });
    check('GET', '/api/v1/namespaces/default/pods?watch=1&resourceVersion=10', { verb: 'watch' });
    check('GET', '/api/v1/namespaces/default/pods?watch=false', { verb: 'list' });
    check('GET', '/api/v1/namespaces/default/pods?watch=FALSE', { verb: 'list' });
    check('GET', '/api/v1/namespaces/default/pods?watch=0', { verb: 'list' });
    // The server reads any other value, even an empty one, as true.
    check('GET', '/api/v1/namespaces/default/pods?watch', { verb: 'watch' });
    // Only the first value counts.
    check('GET', '/api/v1/namespaces/default/pods?watch=0&watch=1', { verb: 'list' });
    // watch on a named get is still a get (the server ignores it there).
    check('GET', '/api/v1/namespaces/default/pods/web-1?watch=true', { verb: 'get', name: 'web-1' });
  });

  test('watch of one object by field selector names it', () => {
    check('GET', '/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-1&watch=true', { verb: 'watch', name: 'web-1' });
    check('GET', '/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3D%3Dweb-1%2Cstatus.phase%3DRunning', { verb: 'list', name: 'web-1' });
    check('GET', '/api/v1/namespaces/default/pods?fieldSelector=metadata.name%21%3Dweb-1', { verb: 'list', name: '' });
    check('GET', '/api/v1/namespaces/default/pods?fieldSelector=status.phase%3DRunning', { verb: 'list', name: '' });
    check('GET', '/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3D..', { verb: 'list', name: '' });
  });

  test('watch via the legacy /watch/ path prefix', () => {
    check('GET', '/api/v1/watch/namespaces/default/pods', {
      verb: 'watch',
      namespace: 'default',
      resource: 'pods',
      name: '',
      scope: 'namespace',
      isResourceRequest: true,
    });
    check('GET', '/api/v1/watch/namespaces/default/pods/web-1', { verb: 'watch', name: 'web-1' });
    check('GET', '/api/v1/watch/pods', { verb: 'watch', resource: 'pods', scope: 'all-namespaces' });
    check('GET', '/apis/apps/v1/watch/namespaces/default/deployments', { verb: 'watch', apiGroup: 'apps', resource: 'deployments' });
    rejects('GET', '/api/v1/watch', 'kube_bad_path');
  });

  test('proxy path prefix takes no subresource', () => {
    check('GET', '/api/v1/proxy/namespaces/default/pods/web-1/metrics', {
      verb: 'proxy',
      namespace: 'default',
      resource: 'pods',
      name: 'web-1',
      subresource: '',
    });
    check('GET', '/api/v1/proxy/nodes/node-1', { verb: 'proxy', resource: 'nodes', name: 'node-1', scope: 'cluster' });
  });

  test('list across all namespaces (kubectl get secrets -A)', () => {
    check('GET', '/api/v1/secrets', { verb: 'list', resource: 'secrets', namespace: '', scope: 'all-namespaces' });
    check('GET', '/apis/apps/v1/deployments?limit=500', { verb: 'list', resource: 'deployments', scope: 'all-namespaces', query: { limit: ['500'] } });
    check('GET', '/api/v1/pods?watch=true', { verb: 'watch', scope: 'all-namespaces' });
  });

  test('delete and deletecollection', () => {
    check('DELETE', '/api/v1/namespaces/default/pods/web-1', { verb: 'delete', name: 'web-1' });
    check('DELETE', '/api/v1/namespaces/default/pods', { verb: 'deletecollection', name: '' });
    check('DELETE', '/api/v1/namespaces/default/pods?labelSelector=app%3Dweb', { verb: 'deletecollection', query: { labelSelector: ['app=web'] } });
    check('DELETE', '/api/v1/nodes', { verb: 'deletecollection', scope: 'cluster' });
  });

  test('patch', () => {
    check('PATCH', '/api/v1/namespaces/default/configmaps/cfg', { verb: 'patch', resource: 'configmaps', name: 'cfg' });
    check('patch', '/api/v1/namespaces/default/configmaps/cfg', { verb: 'patch' });
  });

  test('HEAD is get; an unknown method on a resource has no verb', () => {
    check('HEAD', '/api/v1/namespaces/default/pods/web-1', { verb: 'get' });
    check('HEAD', '/api/v1/namespaces/default/pods', { verb: 'list' });
    check('OPTIONS', '/api/v1/namespaces/default/pods', { verb: '', isResourceRequest: true });
  });

  test('percent-encoded names are decoded once, as the server does', () => {
    check('GET', '/api/v1/namespaces/default/configmaps/a%3Ab', { name: 'a:b', path: '/api/v1/namespaces/default/configmaps/a:b' });
    check('GET', '/api/v1/namespaces/d%65fault/pods', { namespace: 'default' });
    check('GET', '/api/v1/namespaces/default/configmaps/a%252fb', { name: 'a%2fb' });
  });
});

describe('non-resource and discovery URLs', () => {
  const cases: [string, string, boolean][] = [
    ['GET', '/api', true],
    ['GET', '/apis', true],
    ['GET', '/api/v1', true],
    ['GET', '/apis/apps', true],
    ['GET', '/apis/apps/v1', true],
    ['GET', '/version', true],
    ['GET', '/openapi/v2', true],
    ['GET', '/openapi/v3', true],
    ['GET', '/openapi/v3/apis/apps/v1', true],
    ['GET', '/healthz', false],
    ['GET', '/livez', false],
    ['GET', '/metrics', false],
    ['GET', '/', false],
    ['GET', '/logs/kube-apiserver.log', false],
  ];
  for (const [method, path, discovery] of cases) {
    test(`${method} ${path}`, () => {
      check(method, path, {
        isResourceRequest: false,
        verb: 'get',
        apiPrefix: '',
        apiGroup: '',
        resource: '',
        namespace: '',
        scope: 'none',
        discovery,
        path,
      });
    });
  }

  test('verb is the lower-cased method', () => {
    check('POST', '/apis/apps/v1', { verb: 'post', isResourceRequest: false, discovery: true });
    check('PUT', '/metrics', { verb: 'put', isResourceRequest: false });
  });

  test('openapi with a query', () => {
    check('GET', '/openapi/v3/apis/apps/v1?hash=ABC123', { discovery: true, query: { hash: ['ABC123'] }, path: '/openapi/v3/apis/apps/v1' });
  });
});

describe('non-canonical paths are rejected, never normalized', () => {
  const bad = [
    '/api/v1/namespaces/default/pods/../secrets',
    '/api/v1/namespaces/default/../kube-system/secrets',
    '/api/v1/namespaces/default/./pods',
    '/api/v1/namespaces/default/pods/.',
    '/api/v1/namespaces/default/pods/..',
    '/api/v1/namespaces/default/%2e%2e/secrets',
    '/api/v1/namespaces/default/%2E/pods',
    '/api/v1//namespaces/default/pods',
    '//api/v1/pods',
    '/api/v1/namespaces/default/pods/',
    '/api/v1/namespaces/default%2fkube-system/pods',
    '/api/v1/namespaces/default%2Fkube-system/pods',
    '/api/v1/namespaces/default%5ckube-system/pods',
    '/api/v1/namespaces/default%5Ckube-system/pods',
    '/api/v1/namespaces/default\\pods',
    '/api/v1/namespaces/default/pods/a\u0000b',
    '/api/v1/namespaces/default/pods/a%00b',
    '/api/v1/namespaces/default/pods/a%0ab',
    'api/v1/pods',
    '',
    'https://kube.example/api/v1/pods',
    '/api/v1/namespaces/default/pods/%zz',
    '/api/v1/namespaces/default/pods/%e',
    '/api/v1/namespaces/default/pods/%ff',
    '/api/v1/namespaces/default/pods/a b',
    '/api/v1/namespaces/default/pods/a#b',
    '/api/v1/namespaces/default/pods/\u00e9',
  ];
  for (const path of bad) {
    test(JSON.stringify(path), () => rejects('GET', path));
  }

  test('the query may hold anything (it is not part of the path)', () => {
    check('GET', '/api/v1/namespaces/default/pods?labelSelector=a%2Fb&x=..', { verb: 'list', query: { labelSelector: ['a/b'], x: ['..'] } });
  });

  test('a malformed method is rejected', () => {
    rejects('GE T', '/api/v1/pods', 'kube_bad_method');
    rejects('', '/api/v1/pods', 'kube_bad_method');
  });
});

describe('query in the path vs given separately', () => {
  test('the same facts either way', () => {
    const inPath = kubeFacts('GET', '/api/v1/namespaces/default/pods?watch=true&labelSelector=app%3Dweb');
    const separate = kubeFacts('GET', '/api/v1/namespaces/default/pods', 'watch=true&labelSelector=app%3Dweb');
    assert.deepEqual(inPath, separate);
    assert.equal(inPath.verb, 'watch');
    assert.equal(inPath.path, '/api/v1/namespaces/default/pods');
    assert.deepEqual(inPath.query, { watch: ['true'], labelSelector: ['app=web'] });
  });

  test('a separate query with a leading ? is accepted', () => {
    check('GET', '/api/v1/pods', { verb: 'watch' }, '?watch=1');
  });

  test('an empty query in the path defers to the separate one', () => {
    check('GET', '/api/v1/pods?', { verb: 'watch' }, 'watch=1');
  });

  test('the same query in both is accepted; different ones are refused', () => {
    check('GET', '/api/v1/pods?watch=1', { verb: 'watch' }, 'watch=1');
    rejects('GET', '/api/v1/pods?watch=0', 'kube_ambiguous_query', 'watch=1');
  });
});

describe('query parsing (Go net/url semantics)', () => {
  test('repeated keys, + as space, percent escapes, empty values', () => {
    assert.deepEqual(parseQuery('a=1&a=2&b=x+y&c=%41%42&d&e='), { a: ['1', '2'], b: ['x y'], c: ['AB'], d: [''], e: [''] });
  });

  test('pairs with a semicolon or a malformed escape are dropped', () => {
    assert.deepEqual(parseQuery('a=1;b=2&c=3&d=%zz&e=%4'), { c: ['3'] });
  });

  test('__proto__ is an ordinary key', () => {
    const q = parseQuery('__proto__=x&constructor=y');
    assert.deepEqual(Object.keys(q), ['__proto__', 'constructor']);
    assert.deepEqual(q.__proto__, ['x']);
    assert.equal(Object.getPrototypeOf(q), Object.prototype);
  });

  test('empty', () => {
    assert.deepEqual(parseQuery(''), {});
    assert.deepEqual(parseQuery('&&'), {});
  });
});
