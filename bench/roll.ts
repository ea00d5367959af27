/**
 * Roll scenario: `clients` reconnecting clients (loadgen/reconnect.ts: they reconnect at once
 * on any close, ignoring the retry hint) on wsdrain with `workers` workers; SIGHUP (rolling
 * restart: one worker at a time, replacement ready before the old one drains with 1012).
 *
 * Measured: refusals (failed reconnect attempts), close codes and reasons, reconnect latency
 * (close -> reopened) p50/p99, time from SIGHUP to the primary's "rolling restart done" log
 * line (and the durationMs it logs), time until every client is connected again, and whether
 * every worker pid was replaced. Targets: 0 refusals, every close 1012, no client lost.
 */
import { sleep } from './lib/clock.js';
import { log, parseLogLine } from './lib/log.js';
import { childPids } from './lib/procfs.js';
import { assertUp, judge, withWsdrain } from './lib/scenario.js';
import { percentile, round1 } from './lib/stats.js';
import { ReconnectLoad } from './loadgen/reconnect.js';
import type { Server } from './servers.js';

export interface RollOptions {
  clients: number;
  workers: number;
  /** wsdrain --drain-timeout (each old worker's budget). */
  drainTimeoutMs: number;
  perProcess: number;
  /** Delay after a refused reconnect attempt. */
  retryDelayMs: number;
}

export const ROLL_PRESETS: Record<'quick' | 'full', RollOptions> = {
  quick: { clients: 4000, workers: 2, drainTimeoutMs: 5000, perProcess: 4000, retryDelayMs: 20 },
  full: { clients: 12_000, workers: 2, drainTimeoutMs: 5000, perProcess: 6000, retryDelayMs: 20 },
};

/** One per-worker line of the primary's "rolled worker" log. */
export interface RolledWorker {
  pid: number;
  sockets: number;
  clean: number;
  terminated: number;
  dropped: number;
  lateUpgrades: number;
  durationMs: number;
}

export interface RollResult {
  options: RollOptions;
  connected: number;
  /**
   * Handshakes per second while the clients first connected (200 at a time per process): the
   * rate the reconnect latencies can be compared with.
   */
  connectRatePerS: number;
  /** SIGHUP -> "rolling restart done" line read from the primary's stdout, ms. */
  rollDoneMs: number | null;
  /** durationMs field of that line (the primary's own clock). */
  rollDurationMs: number | null;
  /** SIGHUP -> the last client connected again, ms. */
  allReconnectedMs: number | null;
  /** SIGHUP -> the last close, ms. */
  lastCloseMs: number | null;
  closes: number;
  codes: Record<string, number>;
  reasons: Record<string, number>;
  closesPerSocket: Record<string, number>;
  refusals: number;
  refusalCauses: Record<string, number>;
  lost: number;
  /** Clients not connected when the scenario ended. */
  notReconnected: number;
  reconnectP50Ms: number | null;
  reconnectP90Ms: number | null;
  reconnectP99Ms: number | null;
  reconnectMaxMs: number | null;
  /** Median and largest retry hint the server sent (ignored by these clients). */
  hintRetryP50Ms: number | null;
  hintRetryMaxMs: number | null;
  workersBefore: number[];
  workersAfter: number[];
  allWorkersReplaced: boolean;
  rolled: RolledWorker[];
  /** Target checks that failed (empty: all met). */
  misses: string[];
}

export function runRoll(opts: RollOptions): Promise<RollResult> {
  const spec = {
    workers: opts.workers,
    drainTimeoutMs: opts.drainTimeoutMs,
    logLevel: 'info', // "rolling restart done" and "rolled worker" are info lines
  };
  const newLoad = (url: string): ReconnectLoad =>
    new ReconnectLoad({ url, perProcess: opts.perProcess, retryDelayMs: opts.retryDelayMs });
  return withWsdrain(spec, newLoad, (server, load) => roll(opts, server, load));
}

async function roll(opts: RollOptions, server: Server, load: ReconnectLoad): Promise<RollResult> {
  let t0 = Number.NaN;
  let doneAt: number | undefined;
  let rollDurationMs: number | null = null;
  const rolled: RolledWorker[] = [];
  server.onLine(({ line, at }) => {
    const j = parseLogLine(line);
    const m = typeof j?.msg === 'string' ? j.msg : '';
    if (m.startsWith('rolling restart done') && !Number.isNaN(t0)) {
      doneAt = at;
      rollDurationMs = typeof j?.durationMs === 'number' ? j.durationMs : null;
    } else if (m.startsWith('rolled worker')) {
      const r = (j?.report ?? {}) as Partial<RolledWorker>;
      rolled.push({
        pid: Number(j?.workerPid),
        sockets: r.sockets ?? 0,
        clean: r.clean ?? 0,
        terminated: r.terminated ?? 0,
        dropped: r.dropped ?? 0,
        lateUpgrades: r.lateUpgrades ?? 0,
        durationMs: r.durationMs ?? 0,
      });
    }
  });
  const pid = server.child.pid!;
  const connected = await load.connect(opts.clients);
  await sleep(300);
  assertUp(server);
  const workersBefore = childPids(pid).sort((a, b) => a - b);

  t0 = load.mark();
  server.signal('SIGHUP');
  const budget = opts.workers * (opts.drainTimeoutMs + 10_000) + 10_000;
  const settled = await load.waitSettled(budget, () => doneAt !== undefined);
  if (!settled) log(`roll: not settled after ${budget} ms (roll done: ${doneAt !== undefined})`);
  await sleep(200); // stragglers
  const r = await load.results();
  const workersAfter = childPids(pid).sort((a, b) => a - b);
  const ms = (v: number | null): number | null => (v === null ? null : round1(v));
  const result: RollResult = {
    options: opts,
    connected,
    connectRatePerS: Math.round((connected * 1000) / load.connectMs),
    rollDoneMs: doneAt === undefined ? null : round1(doneAt - t0),
    rollDurationMs,
    allReconnectedMs: r.open === connected ? ms(r.lastReopenMs) : null,
    lastCloseMs: ms(r.lastCloseMs),
    closes: r.closes,
    codes: r.codes,
    reasons: r.reasons,
    closesPerSocket: r.closesPerSocket,
    refusals: r.refusals,
    refusalCauses: r.refusalCauses,
    lost: r.lost,
    notReconnected: connected - r.open,
    reconnectP50Ms: ms(percentile(r.latencies, 0.5)),
    reconnectP90Ms: ms(percentile(r.latencies, 0.9)),
    reconnectP99Ms: ms(percentile(r.latencies, 0.99)),
    reconnectMaxMs: ms(percentile(r.latencies, 1)),
    hintRetryP50Ms: percentile(r.hintRetries, 0.5),
    hintRetryMaxMs: percentile(r.hintRetries, 1),
    workersBefore,
    workersAfter,
    allWorkersReplaced:
      workersAfter.length === opts.workers && workersAfter.every((p) => !workersBefore.includes(p)),
    rolled,
    misses: [],
  };
  return judge('roll', result, rollMisses, describeRoll);
}

/** Which targets the run missed: 0 refusals, all 1012, all reconnected, all replaced. */
export function rollMisses(r: RollResult): string[] {
  const misses: string[] = [];
  if (r.refusals > 0) misses.push(`${r.refusals} refusals (target 0)`);
  const not1012 = r.closes - (r.codes['1012'] ?? 0);
  if (not1012 > 0) misses.push(`${not1012} closes not 1012`);
  if (r.closes < r.connected) misses.push(`only ${r.closes} closes for ${r.connected} clients`);
  if (r.notReconnected > 0 || r.lost > 0) misses.push(`${r.notReconnected} clients not back`);
  if (!r.allWorkersReplaced) misses.push('not every worker was replaced');
  if (r.rollDoneMs === null) misses.push('no "rolling restart done" log line');
  return misses;
}

export function describeRoll(r: RollResult): string {
  const ms = (v: number | null): string => (v === null ? 'never' : `${v} ms`);
  return (
    `${r.connected} clients, ${r.options.workers} workers: roll done ${ms(r.rollDoneMs)} ` +
    `(logged ${ms(r.rollDurationMs)}), all reconnected ${ms(r.allReconnectedMs)}, ` +
    `${r.closes} closes ${JSON.stringify(r.codes)}, ${r.refusals} refusals ` +
    `${JSON.stringify(r.refusalCauses)}, reconnect p50 ${ms(r.reconnectP50Ms)} ` +
    `p99 ${ms(r.reconnectP99Ms)} max ${ms(r.reconnectMaxMs)} (first connect: ` +
    `${r.connectRatePerS} handshakes/s), ` +
    `workers ${r.workersBefore.join(',')} -> ${r.workersAfter.join(',')}` +
    (r.misses.length ? `; MISSED: ${r.misses.join('; ')}` : '; targets met')
  );
}
