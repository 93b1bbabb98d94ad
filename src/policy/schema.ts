// JSON schema of a policy file (policies/*.yaml) and of a policy test file (policies/tests/*.yaml).
// Every key is known: unknown keys are errors that name file:line:field.

const strOrList = { anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 }] };
const boolean = { type: 'boolean' };

const SQL_ACTIONS = [
  'read', 'insert', 'update', 'delete', 'merge', 'truncate', 'create', 'drop', 'alter', 'grant', 'revoke', 'comment',
  'reindex', 'cluster', 'vacuum', 'analyze', 'refresh', 'call', 'copy', 'set', 'reset', 'show', 'transaction', 'do',
  'load', 'set_role', 'session_authorization', 'alter_system', 'prepare', 'execute', 'deallocate', 'declare', 'fetch',
  'close', 'listen', 'notify', 'unlisten', 'lock', 'discard', 'checkpoint', 'utility',
];
const actionList = {
  anyOf: [
    { type: 'string', enum: SQL_ACTIONS },
    { type: 'array', items: { type: 'string', enum: SQL_ACTIONS }, minItems: 1 },
  ],
};
const enumOrList = (values: string[]) => ({
  anyOf: [{ type: 'string', enum: values }, { type: 'array', items: { type: 'string', enum: values }, minItems: 1 }],
});

export const when = {
  type: 'object',
  additionalProperties: false,
  properties: {
    protocol: enumOrList(['postgres', 'ssh', 'kubernetes']),
    targets: strOrList,
    subjects: strOrList,
    groups: strOrList,
    issuers: strOrList,
    auth_methods: strOrList,
    time: {
      type: 'object',
      additionalProperties: false,
      properties: {
        days: { type: 'array', items: { type: 'string', enum: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] }, minItems: 1 },
        hours: { type: 'string', pattern: '^([01]\\d|2[0-3]):[0-5]\\d-([01]\\d|2[0-4]):[0-5]\\d$' },
        tz: { type: 'string', minLength: 1 },
      },
    },
  },
};

const sql = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    action: actionList,
    command: strOrList,
    relation: strOrList,
    schema: strOrList,
    not_schema: strOrList,
    has_relation: boolean,
    where: boolean,
    function: strOrList,
    object: strOrList,
    copy_target: enumOrList(['program', 'file', 'stdio']),
    setting: strOrList,
    not_setting: strOrList,
    transaction: strOrList,
    nested: strOrList,
  },
};

const shell = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    program: strOrList,
    dynamic: boolean,
    flags_any: strOrList,
    args_all: strOrList,
    args_any: strOrList,
    stdin: enumOrList(['pipe', 'heredoc', 'herestring', 'file']),
    piped_from: strOrList,
    wrapped_by: strOrList,
  },
};

const kube = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    verbs: strOrList,
    api_groups: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' }, minItems: 1 }] },
    resources: strOrList,
    namespaces: strOrList,
    not_namespaces: strOrList,
    names: strOrList,
    scope: enumOrList(['cluster', 'namespace', 'all-namespaces', 'none']),
    discovery: boolean,
    resource_request: boolean,
    paths: strOrList,
  },
};

const forward = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    direction: enumOrList(['local', 'remote']),
    hosts: strOrList,
    ports: { type: 'array', items: { anyOf: [{ type: 'integer', minimum: 1, maximum: 65535 }, { type: 'string', pattern: '^\\d{1,5}-\\d{1,5}$' }] }, minItems: 1 },
  },
};

export const maskSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['strategy'],
  properties: {
    column: { type: 'string', pattern: '^[^.\\s]+\\.[^.\\s]+\\.[^.\\s]+$' },
    detector: { type: 'string', minLength: 1 },
    resource: { type: 'string', minLength: 1 },
    field: { type: 'string', minLength: 1 },
    strategy: { type: 'string', enum: ['redact', 'partial', 'last4', 'hash', 'null', 'fixed'] },
    keep_first: { type: 'integer', minimum: 0, maximum: 64 },
    keep_last: { type: 'integer', minimum: 0, maximum: 64 },
    value: { type: 'string' },
  },
};

const mode = { type: 'string', enum: ['enforce', 'shadow'] };
const durationStr = { type: 'string', pattern: '^\\d+(ms|s|m|h|d)$' };

/** Damage budgets (src/policy/budgets.ts): counters per identity or group and target. */
export const BUDGET_LIMITS = ['rows_deleted', 'rows_written', 'statements_per_minute', 'bytes_returned', 'session_minutes'] as const;
const budget = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'limits'],
  properties: {
    id: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]*$' },
    description: { type: 'string' },
    when,
    per: { type: 'string', enum: ['day', 'session'] },
    by: { type: 'string', enum: ['identity', 'group'] },
    limits: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      properties: Object.fromEntries(BUDGET_LIMITS.map((k) => [k, { type: 'integer', minimum: 0 }])),
    },
    effect: { type: 'string', enum: ['deny', 'review'] },
    mode,
    reason: { type: 'string', minLength: 1 },
    remedy: { type: 'string', minLength: 1 },
  },
};

export const policyFileSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['rules'],
  properties: {
    version: { type: 'integer', enum: [1] },
    description: { type: 'string' },
    /** shadow: every rule and budget of the file is evaluated and audited but changes nothing. */
    mode,
    scope: when,
    budgets: { type: 'array', items: budget },
    rules: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['id', 'effect'],
        properties: {
          id: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]*$' },
          effect: { type: 'string', enum: ['allow', 'deny', 'review', 'mask'] },
          description: { type: 'string' },
          reason: { type: 'string', minLength: 1 },
          remedy: { type: 'string', minLength: 1 },
          when,
          sql,
          shell,
          kube,
          forward,
          unparseable: { type: 'boolean', enum: [true] },
          masks: { type: 'array', items: maskSchema, minItems: 1 },
          mode,
          // review rules: the agent must state a reason; how many distinct approvers; how long to wait.
          require_reason: {
            anyOf: [
              { type: 'boolean' },
              { type: 'object', additionalProperties: false, required: ['min_length'], properties: { min_length: { type: 'integer', minimum: 1, maximum: 1000 } } },
            ],
          },
          approvers: { type: 'integer', minimum: 1, maximum: 5 },
          approval_timeout: durationStr,
        },
      },
    },
  },
};

const identity = {
  type: 'object',
  additionalProperties: false,
  required: ['subject'],
  properties: {
    subject: { type: 'string', minLength: 1 },
    groups: { type: 'array', items: { type: 'string' } },
    issuer: { type: 'string' },
    authMethod: { type: 'string' },
    expiresAt: { type: 'number' },
  },
};

/** A request as accepted by `policy eval` (JSON lines) and in policy test files. */
export const requestSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['protocol', 'identity', 'target'],
  properties: {
    protocol: { type: 'string', enum: ['postgres', 'ssh', 'kubernetes'] },
    identity,
    target: { type: 'string', minLength: 1 },
    sql: { type: 'string' },
    searchPath: { type: 'array', items: { type: 'string' } },
    command: { type: 'string' },
    http: {
      type: 'object',
      additionalProperties: false,
      required: ['method', 'path'],
      properties: { method: { type: 'string', minLength: 1 }, path: { type: 'string' }, query: { type: 'string' } },
    },
    forward: {
      type: 'object',
      additionalProperties: false,
      required: ['direction', 'host', 'port'],
      properties: { direction: { type: 'string', enum: ['local', 'remote'] }, host: { type: 'string' }, port: { type: 'integer', minimum: 0, maximum: 65535 } },
    },
    time: { anyOf: [{ type: 'number' }, { type: 'string' }] },
    reason: { type: 'string' },
  },
};

export const policyTestFileSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['tests'],
  properties: {
    description: { type: 'string' },
    defaults: {
      type: 'object',
      additionalProperties: false,
      properties: {
        protocol: { type: 'string', enum: ['postgres', 'ssh', 'kubernetes'] },
        identity,
        target: { type: 'string' },
      },
    },
    tests: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'expect'],
        properties: {
          name: { type: 'string', minLength: 1 },
          // A partial request: defaults fill protocol / identity / target.
          request: { type: 'object' },
          sql: { type: 'string' },
          command: { type: 'string' },
          http: { type: 'object' },
          forward: { type: 'object' },
          identity,
          target: { type: 'string' },
          searchPath: { type: 'array', items: { type: 'string' } },
          reason: { type: 'string' },
          expect: {
            type: 'object',
            additionalProperties: false,
            required: ['effect'],
            properties: {
              effect: { type: 'string', enum: ['allow', 'deny', 'review'] },
              rule: { type: 'string' },
              reason: { type: 'string' },
              masks: { type: 'array', items: { type: 'string' } },
              code: { type: 'string', enum: ['unparseable', 'reason_required'] },
            },
          },
        },
      },
    },
  },
};
