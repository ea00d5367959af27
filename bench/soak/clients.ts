/**
 * Parent side of the soak's clients: spreads N sockets over client processes (client.ts, at
 * most the load generator's MAX_PER_PROCESS each, so each stays under the open-file limit),
 * each with its own source-address block 127.0.<201+k>.1-250, and sums what they report.
 */
import { fileURLToPath } from 'node:url';
import { ChildGroup, type ConnectState, cliArgs, connectReport, spread } from '../lib/child.js';
import { progress } from '../lib/progress.js';
import { addCounts, addFields } from '../lib/stats.js';
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

interface ProcState extends ConnectState {
  stats: ClientStats | undefined;
  allClosedAt: number | undefined;
  results: ClientResults | undefined;
}

/** Sum of the latest stats of every client process. */
export type StatsSum = Omit<ClientStats, 'label'>;

export class SoakClients {
  readonly #o: SoakClientOptions;
  readonly #procs = new ChildGroup<ToSoakClient, FromSoakClient, ProcState>('soak clients', 10);
  /** Round trips reported since the last takeRtt(). */
  #rtt = newHist();

  constructor(o: SoakClientOptions) {
    if (o.perProcess < 1 || o.perProcess > MAX_PER_PROCESS) {
      throw new Error(`--per-process must be in 1..${MAX_PER_PROCESS}, got ${o.perProcess}`);
    }
    this.#o = o;
  }

  get pids(): number[] {
    return this.#procs.members.map((p) => p.proc.child.pid ?? 0);
  }

  /** Opens every socket; resolves with the number connected. */
  async connect(): Promise<{ connected: number; failed: number }> {
    const { sockets, perProcess } = this.#o;
    const k = Math.ceil(sockets / perProcess);
    if (k > 50) throw new Error(`too many client processes (${k})`);
    for (const [i, count] of spread(sockets, k).entries()) this.#spawn(i, count);
    const g = this.#procs;
    const bar = progress(`connecting ${this.#o.url}`, sockets);
    try {
      await g.until(
        () => {
          bar.update(g.sum((p) => p.connected));
          return g.members.every((p) => p.ready);
        },
        this.#o.connectTimeoutMs,
        'connect',
      );
    } finally {
      bar.end();
    }
    return { connected: g.sum((p) => p.connected), failed: g.sum((p) => p.failed) };
  }

  label(label: string, final = false): void {
    this.#procs.broadcast({ type: 'label', label, final });
  }

  /** Latest stats of every process, summed; undefined until each has reported once. */
  stats(): StatsSum | undefined {
    const procs = this.#procs.members;
    if (procs.some((p) => !p.stats)) return undefined;
    const all = procs.map((p) => p.stats!);
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
    const g = this.#procs;
    const done = await g.within(
      () => g.members.every((p) => p.allClosedAt !== undefined),
      timeoutMs,
      'close',
    );
    return done ? Math.max(...g.members.map((p) => p.allClosedAt!)) : undefined;
  }

  async results(): Promise<ClientResults> {
    return mergeResults(await this.#procs.results({ type: 'results' }, 30_000));
  }

  /** Stops every client process (SIGKILL after 3 s). */
  async stop(): Promise<void> {
    await this.#procs.stop({ type: 'stop' });
  }

  /** A client process that died without being asked to, or undefined. */
  dead(): string | undefined {
    return this.#procs.dead();
  }

  #spawn(index: number, count: number): void {
    const o = this.#o;
    const args = cliArgs({
      url: o.url,
      count,
      concurrency: o.concurrency,
      'message-every': o.messageEveryMs,
      'echo-timeout': o.echoTimeoutMs,
      'addr-prefix': `127.0.${201 + index}`,
    });
    if (o.ignoreHints) args.push('--ignore-hints');
    const state: ProcState = {
      connected: 0,
      failed: 0,
      ready: false,
      stats: undefined,
      allClosedAt: undefined,
      results: undefined,
    };
    this.#procs.add(CLIENT, args, state, (p, m) => {
      if (connectReport(p, m)) return;
      switch (m.type) {
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
  }
}

const maxNum = (a: number, b: number): number =>
  Number.isNaN(a) ? b : Number.isNaN(b) ? a : Math.max(a, b);
const minNum = (a: number, b: number): number =>
  Number.isNaN(a) ? b : Number.isNaN(b) ? a : Math.min(a, b);

/** The counters of ClientResults that are summed over processes. */
const SUMMED = [
  'connected',
  'failed',
  'open',
  'sent',
  'echoed',
  'mismatched',
  'timedOut',
  'lostOnOtherClose',
  'pendingOpen',
] as const;

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
    addFields(total, r, SUMMED);
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
