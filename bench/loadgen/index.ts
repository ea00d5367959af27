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
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { now, sleep } from '../lib/clock.js';
import { killGroup, track } from '../lib/procs.js';
import { progress } from '../lib/progress.js';
import type { ClientResults, FromClient, ToClient } from './protocol.js';

const CLIENT = fileURLToPath(new URL('./client.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
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

interface Client {
  child: ChildProcess;
  count: number;
  connected: number;
  failed: number;
  ready: boolean;
  allClosed: boolean;
  results?: ClientResults;
  exited: boolean;
}

export class Load {
  readonly #opts: LoadOptions;
  #clients: Client[] = [];
  #stopping = false;

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
    for (let i = 0; i < k; i++) {
      const count = Math.floor(n / k) + (i < n % k ? 1 : 0);
      this.#clients.push(this.#spawn(i, count));
    }
    const bar = progress(`connecting ${this.#opts.url}`, n);
    try {
      await this.#until(
        () => {
          bar.update(this.#sum((c) => c.connected));
          return this.#clients.every((c) => c.ready);
        },
        this.#opts.connectTimeoutMs ?? 120_000,
        'connect',
      );
    } finally {
      bar.end();
    }
    const failed = this.#sum((c) => c.failed);
    if (failed > 0) process.stderr.write(`loadgen: ${failed} of ${n} sockets failed to connect\n`);
    return this.#sum((c) => c.connected);
  }

  /** Sends time zero to every client and returns it (epoch ms, lib/clock.ts). */
  mark(): number {
    const t = now();
    for (const c of this.#clients) this.#send(c, { type: 'mark', t });
    return t;
  }

  /** Resolves true once every socket has closed, false after timeoutMs. */
  async waitAllClosed(timeoutMs: number): Promise<boolean> {
    try {
      await this.#until(() => this.#clients.every((c) => c.allClosed), timeoutMs, 'close');
      return true;
    } catch (err) {
      if (err instanceof TimeoutError) return false;
      throw err;
    }
  }

  /** Close times (ms since the mark, ascending), codes and counts over all clients. */
  async results(): Promise<LoadResults> {
    for (const c of this.#clients) {
      c.results = undefined;
      this.#send(c, { type: 'results' });
    }
    await this.#until(() => this.#clients.every((c) => c.results), 30_000, 'results');
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
      connected: this.#sum((c) => c.connected),
    };
    for (const { results: r } of this.#clients) {
      for (const t of r!.closeTimes) total.closeTimes.push(t);
      for (const [code, n] of Object.entries(r!.codes))
        total.codes[code] = (total.codes[code] ?? 0) + n;
      total.clean += r!.clean;
      total.forced += r!.forced;
      total.early += r!.early;
      total.open += r!.open;
      total.failed += r!.failed;
      total.sent += r!.sent;
      total.received += r!.received;
    }
    total.closeTimes.sort((a, b) => a - b);
    return total;
  }

  /** Stops every client process (SIGKILL after 3 s). */
  async stop(): Promise<void> {
    this.#stopping = true;
    for (const c of this.#clients) this.#send(c, { type: 'stop' });
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline && this.#clients.some((c) => !c.exited)) await sleep(20);
    for (const c of this.#clients) killGroup(c.child);
    this.#clients = [];
  }

  #spawn(index: number, count: number): Client {
    const o = this.#opts;
    const args = [
      ['--url', o.url],
      ['--count', count],
      ['--concurrency', o.concurrency ?? 200],
      ['--stalled', o.stalled ?? 0],
      ['--message-every', o.messageEveryMs ?? 0],
      ['--stall-mode', o.stallMode ?? 'drop'],
      ['--addr-prefix', `127.0.${index + 1}`],
    ].flatMap(([k, v]) => [String(k), String(v)]);
    const child = fork(CLIENT, args, {
      cwd: ROOT,
      execArgv: ['--import', 'tsx', ...(process.env.BENCH_CLIENT_NODE_ARGS?.split(' ') ?? [])],
      detached: true,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    track(child);
    const c: Client = {
      child,
      count,
      connected: 0,
      failed: 0,
      ready: false,
      allClosed: false,
      exited: false,
    };
    child.on('message', (m: FromClient) => {
      switch (m.type) {
        case 'progress':
        case 'ready':
          c.connected = m.connected;
          c.failed = m.failed;
          c.ready = m.type === 'ready';
          break;
        case 'allClosed':
          c.allClosed = true;
          break;
        case 'results':
          c.results = m.results;
      }
    });
    child.on('exit', () => {
      c.exited = true;
    });
    return c;
  }

  #send(c: Client, m: ToClient): void {
    if (c.child.connected) c.child.send(m);
  }

  #sum(f: (c: Client) => number): number {
    return this.#clients.reduce((s, c) => s + f(c), 0);
  }

  /** Polls `done` every 5 ms; fails on timeout or when a client process dies. */
  async #until(done: () => unknown, timeoutMs: number, what: string): Promise<void> {
    const deadline = now() + timeoutMs;
    for (;;) {
      if (done()) return;
      const dead = this.#clients.find((c) => c.exited);
      if (dead && !this.#stopping) {
        throw new Error(
          `loadgen: a client process exited (code ${dead.child.exitCode}) during ${what}`,
        );
      }
      if (now() >= deadline)
        throw new TimeoutError(`loadgen: ${what} timed out after ${timeoutMs} ms`);
      await sleep(5);
    }
  }
}

class TimeoutError extends Error {}
