// Process-wide counts of masked values, read by the metrics (src/core/metrics.ts). Plain number
// increments on the masking paths: no allocation, no event per value.
export interface MaskCounts {
  /** Result values replaced by a column rule (PostgreSQL rows, COPY rows). */
  column: number;
  /** Result values in which a detector replaced something (cards, e-mails, … inside cells). */
  detector: number;
  /** Findings replaced in free text (errors, notices, audit summaries, log lines). */
  text: number;
  /** Findings replaced in byte streams (terminal output). */
  stream: number;
}

export const maskCounts: MaskCounts = { column: 0, detector: 0, text: 0, stream: 0 };
