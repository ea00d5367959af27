/**
 * Drain scenario: for each strategy, start the server, connect `sockets` sockets (a `stalled`
 * fraction of which stop reading), mark time zero, SIGTERM the server, and measure on the
 * client side how long the sockets take to close (50/90/99/100 %), with which codes, and when
 * the server process exits. Strategies are interleaved within each round, in a rotated order.
 */
import { now, sleep } from './lib/clock.js';
import { machineBusyMs } from './lib/procfs.js';
import { assertUp, withServer } from './lib/scenario.js';
import { closedBy, median, openSeries, round1, type SeriesPoint } from './lib/stats.js';
import { Load } from './loadgen/index.js';
import {
  budgetMs,
  PM2_KILL_TIMEOUT_MS,
  STRATEGIES,
  type Strategy,
  unavailable,
} from './servers.js';

export interface DrainOptions {
  strategies: Strategy[];
  sockets: number;
  workers: number;
  /** Stalled fractions; one row per strategy and fraction. */
  stalled: number[];
  rounds: number;
  /** wsdrain's --drain-timeout. */
  drainTimeoutMs: number;
  messageEveryMs: number;
  perProcess: number;
  concurrency: number;
  /** How long past a strategy's budget to wait for sockets and exit before giving up. */
  graceMs: number;
}

export interface DrainRun {
  strategy: Strategy;
  round: number;
  stalled: number;
  sockets: number;
  workers: number;
  budgetMs: number;
  p50Ms: number | null;
  p90Ms: number | null;
  p99Ms: number | null;
  /** Last socket closed; null if some were still open when we gave up. */
  lastCloseMs: number | null;
  /** Server process exit; null if it had not exited when we gave up (then SIGKILLed). */
  exitMs: number | null;
  exitStatus: string;
  /** CPU the whole machine spent (all cores, servers and clients) from the signal to the last close, ms. */
  cpuMs: number;
  codes: Record<string, number>;
  clean: number;
  forced: number;
  stillOpen: number;
  early: number;
  failed: number;
  series: SeriesPoint[];
}

/** One row of the results: medians over rounds; codes and series from the median round. */
export interface DrainSummary {
  strategy: Strategy;
  sockets: number;
  workers: number;
  stalled: number;
  budgetMs: number;
  rounds: number;
  lastCloseMs: number | null;
  exitMs: number | null;
  p50Ms: number | null;
  p90Ms: number | null;
  p99Ms: number | null;
  cpuMs: number | null;
  codes: Record<string, number>;
  clean: number;
  forced: number;
  series: SeriesPoint[];
}

export interface DrainResult {
  options: DrainOptions;
  runs: DrainRun[];
  drain: DrainSummary[];
  skipped: string[];
  failures: string[];
}

export const DRAIN_DEFAULTS: DrainOptions = {
  strategies: [...STRATEGIES],
  sockets: 4000,
  workers: 2,
  stalled: [0, 0.1],
  rounds: 1,
  drainTimeoutMs: 3000,
  messageEveryMs: 0,
  perProcess: 6000,
  concurrency: 200,
  graceMs: 5000,
};

/** parseArgs spec of the drain flags (all strings, validated by parseDrainFlags). */
export const DRAIN_FLAGS = {
  strategies: { type: 'string' },
  sockets: { type: 'string' },
  workers: { type: 'string' },
  stalled: { type: 'string' },
  rounds: { type: 'string' },
  'drain-timeout': { type: 'string' },
  'message-every': { type: 'string' },
  'per-process': { type: 'string' },
  concurrency: { type: 'string' },
  grace: { type: 'string' },
} as const;

/** Drain options from parsed flag values, over `defaults`. */
export function parseDrainFlags(
  values: Record<string, string | boolean | undefined>,
  defaults: DrainOptions = DRAIN_DEFAULTS,
): DrainOptions {
  const str = (k: string): string | undefined => {
    const v = values[k];
    return typeof v === 'string' ? v : undefined;
  };
  const int = (k: string, d: number, min = 0): number => {
    const s = str(k);
    if (s === undefined) return d;
    const v = Number(s);
    if (!Number.isInteger(v) || v < min)
      throw new Error(`--${k} must be an integer >= ${min}, got ${s}`);
    return v;
  };
  const strategies = (str('strategies')?.split(',') ?? defaults.strategies).map((s) => {
    if (!(STRATEGIES as readonly string[]).includes(s)) {
      throw new Error(`--strategies: unknown ${s} (known: ${STRATEGIES.join(', ')})`);
    }
    return s as Strategy;
  });
  const stalled = (str('stalled')?.split(',') ?? defaults.stalled).map((s) => {
    const v = Number(s);
    if (!(v >= 0 && v <= 1)) throw new Error(`--stalled: fractions in [0, 1], got ${s}`);
    return v;
  });
  return {
    strategies,
    stalled,
    sockets: int('sockets', defaults.sockets, 1),
    workers: int('workers', defaults.workers),
    rounds: int('rounds', defaults.rounds, 1),
    drainTimeoutMs: int('drain-timeout', defaults.drainTimeoutMs, 1),
    messageEveryMs: int('message-every', defaults.messageEveryMs),
    perProcess: int('per-process', defaults.perProcess, 1),
    concurrency: int('concurrency', defaults.concurrency, 1),
    graceMs: int('grace', defaults.graceMs),
  };
}

export async function runDrain(opts: DrainOptions): Promise<DrainResult> {
  const skipped: string[] = [];
  const strategies = opts.strategies.filter((s) => {
    const why = unavailable(s);
    if (why) {
      skipped.push(why);
      log(why);
    }
    return !why;
  });
  const runs: DrainRun[] = [];
  const failures: string[] = [];
  for (let round = 1; round <= opts.rounds; round++) {
    for (const stalled of opts.stalled) {
      // rotate the order each round so no strategy always runs first (or last)
      const order = strategies.map((_, i) => strategies[(i + round - 1) % strategies.length]!);
      for (const strategy of order) {
        const tag = `[round ${round}/${opts.rounds}] ${strategy}, ${pct(stalled)} stalled`;
        try {
          const run = await runOnce(strategy, stalled, round, opts);
          runs.push(run);
          log(`${tag}: ${describe(run)}`);
        } catch (err) {
          const message = `${tag}: ${(err as Error).message}`;
          failures.push(message);
          log(`FAILED ${message}`);
        }
      }
    }
  }
  return { options: opts, runs, drain: summarize(runs, opts), skipped, failures };
}

async function runOnce(
  strategy: Strategy,
  stalled: number,
  round: number,
  opts: DrainOptions,
): Promise<DrainRun> {
  const budget = budgetMs(strategy, opts.drainTimeoutMs);
  const spec = { strategy, workers: opts.workers, drainTimeoutMs: opts.drainTimeoutMs };
  const newLoad = (url: string): Load =>
    new Load({
      url,
      stalled,
      messageEveryMs: opts.messageEveryMs,
      perProcess: opts.perProcess,
      concurrency: opts.concurrency,
    });
  return withServer(spec, newLoad, async (server, load) => {
    const connected = await load.connect(opts.sockets);
    await sleep(200 + 2 * opts.messageEveryMs); // let the last upgrades and some traffic settle
    assertUp(server);

    const busy0 = machineBusyMs();
    const t0 = load.mark();
    server.signal('SIGTERM');
    const pm2Kill =
      strategy === 'pm2-default'
        ? setTimeout(() => server.killTree(), PM2_KILL_TIMEOUT_MS)
        : undefined;
    const giveUpAt = t0 + budget + opts.graceMs;
    let cpu: number;
    try {
      await load.waitAllClosed(giveUpAt - now());
      cpu = machineBusyMs() - busy0;
      await server.waitExit(Math.max(0, giveUpAt - now()));
    } finally {
      clearTimeout(pm2Kill);
    }
    const r = await load.results();

    const total = connected - r.early;
    const sorted = r.closeTimes;
    return {
      strategy,
      round,
      stalled,
      sockets: connected,
      workers: opts.workers,
      budgetMs: budget,
      p50Ms: closedBy(sorted, total, 0.5),
      p90Ms: closedBy(sorted, total, 0.9),
      p99Ms: closedBy(sorted, total, 0.99),
      lastCloseMs: r.open === 0 ? closedBy(sorted, total, 1) : null,
      exitMs: server.exitAt === undefined ? null : round1(server.exitAt - t0),
      exitStatus: server.exitStatus ?? 'still running (killed)',
      cpuMs: Math.round(cpu),
      codes: r.codes,
      clean: r.clean,
      forced: r.forced,
      stillOpen: r.open,
      early: r.early,
      failed: r.failed,
      series: openSeries(sorted, total),
    };
  });
}

function summarize(runs: DrainRun[], opts: DrainOptions): DrainSummary[] {
  const out: DrainSummary[] = [];
  for (const stalled of opts.stalled) {
    for (const strategy of opts.strategies) {
      const rs = runs.filter((r) => r.strategy === strategy && r.stalled === stalled);
      if (rs.length === 0) continue;
      const last = median(rs.map((r) => r.lastCloseMs));
      const rep = rs.find((r) => r.lastCloseMs === last) ?? rs[0]!; // the median round
      out.push({
        strategy,
        sockets: rep.sockets,
        workers: rep.workers,
        stalled,
        budgetMs: rep.budgetMs,
        rounds: rs.length,
        lastCloseMs: last,
        exitMs: median(rs.map((r) => r.exitMs)),
        p50Ms: median(rs.map((r) => r.p50Ms)),
        p90Ms: median(rs.map((r) => r.p90Ms)),
        p99Ms: median(rs.map((r) => r.p99Ms)),
        cpuMs: median(rs.map((r) => r.cpuMs)),
        codes: rep.codes,
        clean: rep.clean,
        forced: rep.forced,
        series: rep.series,
      });
    }
  }
  return out;
}

function describe(r: DrainRun): string {
  const ms = (v: number | null): string => (v === null ? 'never' : `${v} ms`);
  const extra = [
    r.stillOpen ? `${r.stillOpen} still open` : '',
    r.early ? `${r.early} closed before the signal` : '',
    r.failed ? `${r.failed} failed to connect` : '',
  ].filter(Boolean);
  return (
    `${r.sockets} sockets, p50 ${ms(r.p50Ms)}, p99 ${ms(r.p99Ms)}, last ${ms(r.lastCloseMs)}, ` +
    `exit ${ms(r.exitMs)} (${r.exitStatus}), cpu ${r.cpuMs} ms, codes ${JSON.stringify(r.codes)}` +
    (extra.length ? `, ${extra.join(', ')}` : '')
  );
}

export const pct = (f: number): string => `${Math.round(f * 1000) / 10}%`;

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}
