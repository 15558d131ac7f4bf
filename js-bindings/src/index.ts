// liveryid: vehicle detection and re-identification for motorsport photos,
// from a local sidecar process.
export { Engine, type Box, type CallOptions, type Embedding, type ResultOf, type SpawnOptions } from './engine.js';
export { ErrorCode, LiveryidError, SidecarExitedError } from './errors.js';
export type { Wire } from './framing.js';
export * from './protocol.js';
