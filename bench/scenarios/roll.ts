/**
 * Roll: `clients` clients that reconnect at once on any close (the retry hint is recorded, not
 * honoured) on wsdrain with `workers` workers; SIGHUP (rolling restart: one worker at a time,
 * its replacement ready before it drains with 1012). With `deflate`, wsdrain runs with
 * --per-message-deflate and every client negotiates it and sends 3 messages on each open.
 *
 * Measured: refusals (failed reconnect attempts), close codes and reasons, reconnect latency
 * (close -> open again) p50/p99, SIGHUP -> the primary's "rolling restart done" line (and the
 * durationMs it logs), SIGHUP -> every client connected again, whether every worker pid was
 * replaced. Verdict: at most rollRefusals refusals, every close 1012, every client moved
 * exactly once and back, every worker replaced.
 */
import { type Crowd, withLoad } from '../crowd/index.js';
import { log, sleep } from '../lib/proc.js';
import { childPids } from '../lib/procfs.js';
import { codesText, judged, ms, verdict } from '../lib/report.js';
import { type Report, Server } from '../lib/server.js';
import { maxOrNull, percentile, round1 } from '../lib/stats.js';
import { TARGETS, target } from '../lib/targets.js';

export interface RollOptions {
  clients: number;
  workers: number;
  /** wsdrain --drain-timeout (each old worker's budget). */
  drainTimeoutMs: number;
  perProcess: number;
  /** Delay after a refused reconnect attempt. */
  retryDelayMs: number;
  /** wsdrain with --per-message-deflate, clients negotiating it. */
  deflate?: boolean;
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
  /** Handshakes per second while the clients first connected: the scale for the latencies. */
  connectRatePerS: number;
  /** SIGHUP -> "rolling restart done" read from the primary's stdout, ms. */
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
  /** With deflate: clients whose first connection negotiated permessage-deflate. */
  deflated?: number;
  workersBefore: number[];
  workersAfter: number[];
  allWorkersReplaced: boolean;
  rolled: RolledWorker[];
  /** Target checks that failed (empty: all met). */
  misses: string[];
}

export function runRoll(opts: RollOptions): Promise<RollResult> {
  const flags = opts.deflate ? ['--per-message-deflate'] : [];
  // "rolling restart done" and "rolled worker" are info lines
  const start = Server.wsdrain({
    workers: opts.workers,
    drainTimeoutMs: opts.drainTimeoutMs,
    flags,
    logLevel: 'info',
  });
  return withLoad(
    start,
    {
      perProcess: opts.perProcess,
      reconnect: 'now',
      retryDelayMs: opts.retryDelayMs,
      statusEveryMs: 20,
      ...(opts.deflate ? { deflate: true, sendOnOpen: 3 } : {}),
    },
    (server, crowd) => roll(opts, server, crowd),
  );
}

async function roll(opts: RollOptions, server: Server, crowd: Crowd): Promise<RollResult> {
  const connected = await crowd.connect(opts.clients);
  await sleep(300);
  server.assertUp();
  const workersBefore = childPids(server.pid);

  const t0 = crowd.phase('roll');
  server.signal('SIGHUP');
  const done = (): { at: number; durationMs?: number } | undefined =>
    server.log.rollsDone.find((d) => d.at >= t0);
  const budget = opts.workers * (opts.drainTimeoutMs + 10_000) + 10_000;
  const settled = await crowd.waitFor((s) => {
    const d = done();
    return (
      d !== undefined &&
      s.at > d.at &&
      s.closedOnce >= connected && // each client has seen its close (it may lag the log line)
      s.reconnecting === 0 &&
      s.gaveUp === 0 &&
      s.open === connected
    );
  }, budget);
  if (!settled) log(`roll: not settled after ${budget} ms (roll done: ${done() !== undefined})`);
  await sleep(200); // stragglers
  const r = await crowd.results();
  const p = r.phases.roll!;
  const workersAfter = childPids(server.pid);
  const at = (v: number | null): number | null => (v === null ? null : round1(v));
  const d = done();
  const result: RollResult = {
    options: opts,
    connected,
    connectRatePerS: Math.round((connected * 1000) / crowd.connectMs),
    rollDoneMs: d === undefined ? null : round1(d.at - t0),
    rollDurationMs: d?.durationMs ?? null,
    allReconnectedMs: r.open === connected ? at(maxOrNull(p.reopenTimes)) : null,
    lastCloseMs: at(maxOrNull(p.closeTimes)),
    closes: p.closeTimes.length,
    codes: p.codes,
    reasons: p.reasons,
    closesPerSocket: r.closesPerSocket,
    refusals: Object.values(p.refusals).reduce((a, b) => a + b, 0),
    refusalCauses: p.refusals,
    lost: r.gaveUp,
    notReconnected: connected - r.open,
    reconnectP50Ms: at(percentile(p.reconnectMs, 0.5)),
    reconnectP90Ms: at(percentile(p.reconnectMs, 0.9)),
    reconnectP99Ms: at(percentile(p.reconnectMs, 0.99)),
    reconnectMaxMs: at(percentile(p.reconnectMs, 1)),
    hintRetryP50Ms: percentile(p.hintRetries, 0.5),
    hintRetryMaxMs: percentile(p.hintRetries, 1),
    ...(opts.deflate ? { deflated: r.deflated } : {}),
    workersBefore,
    workersAfter,
    allWorkersReplaced:
      workersAfter.length === opts.workers && workersAfter.every((x) => !workersBefore.includes(x)),
    rolled: server.log.rolled.map(({ pid, report }) => rolledWorker(pid, report)),
    misses: [],
  };
  return judged(`roll${opts.deflate ? ' (deflate)' : ''}`, result, rollMisses, describeRoll);
}

const rolledWorker = (pid: number, w: Report): RolledWorker => ({
  pid,
  sockets: w.sockets ?? 0,
  clean: w.clean ?? 0,
  terminated: w.terminated ?? 0,
  dropped: w.dropped ?? 0,
  lateUpgrades: w.lateUpgrades ?? 0,
  durationMs: w.durationMs ?? 0,
});

/** 0 refusals, only 1012, every client moved exactly once and back, every worker replaced. */
export function rollMisses(r: RollResult): string[] {
  const misses: string[] = [];
  if (r.refusals > TARGETS.rollRefusals) {
    misses.push(`${r.refusals} refusals ${target('rollRefusals', '<=')}`);
  }
  const not1012 = r.closes - (r.codes['1012'] ?? 0);
  if (not1012 > 0) misses.push(`${not1012} closes not 1012 (${codesText(r.codes)})`);
  if (r.closes < r.connected) misses.push(`only ${r.closes} closes for ${r.connected} clients`);
  const twice = Object.entries(r.closesPerSocket).filter(([k]) => k !== '1');
  if (twice.length > 0) {
    misses.push(
      `clients moved more than once: ${twice.map(([k, n]) => `${n} closed ${k}x`).join(', ')}`,
    );
  }
  if (r.notReconnected > 0 || r.lost > 0) misses.push(`${r.notReconnected} clients not back`);
  if (r.deflated !== undefined && r.deflated !== r.connected) {
    misses.push(`permessage-deflate negotiated by ${r.deflated} of ${r.connected} clients`);
  }
  if (!r.allWorkersReplaced) misses.push('not every worker was replaced');
  if (r.rollDoneMs === null) misses.push('no "rolling restart done" log line');
  return misses;
}

function describeRoll(r: RollResult): string {
  const t = (v: number | null): string => (v === null ? 'never' : `${v} ms`);
  return (
    `${r.connected} clients, ${r.options.workers} workers: roll done ${t(r.rollDoneMs)} ` +
    `(logged ${t(r.rollDurationMs)}), all reconnected ${t(r.allReconnectedMs)}, ` +
    `${r.closes} closes ${JSON.stringify(r.codes)}, ${r.refusals} refusals ` +
    `${JSON.stringify(r.refusalCauses)}, reconnect p50 ${t(r.reconnectP50Ms)} ` +
    `p99 ${t(r.reconnectP99Ms)} max ${t(r.reconnectMaxMs)} (first connect: ` +
    `${r.connectRatePerS} handshakes/s), workers ${r.workersBefore.join(',')} -> ` +
    `${r.workersAfter.join(',')}${r.misses.length ? `; MISSED: ${r.misses.join('; ')}` : '; targets met'}`
  );
}

export function rollSection(rolls: RollResult[]): string[] {
  const r0 = rolls[0]!;
  const o = r0.options;
  const lines = [
    '## Rolling restart (SIGHUP)',
    '',
    `${r0.connected} clients that reconnect at once on every close (retry hints ignored), ` +
      `${o.workers} workers, --drain-timeout ${o.drainTimeoutMs} ms; a refused attempt is retried ` +
      `after ${o.retryDelayMs} ms. Times in ms from SIGHUP. *deflate*: wsdrain with ` +
      '--per-message-deflate, every client negotiating it and sending 3 messages on each open.',
    '',
    '| deflate | roll done (log line) | logged durationMs | all reconnected | last close | closes | codes | refusals | reconnect p50 | p90 | p99 | max | workers replaced |',
    '|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|---|',
  ];
  for (const r of rolls) {
    lines.push(
      `| ${r.options.deflate ? 'yes' : 'no'} | ${ms(r.rollDoneMs)} | ${ms(r.rollDurationMs)} | ` +
        `${ms(r.allReconnectedMs)} | ${ms(r.lastCloseMs)} | ${r.closes} | ${codesText(r.codes)} | ` +
        `${r.refusals} | ${ms(r.reconnectP50Ms)} | ${ms(r.reconnectP90Ms)} | ${ms(r.reconnectP99Ms)} | ` +
        `${ms(r.reconnectMaxMs)} | ${r.allWorkersReplaced ? 'all' : 'NOT all'} ` +
        `(${r.workersBefore.join(', ')} → ${r.workersAfter.join(', ')}) |`,
    );
  }
  for (const r of rolls) {
    const perSocket = Object.entries(r.closesPerSocket)
      .map(([k, n]) => `${n} closed ${k}x`)
      .join(', ');
    const wave = r.connected / o.workers;
    lines.push(
      '',
      `${r.options.deflate ? 'With deflate' : 'Without deflate'}: closes per socket: ` +
        `${perSocket || '—'} (more than 1x: the client was moved twice). ` +
        `Refusal causes: ${codesText(r.refusalCauses)}. ` +
        `Retry hints sent: median ${ms(r.hintRetryP50Ms)}, max ${ms(r.hintRetryMaxMs)}. ` +
        `For scale: the first connect ran at ${r.connectRatePerS ?? '—'} handshakes/s, so ` +
        `${Math.round(wave)} clients reconnecting at once take about ` +
        `${r.connectRatePerS ? Math.round((wave / r.connectRatePerS) * 1000) : '—'} ms to get through.`,
    );
    if (r.rolled.length) {
      lines.push(
        '',
        'Per rolled worker (the primary\'s "rolled worker" lines): ' +
          r.rolled
            .map(
              (w) =>
                `${w.pid}: ${w.sockets} sockets, ${w.clean} clean, ${w.terminated} terminated, ` +
                `${w.dropped} dropped, ${w.lateUpgrades} late upgrades, ${w.durationMs} ms`,
            )
            .join('; '),
      );
    }
    lines.push(
      '',
      `Targets${r.options.deflate ? ' (deflate)' : ''}: ≤ ${TARGETS.rollRefusals} refusals, ` +
        `every close 1012, every client moved once and back, every worker replaced — ${verdict(r.misses)}.`,
    );
  }
  return lines;
}
