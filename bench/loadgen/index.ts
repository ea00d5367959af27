/**
 * Parent side of the load generator: spreads N sockets over client processes (client.ts, at
 * most `perProcess` sockets each, so each stays under the 20,000 open-files limit), each with
 * its own source-address block 127.0.<k+1>.1-250.
 *
 *   const load = new Load({ url: 'ws://127.0.0.1:8080', stalled: 0.1 });
 *   await load.connect(4000);
 *   const t0 = load.mark();            // time zero: send the signal right after
 *   await load.waitAllClosed(5000);
 *   const r = await load.results();    // close times in ms since the mark, codes, clean/forced
 *   await load.stop();
 */
import { fileURLToPath } from 'node:url';
import { ChildGroup, type ConnectState, cliArgs, connectReport, spread } from '../lib/child.js';
import { now } from '../lib/clock.js';
import { progress } from '../lib/progress.js';
import { addCounts, addFields } from '../lib/stats.js';
import type { ClientResults, FromClient, ToClient } from './protocol.js';

const CLIENT = fileURLToPath(new URL('./client.ts', import.meta.url));
export const MAX_PER_PROCESS = 15_000;

export interface LoadOptions {
  url: string;
  /** Sockets per client process. @default 6000, at most 15000 */
  perProcess?: number;
  /** Concurrent handshakes per client process. @default 200 */
  concurrency?: number;
  /** Fraction of sockets that stop reading once connected. @default 0 */
  stalled?: number;
  /**
   * How stalled sockets stall: 'drop' reads and drops the bytes (the server's FIN is seen,
   * so close times can be measured), 'pause' reads nothing (the socket stays open until the
   * server terminates it). @default 'drop'
   */
  stallMode?: 'drop' | 'pause';
  /** Each non-stalled socket sends a message every this many ms; 0 = no traffic. @default 0 */
  messageEveryMs?: number;
  /** Give up connecting after this long. @default 120000 */
  connectTimeoutMs?: number;
}

export type LoadResults = ClientResults & { connected: number };

interface ClientState extends ConnectState {
  count: number;
  allClosed: boolean;
  results?: ClientResults;
}

export class Load {
  readonly #opts: LoadOptions;
  #clients = new ChildGroup<ToClient, FromClient, ClientState>('loadgen');

  constructor(opts: LoadOptions) {
    const perProcess = opts.perProcess ?? 6000;
    if (perProcess < 1 || perProcess > MAX_PER_PROCESS) {
      throw new Error(`perProcess must be in 1..${MAX_PER_PROCESS}, got ${perProcess}`);
    }
    this.#opts = { ...opts, perProcess };
  }

  /** Opens n sockets; resolves with the number that connected. */
  async connect(n: number): Promise<number> {
    const k = Math.ceil(n / this.#opts.perProcess!);
    if (k > 254) throw new Error(`too many client processes (${k})`);
    for (const [i, count] of spread(n, k).entries()) this.#spawn(i, count);
    const g = this.#clients;
    const bar = progress(`connecting ${this.#opts.url}`, n);
    try {
      await g.until(
        () => {
          bar.update(g.sum((c) => c.connected));
          return g.members.every((c) => c.ready);
        },
        this.#opts.connectTimeoutMs ?? 120_000,
        'connect',
      );
    } finally {
      bar.end();
    }
    const failed = g.sum((c) => c.failed);
    if (failed > 0) process.stderr.write(`loadgen: ${failed} of ${n} sockets failed to connect\n`);
    return g.sum((c) => c.connected);
  }

  /** Sends time zero to every client and returns it (epoch ms, lib/clock.ts). */
  mark(): number {
    const t = now();
    this.#clients.broadcast({ type: 'mark', t });
    return t;
  }

  /** Resolves true once every socket has closed, false after timeoutMs. */
  waitAllClosed(timeoutMs: number): Promise<boolean> {
    const g = this.#clients;
    return g.within(() => g.members.every((c) => c.allClosed), timeoutMs, 'close');
  }

  /** Close times (ms since the mark, ascending), codes and counts over all clients. */
  async results(): Promise<LoadResults> {
    const all = await this.#clients.results({ type: 'results' }, 30_000);
    const total: LoadResults = {
      closeTimes: [],
      codes: {},
      clean: 0,
      forced: 0,
      early: 0,
      open: 0,
      failed: 0,
      sent: 0,
      received: 0,
      connected: this.#clients.sum((c) => c.connected),
    };
    for (const r of all) {
      for (const t of r.closeTimes) total.closeTimes.push(t);
      addCounts(total.codes, r.codes);
      addFields(total, r, ['clean', 'forced', 'early', 'open', 'failed', 'sent', 'received']);
    }
    total.closeTimes.sort((a, b) => a - b);
    return total;
  }

  /** Stops every client process (SIGKILL after 3 s). */
  async stop(): Promise<void> {
    await this.#clients.stop({ type: 'stop' });
  }

  #spawn(index: number, count: number): void {
    const o = this.#opts;
    const args = cliArgs({
      url: o.url,
      count,
      concurrency: o.concurrency ?? 200,
      stalled: o.stalled ?? 0,
      'message-every': o.messageEveryMs ?? 0,
      'stall-mode': o.stallMode ?? 'drop',
      'addr-prefix': `127.0.${index + 1}`,
    });
    const state: ClientState = { count, connected: 0, failed: 0, ready: false, allClosed: false };
    const nodeArgs = process.env.BENCH_CLIENT_NODE_ARGS?.split(' ') ?? [];
    this.#clients.add(
      CLIENT,
      args,
      state,
      (c, m) => {
        if (connectReport(c, m)) return;
        if (m.type === 'allClosed') c.allClosed = true;
        else if (m.type === 'results') c.results = m.results;
      },
      nodeArgs,
    );
  }
}
