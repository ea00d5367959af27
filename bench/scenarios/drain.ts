/**
 * Drain: for each strategy, start the server, connect `sockets` sockets (a `stalled`
 * fraction of which stop reading), mark time zero, SIGTERM the server, and measure on the
 * client side how long the sockets take to close (50/90/99/100 %), with which codes, and when
 * the server exits. Strategies are interleaved within each round, in a rotated order.
 * `wsdrain+deflate` is wsdrain with --per-message-deflate, its clients negotiating it and
 * sending a few messages first, so every connection has compression contexts.
 * `wsdrain+topics` is wsdrain with an app loaded (baselines/fanout-app.mjs), every socket a
 * wsdrain.v1 client subscribed to a topic of its own, so the drain also ends subscriptions.
 *
 * Server CPU per socket released: user + sys of the server's own processes (primary and every
 * worker, threads included; lib/procfs.ts ExitCpu) from the signal to its exit, divided by the
 * sockets closed after the signal.
 *
 * Verdict (wsdrain rows): every cooperative socket closed with 1001, every stalled one cut
 * (1006) within the budget, wsdrain exit 0 within drainExitVsBudget x --drain-timeout; with a
 * terminate row in the run, wsdrain's server CPU per socket released (cooperative peers)
 * within serverCpuPerReleaseVsTerminate x terminate's.
 */
import { A_TOPIC_EACH, withLoad } from '../crowd/index.js';
import { log, now, sleep } from '../lib/proc.js';
import { ExitCpu, machineBusyMs } from '../lib/procfs.js';
import { type ChartLine, chart, codesText, ms, pct, ratio } from '../lib/report.js';
import { FANOUT_APP, Server } from '../lib/server.js';
import { closedBy, median, openSeries, round1, type SeriesPoint } from '../lib/stats.js';
import { TARGETS, target } from '../lib/targets.js';

export const STRATEGIES = [
  'terminate',
  'ws-close',
  'seed-soft',
  'seed-hard',
  'pm2-default',
  'wsdrain',
  'wsdrain+deflate',
  'wsdrain+topics',
] as const;
export type Strategy = (typeof STRATEGIES)[number];

/** pm2's default kill_timeout: SIGKILL this long after the signal. */
export const PM2_KILL_TIMEOUT_MS = 1600;

/** The strategy's own bound from signal to exit (0: none, it does not wait). */
function budgetMs(strategy: Strategy, drainTimeoutMs: number): number {
  if (strategy.startsWith('wsdrain')) return drainTimeoutMs;
  return (
    { terminate: 0, 'seed-hard': 0, 'ws-close': 30_000, 'seed-soft': 10_000 }[
      strategy as 'terminate'
    ] ?? PM2_KILL_TIMEOUT_MS
  );
}

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
  /** Of those, the sockets that stalled. */
  stalledSockets: number;
  workers: number;
  budgetMs: number;
  p50Ms: number | null;
  p90Ms: number | null;
  p99Ms: number | null;
  /** Last socket closed; null if some were still open when we gave up. */
  lastCloseMs: number | null;
  /** Server exit; null if it had not exited when we gave up (then SIGKILLed). */
  exitMs: number | null;
  exitStatus: string;
  /** CPU the whole machine spent (servers and clients) from the signal to the last close, ms. */
  cpuMs: number;
  /** CPU of the server's processes (primary, workers, threads) from the signal to its exit, ms. */
  serverCpuMs: number;
  /** False: the server's exit could not be accounted for (see ExitCpu), a lower bound. */
  serverCpuExact: boolean;
  /** Sockets closed after the signal. */
  released: number;
  /** serverCpuMs per socket released, µs. */
  serverCpuUsPerRelease: number | null;
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
  /** Server CPU from the signal to the exit, ms, and per socket released, µs (medians). */
  serverCpuMs: number | null;
  serverCpuUsPerRelease: number | null;
  /** Every round's server CPU was accounted to the exit (see DrainRun). */
  serverCpuExact: boolean;
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

const DEFAULTS: DrainOptions = {
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

export const DRAIN_PRESETS: Record<'quick' | 'full', DrainOptions> = {
  quick: DEFAULTS,
  full: { ...DEFAULTS, sockets: 12_000, rounds: 3 },
};

export async function runDrain(opts: DrainOptions): Promise<DrainResult> {
  const runs: DrainRun[] = [];
  const failures: string[] = [];
  const { strategies } = opts;
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
          failures.push(`${tag}: ${(err as Error).message}`);
          log(`FAILED ${failures.at(-1)}`);
        }
      }
    }
  }
  return { options: opts, runs, drain: summarize(runs, opts), skipped: [], failures };
}

async function runOnce(
  strategy: Strategy,
  stalled: number,
  round: number,
  opts: DrainOptions,
): Promise<DrainRun> {
  const budget = budgetMs(strategy, opts.drainTimeoutMs);
  const deflate = strategy === 'wsdrain+deflate';
  const topics = strategy === 'wsdrain+topics';
  const start = strategy.startsWith('wsdrain')
    ? Server.wsdrain({
        workers: opts.workers,
        drainTimeoutMs: opts.drainTimeoutMs,
        flags: deflate ? ['--per-message-deflate'] : topics ? ['--app', FANOUT_APP] : [],
      })
    : Server.baseline(strategy, opts.workers);
  return withLoad(
    start,
    {
      stalled,
      messageEveryMs: opts.messageEveryMs,
      perProcess: opts.perProcess,
      concurrency: opts.concurrency,
      ...(deflate ? { deflate, sendOnOpen: 3 } : {}),
      ...(topics ? { fanout: A_TOPIC_EACH } : {}),
    },
    async (server, crowd) => {
      const connected = await crowd.connect(opts.sockets);
      await sleep(200 + 2 * opts.messageEveryMs); // the last upgrades and some traffic settle
      server.assertUp();

      const busy0 = machineBusyMs();
      const serverCpu = new ExitCpu(server.pid);
      serverCpu.start();
      const t0 = crowd.phase('drain');
      server.signal('SIGTERM');
      const pm2Kill =
        strategy === 'pm2-default'
          ? setTimeout(() => server.kill(), PM2_KILL_TIMEOUT_MS)
          : undefined;
      const giveUpAt = t0 + budget + opts.graceMs;
      let cpu: number;
      try {
        await crowd.waitAllClosed(giveUpAt - now());
        cpu = machineBusyMs() - busy0;
        await server.waitExit(Math.max(0, giveUpAt - now()));
      } finally {
        clearTimeout(pm2Kill);
      }
      const own = serverCpu.stop(server.exitAt !== undefined);
      const r = await crowd.results();
      const p = r.phases.drain!;
      const early = r.phases['']?.closeTimes.length ?? 0;
      const total = connected - early;
      const sorted = p.closeTimes;
      return {
        strategy,
        round,
        stalled,
        sockets: connected,
        stalledSockets: r.stalled,
        workers: opts.workers,
        budgetMs: budget,
        p50Ms: closedBy(sorted, total, 0.5),
        p90Ms: closedBy(sorted, total, 0.9),
        p99Ms: closedBy(sorted, total, 0.99),
        lastCloseMs: r.open === 0 ? closedBy(sorted, total, 1) : null,
        exitMs: server.exitAt === undefined ? null : round1(server.exitAt - t0),
        exitStatus: server.exitStatus ?? 'still running (killed)',
        cpuMs: Math.round(cpu),
        serverCpuMs: Math.round(own.ms),
        serverCpuExact: own.exact,
        released: sorted.length,
        serverCpuUsPerRelease: sorted.length > 0 ? round1((own.ms * 1000) / sorted.length) : null,
        codes: p.codes,
        clean: sorted.length - (p.codes['1006'] ?? 0),
        forced: p.codes['1006'] ?? 0,
        stillOpen: r.open,
        early,
        failed: r.failed,
        series: openSeries(sorted, total),
      };
    },
  );
}

function summarize(runs: DrainRun[], opts: DrainOptions): DrainSummary[] {
  const out: DrainSummary[] = [];
  for (const stalled of opts.stalled) {
    for (const strategy of opts.strategies) {
      const rs = runs.filter((r) => r.strategy === strategy && r.stalled === stalled);
      if (rs.length === 0) continue;
      const last = median(rs.map((r) => r.lastCloseMs));
      const rep = rs.find((r) => r.lastCloseMs === last) ?? rs[0]!; // the median round
      const m = (f: (r: DrainRun) => number | null): number | null => median(rs.map(f));
      out.push({
        strategy,
        sockets: rep.sockets,
        workers: rep.workers,
        stalled,
        budgetMs: rep.budgetMs,
        rounds: rs.length,
        lastCloseMs: last,
        exitMs: m((r) => r.exitMs),
        p50Ms: m((r) => r.p50Ms),
        p90Ms: m((r) => r.p90Ms),
        p99Ms: m((r) => r.p99Ms),
        cpuMs: m((r) => r.cpuMs),
        serverCpuMs: m((r) => r.serverCpuMs),
        serverCpuUsPerRelease: m((r) => r.serverCpuUsPerRelease),
        serverCpuExact: rs.every((r) => r.serverCpuExact),
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
  const t = (v: number | null): string => (v === null ? 'never' : `${v} ms`);
  const extra = [
    r.stillOpen ? `${r.stillOpen} still open` : '',
    r.early ? `${r.early} closed before the signal` : '',
    r.failed ? `${r.failed} failed to connect` : '',
  ].filter(Boolean);
  return (
    `${r.sockets} sockets, p50 ${t(r.p50Ms)}, p99 ${t(r.p99Ms)}, last ${t(r.lastCloseMs)}, ` +
    `exit ${t(r.exitMs)} (${r.exitStatus}), cpu ${r.cpuMs} ms, server cpu ${r.serverCpuMs} ms ` +
    `(${r.serverCpuUsPerRelease ?? '—'} µs per socket released${r.serverCpuExact ? '' : ', lower bound'}), ` +
    `codes ${JSON.stringify(r.codes)}` +
    (extra.length ? `, ${extra.join(', ')}` : '')
  );
}

/**
 * Misses of the wsdrain runs: a cooperative socket not closed with 1001, a stalled one not
 * cut within the budget, an exit that is not 0 within the budget; and runs that failed.
 */
export function drainMisses(d: DrainResult): string[] {
  const misses = [...d.failures];
  for (const r of d.runs.filter((x) => x.strategy.startsWith('wsdrain'))) {
    const tag = `${r.strategy}, ${pct(r.stalled)} stalled, round ${r.round}`;
    const cooperative = r.sockets - r.stalledSockets;
    const clean1001 = r.codes['1001'] ?? 0;
    if (clean1001 !== cooperative) {
      misses.push(
        `${tag}: ${clean1001} of ${cooperative} cooperative sockets closed with 1001 (${codesText(r.codes)})`,
      );
    }
    const cut = r.codes['1006'] ?? 0;
    if (cut !== r.stalledSockets)
      misses.push(`${tag}: ${cut} cut (1006) for ${r.stalledSockets} stalled`);
    if (r.lastCloseMs === null || r.lastCloseMs > r.budgetMs) {
      misses.push(`${tag}: last close ${ms(r.lastCloseMs)} ms (budget ${r.budgetMs} ms)`);
    }
    if (r.stillOpen + r.early + r.failed > 0) {
      misses.push(
        `${tag}: ${r.failed} failed to connect, ${r.early} closed before the signal, ${r.stillOpen} still open`,
      );
    }
    if (r.exitStatus !== 'exit 0') misses.push(`${tag}: wsdrain ${r.exitStatus}`);
    const limit = TARGETS.drainExitVsBudget * r.budgetMs;
    if (r.exitMs === null || r.exitMs > limit) {
      misses.push(
        `${tag}: exit ${ms(r.exitMs)} ms after SIGTERM, budget ${r.budgetMs} ms ${target('drainExitVsBudget', '<=')}`,
      );
    }
  }
  const cpu = serverCpuVsTerminate(d);
  if (cpu && (cpu.ratio === null || cpu.ratio > TARGETS.serverCpuPerReleaseVsTerminate)) {
    misses.push(
      `wsdrain, 0% stalled: server CPU ${cpu.wsdrain ?? '—'} µs per socket released, ` +
        `×${cpu.ratio ?? '—'} of terminate's ${cpu.terminate ?? '—'} µs ${target('serverCpuPerReleaseVsTerminate', '<=')}`,
    );
  }
  return misses;
}

/**
 * wsdrain's server CPU per socket released against terminate's, cooperative peers (medians
 * over rounds); undefined when the run has no terminate or no wsdrain row to compare.
 */
export function serverCpuVsTerminate(
  d: Pick<DrainResult, 'drain'>,
): { wsdrain: number | null; terminate: number | null; ratio: number | null } | undefined {
  const row = (s: Strategy) => d.drain.find((x) => x.strategy === s && x.stalled === 0);
  const w = row('wsdrain');
  const t = row('terminate');
  if (!w || !t) return undefined;
  const [a, b] = [w.serverCpuUsPerRelease, t.serverCpuUsPerRelease];
  return {
    wsdrain: a,
    terminate: b,
    ratio: a === null || b === null || b <= 0 ? null : Math.round((a / b) * 100) / 100,
  };
}

export function drainSection(d: DrainResult): string[] {
  const o = d.options;
  const lines = [
    'Times in ms from SIGTERM, seen by the clients; medians over rounds (codes: median round).',
    '*clean*: closed with a close frame from the server; *forced*: 1006, the TCP connection was',
    'cut without one. *budget*: the strategy’s own bound (0: it does not wait). Ratios are to',
    'the terminate row with the same stalled fraction. *cpu* (0% stalled): CPU time the whole',
    'machine spent (all cores, servers and clients) from the signal to the last close, ms, and',
    '× the terminate row’s. `wsdrain+deflate`: wsdrain with --per-message-deflate, clients that',
    'negotiate it and send 3 messages each first. `wsdrain+topics`: wsdrain with an app loaded,',
    'every socket a wsdrain.v1 client subscribed to a topic of its own. *server µs/socket*:',
    'CPU (user + sys, /proc) of the server’s own processes, primary and every worker with their',
    'threads, from the signal to its exit, per socket released (closed after the signal), and ×',
    'the terminate row’s (* a lower bound: the exit could not be accounted for, e.g. a SIGKILL).',
  ];
  for (const stalled of o.stalled) {
    const rows = d.drain.filter((x) => x.stalled === stalled);
    if (rows.length === 0) continue;
    const base = rows.find((x) => x.strategy === 'terminate');
    const cpu = stalled === 0; // the cooperative table also shows what each drain cost
    lines.push(
      '',
      `## ${pct(stalled)} stalled peers`,
      '',
      `| strategy | budget | p50 | p90 | p99 | last close | exit | clean | forced | codes | last / terminate | exit / terminate |${cpu ? ' cpu |' : ''} server µs/socket |`,
      `|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|${cpu ? '--:|' : ''}--:|`,
    );
    for (const x of rows) {
      lines.push(
        `| ${x.strategy} | ${x.budgetMs} | ${ms(x.p50Ms)} | ${ms(x.p90Ms)} | ${ms(x.p99Ms)} | ` +
          `${ms(x.lastCloseMs)} | ${ms(x.exitMs)} | ${x.clean} | ${x.forced} | ${codesText(x.codes)} | ` +
          `${ratio(x.lastCloseMs, base?.lastCloseMs)} | ${ratio(x.exitMs, base?.exitMs)} |` +
          (cpu
            ? ` ${x.cpuMs === null ? '—' : `${x.cpuMs} (${ratio(x.cpuMs, base?.cpuMs)})`} |`
            : '') +
          ` ${
            x.serverCpuUsPerRelease === null || x.serverCpuUsPerRelease === undefined
              ? '—'
              : x.serverCpuExact
                ? `${x.serverCpuUsPerRelease} (${ratio(x.serverCpuUsPerRelease, base?.serverCpuUsPerRelease)})`
                : `≥ ${x.serverCpuUsPerRelease}*`
          } |`,
      );
    }
  }
  const c = serverCpuVsTerminate(d);
  if (c) {
    lines.push(
      '',
      `Server CPU per socket released, cooperative peers: wsdrain ${c.wsdrain ?? '—'} µs, ` +
        `terminate ${c.terminate ?? '—'} µs: ×${c.ratio ?? '—'} (target ≤ ` +
        `×${TARGETS.serverCpuPerReleaseVsTerminate}).`,
    );
  }
  if (d.failures.length) lines.push('', '## Failed runs', '', ...d.failures.map((s) => `- ${s}`));
  return lines;
}

const COLORS: Record<Strategy, string> = {
  terminate: '#7f7f7f',
  'ws-close': '#ff7f0e',
  'seed-soft': '#9467bd',
  'seed-hard': '#8c564b',
  'pm2-default': '#d62728',
  wsdrain: '#1f77b4',
  'wsdrain+deflate': '#17becf',
  'wsdrain+topics': '#2ca02c',
};

/** Sockets still open vs time since SIGTERM: one line per strategy, a panel per stalled fraction. */
export function drainChart(d: DrainResult): string {
  const o = d.options;
  return chart(
    o.stalled
      .filter((s) => d.drain.some((x) => x.stalled === s))
      .map((stalled) => {
        const rows = d.drain.filter((x) => x.stalled === stalled);
        const lines: ChartLine[] = rows.map((x) => ({
          label: x.strategy,
          color: COLORS[x.strategy],
          series: x.series,
          lastCloseMs: x.lastCloseMs,
          bold: x.strategy === 'wsdrain',
        }));
        const wsdrain = rows.some((x) => x.strategy.startsWith('wsdrain'));
        return {
          title: `${o.sockets} sockets, ${o.workers} workers, ${pct(stalled)} stalled peers`,
          lines,
          ...(wsdrain ? { budgetMs: o.drainTimeoutMs, budgetColor: COLORS.wsdrain } : {}),
        };
      }),
  );
}
