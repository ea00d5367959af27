/**
 * Throughput scenario: echo messages per second through wsdrain's handler path (ws ->
 * piscina pool thread -> ordered reply) vs the raw ws echo baseline (baselines/raw-echo.ts,
 * the same cluster skeleton, echo on the worker's event loop), same worker count. For each
 * window K: `connections` sockets each keep K `size`-byte text messages outstanding for
 * `durationS` seconds (after a warm-up); replies per second are counted on the client side.
 * Servers alternate within a round, in a rotated order; figures are medians over rounds.
 *
 * Also recorded: server CPU time per 1000 replies (primary + workers, from /proc, whole run
 * including warm-up), round-trip p50/p99 (every 4th reply). Target: wsdrain / raw >=
 * throughputRatio (0.8), every reply the right one.
 */
import { withLoad } from '../crowd/index.js';
import { log, now, sleep } from '../lib/proc.js';
import { machineBusyMs, treeCpuMs } from '../lib/procfs.js';
import { cell, ms, verdict } from '../lib/report.js';
import { Server } from '../lib/server.js';
import { median, percentile, round2 } from '../lib/stats.js';
import { TARGETS, target } from '../lib/targets.js';

export interface ThroughputOptions {
  workers: number;
  /** wsdrain --threads per worker. */
  threads: number;
  connections: number;
  /** Outstanding messages per connection; one row per value. */
  windows: number[];
  size: number;
  warmupS: number;
  durationS: number;
  rounds: number;
  /** Echo client processes. */
  clientProcesses: number;
}

export const THROUGHPUT_PRESETS: Record<'quick' | 'full', ThroughputOptions> = {
  quick: {
    workers: 2,
    threads: 1,
    connections: 200,
    windows: [16],
    size: 64,
    warmupS: 1,
    durationS: 5,
    rounds: 3,
    clientProcesses: 1,
  },
  full: {
    workers: 2,
    threads: 1,
    connections: 200,
    windows: [1, 16, 64],
    size: 64,
    warmupS: 1,
    durationS: 10,
    rounds: 3,
    clientProcesses: 1,
  },
};

export type EchoServer = 'raw-echo' | 'wsdrain';

export interface ThroughputRun {
  server: EchoServer;
  window: number;
  round: number;
  perSecond: number;
  replies: number;
  windowMs: number;
  mismatches: number;
  closed: number;
  rttP50Ms: number | null;
  rttP99Ms: number | null;
  /** Server CPU ms per 1000 replies (warm-up included). */
  cpuMsPer1k: number | null;
  /** Mean CPU use during the run, % of one core: server, client, and the rest of the machine. */
  serverCpuPct: number;
  clientCpuPct: number;
  /** Busy CPU not ours (other processes on the machine): > 20 means a noisy run. */
  otherCpuPct: number;
}

export interface ThroughputRow {
  window: number;
  rawPerSecond: number | null;
  wsdrainPerSecond: number | null;
  /** wsdrain / raw. */
  ratio: number | null;
  rawRttP50Ms: number | null;
  rawRttP99Ms: number | null;
  wsdrainRttP50Ms: number | null;
  wsdrainRttP99Ms: number | null;
  rawCpuMsPer1k: number | null;
  wsdrainCpuMsPer1k: number | null;
  mismatches: number;
  /** Median CPU use, % of one core (the machine has availableParallelism() cores). */
  rawServerCpuPct: number | null;
  wsdrainServerCpuPct: number | null;
  rawClientCpuPct: number | null;
  wsdrainClientCpuPct: number | null;
  /** Largest CPU use by other processes in any run of this row: > 20, figures are noisy. */
  maxOtherCpuPct: number;
}

export interface ThroughputResult {
  options: ThroughputOptions;
  rows: ThroughputRow[];
  runs: ThroughputRun[];
  misses: string[];
}

export async function runThroughput(opts: ThroughputOptions): Promise<ThroughputResult> {
  const runs: ThroughputRun[] = [];
  const servers: EchoServer[] = ['raw-echo', 'wsdrain'];
  for (let round = 1; round <= opts.rounds; round++) {
    for (const window of opts.windows) {
      const order = round % 2 === 1 ? servers : [...servers].reverse();
      for (const server of order) {
        const run = await runOnce(server, window, round, opts);
        runs.push(run);
        log(
          `throughput [round ${round}/${opts.rounds}] ${server}, window ${window}: ` +
            `${run.perSecond} replies/s, rtt p50 ${run.rttP50Ms} ms p99 ${run.rttP99Ms} ms, ` +
            `${run.cpuMsPer1k} CPU ms / 1000 replies; CPU server ${run.serverCpuPct}%, client ` +
            `${run.clientCpuPct}%, other processes ${run.otherCpuPct}%` +
            (run.mismatches || run.closed
              ? `, ${run.mismatches} mismatches, ${run.closed} closed`
              : ''),
        );
      }
    }
  }
  const rows = opts.windows.map((window) => {
    const pick = (server: EchoServer, f: (r: ThroughputRun) => number | null): number | null =>
      median(runs.filter((r) => r.server === server && r.window === window).map(f));
    const raw = pick('raw-echo', (r) => r.perSecond);
    const wsd = pick('wsdrain', (r) => r.perSecond);
    return {
      window,
      rawPerSecond: raw,
      wsdrainPerSecond: wsd,
      ratio: raw && wsd !== null ? round2(wsd / raw) : null,
      rawRttP50Ms: pick('raw-echo', (r) => r.rttP50Ms),
      rawRttP99Ms: pick('raw-echo', (r) => r.rttP99Ms),
      wsdrainRttP50Ms: pick('wsdrain', (r) => r.rttP50Ms),
      wsdrainRttP99Ms: pick('wsdrain', (r) => r.rttP99Ms),
      rawCpuMsPer1k: pick('raw-echo', (r) => r.cpuMsPer1k),
      wsdrainCpuMsPer1k: pick('wsdrain', (r) => r.cpuMsPer1k),
      mismatches: runs
        .filter((r) => r.window === window)
        .reduce((s, r) => s + r.mismatches + r.closed, 0),
      rawServerCpuPct: pick('raw-echo', (r) => r.serverCpuPct),
      wsdrainServerCpuPct: pick('wsdrain', (r) => r.serverCpuPct),
      rawClientCpuPct: pick('raw-echo', (r) => r.clientCpuPct),
      wsdrainClientCpuPct: pick('wsdrain', (r) => r.clientCpuPct),
      maxOtherCpuPct: Math.max(
        0,
        ...runs.filter((r) => r.window === window).map((r) => r.otherCpuPct),
      ),
    };
  });
  for (const r of rows) {
    log(
      `throughput window ${r.window}: raw ${r.rawPerSecond}/s, wsdrain ${r.wsdrainPerSecond}/s, ` +
        `ratio ${r.ratio ?? '—'} (target >= ${TARGETS.throughputRatio})`,
    );
  }
  const result = { options: opts, rows, runs, misses: [] as string[] };
  result.misses = throughputMisses(result);
  return result;
}

export function throughputMisses(t: ThroughputResult): string[] {
  const misses: string[] = [];
  for (const r of t.rows) {
    if (r.ratio === null || r.ratio < TARGETS.throughputRatio) {
      misses.push(
        `window ${r.window}: wsdrain/raw ${r.ratio ?? '—'} ${target('throughputRatio', '>=')}`,
      );
    }
    if (r.mismatches > 0) misses.push(`window ${r.window}: ${r.mismatches} wrong replies/closes`);
  }
  return misses;
}

async function runOnce(
  strategy: EchoServer,
  window: number,
  round: number,
  opts: ThroughputOptions,
): Promise<ThroughputRun> {
  const start =
    strategy === 'wsdrain'
      ? Server.wsdrain({
          workers: opts.workers,
          drainTimeoutMs: 1000,
          flags: ['--threads', opts.threads],
        })
      : Server.baseline(strategy, opts.workers);
  return withLoad(
    start,
    {
      perProcess: Math.ceil(opts.connections / Math.max(1, opts.clientProcesses)),
      concurrency: 50,
      attempts: 1,
      window,
      size: opts.size,
    },
    async (server, crowd) => {
      await sleep(200);
      if ((await crowd.connect(opts.connections)) < opts.connections) {
        throw new Error(`throughput: not every connection opened to ${strategy}`);
      }
      const cpuBefore = treeCpuMs(server.pid);
      const busyBefore = machineBusyMs();
      const selfBefore = process.cpuUsage();
      const clientCpu = (): number => crowd.pids.reduce((n, pid) => n + treeCpuMs(pid), 0);
      const clientBefore = clientCpu();
      const t = now();
      crowd.phase('warmup');
      await sleep(opts.warmupS * 1000);
      crowd.phase('measure');
      await sleep(opts.durationS * 1000);
      crowd.phase('end', true);
      await sleep(200); // the replies on their way are not counted; let them arrive
      const r = await crowd.results();
      const clientCpuMs = clientCpu() - clientBefore;
      const cpu = treeCpuMs(server.pid) - cpuBefore;
      const elapsed = now() - t;
      const self = process.cpuUsage(selfBefore);
      const other =
        machineBusyMs() - busyBefore - cpu - clientCpuMs - (self.user + self.system) / 1000;
      const pctOf = (v: number): number => Math.round((100 * v) / elapsed);
      server.assertUp();
      const m = r.phases.measure!;
      const closed = ['warmup', 'measure'].reduce(
        (n, k) => n + (r.phases[k]?.closeTimes.length ?? 0),
        0,
      );
      return {
        server: strategy,
        window,
        round,
        perSecond: m.repliesPerSec,
        replies: m.replies,
        windowMs: Math.round(m.durationMs),
        mismatches: r.mismatched,
        closed,
        rttP50Ms: percentile(m.rttSamples, 0.5),
        rttP99Ms: percentile(m.rttSamples, 0.99),
        cpuMsPer1k: r.echoed > 0 ? round2((cpu * 1000) / r.echoed) : null,
        serverCpuPct: pctOf(cpu),
        clientCpuPct: pctOf(clientCpuMs),
        otherCpuPct: Math.max(0, pctOf(other)),
      };
    },
  );
}

export function throughputSection(t: ThroughputResult): string[] {
  const o = t.options;
  const n = cell;
  const lines = [
    '## Echo throughput: wsdrain vs raw ws',
    '',
    `${o.connections} connections, ${o.size}-byte text messages, K outstanding per connection, ` +
      `${o.durationS} s after ${o.warmupS} s warm-up, ${o.workers} workers (wsdrain --threads ` +
      `${o.threads}), ${o.clientProcesses} client process(es), median of ${o.rounds} round(s). ` +
      'CPU ms/1k: server processes (primary + workers, threads included) per 1000 replies. ' +
      'CPU %: mean use during the run, % of one core (server / client); *other*: the largest ' +
      'CPU use by processes outside the bench in any run (above 20 %, the row is noisy).',
    '',
    '| K | raw replies/s | wsdrain replies/s | wsdrain / raw | raw rtt p50 / p99 | wsdrain rtt p50 / p99 | raw CPU ms/1k | wsdrain CPU ms/1k | raw CPU % | wsdrain CPU % | other |',
    '|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of t.rows) {
    lines.push(
      `| ${r.window} | ${n(r.rawPerSecond)} | ${n(r.wsdrainPerSecond)} | ` +
        `${r.ratio === null ? '—' : `×${r.ratio}`} | ${ms(r.rawRttP50Ms)} / ${ms(r.rawRttP99Ms)} | ` +
        `${ms(r.wsdrainRttP50Ms)} / ${ms(r.wsdrainRttP99Ms)} | ${n(r.rawCpuMsPer1k)} | ` +
        `${n(r.wsdrainCpuMsPer1k)} | ${n(r.rawServerCpuPct)} / ${n(r.rawClientCpuPct)} | ` +
        `${n(r.wsdrainServerCpuPct)} / ${n(r.wsdrainClientCpuPct)} | ${r.maxOtherCpuPct ?? '—'} % |`,
    );
  }
  lines.push('', `Target: wsdrain / raw ≥ ${TARGETS.throughputRatio} — ${verdict(t.misses)}.`);
  return lines;
}
