/**
 * The WebSocket connections of one worker: each message to the pool and each reply back in
 * the order of its messages, backpressure, the limits on what a client may make the server
 * hold, and the closing handshake.
 *
 *     message --> rate limit --> reply slot (in order) --> pool
 *     pool result --> its slot --> (next turn) every answered slot at the head, corked
 *
 * Backpressure: a connection with CONN_HIGH_WATER messages in flight stops being read, and so
 * does every connection while the pool is saturated; reading resumes at half. What waits for a
 * client counts against the buffer limits (./buffers.ts).
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { WebSocket } from 'ws';
import { CloseCode } from '../codes.js';
import { HandlerError } from '../errors.js';
import type { Logger } from '../log.js';
import { PROTOCOL_V1 } from '../wire.js';
import { BufferLimits } from './buffers.js';
import { Kind } from './pool.js';
import {
  closedCleanly,
  closeFrameNow,
  type Frame,
  forgetReceiver,
  startReading,
  stopReading,
  writeFrame,
} from './socket.js';
import type { Subscription } from './topics.js';

/** The reply queue of a connection that never had a message (replaced on the first). */
const NO_SLOTS: Slot[] = [];

/** Prefix of this process's connection ids: a connection id is unique in the cluster. */
const ID_PREFIX = randomBytes(4).toString('base64url');

/** Per-connection pending messages at which that socket stops being read. */
export const CONN_HIGH_WATER = 128;

/** Pings one peer may send per second; more is a flood, closed with 1008. */
export const PING_LIMIT_PER_SECOND = 100;

/** Kind of a slot whose result has not arrived. */
const PENDING = -1;

/** ws.send options of the two reply kinds. */
const AS_TEXT = { binary: false } as const;
const AS_BINARY = { binary: true } as const;

/**
 * Counts one message (`pings` false) or ping (true) of `conn` in its one-second window; true
 * when the window now holds more than `limit`. The windows are fields of the connection (no
 * object of their own: tens of thousands of idle connections carry them).
 */
function overRate(conn: Connection, pings: boolean, limit: number, now = Date.now()): boolean {
  if (pings) {
    if (now - conn.pingsFrom >= 1000) {
      conn.pingsFrom = now;
      conn.pingCount = 0;
    }
    return ++conn.pingCount > limit;
  }
  if (now - conn.messagesFrom >= 1000) {
    conn.messagesFrom = now;
    conn.messageCount = 0;
  }
  return ++conn.messageCount > limit;
}

/** Marks a ws WebSocket with its connection: the listeners below are shared, not closures. */
const kConn = Symbol('wsdrain.connection');
type Marked = WebSocket & { [kConn]: Connection };

function wsOnError(this: WebSocket, err: Error & { code?: string }): void {
  (this as Marked)[kConn].owner.log.debug({ err: err.code ?? err.message }, 'websocket error');
}

function wsOnClose(this: WebSocket, code: number, reason: Buffer): void {
  const conn = (this as Marked)[kConn];
  conn.owner.closed(conn, code, reason);
}

function wsOnPing(this: WebSocket): void {
  const conn = (this as Marked)[kConn];
  conn.owner.pinged(conn);
}

function wsOnPong(this: WebSocket, data: Buffer): void {
  const conn = (this as Marked)[kConn];
  // Alive is a pong that answers this round's ping (same payload): an unsolicited pong
  // proves nothing, a peer can send those without reading a byte.
  if (data.equals(conn.owner.pingToken)) conn.alive = true;
}

function wsOnMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  const conn = (this as Marked)[kConn];
  conn.owner.received(conn, data, isBinary);
}

/** One message's place in its connection's reply order. */
export interface Slot {
  /** Undefined for work outside any connection (an app's `api.run`). */
  conn: Connection | undefined;
  /** The result's kind; `PENDING` until the pool answers. */
  kind: Kind | typeof PENDING;
  /** The reply's bytes (TEXT, BINARY), the failure's message (ERROR), or null. */
  data: Buffer | string | null;
  /** Takes the result instead of sending it (`conn.run`, a hook held in the order). */
  take?: ((kind: Kind, data: Buffer | string | null) => void) | undefined;
}

/** One WebSocket connection. */
export class Connection {
  /** The connections of the worker it belongs to. */
  readonly owner: Connections;
  /** Its number in this process (its id, made when first asked for). */
  readonly #n: number;
  /** What the app's `upgrade` hook returned. */
  readonly context: unknown;
  /** The subprotocol: `wsdrain.v1`, or '' for plain messages. */
  readonly protocol: string;
  /** Topic subscriptions (see ./topics.ts), created on the first. */
  subs: Map<string, Subscription> | undefined;
  /** The app's view of it (see ./app.ts), created when first needed. */
  handle: object | undefined;
  /** The app's message hooks of this connection run one after the other (once there is one). */
  hooks: Promise<void> | undefined;
  #described: string | undefined;
  readonly ws: WebSocket;
  /** The TCP socket under `ws`. */
  readonly socket: Socket;
  /** Replies not yet sent, in message order; a slot is filled when its result arrives. */
  slots: Slot[] = NO_SLOTS;
  head = 0;
  /** Messages handed to the pool and not answered yet. */
  inflight = 0;
  /** Answered the heartbeat's last ping. */
  alive = true;
  /** Not read (backpressure). */
  paused = false;
  /** A close frame went out: messages after it are late, replies are not sent. */
  closeSent = false;
  /** The drain's close, sent once the replies owed are out (drain phase 3). */
  closeWhenIdle: { code: number; reason: string } | undefined;
  /** Closed by the drain with replies still owed: their work was abandoned. */
  abandoned = false;
  /** Terminated (no closing handshake) by a deadline or a forced stop. */
  terminated = false;
  /** permessage-deflate was negotiated: frames may wait behind compressions. */
  readonly deflate: boolean;
  /** Bytes it counts for in the worker's backlog (0: not backlogged). */
  backlog = 0;
  /** Messages and pings in the current one-second window, and when each window began. */
  messagesFrom = 0;
  messageCount = 0;
  pingsFrom = 0;
  pingCount = 0;

  constructor(owner: Connections, ws: WebSocket, socket: Socket, n: number, context: unknown) {
    this.owner = owner;
    this.#n = n;
    this.context = context;
    this.protocol = ws.protocol;
    this.ws = ws;
    this.socket = socket;
    this.deflate = ws.extensions.includes('permessage-deflate');
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN && !this.closeSent;
  }

  /** Unique in the cluster: a per-process prefix and a counter. */
  get id(): string {
    return `${ID_PREFIX}-${this.#n.toString(36)}`;
  }

  /** Its id and context as JSON, for pool handlers (a context JSON cannot carry is left out). */
  describe(): string {
    if (this.#described === undefined) {
      try {
        this.#described = JSON.stringify({ id: this.id, context: this.context });
      } catch {
        this.#described = JSON.stringify({ id: this.id });
      }
    }
    return this.#described;
  }
}

/** Counters of the connections, read by the metrics. */
export interface ConnectionStats {
  accepted: number;
  closedByCode: Map<number, number>;
  handlerErrors: number;
  /** Terminated past --max-buffered or --max-buffered-total. */
  slowConsumers: number;
  rateLimited: number;
  heartbeatTimeouts: number;
  /** Fragmented messages not finished within --message-timeout (closed with 1008). */
  unfinishedMessages: number;
}

/** What a drain watches while it runs. */
export interface DrainWatch {
  /** A reply owed before the close frame was sent (or, abandoned, dropped). */
  replied(conn: Connection): void;
  /** A message arrived after its connection's close frame. */
  late(conn: Connection): void;
}

export interface ConnectionsOptions {
  log: Logger;
  rateLimit: number;
  maxBuffered: number;
  maxBufferedTotal: number;
  /** Hands a message to the pool; its result comes back through {@link Connections.result}. */
  submit: (data: Buffer, isBinary: boolean, slot: Slot) => void;
  /**
   * Takes every message of an open connection (an app, the wsdrain.v1 subprotocol); without
   * it, each goes to the pool and its reply comes back.
   */
  receive?: ((conn: Connection, data: Buffer, isBinary: boolean) => void) | undefined;
  /** Publications a pool handler asked for with its reply (`{ reply, publish }`). */
  publish?: ((conn: Connection, topic: unknown, data: unknown) => void) | undefined;
}

/**
 * The connections of one worker. Emits `'close' (conn, code, clean)` when one closes; `clean`
 * is true when the closing handshake completed both ways.
 */
export class Connections extends EventEmitter {
  readonly all = new Set<Connection>();
  readonly stats: ConnectionStats = {
    accepted: 0,
    closedByCode: new Map(),
    handlerErrors: 0,
    slowConsumers: 0,
    rateLimited: 0,
    heartbeatTimeouts: 0,
    unfinishedMessages: 0,
  };
  /** Set while a drain runs. */
  watch: DrainWatch | undefined;
  /** The payload of the heartbeat's current pings (see ./heartbeat.ts). */
  pingToken: Buffer = Buffer.alloc(0);
  readonly #o: ConnectionsOptions;
  readonly log: Logger;
  #ready = new Set<Connection>();
  #readyScheduled = false;
  #paused = new Set<Connection>();
  #poolPressure = false;
  readonly #buffers: BufferLimits<Connection>;
  /** Sockets whose reading is held back while a burst of close frames goes out. */
  #held: Socket[] | undefined;
  /** Connections corked by {@link write} until the end of this turn. */
  #corked = new Set<Connection>();
  #ids = 0;

  constructor(o: ConnectionsOptions) {
    super();
    this.#o = o;
    this.log = o.log;
    this.#buffers = new BufferLimits(o.log, o.maxBuffered, o.maxBufferedTotal, this.stats);
  }

  get size(): number {
    return this.all.size;
  }

  /**
   * A WebSocket connection opened on `socket`. Its listeners are functions shared by every
   * connection (the connection is a property of its ws), not closures of its own.
   */
  add(ws: WebSocket, socket: Socket, context?: unknown): Connection {
    const conn = new Connection(this, ws, socket, ++this.#ids, context);
    (ws as Marked)[kConn] = conn;
    ws.on('error', wsOnError);
    this.all.add(conn);
    this.stats.accepted++;
    ws.on('close', wsOnClose);
    ws.on('ping', wsOnPing);
    ws.on('pong', wsOnPong);
    ws.on('message', wsOnMessage);
    if (this.#poolPressure) this.#pause(conn);
    return conn;
  }

  /** The connection of a ws WebSocket of this worker, if it is one. */
  of(ws: object): Connection | undefined {
    return (ws as Partial<Marked>)[kConn];
  }

  /** @internal A connection closed: emits 'close' (conn, code, clean, reason). */
  closed(conn: Connection, code: number, reason: Buffer): void {
    this.all.delete(conn);
    this.#buffers.forget(conn);
    this.#paused.delete(conn);
    forgetReceiver(conn.ws);
    this.stats.closedByCode.set(code, (this.stats.closedByCode.get(code) ?? 0) + 1);
    this.emit('close', conn, code, !conn.terminated && closedCleanly(conn.ws), reason.toString());
  }

  /** @internal The peer pinged: a flood is closed with 1008; ws queued the pong already. */
  pinged(conn: Connection): void {
    if (overRate(conn, true, PING_LIMIT_PER_SECOND)) {
      this.stats.rateLimited++;
      this.close(conn, CloseCode.POLICY, 'ping flood');
      return;
    }
    // The pong counts like any other byte for this client.
    this.checkBuffered(conn);
  }

  /** @internal A message from the peer. */
  received(conn: Connection, data: Buffer, isBinary: boolean): void {
    if (conn.closeSent || conn.ws.readyState !== WebSocket.OPEN) {
      // RFC 6455: no data after a close frame. Count it, never answer it.
      this.watch?.late(conn);
      return;
    }
    const limit = this.#o.rateLimit;
    if (limit > 0 && overRate(conn, false, limit)) {
      this.stats.rateLimited++;
      this.close(conn, CloseCode.POLICY, 'rate limit exceeded');
      return;
    }
    if (this.#o.receive) this.#o.receive(conn, data, isBinary);
    else this.submit(conn, data, isBinary);
  }

  /**
   * Hands a message of `conn` to the pool, in the connection's order: its reply is sent, or,
   * with `take`, given to `take` instead.
   */
  submit(conn: Connection, data: Uint8Array, isBinary: boolean, take?: Slot['take']): void {
    // The pool copies the bytes out of ws's receive buffer (a view would carry the whole
    // chunk); text is decoded in the pool thread.
    this.#o.submit(data as Buffer, isBinary, this.#slot(conn, take));
  }

  /**
   * Counts work done elsewhere (an app hook) as in flight on `conn`, like a message at the
   * pool: it weighs on the connection's backpressure, and a drain's close frame waits for it.
   * Replies do not wait for it (a hook may wait for the pool itself). Call the result once
   * the work is done.
   */
  hold(conn: Connection): () => void {
    conn.inflight++;
    if (conn.inflight >= CONN_HIGH_WATER) this.#pause(conn);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      conn.inflight--;
      this.watch?.replied(conn);
      this.#settled(conn);
    };
  }

  #slot(conn: Connection, take: Slot['take']): Slot {
    const slot: Slot = { conn, kind: PENDING, data: null, take };
    if (conn.slots === NO_SLOTS) conn.slots = [];
    conn.slots.push(slot);
    conn.inflight++;
    if (conn.inflight >= CONN_HIGH_WATER) this.#pause(conn);
    return slot;
  }

  /**
   * Writes a frame built once for many connections (a publication): in order with the rest,
   * corked until the end of this event-loop turn, so everything due to a socket in one turn
   * leaves in one system call. False when `conn` is closing.
   */
  write(conn: Connection, frame: Frame): boolean {
    if (!conn.open) return false;
    if (!this.#corked.has(conn)) {
      conn.socket.cork();
      this.#corked.add(conn);
      if (this.#corked.size === 1) setImmediate(this.#uncorkAll);
    }
    writeFrame(conn.ws, conn.socket, frame);
    return true;
  }

  #uncorkAll = (): void => {
    const corked = this.#corked;
    this.#corked = new Set();
    for (const conn of corked) {
      conn.socket.uncork();
      this.checkBuffered(conn);
    }
  };

  /** The pool's result for one message. */
  result(slot: Slot, kind: Kind, data: Buffer | string | null): void {
    if (!slot.conn) {
      slot.take?.(kind, data);
      return;
    }
    slot.kind = kind;
    slot.data = data;
    this.#ready.add(slot.conn);
    if (!this.#readyScheduled) {
      this.#readyScheduled = true;
      queueMicrotask(this.#deliverReady);
    }
  }

  /** Delivers, once per connection, every reply a pool batch has just answered. */
  #deliverReady = (): void => {
    this.#readyScheduled = false;
    const conns = this.#ready;
    this.#ready = new Set();
    for (const conn of conns) this.#deliver(conn);
  };

  /** Sends the answered replies at the head of the connection's queue, in order. */
  #deliver(conn: Connection): void {
    const { slots, ws } = conn;
    let corked = false;
    while (conn.head < slots.length && slots[conn.head]!.kind !== PENDING) {
      const { kind, data, take } = slots[conn.head]!;
      slots[conn.head] = undefined as never;
      conn.head++;
      conn.inflight--;
      this.watch?.replied(conn);
      if (take && kind !== Kind.ERROR) {
        take(kind as Kind, data);
        continue;
      }
      if (kind === Kind.COMPOSITE) {
        this.#composite(conn, data as Buffer);
        continue;
      }
      if (kind === Kind.NONE || ws.readyState !== WebSocket.OPEN || conn.closeSent) {
        take?.(kind as Kind, data);
        continue;
      }
      if (kind === Kind.ERROR) {
        take?.(kind, data);
        this.stats.handlerErrors++;
        const err = new HandlerError(data as string);
        this.#o.log.warn(
          { code: err.code, err: err.message },
          'handler failed; closing connection with 1011',
        );
        this.close(conn, CloseCode.INTERNAL, 'handler error');
        continue;
      }
      // Replies that are ready together leave together: one writev for the batch instead of
      // one system call per message (the largest cost of the echo path in profiles).
      if (!corked) {
        corked = true;
        conn.socket.cork();
      }
      if (kind === Kind.TEXT && conn.protocol === PROTOCOL_V1) {
        // A wsdrain.v1 client gets the handler's text reply as a `message`.
        ws.send(JSON.stringify({ type: 'message', data: (data as Buffer).toString() }), AS_TEXT);
      } else {
        ws.send(data as Buffer, kind === Kind.TEXT ? AS_TEXT : AS_BINARY);
      }
    }
    if (corked) {
      conn.socket.uncork();
      // Measured once the batch went to the kernel: what it did not take is what waits.
      this.checkBuffered(conn);
    }
    if (conn.head === slots.length) {
      slots.length = 0;
      conn.head = 0;
    } else if (conn.head > 1024) {
      conn.slots = slots.slice(conn.head);
      conn.head = 0;
    }
    this.#settled(conn);
  }

  /**
   * A handler's `{ reply, publish }`: the reply is sent as any reply (if the connection is
   * open), then the publications are made, in order (they go to subscribers either way).
   */
  #composite(conn: Connection, json: Buffer): void {
    const r = JSON.parse(json.toString()) as {
      data?: string;
      b64?: string;
      publish?: Array<{ topic?: unknown; data?: unknown; b64?: string }>;
    };
    if (conn.open && (r.data !== undefined || r.b64 !== undefined)) {
      if (r.b64 !== undefined) conn.ws.send(Buffer.from(r.b64, 'base64'), AS_BINARY);
      else if (conn.protocol === PROTOCOL_V1) {
        conn.ws.send(JSON.stringify({ type: 'message', data: r.data }), AS_TEXT);
      } else conn.ws.send(r.data as string, AS_TEXT);
      this.checkBuffered(conn);
    }
    for (const p of r.publish ?? []) {
      const data = p.b64 !== undefined ? new Uint8Array(Buffer.from(p.b64, 'base64')) : p.data;
      this.#o.publish?.(conn, p.topic, data);
    }
  }

  /** After work of `conn` finished: read it again below half, close it if the drain waits. */
  #settled(conn: Connection): void {
    if (
      conn.paused &&
      !conn.closeWhenIdle &&
      !this.#poolPressure &&
      conn.inflight <= CONN_HIGH_WATER / 2
    ) {
      this.#resume(conn);
    }
    if (conn.inflight === 0 && conn.closeWhenIdle) {
      this.close(conn, conn.closeWhenIdle.code, conn.closeWhenIdle.reason);
    }
  }

  /**
   * Sends a close frame with `code` (always a code: without one peers see 1005) and reads
   * on, so the peer's close frame is seen. Idempotent.
   */
  close(conn: Connection, code: number, reason: string): void {
    if (conn.closeSent) return;
    conn.closeSent = true;
    conn.closeWhenIdle = undefined;
    if (conn.paused) {
      conn.paused = false;
      this.#paused.delete(conn);
    }
    conn.ws.close(code, reason);
    // Half-close right behind the close frame: the peer sees the frame and the FIN together,
    // so its connection is finished as soon as it has answered, without waiting for this
    // process to read that answer and close. The read side stays open: the peer's close
    // frame is still read (and counted clean), and so is anything it sent before it.
    //
    // Not with permessage-deflate: there ws queues every frame behind the compressions under
    // way, the close frame included, so a FIN now could reach the peer before that frame
    // (1006). And the peer's own close frame may be queued the same way on its side when our
    // FIN arrives: ws clients end their socket on a FIN at once, losing it. ws sends the FIN
    // itself once both close frames are through.
    if (!conn.deflate) conn.socket.end();
    conn.ws.resume();
    if (this.#held && stopReading(conn.socket)) this.#held.push(conn.socket);
    this.checkBuffered(conn);
  }

  /**
   * Sends a close frame synchronously, for the moment before this process exits (its primary
   * died): frames ws holds behind a compression are dropped instead of delaying the close.
   */
  closeNow(conn: Connection, code: number, reason: string): void {
    if (conn.closeSent || conn.ws.readyState !== WebSocket.OPEN) return;
    conn.closeSent = true;
    if (!closeFrameNow(conn.ws, conn.socket, code, reason)) conn.ws.terminate();
  }

  /** Terminates one connection (no handshake). */
  terminate(conn: Connection): void {
    conn.terminated = true;
    conn.ws.terminate();
  }

  /** Terminates every connection; returns how many. */
  terminateAll(): number {
    let n = 0;
    for (const conn of this.all) {
      this.terminate(conn);
      n++;
    }
    return n;
  }

  /**
   * From now until {@link releaseReads}, sockets closed with {@link close} are not read:
   * their peers' answers wait in the kernel. A drain sends every close frame first, and the
   * CPU this process would spend reading answers goes to the peers that still wait for
   * their close frame.
   */
  holdReads(): void {
    this.#held ??= [];
  }

  /** Reads the sockets held since {@link holdReads} again. */
  releaseReads(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const socket of held) startReading(socket);
  }

  /** Holds what is queued for `conn` against the buffer limits; false when it is gone. */
  checkBuffered(conn: Connection): boolean {
    return this.#buffers.check(conn);
  }

  /** Stops reading `conn` (a drain waits for its replies): its close resumes reading. */
  stopReading(conn: Connection): void {
    this.#pause(conn);
  }

  /** The pool is saturated (true) or back at half (false). */
  poolPressure(on: boolean, pending: number): void {
    this.#poolPressure = on;
    if (on) {
      this.#o.log.debug({ pending }, 'pool saturated: pausing readers');
      for (const conn of this.all) this.#pause(conn);
    } else {
      for (const conn of this.#paused) {
        if (!conn.closeWhenIdle && conn.inflight <= CONN_HIGH_WATER / 2) this.#resume(conn);
      }
    }
  }

  #pause(conn: Connection): void {
    if (conn.paused || conn.closeSent) return;
    conn.paused = true;
    this.#paused.add(conn);
    conn.ws.pause();
  }

  #resume(conn: Connection): void {
    if (!conn.paused) return;
    conn.paused = false;
    this.#paused.delete(conn);
    conn.ws.resume();
  }
}
