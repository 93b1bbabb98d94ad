// The masking engine: detectors, strategies, row masker, stream masker, and the Masker that
// every output path (agent responses, audit, recordings, live view, logs) goes through.

export { Masker, describeDetectors, type MaskerOptions, type TextFinding } from './masker.js';
export { createRowMasker, columnMatches, type ColumnDescriptor, type RowMasker, type RowMaskerOptions, type UninspectablePolicy, type ColumnPlanInfo, DEFAULT_MAX_CELL_BYTES } from './row.js';
export { StreamMasker, createStreamMasker, type StreamMaskerOptions, type CreateStreamMaskerOptions } from './stream.js';
export { DETECTORS, ALL_DETECTORS, DEFAULT_DETECTORS, type Detector, luhnValid, isCardNumber, ibanValid, ssnValid, jwtHeaderValid } from './detectors.js';
export { Hasher, maskString, maskLast4, maskPartial, redactMarker } from './strategies.js';
export { maskedTypeFor, categoryOf, TEXT_OID, type TypeMode } from './pgtypes.js';
export { RuleSet } from './text.js';
export { runMaskTest, type MaskTestFinding } from './cli.js';
export { DETECTOR_IDS, isDetectorId, type DetectorId, type DetectorRule, type Finding, type StrategySpec, type TypeCategory } from './types.js';
export { maskCounts, type MaskCounts } from './stats.js';
