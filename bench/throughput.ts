/**
 * Throughput scenario: echo messages per second through wsdrain's handler path (ws ->
 * piscina pool thread -> ordered reply) vs the raw ws echo baseline (baselines/raw-echo.ts,
 * the same cluster skeleton, echo on the worker's event loop), same worker count. For each
 * window K: `connections` sockets each keep K `size`-byte text messages outstanding for
 * `durationS` seconds (after a warm-up); replies per second are counted on the client side.
 * Servers alternate within a round, in a rotated order; figures are medians over rounds.
 *
 * Also recorded: server CPU time per 1000 replies (primary + workers, from /proc, whole run
 * including warm-up), round-trip p50/p99. Target: wsdrain / raw >= 0.8.
 */
import { now, sleep } from './lib/clock.js';
import { log } from './lib/log.js';
import { machineBusyMs, treeCpuMs } from './lib/procfs.js';
import { median, round2 } from './lib/stats.js';
import { TARGETS } from './lib/targets.js';
import { runEchoLoad } from './loadgen/echo.js';
import { freePort, Server, unavailable } from './servers.js';

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
  const why = unavailable('wsdrain');
  if (why) throw new Error(why);
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
  const misses: string[] = [];
  for (const r of rows) {
    if (r.ratio === null || r.ratio < TARGETS.throughputRatio) {
      misses.push(
        `window ${r.window}: wsdrain/raw ${r.ratio ?? '—'} (target >= ${TARGETS.throughputRatio})`,
      );
    }
    if (r.mismatches > 0) misses.push(`window ${r.window}: ${r.mismatches} wrong replies/closes`);
  }
  for (const r of rows) {
    log(
      `throughput window ${r.window}: raw ${r.rawPerSecond}/s, wsdrain ${r.wsdrainPerSecond}/s, ` +
        `ratio ${r.ratio ?? '—'} (target >= ${TARGETS.throughputRatio})`,
    );
  }
  return { options: opts, rows, runs, misses };
}

async function runOnce(
  strategy: EchoServer,
  window: number,
  round: number,
  opts: ThroughputOptions,
): Promise<ThroughputRun> {
  const port = await freePort();
  const server = new Server({
    strategy,
    port,
    workers: opts.workers,
    drainTimeoutMs: 1000,
    extraArgs: ['--threads', String(opts.threads)],
  });
  try {
    await server.ready();
    await sleep(200);
    const pid = server.child.pid!;
    const cpuBefore = treeCpuMs(pid);
    const busyBefore = machineBusyMs();
    const selfBefore = process.cpuUsage();
    const t = now();
    const r = await runEchoLoad({
      url: `ws://127.0.0.1:${port}`,
      connections: opts.connections,
      window,
      size: opts.size,
      warmupMs: opts.warmupS * 1000,
      durationMs: opts.durationS * 1000,
      processes: opts.clientProcesses,
    });
    const cpu = treeCpuMs(pid) - cpuBefore;
    const elapsed = now() - t;
    const self = process.cpuUsage(selfBefore);
    const other =
      machineBusyMs() - busyBefore - cpu - r.clientCpuMs - (self.user + self.system) / 1000;
    const pctOf = (ms: number): number => Math.round((100 * ms) / elapsed);
    if (server.exitAt !== undefined) throw new Error(`server exited:\n${server.output}`);
    return {
      server: strategy,
      window,
      round,
      perSecond: r.perSecond,
      replies: r.replies,
      windowMs: r.windowMs,
      mismatches: r.mismatches,
      closed: r.closed,
      rttP50Ms: r.rttP50Ms,
      rttP99Ms: r.rttP99Ms,
      cpuMsPer1k: r.repliesTotal > 0 ? round2((cpu * 1000) / r.repliesTotal) : null,
      serverCpuPct: pctOf(cpu),
      clientCpuPct: pctOf(r.clientCpuMs),
      otherCpuPct: Math.max(0, pctOf(other)),
    };
  } finally {
    // Under --cpu-prof (BENCH_SERVER_NODE_ARGS) the profiles are written only on a normal
    // exit: let wsdrain drain and exit before the SIGKILL.
    if (strategy === 'wsdrain' && process.env.BENCH_SERVER_NODE_ARGS) {
      server.signal('SIGTERM');
      await server.waitExit(5000);
    }
    server.killTree();
  }
}
