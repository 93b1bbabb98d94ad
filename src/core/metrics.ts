// Prometheus metrics (prom-client) on a private registry: what `GET /metrics` serves.
//
// Everything is fed from the outside of the hot paths: the core's event bus (sessions, decisions
// with their policy-evaluation time, bytes proxied, policy reloads), the approvals' events (wait
// time), the audit log's I/O (write and fsync latency, by wrapping its AuditIo) and the masking
// module's process-wide counters (read when scraped). Per request the cost is a few counter
// increments and one histogram observation.
import { readdirSync } from 'node:fs';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Protocol } from '../policy/types.js';
import { maskCounts, type MaskCounts } from '../masking/stats.js';
import type { ApprovalRecord } from '../store/types.js';
import { defaultAuditIo, type AuditIo } from './audit.js';
import type { Core } from './core.js';

export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

export interface MetricsOptions {
  /**
   * Also export process/Node.js metrics (CPU, memory, heap, open fds, event-loop lag), all read
   * when scraped. Default true. (prom-client's collectDefaultMetrics is not used: its GC observer
   * costs ~10 % of the decision throughput, see bench/metrics.bench.ts.)
   */
  processMetrics?: boolean;
  version?: string;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly sessionsOpen: Gauge<'protocol'>;
  private readonly sessionsTotal: Counter<'protocol'>;
  private readonly decisions: Counter<'protocol' | 'effect' | 'rule'>;
  private readonly evalSeconds: Histogram<'protocol'>;
  private readonly approvalWait: Histogram<'outcome'>;
  private readonly approvalsPending: Gauge;
  private readonly bytes: Counter<'protocol' | 'direction'>;
  private readonly auditWrite: Histogram<'op'>;
  private readonly policyRules: Gauge;
  private readonly policyInfo: Gauge<'version'>;
  private readonly reloads: Counter<'result'>;
  private readonly ready: Gauge;
  private core: Core | null = null;
  /** Labelled children cached by their label values: no label hashing per request. */
  private readonly decisionChildren = new Map<string, { inc(): void }>();
  private readonly evalChildren = new Map<string, { observe(v: number): void }>();
  private readonly bytesChildren = new Map<string, { inc(v: number): void }>();

  constructor(opts: MetricsOptions = {}) {
    const registers = [this.registry];
    if (opts.processMetrics !== false) processMetrics(registers);
    new Gauge({ name: 'portcullis_build_info', help: 'Portcullis version and Node.js runtime (always 1)', labelNames: ['version', 'node'], registers }).set({ version: opts.version ?? '0.0.0', node: process.versions.node }, 1);
    this.ready = new Gauge({ name: 'portcullis_ready', help: '1 when every listener is up, the policy is loaded and the audit log is writable', registers });
    this.sessionsOpen = new Gauge({ name: 'portcullis_sessions_open', help: 'Live sessions by protocol', labelNames: ['protocol'], registers });
    this.sessionsTotal = new Counter({ name: 'portcullis_sessions_total', help: 'Sessions opened by protocol', labelNames: ['protocol'], registers });
    this.decisions = new Counter({ name: 'portcullis_decisions_total', help: 'Policy decisions by protocol, effect and deciding rule (file:id)', labelNames: ['protocol', 'effect', 'rule'], registers });
    this.evalSeconds = new Histogram({
      name: 'portcullis_policy_eval_seconds',
      help: 'Policy evaluation time of one request (parsing included, audit excluded)',
      labelNames: ['protocol'],
      buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25],
      registers,
    });
    this.approvalWait = new Histogram({
      name: 'portcullis_approval_wait_seconds',
      help: 'Time a held request waited for its approval, by outcome (approved, denied, expired)',
      labelNames: ['outcome'],
      buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600],
      registers,
    });
    this.approvalsPending = new Gauge({ name: 'portcullis_approvals_pending', help: 'Requests held for an approval right now', registers });
    this.bytes = new Counter({ name: 'portcullis_proxied_bytes_total', help: 'Bytes proxied by protocol; direction in = agent to target, out = target to agent', labelNames: ['protocol', 'direction'], registers });
    new Counter({
      name: 'portcullis_masked_values_total',
      help: 'Values masked: column = result values under a column rule, detector = result values a detector changed, text = findings in free text (errors, notices, audit summaries, logs), stream = findings in terminal streams',
      labelNames: ['kind'],
      registers,
      collect() {
        this.reset();
        for (const k of Object.keys(maskCounts) as (keyof MaskCounts)[]) this.inc({ kind: k }, maskCounts[k]);
      },
    });
    this.auditWrite = new Histogram({
      name: 'portcullis_audit_write_seconds',
      help: 'Audit log I/O latency: op=write (one batch of lines), op=fsync (one group commit)',
      labelNames: ['op'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
      registers,
    });
    const coreOf = () => this.core;
    new Gauge({
      name: 'portcullis_audit_last_seq',
      help: 'Sequence number of the last audit event accepted',
      registers,
      collect() {
        const core = coreOf();
        if (core) this.set(core.audit.lastSeq);
      },
    });
    this.policyRules = new Gauge({ name: 'portcullis_policy_rules', help: 'Rules in the loaded policy snapshot', registers });
    this.policyInfo = new Gauge({ name: 'portcullis_policy_info', help: 'The loaded policy version (SHA-256 prefix of its files; always 1)', labelNames: ['version'], registers });
    this.reloads = new Counter({ name: 'portcullis_reloads_total', help: 'Config and policy reloads (SIGHUP) by result', labelNames: ['result'], registers });
  }

  /**
   * Audit I/O that measures every write and fsync (pass as Core.open's `auditIo`). `base` is what
   * it wraps (the real file I/O by default).
   */
  auditIo(base: Partial<AuditIo> = {}): AuditIo {
    const write = base.write ?? defaultAuditIo.write;
    const sync = base.sync ?? defaultAuditIo.sync;
    const w = this.auditWrite.labels('write');
    const f = this.auditWrite.labels('fsync');
    return {
      async write(fh, data) {
        const t0 = performance.now();
        try {
          await write(fh, data);
        } finally {
          w.observe((performance.now() - t0) / 1000);
        }
      },
      async sync(fh) {
        const t0 = performance.now();
        try {
          await sync(fh);
        } finally {
          f.observe((performance.now() - t0) / 1000);
        }
      },
    };
  }

  /** Subscribe to a core's events. Returns the function that unsubscribes. */
  attach(core: Core): () => void {
    this.core = core;
    const ev = core.events;
    const onOpen = (s: { protocol: Protocol }) => {
      this.sessionsOpen.inc({ protocol: s.protocol });
      this.sessionsTotal.inc({ protocol: s.protocol });
    };
    const onClose = (s: { protocol: Protocol }) => this.sessionsOpen.dec({ protocol: s.protocol });
    const onDecision = (d: { protocol: Protocol; decision: { effect: string; rule: string }; evalSeconds: number }) => {
      const key = `${d.protocol}\0${d.decision.effect}\0${d.decision.rule}`;
      let c = this.decisionChildren.get(key);
      if (!c) {
        c = this.decisions.labels(d.protocol, d.decision.effect, d.decision.rule);
        // Rules come from the policy files (bounded), but a reloaded policy renames them: bound the cache.
        if (this.decisionChildren.size > 10_000) this.decisionChildren.clear();
        this.decisionChildren.set(key, c);
      }
      c.inc();
      let h = this.evalChildren.get(d.protocol);
      if (!h) this.evalChildren.set(d.protocol, (h = this.evalSeconds.labels(d.protocol)));
      h.observe(d.evalSeconds);
    };
    const onBytes = (b: { protocol: Protocol; direction: 'in' | 'out'; bytes: number }) => {
      if (b.bytes <= 0) return;
      const key = `${b.protocol}\0${b.direction}`;
      let c = this.bytesChildren.get(key);
      if (!c) this.bytesChildren.set(key, (c = this.bytes.labels(b.protocol, b.direction)));
      c.inc(b.bytes);
    };
    const onPolicy = () => this.policy(core);
    const onReloadOk = () => this.reloads.inc({ result: 'ok' });
    const onReloadFailed = () => this.reloads.inc({ result: 'failed' });
    const onHeld = () => this.approvalsPending.inc();
    const onSettled = (a: ApprovalRecord) => {
      this.approvalsPending.dec();
      if (a.decidedAt !== undefined) this.approvalWait.observe({ outcome: a.state }, Math.max(0, (a.decidedAt - a.createdAt) / 1000));
    };
    ev.on('session.opened', onOpen);
    ev.on('session.closed', onClose);
    ev.on('decision.made', onDecision);
    ev.on('session.bytes', onBytes);
    ev.on('policy.reloaded', onPolicy);
    ev.on('policy.reloaded', onReloadOk);
    ev.on('policy.reload_failed', onReloadFailed);
    core.approvals.on('created', onHeld);
    core.approvals.on('decided', onSettled);
    for (const s of core.listSessions()) onOpen(s);
    this.policy(core);
    return () => {
      ev.off('session.opened', onOpen);
      ev.off('session.closed', onClose);
      ev.off('decision.made', onDecision);
      ev.off('session.bytes', onBytes);
      ev.off('policy.reloaded', onPolicy);
      ev.off('policy.reloaded', onReloadOk);
      ev.off('policy.reload_failed', onReloadFailed);
      core.approvals.off('created', onHeld);
      core.approvals.off('decided', onSettled);
      if (this.core === core) this.core = null;
    };
  }

  /** A reload that failed before the policy was tried (a bad config file). */
  reloadFailed(): void {
    this.reloads.inc({ result: 'failed' });
  }

  setReady(ready: boolean): void {
    this.ready.set(ready ? 1 : 0);
  }

  private policy(core: Core): void {
    this.policyRules.set(core.policy.rules.length);
    this.policyInfo.reset();
    this.policyInfo.set({ version: core.policy.version }, 1);
  }

  /** The Prometheus text exposition. */
  async text(): Promise<string> {
    return this.registry.metrics();
  }
}

/** Process and runtime gauges computed at scrape time only (nothing runs between scrapes). */
function processMetrics(registers: Registry[]): void {
  const startSeconds = Math.round(Date.now() / 1000 - process.uptime());
  new Gauge({ name: 'process_start_time_seconds', help: 'Start time of the process since the Unix epoch in seconds', registers }).set(startSeconds);
  new Counter({
    name: 'process_cpu_seconds_total',
    help: 'Total user and system CPU time spent in seconds',
    labelNames: ['mode'],
    registers,
    collect() {
      const u = process.cpuUsage();
      this.reset();
      this.inc({ mode: 'user' }, u.user / 1e6);
      this.inc({ mode: 'system' }, u.system / 1e6);
    },
  });
  new Gauge({
    name: 'process_resident_memory_bytes',
    help: 'Resident memory size in bytes',
    registers,
    collect() {
      this.set(process.memoryUsage.rss());
    },
  });
  new Gauge({
    name: 'nodejs_heap_bytes',
    help: 'V8 heap: used and total, and memory of C++ objects bound to JavaScript (external)',
    labelNames: ['kind'],
    registers,
    collect() {
      const m = process.memoryUsage();
      this.set({ kind: 'used' }, m.heapUsed);
      this.set({ kind: 'total' }, m.heapTotal);
      this.set({ kind: 'external' }, m.external);
    },
  });
  new Gauge({
    name: 'process_open_fds',
    help: 'Number of open file descriptors',
    registers,
    collect() {
      try {
        this.set(readdirSync('/proc/self/fd').length);
      } catch {
        // not Linux: no sample
      }
    },
  });
  new Gauge({
    name: 'nodejs_eventloop_lag_seconds',
    help: 'Delay of a setImmediate callback at scrape time',
    registers,
    async collect() {
      const t0 = performance.now();
      await new Promise((r) => setImmediate(r));
      this.set((performance.now() - t0) / 1000);
    },
  });
}
