/**
 * Programmatic API: the per-worker server and its drain, usable without the cluster.
 */

export {
  type AppApi,
  type Conn,
  createApp,
  type DrainKind as AppDrainKind,
  type PrimaryApi,
  type PublishAck,
  type PublishData,
  type Rejection,
  reject,
  type UpgradeRequest,
  type WsdrainApp,
} from './app/types.js';
export { CloseCode } from './codes.js';
export type { ClusterReport, DrainReport, WorkerOutcome } from './drain/report.js';
export * from './errors.js';
export type {
  Handler,
  HandlerMessage,
  HandlerPublication,
  HandlerReply,
  HandlerResult,
} from './handler.js';
export {
  type DrainKind,
  formatHint,
  hintReason,
  MAX_CLOSE_REASON_BYTES,
  parseHint,
  type ReconnectHint,
} from './hint.js';
export {
  kDefaultOptions,
  resolveOptions,
  validateOptions,
  type WsdrainOptions,
} from './options.js';
export { type StartedAs, type StartOptions, start } from './start.js';
export { PROTOCOL_V1, type StreamPosition } from './wire.js';
export { type DrainOptions, drainServer } from './worker/drain.js';
export {
  type ServerOptions,
  type ServerState,
  type ServerStats,
  WsdrainServer,
} from './worker/server.js';
