/**
 * What a worker holds for clients that do not read. Every byte queued for a client counts,
 * replies, pongs, pings and close frames alike: past --max-buffered for one client, or
 * --max-buffered-total for the worker's clients together, the clients holding the most are
 * terminated (a close frame would only queue behind what they do not read) and counted.
 *
 * Only clients holding BACKLOG_FROM bytes or more are tracked towards the total, until their
 * socket drains: below that a socket holds no more than what one write leaves behind.
 */
import { WebSocket } from 'ws';
import type { Logger } from '../log.js';

const BACKLOG_FROM = 64 * 1024;

/** What the limits need of a connection. */
export interface Buffered {
  readonly ws: WebSocket;
  readonly socket: { once(event: 'drain', listener: () => void): unknown };
  /** Bytes it counts for in the worker's total (0: not tracked). */
  backlog: number;
}

export class BufferLimits<C extends Buffered> {
  readonly #log: Logger;
  /** Where the clients terminated by either limit are counted. */
  readonly #counts: { slowConsumers: number };
  readonly #perClient: number;
  readonly #total: number;
  readonly #tracked = new Set<C>();
  #bytes = 0;

  constructor(log: Logger, perClient: number, total: number, counts: { slowConsumers: number }) {
    this.#log = log;
    this.#counts = counts;
    this.#perClient = perClient;
    this.#total = total;
  }

  /** Holds what is queued for `conn` against both limits; false when it is gone. */
  check(conn: C): boolean {
    const { ws } = conn;
    if (ws.readyState === WebSocket.CLOSED) return false;
    const queued = ws.bufferedAmount;
    if (queued > this.#perClient) {
      this.#cut(conn, queued, 'slow consumer terminated');
      return false;
    }
    if (queued < BACKLOG_FROM && conn.backlog === 0) return true;
    this.#bytes += queued - conn.backlog;
    conn.backlog = queued;
    if (!this.#tracked.has(conn)) {
      this.#tracked.add(conn);
      // Past BACKLOG_FROM a write did return false, so 'drain' tells when it is all out.
      conn.socket.once('drain', () => this.forget(conn));
    }
    if (this.#bytes > this.#total) this.#shed();
    return (ws.readyState as number) !== WebSocket.CLOSED;
  }

  /** `conn` holds nothing any more (drained, or closed). */
  forget(conn: C): void {
    if (!this.#tracked.delete(conn)) return;
    this.#bytes -= conn.backlog;
    conn.backlog = 0;
  }

  /**
   * Past the worker's total: refresh what each tracked client holds (sockets drain without
   * telling), then terminate those holding the most until the total is back under the limit.
   */
  #shed(): void {
    let total = 0;
    for (const conn of this.#tracked) {
      conn.backlog = conn.ws.bufferedAmount;
      total += conn.backlog;
    }
    this.#bytes = total;
    if (total <= this.#total) return;
    const largest = [...this.#tracked].sort((a, b) => b.backlog - a.backlog);
    for (const conn of largest) {
      if (this.#bytes <= this.#total) break;
      this.#cut(conn, conn.backlog, 'worker buffer limit reached: slow consumer terminated');
    }
  }

  #cut(conn: C, queued: number, why: string): void {
    this.#counts.slowConsumers++;
    this.#log.info({ buffered: queued, workerBuffered: this.#bytes }, why);
    this.forget(conn);
    conn.ws.terminate();
  }
}
