/**
 * `wsdrain/client`: a reconnecting WebSocket client that honours wsdrain's drain hints, and,
 * with `protocol: 'wsdrain.v1'`, subscribes to topics and recovers what it missed.
 *
 * Runs in browsers and in Node (no Node-only imports): it takes the WebSocket constructor as
 * an option, by default `globalThis.WebSocket`. In Node 20, pass `WebSocket` from `ws`.
 *
 * ```ts
 * import { createClient } from 'wsdrain/client';
 * const client = createClient('wss://example.com/live', { protocol: 'wsdrain.v1' });
 * client.on('message', (data) => console.log(data));
 * client.send('hello'); // queued until the first connection opens
 * const sub = client.subscribe('news', (data, { offset }) => show(data), {
 *   onUnrecovered: () => reloadNews(), // publications were missed for good: reload
 * });
 * await client.publish('news', { title: 'hi' }); // resolves with { topic, offset, epoch }
 * ```
 *
 * The URL can be a string, a list (failover: a failed connect or a shutdown close moves to
 * the next one) or a function called before every connect (a fresh token each time).
 *
 * What is guaranteed:
 *
 * - `send()` is **at most once**: a message is handed to one socket's `send()` and never sent
 *   again on another, even when that socket closed before the server read it (a drain, a cut
 *   connection). Messages that must arrive need an acknowledgement: `publish()`, or the app's.
 * - `publish()` resolves once the server has sequenced the publication (its offset and epoch);
 *   it rejects with the server's error code, or with `disconnected` when the connection closed
 *   before the answer: then the publication may or may not have been made, and it is not
 *   retried (a retry could publish it twice; retry yourself with a stable key in the data).
 * - A subscription calls its handler with its topic's publications in offset order; a
 *   publication is handled once the handler has returned from it, and each is handled **at
 *   most once**. Across every reconnect (a drain's hint, an error, a failover) it asks for
 *   everything after the last publication handled; the server replays the gap, and every
 *   publication is handled **exactly once**, as long as the server's history covers the gap
 *   (`--history-size`, `--history-ttl`) and the stream is the same (same epoch: one host, or
 *   hosts sharing a broker). When it cannot, the subscription says so ('unrecovered',
 *   `onUnrecovered`) and goes on from the server's position: never a silent hole. A handler
 *   that throws has not handled its publication: it is called with it again (after a
 *   backoff), so handlers should be idempotent.
 * - Positions live in the client object: a new client (a page reload) starts from now unless
 *   it passes a saved {@link Subscription.position} as `since`.
 */
import { CloseCode } from '../codes.js';
import { parseHint, type ReconnectHint } from '../hint.js';
import {
  PROTOCOL_V1,
  payloadField,
  payloadOf,
  type StreamPosition,
  TOPIC_RE,
  type WireErrorCode,
} from '../wire.js';
import { rethrowLater, TypedEmitter } from './emitter.js';
import {
  type PublicationHandler,
  type SubscribeOptions,
  type Subscription,
  type SubscriptionOwner,
  TopicSubscription,
  type WirePublication,
  WsdrainClientError,
} from './subscription.js';
import type {
  ClientState,
  ConnectInfo,
  MessageData,
  PublishAck,
  PublishData,
  SendData,
  UrlSource,
  WebSocketConstructorLike,
  WebSocketLike,
  WsdrainClientEvents,
  WsdrainClientOptions,
} from './types.js';

export type { DrainKind, ReconnectHint } from '../hint.js';
export { PROTOCOL_V1, type StreamPosition } from '../wire.js';
export { type Listener, TypedEmitter } from './emitter.js';
export {
  type PublicationHandler,
  type PublicationInfo,
  type SubscribedEvent,
  type SubscribeOptions,
  type Subscription,
  type SubscriptionState,
  type UnrecoveredEvent,
  WsdrainClientError,
  type WsdrainClientErrorCode,
} from './subscription.js';
export type * from './types.js';

const CONNECTING = 0;
const OPEN = 1;

/** Close codes after which the client never reconnects (plus 4000-4999, the application's). */
const FINAL_CODES: ReadonlySet<number> = new Set([1000, 1008]);
/** Planned closes: they carry the hint and do not count as failures. */
const PLANNED_CODES: ReadonlySet<number> = new Set([CloseCode.GOING_AWAY, CloseCode.RESTART]);

/** Whether the client reconnects after a socket closed with `code`. */
export function isReconnectCode(code: number): boolean {
  return !FINAL_CODES.has(code) && !(code >= 4000 && code <= 4999);
}

/** A publication waiting for its answer (or for a connection). */
interface PendingPublish {
  topic: string;
  /** The request without its id: `{"type":"publish",...}`. */
  text: string;
  resolve: (ack: PublishAck) => void;
  reject: (error: WsdrainClientError) => void;
}

/** A message waiting for a connection: app data (send) or a publication. */
type Queued =
  | { data: SendData; publish?: undefined }
  | { data?: undefined; publish: PendingPublish };

/**
 * A WebSocket client that reconnects, honouring the drain hints of a wsdrain server.
 *
 * - 1001 (going away) and 1012 (service restart) are planned closes: the client waits the
 *   hint's `retry` (plus {@link WsdrainClientOptions.hintJitter}) or, without one, a first
 *   backoff step; they do not grow the backoff.
 * - 1000, 1008 and 4000-4999 end the client; so does {@link WsdrainClient.close}.
 * - Any other close (1006, 1011, 1013, ...) and failed attempts reconnect with full-jitter
 *   exponential backoff, reset once a connection opens.
 * - With a list of URLs, a failed connect or a 1001 moves to the next URL; see
 *   {@link UrlSource}.
 *
 * It connects at once on construction. Events: see {@link WsdrainClientEvents}.
 */
export class WsdrainClient extends TypedEmitter<WsdrainClientEvents> {
  readonly #source: UrlSource;
  readonly #Ctor: WebSocketConstructorLike;
  readonly #v1: boolean;
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
  #url = '';
  /** Index into a list of URLs. */
  #index = 0;
  #lastCode: number | undefined;
  /** Counts connect attempts, so a URL function's late answer for an old one is ignored. */
  #seq = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #openTimer: ReturnType<typeof setTimeout> | undefined;
  #queue: Queued[] = [];
  /** Reconnect attempts since the last open. */
  #attempt = 0;
  /** Consecutive failures (abnormal closes, failed attempts) since the last open. */
  #failures = 0;

  // wsdrain.v1
  #nextId = 1;
  readonly #subs = new Map<string, TopicSubscription>();
  /** Subscribe requests on the open connection, by id. */
  readonly #subscribing = new Map<number, TopicSubscription>();
  /** Publications sent on the open connection and not answered yet, by id. */
  readonly #publishing = new Map<number, PendingPublish>();
  /** Topics the app subscribed this connection to on the server. */
  readonly #serverTopics = new Set<string>();
  readonly #owner: SubscriptionOwner;

  /**
   * Creates the client and starts connecting.
   * @param url where to connect: a URL, a list, or a function; see {@link UrlSource}.
   * @param options see {@link WsdrainClientOptions}.
   * @throws TypeError when there is no WebSocket constructor, an option is invalid, the list
   *   of URLs is empty, or the first socket cannot be created from a URL or list (an invalid
   *   URL).
   */
  constructor(url: UrlSource, options: WsdrainClientOptions = {}) {
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
    if (Array.isArray(url) && url.length === 0) {
      throw new TypeError('wsdrain/client: the list of URLs is empty');
    }
    if (options.protocol !== undefined && options.protocol !== PROTOCOL_V1) {
      throw new TypeError(
        `wsdrain/client: protocol must be '${PROTOCOL_V1}' or left out, got ${String(options.protocol)}`,
      );
    }
    this.#source = Array.isArray(url) ? [...url] : url;
    this.#Ctor = Ctor;
    this.#v1 = options.protocol === PROTOCOL_V1;
    this.#protocols = this.#v1
      ? [PROTOCOL_V1, ...[options.protocols ?? []].flat().filter((p) => p !== PROTOCOL_V1)]
      : options.protocols;
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
    this.#owner = this.#makeOwner();
    this.#connect(true);
  }

  /** The URL of the current (or last) connection attempt; '' before a URL function answered. */
  get url(): string {
    return this.#url;
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

  /** The subprotocol spoken: `'wsdrain.v1'`, or '' for plain messages. */
  get protocol(): string {
    return this.#v1 ? PROTOCOL_V1 : '';
  }

  /**
   * Sends a message: at once while a connection is open, else queues it (at most
   * {@link WsdrainClientOptions.maxQueued}, oldest dropped) to be sent, in order, right after
   * the next connection opens and before the 'open' event. In wsdrain.v1 mode a string goes
   * as `{"type":"message","data":...}` (the app's `message` hook gets the string) and bytes
   * as a binary frame.
   *
   * Delivery is **at most once**: a message is handed to exactly one socket's `send()` and is
   * never resent on another, even when that socket then closes before the server read it
   * (a drain, a cut connection). Messages that must arrive need an acknowledgement
   * ({@link WsdrainClient.publish} has one). Queued messages still waiting when the client
   * closes for good are dropped ('drop' with reason `'closed'`).
   *
   * @returns true when handed to an open socket now, false when queued (or dropped at once
   *   because `maxQueued` is 0).
   * @throws Error when the client is closed.
   */
  send(data: SendData): boolean {
    if (this.#state === 'closed') throw new Error('wsdrain/client: send() after close');
    const socket = this.#openSocket();
    if (socket) {
      socket.send(this.#wrap(data));
      return true;
    }
    this.#enqueue({ data });
    return false;
  }

  /**
   * Subscribes to `topic` (wsdrain.v1): `onMessage` gets each publication's data and
   * `{ topic, offset, epoch }`, in order, each handled (returned from) at most once; after
   * every reconnect the client asks for what it missed since the last publication
   * `onMessage` returned from, and says so when that cannot be replayed ('unrecovered' event,
   * `options.onUnrecovered`). See the guarantees at the top of this module. One subscription
   * per topic per client.
   * @returns the subscription: its `position`, `state`, and `unsubscribe()`.
   * @throws Error when the client does not speak wsdrain.v1, is closed, or already has a
   *   subscription to `topic`; TypeError for a topic the protocol does not accept.
   */
  subscribe(
    topic: string,
    onMessage: PublicationHandler,
    options: SubscribeOptions = {},
  ): Subscription {
    this.#requireV1('subscribe');
    if (this.#state === 'closed') throw new Error('wsdrain/client: subscribe() after close');
    checkTopic(topic);
    if (typeof onMessage !== 'function') {
      throw new TypeError(
        'wsdrain/client: subscribe(topic, onMessage): onMessage must be a function',
      );
    }
    const since = options.since;
    if (
      since !== undefined &&
      (typeof since !== 'object' ||
        since === null ||
        !Number.isSafeInteger(since.offset) ||
        since.offset < 0 ||
        typeof since.epoch !== 'string')
    ) {
      throw new TypeError(
        'wsdrain/client: options.since must be { offset: integer >= 0, epoch: string }',
      );
    }
    if (this.#subs.has(topic)) {
      throw new Error(
        `wsdrain/client: already subscribed to ${topic}; unsubscribe first, or share one handler`,
      );
    }
    const sub = new TopicSubscription(topic, onMessage, options, this.#owner);
    this.#subs.set(topic, sub);
    if (this.#openSocket()) {
      // A subscription the app made on the server would only say where it stands: end it.
      if (this.#serverTopics.delete(topic)) this.#owner.unsubscribe(topic);
      sub.connected();
    }
    return sub;
  }

  /**
   * Publishes `data` to `topic` (wsdrain.v1; the server's app must allow it with its
   * `canPublish` hook). A JSON value travels as JSON, bytes (`Uint8Array`, `ArrayBuffer`, a
   * typed array) as base64 and reach subscribers as a `Uint8Array`. Queued like `send()`
   * while disconnected.
   * @returns a Promise of `{ topic, offset, epoch }` once the server has sequenced it; it
   *   rejects with a {@link WsdrainClientError}: the server's code (`forbidden`, `too_large`,
   *   `unavailable`, ...), or `disconnected` when the connection closed before the answer
   *   (published or not: not retried), `dropped`, `closed`.
   * @throws Error when the client does not speak wsdrain.v1; TypeError for a topic the
   *   protocol does not accept, a Blob, or data that is not JSON.
   */
  publish(topic: string, data: PublishData): Promise<PublishAck> {
    this.#requireV1('publish');
    checkTopic(topic);
    if (typeof Blob !== 'undefined' && data instanceof Blob) {
      throw new TypeError('wsdrain/client: publish() takes bytes, not a Blob');
    }
    const value =
      data instanceof ArrayBuffer
        ? new Uint8Array(data)
        : ArrayBuffer.isView(data) && !(data instanceof Uint8Array)
          ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
          : data;
    const text = JSON.stringify({ type: 'publish', topic, ...payloadField(value) });
    if (this.#state === 'closed') {
      return Promise.reject(
        new WsdrainClientError('closed', 'wsdrain/client: publish() after close'),
      );
    }
    return new Promise<PublishAck>((resolve, reject) => {
      const p: PendingPublish = { topic, text, resolve, reject };
      const socket = this.#openSocket();
      if (socket) this.#sendPublish(socket, p);
      else this.#enqueue({ publish: p });
    });
  }

  /**
   * Closes for good: cancels any pending reconnect, closes the socket with `code` and
   * `reason`, drops the queue, ends every subscription. A final 'close' event
   * (`willReconnect: false`) follows once the socket has closed, or at once when there was
   * none. Calling it again does nothing.
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

  #openSocket(): WebSocketLike | null {
    const socket = this.#socket;
    return this.#state === 'open' && socket && socket.readyState === OPEN ? socket : null;
  }

  #requireV1(what: string): void {
    if (!this.#v1) {
      throw new Error(
        `wsdrain/client: ${what}() needs the wsdrain.v1 subprotocol: createClient(url, { protocol: '${PROTOCOL_V1}' })`,
      );
    }
  }

  /** What goes on the wire for app data. */
  #wrap(data: SendData): SendData {
    return this.#v1 && typeof data === 'string' ? JSON.stringify({ type: 'message', data }) : data;
  }

  #enqueue(item: Queued): void {
    this.#queue.push(item);
    while (this.#queue.length > this.#maxQueued) this.#dropQueued(this.#queue.shift()!, 'overflow');
  }

  #dropQueued(item: Queued, reason: 'overflow' | 'closed'): void {
    if (item.publish) {
      item.publish.reject(
        new WsdrainClientError(
          reason === 'overflow' ? 'dropped' : 'closed',
          reason === 'overflow'
            ? 'wsdrain/client: publication dropped from a full queue (maxQueued)'
            : 'wsdrain/client: closed before the publication was sent',
        ),
      );
    } else {
      this.emit('drop', { data: item.data, reason });
    }
  }

  #sendPublish(socket: WebSocketLike, p: PendingPublish): void {
    const id = this.#nextId++;
    this.#publishing.set(id, p);
    socket.send(`${p.text.slice(0, -1)},"id":${id}}`);
  }

  #makeOwner(): SubscriptionOwner {
    const client = this;
    return {
      subscribe: (sub, since) => {
        const socket = client.#openSocket();
        if (!socket) return undefined;
        const id = client.#nextId++;
        client.#subscribing.set(id, sub);
        socket.send(
          JSON.stringify({ type: 'subscribe', topic: sub.topic, ...(since ? { since } : {}), id }),
        );
        return id;
      },
      unsubscribe: (topic) => {
        client
          .#openSocket()
          ?.send(JSON.stringify({ type: 'unsubscribe', topic, id: client.#nextId++ }));
      },
      get connected() {
        return client.#openSocket() !== null;
      },
      forget: (sub) => {
        if (client.#subs.get(sub.topic) === sub) client.#subs.delete(sub.topic);
      },
      backoff: (failures) => client.#backoff(failures),
      subscribed: (e) => client.emit('subscribed', e),
      unrecovered: (e) => client.emit('unrecovered', e),
      refused: (error, topic) => client.emit('serverError', { error, topic }),
      report: rethrowLater,
    };
  }

  #backoff(failures: number): number {
    const cap = Math.min(this.#maxMs, this.#initialMs * this.#factor ** failures);
    return Math.floor(this.#random() * cap);
  }

  #connect(first: boolean): void {
    this.#timer = undefined;
    this.#state = 'connecting';
    const seq = ++this.#seq;
    const source = this.#source;
    if (typeof source !== 'function') {
      const url = Array.isArray(source) ? source[this.#index % source.length] : source;
      this.#open(String(url), first, seq);
      return;
    }
    this.#armOpenTimer(seq);
    const info: ConnectInfo = {
      attempt: this.#attempt,
      lastUrl: this.#url || undefined,
      lastCode: this.#lastCode,
    };
    let answer: string | URL | PromiseLike<string | URL>;
    try {
      answer = (source as (i: ConnectInfo) => string | URL | PromiseLike<string | URL>)(info);
    } catch (error) {
      this.#failed(seq, error);
      return;
    }
    Promise.resolve(answer).then(
      (url) => {
        if (seq === this.#seq && this.#state === 'connecting') this.#open(String(url), false, seq);
      },
      (error: unknown) => this.#failed(seq, error),
    );
  }

  /** Aborts attempt `seq` if it has not opened within openTimeoutMs. */
  #armOpenTimer(seq: number): void {
    if (this.#openTimeoutMs <= 0 || this.#openTimer !== undefined) return;
    this.#openTimer = setTimeout(() => {
      this.#openTimer = undefined;
      if (seq !== this.#seq || this.#state !== 'connecting') return;
      const socket = this.#socket;
      if (socket) {
        if (socket.readyState === CONNECTING) socket.close();
      } else {
        this.#failed(seq, new Error(`no URL within openTimeoutMs (${this.#openTimeoutMs} ms)`));
      }
    }, this.#openTimeoutMs);
  }

  /** Attempt `seq` failed before it had a socket. */
  #failed(seq: number, error: unknown): void {
    if (seq !== this.#seq || this.#state !== 'connecting' || this.#socket) return;
    this.#seq++;
    this.#clearOpenTimer();
    this.emit('error', { error: toError(error) });
    if (this.#state === 'connecting') this.#afterClose(1006, '', false);
  }

  #open(url: string, first: boolean, seq: number): void {
    this.#url = url;
    let socket: WebSocketLike;
    try {
      socket =
        this.#protocols === undefined ? new this.#Ctor(url) : new this.#Ctor(url, this.#protocols);
    } catch (error) {
      if (first) throw error;
      this.#failed(seq, error);
      return;
    }
    this.#socket = socket;
    try {
      socket.binaryType = this.#binaryType;
    } catch {
      // A platform without this binaryType keeps its default.
    }
    this.#armOpenTimer(seq);
    let opened = false;
    socket.addEventListener('open', () => {
      if (this.#socket !== socket || this.#state !== 'connecting') return;
      this.#clearOpenTimer();
      if (this.#v1 && socket.protocol !== PROTOCOL_V1) {
        // A server that does not speak wsdrain.v1 (browsers accept a handshake without the
        // subprotocol): a failed connect, not a connection to use.
        this.#socket = null;
        socket.close(1000);
        this.emit('error', {
          error: new Error(`wsdrain/client: the server at ${url} did not select ${PROTOCOL_V1}`),
        });
        if (this.#state === 'connecting') this.#afterClose(1002, '', false);
        return;
      }
      opened = true;
      this.#state = 'open';
      const attempt = this.#attempt;
      this.#attempt = 0;
      this.#failures = 0;
      // Subscriptions first, then what was queued, then 'open': listeners' sends come last.
      for (const sub of [...this.#subs.values()]) sub.connected();
      while (this.#queue.length > 0 && socket.readyState === OPEN) {
        const item = this.#queue.shift()!;
        if (item.publish) this.#sendPublish(socket, item.publish);
        else socket.send(this.#wrap(item.data));
      }
      this.emit('open', { attempt, url });
    });
    socket.addEventListener('message', (event) => {
      if (this.#socket !== socket) return;
      if (this.#v1 && typeof event.data === 'string') this.#receive(event.data);
      else this.emit('message', event.data as MessageData);
    });
    socket.addEventListener('error', (event) => {
      if (this.#socket !== socket || this.#state === 'closed') return;
      this.emit('error', { error: toError(event) });
    });
    socket.addEventListener('close', (event) => {
      if (this.#socket !== socket) return;
      this.#clearOpenTimer();
      this.#socket = null;
      this.#disconnected();
      if (this.#state === 'closed') {
        // close() was called: this is the final close.
        this.#emitClose(event.code, event.reason, false, undefined);
        return;
      }
      this.#afterClose(event.code, event.reason, opened);
    });
  }

  /** The connection is gone: requests on it will not be answered. */
  #disconnected(): void {
    this.#subscribing.clear();
    this.#serverTopics.clear();
    for (const sub of this.#subs.values()) sub.disconnected();
    const waiting = [...this.#publishing.values()];
    this.#publishing.clear();
    for (const p of waiting) {
      p.reject(
        new WsdrainClientError(
          'disconnected',
          `wsdrain/client: the connection closed before the server answered a publication to ${p.topic}; it may or may not have been made`,
        ),
      );
    }
  }

  /** A wsdrain.v1 text frame. */
  #receive(text: string): void {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(text) as Record<string, unknown>;
    } catch {
      this.emit('message', text);
      return;
    }
    if (typeof m !== 'object' || m === null || typeof m.type !== 'string') {
      this.emit('message', text);
      return;
    }
    const id = typeof m.id === 'number' ? m.id : undefined;
    const topic = typeof m.topic === 'string' ? m.topic : undefined;
    switch (m.type) {
      case 'message':
        this.emit('message', this.#messageData(m as { data?: unknown; b64?: string }));
        return;
      case 'pub': {
        if (topic === undefined || !isPosition(m)) return;
        const sub = this.#subs.get(topic);
        if (sub) sub.publication(m as unknown as WirePublication);
        else {
          this.emit('publication', {
            topic,
            offset: m.offset,
            epoch: m.epoch,
            data: payloadOf(m as { data?: unknown; b64?: string }),
          });
        }
        return;
      }
      case 'subscribed': {
        if (topic === undefined || !isPosition(m)) return;
        const sub = id === undefined ? undefined : this.#subscribing.get(id);
        if (sub) {
          this.#subscribing.delete(id!);
          const recovered = typeof m.recovered === 'boolean' ? m.recovered : undefined;
          sub.answered(id!, { offset: m.offset, epoch: m.epoch }, recovered);
        } else if (id === undefined && !this.#subs.has(topic)) {
          this.#serverTopics.add(topic);
        }
        return;
      }
      case 'unsubscribed':
        if (topic === undefined) return;
        this.#serverTopics.delete(topic);
        if (m.resubscribe === true) this.#subs.get(topic)?.resubscribe();
        return;
      case 'published': {
        const p = id === undefined ? undefined : this.#publishing.get(id);
        if (!p || !isPosition(m)) return;
        this.#publishing.delete(id!);
        p.resolve({ topic: p.topic, offset: m.offset, epoch: m.epoch });
        return;
      }
      case 'error': {
        const error = new WsdrainClientError(
          (typeof m.code === 'string' ? m.code : 'bad_request') as WireErrorCode,
          typeof m.message === 'string' ? m.message : String(m.code),
        );
        const p = id === undefined ? undefined : this.#publishing.get(id);
        if (p) {
          this.#publishing.delete(id!);
          p.reject(error);
          return;
        }
        const sub = id === undefined ? undefined : this.#subscribing.get(id);
        if (sub) {
          this.#subscribing.delete(id!);
          sub.refused(id!, error);
          return;
        }
        this.emit('serverError', { error, topic: undefined });
        return;
      }
      default:
      // A message type of a newer server: nothing this client can do with it.
    }
  }

  /** A wsdrain.v1 `message`, as a plain client would have received it. */
  #messageData(m: { data?: unknown; b64?: string }): MessageData {
    if (m.b64 !== undefined) {
      const bytes = payloadOf(m) as Uint8Array;
      const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      return this.#binaryType === 'blob' && typeof Blob !== 'undefined'
        ? new Blob([buffer as ArrayBuffer])
        : (buffer as ArrayBuffer);
    }
    return typeof m.data === 'string' ? m.data : (JSON.stringify(m.data ?? null) as string);
  }

  /** Decides what follows a socket's close (not one asked for by close()). */
  #afterClose(code: number, reason: string, opened: boolean): void {
    const hint = parseHint(reason);
    const attempt = this.#attempt + 1;
    this.#lastCode = code;
    if (!isReconnectCode(code) || attempt > this.#maxRetries) {
      this.#stop();
      this.#emitClose(code, reason, false, undefined, hint);
      return;
    }
    // Failover: a host that could not be reached, or that is going away, for the next one.
    const source = this.#source;
    if (Array.isArray(source) && (!opened || code === CloseCode.GOING_AWAY)) {
      this.#index = (this.#index + 1) % source.length;
    }
    let delayMs: number;
    let why: 'hint' | 'backoff';
    if (PLANNED_CODES.has(code) && hint?.retryMs !== undefined) {
      delayMs = Math.round(hint.retryMs + this.#random() * this.#hintSpanMs);
      why = 'hint';
    } else {
      delayMs = this.#backoff(this.#failures);
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

  /** Enters 'closed': no timers, no queue, no subscriptions. */
  #stop(): void {
    this.#state = 'closed';
    this.#seq++;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#clearOpenTimer();
    for (const sub of this.#subs.values()) sub.close();
    this.#subs.clear();
    const dropped = this.#queue;
    this.#queue = [];
    for (const item of dropped) this.#dropQueued(item, 'closed');
  }

  #clearOpenTimer(): void {
    if (this.#openTimer !== undefined) clearTimeout(this.#openTimer);
    this.#openTimer = undefined;
  }
}

/**
 * Creates a {@link WsdrainClient} (which starts connecting).
 * @param url a URL, a list of URLs (failover), or a function called before every connect;
 *   see {@link UrlSource}.
 * @param options see {@link WsdrainClientOptions}.
 */
export function createClient(url: UrlSource, options?: WsdrainClientOptions): WsdrainClient {
  return new WsdrainClient(url, options);
}

function checkTopic(topic: string): void {
  if (typeof topic !== 'string' || !TOPIC_RE.test(topic)) {
    throw new TypeError(
      `wsdrain/client: bad topic ${JSON.stringify(topic)}: 1 to 200 characters of [A-Za-z0-9_-:./@#=+]`,
    );
  }
}

function isPosition(m: Record<string, unknown>): m is Record<string, unknown> & StreamPosition {
  return Number.isSafeInteger(m.offset) && typeof m.epoch === 'string';
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
