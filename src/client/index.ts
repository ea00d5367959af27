/**
 * `wsdrain/client`: a reconnecting WebSocket client that honours wsdrain's drain hints.
 *
 * Runs in browsers and in Node (no Node-only imports): it takes the WebSocket constructor as
 * an option, by default `globalThis.WebSocket`. In Node 20, pass `WebSocket` from `ws`.
 *
 * ```ts
 * import { WsdrainClient } from 'wsdrain/client';
 * const client = new WsdrainClient('wss://example.com/live');
 * client.on('message', (data) => console.log(data));
 * client.send('hello'); // queued until the first connection opens
 * ```
 *
 * Delivery is at most once: a message handed to a socket is never sent again on another
 * socket, even if that socket closed before the peer read it. See {@link WsdrainClient.send}.
 */
import { parseHint, type ReconnectHint } from '../hint.js';
import { TypedEmitter } from './emitter.js';

export type { DrainKind, ReconnectHint } from '../hint.js';
export { type Listener, TypedEmitter } from './emitter.js';

const CONNECTING = 0;
const OPEN = 1;

/** Data the client can send: what both browser WebSockets and `ws` accept. */
export type SendData = string | ArrayBufferLike | ArrayBufferView | Blob;

/**
 * A message received from the server: text stays a string; binary is an `ArrayBuffer`
 * (or a `Blob` when {@link WsdrainClientOptions.binaryType} is `'blob'`).
 */
export type MessageData = string | ArrayBuffer | Blob;

/**
 * The part of the WebSocket API the client uses; the browser's `WebSocket` and the `ws`
 * package's `WebSocket` both fit.
 */
export interface WebSocketLike {
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
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
   * Subprotocols offered on every connection.
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
   * Most messages kept while disconnected; when full, the oldest is dropped ('drop' event with
   * reason `'overflow'`). `0` keeps none.
   * @default 1000
   */
  maxQueued?: number;
  /**
   * A connection attempt that has not opened after this many ms is aborted and counts as a
   * failure (backoff). `0` disables the timer.
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
 */
export type ClientState = 'connecting' | 'open' | 'waiting' | 'closed';

/** Payload of the 'open' event. */
export interface OpenEvent {
  /** Reconnect attempts made since the previous open; 0 for the first connection. */
  attempt: number;
}

/** Payload of the 'close' event, emitted once for every socket that closes. */
export interface CloseEvent {
  /** The close code (1006 when the connection failed or was cut without a close frame). */
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

/** Payload of the 'error' event: a socket error (the socket's 'close' follows). */
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

/** Events of {@link WsdrainClient}, by name. */
export interface WsdrainClientEvents {
  /** A connection opened (queued messages were already flushed). */
  open: OpenEvent;
  /** A message from the server. */
  message: MessageData;
  /** A socket closed. */
  close: CloseEvent;
  /** A reconnect was scheduled. */
  reconnecting: ReconnectingEvent;
  /** A socket error. */
  error: ErrorEvent;
  /** A queued message was discarded. */
  drop: DropEvent;
}

/** Close codes after which the client never reconnects (plus 4000-4999, the application's). */
const FINAL_CODES: ReadonlySet<number> = new Set([1000, 1008]);
/** Planned closes: they carry the hint and do not count as failures. */
const PLANNED_CODES: ReadonlySet<number> = new Set([1001, 1012]);

/** Whether the client reconnects after a socket closed with `code`. */
export function isReconnectCode(code: number): boolean {
  return !FINAL_CODES.has(code) && !(code >= 4000 && code <= 4999);
}

/**
 * A WebSocket client that reconnects, honouring the drain hints of a wsdrain server.
 *
 * - 1001 (going away) and 1012 (service restart) are planned closes: the client waits the
 *   hint's `retry` (plus {@link WsdrainClientOptions.hintJitter}) or, without one, a first
 *   backoff step; they do not grow the backoff.
 * - 1000, 1008 and 4000-4999 end the client; so does {@link WsdrainClient.close}.
 * - Any other close (1006, 1011, 1013, ...) and failed attempts reconnect with full-jitter
 *   exponential backoff, reset once a connection opens.
 *
 * It connects at once on construction. Events: see {@link WsdrainClientEvents}.
 */
export class WsdrainClient extends TypedEmitter<WsdrainClientEvents> {
  /** The URL connected to. */
  readonly url: string;
  readonly #Ctor: WebSocketConstructorLike;
  readonly #protocols: string | string[] | undefined;
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #factor: number;
  readonly #random: () => number;
  readonly #maxRetries: number;
  readonly #hintSpanMs: number;
  readonly #maxQueued: number;
  readonly #openTimeoutMs: number;
  readonly #binaryType: 'arraybuffer' | 'blob';

  #state: ClientState = 'connecting';
  #socket: WebSocketLike | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #openTimer: ReturnType<typeof setTimeout> | undefined;
  #queue: SendData[] = [];
  /** Reconnect attempts since the last open. */
  #attempt = 0;
  /** Consecutive failures (abnormal closes, failed attempts) since the last open. */
  #failures = 0;

  /**
   * Creates the client and starts connecting.
   * @param url `ws:` or `wss:` URL.
   * @param options see {@link WsdrainClientOptions}.
   * @throws TypeError when there is no WebSocket constructor, or the first socket cannot be
   *   created (an invalid URL).
   */
  constructor(url: string | URL, options: WsdrainClientOptions = {}) {
    super();
    const Ctor =
      options.WebSocket ??
      (globalThis as { WebSocket?: WebSocketConstructorLike }).WebSocket ??
      undefined;
    if (typeof Ctor !== 'function') {
      throw new TypeError(
        'wsdrain/client: no WebSocket constructor; pass options.WebSocket (in Node: `ws`)',
      );
    }
    this.url = String(url);
    this.#Ctor = Ctor;
    this.#protocols = options.protocols;
    this.#initialMs = nonNegative(options.backoff?.initialMs, 250, 'backoff.initialMs');
    this.#maxMs = nonNegative(options.backoff?.maxMs, 30_000, 'backoff.maxMs');
    this.#factor = nonNegative(options.backoff?.factor, 2, 'backoff.factor');
    this.#random = options.random ?? Math.random;
    this.#maxRetries = nonNegative(options.maxRetries, Number.POSITIVE_INFINITY, 'maxRetries');
    const hj = options.hintJitter ?? true;
    this.#hintSpanMs =
      hj === true ? this.#initialMs : hj === false ? 0 : nonNegative(hj, 0, 'hintJitter');
    this.#maxQueued = nonNegative(options.maxQueued, 1000, 'maxQueued');
    this.#openTimeoutMs = nonNegative(options.openTimeoutMs, 10_000, 'openTimeoutMs');
    this.#binaryType = options.binaryType ?? 'arraybuffer';
    this.#connect(true);
  }

  /** The current state; see {@link ClientState}. */
  get state(): ClientState {
    return this.#state;
  }

  /** Messages waiting for a connection. */
  get queued(): number {
    return this.#queue.length;
  }

  /** The current socket, or null while waiting or after the client closed. */
  get socket(): WebSocketLike | null {
    return this.#socket;
  }

  /**
   * Sends a message: at once while a connection is open, else queues it (at most
   * {@link WsdrainClientOptions.maxQueued}, oldest dropped) to be sent, in order, right after
   * the next connection opens and before the 'open' event.
   *
   * Delivery is **at most once**: a message is handed to exactly one socket's `send()` and is
   * never resent on another, even when that socket then closes before the server read it
   * (a drain, a cut connection). Messages that must arrive need an application-level
   * acknowledgement. Queued messages still waiting when the client closes for good are
   * dropped ('drop' with reason `'closed'`).
   *
   * @returns true when handed to an open socket now, false when queued (or dropped at once
   *   because `maxQueued` is 0).
   * @throws Error when the client is closed.
   */
  send(data: SendData): boolean {
    if (this.#state === 'closed') throw new Error('wsdrain/client: send() after close');
    const socket = this.#socket;
    if (this.#state === 'open' && socket && socket.readyState === OPEN) {
      socket.send(data);
      return true;
    }
    this.#queue.push(data);
    while (this.#queue.length > this.#maxQueued) {
      this.emit('drop', { data: this.#queue.shift()!, reason: 'overflow' });
    }
    return false;
  }

  /**
   * Closes for good: cancels any pending reconnect, closes the socket with `code` and
   * `reason`, drops the queue. A final 'close' event (`willReconnect: false`) follows once the
   * socket has closed, or at once when there was none. Calling it again does nothing.
   * @param code close code; browsers accept only 1000 and 3000-4999.
   * @param reason close reason, at most 123 bytes.
   * @default code 1000, reason ''
   */
  close(code = 1000, reason = ''): void {
    if (this.#state === 'closed') return;
    const socket = this.#socket;
    // May throw on a code the platform refuses; nothing has changed then.
    if (socket && socket.readyState <= OPEN) socket.close(code, reason);
    this.#stop();
    if (!socket) this.#emitClose(code, reason, false, undefined);
  }

  #connect(first: boolean): void {
    this.#timer = undefined;
    this.#state = 'connecting';
    let socket: WebSocketLike;
    try {
      socket =
        this.#protocols === undefined
          ? new this.#Ctor(this.url)
          : new this.#Ctor(this.url, this.#protocols);
    } catch (error) {
      if (first) throw error;
      this.emit('error', { error: toError(error) });
      this.#afterClose(1006, '');
      return;
    }
    this.#socket = socket;
    try {
      socket.binaryType = this.#binaryType;
    } catch {
      // A platform without this binaryType keeps its default.
    }
    if (this.#openTimeoutMs > 0) {
      this.#openTimer = setTimeout(() => {
        this.#openTimer = undefined;
        if (this.#socket === socket && socket.readyState === CONNECTING) socket.close();
      }, this.#openTimeoutMs);
    }
    socket.addEventListener('open', () => {
      if (this.#socket !== socket || this.#state !== 'connecting') return;
      this.#clearOpenTimer();
      this.#state = 'open';
      const attempt = this.#attempt;
      this.#attempt = 0;
      this.#failures = 0;
      // Flush before 'open' so messages sent from its listeners come after the queued ones.
      while (this.#queue.length > 0 && socket.readyState === OPEN) {
        socket.send(this.#queue.shift()!);
      }
      this.emit('open', { attempt });
    });
    socket.addEventListener('message', (event) => {
      if (this.#socket !== socket) return;
      this.emit('message', event.data as MessageData);
    });
    socket.addEventListener('error', (event) => {
      if (this.#socket !== socket || this.#state === 'closed') return;
      this.emit('error', { error: toError(event) });
    });
    socket.addEventListener('close', (event) => {
      if (this.#socket !== socket) return;
      this.#clearOpenTimer();
      this.#socket = null;
      if (this.#state === 'closed') {
        // close() was called: this is the final close.
        this.#emitClose(event.code, event.reason, false, undefined);
        return;
      }
      this.#afterClose(event.code, event.reason);
    });
  }

  /** Decides what follows a socket's close (not one asked for by close()). */
  #afterClose(code: number, reason: string): void {
    const hint = parseHint(reason);
    const attempt = this.#attempt + 1;
    if (!isReconnectCode(code) || attempt > this.#maxRetries) {
      this.#stop();
      this.#emitClose(code, reason, false, undefined, hint);
      return;
    }
    let delayMs: number;
    let why: 'hint' | 'backoff';
    if (PLANNED_CODES.has(code) && hint?.retryMs !== undefined) {
      delayMs = Math.round(hint.retryMs + this.#random() * this.#hintSpanMs);
      why = 'hint';
    } else {
      const cap = Math.min(this.#maxMs, this.#initialMs * this.#factor ** this.#failures);
      delayMs = Math.floor(this.#random() * cap);
      why = 'backoff';
      if (!PLANNED_CODES.has(code)) this.#failures++;
    }
    this.#attempt = attempt;
    this.#state = 'waiting';
    this.#timer = setTimeout(() => this.#connect(false), delayMs);
    this.#emitClose(code, reason, true, delayMs, hint);
    if (this.#state === 'waiting') this.emit('reconnecting', { attempt, delayMs, reason: why });
  }

  #emitClose(
    code: number,
    reason: string,
    willReconnect: boolean,
    delayMs: number | undefined,
    hint: ReconnectHint | undefined = parseHint(reason),
  ): void {
    this.emit('close', { code, reason, hint, willReconnect, delayMs });
  }

  /** Enters 'closed': no timers, no queue. */
  #stop(): void {
    this.#state = 'closed';
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#clearOpenTimer();
    const dropped = this.#queue;
    this.#queue = [];
    for (const data of dropped) this.emit('drop', { data, reason: 'closed' });
  }

  #clearOpenTimer(): void {
    if (this.#openTimer !== undefined) clearTimeout(this.#openTimer);
    this.#openTimer = undefined;
  }
}

/**
 * Creates a {@link WsdrainClient} (which starts connecting).
 * @param url `ws:` or `wss:` URL.
 * @param options see {@link WsdrainClientOptions}.
 */
export function createClient(url: string | URL, options?: WsdrainClientOptions): WsdrainClient {
  return new WsdrainClient(url, options);
}

function nonNegative(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw new TypeError(`wsdrain/client: ${name} must be a number >= 0, got ${String(value)}`);
  }
  return value;
}

function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  if (typeof value === 'object' && value !== null) {
    const inner = (value as { error?: unknown }).error;
    if (inner instanceof Error) return inner;
    const message = (value as { message?: unknown }).message;
    if (typeof message === 'string' && message) return new Error(message);
  }
  return new Error('WebSocket error');
}
