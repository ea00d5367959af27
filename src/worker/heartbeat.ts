/**
 * Liveness of a worker's connections: the heartbeat, and the clock on fragmented messages.
 *
 * Heartbeat: every --heartbeat ms a round pings every connection; one that has not answered
 * the previous round's ping is terminated. A round's pings carry a fresh random payload and
 * only a pong echoing it counts: unsolicited pongs prove nothing, a peer can send those
 * without reading a byte. Rounds go in chunks of HEARTBEAT_CHUNK sockets per event-loop turn.
 *
 * Fragmented messages: a peer that answers pings between fragments could keep a message
 * unfinished forever; past --message-timeout from its first fragment it is closed with 1008.
 */
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import { CloseCode } from '../codes.js';
import type { Logger } from '../log.js';
import type { Connections } from './connection.js';
import { patchReceiver, unfinishedMessages, webSocketOf } from './socket.js';

/** Sockets pinged per event-loop turn in a heartbeat round. */
const HEARTBEAT_CHUNK = 1000;

export interface HeartbeatOptions {
  log: Logger;
  /** Ping interval, in ms; 0 turns the heartbeat off. */
  heartbeat: number;
  /** Longest time from a message's first fragment to its last, in ms; 0 = no limit. */
  messageTimeout: number;
}

export class Heartbeat {
  readonly #o: HeartbeatOptions;
  readonly #conns: Connections;
  /** Payload of this round's pings. */
  #token = randomBytes(8);
  #beating = false;
  #stopped = false;
  #rounds: NodeJS.Timeout | undefined;
  #sweep: NodeJS.Timeout | undefined;

  constructor(o: HeartbeatOptions, conns: Connections) {
    this.#o = o;
    this.#conns = conns;
    patchReceiver();
  }

  /** Starts the rounds and the sweep. */
  start(): void {
    if (this.#o.heartbeat > 0) {
      this.#rounds = setInterval(() => void this.#beat(), this.#o.heartbeat);
      this.#rounds.unref();
    }
    const limit = this.#o.messageTimeout;
    if (limit > 0) {
      const every = Math.min(1000, Math.max(25, Math.floor(limit / 4)));
      this.#sweep = setInterval(() => this.#closeUnfinished(limit), every);
      this.#sweep.unref();
    }
  }

  /** Stops pinging (a drain began, or the server closes); the sweep goes on until stop(). */
  pause(): void {
    this.#stopped = true;
    if (this.#rounds) clearInterval(this.#rounds);
    this.#rounds = undefined;
  }

  stop(): void {
    this.pause();
    if (this.#sweep) clearInterval(this.#sweep);
    this.#sweep = undefined;
  }

  /** One round: a peer that has not answered the previous ping is terminated, the others pinged. */
  async #beat(): Promise<void> {
    if (this.#beating) return;
    this.#beating = true;
    this.#token = randomBytes(8);
    this.#conns.pingToken = this.#token;
    const conns = this.#conns;
    let n = 0;
    for (const conn of [...conns.all]) {
      if (this.#stopped) break;
      if (conn.closeSent || conn.ws.readyState !== WebSocket.OPEN) continue;
      if (!conn.alive) {
        conns.stats.heartbeatTimeouts++;
        conn.ws.terminate();
      } else {
        conn.alive = false;
        conn.ws.ping(this.#token);
        conns.checkBuffered(conn);
      }
      if (++n % HEARTBEAT_CHUNK === 0) await new Promise<void>((r) => setImmediate(r));
    }
    this.#beating = false;
  }

  /** Closes, with 1008, connections whose fragmented message is older than `limitMs`. */
  #closeUnfinished(limitMs: number): void {
    if (unfinishedMessages.size === 0) return;
    const now = Date.now();
    for (const [receiver, since] of unfinishedMessages) {
      if (now - since < limitMs) continue;
      unfinishedMessages.delete(receiver);
      const ws = webSocketOf(receiver);
      const conn = ws && this.#conns.of(ws);
      if (!conn || conn.closeSent) continue;
      this.#conns.stats.unfinishedMessages++;
      this.#o.log.info(
        { ageMs: now - since },
        'fragmented message unfinished in time: closing with 1008',
      );
      this.#conns.close(conn, CloseCode.POLICY, 'message not finished in time');
    }
  }
}
