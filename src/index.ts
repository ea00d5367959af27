/**
 * Programmatic API: the per-worker server and its drain, usable without the cluster.
 */

export * from './errors.js';
export type { Handler, HandlerMessage, HandlerReply } from './handler.js';
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
export { type DrainOptions, type DrainReport, drainServer } from './worker/drain.js';
export { CloseCode, type ServerOptions, WsdrainServer } from './worker/server.js';
