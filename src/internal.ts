/**
 * `wsdrain/internal`: the pieces the project's own tests and benchmark use beyond the public
 * API (option tables, the pool and its batch format, socket helpers). Not part of the public
 * API: no stability promise, may change in any release.
 */

export type { Broker, BrokerStats, Publication, Recovery } from './app/broker.js';
export { answerBroker } from './app/broker.js';
export {
  connectRedisBroker,
  decodeData,
  encodeData,
  RedisBroker,
  type RedisBrokerOptions,
  redisBrokerOptions,
} from './app/redis.js';
export { Sequencer } from './app/sequencer.js';
export * from './drain/budget.js';
export { summarize, sumReports } from './drain/report.js';
export { DEFAULT_MAX_WORK_MS, makeEcho } from './handlers/echo.js';
export * from './options.js';
export { isOurs, msg } from './protocol.js';
export { installSignals } from './signals.js';
export * from './wire.js';
export {
  claimCounter,
  Kind,
  messagesHeader,
  messagesHeaderBytes,
  publishedCounter,
  resultsHeader,
  resultsHeaderBytes,
} from './worker/batch.js';
export {
  kPoolDefaults,
  MessagePool,
  type PoolOptions,
  resolveHandlerSpec,
  threadExecArgv,
} from './worker/pool.js';
export { idempotentEnd, idempotentEnds, startReading, stopReading } from './worker/socket.js';
