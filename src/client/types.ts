/**
 * The shapes `wsdrain/client` takes and hands out: its options, the URL sources, the
 * WebSocket it drives, and the payload of every event. The client itself is in ./index.ts.
 */
import type { ReconnectHint } from '../hint.js';
import type { PROTOCOL_V1, StreamPosition } from '../wire.js';
import type {
  PublicationInfo,
  SubscribedEvent,
  UnrecoveredEvent,
  WsdrainClientError,
} from './subscription.js';

/** Data the client can send: what both browser WebSockets and `ws` accept. */
export type SendData = string | ArrayBufferLike | ArrayBufferView | Blob;

/**
 * A message received from the server: text stays a string; binary is an `ArrayBuffer`
 * (or a `Blob` when {@link WsdrainClientOptions.binaryType} is `'blob'`). In wsdrain.v1 mode
 * a `message` is unwrapped to what a plain client would get: its data if it is a string, its
 * JSON text if it is another JSON value, its bytes if binary.
 */
export type MessageData = string | ArrayBuffer | Blob;

/** What {@link WsdrainClient.publish} can publish: a JSON value, or bytes. */
export type PublishData = unknown;

/** Where a publication went: its topic, offset and epoch. */
export interface PublishAck extends StreamPosition {
  topic: string;
}

/**
 * The part of the WebSocket API the client uses; the browser's `WebSocket` and the `ws`
 * package's `WebSocket` both fit.
 */
export interface WebSocketLike {
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  /** The subprotocol the server selected ('' for none). */
  readonly protocol?: string;
  /** How binary messages are delivered. */
  binaryType: string;
  /** Sends one message. */
  send(data: SendData): void;
  /** Starts the closing handshake (or aborts a connection attempt). */
  close(code?: number, reason?: string): void;
  /** Listens for the socket's events. */
  addEventListener(type: 'open' | 'error', listener: (event: unknown) => void): void;
  /** Listens for messages. */
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
  /** Listens for the close of the socket. */
  addEventListener(
    type: 'close',
    listener: (event: { code: number; reason: string }) => void,
  ): void;
}

/** A WebSocket constructor, such as `globalThis.WebSocket` or `ws`'s `WebSocket`. */
export type WebSocketConstructorLike = new (
  url: string,
  protocols?: string | string[],
) => WebSocketLike;

/** What a URL function is told before each connect. */
export interface ConnectInfo {
  /** Reconnect attempts since the last open; 0 for the first connect. */
  attempt: number;
  /** The URL of the previous attempt; undefined before the first. */
  lastUrl: string | undefined;
  /** The close code of the previous connection or attempt (1006 for a failed connect). */
  lastCode: number | undefined;
}

/**
 * Where to connect:
 *
 * - a URL (`ws:` or `wss:`), for every connect;
 * - a list of URLs: a failed connect, or a close with 1001 (the host is going away), moves
 *   to the next one (round robin); any other close (1012: a restart, back in a moment; a cut
 *   connection) stays on the same one;
 * - a function, called before every connect (so each can carry a fresh token), that returns
 *   the URL or a Promise of it; a throw or a rejection is a failed connect (backoff).
 */
export type UrlSource =
  | string
  | URL
  | ReadonlyArray<string | URL>
  | ((info: ConnectInfo) => string | URL | PromiseLike<string | URL>);

/** Exponential backoff for reconnects after failures (full jitter). */
export interface BackoffOptions {
  /**
   * Cap of the first delay, in ms.
   * @default 250
   */
  initialMs?: number;
  /**
   * Largest cap, in ms.
   * @default 30000
   */
  maxMs?: number;
  /**
   * Growth of the cap per consecutive failure.
   * @default 2
   */
  factor?: number;
}

/** Options of {@link WsdrainClient}. */
export interface WsdrainClientOptions {
  /**
   * The WebSocket constructor.
   * @default globalThis.WebSocket
   */
  WebSocket?: WebSocketConstructorLike;
  /**
   * `'wsdrain.v1'` speaks wsdrain's subprotocol: {@link WsdrainClient.subscribe},
   * {@link WsdrainClient.publish} and recovery; `send()` and the 'message' event carry the
   * app's messages as before. A connection on which the server does not select it (a server
   * that is not wsdrain, or too old) is a failed connect ('error' event, then backoff).
   * @default undefined (plain messages: any WebSocket server)
   */
  protocol?: typeof PROTOCOL_V1;
  /**
   * Subprotocols offered on every connection (after `wsdrain.v1` with `protocol`).
   * @default undefined (none)
   */
  protocols?: string | string[];
  /**
   * Backoff after abnormal closes and failed attempts: the delay before reconnect attempt
   * `n` (n = consecutive failures so far, from 0) is
   * `random() * min(maxMs, initialMs * factor ** n)`.
   * @default { initialMs: 250, maxMs: 30000, factor: 2 }
   */
  backoff?: BackoffOptions;
  /**
   * Source of randomness in [0, 1), for the jitter; inject a fixed one in tests.
   * @default Math.random
   */
  random?: () => number;
  /**
   * How many reconnect attempts in a row may be made without a connection opening; when the
   * next one would exceed it, the client closes for good ('close' with `willReconnect: false`).
   * `0` never reconnects.
   * @default Infinity
   */
  maxRetries?: number;
  /**
   * Jitter added to a server's `retry` hint so that the clients of one draining server do not
   * all come back at the same instant. The wait is `retryMs + random() * span`, never less
   * than the hint: `true` uses `backoff.initialMs` as the span, a number is the span in ms,
   * `false` waits exactly `retryMs`.
   * @default true
   */
  hintJitter?: boolean | number;
  /**
   * Most messages (and publications) kept while disconnected; when full, the oldest is
   * dropped ('drop' event with reason `'overflow'`; a publication's promise rejects with
   * `dropped`). `0` keeps none.
   * @default 1000
   */
  maxQueued?: number;
  /**
   * A connection attempt (the URL function included) that has not opened after this many ms
   * is aborted and counts as a failure (backoff). `0` disables the timer.
   * @default 10000
   */
  openTimeoutMs?: number;
  /**
   * How binary messages are delivered: `'arraybuffer'` in browsers and Node alike, or `'blob'`.
   * @default 'arraybuffer'
   */
  binaryType?: 'arraybuffer' | 'blob';
}

/**
 * The client's state: `'connecting'` (a socket is being opened), `'open'`, `'waiting'` (for
 * the next reconnect attempt), `'closed'` (for good; it never leaves this state).
 * `'open'` lasts until the socket's close event: while a close is under way (the server's
 * 1012, answered, the socket not closed yet) the socket is no longer open and `send()` queues
 * for the next connection. Send on `socket.readyState === 1` to tell the two apart.
 */
export type ClientState = 'connecting' | 'open' | 'waiting' | 'closed';

/** Payload of the 'open' event. */
export interface OpenEvent {
  /** Reconnect attempts made since the previous open; 0 for the first connection. */
  attempt: number;
  /** The URL connected to. */
  url: string;
}

/** Payload of the 'close' event, emitted once for every socket that closes. */
export interface CloseEvent {
  /**
   * The close code (1006 when the connection failed or was cut without a close frame; 1002
   * when the server did not select `wsdrain.v1` asked for with `protocol`).
   */
  code: number;
  /** The close reason. */
  reason: string;
  /** The wsdrain hint parsed from the reason, if any. */
  hint: ReconnectHint | undefined;
  /** Whether the client will reconnect; false exactly once, on the final close. */
  willReconnect: boolean;
  /** Delay before the next attempt, in ms; undefined when not reconnecting. */
  delayMs: number | undefined;
}

/** Payload of the 'reconnecting' event, emitted when a reconnect is scheduled. */
export interface ReconnectingEvent {
  /** Number of this reconnect attempt since the last open, from 1. */
  attempt: number;
  /** Delay before it, in ms. */
  delayMs: number;
  /** `'hint'` when the server's retry hint set the delay, else `'backoff'`. */
  reason: 'hint' | 'backoff';
}

/**
 * Payload of the 'error' event: a socket error (the socket's 'close' follows), or a connect
 * that failed before a socket existed (the URL function threw, or the URL is invalid).
 */
export interface ErrorEvent {
  /** The error (a generic one where the platform gives no detail, as browsers do). */
  error: Error;
}

/** Payload of the 'drop' event: a queued message that will never be sent. */
export interface DropEvent {
  /** The message. */
  data: SendData;
  /** `'overflow'`: the queue was full; `'closed'`: the client closed for good. */
  reason: 'overflow' | 'closed';
}

/**
 * Payload of the 'publication' event: a publication of a topic this client did not
 * subscribe to itself (the app subscribed the connection on the server). Such topics are not
 * tracked nor recovered: subscribe from the client for that.
 */
export interface PublicationEvent extends PublicationInfo {
  data: unknown;
}

/**
 * Payload of the 'serverError' event: an `error` from the server about a subscription
 * (`onError` is called too) or about no request of this client (e.g. a malformed `message`).
 */
export interface ServerErrorEvent {
  error: WsdrainClientError;
  /** The topic of the subscription refused, if it was one. */
  topic: string | undefined;
}

/** Events of {@link WsdrainClient}, by name. */
export interface WsdrainClientEvents {
  /** A connection opened (subscriptions asked for again, queued messages flushed). */
  open: OpenEvent;
  /** A message from the server. */
  message: MessageData;
  /** A socket closed. */
  close: CloseEvent;
  /** A reconnect was scheduled. */
  reconnecting: ReconnectingEvent;
  /** A socket error, or a failed connect. */
  error: ErrorEvent;
  /** A queued message was discarded. */
  drop: DropEvent;
  /** The server answered a (re)subscription (every subscription's). */
  subscribed: SubscribedEvent;
  /** Publications a subscription missed cannot be replayed: reload what the topic feeds. */
  unrecovered: UnrecoveredEvent;
  /** A publication of a topic the app subscribed this connection to on the server. */
  publication: PublicationEvent;
  /** The server refused something (see {@link ServerErrorEvent}). */
  serverError: ServerErrorEvent;
}
