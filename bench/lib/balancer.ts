/**
 * A tiny TCP load balancer for the failover storm, standing in for a readiness-gated one
 * (a Kubernetes Service, HAProxy with health checks):
 *
 * - polls `GET /readyz` of every backend every `pollMs` (50 ms); a backend is ready while its
 *   last answered poll said 200 (a refused connection or any other status: not ready; a poll
 *   still unanswered after 1 s changes nothing);
 * - pipes each new client connection to the next ready backend, round-robin;
 * - a backend connect that fails (the listener just closed) marks that backend not ready and
 *   retries the connection on the next ready one, as HAProxy's `option redispatch` does; with
 *   no ready backend left, the client connection is closed (counted as refused);
 * - counts the connections piped to each backend per 100 ms since the mark.
 *
 * It runs in its own process (this file is also that process's entry, forked with IPC by
 * {@link BalancerProcess}), so that piping thousands of sockets does not share an event loop
 * with the bench's bookkeeping. Every socket has an 'error' listener.
 */
import { get } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ChildProc, now, onParent, toParent, until } from './proc.js';

export const BUCKET_MS = 100;

export interface BackendCounts {
  port: number;
  /** Connections piped to this backend before the mark. */
  beforeMark: number;
  /** Connections piped to it after the mark, by 100 ms bucket since the mark: [bucket, count]. */
  buckets: [number, number][];
  /** Connections piped to it in all. */
  accepted: number;
  /** Connection attempts to it that failed (then retried on another ready backend). */
  failed: number;
  /** Readiness polls left unanswered for 1 s (they keep the previous state). */
  pollTimeouts: number;
}

export interface BalancerResults {
  backends: BackendCounts[];
  /** Client connections closed because no backend was ready or every ready one failed. */
  refused: number;
  /** Client connections retried on another backend after a failed backend connect. */
  redispatched: number;
}

type ToBalancer = { type: 'mark'; t: number } | { type: 'results' } | { type: 'stop' };
type FromBalancer =
  | { type: 'listening'; port: number }
  /** When a backend's readiness changes. */
  | { type: 'ready'; ready: boolean[] }
  | { type: 'results'; results: BalancerResults };

export interface BalancerOptions {
  /** Backend ports on `host`. */
  backends: number[];
  /** @default '127.0.0.1' */
  host?: string;
  /** @default 50 */
  pollMs?: number;
  /** Called when a backend's readiness changes. */
  onReadyChange?: (ready: boolean[]) => void;
}

interface Backend {
  port: number;
  ready: boolean;
  polling: boolean;
  beforeMark: number;
  accepted: number;
  failed: number;
  pollTimeouts: number;
  buckets: Map<number, number>;
}

export class Balancer {
  readonly #host: string;
  readonly #pollMs: number;
  readonly #backends: Backend[];
  readonly #server: Server;
  readonly #onReadyChange: ((ready: boolean[]) => void) | undefined;
  #next = 0;
  #markAt = Number.NaN;
  #refused = 0;
  #redispatched = 0;
  #poller: NodeJS.Timeout | undefined;

  constructor(opts: BalancerOptions) {
    this.#host = opts.host ?? '127.0.0.1';
    this.#pollMs = opts.pollMs ?? 50;
    this.#onReadyChange = opts.onReadyChange;
    this.#backends = opts.backends.map((port) => ({
      port,
      ready: false,
      polling: false,
      beforeMark: 0,
      accepted: 0,
      failed: 0,
      pollTimeouts: 0,
      buckets: new Map(),
    }));
    // Half-open on both sides: each direction's FIN is passed on by itself, so a backend's
    // close frame + FIN reaches the client, and the client's answering close frame still
    // reaches the backend (with allowHalfOpen false, Node would end the upstream at once).
    this.#server = createServer({ pauseOnConnect: true, allowHalfOpen: true }, (client) =>
      this.#accept(client),
    );
    this.#server.on('error', () => {});
  }

  /** Starts polling and listening; resolves with the port. */
  listen(port = 0): Promise<number> {
    this.#poll();
    this.#poller = setInterval(() => this.#poll(), this.#pollMs);
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      // A deep accept queue (capped by net.core.somaxconn): the balancer must not be where a
      // storm's SYNs get dropped.
      this.#server.listen({ port, host: this.#host, backlog: 4096 }, () => {
        const address = this.#server.address();
        if (typeof address === 'object' && address) resolve(address.port);
        else reject(new Error('lb: no address'));
      });
    });
  }

  get ready(): boolean[] {
    return this.#backends.map((b) => b.ready);
  }

  /** Time zero of the 100 ms buckets (epoch ms, proc.ts now()). */
  mark(t: number): void {
    this.#markAt = t;
  }

  results(): BalancerResults {
    return {
      backends: this.#backends.map((b) => ({
        port: b.port,
        beforeMark: b.beforeMark,
        buckets: [...b.buckets.entries()].sort((x, y) => x[0] - y[0]),
        accepted: b.accepted,
        failed: b.failed,
        pollTimeouts: b.pollTimeouts,
      })),
      refused: this.#refused,
      redispatched: this.#redispatched,
    };
  }

  close(): void {
    clearInterval(this.#poller);
    this.#server.close();
  }

  #setReady(b: Backend, ready: boolean): void {
    if (b.ready === ready) return;
    b.ready = ready;
    this.#onReadyChange?.(this.ready);
  }

  #poll(): void {
    for (const b of this.#backends) {
      if (b.polling) continue; // the previous poll has not answered yet
      b.polling = true;
      let timedOut = false;
      const done = (ready: boolean | undefined): void => {
        b.polling = false;
        if (ready !== undefined) this.#setReady(b, ready);
      };
      const req = get(
        { host: this.#host, port: b.port, path: '/readyz', agent: false, timeout: 1000 },
        (res) => {
          res.resume();
          res.on('error', () => {});
          done(res.statusCode === 200);
        },
      );
      // A refused or reset connection means not ready; a poll that got no answer in time
      // (a busy backend, or this process busy piping a storm) keeps the last answer, as a
      // readiness probe with a failure threshold would.
      req.on('error', () => done(timedOut ? undefined : false));
      req.on('timeout', () => {
        timedOut = true;
        b.pollTimeouts++;
        req.destroy();
      });
    }
  }

  /** The next ready backend, round-robin, skipping those already tried for this client. */
  #pick(tried: ReadonlySet<Backend>): Backend | undefined {
    const n = this.#backends.length;
    for (let k = 0; k < n; k++) {
      const b = this.#backends[(this.#next + k) % n]!;
      if (b.ready && !tried.has(b)) {
        this.#next = (this.#next + k + 1) % n;
        return b;
      }
    }
    return undefined;
  }

  #accept(client: Socket): void {
    client.on('error', () => {});
    const tried = new Set<Backend>();
    let backend: Socket | undefined;
    // A reset tears down both sides; an orderly close lets queued bytes go first.
    client.on('close', (hadError) => {
      if (hadError) backend?.destroy();
      else backend?.end();
    });
    const attempt = (): void => {
      if (client.destroyed) return;
      const b = this.#pick(tried);
      if (!b) {
        this.#refused++;
        client.destroy();
        return;
      }
      tried.add(b);
      const upstream = connect({ host: this.#host, port: b.port, allowHalfOpen: true });
      backend = upstream;
      let connected = false;
      upstream.on('error', () => {
        if (connected) return; // 'close' follows
        b.failed++;
        this.#setReady(b, false);
        this.#redispatched++;
        attempt();
      });
      upstream.once('connect', () => {
        connected = true;
        this.#count(b);
        if (client.destroyed) {
          upstream.destroy();
          return;
        }
        upstream.pipe(client);
        client.pipe(upstream);
        client.resume();
        // pipe() passes each direction's FIN on; a reset tears down the other side.
        upstream.on('close', (hadError) => {
          if (hadError) client.destroy();
          else if (!client.destroyed) client.end();
        });
      });
    };
    attempt();
  }

  #count(b: Backend): void {
    b.accepted++;
    if (Number.isNaN(this.#markAt)) {
      b.beforeMark++;
      return;
    }
    const bucket = Math.floor((now() - this.#markAt) / BUCKET_MS);
    b.buckets.set(bucket, (b.buckets.get(bucket) ?? 0) + 1);
  }
}

/** The balancer in its own process, from the bench's side. */
export class BalancerProcess {
  readonly proc: ChildProc<ToBalancer, FromBalancer>;
  port = 0;
  readyStates: boolean[] = [];
  #results: BalancerResults | undefined;

  constructor(readonly backends: number[]) {
    const file = fileURLToPath(import.meta.url);
    this.proc = new ChildProc<ToBalancer, FromBalancer>(file, [backends.join(',')], (m) => {
      if (m.type === 'listening') this.port = m.port;
      else if (m.type === 'ready') this.readyStates = m.ready;
      else this.#results = m.results;
    });
  }

  /** Resolves once it listens and sees every backend ready. */
  ready(timeoutMs = 10_000): Promise<void> {
    const ok = (): boolean => this.readyStates.length > 0 && this.readyStates.every(Boolean);
    return this.#until(() => this.port > 0 && ok(), timeoutMs, 'ready');
  }

  mark(t: number): void {
    this.proc.send({ type: 'mark', t });
  }

  async results(): Promise<BalancerResults> {
    this.#results = undefined;
    this.proc.send({ type: 'results' });
    await this.#until(() => this.#results !== undefined, 10_000, 'results');
    return this.#results!;
  }

  /** Sends `stop` and SIGKILLs the group at once. */
  stop(): Promise<void> {
    return this.proc.stop({ type: 'stop' }, 0);
  }

  #until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return until(done, timeoutMs, `storm lb: ${what}`, () => this.proc.died);
  }
}

// The process entry: `node --import tsx balancer.ts 4001,4002`.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const backends = (process.argv[2] ?? '').split(',').map(Number);
  if (backends.length === 0 || backends.some((p) => !Number.isInteger(p) || p <= 0)) {
    console.error(`storm lb: give the backend ports, e.g. 4001,4002; got ${process.argv[2]}`);
    process.exit(2);
  }
  const send: (m: FromBalancer) => void = toParent;
  const lb = new Balancer({ backends, onReadyChange: (ready) => send({ type: 'ready', ready }) });
  onParent<ToBalancer>((m) => {
    if (m.type === 'mark') lb.mark(m.t);
    else if (m.type === 'results') send({ type: 'results', results: lb.results() });
    else {
      lb.close();
      process.exit(0);
    }
  });
  send({ type: 'listening', port: await lb.listen() });
}
