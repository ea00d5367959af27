/**
 * The application API: what an app module (`--app`) exports and what its hooks receive.
 *
 * ```js
 * // app.mjs
 * import { createApp, reject } from 'wsdrain';
 * export default createApp({
 *   upgrade(req) {                        // before the handshake: who is this?
 *     const user = req.query.get('user');
 *     return user ? { user } : reject(401, 'who are you?');
 *   },
 *   open(conn) { conn.subscribe('lobby'); },
 *   message(conn, data) { conn.publish('lobby', { from: conn.context.user, text: data }); },
 * });
 * ```
 *
 * Every hook is optional and may be async; each call is bounded (--hook-timeout, the
 * handshake timeout for `upgrade`, the drain budget for `drain`) and isolated: a hook that
 * throws or hangs fails its own request or connection (500/503 at the upgrade, 1011 after),
 * never the worker, and the log names the hook.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Logger } from '../log.js';
import type { StreamPosition } from '../wire.js';

/** What a publication may carry: text, bytes, or any JSON value. */
export type PublishData = string | Uint8Array | null | boolean | number | object;

/** Where a publication went in its topic's stream. */
export type PublishAck = StreamPosition & { topic: string };

/** The upgrade request, as the `upgrade` hook sees it. */
export interface UpgradeRequest {
  /** Path and query, as sent. */
  url: string;
  /** The query of `url`. */
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  /** The `Cookie` header, parsed. */
  cookies: Record<string, string>;
  /** Subprotocols the client offered (`wsdrain.v1` is wsdrain's own). */
  protocols: string[];
  /** The client's address. */
  ip: string;
}

const kRejection = Symbol.for('wsdrain.rejection');

/** What `upgrade` returns to refuse a client (see {@link reject}). */
export interface Rejection {
  readonly [kRejection]: true;
  status: number;
  message: string;
  headers: Record<string, string>;
}

/**
 * Refuses an upgrade with an HTTP status (401, 403, 429, ...), before the handshake
 * completes. Return it from the `upgrade` hook.
 */
export function reject(
  status: number,
  message = '',
  headers: Record<string, string> = {},
): Rejection {
  if (!Number.isInteger(status) || status < 400 || status > 599) {
    throw new RangeError(
      `reject(): status must be an HTTP error status (400 to 599), got ${status}`,
    );
  }
  return { [kRejection]: true, status, message, headers };
}

/** Whether `v` is a {@link Rejection} (from any copy of wsdrain). */
export function isRejection(v: unknown): v is Rejection {
  return typeof v === 'object' && v !== null && (v as Record<symbol, unknown>)[kRejection] === true;
}

/** One client connection, in the hooks. */
export interface Conn<Context = unknown> {
  /** Unique in the cluster: the worker and a counter (`"w2-1041"`). */
  readonly id: string;
  /** What `upgrade` returned (undefined without an `upgrade` hook). */
  readonly context: Context;
  /** `wsdrain.v1` when the client speaks wsdrain's subprotocol, '' for plain messages. */
  readonly protocol: string;
  /** The topics it is subscribed to. */
  readonly topics: ReadonlySet<string>;
  /** Whether messages can still be sent (open, no close frame sent yet). */
  readonly open: boolean;
  /**
   * Sends a message: text, bytes, or a JSON value (sent as its JSON text to plain clients,
   * as `{"type":"message","data":...}` to wsdrain.v1 clients). False when the connection is
   * closing. Counts against --max-buffered like every byte sent.
   */
  send(data: PublishData): boolean;
  /**
   * Subscribes it to `topic` (no `canSubscribe` check: the app decides). Resolves once the
   * subscription is live. A wsdrain.v1 client is told (`subscribed`).
   */
  subscribe(topic: string): Promise<void>;
  /** Ends a subscription. */
  unsubscribe(topic: string): void;
  /** Publishes to every subscriber of `topic`, on every worker (no `canPublish` check). */
  publish(topic: string, data: PublishData): Promise<PublishAck>;
  /**
   * Runs `data` through the pool handler (`--handler`, or the app's `handler`), in this
   * connection's order, with the pool's backpressure; a failure closes it with 1011; a drain
   * waits for it.
   */
  run(data: string | Uint8Array): Promise<unknown>;
  /** Starts the closing handshake (default 1000). */
  close(code?: number, reason?: string): void;
}

/** What every hook receives last: the cluster around it. */
export interface AppApi {
  /** Publishes to every subscriber of `topic`, on every worker. */
  publish(topic: string, data: PublishData): Promise<PublishAck>;
  /** Runs `data` through the pool handler, outside any connection's order. */
  run(data: string | Uint8Array): Promise<unknown>;
  /** The worker's logger (pino). */
  log: Logger;
  /** The cluster worker id; 0 in a single process (`--workers 0`). */
  worker: number;
}

/** What the `primary` hook receives: the primary has no pool and no connections. */
export interface PrimaryApi {
  publish(topic: string, data: PublishData): Promise<PublishAck>;
  log: Logger;
}

/** Why a connection is being drained. */
export type DrainKind = 'shutdown' | 'restart';

/** An application: every hook optional, every hook may be async. */
export interface WsdrainApp<Context = unknown> {
  /** Once in the primary (cluster) or the single process, before workers start. */
  primary?(api: PrimaryApi): void | Promise<void>;
  /** Once in each worker, before it listens. */
  setup?(api: AppApi): void | Promise<void>;
  /**
   * Before the handshake: return the connection's context (any value), or `reject(status)`.
   * Bounded by --handshake-timeout (503 past it); a throw is a 500.
   */
  upgrade?(req: UpgradeRequest, api: AppApi): Context | Rejection | Promise<Context | Rejection>;
  /** The connection is open. */
  open?(conn: Conn<Context>, api: AppApi): void | Promise<void>;
  /**
   * A message from the client (for wsdrain.v1 clients: the `data` of a `message`, or a binary
   * frame). Calls for one connection run one at a time, in order. Without this hook messages
   * go to the pool handler and its replies are sent back, as without an app.
   */
  message?(
    conn: Conn<Context>,
    data: unknown,
    isBinary: boolean,
    api: AppApi,
  ): void | Promise<void>;
  /** The connection closed (its subscriptions are gone already). */
  close?(conn: Conn<Context>, code: number, reason: string, api: AppApi): void | Promise<void>;
  /**
   * A drain is about to send this connection its close frame: save state, say goodbye
   * (`conn.send` still works). Bounded by the drain's last call.
   */
  drain?(conn: Conn<Context>, kind: DrainKind, api: AppApi): void | Promise<void>;
  /** May this wsdrain.v1 client subscribe to `topic`? Without the hook: yes. */
  canSubscribe?(conn: Conn<Context>, topic: string, api: AppApi): boolean | Promise<boolean>;
  /** May this wsdrain.v1 client publish to `topic`? Without the hook: no. */
  canPublish?(conn: Conn<Context>, topic: string, api: AppApi): boolean | Promise<boolean>;
  /**
   * The pool handler of this app (instead of --handler): a module path relative to the app
   * module, run in the worker threads by `conn.run()` and for messages without a `message`
   * hook.
   */
  handler?: string;
}

/** Types an app (an identity function: it returns what it is given). */
export function createApp<Context = unknown>(app: WsdrainApp<Context>): WsdrainApp<Context> {
  return app;
}
