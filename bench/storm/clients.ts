/**
 * Parent side of the storm clients: spreads N reconnecting clients (wsdrain's own client) over
 * client processes of at most `perProcess` each, marks time zero, follows their status and
 * merges their results.
 *
 *   const clients = new StormClients({ url, hintJitter: false });
 *   await clients.connect(3000);
 *   const t0 = clients.mark();                 // then signal the server
 *   await clients.waitFor((s) => s.open === 3000 && ..., 30_000);
 *   const r = await clients.results();
 *   await clients.stop();
 */
import { fileURLToPath } from 'node:url';
import { ChildGroup, cliArgs, spread } from '../lib/child.js';
import { now } from '../lib/clock.js';
import { progress } from '../lib/progress.js';
import { addCounts, addFields } from '../lib/stats.js';
import {
  emptyStormResults,
  type FromStormClient,
  type StormClientResults,
  type StormClientStatus,
  type ToStormClient,
} from './protocol.js';

const CLIENT = fileURLToPath(new URL('./client.ts', import.meta.url));
export const MAX_CLIENTS_PER_PROCESS = 5000;

export interface StormClientsOptions {
  url: string;
  /** The client's `hintJitter` option; undefined keeps its default (true). */
  hintJitter?: boolean | number;
  /** Clients per process. @default 5000 (the most) */
  perProcess?: number;
  /** First connections opened at a time per process. @default 100 */
  concurrency?: number;
  /** Give up opening the first connections after this long. @default 60000 */
  connectTimeoutMs?: number;
}

interface ProcState {
  count: number;
  open: number;
  ready: boolean;
  status: StormClientStatus | undefined;
  results: StormClientResults | undefined;
}

export class StormClients {
  readonly #opts: StormClientsOptions;
  readonly #procs = new ChildGroup<ToStormClient, FromStormClient, ProcState>('storm');
  #total = 0;

  constructor(opts: StormClientsOptions) {
    const perProcess = opts.perProcess ?? MAX_CLIENTS_PER_PROCESS;
    if (!(perProcess >= 1 && perProcess <= MAX_CLIENTS_PER_PROCESS)) {
      throw new Error(`perProcess must be in 1..${MAX_CLIENTS_PER_PROCESS}, got ${perProcess}`);
    }
    this.#opts = { ...opts, perProcess };
  }

  get total(): number {
    return this.#total;
  }

  /** Starts n clients; resolves once each has opened its first connection. */
  async connect(n: number): Promise<void> {
    const k = Math.ceil(n / this.#opts.perProcess!);
    this.#total = n;
    for (const count of spread(n, k)) this.#spawn(count);
    const g = this.#procs;
    const bar = progress(`storm clients -> ${this.#opts.url}`, n);
    try {
      await g.until(
        () => {
          bar.update(g.sum((p) => p.open));
          return g.members.every((p) => p.ready);
        },
        this.#opts.connectTimeoutMs ?? 60_000,
        'connect',
      );
    } finally {
      bar.end();
    }
  }

  /** Sends time zero to every client process and returns it (epoch ms, lib/clock.ts). */
  mark(): number {
    const t = now();
    this.#procs.broadcast({ type: 'mark', t });
    return t;
  }

  /** The latest status summed over processes (undefined until each has sent one). */
  status(): StormClientStatus | undefined {
    const procs = this.#procs.members;
    if (procs.some((p) => !p.status)) return undefined;
    const s: StormClientStatus = { open: 0, closed: 0, gaveUp: 0 };
    for (const p of procs) {
      s.open += p.status!.open;
      s.closed += p.status!.closed;
      s.gaveUp += p.status!.gaveUp;
    }
    return s;
  }

  /** Resolves true once `done` holds for the summed status, false after timeoutMs. */
  waitFor(done: (s: StormClientStatus) => boolean, timeoutMs: number): Promise<boolean> {
    return this.#procs.within(
      () => {
        const s = this.status();
        return s !== undefined && done(s);
      },
      timeoutMs,
      'reconnect',
    );
  }

  /** Results merged over processes; times sorted ascending. */
  async results(): Promise<StormClientResults> {
    const all = await this.#procs.results({ type: 'results' }, 10_000);
    const total = emptyStormResults();
    for (const r of all) {
      addFields(total, r, ['open', 'closed', 'gaveUp', 'refusals', 'connectErrors']);
      addFields(total.delays, r.delays, ['hint', 'backoff']);
      total.opens.push(...r.opens);
      total.starts.push(...r.starts);
      total.latencies.push(...r.latencies);
      total.closes.push(...r.closes);
      addCounts(total.codes, r.codes);
      addCounts(total.refusalCodes, r.refusalCodes);
    }
    for (const a of [total.opens, total.starts, total.latencies, total.closes])
      a.sort((x, y) => x - y);
    return total;
  }

  /** Stops every client process (SIGKILL after 2 s). */
  async stop(): Promise<void> {
    await this.#procs.stop({ type: 'stop' }, 2000);
  }

  #spawn(count: number): void {
    const o = this.#opts;
    const args = cliArgs({
      url: o.url,
      count,
      concurrency: o.concurrency ?? 100,
      'hint-jitter': o.hintJitter === undefined ? 'default' : String(o.hintJitter),
    });
    const state: ProcState = {
      count,
      open: 0,
      ready: false,
      status: undefined,
      results: undefined,
    };
    this.#procs.add(CLIENT, args, state, (p, m) => {
      switch (m.type) {
        case 'progress':
        case 'ready':
          p.open = m.open;
          p.ready ||= m.type === 'ready';
          break;
        case 'status':
          p.status = m.status;
          break;
        case 'results':
          p.results = m.results;
      }
    });
  }
}
