/**
 * Healthz scenario: how do the probes behave while wsdrain drains? For each `--drain-delay`
 * in `drainDelaysMs`: start wsdrain, connect `sockets` sockets (a `stalled` fraction paused:
 * they never read, so the drain lasts until its deadline and the server stays up for the
 * whole measured window), then
 *
 *   1. idle:  autocannon (programmatic API) on GET /healthz for `durationS` seconds;
 *   2. drain: autocannon again for `durationS` seconds; `signalAfterMs` into it, SIGTERM with
 *             --drain-timeout = window + 3 s (covers the window), and from the signal on,
 *             GET /readyz on a fresh connection every `pollMs` ms (time to 503, time to the
 *             first refused connection).
 *
 * Every request goes on a fresh connection (`Connection: close`, as kubelet probes), so that
 * idle and drain figures compare: wsdrain closes probe connections while draining. Latencies
 * are timed per response (autocannon's `response` event, sub-ms) and split at the signal: p50/p99 and status counts of the responses completed after SIGTERM, connection errors
 * after it. autocannon's own histogram (whole-ms resolution) is kept too.
 * Target: /healthz p99 during the drain within healthzP99VsIdle (3) x the idle p99; an idle
 * p99 below the latencies' resolution (0.01 ms) counts as that resolution.
 */
import autocannon from 'autocannon';
import { type Crowd, withLoad } from '../crowd/index.js';
import { probe } from '../lib/net.js';
import { now, sleep } from '../lib/proc.js';
import { judged, ms, pct, verdict } from '../lib/report.js';
import { Server } from '../lib/server.js';
import { percentile, round2 } from '../lib/stats.js';
import { TARGETS, target } from '../lib/targets.js';

export interface HealthzOptions {
  sockets: number;
  workers: number;
  stalled: number;
  /** autocannon window of each phase, seconds. */
  durationS: number;
  /** autocannon connections. */
  connections: number;
  /** One run per --drain-delay value. */
  drainDelaysMs: number[];
  signalAfterMs: number;
  pollMs: number;
  perProcess: number;
}

export const HEALTHZ_PRESETS: Record<'quick' | 'full', HealthzOptions> = {
  quick: {
    sockets: 4000,
    workers: 2,
    stalled: 0.1,
    durationS: 3,
    connections: 10,
    drainDelaysMs: [0, 2000],
    signalAfterMs: 500,
    pollMs: 10,
    perProcess: 6000,
  },
  full: {
    sockets: 12_000,
    workers: 2,
    stalled: 0.1,
    durationS: 5,
    connections: 10,
    drainDelaysMs: [0, 3000],
    signalAfterMs: 1000,
    pollMs: 10,
    perProcess: 6000,
  },
};

/** Figures of one autocannon window (or of its part after the signal). */
export interface ProbeStats {
  /** Responses completed. */
  responses: number;
  /** Responses by status code. */
  statuses: Record<string, number>;
  non2xx: number;
  /** Connection errors (refused, reset, timeouts). */
  errors: number;
  /** Sub-ms latencies of every response, ms. */
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** autocannon's own figures for the whole window (whole ms). */
  autocannon?: { p50: number; p99: number; max: number; non2xx: number; errors: number };
}

export interface HealthzRun {
  drainDelayMs: number;
  drainTimeoutMs: number;
  sockets: number;
  idle: ProbeStats;
  /** The drain window from the signal to the end of autocannon. */
  drain: ProbeStats;
  /** The same window cut at the first refused connection: while /healthz was reachable. */
  drainReachable: ProbeStats;
  /** ms of the drain window measured (signal -> autocannon end). */
  drainWindowMs: number;
  /** Signal -> the first failed /healthz connection of autocannon (null: none failed). */
  healthzRefusedMs: number | null;
  /**
   * Signal -> arrival of the first /readyz 503, and -> the sending of the first /readyz poll
   * that failed (null: never). Polls start at the signal, every `pollMs` ms, each on a fresh
   * connection, with a 1 s timeout.
   */
  readyz503Ms: number | null;
  readyzRefusedMs: number | null;
  /**
   * /readyz answers after the signal, runs of equal answers with the time the run's first
   * poll was sent, e.g. ["503 x12 @3ms", "ECONNREFUSED x40 @2004ms"]; "(after N ms)" when
   * that poll took over 100 ms to be answered.
   */
  readyzTimeline: string[];
  /** Server exit, ms after the signal (null: still up when we stopped). */
  exitMs: number | null;
  /** drain p99 / idle p99 (responses while reachable). */
  p99Ratio: number | null;
  misses: string[];
}

export interface HealthzResult {
  options: HealthzOptions;
  runs: HealthzRun[];
}

/** The resolution of the latencies (round2): the least idle p99 a ratio divides by. */
export const P99_FLOOR_MS = 0.01;

/** Drain p99 / idle p99, the idle p99 floored at {@link P99_FLOOR_MS}; null without both. */
export function p99Ratio(drain: number | null, idle: number | null): number | null {
  return drain === null || idle === null ? null : round2(drain / Math.max(idle, P99_FLOOR_MS));
}

export async function runHealthz(opts: HealthzOptions): Promise<HealthzResult> {
  const runs: HealthzRun[] = [];
  for (const delay of opts.drainDelaysMs) runs.push(await runOnce(opts, delay));
  return { options: opts, runs };
}

interface Sample {
  at: number;
  ms: number;
  status: number;
}

function runOnce(opts: HealthzOptions, drainDelayMs: number): Promise<HealthzRun> {
  const drainTimeoutMs = opts.durationS * 1000 + 3000;
  const start = Server.wsdrain({
    workers: opts.workers,
    drainTimeoutMs,
    flags: ['--drain-delay', drainDelayMs],
  });
  return withLoad(
    start,
    {
      stalled: opts.stalled,
      stallMode: 'pause',
      perProcess: opts.perProcess,
    },
    (server, crowd) => measure(opts, drainDelayMs, drainTimeoutMs, server, crowd),
  );
}

async function measure(
  opts: HealthzOptions,
  drainDelayMs: number,
  drainTimeoutMs: number,
  server: Server,
  crowd: Crowd,
): Promise<HealthzRun> {
  const port = server.port;
  const sockets = await crowd.connect(opts.sockets);
  await sleep(300);
  server.assertUp();

  const idleRun = await cannon(port, opts);
  const idle = stats(idleRun.samples, idleRun.errors, 0, Number.POSITIVE_INFINITY);
  idle.autocannon = summary(idleRun.result);

  // drain: autocannon starts, the signal follows `signalAfterMs` later
  let t0 = Number.NaN;
  /** Runs of equal /readyz answers; sent/answered: of the run's first poll, ms since t0. */
  const timeline: { status: string; sent: number; answered: number; n: number }[] = [];
  let polling = true;
  const poller = (async () => {
    while (Number.isNaN(t0)) await sleep(1);
    while (polling) {
      const started = now();
      const status = await probe(port, '/readyz');
      const last = timeline[timeline.length - 1];
      if (last?.status === status) last.n++;
      else timeline.push({ status, sent: started - t0, answered: now() - t0, n: 1 });
      await sleep(Math.max(0, opts.pollMs - (now() - started)));
    }
  })();
  const drainRunP = cannon(port, opts);
  await sleep(opts.signalAfterMs);
  t0 = now();
  server.signal('SIGTERM');
  const drainRun = await drainRunP;
  const endAt = now();
  polling = false;
  await poller;

  const firstRefused = drainRun.errors.find((e) => e >= t0);
  const refusedAt = Math.min(
    firstRefused ?? Number.POSITIVE_INFINITY,
    t0 + (timeline.find((p) => !isStatus(p.status))?.sent ?? Number.POSITIVE_INFINITY),
  );
  const drain = stats(drainRun.samples, drainRun.errors, t0, Number.POSITIVE_INFINITY);
  drain.autocannon = summary(drainRun.result);
  const drainReachable = stats(drainRun.samples, drainRun.errors, t0, refusedAt);
  await server.waitExit(Math.max(0, t0 + drainTimeoutMs + 2000 - now()));
  const find = (f: (s: string) => boolean, when: 'sent' | 'answered'): number | null => {
    const p = timeline.find((x) => f(x.status));
    return p ? round2(p[when]) : null;
  };
  const run: HealthzRun = {
    drainDelayMs,
    drainTimeoutMs,
    sockets,
    idle,
    drain,
    drainReachable,
    drainWindowMs: Math.round(endAt - t0),
    healthzRefusedMs: firstRefused === undefined ? null : round2(firstRefused - t0),
    readyz503Ms: find((s) => s === '503', 'answered'),
    readyzRefusedMs: find((s) => !isStatus(s), 'sent'),
    readyzTimeline: timeline.map(
      (p) =>
        `${p.status} x${p.n} @${Math.round(p.sent)}ms` +
        (p.answered - p.sent > 100 ? ` (after ${Math.round(p.answered - p.sent)} ms)` : ''),
    ),
    exitMs: server.exitAt === undefined ? null : Math.round(server.exitAt - t0),
    p99Ratio: p99Ratio(drainReachable.p99Ms, idle.p99Ms),
    misses: [],
  };
  return judged('healthz', run, healthzMisses, describeHealthz);
}

/**
 * Targets: /healthz p99 within 3x idle while reachable, no non-2xx; and the contract: /healthz
 * answers while the server is up, /readyz answers 503 while it drains.
 */
export function healthzMisses(r: HealthzRun): string[] {
  const misses: string[] = [];
  if (r.idle.responses === 0) misses.push('/healthz never answered while idle');
  if (r.drainReachable.responses === 0) {
    misses.push('/healthz unreachable during the drain (no response after SIGTERM)');
  } else if (r.p99Ratio === null || r.p99Ratio > TARGETS.healthzP99VsIdle) {
    misses.push(
      `/healthz p99 during the drain ${r.p99Ratio ?? '—'}x idle ${target('healthzP99VsIdle', '<=')}`,
    );
  }
  if (r.healthzRefusedMs !== null && (r.exitMs === null || r.exitMs > r.drainWindowMs)) {
    misses.push(
      `/healthz refused ${r.drain.errors} connections from ${Math.round(r.healthzRefusedMs)} ms ` +
        `after SIGTERM while the server was still up (exit at ${r.exitMs ?? 'never'} ms)`,
    );
  }
  if (r.drain.non2xx > 0) misses.push(`${r.drain.non2xx} non-2xx /healthz answers`);
  if (r.readyz503Ms === null) misses.push('/readyz never answered 503 (refused instead)');
  return misses;
}

export function describeHealthz(r: HealthzRun): string {
  const ms = (v: number | null): string => (v === null ? 'never' : `${v} ms`);
  const p = (s: ProbeStats): string =>
    `${s.responses} ok/${s.non2xx} non-2xx/${s.errors} errors, p50 ${ms(s.p50Ms)} p99 ${ms(s.p99Ms)}`;
  return (
    `--drain-delay ${r.drainDelayMs}: idle ${p(r.idle)}; drain ${p(r.drain)} ` +
    `(reachable part: ${r.drainReachable.responses} responses, p99 ${ms(r.drainReachable.p99Ms)}, ` +
    `x${r.p99Ratio ?? '—'} idle, first refused at ${ms(r.healthzRefusedMs)}); /readyz 503 at ${ms(r.readyz503Ms)}, refused at ` +
    `${ms(r.readyzRefusedMs)}; exit ${ms(r.exitMs)}` +
    (r.misses.length ? `; MISSED: ${r.misses.join('; ')}` : '; targets met')
  );
}

/** One autocannon window on /healthz, with every response and error timestamped. */
function cannon(
  port: number,
  opts: HealthzOptions,
): Promise<{ result: autocannon.Result; samples: Sample[]; errors: number[] }> {
  const samples: Sample[] = [];
  const errors: number[] = [];
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: `http://127.0.0.1:${port}/healthz`,
        connections: opts.connections,
        duration: opts.durationS,
        timeout: 2,
        // A fresh connection per request, as kubelet's probes do, in both phases: wsdrain
        // answers `Connection: close` while draining anyway, and latencies stay comparable.
        headers: { connection: 'close' },
        setupClient: fixReconnectAccounting,
      },
      (err, result) => (err ? reject(err) : resolve({ result, samples, errors })),
    );
    instance.on('response', (_client, status: number, _bytes, ms: number) => {
      samples.push({ at: now(), ms, status });
    });
    instance.on('reqError', () => errors.push(now()));
  });
}

/**
 * autocannon (9.0.0) writes the next request as soon as a response is parsed; when the server
 * then closes the connection, that request stays in the client's queue across the reconnect,
 * and every later response is matched with an older request: latencies of hundreds of ms
 * against a server that answers in 1 ms. Clear the queue on each (re)connect.
 */
function fixReconnectAccounting(client: autocannon.Client): void {
  const c = client as unknown as {
    _connect: () => void;
    pipelinedRequests: { clear: () => void };
  };
  const connect = c._connect;
  c._connect = function (this: typeof c) {
    this.pipelinedRequests.clear();
    connect.call(this);
  };
}

function stats(samples: Sample[], errors: number[], from: number, to: number): ProbeStats {
  const inside = samples.filter((s) => s.at >= from && s.at < to);
  const statuses: Record<string, number> = {};
  for (const s of inside) statuses[s.status] = (statuses[s.status] ?? 0) + 1;
  const sorted = inside.map((s) => s.ms).sort((a, b) => a - b);
  const r = (v: number | null): number | null => (v === null ? null : round2(v));
  return {
    responses: inside.length,
    statuses,
    non2xx: inside.filter((s) => s.status < 200 || s.status > 299).length,
    errors: errors.filter((e) => e >= from && e < to).length,
    p50Ms: r(percentile(sorted, 0.5)),
    p99Ms: r(percentile(sorted, 0.99)),
    maxMs: r(percentile(sorted, 1)),
  };
}

const isStatus = (s: string): boolean => /^\d+$/.test(s);

function summary(r: autocannon.Result): ProbeStats['autocannon'] {
  return {
    p50: r.latency.p50,
    p99: r.latency.p99,
    max: r.latency.max,
    non2xx: r.non2xx,
    errors: r.errors,
  };
}

function probeCells(p: ProbeStats): string {
  return `${p.responses} | ${p.non2xx} | ${p.errors} | ${ms(p.p50Ms)} | ${ms(p.p99Ms)} | ${ms(p.maxMs)}`;
}

export function healthzSection(h: HealthzResult): string[] {
  const o = h.options;
  const lines = [
    '## /healthz and /readyz during a drain',
    '',
    `autocannon on GET /healthz, ${o.connections} connections, a fresh connection per request ` +
      `(as kubelet probes), ${o.durationS} s idle, then ${o.durationS} s with SIGTERM ` +
      `${o.signalAfterMs} ms in; ${o.sockets} sockets, ${pct(o.stalled)} of them paused (never ` +
      `read), so the drain lasts until --drain-timeout (window + 3 s) and the server stays up for ` +
      `the whole window. "drain" rows: responses completed after SIGTERM; "reachable": the part ` +
      `before the first refused connection. Latencies in ms, timed per response (sub-ms).`,
    '',
    '| --drain-delay | phase | responses | non-2xx | conn. errors | p50 | p99 | max | p99 / idle |',
    '|--:|---|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of h.runs) {
    lines.push(
      `| ${r.drainDelayMs} | idle | ${probeCells(r.idle)} | |`,
      `| ${r.drainDelayMs} | drain (${r.drainWindowMs} ms) | ${probeCells(r.drain)} | |`,
      `| ${r.drainDelayMs} | drain, reachable | ${probeCells(r.drainReachable)} | ` +
        `${r.p99Ratio === null ? '—' : `×${r.p99Ratio}`} |`,
    );
  }
  lines.push(
    '',
    '| --drain-delay | /readyz 503 after | first refused /readyz after | /readyz answers after SIGTERM (when sent) | first refused /healthz after | server exit |',
    '|--:|--:|--:|---|--:|--:|',
  );
  for (const r of h.runs) {
    lines.push(
      `| ${r.drainDelayMs} | ${ms(r.readyz503Ms)} | ${ms(r.readyzRefusedMs)} | ` +
        `${r.readyzTimeline.join(', ')} | ${ms(r.healthzRefusedMs ?? null)} | ${ms(r.exitMs)} |`,
    );
  }
  lines.push(
    '',
    `Target: /healthz p99 during the drain within ${TARGETS.healthzP99VsIdle}× idle (an idle p99 under ` +
      `${P99_FLOOR_MS} ms counts as ${P99_FLOOR_MS} ms), no non-2xx. ` +
      'Contract (DESIGN.md): /healthz 200 while the server is alive, /readyz 503 while draining.',
    '',
  );
  for (const r of h.runs) lines.push(`- --drain-delay ${r.drainDelayMs}: ${verdict(r.misses)}`);
  return lines;
}
