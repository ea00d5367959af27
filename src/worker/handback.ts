/**
 * A worker's side of the cluster's balance (primary/balance.ts): while the primary holds this
 * worker, every new connection Node's round robin hands it goes back to the primary, unread,
 * which gives it to the least loaded worker. The worker stays on the shared listening socket
 * all the while, so no worker dying, held ones included, ever leaves the port without one.
 *
 * The connection is caught at the listener's handle, before Node makes a socket of it: nothing
 * is read, nothing counted, and the worker it goes to takes it as if it had accepted it.
 */
import type { Server } from 'node:net';
import { type ConnHandle, HANDLES_IN_FLIGHT, MAX_HOPS } from '../protocol.js';

/** What Node's net.Server sets on its listening handle: called for every accepted connection. */
type OnConnection = (this: ListenHandle, err: number, handle: ConnHandle | undefined) => void;
interface ListenHandle {
  onconnection: OnConnection;
}

export class Handback {
  readonly #server: Server;
  readonly #send: (handle: ConnHandle, hops: number, sent: () => void) => boolean;
  /** Connections handed back that have not left this process yet. */
  #inFlight = 0;
  /** Net's own connection callback, taken from the first handle wrapped. */
  #accept: OnConnection | undefined;
  /** Held by the primary: new connections go back to it. */
  held = false;
  /** Connections handed back, and taken from other workers. */
  readonly stats = { handedBack: 0, taken: 0 };

  /**
   * `send` hands a connection to the primary, calling `sent` once it has left; false when there
   * is no primary to take it.
   */
  constructor(
    server: Server,
    send: (handle: ConnHandle, hops: number, sent: () => void) => boolean,
  ) {
    this.#server = server;
    this.#send = send;
  }

  #handle(): ListenHandle | undefined {
    return (this.#server as unknown as { _handle: ListenHandle | null })._handle ?? undefined;
  }

  /** Wraps the listener's connection callback; call after every listen (each has a new handle). */
  attach(): void {
    const handle = this.#handle();
    if (!handle) return;
    const accept = handle.onconnection;
    this.#accept ??= accept;
    handle.onconnection = (err, conn) => {
      // Not more than a few at once (see HANDLES_IN_FLIGHT): past that, this worker takes it.
      const handBack = this.held && this.#inFlight < HANDLES_IN_FLIGHT;
      if (handBack && err === 0 && conn && this.#handBack(conn, 1)) return;
      accept.call(handle, err, conn);
    };
  }

  /**
   * A connection the primary handed this worker (from a held one): taken as if accepted here,
   * held or not. Without a listener (it closed: a roll stopped this worker, or it drains), it
   * goes back to the primary once more, and is closed after {@link MAX_HOPS} workers.
   */
  take(conn: ConnHandle, hops: number): void {
    const handle = this.#handle();
    if (handle && this.#accept) {
      this.stats.taken++;
      this.#accept.call(handle, 0, conn);
      return;
    }
    if (hops >= MAX_HOPS || !this.#handBack(conn, hops + 1)) conn.close();
  }

  #handBack(conn: ConnHandle, hops: number): boolean {
    if (!this.#send(conn, hops, () => this.#inFlight--)) return false;
    this.#inFlight++;
    this.stats.handedBack++;
    return true;
  }
}
