/**
 * Parent side of the reconnecting load generator (reconnect-client.ts): N sockets spread over
 * client processes of at most `perProcess` each, with source-address blocks 127.0.<101+k>.*
 * (apart from loadgen/index.ts's 127.0.<1+k>.*, so TIME_WAIT leftovers never collide).
 *
 *   const load = new ReconnectLoad({ url });
 *   await load.connect(4000);
 *   const t0 = load.mark();                 // then signal the server
 *   await load.waitSettled(30_000, () => rollDone);
 *   const r = await load.results();
 *   await load.stop();
 */
import { fileURLToPath } from 'node:url';
import { ChildProc, TimeoutError, until } from '../lib/child.js';
import { now } from '../lib/clock.js';
import { progress } from '../lib/progress.js';
import { MAX_PER_PROCESS } from './index.js';

const CLIENT = fileURLToPath(new URL('./reconnect-client.ts', import.meta.url));

export type ToReconnect = { type: 'mark'; t: number } | { type: 'results' } | { type: 'stop' };

export type FromReconnect =
  | { type: 'progress' | 'ready'; connected: number; failed: number }
  | {
      type: 'status';
      open: number;
      reconnecting: number;
      closes: number;
      refusals: number;
      lost: number;
    }
  | { type: 'results'; results: ReconnectResults };

export interface ReconnectResults {
  open: number;
  reconnecting: number;
  /** Gave up reconnecting after --max-attempts refusals. */
  lost: number;
  /** Server-initiated closes after the mark. */
  closes: number;
  earlyCloses: number;
  codes: Record<string, number>;
  /** Close reasons by kind: `wsdrain:restart`, `wsdrain:shutdown`, `other`, `(none)`. */
  reasons: Record<string, number>;
  /** Failed reconnect attempts. */
  refusals: number;
  refusalCauses: Record<string, number>;
  /** ms from each close to the reopened socket's 'open'. */
  latencies: number[];
  /** retry=<ms> values of the close reasons. */
  hintRetries: number[];
  /** How many sockets were closed once, twice, ... */
  closesPerSocket: Record<string, number>;
  /** ms since the mark of the last close and the last reopen. */
  lastCloseMs: number | null;
  lastReopenMs: number | null;
}

export interface ReconnectLoadOptions {
  url: string;
  /** @default 6000, at most 15000 */
  perProcess?: number;
  /** Concurrent handshakes per process while connecting. @default 200 */
  concurrency?: number;
  /** Delay after a refused reconnect attempt, in ms. @default 20 */
  retryDelayMs?: number;
}

interface Client {
  proc: ChildProc<ToReconnect, FromReconnect>;
  connected: number;
  failed: number;
  ready: boolean;
  status?: Extract<FromReconnect, { type: 'status' }>;
  results?: ReconnectResults;
}

export class ReconnectLoad {
  readonly #opts: Required<ReconnectLoadOptions>;
  #clients: Client[] = [];
  #total = 0;
  /** How long connect() took, ms. */
  connectMs = 0;

  constructor(opts: ReconnectLoadOptions) {
    this.#opts = { perProcess: 6000, concurrency: 200, retryDelayMs: 20, ...opts };
    const p = this.#opts.perProcess;
    if (p < 1 || p > MAX_PER_PROCESS) {
      throw new Error(`perProcess must be in 1..${MAX_PER_PROCESS}, got ${p}`);
    }
  }

  /** Opens n sockets; resolves with the number that connected. */
  async connect(n: number): Promise<number> {
    const k = Math.ceil(n / this.#opts.perProcess);
    if (k > 150) throw new Error(`too many client processes (${k})`);
    this.#total = n;
    for (let i = 0; i < k; i++) {
      const count = Math.floor(n / k) + (i < n % k ? 1 : 0);
      const args = [
        ['--url', this.#opts.url],
        ['--count', count],
        ['--concurrency', this.#opts.concurrency],
        ['--retry-delay', this.#opts.retryDelayMs],
        ['--addr-prefix', `127.0.${101 + i}`],
      ].flat();
      const c: Client = { connected: 0, failed: 0, ready: false } as Client;
      c.proc = new ChildProc<ToReconnect, FromReconnect>(CLIENT, args, (m) => {
        switch (m.type) {
          case 'progress':
          case 'ready':
            c.connected = m.connected;
            c.failed = m.failed;
            c.ready = m.type === 'ready';
            break;
          case 'status':
            c.status = m;
            break;
          case 'results':
            c.results = m.results;
        }
      });
      this.#clients.push(c);
    }
    const bar = progress(`connecting ${this.#opts.url} (reconnecting clients)`, n);
    const started = now();
    try {
      await until(
        () => {
          bar.update(this.#sum((c) => c.connected));
          return this.#clients.every((c) => c.ready);
        },
        120_000,
        'connect',
        () => this.#dead(),
      );
    } finally {
      bar.end();
    }
    this.connectMs = now() - started;
    return this.#sum((c) => c.connected);
  }

  mark(): number {
    const t = now();
    for (const c of this.#clients) c.proc.send({ type: 'mark', t });
    return t;
  }

  /** Sum of the latest status reports (open sockets, closes and refusals so far, ...). */
  status(): { open: number; reconnecting: number; closes: number; refusals: number } {
    return {
      open: this.#sum((c) => c.status?.open ?? 0),
      reconnecting: this.#sum((c) => c.status?.reconnecting ?? 0),
      closes: this.#sum((c) => c.status?.closes ?? 0),
      refusals: this.#sum((c) => c.status?.refusals ?? 0),
    };
  }

  /**
   * Resolves true once `extra()` holds and every socket is open again (none reconnecting,
   * none lost), false after timeoutMs.
   */
  async waitSettled(timeoutMs: number, extra: () => boolean = () => true): Promise<boolean> {
    try {
      await until(
        () =>
          extra() &&
          this.#clients.every(
            (c) => c.status && c.status.reconnecting === 0 && c.status.lost === 0,
          ) &&
          this.status().open === this.#total - this.#sum((c) => c.failed),
        timeoutMs,
        'reconnect',
        () => this.#dead(),
      );
      return true;
    } catch (err) {
      if (err instanceof TimeoutError) return false;
      throw err;
    }
  }

  async results(): Promise<ReconnectResults> {
    for (const c of this.#clients) {
      c.results = undefined;
      c.proc.send({ type: 'results' });
    }
    await until(
      () => this.#clients.every((c) => c.results),
      30_000,
      'results',
      () => this.#dead(),
    );
    const all = this.#clients.map((c) => c.results!);
    const add = (dst: Record<string, number>, src: Record<string, number>): void => {
      for (const [k, v] of Object.entries(src)) dst[k] = (dst[k] ?? 0) + v;
    };
    const maxOf = (xs: (number | null)[]): number | null =>
      xs.some((x) => x !== null) ? Math.max(...xs.filter((x): x is number => x !== null)) : null;
    const total: ReconnectResults = {
      open: 0,
      reconnecting: 0,
      lost: 0,
      closes: 0,
      earlyCloses: 0,
      codes: {},
      reasons: {},
      refusals: 0,
      refusalCauses: {},
      latencies: [],
      hintRetries: [],
      closesPerSocket: {},
      lastCloseMs: maxOf(all.map((r) => r.lastCloseMs)),
      lastReopenMs: maxOf(all.map((r) => r.lastReopenMs)),
    };
    for (const r of all) {
      total.open += r.open;
      total.reconnecting += r.reconnecting;
      total.lost += r.lost;
      total.closes += r.closes;
      total.earlyCloses += r.earlyCloses;
      total.refusals += r.refusals;
      add(total.codes, r.codes);
      add(total.reasons, r.reasons);
      add(total.refusalCauses, r.refusalCauses);
      add(total.closesPerSocket, r.closesPerSocket);
      for (const l of r.latencies) total.latencies.push(l);
      for (const h of r.hintRetries) total.hintRetries.push(h);
    }
    total.latencies.sort((a, b) => a - b);
    total.hintRetries.sort((a, b) => a - b);
    return total;
  }

  async stop(): Promise<void> {
    await Promise.all(this.#clients.map((c) => c.proc.stop({ type: 'stop' })));
    this.#clients = [];
  }

  #dead(): string | undefined {
    const dead = this.#clients.find((c) => c.proc.died);
    return dead ? `a client process exited (code ${dead.proc.child.exitCode})` : undefined;
  }

  #sum(f: (c: Client) => number): number {
    return this.#clients.reduce((s, c) => s + f(c), 0);
  }
}
