/**
 * The two storm scenarios, each run in one of two modes:
 *
 * - `roll`: one wsdrain with `rollWorkers` workers, N clients, SIGHUP; done when the primary
 *   logs "rolling restart done" and every client is connected again. Survivor accepts are the
 *   clients' reconnect 'open's.
 * - `failover`: wsdrain A and B (1 worker each) behind the balancer of lb.ts, N clients
 *   through it (half land on A), SIGTERM A; done when A has exited and every client is
 *   connected again (to B). Survivor accepts are the balancer's counts for B.
 *
 * Modes: `baseline` is no pacing (no --drain-window, --reconnect-window 0, clients with
 * `hintJitter: false`); `paced` is --drain-window and --reconnect-window, clients with their
 * default hint handling. Both use the same --drain-timeout.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { now, sleep } from '../lib/clock.js';
import { closedBy, round1 } from '../lib/stats.js';
import { StormClients } from './clients.js';
import { BUCKET_MS } from './lb.js';
import {
  BalancerProcess,
  freePort,
  type RolledWorker,
  type StormLog,
  WsdrainProcess,
  type WsdrainSpec,
} from './processes.js';
import type { StormClientResults } from './protocol.js';

export type Scenario = 'roll' | 'failover';
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
  /** Workers of the rolled server. */
  rollWorkers: number;
  /** Quiet time between the last first connection and the signal. */
  settleMs: number;
  /** How long past the expected end to wait for the reconnects before giving up. */
  graceMs: number;
}

export interface StormRun {
  scenario: Scenario;
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
  drains: Partial<RolledWorker>[];
  /** Every drain ended within --drain-timeout, nothing terminated, nobody killed. */
  withinBudget: boolean;
  /** Survivor accepts per 100 ms bucket since the signal (from bucket 0). */
  acceptsPer100ms: number[];
  /** Closes per 100 ms bucket since the signal. */
  closesPer100ms: number[];
  /** Reconnect attempts per 100 ms bucket since the signal. */
  attemptsPer100ms: number[];
  /** Warnings the servers logged. */
  warnings: string[];
  error?: string;
}

/** Runs one scenario in one mode; never throws (a failure is in `error`). */
export async function runStormScenario(
  scenario: Scenario,
  mode: Mode,
  o: StormOptions,
): Promise<StormRun> {
  const run = emptyRun(scenario, mode, o);
  const stops: (() => Promise<void> | void)[] = [];
  try {
    if (scenario === 'roll') await roll(run, o, stops);
    else await failover(run, o, stops);
  } catch (err) {
    run.error = (err as Error).message;
  } finally {
    for (const stop of stops.reverse()) {
      try {
        await stop();
      } catch {
        // killed anyway by lib/procs.ts on exit
      }
    }
  }
  return run;
}

function pacing(
  mode: Mode,
  o: StormOptions,
): Pick<WsdrainSpec, 'drainWindowMs' | 'reconnectWindowMs'> {
  return mode === 'paced'
    ? { drainWindowMs: o.drainWindowMs, reconnectWindowMs: o.reconnectWindowMs }
    : { drainWindowMs: 0, reconnectWindowMs: 0 };
}

function clientsFor(url: string, mode: Mode, o: StormOptions): StormClients {
  return new StormClients({
    url,
    hintJitter: mode === 'baseline' ? false : undefined,
    perProcess: o.perProcess,
    concurrency: o.concurrency,
  });
}

async function roll(
  run: StormRun,
  o: StormOptions,
  stops: (() => Promise<void> | void)[],
): Promise<void> {
  const port = await freePort();
  const server = new WsdrainProcess({
    port,
    workers: o.rollWorkers,
    drainTimeoutMs: o.drainTimeoutMs,
    ...pacing(run.mode, o),
    logLevel: 'info', // "rolling restart done" is an info line
  });
  stops.push(() => server.kill());
  run.ports = { server: port };
  run.flags = server.args.slice(server.args.indexOf('--drain-timeout'));
  const clients = clientsFor(`ws://127.0.0.1:${port}`, run.mode, o);
  stops.push(() => clients.stop());
  await server.ready();
  await clients.connect(o.clients);
  await sleep(o.settleMs);

  const mark = clients.mark();
  server.signal('SIGHUP');
  // Each worker's drain takes at most the budget; a replacement starts in well under 2 s.
  const limit = o.rollWorkers * (o.drainTimeoutMs + 2000) + o.graceMs;
  const rolled = await until(() => server.rollDoneAt !== undefined, limit);
  if (rolled) {
    // Statuses come every 50 ms: make sure the ones counted were sent after the roll.
    await sleep(150);
    await clients.waitFor(
      (s) => s.open === o.clients && s.closed === o.clients,
      Math.max(1000, mark + limit - now()),
    );
  }
  const r = await clients.results();
  fillFromClients(run, r, o.clients);
  run.peakPerSec = run.peakOpensPerSec;
  run.acceptsPer100ms = series(r.opens);
  run.peak1sPerSec = busiestSecond(run.acceptsPer100ms);
  run.serverDoneMs = server.rollDoneAt === undefined ? null : round1(server.rollDoneAt - mark);
  run.drains = server.rolled;
  run.warnings = server.warnings;
  run.withinBudget = rolled && rollWithinBudget(server, o);
  if (!rolled) run.error = `no "rolling restart done" within ${limit} ms:\n${server.output}`;
  else if (run.allReconnectedMs === null) run.error = 'not every client reconnected in time';
}

async function failover(
  run: StormRun,
  o: StormOptions,
  stops: (() => Promise<void> | void)[],
): Promise<void> {
  const portA = await freePort();
  let portB = await freePort();
  while (portB === portA) portB = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'wsdrain-storm-'));
  stops.push(() => rmSync(dir, { recursive: true, force: true }));
  const reportFile = join(dir, 'a-report.json');
  const spec = { workers: 1, drainTimeoutMs: o.drainTimeoutMs, ...pacing(run.mode, o) };
  const a = new WsdrainProcess({ ...spec, port: portA, report: reportFile });
  stops.push(() => a.kill());
  const b = new WsdrainProcess({ ...spec, port: portB });
  stops.push(() => b.kill());
  run.flags = b.args.slice(b.args.indexOf('--drain-timeout'));
  await Promise.all([a.ready(), b.ready()]);
  const lb = new BalancerProcess([portA, portB]);
  stops.push(() => lb.stop());
  await lb.ready();
  run.ports = { a: portA, b: portB, balancer: lb.port };
  const clients = clientsFor(`ws://127.0.0.1:${lb.port}`, run.mode, o);
  stops.push(() => clients.stop());
  await clients.connect(o.clients);
  await sleep(o.settleMs);
  const before = await lb.results();
  const onA = before.backends[0]!.beforeMark;
  run.split = [onA, before.backends[1]!.beforeMark];

  const mark = clients.mark();
  lb.mark(mark);
  a.signal('SIGTERM');
  const limit = o.drainTimeoutMs + 2000 + o.graceMs;
  const exited = await a.waitExit(o.drainTimeoutMs + 2000);
  if (exited) {
    await sleep(150);
    await clients.waitFor(
      (s) => s.open === o.clients && s.closed >= onA,
      Math.max(1000, mark + limit - now()),
    );
  }
  const r = await clients.results();
  const after = await lb.results();
  fillFromClients(run, r, o.clients);
  const survivor = after.backends[1]!;
  const counts = new Map(survivor.buckets);
  run.acceptsPer100ms = denseSeries(counts);
  run.peak1sPerSec = busiestSecond(run.acceptsPer100ms);
  run.peakPerSec = counts.size > 0 ? Math.max(...counts.values()) * (1000 / BUCKET_MS) : null;
  run.lbRefused = after.refused;
  run.lbRedispatched = after.redispatched;
  run.lbPollTimeouts = survivor.pollTimeouts;
  run.serverDoneMs = a.exitAt === undefined ? null : round1(a.exitAt - mark);
  run.warnings = [...a.warnings, ...b.warnings];
  let report: Partial<RolledWorker> & { workersKilled?: number } = {};
  try {
    report = JSON.parse(readFileSync(reportFile, 'utf8')) as typeof report;
  } catch {
    // no report: A did not finish its drain
  }
  run.drains = [
    {
      pid: a.child.pid ?? 0,
      sockets: report.sockets,
      clean: report.clean,
      terminated: report.terminated,
      dropped: report.dropped,
      lateUpgrades: report.lateUpgrades,
      durationMs: report.durationMs,
      windowMs: report.windowMs,
    },
  ];
  run.withinBudget =
    exited &&
    a.exitCode === 0 &&
    a.exitAt! - mark <= o.drainTimeoutMs &&
    report.terminated === 0 &&
    (report.workersKilled ?? 0) === 0;
  if (!exited) run.error = `A did not exit within ${o.drainTimeoutMs + 2000} ms:\n${a.output}`;
  else if (run.allReconnectedMs === null) run.error = 'not every client reconnected in time';
}

/**
 * A roll's drains kept their budget: every worker reported, none terminated a socket or took
 * longer than --drain-timeout, and the primary killed none ("missed its deadline").
 */
export function rollWithinBudget(
  log: StormLog,
  o: Pick<StormOptions, 'rollWorkers' | 'drainTimeoutMs'>,
): boolean {
  return (
    log.rolled.length === o.rollWorkers &&
    log.rolled.every((w) => w.terminated === 0 && w.durationMs <= o.drainTimeoutMs) &&
    !log.warnings.some((w) => w.includes('missed its deadline'))
  );
}

function emptyRun(scenario: Scenario, mode: Mode, o: StormOptions): StormRun {
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

function fillFromClients(run: StormRun, r: StormClientResults, total: number): void {
  const lat = r.latencies;
  run.reconnects = r.opens.length;
  run.latencyP50Ms = pct(lat, 0.5);
  run.latencyP99Ms = pct(lat, 0.99);
  run.latencyMaxMs = lat.length > 0 ? round1(lat[lat.length - 1]!) : null;
  run.refusals = r.refusals;
  run.refusalCodes = r.refusalCodes;
  run.connectErrors = r.connectErrors;
  run.codes = r.codes;
  run.clientsClosed = r.closed;
  run.gaveUp = r.gaveUp;
  run.delays = r.delays;
  run.peakOpensPerSec = peak(r.opens);
  run.peakClosesPerSec = peak(r.closes);
  run.closesPer100ms = series(r.closes);
  run.peakAttemptsPerSec = peak(r.starts);
  run.attemptsPer100ms = series(r.starts);
  const all = r.open === total && r.gaveUp === 0 && r.opens.length > 0;
  run.allReconnectedMs = all ? round1(r.opens[r.opens.length - 1]!) : null;
}

function pct(sorted: readonly number[], q: number): number | null {
  const v = closedBy(sorted, sorted.length, q);
  return v === null || sorted.length === 0 ? null : round1(v);
}

/** Counts per 100 ms bucket of times in ms since the mark. */
function buckets(times: readonly number[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const t of times) {
    const b = Math.floor(t / BUCKET_MS);
    m.set(b, (m.get(b) ?? 0) + 1);
  }
  return m;
}

/** Largest 100 ms bucket, per second. */
function peak(times: readonly number[]): number | null {
  const m = buckets(times);
  return m.size > 0 ? Math.max(...m.values()) * (1000 / BUCKET_MS) : null;
}

/** Largest sum of 10 consecutive 100 ms buckets: accepts in the busiest second. */
function busiestSecond(perBucket: readonly number[]): number | null {
  if (perBucket.length === 0) return null;
  const n = 1000 / BUCKET_MS;
  let sum = 0;
  let best = 0;
  for (let i = 0; i < perBucket.length; i++) {
    sum += perBucket[i]! - (i >= n ? perBucket[i - n]! : 0);
    best = Math.max(best, sum);
  }
  return best;
}

function series(times: readonly number[]): number[] {
  return denseSeries(buckets(times));
}

/** Buckets 0..last as an array (negative buckets, before the mark, left out). */
function denseSeries(m: ReadonlyMap<number, number>): number[] {
  const last = Math.max(-1, ...m.keys());
  return Array.from({ length: last + 1 }, (_, i) => m.get(i) ?? 0);
}

async function until(done: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = now() + timeoutMs;
  while (!done()) {
    if (now() >= deadline) return false;
    await sleep(10);
  }
  return true;
}
