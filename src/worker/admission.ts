/**
 * Who gets in: every TCP connection a worker accepts, from its first byte to its upgrade.
 *
 * Descriptors are the scarce resource. Of the open-file limit (minus what the process already
 * uses), WebSocket connections may take up to --max-connections (upgrades beyond get 503; by
 * default a reserve is left below the limit); connections that have not upgraded (probes,
 * handshakes under way, idle keep-alive, sockets that never send a byte) share the rest:
 *
 *   - When a new connection arrives and the descriptors are all taken, the oldest connection
 *     still without an upgrade is closed (408) to make room, so a flood of idle sockets cannot
 *     lock out new clients or `/healthz`. Connections younger than a tenth of
 *     --handshake-timeout are spared (a burst of real handshakes); when only those are left,
 *     the newcomer gets 503 + Retry-After instead of a reset.
 *   - Past 90% of the descriptors, the time a connection may stay without an upgrade shrinks
 *     from --handshake-timeout towards a tenth of it.
 *   - With --max-connections-per-ip, one address holds at most that many WebSocket
 *     connections (more get 429) and that many connections without an upgrade (its oldest is
 *     closed).
 *
 * Every eviction and refusal is counted, and logged at most once a second.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../log.js';
import { defaultMaxConnections, openFileCount, openFileLimit } from '../options.js';
import { refuse } from './http.js';

/** The admission of each socket not upgraded yet: its close listener is shared. */
const admissionOf = new WeakMap<Socket, Admission>();

function pendingClosed(this: Socket): void {
  admissionOf.get(this)?.gone(this);
}

/** Descriptors kept free below the open-file limit (logs, reports, the odd file). */
const FD_SPARE = 16;

/** Counters of admission, read by the drain report and the metrics. */
export interface AdmissionStats {
  /** Connections without an upgrade closed to make room (share full or per-IP cap). */
  evictedIdle: number;
  /** Connections without an upgrade closed early because the share was filling up. */
  shortTimeouts: number;
  /** Upgrades refused with 429: the address holds --max-connections-per-ip already. */
  refusedPerIp: number;
  /** Upgrades refused with 400: HTTP/1.0, no Host header or more than one. */
  refusedMalformed: number;
  /** Upgrades refused with 403: `Origin` not in --origin. */
  refusedOrigin: number;
  /** Upgrades refused with 503: --max-connections reached. */
  refusedFull: number;
  /** New connections refused with 503: every descriptor taken by younger connections. */
  refusedNoRoom: number;
}

export interface AdmissionOptions {
  log: Logger;
  /** --max-connections, or undefined to derive it from the open-file limit. */
  maxConnections: number | undefined;
  maxConnectionsPerIp: number;
  handshakeTimeout: number;
  /** Allowed `Origin` values; empty allows any. */
  origin: string[];
  /** WebSocket connections open and upgrades under way. */
  webSockets: () => number;
}

/** Why an upgrade request is refused, with its HTTP status line; undefined lets it in. */
export type Refusal = { status: string; headers?: string } | undefined;

function status(line: string, headers?: string): Refusal {
  return headers === undefined ? { status: line } : { status: line, headers };
}

/** Admission of one worker's connections. */
export class Admission {
  readonly stats: AdmissionStats = {
    evictedIdle: 0,
    shortTimeouts: 0,
    refusedPerIp: 0,
    refusedMalformed: 0,
    refusedOrigin: 0,
    refusedFull: 0,
    refusedNoRoom: 0,
  };
  /** WebSocket connection limit: fixed by {@link configure}. */
  maxConnections: number;
  readonly #o: AdmissionOptions;
  /** Connections not upgraded (yet), oldest first, with the time they arrived. */
  readonly #pending = new Map<Socket, number>();
  /** With a per-IP cap: each pending socket's address (gone from the socket once it closes). */
  readonly #ips = new Map<Socket, string>();
  /** Per address (only with a per-IP cap): WebSocket connections and sockets not upgraded. */
  readonly #byIp = new Map<string, { ws: number; pending: Set<Socket> }>();
  #fdLimit = Number.POSITIVE_INFINITY;
  #fdBaseline = 0;
  #exhausted = false;
  #sweep: NodeJS.Timeout | undefined;
  #logged = { at: 0, evicted: 0, short: 0, refused: 0 };
  /** Descriptors for sockets, WebSocket or not: the limit minus those in use and a spare. */
  #room = Number.POSITIVE_INFINITY;

  constructor(o: AdmissionOptions) {
    this.#o = o;
    this.maxConnections = o.maxConnections ?? Number.MAX_SAFE_INTEGER;
  }

  /**
   * Reads the open-file limit and the descriptors in use (call once the pool threads run),
   * and fixes the two rooms.
   */
  configure(): void {
    const log = this.#o.log;
    this.#fdLimit = openFileLimit() ?? Number.POSITIVE_INFINITY;
    this.#fdBaseline = openFileCount() ?? 64;
    this.maxConnections =
      this.#o.maxConnections ?? defaultMaxConnections(this.#fdLimit, this.#fdBaseline);
    const room = this.#fdLimit - this.#fdBaseline - FD_SPARE;
    if (this.maxConnections > room) {
      log.warn(
        {
          maxConnections: this.maxConnections,
          openFileLimit: this.#fdLimit,
          inUse: this.#fdBaseline,
        },
        `--max-connections ${this.maxConnections} is more than the open-file limit allows (about ${room}); beyond that new connections get 503`,
      );
    }
    this.#room = room;
  }

  /** A TCP connection was accepted: it joins the connections without an upgrade. */
  onConnection(socket: Socket): void {
    const now = Date.now();
    const cap = this.#o.maxConnectionsPerIp;
    if (cap > 0) {
      // Asked only with a cap: a socket caches its peer's address once asked.
      const ip = socket.remoteAddress ?? '';
      this.#ips.set(socket, ip);
      const mine = this.#ip(ip);
      if (mine.pending.size >= cap) this.#evict(mine.pending.values().next().value!);
      mine.pending.add(socket);
    }
    this.#pending.set(socket, now);
    admissionOf.set(socket, this);
    socket.once('close', pendingClosed);
    // Room for it among the descriptors: make it by closing the oldest idle connection.
    if (this.#o.webSockets() + this.#pending.size > this.#room) {
      const [oldest, since] = this.#pending.entries().next().value!;
      if (oldest !== socket && now - since >= this.#o.handshakeTimeout / 10) this.#evict(oldest);
      else this.#refuseNew(socket);
    }
    if (!this.#sweep && this.#fill() > 0.9) this.#startSweep();
  }

  /** Share of the descriptors taken by sockets. */
  #fill(): number {
    return (this.#o.webSockets() + this.#pending.size) / this.#room;
  }

  /** No descriptor to spare and nobody old enough to evict: 503, not a reset. */
  #refuseNew(socket: Socket): void {
    this.#leave(socket);
    this.stats.refusedNoRoom++;
    if (!this.#exhausted) {
      this.#exhausted = true;
      this.#o.log.error(
        { connections: this.#o.webSockets(), openFileLimit: this.#fdLimit },
        'open-file limit reached: new connections get 503 until sockets close',
      );
    }
    refuse(socket, '503 Service Unavailable', 'Retry-After: 1\r\n');
    this.#report();
  }

  /** The connection carries an upgrade request: it leaves the connections without one. */
  upgrading(socket: Socket): void {
    socket.off('close', pendingClosed);
    admissionOf.delete(socket);
    this.#leave(socket);
  }

  /** @internal A connection that had not upgraded closed. */
  gone(socket: Socket): void {
    this.#leave(socket);
  }

  /**
   * The checks of an upgrade request before the handshake: HTTP/1.1 with exactly one Host
   * header, an allowed Origin, room for one more WebSocket connection, and the address under
   * its cap.
   */
  check(req: IncomingMessage): Refusal {
    let hosts = 0;
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (req.rawHeaders[i]!.toLowerCase() === 'host') hosts++;
    }
    if (req.httpVersionMajor !== 1 || req.httpVersionMinor < 1 || hosts !== 1) {
      this.stats.refusedMalformed++;
      return status('400 Bad Request');
    }
    const allowed = this.#o.origin;
    if (allowed.length > 0 && !allowed.includes(req.headers.origin ?? '')) {
      this.stats.refusedOrigin++;
      return status('403 Forbidden');
    }
    if (this.#o.webSockets() >= this.maxConnections) {
      this.stats.refusedFull++;
      return status('503 Service Unavailable', 'Retry-After: 1\r\n');
    }
    const cap = this.#o.maxConnectionsPerIp;
    if (cap > 0 && this.#ip(req.socket.remoteAddress ?? '').ws >= cap) {
      this.stats.refusedPerIp++;
      this.#o.log.debug({ ip: req.socket.remoteAddress, cap }, 'upgrade refused: per-IP cap');
      return status('429 Too Many Requests', 'Retry-After: 1\r\n');
    }
    return undefined;
  }

  /** A WebSocket connection opened on `socket`. */
  opened(socket: Socket): void {
    if (this.#o.maxConnectionsPerIp > 0) this.#ip(socket.remoteAddress ?? '').ws++;
  }

  /** A WebSocket connection on `socket` closed. */
  closed(socket: Socket): void {
    if (this.#o.maxConnectionsPerIp > 0) {
      const ip = socket.remoteAddress ?? '';
      const mine = this.#byIp.get(ip);
      if (mine) {
        mine.ws--;
        this.#dropIp(ip, mine);
      }
    }
    if (this.#exhausted && this.#o.webSockets() + this.#pending.size < this.#room) {
      this.#exhausted = false;
      this.#o.log.info(
        { connections: this.#o.webSockets() },
        'below the open-file limit again: accepting',
      );
    }
  }

  /** Connections accepted and not upgraded. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Connections accepted that have not sent a byte yet: a request may be on its way. */
  get silent(): number {
    let n = 0;
    for (const socket of this.#pending.keys()) if (socket.bytesRead === 0) n++;
    return n;
  }

  /** Stops the sweep (the server is closing). */
  stop(): void {
    if (this.#sweep) clearInterval(this.#sweep);
    this.#sweep = undefined;
  }

  #ip(ip: string): { ws: number; pending: Set<Socket> } {
    let mine = this.#byIp.get(ip);
    if (!mine) {
      mine = { ws: 0, pending: new Set() };
      this.#byIp.set(ip, mine);
    }
    return mine;
  }

  #dropIp(ip: string, mine: { ws: number; pending: Set<Socket> }): void {
    if (mine.ws <= 0 && mine.pending.size === 0) this.#byIp.delete(ip);
  }

  #leave(socket: Socket): void {
    if (!this.#pending.delete(socket)) return;
    const ip = this.#ips.get(socket) ?? '';
    this.#ips.delete(socket);
    if (this.#o.maxConnectionsPerIp > 0) {
      const mine = this.#byIp.get(ip);
      if (mine?.pending.delete(socket)) this.#dropIp(ip, mine);
    }
  }

  /** Closes a connection that has not upgraded, to make room. */
  #evict(socket: Socket, short = false): void {
    this.#leave(socket);
    if (short) this.stats.shortTimeouts++;
    else this.stats.evictedIdle++;
    refuse(socket, '408 Request Timeout');
    this.#report();
  }

  /** One warning a second at most, with what was closed since the last one. */
  #report(): void {
    const now = Date.now();
    if (now - this.#logged.at < 1000) return;
    const { evictedIdle, shortTimeouts, refusedNoRoom } = this.stats;
    const evicted = evictedIdle - this.#logged.evicted;
    const short = shortTimeouts - this.#logged.short;
    const refused = refusedNoRoom - this.#logged.refused;
    this.#logged = { at: now, evicted: evictedIdle, short: shortTimeouts, refused: refusedNoRoom };
    this.#o.log.warn(
      {
        evicted,
        timedOutEarly: short,
        refused,
        pending: this.#pending.size,
        webSockets: this.#o.webSockets(),
        room: this.#room,
      },
      `out of descriptors: closed ${evicted} idle connections without an upgrade to make room, ${short} past a shortened handshake timeout, refused ${refused} with 503`,
    );
  }

  /**
   * While more than 90% of the descriptors are taken, closes the connections without an
   * upgrade older than a handshake timeout that shrinks as they fill up (to a tenth of it).
   */
  #startSweep(): void {
    const full = this.#o.handshakeTimeout;
    this.#sweep = setInterval(
      () => {
        const fill = this.#fill();
        if (fill <= 0.9) {
          this.stop();
          return;
        }
        const allowed = Math.max(full / 10, full * 10 * (1 - fill));
        const now = Date.now();
        for (const [socket, since] of this.#pending) {
          if (now - since < allowed) break; // oldest first: the rest are younger
          this.#evict(socket, true);
        }
      },
      Math.max(50, Math.min(1000, Math.floor(full / 20))),
    );
    this.#sweep.unref();
  }
}
