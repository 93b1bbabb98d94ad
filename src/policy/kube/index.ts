// HTTP request → Kubernetes request attributes, following the API server's RequestInfo rules
// (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go). Only canonical paths are accepted: a
// path the server (or a mux in front of it) could read differently from us is refused, never
// normalized into something a policy might allow.

import { PortcullisError, type KubeFacts } from '../types.js';
import { decodePathSegments, parseQuery } from './url.js';
import { requiresExactMatch } from './fieldselector.js';
import { isClusterScoped } from './scope.js';

export { parseQuery } from './url.js';
export { isClusterScoped, CLUSTER_SCOPED_RESOURCES } from './scope.js';

/** API prefixes the server serves resources under; `api` is the groupless (core) one. */
const API_PREFIXES = new Set(['api', 'apis']);
const GROUPLESS_API_PREFIXES = new Set(['api']);
/** Path prefixes that set the verb (legacy): /api/v1/watch/..., /api/v1/proxy/... */
const SPECIAL_VERBS = new Set(['proxy', 'watch']);
const SPECIAL_VERBS_NO_SUBRESOURCES = new Set(['proxy']);
/** Subresources of a namespace object (so /namespaces/x/status is not "resource status in x"). */
const NAMESPACE_SUBRESOURCES = new Set(['status', 'finalize']);

const METHOD_VERBS: Record<string, string> = {
  POST: 'create',
  GET: 'get',
  HEAD: 'get',
  PUT: 'update',
  PATCH: 'patch',
  DELETE: 'delete',
};

/**
 * The Kubernetes request attributes of one HTTP request.
 *
 * `path` may carry the query string (`/api/v1/pods?watch=true`); `query` (without `?`) may come
 * separately. Throws `kube_noncanonical_path` for a path that is not in canonical form,
 * `kube_ambiguous_query` when both carry a different query, `kube_bad_method` for a method that is
 * not an HTTP token, and `kube_bad_path` where the API server itself refuses the path
 * (`/api/v1/watch` with nothing after it).
 */
export function kubeFacts(method: string, path: string, query?: string): KubeFacts {
  if (typeof method !== 'string' || !/^[A-Za-z]{1,32}$/.test(method)) {
    throw new PortcullisError('kube_bad_method', `kubernetes request: invalid HTTP method ${JSON.stringify(method)}`, { method });
  }
  if (typeof path !== 'string') {
    throw new PortcullisError('kube_noncanonical_path', 'kubernetes request: path is not a string', { path });
  }
  const upperMethod = method.toUpperCase();

  // Split off the query the path may carry.
  const qIndex = path.indexOf('?');
  const rawPath = qIndex === -1 ? path : path.slice(0, qIndex);
  const pathQuery = qIndex === -1 ? undefined : path.slice(qIndex + 1);
  let separateQuery = query;
  if (separateQuery !== undefined && separateQuery.startsWith('?')) separateQuery = separateQuery.slice(1);
  let rawQuery: string;
  if (pathQuery !== undefined && pathQuery !== '' && separateQuery !== undefined && separateQuery !== '') {
    if (pathQuery !== separateQuery) {
      throw new PortcullisError(
        'kube_ambiguous_query',
        `kubernetes request: the path carries a query (${JSON.stringify(pathQuery)}) and a different query was given separately (${JSON.stringify(separateQuery)})`,
        { path, query },
      );
    }
    rawQuery = pathQuery;
  } else {
    rawQuery = pathQuery !== undefined && pathQuery !== '' ? pathQuery : (separateQuery ?? '');
  }

  const segments = decodePathSegments(rawPath);
  const decodedPath = '/' + segments.join('/');
  const queryMap = parseQuery(rawQuery);

  const facts: KubeFacts = {
    path: decodedPath,
    isResourceRequest: false,
    verb: method.toLowerCase(),
    apiPrefix: '',
    apiGroup: '',
    apiVersion: '',
    namespace: '',
    resource: '',
    subresource: '',
    name: '',
    scope: 'none',
    discovery: false,
    query: queryMap,
  };

  let parts = segments;
  if (parts.length < 3 || !API_PREFIXES.has(parts[0])) {
    facts.discovery = isDiscoveryPath(segments);
    return facts;
  }
  const apiPrefix = parts[0];
  parts = parts.slice(1);
  let apiGroup = '';
  if (!GROUPLESS_API_PREFIXES.has(apiPrefix)) {
    if (parts.length < 3) {
      facts.discovery = isDiscoveryPath(segments);
      return facts;
    }
    apiGroup = parts[0];
    parts = parts.slice(1);
  }

  facts.isResourceRequest = true;
  facts.apiPrefix = apiPrefix;
  facts.apiGroup = apiGroup;
  facts.apiVersion = parts[0];
  parts = parts.slice(1);

  if (SPECIAL_VERBS.has(parts[0])) {
    if (parts.length < 2) {
      throw new PortcullisError(
        'kube_bad_path',
        `kubernetes request: unable to determine kind and namespace from ${JSON.stringify(decodedPath)} (nothing after /${parts[0]})`,
        { path: decodedPath },
      );
    }
    facts.verb = parts[0];
    parts = parts.slice(1);
  } else {
    facts.verb = METHOD_VERBS[upperMethod] ?? '';
  }

  if (parts[0] === 'namespaces') {
    if (parts.length > 1) {
      facts.namespace = parts[1];
      if (parts.length > 2 && !NAMESPACE_SUBRESOURCES.has(parts[2])) parts = parts.slice(2);
    }
  }

  // parts: resource / name / subresource / anything else (not interpreted)
  if (parts.length >= 3 && !SPECIAL_VERBS_NO_SUBRESOURCES.has(facts.verb)) facts.subresource = parts[2];
  if (parts.length >= 2) facts.name = parts[1];
  if (parts.length >= 1) facts.resource = parts[0];

  if (facts.name === '' && facts.verb === 'get') {
    // Any watch value other than 0 / false (case-insensitive) means watch, as the server's
    // ListOptions conversion reads it.
    const watch = queryMap.watch;
    const isWatch = watch !== undefined && watch.length > 0 && !(watch[0] === '0' || watch[0].toLowerCase() === 'false');
    facts.verb = isWatch ? 'watch' : 'list';
    // A list/watch of exactly one object by field selector names it (kubectl get pod x -w).
    const fieldSelector = queryMap.fieldSelector;
    if (fieldSelector !== undefined && fieldSelector.length > 0) {
      const name = requiresExactMatch(fieldSelector[0], 'metadata.name');
      if (name !== undefined && isValidPathSegmentName(name)) facts.name = name;
    }
  }
  if (facts.name === '' && facts.verb === 'delete') facts.verb = 'deletecollection';

  if (facts.resource === 'namespaces') {
    // The namespace object itself is cluster-scoped (the server still reports its name as the
    // request's namespace, as RBAC sees it).
    facts.scope = 'cluster';
  } else if (facts.namespace !== '') {
    facts.scope = 'namespace';
  } else if (isClusterScoped(facts.apiGroup, facts.resource)) {
    facts.scope = 'cluster';
  } else {
    facts.scope = 'all-namespaces';
  }
  return facts;
}

/** Discovery documents: /api, /api/<v>, /apis, /apis/<g>, /apis/<g>/<v>, /version, /openapi/... */
function isDiscoveryPath(segments: string[]): boolean {
  if (segments.length === 0) return false;
  const [first] = segments;
  if (first === 'api') return segments.length <= 2;
  if (first === 'apis') return segments.length <= 3;
  if (first === 'version') return segments.length === 1;
  if (first === 'openapi') return segments.length >= 2;
  return false;
}

/** k8s.io/apimachinery/pkg/api/validation/path.IsValidPathSegmentName. */
function isValidPathSegmentName(name: string): boolean {
  if (name === '.' || name === '..') return false;
  return !name.includes('/') && !name.includes('%');
}
