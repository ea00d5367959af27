/**
 * Reconnect storm: do paced drains and reconnect hints cut the peak reconnect rate on the
 * servers that stay up? Closing 30k sockets in one second moves 30k reconnects onto the
 * survivors in that same second. Two cases, each run in two modes with the same
 * --drain-timeout: `baseline` (no --drain-window, --reconnect-window 0, clients with
 * `hintJitter: false`) and `paced` (--drain-window and --reconnect-window, clients with their
 * default hint handling):
 *
 * - roll: one wsdrain with `rollWorkers` workers, SIGHUP (1012); done when the primary logs
 *   "rolling restart done" and every client is back. Survivor accepts: the clients' reopens.
 * - failover: wsdrain A and B (1 worker each) behind the readiness-polling balancer of
 *   lib/balancer.ts, SIGTERM A (1001); done when A has exited and every client is back (on B).
 *   Survivor accepts: the balancer's counts for B.
 *
 * Clients: wsdrain's own reconnecting client (`wsdrain/client`, the built package) in the
 * crowd's processes. Figures per run: peak accepts per second on the survivors (largest 100 ms
 * bucket x 10, and the busiest second), handshake latency p50/p99, refusals, close codes, time
 * until every client is back; per case, baseline peak / paced peak. Verdict per case: peak cut
 * >= stormPeakCut (5), no more refusals paced than not, every drain within its budget (nothing
 * terminated, no "missed its deadline" warning, A's exit 0), and no run failed.
 *
 * First, `accept` (./accept.ts): the server CPU a burst of `clients` handshakes costs wsdrain
 * and a plain ws server of the same shape (`rollWorkers` workers), per connection; target
 * acceptCpuVsWs.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Crowd, type PhaseResults } from '../crowd/index.js';
import { BalancerProcess, BUCKET_MS } from '../lib/balancer.js';
import { guarded, log, now, sleep, within } from '../lib/proc.js';
import { codesText, ms, verdict } from '../lib/report.js';
import { type Report, Server, type WsdrainLog } from '../lib/server.js';
import { busiest, perBucket, percentile, round1 } from '../lib/stats.js';
import { TARGETS, target } from '../lib/targets.js';
import { type AcceptResult, acceptMisses, acceptSection, runAccept } from './accept.js';

export type StormCase = 'roll' | 'failover';
/** What the storm can run: the two cases, and the accept measurement. */
export type StormPart = StormCase | 'accept';
export const STORM_PARTS: readonly StormPart[] = ['accept', 'roll', 'failover'];
export type Mode = 'baseline' | 'paced';

export interface StormOptions {
  /** Clients (one connection each). */
  clients: number;
  /** Clients per client process (at most 5000). */
  perProcess: number;
  /** First connections opened at a time per client process. */
  concurrency: number;
  /** --drain-timeout of every server, both modes. */
  drainTimeoutMs: number;
  /** Paced mode: --drain-window. */
  drainWindowMs: number;
  /** Paced mode: --reconnect-window. */
  reconnectWindowMs: number;
  /** Workers of the rolled server (and of both servers of the accept measurement). */
  rollWorkers: number;
  /** Rounds of the accept measurement (wsdrain and plain ws alternating). */
  acceptRounds: number;
  /** Quiet time between the last first connection and the signal. */
  settleMs: number;
  /** How long past the expected end to wait for the reconnects before giving up. */
  graceMs: number;
}

const QUICK: StormOptions = {
  clients: 3000,
  perProcess: 1500,
  concurrency: 100,
  drainTimeoutMs: 5000,
  drainWindowMs: 2000,
  reconnectWindowMs: 2000,
  rollWorkers: 2,
  acceptRounds: 2,
  settleMs: 500,
  graceMs: 5000,
};

export const STORM_PRESETS: Record<'quick' | 'full', StormOptions> = {
  quick: QUICK,
  full: { ...QUICK, clients: 8000, perProcess: 2000, settleMs: 1000, acceptRounds: 3 },
};

/** A drain the run saw: a rolled worker's report, or A's --report. */
export type StormDrain = Partial<Report> & { pid: number };

export interface StormRun {
  scenario: StormCase;
  mode: Mode;
  clients: number;
  /** Ports: the server (roll); A, B and the balancer (failover). */
  ports: Record<string, number>;
  /** Pacing flags the server(s) ran with (besides port, host, workers, log level). */
  flags: string[];
  /** Client options that differ from the defaults. */
  clientOptions: Record<string, unknown>;
  /** Peak accepts per second on the survivors: the largest 100 ms bucket x 10. */
  peakPerSec: number | null;
  /** Accepts on the survivors in their busiest second (any 10 consecutive 100 ms buckets). */
  peak1sPerSec: number | null;
  /** Where peakPerSec is counted: the clients' reconnect opens, or the balancer (for B). */
  peakSource: 'client opens' | 'balancer';
  /** The same peak counted from the clients' reconnect opens (a cross-check for failover). */
  peakOpensPerSec: number | null;
  /** Peak rate of reconnect attempts (socket creations that went on to open): the demand. */
  peakAttemptsPerSec: number | null;
  /** Peak rate of closes seen by the clients (largest 100 ms bucket x 10). */
  peakClosesPerSec: number | null;
  /** Reconnects that opened after the signal. */
  reconnects: number;
  /** Handshake latency of the reconnects: socket creation to 'open', in ms. */
  latencyP50Ms: number | null;
  latencyP99Ms: number | null;
  latencyMaxMs: number | null;
  /** Failed reconnect attempts seen by the clients (sockets that closed before opening). */
  refusals: number;
  refusalCodes: Record<string, number>;
  /** Socket errors during connecting (each one also shows up as a refusal). */
  connectErrors: number;
  /** Failover: client connections the balancer closed for want of a ready backend. */
  lbRefused?: number;
  /** Failover: connections the balancer moved to B after A refused the TCP connection. */
  lbRedispatched?: number;
  /** Failover: the balancer's readiness polls of B that got no answer within 1 s. */
  lbPollTimeouts?: number;
  /** Failover: clients on A and B when the signal was sent. */
  split?: [number, number];
  /** Close codes of the connections closed after the signal. */
  codes: Record<string, number>;
  /** Clients closed at least once after the signal. */
  clientsClosed: number;
  /** Clients that gave up reconnecting (must be 0). */
  gaveUp: number;
  /** What set the reconnect delays: the hint's retry, or the backoff (no retry in the hint). */
  delays: { hint: number; backoff: number };
  /** From the signal to the last client reconnected; null when some never did. */
  allReconnectedMs: number | null;
  /** From the signal to "rolling restart done" (roll) or A's exit (failover). */
  serverDoneMs: number | null;
  /** The drains: roll, each rolled worker's report; failover, A's --report. */
  drains: StormDrain[];
  /** Every drain ended within --drain-timeout, nothing terminated, nobody killed. */
  withinBudget: boolean;
  /** Survivor accepts, closes and reconnect attempts per 100 ms bucket since the signal. */
  acceptsPer100ms: number[];
  closesPer100ms: number[];
  attemptsPer100ms: number[];
  /** Warnings the servers logged. */
  warnings: string[];
  error?: string;
}

export interface StormResult {
  options: StormOptions;
  roll: { baseline: StormRun | null; paced: StormRun | null };
  failover: { baseline: StormRun | null; paced: StormRun | null };
  /** Server CPU per accepted connection, wsdrain and plain ws (when run). */
  accept?: AcceptResult;
  /** Baseline peak / paced peak (accepts per second on the survivors, 100 ms buckets). */
  peakRatio: { roll: number | null; failover: number | null };
  /** The same ratio over the survivors' busiest second. */
  peakRatio1s: { roll: number | null; failover: number | null };
  /** Per case: ratio >= stormPeakCut, no more refusals paced than not, drains within budget. */
  checks: Record<StormCase, { ratio: boolean; refusals: boolean; budget: boolean }>;
  /** Runs that failed, as "<case> <mode>: <error>". */
  failures: string[];
  /** The failures and every check that failed. */
  misses: string[];
  durationMs: number;
  /** Cores and 1-minute load average before and after: a load above ~1 before means noise. */
  host: { cpus: number; loadBefore: number; loadAfter: number };
}

const load1 = (): number => Math.round(loadavg()[0]! * 100) / 100;
const ratioOf = (a: number | null | undefined, b: number | null | undefined): number | null =>
  a && b ? Math.round((a / b) * 100) / 100 : null;

/** Runs each case, baseline then paced, one after the other (never two at once). */
export async function runStorm(
  o: StormOptions,
  parts: readonly StormPart[] = STORM_PARTS,
): Promise<StormResult> {
  const cases = parts.filter((p): p is StormCase => p !== 'accept');
  const started = Date.now();
  const result: StormResult = {
    options: o,
    roll: { baseline: null, paced: null },
    failover: { baseline: null, paced: null },
    peakRatio: { roll: null, failover: null },
    peakRatio1s: { roll: null, failover: null },
    checks: {
      roll: { ratio: false, refusals: false, budget: false },
      failover: { ratio: false, refusals: false, budget: false },
    },
    failures: [],
    misses: [],
    durationMs: 0,
    host: { cpus: availableParallelism(), loadBefore: load1(), loadAfter: 0 },
  };
  if (result.host.loadBefore > 1) {
    log(`storm: load average ${result.host.loadBefore} before starting: figures may be skewed`);
  }
  if (parts.includes('accept')) {
    try {
      result.accept = await runAccept({
        clients: o.clients,
        workers: o.rollWorkers,
        perProcess: o.perProcess,
        concurrency: o.concurrency,
        rounds: o.acceptRounds,
      });
    } catch (err) {
      result.failures.push(`accept: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  for (const c of cases) {
    for (const mode of ['baseline', 'paced'] as const) {
      log(`storm ${c} ${mode}: ${o.clients} clients`);
      const run = await runCase(c, mode, o);
      result[c][mode] = run;
      if (run.error) result.failures.push(`${c} ${mode}: ${run.error}`);
      log(`storm ${c} ${mode}: ${line(run)}`);
    }
    const { baseline, paced } = result[c];
    result.peakRatio[c] = ratioOf(baseline?.peakPerSec, paced?.peakPerSec);
    result.peakRatio1s[c] = ratioOf(baseline?.peak1sPerSec, paced?.peak1sPerSec);
    const ran = baseline && paced && !baseline.error && !paced.error;
    result.checks[c] = {
      ratio: (result.peakRatio[c] ?? 0) >= TARGETS.stormPeakCut,
      // "At no cost in refusals": pacing may not add any (the unpaced storm sometimes has some).
      refusals: Boolean(ran) && paced!.refusals <= baseline!.refusals,
      budget: Boolean(baseline?.withinBudget && paced?.withinBudget),
    };
  }
  result.durationMs = Date.now() - started;
  result.host.loadAfter = load1();
  result.misses = stormMisses(result, cases);
  return result;
}

export function stormMisses(s: StormResult, cases: readonly StormCase[]): string[] {
  const misses = [...s.failures, ...(s.accept ? acceptMisses(s.accept) : [])];
  for (const c of cases) {
    const k = s.checks[c];
    if (!k.ratio)
      misses.push(`${c}: peak cut ×${s.peakRatio[c] ?? '—'} ${target('stormPeakCut', '>=')}`);
    if (!k.refusals) {
      const { baseline: b, paced: p } = s[c];
      misses.push(
        `${c}: refusals ${p?.refusals ?? '—'} paced vs ${b?.refusals ?? '—'} without pacing`,
      );
    }
    if (!k.budget)
      misses.push(`${c}: a drain over its budget (or a server warned it missed its deadline)`);
  }
  return misses;
}

function line(r: StormRun): string {
  return [
    `peak ${r.peakPerSec ?? '-'}/s (busiest second ${r.peak1sPerSec ?? '-'})`,
    `latency p50 ${r.latencyP50Ms ?? '-'} ms p99 ${r.latencyP99Ms ?? '-'} ms`,
    `refusals ${r.refusals}`,
    `codes ${JSON.stringify(r.codes)}`,
    `all reconnected at ${r.allReconnectedMs ?? '-'} ms`,
    r.error ? `ERROR ${r.error.split('\n')[0]}` : '',
  ]
    .filter(Boolean)
    .join(', ');
}

/** Runs one case in one mode; never throws (a failure is in `error`). */
async function runCase(c: StormCase, mode: Mode, o: StormOptions): Promise<StormRun> {
  const run = emptyRun(c, mode, o);
  return guarded(run, (stops) => (c === 'roll' ? roll(run, o, stops) : failover(run, o, stops)));
}

/** The wsdrain flags of a mode (after --port, --host, --workers). */
function serverFlags(mode: Mode, o: StormOptions): (string | number)[] {
  return ['--reconnect-window', mode === 'paced' ? o.reconnectWindowMs : 0].concat(
    mode === 'paced' && o.drainWindowMs ? ['--drain-window', o.drainWindowMs] : [],
  );
}

function crowdFor(port: number, mode: Mode, o: StormOptions, stops: (() => unknown)[]): Crowd {
  const crowd = new Crowd({
    url: `ws://127.0.0.1:${port}`,
    client: 'wsdrain',
    ...(mode === 'baseline' ? { hintJitter: false } : {}),
    perProcess: o.perProcess,
    concurrency: o.concurrency,
    statusEveryMs: 50,
    connectTimeoutMs: 60_000,
  });
  stops.push(() => crowd.stop());
  return crowd;
}

/**
 * A roll's drains kept their budget: every worker reported, none terminated a socket or took
 * longer than --drain-timeout, and the primary killed none ("missed its deadline").
 */
export function rollWithinBudget(
  log: WsdrainLog,
  o: Pick<StormOptions, 'rollWorkers' | 'drainTimeoutMs'>,
): boolean {
  return (
    log.rolled.length === o.rollWorkers &&
    log.rolled.every(
      (w) => w.report.terminated === 0 && (w.report.durationMs ?? Infinity) <= o.drainTimeoutMs,
    ) &&
    !log.warnings.some((w) => w.includes('missed its deadline'))
  );
}

async function roll(run: StormRun, o: StormOptions, stops: (() => unknown)[]): Promise<void> {
  const flags = serverFlags(run.mode, o);
  // "rolling restart done" is an info line
  const server = await Server.wsdrain({
    workers: o.rollWorkers,
    drainTimeoutMs: o.drainTimeoutMs,
    flags,
    logLevel: 'info',
  });
  stops.push(() => server.kill());
  run.ports = { server: server.port };
  run.flags = [
    '--drain-timeout',
    String(o.drainTimeoutMs),
    '--log-level',
    'info',
    ...flags.map(String),
  ];
  await server.ready();
  const crowd = crowdFor(server.port, run.mode, o, stops);
  await crowd.connect(o.clients);
  await sleep(o.settleMs);

  const mark = crowd.phase('storm');
  server.signal('SIGHUP');
  // Each worker's drain takes at most the budget; a replacement starts in well under 2 s.
  const limit = o.rollWorkers * (o.drainTimeoutMs + 2000) + o.graceMs;
  const done = (): { at: number } | undefined => server.log.rollsDone.find((d) => d.at >= mark);
  const rolled = await within(() => done(), limit, 'roll');
  if (rolled) {
    await crowd.waitFor(
      (s) => s.at > done()!.at && s.open === o.clients && s.closedOnce === o.clients,
      Math.max(1000, mark + limit - now()),
    );
  }
  const r = await crowd.results();
  fillFromClients(run, r.phases.storm!, r.open, r.closedOnce, r.gaveUp, o.clients);
  run.peakPerSec = run.peakOpensPerSec;
  run.acceptsPer100ms = perBucket(r.phases.storm!.reopenTimes, BUCKET_MS);
  run.peak1sPerSec = busiest(run.acceptsPer100ms, 1000 / BUCKET_MS);
  const d = done();
  run.serverDoneMs = d === undefined ? null : round1(d.at - mark);
  run.drains = server.log.rolled.map((w) => ({ pid: w.pid, ...w.report }));
  run.warnings = server.log.warnings;
  run.withinBudget = rolled && rollWithinBudget(server.log, o);
  if (!rolled) run.error = `no "rolling restart done" within ${limit} ms:\n${server.output}`;
  else if (run.allReconnectedMs === null) run.error = 'not every client reconnected in time';
}

async function failover(run: StormRun, o: StormOptions, stops: (() => unknown)[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'wsdrain-storm-'));
  stops.push(() => rmSync(dir, { recursive: true, force: true }));
  const reportFile = join(dir, 'a-report.json');
  const flags = serverFlags(run.mode, o);
  const spec = { workers: 1, drainTimeoutMs: o.drainTimeoutMs };
  const a = await Server.wsdrain({ ...spec, flags: [...flags, '--report', reportFile] });
  stops.push(() => a.kill());
  const b = await Server.wsdrain({ ...spec, flags });
  stops.push(() => b.kill());
  run.flags = [
    '--drain-timeout',
    String(o.drainTimeoutMs),
    '--log-level',
    'warn',
    ...flags.map(String),
  ];
  await Promise.all([a.ready(), b.ready()]);
  const lb = new BalancerProcess([a.port, b.port]);
  stops.push(() => lb.stop());
  await lb.ready();
  run.ports = { a: a.port, b: b.port, balancer: lb.port };
  const crowd = crowdFor(lb.port, run.mode, o, stops);
  await crowd.connect(o.clients);
  await sleep(o.settleMs);
  const before = await lb.results();
  const onA = before.backends[0]!.beforeMark;
  run.split = [onA, before.backends[1]!.beforeMark];

  const mark = crowd.phase('storm');
  lb.mark(mark);
  a.signal('SIGTERM');
  const limit = o.drainTimeoutMs + 2000 + o.graceMs;
  const exited = await a.waitExit(o.drainTimeoutMs + 2000);
  if (exited) {
    await sleep(150); // statuses come every 50 ms: count ones sent after the exit
    await crowd.waitFor(
      (s) => s.open === o.clients && s.closedOnce >= onA,
      Math.max(1000, mark + limit - now()),
    );
  }
  const r = await crowd.results();
  const after = await lb.results();
  fillFromClients(run, r.phases.storm!, r.open, r.closedOnce, r.gaveUp, o.clients);
  const survivor = after.backends[1]!;
  const counts = new Map(survivor.buckets);
  run.acceptsPer100ms = Array.from(
    { length: Math.max(0, ...counts.keys()) + 1 },
    (_, i) => counts.get(i) ?? 0,
  );
  run.peak1sPerSec = busiest(run.acceptsPer100ms, 1000 / BUCKET_MS);
  run.peakPerSec = counts.size > 0 ? Math.max(...counts.values()) * (1000 / BUCKET_MS) : null;
  run.lbRefused = after.refused;
  run.lbRedispatched = after.redispatched;
  run.lbPollTimeouts = survivor.pollTimeouts;
  run.serverDoneMs = a.exitAt === undefined ? null : round1(a.exitAt - mark);
  run.warnings = [...a.log.warnings, ...b.log.warnings];
  let report: Report = {};
  try {
    report = JSON.parse(readFileSync(reportFile, 'utf8')) as Report;
  } catch {
    // no report: A did not finish its drain
  }
  const { sockets, clean, terminated, dropped, lateUpgrades, durationMs, windowMs } = report;
  run.drains = [
    { pid: a.pid, sockets, clean, terminated, dropped, lateUpgrades, durationMs, windowMs },
  ];
  run.withinBudget =
    exited &&
    a.exitCode === 0 &&
    a.exitAt! - mark <= o.drainTimeoutMs &&
    report.terminated === 0 &&
    (report.workersKilled ?? 0) === 0 &&
    !run.warnings.some((w) => w.includes('missed its deadline'));
  if (!exited) run.error = `A did not exit within ${o.drainTimeoutMs + 2000} ms:\n${a.output}`;
  else if (run.allReconnectedMs === null) run.error = 'not every client reconnected in time';
}

function emptyRun(scenario: StormCase, mode: Mode, o: StormOptions): StormRun {
  return {
    scenario,
    mode,
    clients: o.clients,
    ports: {},
    flags: [],
    clientOptions: mode === 'baseline' ? { hintJitter: false } : {},
    peakPerSec: null,
    peak1sPerSec: null,
    peakSource: scenario === 'roll' ? 'client opens' : 'balancer',
    peakOpensPerSec: null,
    peakAttemptsPerSec: null,
    peakClosesPerSec: null,
    reconnects: 0,
    latencyP50Ms: null,
    latencyP99Ms: null,
    latencyMaxMs: null,
    refusals: 0,
    refusalCodes: {},
    connectErrors: 0,
    codes: {},
    clientsClosed: 0,
    gaveUp: 0,
    delays: { hint: 0, backoff: 0 },
    allReconnectedMs: null,
    serverDoneMs: null,
    drains: [],
    withinBudget: false,
    acceptsPer100ms: [],
    closesPer100ms: [],
    attemptsPer100ms: [],
    warnings: [],
  };
}

function fillFromClients(
  run: StormRun,
  p: PhaseResults,
  open: number,
  closedOnce: number,
  gaveUp: number,
  total: number,
): void {
  const lat = p.handshakeMs;
  const q = (v: number | null): number | null => (v === null ? null : round1(v));
  const peak = (buckets: number[]): number | null =>
    buckets.length > 0 ? Math.max(...buckets) * (1000 / BUCKET_MS) : null;
  run.reconnects = p.reopenTimes.length;
  run.latencyP50Ms = q(percentile(lat, 0.5));
  run.latencyP99Ms = q(percentile(lat, 0.99));
  run.latencyMaxMs = q(percentile(lat, 1));
  run.refusals = Object.values(p.refusals).reduce((a, b) => a + b, 0);
  run.refusalCodes = p.refusals;
  run.connectErrors = p.connectErrors;
  run.codes = p.codes;
  run.clientsClosed = closedOnce;
  run.gaveUp = gaveUp;
  run.delays = p.delays;
  run.closesPer100ms = perBucket(p.closeTimes, BUCKET_MS);
  run.attemptsPer100ms = perBucket(p.attemptTimes, BUCKET_MS);
  run.peakOpensPerSec = peak(perBucket(p.reopenTimes, BUCKET_MS));
  run.peakClosesPerSec = peak(run.closesPer100ms);
  run.peakAttemptsPerSec = peak(run.attemptsPer100ms);
  const all = open === total && gaveUp === 0 && p.reopenTimes.length > 0;
  run.allReconnectedMs = all ? round1(p.reopenTimes.at(-1)!) : null;
}

const CASES = [
  ['roll', 'rolling restart (SIGHUP)'],
  ['failover', 'failover to a second server (SIGTERM)'],
] as const;

export function stormSection(s: StormResult): string[] {
  const o = s.options;
  const n = (v: number | null | undefined): string =>
    v === null || v === undefined ? '—' : `${v}`;
  const x = (v: number | null): string => (v === null ? '—' : `×${v}`);
  const lines = [
    '## Reconnect storm: pacing and hints',
    '',
    `${o.clients} clients (wsdrain's own reconnecting client), --drain-timeout ${o.drainTimeoutMs} ms. ` +
      'Without pacing: no --drain-window, --reconnect-window 0, clients with `hintJitter: false`; ' +
      `with: --drain-window ${o.drainWindowMs} ms, --reconnect-window ${o.reconnectWindowMs} ms, ` +
      `default hint handling. Rolling restart: one server with ${o.rollWorkers} workers; ` +
      'failover: two servers behind a readiness-polling balancer, the first one stopped. *Peak*: ' +
      'accepts per second on the servers that stay up (largest 100 ms bucket × 10; busiest ' +
      'second in brackets). Handshake latency: socket creation to open, ms. *Peak cut*: the peak ' +
      'without pacing / with (busiest second in brackets).',
    '',
    '| case | pacing + hints | peak accepts/s | handshake p50 | p99 | refusals | codes | all reconnected | drains within budget | peak cut |',
    '|---|---|--:|--:|--:|--:|---|--:|---|--:|',
  ];
  const row = (label: string, paced: boolean, run: StormRun | null, cut: string): string =>
    run === null
      ? `| ${label} | ${paced ? 'yes' : 'no'} | not run | | | | | | | ${cut} |`
      : `| ${label} | ${paced ? 'yes' : 'no'} | ${n(run.peakPerSec)} (${n(run.peak1sPerSec)}) | ` +
        `${ms(run.latencyP50Ms)} | ${ms(run.latencyP99Ms)} | ${run.refusals} | ` +
        `${codesText(run.codes)} | ${ms(run.allReconnectedMs)} | ${run.withinBudget ? 'yes' : 'no'} | ${cut} |`;
  const ran = CASES.filter(([key]) => s[key].baseline || s[key].paced);
  for (const [key, label] of ran) {
    const cut = `${x(s.peakRatio[key])} (${x(s.peakRatio1s[key])})`;
    lines.push(row(label, false, s[key].baseline, ''), row(label, true, s[key].paced, cut));
  }
  lines.push(
    '',
    `Targets: peak cut ≥ ×${TARGETS.stormPeakCut}, no more refusals with pacing than without, ` +
      `every drain within its budget — ${verdict(
        s.misses ??
          stormMisses(
            s,
            ran.map(([k]) => k),
          ),
      )}.`,
    '',
    `Load average ${s.host.loadBefore} before, ${s.host.loadAfter} after (${s.host.cpus} CPUs); ` +
      `${Math.round(s.durationMs / 1000)} s in all.`,
  );
  if (s.accept) lines.push('', ...acceptSection(s.accept));
  return lines;
}
