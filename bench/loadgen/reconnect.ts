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
import { ChildGroup, type ConnectState, cliArgs, connectReport, spread } from '../lib/child.js';
import { now } from '../lib/clock.js';
import { progress } from '../lib/progress.js';
import { addCounts, addFields, maxOrNull } from '../lib/stats.js';
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

interface ClientState extends ConnectState {
  status?: Extract<FromReconnect, { type: 'status' }>;
  results?: ReconnectResults;
}

export class ReconnectLoad {
  readonly #opts: Required<ReconnectLoadOptions>;
  #clients = new ChildGroup<ToReconnect, FromReconnect, ClientState>('reconnect');
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
    const g = this.#clients;
    spread(n, k).forEach((count, i) => {
      const args = cliArgs({
        url: this.#opts.url,
        count,
        concurrency: this.#opts.concurrency,
        'retry-delay': this.#opts.retryDelayMs,
        'addr-prefix': `127.0.${101 + i}`,
      });
      g.add(CLIENT, args, { connected: 0, failed: 0, ready: false }, (c, m) => {
        if (connectReport(c, m)) return;
        if (m.type === 'status') c.status = m;
        else if (m.type === 'results') c.results = m.results;
      });
    });
    const bar = progress(`connecting ${this.#opts.url} (reconnecting clients)`, n);
    const started = now();
    try {
      await g.until(
        () => {
          bar.update(g.sum((c) => c.connected));
          return g.members.every((c) => c.ready);
        },
        120_000,
        'connect',
      );
    } finally {
      bar.end();
    }
    this.connectMs = now() - started;
    return g.sum((c) => c.connected);
  }

  /** Sends time zero to every client process and returns it (epoch ms, lib/clock.ts). */
  mark(): number {
    const t = now();
    this.#clients.broadcast({ type: 'mark', t });
    return t;
  }

  /** Sum of the latest status reports (open sockets, closes and refusals so far, ...). */
  status(): { open: number; reconnecting: number; closes: number; refusals: number } {
    const g = this.#clients;
    return {
      open: g.sum((c) => c.status?.open ?? 0),
      reconnecting: g.sum((c) => c.status?.reconnecting ?? 0),
      closes: g.sum((c) => c.status?.closes ?? 0),
      refusals: g.sum((c) => c.status?.refusals ?? 0),
    };
  }

  /**
   * Resolves true once `extra()` holds and every socket is open again (none reconnecting,
   * none lost), false after timeoutMs.
   */
  waitSettled(timeoutMs: number, extra: () => boolean = () => true): Promise<boolean> {
    const g = this.#clients;
    return g.within(
      () =>
        extra() &&
        g.members.every((c) => c.status && c.status.reconnecting === 0 && c.status.lost === 0) &&
        this.status().open === this.#total - g.sum((c) => c.failed),
      timeoutMs,
      'reconnect',
    );
  }

  /** Results summed over the client processes; latencies and hints sorted ascending. */
  async results(): Promise<ReconnectResults> {
    const all = await this.#clients.results({ type: 'results' }, 30_000);
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
      lastCloseMs: maxOrNull(all.map((r) => r.lastCloseMs)),
      lastReopenMs: maxOrNull(all.map((r) => r.lastReopenMs)),
    };
    for (const r of all) {
      addFields(total, r, ['open', 'reconnecting', 'lost', 'closes', 'earlyCloses', 'refusals']);
      addCounts(total.codes, r.codes);
      addCounts(total.reasons, r.reasons);
      addCounts(total.refusalCauses, r.refusalCauses);
      addCounts(total.closesPerSocket, r.closesPerSocket);
      for (const l of r.latencies) total.latencies.push(l);
      for (const h of r.hintRetries) total.hintRetries.push(h);
    }
    total.latencies.sort((a, b) => a - b);
    total.hintRetries.sort((a, b) => a - b);
    return total;
  }

  /** Stops every client process (SIGKILL after 3 s). */
  async stop(): Promise<void> {
    await this.#clients.stop({ type: 'stop' });
  }
}
