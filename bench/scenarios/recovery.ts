/**
 * Recovery during a roll: what it costs to resume every subscription where it was when every
 * client is moved at once. `clients` clients of wsdrain/client (the built package, in the
 * crowd's processes) on `workers` workers with the bench's app (baselines/fanout-app.mjs),
 * a publisher sending `perSecond` publications a second to one topic, then SIGHUP. Runs, one
 * after the other, each on a fresh server:
 *
 * - `plain`: the clients connect without wsdrain.v1 and subscribe to nothing (the storm's
 *   clients); the publisher publishes all the same: the roll's reconnect storm without
 *   recovery.
 * - `embedded`: every client subscribes to the topic (`client.subscribe`), and after its
 *   close resubscribes `since` the last publication it handled; the server replays what it
 *   missed from the primary's history, then live ones follow.
 * - `redis`: the same with `--broker redis://...`, a redis-server the bench starts on a free
 *   port (lib/redis.ts); skipped, with a note, when `redis-server` is not installed.
 *
 * The publisher is a wsdrain.v1 client too (raw ws in a crowd process of its own, reconnecting
 * at once when the roll closes it; publications due while it has no socket are skipped):
 * offsets are the server's, so what the publisher did not get to send does not matter.
 *
 * Figures per run: the storm (peak accepts per second on the new workers, largest 100 ms
 * bucket x 10, and the busiest second; handshake p50 / p99; refusals; close codes; SIGHUP to
 * "rolling restart done" and to every client back and caught up), server CPU (user + sys of
 * the primary and every worker, those that exited included) over the roll and its mean use
 * before it, redis-server's CPU apart; and for the recovering runs, per reconnect: the
 * publications replayed (published before the new connection opened, handled after it), the
 * time from the open to the last of them handled (the replay; clients that missed none are
 * not in it) and from the close to caught up.
 *
 * Verdict (hard checks, no target): every client back, the roll done; with recovery, every
 * subscriber handled every offset from where it started to the topic's last exactly once, in
 * order (the handlers' count), the server sent none twice and skipped none (the wire), and
 * every resubscription was `recovered: true`.
 */
import { rmSync } from 'node:fs';
import { Crowd, type CrowdResults, mergeTopics, type TopicCounts } from '../crowd/index.js';
import { guarded, log, now, sleep, track, within } from '../lib/proc.js';
import { childPids, cpuMs, treeCpuMs, treeCpuWithExitedMs } from '../lib/procfs.js';
import { type RedisServer, redisServerPath, startRedis } from '../lib/redis.js';
import { cell, codesText, ms, verdict } from '../lib/report.js';
import { FANOUT_APP, Server } from '../lib/server.js';
import {
  busiest,
  maxOrNull,
  perBucket,
  percentile,
  round1,
  round2,
  tallyQuantile,
} from '../lib/stats.js';
import { NO_REDIS } from './fanout.js';

export const RECOVERY_RUNS = ['plain', 'embedded', 'redis'] as const;
export type RecoveryRunKind = (typeof RECOVERY_RUNS)[number];

export interface RecoveryOptions {
  runs: RecoveryRunKind[];
  clients: number;
  workers: number;
  /** Clients per client process. */
  perProcess: number;
  /** First connections opened at a time per client process. */
  concurrency: number;
  /** Publications a second, and bytes of data in each. */
  perSecond: number;
  size: number;
  /** --history-size: enough for the longest gap at this rate, with a margin. */
  historySize: number;
  drainTimeoutMs: number;
  /**
   * --reconnect-window (0: hints carry no delay and clients come back at once, without
   * jitter: the storm's unpaced roll) and --drain-window.
   */
  reconnectWindowMs: number;
  drainWindowMs: number;
  /** Quiet time after connecting; publishing before the signal (steady CPU); after the roll. */
  settleMs: number;
  steadyMs: number;
  tailMs: number;
  /** How long past the expected end of the roll to wait for every client. */
  graceMs: number;
}

const QUICK: RecoveryOptions = {
  runs: [...RECOVERY_RUNS],
  clients: 2000,
  workers: 2,
  perProcess: 1000,
  concurrency: 100,
  perSecond: 20,
  size: 64,
  historySize: 1000,
  drainTimeoutMs: 5000,
  reconnectWindowMs: 0,
  drainWindowMs: 0,
  settleMs: 500,
  steadyMs: 1000,
  tailMs: 1000,
  graceMs: 10_000,
};

export const RECOVERY_PRESETS: Record<'quick' | 'full', RecoveryOptions> = {
  quick: QUICK,
  full: {
    ...QUICK,
    clients: 10_000,
    perProcess: 2500,
    perSecond: 5,
    // 10,000 clients back at once, each with its replay, overran the 5 s drain budget and the
    // clients' 10 s open timeout on the shared 2-core machine: the full run is paced as the
    // storm's paced mode is.
    reconnectWindowMs: 2000,
    drainWindowMs: 2000,
    settleMs: 1000,
    steadyMs: 2000,
    tailMs: 2000,
  },
};

export interface RecoveryRun {
  run: RecoveryRunKind;
  broker: 'embedded' | 'redis';
  recovery: boolean;
  clients: number;
  connected: number;
  /** Handshakes per second while the clients first connected (for scale). */
  connectRatePerS: number | null;
  // The storm.
  /** SIGHUP -> "rolling restart done", and -> every client back (and caught up), ms. */
  rollDoneMs: number | null;
  allBackMs: number | null;
  /** Accepts per second on the new workers: largest 100 ms bucket x 10, busiest second. */
  peakPerSec: number | null;
  peak1sPerSec: number | null;
  /** Reconnects / (first reopen -> last reopen): the mean handshake rate of the storm. */
  meanPerSec: number | null;
  reconnects: number;
  handshakeP50Ms: number | null;
  handshakeP99Ms: number | null;
  refusals: number;
  refusalCauses: Record<string, number>;
  codes: Record<string, number>;
  closesPerSocket: Record<string, number>;
  gaveUp: number;
  workersReplaced: boolean;
  // CPU.
  /** Server CPU (primary + workers, exited ones included) from SIGHUP to all back, ms. */
  serverCpuMs: number | null;
  /** The same as a mean, % of one core; and before the signal, publishing steadily. */
  serverCpuPct: number | null;
  steadyCpuPct: number | null;
  /** redis-server over the roll, ms, and before it, % of one core. */
  brokerCpuMs?: number | null;
  brokerSteadyCpuPct?: number | null;
  /** The client processes over the roll, % of one core. */
  clientCpuPct: number | null;
  // Publications.
  /** Sent by the publisher, skipped while it had no socket, acked; its highest offset acked. */
  sent: number;
  skipped: number;
  acked: number;
  lastAcked: number | null;
  // Recovery (recovering runs).
  topics?: TopicCounts;
  /** Reconnects timed (each client's after its close), and those that missed something. */
  replays?: number;
  replaysWithMissed?: number;
  /** Publications replayed: in all, per reconnect p50 and max. */
  replayed?: number;
  replayedP50?: number | null;
  replayedMax?: number | null;
  /** Open -> the last missed publication handled, ms (reconnects that missed any). */
  replayP50Ms?: number | null;
  replayP99Ms?: number | null;
  replayMaxMs?: number | null;
  /** Close -> caught up, ms (every reconnect). */
  catchUpP50Ms?: number | null;
  catchUpP99Ms?: number | null;
  /** Publish-to-receive latency over the roll (live and replayed alike), ms. */
  latencyP99Ms?: number | null;
  /** Hard checks that failed. */
  problems: string[];
  error?: string;
}

export interface RecoveryComparison {
  /** Recovering clients (embedded) / plain ones: storm figures. */
  peakVsPlain: number | null;
  handshakeP99VsPlain: number | null;
  serverCpuVsPlain: number | null;
  allBackVsPlain: number | null;
  /** Redis / embedded: replay p50 and p99, catch-up p99, server CPU (and with redis-server's). */
  redisReplayP50: number | null;
  redisReplayP99: number | null;
  redisCatchUpP99: number | null;
  redisServerCpu: number | null;
  redisCpuWithBroker: number | null;
}

export interface RecoveryResult {
  options: RecoveryOptions;
  runs: RecoveryRun[];
  comparison: RecoveryComparison;
  notes: string[];
  misses: string[];
}

const ratio = (a: number | null | undefined, b: number | null | undefined): number | null =>
  a == null || b == null || b <= 0 ? null : round2(a / b);

export async function runRecovery(o: RecoveryOptions): Promise<RecoveryResult> {
  const runs: RecoveryRun[] = [];
  const notes: string[] = [];
  for (const kind of o.runs) {
    if (kind === 'redis' && redisServerPath() === undefined) {
      notes.push(`redis: ${NO_REDIS}`);
      log(`recovery ${notes.at(-1)}`);
      continue;
    }
    log(`recovery ${kind}: ${o.clients} clients`);
    const run = await runOne(kind, o);
    runs.push(run);
    log(`recovery ${kind}: ${describe(run)}`);
  }
  const of = (k: RecoveryRunKind): RecoveryRun | undefined => runs.find((r) => r.run === k);
  const [plain, embedded, redis] = [of('plain'), of('embedded'), of('redis')];
  const withBroker = (r: RecoveryRun | undefined): number | null =>
    r?.serverCpuMs == null ? null : r.serverCpuMs + (r.brokerCpuMs ?? 0);
  const comparison: RecoveryComparison = {
    peakVsPlain: ratio(embedded?.peakPerSec, plain?.peakPerSec),
    handshakeP99VsPlain: ratio(embedded?.handshakeP99Ms, plain?.handshakeP99Ms),
    serverCpuVsPlain: ratio(embedded?.serverCpuMs, plain?.serverCpuMs),
    allBackVsPlain: ratio(embedded?.allBackMs, plain?.allBackMs),
    redisReplayP50: ratio(redis?.replayP50Ms, embedded?.replayP50Ms),
    redisReplayP99: ratio(redis?.replayP99Ms, embedded?.replayP99Ms),
    redisCatchUpP99: ratio(redis?.catchUpP99Ms, embedded?.catchUpP99Ms),
    redisServerCpu: ratio(redis?.serverCpuMs, embedded?.serverCpuMs),
    redisCpuWithBroker: ratio(withBroker(redis), embedded?.serverCpuMs),
  };
  const result: RecoveryResult = { options: o, runs, comparison, notes, misses: [] };
  result.misses = recoveryMisses(result);
  const c = comparison;
  log(
    `recovery: with recovery / plain: peak accepts ×${c.peakVsPlain ?? '—'}, handshake p99 ` +
      `×${c.handshakeP99VsPlain ?? '—'}, server CPU ×${c.serverCpuVsPlain ?? '—'}, all back ` +
      `×${c.allBackVsPlain ?? '—'}; redis / embedded: replay p50 ×${c.redisReplayP50 ?? '—'} ` +
      `p99 ×${c.redisReplayP99 ?? '—'}, catch-up p99 ×${c.redisCatchUpP99 ?? '—'}, server CPU ` +
      `×${c.redisServerCpu ?? '—'} (×${c.redisCpuWithBroker ?? '—'} with redis-server's)`,
  );
  return result;
}

/** Every run's problems, named by run. */
export function recoveryMisses(r: RecoveryResult): string[] {
  return r.runs.flatMap((x) => x.problems.map((p) => `${x.run}: ${p}`));
}

/**
 * The hard checks of one run: every client back once, the roll done; with recovery, every
 * offset handled once, in order, by every subscriber, nothing sent twice or skipped on the
 * wire, every resubscription recovered.
 */
export function recoveryProblems(r: RecoveryRun): string[] {
  const p: string[] = [];
  if (r.error) p.push(`failed: ${r.error.split('\n')[0]}`);
  if (r.connected < r.clients) p.push(`only ${r.connected} of ${r.clients} clients connected`);
  if (r.rollDoneMs === null) p.push('no "rolling restart done"');
  if (r.allBackMs === null || r.gaveUp > 0) {
    p.push(`not every client came back${r.recovery ? ' and caught up' : ''} (${r.gaveUp} gave up)`);
  }
  if (!r.workersReplaced) p.push('not every worker was replaced');
  if (r.recovery && r.topics) p.push(...topicProblems(r.topics, r.connected));
  return p;
}

/**
 * The exactly-once checks of recovering subscribers (here and in the soak), on the counts of
 * the subscribers and their publisher merged (crowd/index.ts mergeTopics): all `subscribers`
 * subscribed; on each topic, every subscriber started at one offset and handled every offset
 * after it up to the topic's last acked once, in order (the handlers' count); the server sent
 * a connection none twice and skipped none (the wire); every resubscription was recovered.
 */
export function topicProblems(t: TopicCounts, subscribers: number): string[] {
  const p: string[] = [];
  if (t.subscribers !== subscribers) {
    p.push(`${t.subscribers} of ${subscribers} clients subscribed`);
  }
  if (t.missing > 0 || t.duplicates > 0) {
    p.push(
      `the handlers missed ${t.missing} publications and got ${t.duplicates} twice or out of ` +
        'order: every subscriber must handle every publication once, in order',
    );
  }
  if (t.wireDuplicates > 0 || t.wireHoles > 0) {
    p.push(
      `the server sent ${t.wireDuplicates} publications a connection had already had and ` +
        `skipped offsets ${t.wireHoles} times`,
    );
  }
  if (t.unrecovered > 0) p.push(`${t.unrecovered} resubscriptions answered recovered: false`);
  const topics = Object.entries(t.byTopic).sort(([a], [b]) => a.localeCompare(b));
  if (topics.length === 0) p.push('no topic subscribed to');
  for (const [topic, r] of topics) {
    const of = topics.length > 1 ? ` of ${topic}` : '';
    if (r.subscribers === 0) {
      p.push(`no subscriber of ${topic}, published up to offset ${r.lastAcked}`);
      continue;
    }
    if (r.startMin !== r.startMax) {
      p.push(`subscribers${of} started at offsets ${r.startMin} to ${r.startMax}, not all at one`);
    }
    if (r.endMin !== r.endMax || r.endMax === null || r.endMax < (r.lastAcked ?? 0)) {
      p.push(
        `subscribers${of} ended at offsets ${r.endMin} to ${r.endMax}; the last acked was ` +
          `${r.lastAcked}: every one must reach the topic's last`,
      );
    }
    if ((r.endMax ?? 0) <= (r.startMax ?? 0)) p.push(`no publication${of} was handled`);
  }
  return p;
}

function emptyRun(kind: RecoveryRunKind, o: RecoveryOptions): RecoveryRun {
  return {
    run: kind,
    broker: kind === 'redis' ? 'redis' : 'embedded',
    recovery: kind !== 'plain',
    clients: o.clients,
    connected: 0,
    connectRatePerS: null,
    rollDoneMs: null,
    allBackMs: null,
    peakPerSec: null,
    peak1sPerSec: null,
    meanPerSec: null,
    reconnects: 0,
    handshakeP50Ms: null,
    handshakeP99Ms: null,
    refusals: 0,
    refusalCauses: {},
    codes: {},
    closesPerSocket: {},
    gaveUp: 0,
    workersReplaced: false,
    serverCpuMs: null,
    serverCpuPct: null,
    steadyCpuPct: null,
    clientCpuPct: null,
    sent: 0,
    skipped: 0,
    acked: 0,
    lastAcked: null,
    problems: [],
  };
}

/** One run on a fresh server (and redis-server); never throws (a failure is in `error`). */
async function runOne(kind: RecoveryRunKind, o: RecoveryOptions): Promise<RecoveryRun> {
  const run = emptyRun(kind, o);
  await guarded(run, (stops) => roll(run, o, stops));
  run.problems = recoveryProblems(run);
  return run;
}

async function roll(run: RecoveryRun, o: RecoveryOptions, stops: (() => unknown)[]): Promise<void> {
  let redis: RedisServer | undefined;
  if (run.broker === 'redis') {
    const r = await startRedis({ detached: true, spawned: track });
    redis = r;
    stops.push(async () => {
      await r.kill();
      rmSync(r.dir, { recursive: true, force: true });
    });
  }
  const server = await Server.wsdrain({
    workers: o.workers,
    drainTimeoutMs: o.drainTimeoutMs,
    logLevel: 'info', // "rolling restart done"
    flags: [
      ...['--app', FANOUT_APP, '--history-size', o.historySize],
      ...['--reconnect-window', o.reconnectWindowMs],
      ...(o.drainWindowMs > 0 ? ['--drain-window', o.drainWindowMs] : []),
      ...(redis ? ['--broker', redis.url] : []),
    ],
  });
  stops.push(() => server.stop()); // SIGTERM first under BENCH_SERVER_NODE_ARGS (profiles)
  await server.ready();
  const url = `ws://127.0.0.1:${server.port}`;
  const topic = 'recovery';
  const subs = new Crowd({
    url,
    client: 'wsdrain',
    // Unpaced: the clients come back at once (the storm's baseline).
    ...(o.reconnectWindowMs === 0 ? { hintJitter: false } : {}),
    perProcess: Math.min(o.perProcess, o.clients),
    concurrency: o.concurrency,
    statusEveryMs: 50,
    connectTimeoutMs: 120_000,
    ...(run.recovery
      ? { fanout: { role: 'subscribe', dialect: 'wsdrain.v1', topic, maxPublications: 0 } }
      : {}),
  });
  stops.push(() => subs.stop());
  const pub = new Crowd({
    url,
    path: '/?role=publisher',
    perProcess: 1,
    reconnect: 'now',
    statusEveryMs: 100,
    fanout: { role: 'publish', dialect: 'wsdrain.v1', topic, maxPublications: 0 },
  });
  stops.push(() => pub.stop());

  run.connected = await subs.connect(o.clients);
  run.connectRatePerS = Math.round((run.connected * 1000) / subs.connectMs);
  if (run.connected < o.clients) throw new Error(`${o.clients - run.connected} clients failed`);
  if ((await pub.connect(1)) < 1) throw new Error('the publisher could not connect');
  await sleep(o.settleMs);
  server.assertUp();
  const workersBefore = childPids(server.pid);
  const brokerCpu = (): number => (redis?.pid === undefined ? 0 : (cpuMs(redis.pid) ?? 0));
  const serverCpu = (): number => treeCpuWithExitedMs(server.pid);
  const clientCpu = (): number => subs.pids.reduce((sum, p) => sum + treeCpuMs(p), 0);

  subs.phase('steady');
  pub.phase('steady');
  const publishing = pub.publish(0, 1e9, o.perSecond, o.size);
  await sleep(200); // under way
  const steady0 = { at: now(), server: serverCpu(), broker: brokerCpu() };
  await sleep(o.steadyMs);
  const steadyMs = now() - steady0.at;
  run.steadyCpuPct = Math.round((100 * (serverCpu() - steady0.server)) / steadyMs);
  if (redis) run.brokerSteadyCpuPct = Math.round((100 * (brokerCpu() - steady0.broker)) / steadyMs);

  const cpu0 = { server: serverCpu(), broker: brokerCpu(), clients: clientCpu() };
  const mark = subs.phase('roll');
  pub.phase('roll');
  server.signal('SIGHUP');
  const limit = o.workers * (o.drainTimeoutMs + o.reconnectWindowMs + 2000) + o.graceMs + o.clients;
  const done = (): { at: number } | undefined => server.log.rollsDone.find((d) => d.at >= mark);
  const rolled = await within(() => done(), limit, 'roll');
  let backAt: number | undefined;
  if (rolled) {
    const back = await subs.waitFor(
      (s) =>
        s.at > done()!.at &&
        s.open === run.connected &&
        s.closedOnce >= run.connected &&
        s.reconnecting === 0 &&
        s.replaying === 0 &&
        (!run.recovery || s.subscribed === run.connected),
      Math.max(1000, mark + limit - now()),
    );
    if (back) backAt = now();
  }
  const cpuEnd = now();
  const serverCpuMs = serverCpu() - cpu0.server;
  const brokerCpuMs = brokerCpu() - cpu0.broker;
  const clientCpuMs = clientCpu() - cpu0.clients;
  await sleep(o.tailMs);
  pub.stopPublishing();
  const published = await publishing;
  await quiet(subs);
  const r = await subs.results();
  const pr = await pub.results();
  const workersAfter = childPids(server.pid);

  fill(run, r);
  if (run.topics) mergeTopics(run.topics, pr.topics); // the publisher's acks, per topic
  const d = done();
  run.rollDoneMs = d === undefined ? null : round1(d.at - mark);
  const p = r.phases.roll;
  // Back (the last reopen) and, recovering, caught up (the last replay's end).
  const last = maxOrNull([p?.reopenTimes.at(-1), p?.caughtUpTimes.at(-1)]);
  run.allBackMs = backAt === undefined || last === null ? null : round1(last);
  run.workersReplaced =
    workersAfter.length === o.workers && workersAfter.every((x) => !workersBefore.includes(x));
  const elapsed = cpuEnd - mark;
  run.serverCpuMs = Math.round(serverCpuMs);
  run.serverCpuPct = Math.round((100 * serverCpuMs) / elapsed);
  run.clientCpuPct = Math.round((100 * clientCpuMs) / elapsed);
  if (redis) run.brokerCpuMs = Math.round(brokerCpuMs);
  run.sent = published.sent;
  run.skipped = published.skipped;
  run.acked = pr.topics.acked;
  run.lastAcked = pr.topics.lastAcked;
  if (pr.topics.publishErrors > 0) {
    log(`recovery ${run.run}: the publisher got ${pr.topics.publishErrors} errors`);
  }
  if (!rolled) run.error = `no "rolling restart done" within ${limit} ms:\n${server.output}`;
  else if (backAt === undefined) run.error = 'not every client came back (and caught up) in time';
}

/** Waits until the subscribers' deliveries stop moving (the last publications arrived). */
export async function quiet(subs: Pick<Crowd, 'status'>): Promise<void> {
  let last = -1;
  let same = 0;
  const deadline = now() + 15_000;
  while (same < 3 && now() < deadline) {
    await sleep(100);
    const d = subs.status()?.delivered ?? 0;
    same = d === last ? same + 1 : 0;
    last = d;
  }
}

/** The storm and recovery figures of the roll phase. */
function fill(run: RecoveryRun, r: CrowdResults): void {
  const p = r.phases.roll;
  if (!p) return;
  const q = (v: number | null): number | null => (v === null ? null : round1(v));
  const accepts = perBucket(p.reopenTimes, 100);
  run.peakPerSec = accepts.length > 0 ? Math.max(...accepts) * 10 : null;
  run.peak1sPerSec = busiest(accepts, 10);
  run.reconnects = p.reopenTimes.length;
  const span = (p.reopenTimes.at(-1) ?? 0) - (p.reopenTimes[0] ?? 0);
  run.meanPerSec = span > 0 ? Math.round((run.reconnects * 1000) / span) : null;
  run.handshakeP50Ms = q(percentile(p.handshakeMs, 0.5));
  run.handshakeP99Ms = q(percentile(p.handshakeMs, 0.99));
  run.refusalCauses = p.refusals;
  run.refusals = Object.values(p.refusals).reduce((a, b) => a + b, 0);
  run.codes = p.codes;
  run.closesPerSocket = r.closesPerSocket;
  run.gaveUp = r.gaveUp;
  if (!run.recovery) return;
  run.topics = r.topics;
  run.replays = p.replayed.length;
  run.replaysWithMissed = p.replayMs.length;
  run.replayed = p.replayed.reduce((a, b) => a + b, 0);
  run.replayedP50 = percentile(p.replayed, 0.5);
  run.replayedMax = percentile(p.replayed, 1);
  run.replayP50Ms = q(percentile(p.replayMs, 0.5));
  run.replayP99Ms = q(percentile(p.replayMs, 0.99));
  run.replayMaxMs = q(percentile(p.replayMs, 1));
  run.catchUpP50Ms = q(percentile(p.catchUpMs, 0.5));
  run.catchUpP99Ms = q(percentile(p.catchUpMs, 0.99));
  run.latencyP99Ms = tallyQuantile(p.latency, 0.99);
}

function describe(r: RecoveryRun): string {
  const t = (v: number | null | undefined): string => (v == null ? '—' : `${v} ms`);
  const storm =
    `${r.connected} clients: roll done ${t(r.rollDoneMs)}, all back${r.recovery ? ' and caught up' : ''} ` +
    `${t(r.allBackMs)}, peak ${r.peakPerSec ?? '—'}/s (busiest second ${r.peak1sPerSec ?? '—'}, ` +
    `mean ${r.meanPerSec ?? '—'}/s), ` +
    `handshake p50 ${t(r.handshakeP50Ms)} p99 ${t(r.handshakeP99Ms)}, ${r.refusals} refusals, ` +
    `codes ${JSON.stringify(r.codes)}, server CPU ${r.serverCpuMs ?? '—'} ms ` +
    `(${r.serverCpuPct ?? '—'}% of a core; ${r.steadyCpuPct ?? '—'}% before)` +
    (r.brokerCpuMs == null ? '' : `, redis-server ${r.brokerCpuMs} ms`) +
    `, clients ${r.clientCpuPct ?? '—'}%; publisher sent ${r.sent} (skipped ${r.skipped}), ` +
    `last acked offset ${r.lastAcked ?? '—'}`;
  const tp = r.topics;
  const rec = !tp
    ? ''
    : `; ${r.replays} reconnects timed, ${r.replaysWithMissed} missed some: ${r.replayed} ` +
      `replayed (p50 ${r.replayedP50 ?? '—'}, max ${r.replayedMax ?? '—'} a client), replay ` +
      `p50 ${t(r.replayP50Ms)} p99 ${t(r.replayP99Ms)} max ${t(r.replayMaxMs)}, close to ` +
      `caught up p50 ${t(r.catchUpP50Ms)} p99 ${t(r.catchUpP99Ms)}; ${tp.recovered} recovered, ` +
      `${tp.unrecovered} not, ${tp.resubscribes} resubscriptions; handled ${tp.handled}, ` +
      `${tp.missing} missing, ${tp.duplicates} duplicated, wire ${tp.wireDuplicates} dup. ` +
      `${tp.wireHoles} holes; offsets ${tp.startMin}..${tp.endMin}-${tp.endMax}`;
  const end = r.problems.length ? `; PROBLEMS: ${r.problems.join('; ')}` : '; checks passed';
  return storm + rec + end;
}

export function recoverySection(f: RecoveryResult): string[] {
  const o = f.options;
  const x = (v: number | null | undefined): string => (v == null ? '—' : `×${v}`);
  const pacing =
    o.reconnectWindowMs === 0
      ? '--reconnect-window 0 (no hint delay; clients with `hintJitter: false`: everyone comes back at once)'
      : `--reconnect-window ${o.reconnectWindowMs} ms`;
  const lines = [
    '## Recovery during a roll',
    '',
    `${o.clients} clients of wsdrain/client on ${o.workers} workers, SIGHUP; ${pacing}` +
      (o.drainWindowMs ? `, --drain-window ${o.drainWindowMs} ms` : '') +
      `, --drain-timeout ${o.drainTimeoutMs} ms. A publisher (a wsdrain.v1 client, itself ` +
      `moved by the roll) sends ${o.perSecond} publications a second of ${o.size} bytes to one ` +
      `topic throughout; --history-size ${o.historySize}. *plain*: the clients subscribe to ` +
      'nothing (the storm without recovery); *embedded* and *redis*: every client subscribes ' +
      'to the topic and, after its close, resubscribes `since` the last publication it handled ' +
      '(`--broker redis://...` on a redis-server of its own for *redis*). Times in ms from ' +
      'SIGHUP; *all back*: every client open again (and, recovering, caught up). *Peak*: ' +
      'accepts per second on the new workers (largest 100 ms bucket × 10; busiest second in ' +
      'brackets); *mean*: reconnects / first to last reopen. *Server CPU*: user + sys of the primary and every worker (those that exited ' +
      'included) from SIGHUP to all back, and its mean in % of one core; *before*: the mean ' +
      'while publishing before the signal.',
    '',
    '| run | roll done | all back | peak accepts/s | mean | handshake p50 | p99 | refusals | codes | server CPU ms (%) | before % | redis-server ms | clients % |',
    '|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|',
  ];
  for (const r of f.runs) {
    lines.push(
      `| ${r.run} | ${ms(r.rollDoneMs)} | ${ms(r.allBackMs)} | ${cell(r.peakPerSec)} (${cell(r.peak1sPerSec)}) | ` +
        `${cell(r.meanPerSec)} | ` +
        `${ms(r.handshakeP50Ms)} | ${ms(r.handshakeP99Ms)} | ${r.refusals} | ${codesText(r.codes)} | ` +
        `${cell(r.serverCpuMs)} (${cell(r.serverCpuPct)}) | ${cell(r.steadyCpuPct)} | ` +
        `${r.brokerCpuMs == null ? '—' : r.brokerCpuMs} | ${cell(r.clientCpuPct)} |`,
    );
  }
  const rec = f.runs.filter((r) => r.recovery && r.topics);
  if (rec.length) {
    lines.push(
      '',
      'Recovery, per reconnect: *replayed*: publications published before the new connection ' +
        'opened and handled after it (in all; per client p50 / max); *replay*: from the open ' +
        'to the last of them handled (clients that missed any); *caught up*: from the close. ' +
        '*Handled*: publications the subscribers’ handlers got, in all; *lost / twice*: offsets ' +
        'a handler never got / got again or out of order; *wire*: publications the server sent ' +
        'a connection twice / jumps over offsets.',
      '',
      '| run | offsets | reconnects (missed some) | replayed (p50 / max) | replay p50 | p99 | max | caught up p50 | p99 | recovered / not | handled | lost / twice | wire dup. / holes |',
      '|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|---|---|',
    );
    for (const r of rec) {
      const t = r.topics!;
      lines.push(
        `| ${r.run} | ${t.startMin}→${t.endMax} | ${r.replays} (${r.replaysWithMissed}) | ` +
          `${r.replayed} (${cell(r.replayedP50)} / ${cell(r.replayedMax)}) | ${ms(r.replayP50Ms)} | ` +
          `${ms(r.replayP99Ms)} | ${ms(r.replayMaxMs)} | ${ms(r.catchUpP50Ms)} | ${ms(r.catchUpP99Ms)} | ` +
          `${t.recovered} / ${t.unrecovered} | ${t.handled} | ${t.missing} / ${t.duplicates} | ` +
          `${t.wireDuplicates} / ${t.wireHoles} |`,
      );
    }
  }
  const c = f.comparison;
  lines.push(
    '',
    `With recovery (embedded) / plain: peak accepts ${x(c.peakVsPlain)}, handshake p99 ` +
      `${x(c.handshakeP99VsPlain)}, server CPU over the roll ${x(c.serverCpuVsPlain)}, all back ` +
      `${x(c.allBackVsPlain)}. Redis / embedded: replay p50 ${x(c.redisReplayP50)}, p99 ` +
      `${x(c.redisReplayP99)}, caught up p99 ${x(c.redisCatchUpP99)}, server CPU ` +
      `${x(c.redisServerCpu)} (${x(c.redisCpuWithBroker)} with redis-server’s).`,
  );
  if (f.notes.length) lines.push('', ...f.notes.map((s) => `- ${s}`));
  lines.push(
    '',
    'Checks: every client back and the roll done; with recovery, every subscriber handled ' +
      'every publication from where it started to the topic’s last once, in order, the server ' +
      'sent none twice and skipped none, every resubscription recovered — ' +
      `${verdict(f.misses)}.`,
  );
  return lines;
}
