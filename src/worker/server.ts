/**
 * The server of one worker and its lifecycle. The rooms it is built from:
 *
 *     transport.ts   the HTTP(S) server, the WebSocket server's options, binding the port
 *     http.ts        /healthz, /readyz, 426, answers to broken requests
 *     admission.ts   who gets in: descriptors, idle eviction, per-IP caps, upgrade checks
 *     handback.ts    in a cluster, new connections a held worker gives back to the primary
 *     connection.ts  each connection: ordering, backpressure, buffer limits, closing
 *     heartbeat.ts   liveness: pings, unfinished messages
 *     pool.ts        the handler's threads
 *     drain.ts       the graceful stop, six phases (drainServer)
 *
 * Lifecycle:
 *
 *     starting --listen()--> running --drain--> draining --> closed
 *                               \------terminateAll(), shutdown()--/
 *
 * Every socket, raw or WebSocket, gets an 'error' listener before anything else can happen.
 */
import type { IncomingMessage, Server } from 'node:http';
import { type AddressInfo, Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import { type Broker, LocalBroker } from '../app/broker.js';
import type { Sequencer } from '../app/sequencer.js';
import type { WsdrainApp } from '../app/types.js';
import { CloseCode } from '../codes.js';
import { hintReason } from '../hint.js';
import type { Logger } from '../log.js';
import { defaultThreads, type WsdrainOptions } from '../options.js';
import { msg, sendHandle } from '../protocol.js';
import { Admission, type AdmissionStats } from './admission.js';
import { AppRuntime } from './app.js';
import { type Connection, type ConnectionStats, Connections, type Slot } from './connection.js';
import { Handback } from './handback.js';
import { Heartbeat } from './heartbeat.js';
import { refuse } from './http.js';
import { MessagePool } from './pool.js';
import { idempotentEnds } from './socket.js';
import { bind, createHttp, createWss, serve, usesTls } from './transport.js';

export type ServerState = 'starting' | 'running' | 'draining' | 'closed';

/** Options of one server: the CLI options plus a logger, and what an embedder brings. */
export type ServerOptions = WsdrainOptions & {
  logger: Logger;
  /** The application (else `--app` is loaded by the worker process, or none). */
  application?: WsdrainApp | undefined;
  /** The broker of publications (default: one of its own, in this process). */
  broker?: Broker | undefined;
  /** The cluster worker id (0: a single process). */
  workerId?: number | undefined;
};

/** Counters of one server (a copy, taken when asked). */
export interface ServerStats extends ConnectionStats, AdmissionStats {
  /** Upgrades refused with 503 while draining and still listening. */
  refusedDraining: number;
  /** Upgrades completed after the listener closed, closed at once with the drain code. */
  lateUpgrades: number;
}

function noop(): void {}

/**
 * One worker's server: `listen()`, then to stop, `drainServer()` (graceful, see ./drain.ts)
 * or `terminateAll()` and `shutdown()` (forced).
 */
export class WsdrainServer {
  /** @internal */
  readonly options: ServerOptions;
  /** @internal */
  readonly log: Logger;
  /** @internal */
  readonly http: Server;
  /** @internal */
  readonly wss: WebSocketServer;
  /** @internal */
  readonly pool: MessagePool<Slot>;
  /** @internal The WebSocket connections. */
  readonly conns: Connections;
  /** @internal */
  readonly admission: Admission;
  /** @internal In a cluster: while held by the primary, new connections go back to it. */
  readonly handback: Handback;
  /** @internal */
  readonly heartbeat: Heartbeat;
  /** @internal The application, topics and the wsdrain.v1 subprotocol. */
  readonly app: AppRuntime;
  /** @internal The sequencer, when this server holds its own broker. */
  readonly sequencer: Sequencer | undefined;
  /** @internal The broker of publications (its health is part of readiness). */
  readonly broker: Broker;
  #stopSweeping: (() => void) | undefined;
  #state: ServerState = 'starting';
  #clusterReady = true;
  #listening = false;
  #upgrading = 0;
  #refusedDraining = 0;
  #lateUpgrades = 0;
  /** Code and reason of the drain, for upgrades that complete while it runs. */
  #drainClose: { code: number; reason: () => string } = {
    code: CloseCode.GOING_AWAY,
    reason: () => '',
  };

  constructor(options: ServerOptions) {
    this.options = options;
    this.log = options.logger;
    this.pool = new MessagePool({
      threads: options.threads ?? defaultThreads(options.workers),
      handler: options.handler,
      taskTimeout: options.taskTimeout,
      maxWork: options.maxWork,
      // Fair scheduling is per connection: its messages run in order, on one thread at a time.
      // Work outside any connection (an app's api.run) is an owner of its own.
      ownerOf: (slot) => slot.conn ?? slot,
      // A handler of the user's is told where each message comes from; the echo is not.
      describe:
        options.handler || options.application ? (slot) => slot.conn?.describe() : undefined,
      onResult: (slot, kind, data) => this.conns.result(slot, kind, data),
      onPressure: (on) => this.conns.poolPressure(on, this.pool.pending),
    });
    this.conns = new Connections({
      log: this.log,
      rateLimit: options.rateLimit,
      maxBuffered: options.maxBuffered,
      maxBufferedTotal: options.maxBufferedTotal,
      submit: (data, isBinary, slot) => this.pool.submit(data, isBinary, slot),
      receive: (conn, data, isBinary) => this.app.receive(conn, data, isBinary),
      publish: (conn, topic, data) => this.app.handlerPublish(conn, topic, data),
    });
    // One listener for every connection's end (not one closure per connection).
    this.conns.on('close', (conn: Connection, code: number, _clean: boolean, reason: string) => {
      this.admission.closed(conn.socket);
      this.app.closed(conn, code, reason);
    });
    const own = options.broker ? undefined : LocalBroker.standalone(options);
    this.sequencer = own?.sequencer;
    this.broker = options.broker ?? own!;
    this.app = new AppRuntime({
      log: this.log,
      worker: options.workerId ?? 0,
      app: options.application,
      broker: this.broker,
      conns: this.conns,
      submit: (data, isBinary, slot) => this.pool.submit(data, isBinary, slot),
      hookTimeout: options.hookTimeout,
      handshakeTimeout: options.handshakeTimeout,
      maxTopics: options.maxTopics,
      maxPayload: options.maxPayload,
      reconnectReason: () => hintReason('restart', options.reconnectWindow)(),
    });
    this.heartbeat = new Heartbeat(
      { log: this.log, heartbeat: options.heartbeat, messageTimeout: options.messageTimeout },
      this.conns,
    );
    this.admission = new Admission({
      log: this.log,
      maxConnections: options.maxConnections,
      maxConnectionsPerIp: options.maxConnectionsPerIp,
      handshakeTimeout: options.handshakeTimeout,
      origin: options.origin,
      webSockets: () => this.conns.size + this.#upgrading,
    });
    const tls = usesTls(options);
    this.http = createHttp(options);
    this.handback = new Handback(this.http, (handle, hops, sent) =>
      sendHandle(undefined, msg({ type: 'handback', hops }), handle, sent),
    );
    this.wss = createWss(options);
    const probe = {
      ready: () => this.ready,
      state: () =>
        this.#state === 'running' && this.broker.healthy === false
          ? 'broker unavailable'
          : this.#state,
      closing: () => this.#state === 'draining' || this.#state === 'closed',
    };
    serve(this.http, {
      tls,
      log: this.log,
      probe,
      upgrade: (req, socket, head) => this.#onUpgrade(req, socket, head),
      accepted: (socket) => this.admission.onConnection(socket),
    });
  }

  /** starting, running, draining or closed. */
  get state(): ServerState {
    return this.#state;
  }

  /** Whether `/readyz` answers 200 (not while a remote broker is away). */
  get ready(): boolean {
    return this.#state === 'running' && this.#clusterReady && this.broker.healthy !== false;
  }

  /** Open WebSocket connections. */
  get connections(): number {
    return this.conns.size;
  }

  /** WebSocket connection limit (derived from the open-file limit unless set). */
  get maxConnections(): number {
    return this.admission.maxConnections;
  }

  /** The server's counters, copied now. */
  stats(): ServerStats {
    return {
      ...this.conns.stats,
      closedByCode: new Map(this.conns.stats.closedByCode),
      ...this.admission.stats,
      refusedDraining: this.#refusedDraining,
      lateUpgrades: this.#lateUpgrades,
    };
  }

  /** Loads the handler, binds the port; resolves with the bound address. */
  async listen(): Promise<AddressInfo> {
    await this.pool.ready();
    // With the threads up, the descriptors in use are known: derive the default limit now.
    this.admission.configure();
    await bind(this.http, this.options);
    this.handback.attach();
    // From now on errors are accept() failures (EMFILE, ENFILE): the server keeps
    // listening and accepts again once descriptors free up.
    this.http.on('error', (err: NodeJS.ErrnoException) => {
      this.log.error({ err: err.code ?? err.message }, 'accept failed');
    });
    this.#state = 'running';
    this.#listening = true;
    this.heartbeat.start();
    this.#stopSweeping = this.sequencer?.sweeping();
    return this.http.address() as AddressInfo;
  }

  #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', noop);
    this.admission.upgrading(socket as Socket);
    if (this.#state === 'closed' || (this.#state === 'draining' && this.#listening)) {
      // Draining but still listening (the --drain-delay, while load balancers catch up):
      // new clients are told to go elsewhere.
      this.#refusedDraining++;
      return refuse(socket, '503 Service Unavailable', 'Retry-After: 1\r\n');
    }
    const refusal = this.admission.check(req);
    if (refusal) return refuse(socket, refusal.status, refusal.headers);
    this.#upgrading++;
    let counted = true;
    const done = (): void => {
      if (counted) {
        counted = false;
        this.#upgrading--;
      }
    };
    socket.once('close', done);
    const handshake = (context: unknown): void => {
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        done();
        // This closure holds the upgrade request: let go of it now, not when the socket ends.
        socket.off('close', done);
        idempotentEnds(ws);
        this.#onConnection(ws, socket as Socket, context);
      });
    };
    if (!this.app.hasUpgradeHook) return handshake(undefined);
    // The app decides who this is before the handshake completes.
    this.app.upgrade(req).then((outcome) => {
      if (socket.destroyed) return done();
      if (outcome.ok) return handshake(outcome.context);
      done();
      refuse(socket, outcome.status, outcome.headers, outcome.body);
    });
  }

  #onConnection(ws: WebSocket, socket: Socket, context: unknown): void {
    const conn = this.conns.add(ws, socket, context);
    this.admission.opened(socket);
    if (this.#state === 'draining') {
      // The listener was closed, but this upgrade was already on its way: close it with the
      // drain code at once, so the client learns why and reconnects elsewhere.
      this.#lateUpgrades++;
      this.conns.close(conn, this.#drainClose.code, this.#drainClose.reason());
      return;
    }
    this.app.opened(conn);
  }

  /** @internal Set by the cluster primary: `/readyz` is 200 only once every worker listens. */
  setClusterReady(ready: boolean): void {
    this.#clusterReady = ready;
  }

  /**
   * @internal Phase 1 of a drain: readiness off, no more pings. Until {@link closeListener},
   * the port stays open so probes get /readyz 503 (and /healthz 200) and new upgrades get 503
   * with Retry-After; upgrades that complete meanwhile are closed with `code` at once.
   */
  beginDrain(code: number, reason: () => string): boolean {
    if (this.#state !== 'running' && this.#state !== 'starting') return false;
    this.#state = 'draining';
    // New connections get the drain's answer here, not another worker's.
    this.handback.held = false;
    this.#drainClose = { code, reason };
    this.heartbeat.pause();
    return true;
  }

  /**
   * @internal End of phase 1 (after the delay): the listener closes. Upgrades that still
   * arrive on connections accepted before are completed and closed with the drain code.
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
   * @internal Listens again after {@link closeListener} (a rolling restart that stopped), on
   * the configured port: in a cluster that joins the primary's shared listening socket. Does
   * nothing once a drain has begun.
   */
  async reopenListener(): Promise<void> {
    if (this.#listening || this.#state !== 'running') return;
    this.#listening = true;
    try {
      await bind(this.http, this.options);
    } catch (err) {
      this.#listening = false;
      throw err;
    }
    this.handback.attach();
    // A drain (or shutdown) that began while binding wanted the listener closed.
    if (!this.#listening) NetServer.prototype.close.call(this.http);
  }

  /**
   * @internal Connections that may still become WebSocket connections: upgrades under way, and
   * connections accepted that have not sent their request yet.
   */
  get arriving(): number {
    return this.#upgrading + this.admission.silent;
  }

  /** Terminates every WebSocket connection now (no closing handshake); returns how many. */
  terminateAll(): number {
    return this.conns.terminateAll();
  }

  /** Final step: stop the timers and the pool, drop leftover HTTP connections. Idempotent. */
  async shutdown(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.heartbeat.stop();
    this.#stopSweeping?.();
    this.admission.stop();
    this.#listening = false;
    this.http.close();
    this.http.closeAllConnections();
    await this.pool.destroy();
  }
}
