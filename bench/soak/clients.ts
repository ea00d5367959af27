/**
 * Parent side of the soak's clients: spreads N sockets over client processes (client.ts, at
 * most the load generator's MAX_PER_PROCESS each, so each stays under the open-file limit),
 * each with its own source-address block 127.0.<201+k>.1-250, and sums what they report.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { now, sleep } from '../lib/clock.js';
import { killGroup, track } from '../lib/procs.js';
import { progress } from '../lib/progress.js';
import { MAX_PER_PROCESS } from '../loadgen/index.js';
import { merge, newHist } from './hist.js';
import {
  type ClientResults,
  type ClientStats,
  emptyLabelResults,
  type FromSoakClient,
  type ToSoakClient,
} from './protocol.js';

const CLIENT = fileURLToPath(new URL('./client.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface SoakClientOptions {
  url: string;
  sockets: number;
  perProcess: number;
  concurrency: number;
  messageEveryMs: number;
  echoTimeoutMs: number;
  ignoreHints: boolean;
  connectTimeoutMs: number;
}

interface Proc {
  child: ChildProcess;
  connected: number;
  failed: number;
  ready: boolean;
  stats: ClientStats | undefined;
  allClosedAt: number | undefined;
  results: ClientResults | undefined;
  exited: boolean;
}

/** Sum of the latest stats of every client process. */
export interface StatsSum {
  at: number;
  open: number;
  reconnecting: number;
  sent: number;
  echoed: number;
  mismatched: number;
  timedOut: number;
  lostOnOtherClose: number;
  closes: number;
  reopens: number;
  refusals: number;
  lastReopenAt: number;
  rtt: number[];
}

export class SoakClients {
  readonly #o: SoakClientOptions;
  #procs: Proc[] = [];
  #stopping = false;
  /** Round trips reported since the last takeRtt(). */
  #rtt = newHist();

  constructor(o: SoakClientOptions) {
    if (o.perProcess < 1 || o.perProcess > MAX_PER_PROCESS) {
      throw new Error(`--per-process must be in 1..${MAX_PER_PROCESS}, got ${o.perProcess}`);
    }
    this.#o = o;
  }

  get pids(): number[] {
    return this.#procs.map((p) => p.child.pid ?? 0);
  }

  /** Opens every socket; resolves with the number connected. */
  async connect(): Promise<{ connected: number; failed: number }> {
    const { sockets, perProcess } = this.#o;
    const k = Math.ceil(sockets / perProcess);
    if (k > 50) throw new Error(`too many client processes (${k})`);
    for (let i = 0; i < k; i++) {
      const count = Math.floor(sockets / k) + (i < sockets % k ? 1 : 0);
      this.#procs.push(this.#spawn(i, count));
    }
    const bar = progress(`connecting ${this.#o.url}`, sockets);
    try {
      await this.#until(
        () => {
          bar.update(this.#sum((p) => p.connected));
          return this.#procs.every((p) => p.ready);
        },
        this.#o.connectTimeoutMs,
        'connect',
      );
    } finally {
      bar.end();
    }
    return { connected: this.#sum((p) => p.connected), failed: this.#sum((p) => p.failed) };
  }

  label(label: string, final = false): void {
    for (const p of this.#procs) this.#send(p, { type: 'label', label, final });
  }

  /** Latest stats of every process, summed; undefined until each has reported once. */
  stats(): StatsSum | undefined {
    if (this.#procs.some((p) => !p.stats)) return undefined;
    const all = this.#procs.map((p) => p.stats!);
    const sum = (f: (s: ClientStats) => number): number => all.reduce((n, s) => n + f(s), 0);
    // NaN crosses IPC as null.
    const reopenTimes = all
      .map((s) => s.lastReopenAt)
      .filter((t) => typeof t === 'number' && !Number.isNaN(t));
    return {
      at: Math.min(...all.map((s) => s.at)),
      open: sum((s) => s.open),
      reconnecting: sum((s) => s.reconnecting),
      sent: sum((s) => s.sent),
      echoed: sum((s) => s.echoed),
      mismatched: sum((s) => s.mismatched),
      timedOut: sum((s) => s.timedOut),
      lostOnOtherClose: sum((s) => s.lostOnOtherClose),
      closes: sum((s) => s.closes),
      reopens: sum((s) => s.reopens),
      refusals: sum((s) => s.refusals),
      lastReopenAt: reopenTimes.length > 0 ? Math.max(...reopenTimes) : Number.NaN,
      rtt: this.#rtt,
    };
  }

  /** Echo round trips reported since the last call. */
  takeRtt(): number[] {
    const h = this.#rtt;
    this.#rtt = newHist();
    return h;
  }

  /** Resolves with the epoch ms of the last close once every socket closed, else undefined. */
  async waitAllClosed(timeoutMs: number): Promise<number | undefined> {
    try {
      await this.#until(
        () => this.#procs.every((p) => p.allClosedAt !== undefined),
        timeoutMs,
        'close',
      );
    } catch (err) {
      if (err instanceof TimeoutError) return undefined;
      throw err;
    }
    return Math.max(...this.#procs.map((p) => p.allClosedAt!));
  }

  async results(): Promise<ClientResults> {
    for (const p of this.#procs) {
      p.results = undefined;
      this.#send(p, { type: 'results' });
    }
    await this.#until(() => this.#procs.every((p) => p.results), 30_000, 'results');
    return mergeResults(this.#procs.map((p) => p.results!));
  }

  /** Stops every client process (SIGKILL after 3 s). */
  async stop(): Promise<void> {
    this.#stopping = true;
    for (const p of this.#procs) this.#send(p, { type: 'stop' });
    const deadline = now() + 3000;
    while (now() < deadline && this.#procs.some((p) => !p.exited)) await sleep(20);
    for (const p of this.#procs) killGroup(p.child);
  }

  /** A client process that died without being asked to, or undefined. */
  dead(): string | undefined {
    const d = this.#procs.find((p) => p.exited);
    return d && !this.#stopping ? `a client process exited (code ${d.child.exitCode})` : undefined;
  }

  #spawn(index: number, count: number): Proc {
    const o = this.#o;
    const args = [
      ['--url', o.url],
      ['--count', count],
      ['--concurrency', o.concurrency],
      ['--message-every', o.messageEveryMs],
      ['--echo-timeout', o.echoTimeoutMs],
      ['--addr-prefix', `127.0.${201 + index}`],
    ].flatMap(([k, v]) => [String(k), String(v)]);
    if (o.ignoreHints) args.push('--ignore-hints');
    const child = fork(CLIENT, args, {
      cwd: ROOT,
      execArgv: ['--import', 'tsx'],
      detached: true,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    track(child);
    const p: Proc = {
      child,
      connected: 0,
      failed: 0,
      ready: false,
      stats: undefined,
      allClosedAt: undefined,
      results: undefined,
      exited: false,
    };
    child.on('message', (m: FromSoakClient) => {
      switch (m.type) {
        case 'progress':
        case 'ready':
          p.connected = m.connected;
          p.failed = m.failed;
          p.ready = m.type === 'ready';
          break;
        case 'stats':
          p.stats = m.stats;
          merge(this.#rtt, m.stats.rtt);
          break;
        case 'allClosed':
          p.allClosedAt = m.at;
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

  #send(p: Proc, m: ToSoakClient): void {
    if (p.child.connected) p.child.send(m);
  }

  #sum(f: (p: Proc) => number): number {
    return this.#procs.reduce((s, p) => s + f(p), 0);
  }

  async #until(done: () => unknown, timeoutMs: number, what: string): Promise<void> {
    const deadline = now() + timeoutMs;
    for (;;) {
      if (done()) return;
      const dead = this.dead();
      if (dead) throw new Error(`soak clients: ${dead} during ${what}`);
      if (now() >= deadline)
        throw new TimeoutError(`soak clients: ${what} timed out after ${timeoutMs} ms`);
      await sleep(10);
    }
  }
}

export class TimeoutError extends Error {}

function addCounts(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
}

const maxNum = (a: number, b: number): number =>
  Number.isNaN(a) ? b : Number.isNaN(b) ? a : Math.max(a, b);
const minNum = (a: number, b: number): number =>
  Number.isNaN(a) ? b : Number.isNaN(b) ? a : Math.min(a, b);

export function mergeResults(all: ClientResults[]): ClientResults {
  const total: ClientResults = {
    connected: 0,
    failed: 0,
    open: 0,
    sent: 0,
    echoed: 0,
    mismatched: 0,
    timedOut: 0,
    lostOnOtherClose: 0,
    pendingOpen: 0,
    rtt: newHist(),
    labels: {},
  };
  for (const r of all) {
    total.connected += r.connected;
    total.failed += r.failed;
    total.open += r.open;
    total.sent += r.sent;
    total.echoed += r.echoed;
    total.mismatched += r.mismatched;
    total.timedOut += r.timedOut;
    total.lostOnOtherClose += r.lostOnOtherClose;
    total.pendingOpen += r.pendingOpen;
    merge(total.rtt, r.rtt);
    for (const [name, l] of Object.entries(r.labels)) {
      if (!total.labels[name]) total.labels[name] = emptyLabelResults();
      const t = total.labels[name]!;
      addCounts(t.closes, l.closes);
      addCounts(t.reasons, l.reasons);
      addCounts(t.unanswered, l.unanswered);
      addCounts(t.refusals, l.refusals);
      for (const v of l.unansweredAgeMs) t.unansweredAgeMs.push(v);
      for (const v of l.reconnectMs) t.reconnectMs.push(v);
      for (const v of l.hintMs) t.hintMs.push(v);
      // NaN crosses IPC as null.
      t.firstCloseAt = minNum(t.firstCloseAt, l.firstCloseAt ?? Number.NaN);
      t.lastCloseAt = maxNum(t.lastCloseAt, l.lastCloseAt ?? Number.NaN);
      t.lastReopenAt = maxNum(t.lastReopenAt, l.lastReopenAt ?? Number.NaN);
    }
  }
  return total;
}
