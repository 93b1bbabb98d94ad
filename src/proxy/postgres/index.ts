// PostgreSQL proxy: wire protocol, agent authentication, statements decided by the core before
// they are forwarded, rows masked in flight, sessions recorded. See server.ts / session.ts.
export { startPostgresProxy, CORE_STATEMENT_EVENT, type PostgresProxy, type PostgresProxyOptions, type PostgresProxyEvents } from './server.js';
export { type PgTargetConfig, type PgTargetTls, connectUpstream, sendCancel, UpstreamError } from './upstream.js';
export { readTranscript, type StatementEntry, type TranscriptLine, type TranscriptHeader, type TranscriptEnd } from './transcript.js';
export { PgProtocolError } from './codec.js';
