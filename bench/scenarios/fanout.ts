/**
 * Fan-out: one publication to `subscribers` subscribers of one topic, spread over `workers`
 * workers, at several publish rates (a burst: every publication at once; steady: so many a
 * second), side by side in one run:
 *
 * - `wsdrain`: `wsdrain start --app baselines/fanout-app.mjs`; subscribers speak wsdrain.v1,
 *   the publisher is a wsdrain.v1 client its `canPublish` allows.
 * - `wsdrain+redis`: the same with `--broker redis://...`, a redis-server the bench starts on a
 *   free port (lib/redis.ts; skipped, with a note, when `redis-server` is missing). Its CPU is
 *   counted apart from the server's.
 * - `socket.io`: socket.io 4 + `@socket.io/cluster-adapter` on as many workers
 *   (baselines/fanout-socketio.ts), WebSocket transport only; rooms for topics.
 * - `raw-ws`: one process, ws's broadcast loop (baselines/fanout-raw.ts): the per-core
 *   reference (at most `rawMaxSubscribers` subscribers: one process's open-file limit).
 *
 * The load is the same for all three: the crowd's raw `ws` clients (crowd/client.ts, `fanout`),
 * the same code path, only the framing differs (wsdrain.v1 or engine.io/socket.io). The
 * publisher, a client process of its own, stamps each publication with its send time; the
 * subscribers, on the same machine's clock, record the latency of every delivery and count
 * every publication per socket.
 *
 * Figures per load and server: deliveries per second (deliveries / first send to last
 * delivery), latency p50 / p99 (publish to receive, every delivery), server CPU per delivery
 * (user + sys of the primary and every worker, /proc, from the first send until the last
 * delivery was seen), and the CPU the clients and other processes used meanwhile.
 *
 * Verdict: every wsdrain subscriber (either broker) receives every publication exactly once, in
 * order. Targets (wsdrain against socket.io at the same load): deliveries/s >= fanoutVsSocketio
 * (1.5) x socket.io's on a burst; p99 <= fanoutP99VsSocketio (0.5) x socket.io's at every load;
 * server CPU per delivery <= fanoutCpuUsPerDelivery (5) µs on a burst. wsdrain+redis against
 * wsdrain is reported, not judged.
 */
import { rmSync } from 'node:fs';
import { Crowd, type FanoutDialect } from '../crowd/index.js';
import { log, now, sleep, track } from '../lib/proc.js';
import { cpuMs, machineBusyMs, treeCpuMs } from '../lib/procfs.js';
import { type RedisServer, redisServerPath, startRedis } from '../lib/redis.js';
import { cell, ms, verdict } from '../lib/report.js';
import { FANOUT_APP, Server } from '../lib/server.js';
import { round1, round2, tallyQuantile } from '../lib/stats.js';
import { TARGETS, target } from '../lib/targets.js';

export const FANOUT_SERVERS = ['wsdrain', 'wsdrain+redis', 'socket.io', 'raw-ws'] as const;
export type FanoutServer = (typeof FANOUT_SERVERS)[number];

/** The wsdrain servers, whose subscribers must each get every publication once, in order. */
const WSDRAIN = new Set<FanoutServer>(['wsdrain', 'wsdrain+redis']);

/** Why a Redis row is left out: `redis-server` is not installed. */
export const NO_REDIS =
  'skipped: redis-server is not installed (scripts/ci-prereqs.sh redis installs it)';

/** One load: `count` publications, `perSecond` a second (0: a burst, all at once). */
export interface FanoutLoad {
  name: string;
  count: number;
  perSecond: number;
}

export interface FanoutOptions {
  servers: FanoutServer[];
  subscribers: number;
  workers: number;
  /** The raw ws reference is one process: at most this many subscribers. */
  rawMaxSubscribers: number;
  /** Subscribers per client process. */
  perProcess: number;
  /** Bytes of data in a publication. */
  size: number;
  loads: FanoutLoad[];
  /** Pause after connecting and between loads, ms. */
  settleMs: number;
}

const burst = (count: number): FanoutLoad => ({ name: `burst ${count}`, count, perSecond: 0 });
const steady = (perSecond: number, seconds: number): FanoutLoad => ({
  name: `${perSecond}/s`,
  count: perSecond * seconds,
  perSecond,
});

/**
 * Loads from a flag: `burst:N` (N publications at once) or `R/s:S` (R a second for S seconds),
 * comma-separated, e.g. `burst:20,5/s:4`.
 */
export function parseLoads(spec: string): FanoutLoad[] {
  const loads = spec.split(',').map((part) => {
    const b = /^burst:(\d+)$/.exec(part);
    const r = /^(\d+)\/s:(\d+)$/.exec(part);
    const [x, y] = [Number(b?.[1] ?? r?.[1]), Number(r?.[2] ?? 1)];
    if (!(b || r) || x < 1 || y < 1) {
      throw new Error(`--fanout-loads: burst:N or R/s:SECONDS, comma-separated; got ${part}`);
    }
    return b ? burst(x) : steady(x, y);
  });
  const names = loads.map((l) => l.name);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw new Error(`--fanout-loads: ${twice} given twice`);
  return loads;
}

export const FANOUT_PRESETS: Record<'quick' | 'full', FanoutOptions> = {
  quick: {
    servers: [...FANOUT_SERVERS],
    subscribers: 4000,
    workers: 2,
    rawMaxSubscribers: 15_000,
    perProcess: 2000,
    size: 64,
    loads: [burst(20), steady(5, 4), steady(20, 4)],
    settleMs: 500,
  },
  full: {
    servers: [...FANOUT_SERVERS],
    subscribers: 30_000,
    workers: 4,
    rawMaxSubscribers: 15_000,
    perProcess: 15_000,
    size: 64,
    loads: [burst(20), steady(1, 10), steady(3, 10)],
    settleMs: 1000,
  },
};

export interface FanoutRun {
  server: FanoutServer;
  load: string;
  perSecond: number;
  publications: number;
  subscribers: number;
  /** Server processes: workers (raw-ws: 1, no cluster). */
  workers: number;
  sent: number;
  /** Deliveries due (subscribers x publications sent), received, never received, extra. */
  expected: number;
  delivered: number;
  missing: number;
  duplicates: number;
  reordered: number;
  /** Every delivery seen before the time allowed ran out. */
  complete: boolean;
  /** First send to last delivery, ms. */
  spanMs: number | null;
  deliveriesPerSec: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  serverCpuMs: number;
  cpuUsPerDelivery: number | null;
  /** wsdrain+redis: redis-server's CPU over the same time, in all and per delivery. */
  brokerCpuMs?: number;
  brokerCpuUsPerDelivery?: number | null;
  /** Mean CPU use over the load, % of one core: server, clients, other processes. */
  serverCpuPct: number;
  clientCpuPct: number;
  otherCpuPct: number;
  /** wsdrain+redis: redis-server (not among the other processes). */
  brokerCpuPct?: number;
}

/** wsdrain against socket.io (and raw ws) at one load. */
export interface FanoutComparison {
  load: string;
  burst: boolean;
  /** wsdrain / socket.io deliveries per second. */
  rateVsSocketio: number | null;
  /** wsdrain / socket.io p99. */
  p99VsSocketio: number | null;
  /** wsdrain / raw ws CPU per delivery. */
  cpuVsRaw: number | null;
  cpuVsSocketio: number | null;
  /** wsdrain+redis / wsdrain: deliveries per second, p99, server CPU per delivery (wsdrain's
   * processes), and the same with redis-server's CPU added. */
  redisRate?: number | null;
  redisP99?: number | null;
  redisCpu?: number | null;
  redisCpuWithBroker?: number | null;
}

export interface FanoutResult {
  options: FanoutOptions;
  runs: FanoutRun[];
  comparisons: FanoutComparison[];
  /** Servers that failed to run, as "<server>: <message>". */
  failures: string[];
  /** What else a reader should know (a baseline measured with fewer subscribers). */
  notes?: string[];
  misses: string[];
}

export async function runFanout(opts: FanoutOptions): Promise<FanoutResult> {
  const runs: FanoutRun[] = [];
  const failures: string[] = [];
  const notes: string[] = [];
  for (const server of opts.servers) {
    if (server === 'wsdrain+redis' && redisServerPath() === undefined) {
      notes.push(`wsdrain+redis: ${NO_REDIS}`);
      log(`fanout ${notes.at(-1)}`);
      continue;
    }
    try {
      for (const run of await runServer(server, opts, notes)) {
        runs.push(run);
        log(`fanout ${server}, ${run.load}: ${describe(run)}`);
      }
    } catch (err) {
      failures.push(`${server}: ${(err as Error).message.split('\n')[0]}`);
      log(`FAILED fanout ${failures.at(-1)}`);
    }
  }
  const result: FanoutResult = {
    options: opts,
    runs,
    comparisons: fanoutComparisons(runs, opts),
    failures,
    notes,
    misses: [],
  };
  result.misses = fanoutMisses(result);
  for (const c of result.comparisons) {
    log(
      `fanout ${c.load}: wsdrain / socket.io deliveries/s ×${c.rateVsSocketio ?? '—'}, ` +
        `p99 ×${c.p99VsSocketio ?? '—'}; CPU per delivery ×${c.cpuVsSocketio ?? '—'} of ` +
        `socket.io's, ×${c.cpuVsRaw ?? '—'} of raw ws's` +
        (c.redisRate === undefined
          ? ''
          : `; wsdrain+redis / wsdrain deliveries/s ×${c.redisRate ?? '—'}, p99 ` +
            `×${c.redisP99 ?? '—'}, CPU per delivery ×${c.redisCpu ?? '—'} ` +
            `(×${c.redisCpuWithBroker ?? '—'} with redis-server's)`),
    );
  }
  return result;
}

async function runServer(
  server: FanoutServer,
  opts: FanoutOptions,
  notes: string[],
): Promise<FanoutRun[]> {
  const raw = server === 'raw-ws';
  const wanted = raw ? Math.min(opts.subscribers, opts.rawMaxSubscribers) : opts.subscribers;
  const workers = raw ? 1 : opts.workers;
  let redis: RedisServer | undefined;
  if (server === 'wsdrain+redis') redis = await startRedis({ detached: true, spawned: track });
  const started = WSDRAIN.has(server)
    ? await Server.wsdrain({
        workers,
        drainTimeoutMs: 2000,
        flags: ['--app', FANOUT_APP, ...(redis ? ['--broker', redis.url] : [])],
      })
    : await Server.baseline(raw ? 'fanout-raw' : 'fanout-socketio', raw ? 0 : workers);
  const brokerCpu = (): number => (redis?.pid === undefined ? 0 : (cpuMs(redis.pid) ?? 0));
  const dialect: FanoutDialect = server === 'socket.io' ? 'socket.io' : 'wsdrain.v1';
  const path = dialect === 'socket.io' ? '/socket.io/?EIO=4&transport=websocket' : '/';
  const url = `ws://127.0.0.1:${started.port}`;
  const maxPublications = opts.loads.reduce((n, l) => n + l.count, 0);
  const fanout = { dialect, topic: 'fanout', maxPublications };
  const subs = new Crowd({
    url,
    path,
    perProcess: Math.min(opts.perProcess, wanted),
    concurrency: 100,
    statusEveryMs: 100,
    handshakeTimeoutMs: 15_000,
    connectTimeoutMs: 300_000,
    fanout: { ...fanout, role: 'subscribe' },
  });
  const pub = new Crowd({
    url,
    path: `${path}${path.includes('?') ? '&' : '?'}role=publisher`,
    perProcess: 1,
    fanout: { ...fanout, role: 'publish' },
  });
  const runs: FanoutRun[] = [];
  try {
    await started.ready();
    const subscribers = await subs.connect(wanted);
    if (subscribers < wanted) {
      // wsdrain must take every subscriber; a baseline is measured with what it took, if
      // that is nearly all of them (said in the report).
      const short = `${wanted - subscribers} of ${wanted} subscribers never subscribed`;
      if (WSDRAIN.has(server) || subscribers < 0.99 * wanted) throw new Error(short);
      notes.push(`${server}: ${short}; measured with the ${subscribers} that did`);
      log(`fanout ${notes.at(-1)}`);
    }
    if ((await pub.connect(1)) < 1) throw new Error('the publisher could not connect');
    await sleep(opts.settleMs);
    started.assertUp();
    const clientPids = (): number[] => [...subs.pids, ...pub.pids];
    let next = 0;
    /** What the parent measured of each load; the clients' figures come with their results. */
    const windows: { run: FanoutRun; firstSendAt: number }[] = [];
    for (const load of opts.loads) {
      const expect = { first: next, count: load.count };
      next += load.count;
      subs.phase(load.name, false, expect);
      pub.phase(load.name);
      await sleep(100); // the phase reaches every client before the first publication
      const delivered0 = subs.status()?.delivered ?? 0;
      const cpu0 = treeCpuMs(started.pid);
      const broker0 = brokerCpu();
      const client0 = clientPids().reduce((n, p) => n + treeCpuMs(p), 0);
      const busy0 = machineBusyMs();
      const self0 = process.cpuUsage();
      const t0 = now();
      const sent = await pub.publish(expect.first, load.count, load.perSecond, opts.size);
      const want = delivered0 + subscribers * sent.sent;
      const allowMs = 30_000 + (load.perSecond > 0 ? 0 : (subscribers * load.count) / 10);
      const complete = await subs.waitFor((s) => s.delivered >= want, allowMs);
      const serverCpuMs = treeCpuMs(started.pid) - cpu0;
      const brokerCpuMs = brokerCpu() - broker0;
      const clientCpuMs = clientPids().reduce((n, p) => n + treeCpuMs(p), 0) - client0;
      const self = process.cpuUsage(self0);
      const elapsed = now() - t0;
      const otherMs =
        machineBusyMs() -
        busy0 -
        serverCpuMs -
        brokerCpuMs -
        clientCpuMs -
        (self.user + self.system) / 1000;
      const pctOf = (v: number): number => Math.max(0, Math.round((100 * v) / elapsed));
      started.assertUp();
      const run: FanoutRun = {
        server,
        load: load.name,
        perSecond: load.perSecond,
        publications: load.count,
        subscribers,
        workers,
        sent: sent.sent,
        expected: 0,
        delivered: 0,
        missing: 0,
        duplicates: 0,
        reordered: 0,
        complete,
        spanMs: null,
        deliveriesPerSec: null,
        p50Ms: null,
        p99Ms: null,
        maxMs: null,
        serverCpuMs: Math.round(serverCpuMs),
        cpuUsPerDelivery: null,
        serverCpuPct: pctOf(serverCpuMs),
        clientCpuPct: pctOf(clientCpuMs),
        otherCpuPct: pctOf(otherMs),
        ...(redis
          ? { brokerCpuMs: Math.round(brokerCpuMs), brokerCpuPct: pctOf(brokerCpuMs) }
          : {}),
      };
      windows.push({ run, firstSendAt: sent.firstAt });
      await sleep(opts.settleMs);
    }
    const r = await subs.results();
    for (const { run: w, firstSendAt } of windows) {
      const p = r.phases[w.load];
      const delivered = p?.deliveries ?? 0;
      const spanMs =
        p?.lastDeliveryAt != null && Number.isFinite(firstSendAt)
          ? round1(p.lastDeliveryAt - firstSendAt)
          : null;
      runs.push({
        ...w,
        expected: p?.expected ?? 0,
        delivered,
        missing: p?.missing ?? 0,
        duplicates: p?.duplicates ?? 0,
        reordered: p?.reordered ?? 0,
        spanMs,
        deliveriesPerSec: spanMs && spanMs > 0 ? Math.round((delivered * 1000) / spanMs) : null,
        p50Ms: tallyQuantile(p?.latency ?? [], 0.5),
        p99Ms: tallyQuantile(p?.latency ?? [], 0.99),
        maxMs: tallyQuantile(p?.latency ?? [], 1),
        cpuUsPerDelivery: delivered > 0 ? round2((w.serverCpuMs * 1000) / delivered) : null,
        ...(w.brokerCpuMs === undefined
          ? {}
          : {
              brokerCpuUsPerDelivery:
                delivered > 0 ? Number(((w.brokerCpuMs * 1000) / delivered).toPrecision(2)) : null,
            }),
      });
    }
    if (r.foreign > 0) log(`fanout ${server}: ${r.foreign} messages not understood by clients`);
    return runs;
  } finally {
    await subs.stop();
    await pub.stop();
    await started.stop();
    if (redis) {
      await redis.kill();
      rmSync(redis.dir, { recursive: true, force: true });
    }
  }
}

/** wsdrain against socket.io and raw ws, load by load. */
export function fanoutComparisons(runs: FanoutRun[], opts: FanoutOptions): FanoutComparison[] {
  const ratio = (a: number | null | undefined, b: number | null | undefined): number | null =>
    a == null || b == null || b <= 0 ? null : round2(a / b);
  return opts.loads.map((l) => {
    const of = (s: FanoutServer): FanoutRun | undefined =>
      runs.find((r) => r.server === s && r.load === l.name);
    const w = of('wsdrain');
    const r = of('wsdrain+redis');
    const io = of('socket.io');
    const raw = of('raw-ws');
    const withBroker = (x: FanoutRun | undefined): number | null =>
      x?.cpuUsPerDelivery == null ? null : x.cpuUsPerDelivery + (x.brokerCpuUsPerDelivery ?? 0);
    return {
      load: l.name,
      burst: l.perSecond === 0,
      rateVsSocketio: ratio(w?.deliveriesPerSec, io?.deliveriesPerSec),
      p99VsSocketio: ratio(w?.p99Ms, io?.p99Ms),
      cpuVsRaw: ratio(w?.cpuUsPerDelivery, raw?.cpuUsPerDelivery),
      cpuVsSocketio: ratio(w?.cpuUsPerDelivery, io?.cpuUsPerDelivery),
      ...(opts.servers.includes('wsdrain+redis')
        ? {
            redisRate: ratio(r?.deliveriesPerSec, w?.deliveriesPerSec),
            redisP99: ratio(r?.p99Ms, w?.p99Ms),
            redisCpu: ratio(r?.cpuUsPerDelivery, w?.cpuUsPerDelivery),
            redisCpuWithBroker: ratio(withBroker(r), w?.cpuUsPerDelivery),
          }
        : {}),
    };
  });
}

/**
 * The verdict: every wsdrain subscriber got every publication exactly once, in order (not a
 * target: a guarantee); and the targets against socket.io at the same load, judged when both
 * ran (a server that failed to run is a miss).
 */
export function fanoutMisses(f: FanoutResult): string[] {
  const misses = f.failures.map((s) => `failed to run: ${s}`);
  for (const r of f.runs.filter((x) => WSDRAIN.has(x.server))) {
    if (r.missing + r.duplicates + r.reordered > 0 || r.delivered !== r.expected) {
      misses.push(
        `${r.load}: ${r.server} delivered ${r.delivered} of ${r.expected} (${r.missing} missing, ` +
          `${r.duplicates} duplicated, ${r.reordered} out of order): every subscriber must ` +
          'receive every publication exactly once, in order',
      );
    }
  }
  for (const r of f.runs.filter((x) => x.server === 'wsdrain' && x.perSecond === 0)) {
    if (r.cpuUsPerDelivery === null || r.cpuUsPerDelivery > TARGETS.fanoutCpuUsPerDelivery) {
      misses.push(
        `${r.load}: wsdrain server CPU ${r.cpuUsPerDelivery ?? '—'} µs per delivery ` +
          target('fanoutCpuUsPerDelivery', '<='),
      );
    }
  }
  const judged = f.options.servers.includes('wsdrain') && f.options.servers.includes('socket.io');
  if (!judged) return misses;
  for (const c of f.comparisons) {
    if (c.burst && (c.rateVsSocketio === null || c.rateVsSocketio < TARGETS.fanoutVsSocketio)) {
      misses.push(
        `${c.load}: wsdrain deliveries/s ×${c.rateVsSocketio ?? '—'} of socket.io's ` +
          target('fanoutVsSocketio', '>='),
      );
    }
    if (c.p99VsSocketio === null || c.p99VsSocketio > TARGETS.fanoutP99VsSocketio) {
      misses.push(
        `${c.load}: wsdrain p99 ×${c.p99VsSocketio ?? '—'} of socket.io's ` +
          target('fanoutP99VsSocketio', '<='),
      );
    }
  }
  return misses;
}

function describe(r: FanoutRun): string {
  return (
    `${r.delivered}/${r.expected} delivered${r.complete ? '' : ' (gave up waiting)'}` +
    (r.missing + r.duplicates + r.reordered > 0
      ? ` (${r.missing} missing, ${r.duplicates} duplicated, ${r.reordered} out of order)`
      : '') +
    `, ${r.deliveriesPerSec ?? '—'} deliveries/s, latency p50 ${r.p50Ms ?? '—'} ms p99 ` +
    `${r.p99Ms ?? '—'} ms, server CPU ${r.cpuUsPerDelivery ?? '—'} µs per delivery` +
    (r.brokerCpuMs === undefined ? '' : ` (+ ${r.brokerCpuUsPerDelivery ?? '—'} µs redis-server)`) +
    `; CPU server ${r.serverCpuPct}%, ` +
    (r.brokerCpuPct === undefined ? '' : `redis-server ${r.brokerCpuPct}%, `) +
    `clients ${r.clientCpuPct}%, other processes ${r.otherCpuPct}%`
  );
}

export function fanoutSection(f: FanoutResult): string[] {
  const o = f.options;
  const x = (v: number | null): string => (v === null ? '—' : `×${v}`);
  const raw = Math.min(o.subscribers, o.rawMaxSubscribers);
  const lines = [
    '## Fan-out: one publication to every subscriber',
    '',
    `${o.subscribers} subscribers of one topic on ${o.workers} workers (raw ws: one process, ` +
      `${raw} subscribers), ${o.size} bytes of data per publication, one publisher client. ` +
      'Loads: a burst (every publication at once) and steady rates (publications a second). ' +
      'Latency: from the publisher’s send to the subscriber’s receipt, every delivery, on the ' +
      'machine’s one clock. *deliveries/s*: deliveries / (first send → last delivery). ' +
      '*CPU µs*: server CPU (user + sys of the primary and every worker) from the first send ' +
      'until the last delivery was seen, per delivery; for wsdrain+redis, redis-server’s own ' +
      'CPU follows it (*+ redis*). *CPU %*: mean use over that time, % of one core: server / ' +
      'clients / other processes on the machine (redis-server apart).',
    '',
    '| load | server | subscribers | delivered | deliveries/s | p50 | p99 | max | CPU µs / delivery | CPU % server / clients / other |',
    '|---|---|--:|---|--:|--:|--:|--:|--:|---|',
  ];
  const bold = (s: FanoutServer): string => (WSDRAIN.has(s) ? `**${s}**` : s);
  for (const l of o.loads) {
    for (const r of f.runs.filter((y) => y.load === l.name)) {
      const bad = r.missing + r.duplicates + r.reordered > 0 || r.delivered !== r.expected;
      lines.push(
        `| ${r.load} | ${bold(r.server)} | ${r.subscribers} | ` +
          `${r.delivered} of ${r.expected}${bad ? ` (${r.missing} missing, ${r.duplicates} dup., ${r.reordered} out of order)` : ''} | ` +
          `${cell(r.deliveriesPerSec)} | ${ms(r.p50Ms)} | ${ms(r.p99Ms)} | ${ms(r.maxMs)} | ` +
          `${cell(r.cpuUsPerDelivery)}${r.brokerCpuMs === undefined ? '' : ` + ${cell(r.brokerCpuUsPerDelivery)} redis`} | ` +
          `${r.serverCpuPct}${r.brokerCpuPct === undefined ? '' : ` + ${r.brokerCpuPct} redis`} / ${r.clientCpuPct} / ${r.otherCpuPct} |`,
      );
    }
  }
  const vsOthers = ['rateVsSocketio', 'p99VsSocketio', 'cpuVsRaw', 'cpuVsSocketio'] as const;
  if (f.comparisons.some((c) => vsOthers.some((k) => c[k] !== null))) {
    lines.push(
      '',
      '| load | wsdrain / socket.io deliveries/s | wsdrain / socket.io p99 | wsdrain / socket.io CPU per delivery | wsdrain / raw ws CPU per delivery |',
      '|---|--:|--:|--:|--:|',
      ...f.comparisons.map(
        (c) =>
          `| ${c.load} | ${x(c.rateVsSocketio)} | ${x(c.p99VsSocketio)} | ${x(c.cpuVsSocketio)} | ${x(c.cpuVsRaw)} |`,
      ),
    );
  }
  if (f.comparisons.some((c) => typeof c.redisRate === 'number')) {
    lines.push(
      '',
      'The Redis broker against the embedded one (wsdrain+redis / wsdrain, same load; CPU: ' +
        'wsdrain’s processes, then with redis-server’s added):',
      '',
      '| load | deliveries/s | p99 | server CPU per delivery | with redis-server |',
      '|---|--:|--:|--:|--:|',
      ...f.comparisons.map(
        (c) =>
          `| ${c.load} | ${x(c.redisRate ?? null)} | ${x(c.redisP99 ?? null)} | ` +
          `${x(c.redisCpu ?? null)} | ${x(c.redisCpuWithBroker ?? null)} |`,
      ),
    );
  }
  if (f.failures.length) lines.push('', ...f.failures.map((s) => `- failed to run: ${s}`));
  if (f.notes?.length) lines.push('', ...f.notes.map((s) => `- ${s}`));
  const judged = o.servers.includes('wsdrain') && o.servers.includes('socket.io');
  lines.push(
    '',
    'Verdict: every wsdrain subscriber (either broker) receives every publication exactly ' +
      'once, in order. ' +
      `Targets: on a burst, wsdrain deliveries/s ≥ ${TARGETS.fanoutVsSocketio} × socket.io's ` +
      `and ≤ ${TARGETS.fanoutCpuUsPerDelivery} µs of server CPU per delivery; at every load, ` +
      `wsdrain p99 ≤ ${TARGETS.fanoutP99VsSocketio} × socket.io's` +
      (judged ? '' : ' (the socket.io ratios not judged: socket.io was not in this run)') +
      ` — ${verdict(f.misses)}.`,
  );
  return lines;
}

/** A load as --fanout-loads writes it. */
export const loadSpec = (l: FanoutLoad): string =>
  l.perSecond === 0 ? `burst:${l.count}` : `${l.perSecond}/s:${l.count / l.perSecond}`;
