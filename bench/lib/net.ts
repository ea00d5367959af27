/** Loopback HTTP probes, ping round trips and free ports for the servers under test. */
import { get, type IncomingMessage } from 'node:http';
import { get as getTls } from 'node:https';
import { createServer } from 'node:net';
import { WebSocket } from 'ws';
import { now } from './proc.js';

/**
 * `GET http://127.0.0.1:<port><path>` (https with `tls`, any certificate) on a fresh
 * connection (closed after the answer, as a kubelet probe): the status code as a string, or
 * the error code (`ECONNREFUSED`, ...) when no answer came within 1 s.
 */
export function probe(port: number, path: string, tls = false): Promise<string> {
  return new Promise((resolve) => {
    const opts = { host: '127.0.0.1', port, path, agent: false, timeout: 1000 };
    const answered = (res: IncomingMessage): void => {
      res.on('error', () => {});
      res.resume();
      resolve(String(res.statusCode));
    };
    const req = tls
      ? getTls({ ...opts, rejectUnauthorized: false }, answered)
      : get(opts, answered);
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
  });
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('port')),
      );
    });
  });
}

/**
 * Probes of a server's responsiveness, every `everyMs` until stop(): `GET /healthz` on a fresh
 * connection (one started every period whether the last has answered or not, so a stalled
 * server gets as many probes as a quick one) and a ping on each of `sockets` WebSocket
 * connections (pongs come back in order: each is matched with the oldest ping outstanding).
 * Round trips in ms, under the label of the current {@link phase}.
 */
export class Probes {
  /** Per phase: /healthz round trips (200 answers), other answers, ping round trips. */
  readonly healthz: Record<string, number[]> = {};
  readonly failed: Record<string, number> = {};
  readonly pings: Record<string, number[]> = {};
  #label = '';
  #timer: NodeJS.Timeout | undefined;
  #sockets: WebSocket[] = [];
  #inflight = new Set<Promise<void>>();

  constructor(
    readonly port: number,
    readonly sockets: number,
    readonly everyMs: number,
  ) {}

  /** Opens the ping sockets and starts probing under `label`. */
  async start(label: string): Promise<void> {
    this.phase(label);
    this.#sockets = await Promise.all(Array.from({ length: this.sockets }, () => this.#open()));
    this.#timer = setInterval(() => this.#tick(), this.everyMs);
  }

  phase(label: string): void {
    this.#label = label;
    this.healthz[label] ??= [];
    this.pings[label] ??= [];
    this.failed[label] ??= 0;
  }

  /** Stops probing, waits for the probes under way and closes the ping sockets. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await Promise.all(this.#inflight);
    for (const ws of this.#sockets) ws.terminate();
  }

  #open(): Promise<WebSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${this.port}`, { perMessageDeflate: false });
      const sent: { at: number; label: string }[] = [];
      (ws as WebSocket & { sent: typeof sent }).sent = sent;
      ws.on('pong', () => {
        const p = sent.shift();
        if (p) this.pings[p.label]?.push(now() - p.at);
      });
      ws.on('error', reject);
      ws.once('open', () => {
        ws.off('error', reject);
        ws.on('error', () => {});
        resolve(ws);
      });
    });
  }

  #tick(): void {
    for (const ws of this.#sockets) {
      if (ws.readyState !== WebSocket.OPEN) continue;
      (ws as WebSocket & { sent: { at: number; label: string }[] }).sent.push({
        at: now(),
        label: this.#label,
      });
      ws.ping();
    }
    const label = this.#label;
    const at = now();
    const p = probe(this.port, '/healthz').then((status) => {
      if (status === '200') this.healthz[label]?.push(now() - at);
      else this.failed[label] = (this.failed[label] ?? 0) + 1;
      this.#inflight.delete(p);
    });
    this.#inflight.add(p);
  }
}
