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
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { now, sleep } from '../lib/clock.js';
import { killGroup, track } from '../lib/procs.js';
import { progress } from '../lib/progress.js';
import type {
  FromStormClient,
  StormClientResults,
  StormClientStatus,
  ToStormClient,
} from './protocol.js';

const CLIENT = fileURLToPath(new URL('./client.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
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

interface Proc {
  child: ChildProcess;
  count: number;
  open: number;
  ready: boolean;
  status: StormClientStatus | undefined;
  results: StormClientResults | undefined;
  exited: boolean;
}

export class StormClients {
  readonly #opts: StormClientsOptions;
  #procs: Proc[] = [];
  #stopping = false;
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
    for (let i = 0; i < k; i++) {
      this.#procs.push(this.#spawn(Math.floor(n / k) + (i < n % k ? 1 : 0)));
    }
    const bar = progress(`storm clients -> ${this.#opts.url}`, n);
    try {
      await this.#until(
        () => {
          bar.update(this.#procs.reduce((s, p) => s + p.open, 0));
          return this.#procs.every((p) => p.ready);
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
    for (const p of this.#procs) this.#send(p, { type: 'mark', t });
    return t;
  }

  /** The latest status summed over processes (undefined until each has sent one). */
  status(): StormClientStatus | undefined {
    if (this.#procs.some((p) => !p.status)) return undefined;
    const s: StormClientStatus = { open: 0, closed: 0, gaveUp: 0 };
    for (const p of this.#procs) {
      s.open += p.status!.open;
      s.closed += p.status!.closed;
      s.gaveUp += p.status!.gaveUp;
    }
    return s;
  }

  /** Resolves true once `done` holds for the summed status, false after timeoutMs. */
  async waitFor(done: (s: StormClientStatus) => boolean, timeoutMs: number): Promise<boolean> {
    try {
      await this.#until(
        () => {
          const s = this.status();
          return s !== undefined && done(s);
        },
        timeoutMs,
        'reconnect',
      );
      return true;
    } catch (err) {
      if (err instanceof TimeoutError) return false;
      throw err;
    }
  }

  /** Results merged over processes; times sorted ascending. */
  async results(): Promise<StormClientResults> {
    for (const p of this.#procs) {
      p.results = undefined;
      this.#send(p, { type: 'results' });
    }
    await this.#until(() => this.#procs.every((p) => p.results), 10_000, 'results');
    const total: StormClientResults = {
      open: 0,
      closed: 0,
      gaveUp: 0,
      opens: [],
      starts: [],
      latencies: [],
      closes: [],
      codes: {},
      refusals: 0,
      refusalCodes: {},
      connectErrors: 0,
      delays: { hint: 0, backoff: 0 },
    };
    const add = (into: Record<string, number>, from: Record<string, number>): void => {
      for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
    };
    for (const { results: r } of this.#procs) {
      total.open += r!.open;
      total.closed += r!.closed;
      total.gaveUp += r!.gaveUp;
      total.opens.push(...r!.opens);
      total.starts.push(...r!.starts);
      total.latencies.push(...r!.latencies);
      total.closes.push(...r!.closes);
      add(total.codes, r!.codes);
      total.refusals += r!.refusals;
      add(total.refusalCodes, r!.refusalCodes);
      total.connectErrors += r!.connectErrors;
      total.delays.hint += r!.delays.hint;
      total.delays.backoff += r!.delays.backoff;
    }
    for (const a of [total.opens, total.starts, total.latencies, total.closes])
      a.sort((x, y) => x - y);
    return total;
  }

  /** Stops every client process (SIGKILL after 2 s). */
  async stop(): Promise<void> {
    this.#stopping = true;
    for (const p of this.#procs) this.#send(p, { type: 'stop' });
    const deadline = now() + 2000;
    while (now() < deadline && this.#procs.some((p) => !p.exited)) await sleep(20);
    for (const p of this.#procs) killGroup(p.child);
    this.#procs = [];
  }

  #spawn(count: number): Proc {
    const o = this.#opts;
    const args = [
      ['--url', o.url],
      ['--count', count],
      ['--concurrency', o.concurrency ?? 100],
      ['--hint-jitter', o.hintJitter === undefined ? 'default' : o.hintJitter],
    ].flatMap(([k, v]) => [String(k), String(v)]);
    const child = fork(CLIENT, args, {
      cwd: ROOT,
      execArgv: ['--import', 'tsx'],
      detached: true,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    track(child);
    const p: Proc = {
      child,
      count,
      open: 0,
      ready: false,
      status: undefined,
      results: undefined,
      exited: false,
    };
    child.on('message', (m: FromStormClient) => {
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
    child.on('exit', () => {
      p.exited = true;
    });
    return p;
  }

  #send(p: Proc, m: ToStormClient): void {
    if (p.child.connected) p.child.send(m);
  }

  /** Polls `done` every 5 ms; fails on timeout or when a client process dies. */
  async #until(done: () => unknown, timeoutMs: number, what: string): Promise<void> {
    const deadline = now() + timeoutMs;
    for (;;) {
      if (done()) return;
      const dead = this.#procs.find((p) => p.exited);
      if (dead && !this.#stopping) {
        throw new Error(
          `storm: a client process exited (code ${dead.child.exitCode}) during ${what}`,
        );
      }
      if (now() >= deadline)
        throw new TimeoutError(`storm: ${what} timed out after ${timeoutMs} ms`);
      await sleep(5);
    }
  }
}

class TimeoutError extends Error {}
