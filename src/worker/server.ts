/**
 * The server of one worker: HTTP (`/healthz`, `/readyz`, 426 for the rest) and a `ws`
 * WebSocketServer in noServer mode, with connection limits, handshake timeouts, a heartbeat,
 * per-connection ordering, rate and buffer limits, and the handler pool.
 *
 * Lifecycle:
 *
 *     STARTING --listen()--> RUNNING --drain()--> DRAINING --> CLOSED
 *                                \------------terminateAll()---/
 *
 * Every socket, raw or WebSocket, gets an 'error' listener before anything else can happen.
 */
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { HandlerError, ListenError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  defaultMaxConnections,
  defaultThreads,
  HTTP_EXTRA,
  openFileCount,
  openFileLimit,
  type WsdrainOptions,
} from '../options.js';
import { Kind, MessagePool } from './pool.js';
import { idempotentEnds, startReading, stopReading } from './socket.js';

export type ServerState = 'starting' | 'running' | 'draining' | 'closed';

/** Close codes wsdrain sends itself. */
export const CloseCode = {
  GOING_AWAY: 1001,
  POLICY: 1008,
  INTERNAL: 1011,
  RESTART: 1012,
  TRY_AGAIN: 1013,
} as const;

/** Per-connection pending messages at which that socket stops being read. */
const CONN_HIGH_WATER = 128;

/** Sockets pinged per event-loop turn in a heartbeat round. */
const HEARTBEAT_CHUNK = 1000;

/** Pings one peer may send per second; more is a flood, closed with 1008. */
export const PING_LIMIT_PER_SECOND = 100;

/** Per-connection bookkeeping. */
export interface Conn {
  ws: WebSocket;
  /** The TCP socket under `ws`. */
  socket: Socket;
  /** Replies not yet sent, in message order; a slot is filled when its result arrives. */
  slots: Slot[];
  head: number;
  /** Messages handed to the pool and not answered yet. */
  inflight: number;
  alive: boolean;
  paused: boolean;
  /** Close this socket with this code once `inflight` reaches 0 (drain phase 3). */
  closeWhenIdle: number | undefined;
  closeReason: string;
  /** The drain sent its close frame (messages after it are "late"). */
  closeSent: boolean;
  /** Terminated by the drain deadline. */
  terminated: boolean;
  /** Messages and pings counted in the current one-second window. */
  messages: RateWindow;
  pings: RateWindow;
}

/** One message's place in its connection's reply order. */
export interface Slot {
  conn: Conn;
  /** The result's kind; `PENDING` until the pool answers. */
  kind: Kind | typeof PENDING;
  /** The reply's bytes (TEXT, BINARY), the failure's message (ERROR), or null. */
  data: Buffer | string | null;
}

/** Kind of a slot whose result has not arrived. */
const PENDING = -1;

/** ws.send options of the two reply kinds. */
const AS_TEXT = { binary: false } as const;
const AS_BINARY = { binary: true } as const;

/** A one-second counting window. */
interface RateWindow {
  start: number;
  count: number;
}

/** Counts one event; true when the window now holds more than `limit`. */
function overRate(w: RateWindow, limit: number, now = Date.now()): boolean {
  if (now - w.start >= 1000) {
    w.start = now;
    w.count = 0;
  }
  return ++w.count > limit;
}

/** Counters the drain report and the metrics read. */
export interface ServerStats {
  accepted: number;
  closedByCode: Map<number, number>;
  refusedFull: number;
  refusedOrigin: number;
  refusedDraining: number;
  lateUpgrades: number;
  lateMessages: number;
  inflightCompletedDuringDrain: number;
  handlerErrors: number;
  slowConsumers: number;
  rateLimited: number;
  heartbeatTimeouts: number;
}

/** Options of one server: the CLI options plus a logger. */
export type ServerOptions = WsdrainOptions & { logger: Logger };

function noop(): void {}

/**
 * One worker's server. Emits `'conn-close' (conn, code)` when a WebSocket connection closes. Use {@link WsdrainServer.listen} then, to stop,
 * `drainServer()` from `./drain.js` (graceful) or {@link WsdrainServer.terminateAll} (forced).
 */
export class WsdrainServer extends EventEmitter {
  readonly options: ServerOptions;
  readonly log: Logger;
  readonly http: Server;
  readonly wss: WebSocketServer;
  readonly pool: MessagePool<Slot>;
  readonly conns = new Set<Conn>();
  readonly stats: ServerStats = {
    accepted: 0,
    closedByCode: new Map(),
    refusedFull: 0,
    refusedOrigin: 0,
    refusedDraining: 0,
    lateUpgrades: 0,
    lateMessages: 0,
    inflightCompletedDuringDrain: 0,
    handlerErrors: 0,
    slowConsumers: 0,
    rateLimited: 0,
    heartbeatTimeouts: 0,
  };
  /** WebSocket connection limit; fixed in listen() when derived from the open-file limit. */
  maxConnections: number;
  state: ServerState = 'starting';
  /** Set by the cluster primary: false until every worker listens. */
  clusterReady = true;
  /** Code and reason used for upgrades that arrive while draining. */
  drainClose: { code: number; reason: () => string } = {
    code: CloseCode.GOING_AWAY,
    reason: () => '',
  };
  #beating = false;
  #ready = new Set<Conn>();
  #readyScheduled = false;
  #upgrading = 0;
  #listening = false;
  /** Open-file limit and descriptors in use before any client (set in listen()). */
  #fdLimit = Number.POSITIVE_INFINITY;
  #fdBaseline = 0;
  #fdExhausted = false;
  #paused = new Set<Conn>();
  #heartbeat: NodeJS.Timeout | undefined;
  /** Sockets whose reading is held back while a burst of close frames goes out. */
  #held: Socket[] | undefined;

  constructor(options: ServerOptions) {
    super();
    this.options = options;
    this.log = options.logger;
    this.maxConnections = options.maxConnections ?? Number.MAX_SAFE_INTEGER;
    const handshake = options.handshakeTimeout;
    this.http = createServer({
      headersTimeout: handshake,
      requestTimeout: handshake * 2,
      connectionsCheckingInterval: Math.min(5000, Math.max(100, Math.floor(handshake / 4))),
      keepAliveTimeout: 5000,
    });
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: options.maxPayload,
      perMessageDeflate: options.perMessageDeflate,
      clientTracking: false,
      // ws would terminate (no close code) a peer with 60 unanswered pings; wsdrain limits
      // the ping rate itself and answers a flood with 1008.
      maxPendingAutoPongs: 0,
      // Bound ws's own per-socket close timer (30 s by default) by the drain budget.
      closeTimeout: options.drainTimeout,
    } as ConstructorParameters<typeof WebSocketServer>[0]);
    this.pool = new MessagePool({
      threads: options.threads ?? defaultThreads(options.workers),
      handler: options.handler,
      taskTimeout: options.taskTimeout,
      maxWork: options.maxWork,
      // Fair scheduling is per connection: its messages run in order, on one thread at a time.
      ownerOf: (slot) => slot.conn,
      onResult: (slot, kind, data) => this.#onResult(slot, kind, data),
      onPressure: (on) => this.#onPoolPressure(on),
    });
    this.http.on('request', (req, res) => this.#onRequest(req, res));
    this.http.on('upgrade', (req, socket, head) => this.#onUpgrade(req, socket, head));
    this.http.on('connection', (socket: Socket) => socket.on('error', noop));
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      this.log.debug({ err: err.code ?? err.message }, 'client error before upgrade');
      if (socket.writable && !(socket as Socket).writableEnded) {
        const status =
          err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
        socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      }
      socket.destroy();
    });
  }

  /** Whether `/readyz` answers 200. */
  get ready(): boolean {
    return this.state === 'running' && this.clusterReady;
  }

  /** Loads the handler, binds the port; resolves with the bound address. */
  async listen(): Promise<AddressInfo> {
    await this.pool.ready();
    // With the threads up, the descriptors in use are known: derive the default limit now.
    this.#fdLimit = openFileLimit() ?? Number.POSITIVE_INFINITY;
    this.#fdBaseline = openFileCount() ?? 64;
    this.maxConnections =
      this.options.maxConnections ?? defaultMaxConnections(this.#fdLimit, this.#fdBaseline);
    const fits = this.#fdLimit - this.#fdBaseline;
    if (this.maxConnections > fits) {
      this.log.warn(
        {
          maxConnections: this.maxConnections,
          openFileLimit: this.#fdLimit,
          inUse: this.#fdBaseline,
        },
        `--max-connections ${this.maxConnections} is more than the open-file limit allows (about ${fits}); beyond that the kernel drops new connections (EMFILE)`,
      );
    }
    // Accept a little beyond the WebSocket limit so health probes and 503s still get through,
    // but stop accepting before the process runs out of descriptors.
    this.http.maxConnections = this.maxConnections + HTTP_EXTRA;
    await this.#bind();
    // From now on errors are accept() failures (EMFILE, ENFILE): the server keeps
    // listening and accepts again once descriptors free up.
    this.http.on('error', (err: NodeJS.ErrnoException) => {
      this.log.error({ err: err.code ?? err.message }, 'accept failed');
    });
    this.state = 'running';
    this.#listening = true;
    if (this.options.heartbeat > 0) {
      this.#heartbeat = setInterval(() => void this.#beat(), this.options.heartbeat);
      this.#heartbeat.unref();
    }
    return this.http.address() as AddressInfo;
  }

  /** Binds the configured port and host; rejects with a ListenError. */
  #bind(): Promise<void> {
    const { port, host } = this.options;
    return new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new ListenError(`cannot listen on ${host}:${port}: ${err.code ?? err.message}`));
      };
      this.http.once('error', onError);
      this.http.listen({ port, host, backlog: 4096 }, () => {
        this.http.off('error', onError);
        resolve();
      });
    });
  }

  #fdsInUse(): number {
    return this.#fdBaseline + this.conns.size + this.#upgrading;
  }

  /** Open WebSocket connections. */
  get connections(): number {
    return this.conns.size;
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (req.method === 'GET' || req.method === 'HEAD') {
      if (path === '/healthz') return this.#plain(res, 200, 'ok\n');
      if (path === '/readyz') {
        if (this.ready) return this.#plain(res, 200, 'ready\n');
        res.setHeader('Retry-After', '1');
        return this.#plain(res, 503, `${this.state}\n`);
      }
    }
    res.setHeader('Upgrade', 'websocket');
    res.setHeader('Connection', 'Upgrade');
    this.#plain(res, 426, 'this is a WebSocket endpoint: send an Upgrade request\n');
  }

  #plain(res: ServerResponse, status: number, body: string): void {
    res.statusCode = status;
    res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    if (this.state === 'draining' || this.state === 'closed') res.setHeader('Connection', 'close');
    res.end(body);
  }

  #refuse(socket: Duplex, status: string, extra = ''): void {
    if (socket.writable) {
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n${extra}\r\n`);
    }
    socket.destroy();
  }

  #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', noop);
    if (this.state === 'closed' || (this.state === 'draining' && this.#listening)) {
      // Draining but still listening (the --drain-delay, while load balancers catch up):
      // new clients are told to go elsewhere.
      this.stats.refusedDraining++;
      return this.#refuse(socket, '503 Service Unavailable', 'Retry-After: 1\r\n');
    }
    const allowed = this.options.origin;
    if (allowed.length > 0 && !allowed.includes(req.headers.origin ?? '')) {
      this.stats.refusedOrigin++;
      return this.#refuse(socket, '403 Forbidden');
    }
    if (this.conns.size + this.#upgrading >= this.maxConnections) {
      this.stats.refusedFull++;
      return this.#refuse(socket, '503 Service Unavailable', 'Retry-After: 1\r\n');
    }
    this.#upgrading++;
    let counted = true;
    const done = (): void => {
      if (counted) {
        counted = false;
        this.#upgrading--;
      }
    };
    socket.once('close', done);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      done();
      idempotentEnds(ws);
      this.#onConnection(ws, socket as Socket);
    });
  }

  #onConnection(ws: WebSocket, socket: Socket): void {
    const conn: Conn = {
      ws,
      socket,
      slots: [],
      head: 0,
      inflight: 0,
      alive: true,
      paused: false,
      closeWhenIdle: undefined,
      closeReason: '',
      closeSent: false,
      terminated: false,
      messages: { start: 0, count: 0 },
      pings: { start: 0, count: 0 },
    };
    ws.on('error', (err: Error & { code?: string }) => {
      this.log.debug({ err: err.code ?? err.message }, 'websocket error');
    });
    this.conns.add(conn);
    this.stats.accepted++;
    if (!this.#fdExhausted && this.#fdsInUse() >= this.#fdLimit - 4) {
      this.#fdExhausted = true;
      this.log.error(
        { connections: this.conns.size, openFileLimit: this.#fdLimit },
        'open-file limit reached (EMFILE): new connections are dropped until sockets close',
      );
    }
    ws.on('close', (code: number) => {
      this.conns.delete(conn);
      if (this.#fdExhausted && this.#fdsInUse() < this.#fdLimit - 16) {
        this.#fdExhausted = false;
        this.log.info(
          { connections: this.conns.size },
          'below the open-file limit again: accepting',
        );
      }
      this.#paused.delete(conn);
      this.stats.closedByCode.set(code, (this.stats.closedByCode.get(code) ?? 0) + 1);
      this.emit('conn-close', conn, code);
    });
    ws.on('pong', () => {
      conn.alive = true;
    });
    ws.on('ping', () => {
      if (overRate(conn.pings, PING_LIMIT_PER_SECOND)) {
        this.stats.rateLimited++;
        this.closeConn(conn, CloseCode.POLICY, 'ping flood');
      }
    });
    ws.on('message', (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) =>
      this.#onMessage(conn, data as Buffer, isBinary),
    );
    if (this.state === 'draining') {
      // The listener was closed, but this upgrade was already on its way: close it with the
      // drain code at once, so the client learns why and reconnects elsewhere.
      this.stats.lateUpgrades++;
      this.closeConn(conn, this.drainClose.code, this.drainClose.reason());
    } else if (this.#poolPressure) {
      this.#pause(conn);
    }
  }

  #onMessage(conn: Conn, data: Buffer, isBinary: boolean): void {
    if (conn.closeSent || conn.ws.readyState !== WebSocket.OPEN) {
      // RFC 6455: no data after a close frame. Count it, never answer it.
      this.stats.lateMessages++;
      return;
    }
    const limit = this.options.rateLimit;
    if (limit > 0 && overRate(conn.messages, limit)) {
      this.stats.rateLimited++;
      this.closeConn(conn, CloseCode.POLICY, 'rate limit exceeded');
      return;
    }
    const slot: Slot = { conn, kind: PENDING, data: null };
    conn.slots.push(slot);
    conn.inflight++;
    if (conn.inflight >= CONN_HIGH_WATER) this.#pause(conn);
    // The pool copies the bytes out of ws's receive buffer (a view would carry the whole
    // chunk); text is decoded in the pool thread.
    this.pool.submit(data, isBinary, slot);
  }

  #onResult(slot: Slot, kind: Kind, data: Buffer | string | null): void {
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
  #deliver(conn: Conn): void {
    const { slots, ws } = conn;
    let corked = false;
    while (conn.head < slots.length && slots[conn.head]!.kind !== PENDING) {
      const { kind, data } = slots[conn.head]!;
      slots[conn.head] = undefined as never;
      conn.head++;
      conn.inflight--;
      if (this.state === 'draining') this.stats.inflightCompletedDuringDrain++;
      if (kind === Kind.NONE || ws.readyState !== WebSocket.OPEN || conn.closeSent) continue;
      if (kind === Kind.ERROR) {
        this.stats.handlerErrors++;
        const err = new HandlerError(data as string);
        this.log.warn(
          { code: err.code, err: err.message },
          'handler failed; closing connection with 1011',
        );
        this.closeConn(conn, CloseCode.INTERNAL, 'handler error');
        continue;
      }
      // Replies that are ready together leave together: one writev for the batch instead of
      // one system call per message (the largest cost of the echo path in profiles).
      if (!corked) {
        corked = true;
        conn.socket.cork();
      }
      ws.send(data as Buffer, kind === Kind.TEXT ? AS_TEXT : AS_BINARY);
      if (ws.bufferedAmount > this.options.maxBuffered) {
        // The peer does not read: a close frame would queue behind the data it ignores.
        this.stats.slowConsumers++;
        this.log.info({ buffered: ws.bufferedAmount }, 'slow consumer terminated');
        ws.terminate();
      }
    }
    if (corked) conn.socket.uncork();
    if (conn.head === slots.length) {
      slots.length = 0;
      conn.head = 0;
    } else if (conn.head > 1024) {
      conn.slots = slots.slice(conn.head);
      conn.head = 0;
    }
    if (conn.paused && !this.#poolPressure && conn.inflight <= CONN_HIGH_WATER / 2) {
      this.#resume(conn);
    }
    if (conn.inflight === 0) {
      if (conn.closeWhenIdle !== undefined) {
        this.closeConn(conn, conn.closeWhenIdle, conn.closeReason);
      }
    }
  }

  /**
   * Sends a close frame with `code` (always a code: without one peers see 1005) and reads
   * on, so the peer's close frame is seen. Idempotent.
   */
  closeConn(conn: Conn, code: number, reason: string): void {
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
    conn.socket.end();
    conn.ws.resume();
    if (this.#held && stopReading(conn.socket)) this.#held.push(conn.socket);
  }

  /**
   * From now until {@link releaseReads}, sockets closed with {@link closeConn} are not read:
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

  /** Terminates one connection (no handshake). */
  terminateConn(conn: Conn): void {
    conn.terminated = true;
    conn.ws.terminate();
  }

  #poolPressure = false;

  #onPoolPressure(on: boolean): void {
    this.#poolPressure = on;
    if (on) {
      this.log.debug({ pending: this.pool.pending }, 'pool saturated: pausing readers');
      for (const conn of this.conns) this.#pause(conn);
    } else {
      for (const conn of this.#paused) {
        if (conn.inflight <= CONN_HIGH_WATER / 2) this.#resume(conn);
      }
    }
  }

  #pause(conn: Conn): void {
    if (conn.paused || conn.closeSent) return;
    conn.paused = true;
    this.#paused.add(conn);
    conn.ws.pause();
  }

  #resume(conn: Conn): void {
    if (!conn.paused) return;
    conn.paused = false;
    this.#paused.delete(conn);
    conn.ws.resume();
  }

  /**
   * One heartbeat round: a peer that has not answered the previous ping is terminated, the
   * others are pinged. In chunks, so tens of thousands of pings do not stall the event loop.
   */
  async #beat(): Promise<void> {
    if (this.#beating) return;
    this.#beating = true;
    let n = 0;
    for (const conn of [...this.conns]) {
      if (this.state !== 'running') break;
      if (conn.closeSent || conn.ws.readyState !== WebSocket.OPEN) continue;
      if (!conn.alive) {
        this.stats.heartbeatTimeouts++;
        conn.ws.terminate();
      } else {
        conn.alive = false;
        conn.ws.ping();
      }
      if (++n % HEARTBEAT_CHUNK === 0) await new Promise<void>((r) => setImmediate(r));
    }
    this.#beating = false;
  }

  /**
   * Phase 1 of a drain: readiness off. Until {@link closeListener}, the port stays open so
   * probes get /readyz 503 (and /healthz 200) and new upgrades get 503 with Retry-After.
   */
  beginDrain(code: number, reason: () => string): void {
    if (this.state !== 'running' && this.state !== 'starting') return;
    this.state = 'draining';
    this.drainClose = { code, reason };
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  /**
   * End of phase 1 (after the delay): the listener closes. Upgrades that still arrive on
   * connections accepted before are completed and closed with the drain code at once.
   * Also used before a drain, when a rolling restart stops the old workers from accepting:
   * the server is still `running` then, so such upgrades are served as usual.
   */
  closeListener(): void {
    if (!this.#listening) return;
    this.#listening = false;
    // Idle HTTP connections stay open until shutdown(): an upgrade request may still be on
    // its way on one of them, and it must get the drain code, not a reset. Answers sent
    // while draining carry `Connection: close`. http.Server#close() would also close the
    // idle ones (Node 19+), so only the listening socket is closed here.
    NetServer.prototype.close.call(this.http);
  }

  /**
   * Listens again after {@link closeListener} (a rolling restart that stopped), on the
   * configured port: in a cluster that joins the primary's shared listening socket. Does
   * nothing once a drain has begun.
   */
  async reopenListener(): Promise<void> {
    if (this.#listening || this.state !== 'running') return;
    this.#listening = true;
    try {
      await this.#bind();
    } catch (err) {
      this.#listening = false;
      throw err;
    }
    // A drain (or shutdown) that began while binding wanted the listener closed.
    if (!this.#listening) NetServer.prototype.close.call(this.http);
  }

  /** Terminates every socket now (second signal); idempotent. */
  terminateAll(): number {
    let n = 0;
    for (const conn of this.conns) {
      this.terminateConn(conn);
      n++;
    }
    return n;
  }

  /** Final step: stop the pool, drop leftover HTTP connections. */
  async shutdown(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#listening = false;
    this.http.close();
    this.http.closeAllConnections();
    await this.pool.destroy();
  }
}
