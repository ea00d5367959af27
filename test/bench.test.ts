/**
 * The benchmark's own checks, fed what wsdrain really writes, and its exit status: a check
 * that cannot fail is worse than none. Tiny runs (real processes and sockets, a few seconds).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { emptyTopics, sumStatus, type TopicCounts, type TopicRange } from '../bench/crowd/index.js';
import { WsdrainLog } from '../bench/lib/server.js';
import { type AcceptResult, acceptMisses } from '../bench/scenarios/accept.js';
import {
  DRAIN_PRESETS,
  type DrainResult,
  type DrainSummary,
  drainMisses,
} from '../bench/scenarios/drain.js';
import {
  FANOUT_PRESETS,
  FANOUT_SERVERS,
  type FanoutResult,
  type FanoutRun,
  fanoutComparisons,
  fanoutMisses,
  parseLoads,
} from '../bench/scenarios/fanout.js';
import { P99_FLOOR_MS, p99Ratio } from '../bench/scenarios/healthz.js';
import {
  type RecoveryResult,
  type RecoveryRun,
  recoveryProblems,
  topicProblems,
} from '../bench/scenarios/recovery.js';
import { rollWithinBudget } from '../bench/scenarios/storm.js';
import { WORK_PRESETS, type WorkRun, workMisses } from '../bench/scenarios/work.js';
import { killAll, type LogLine, ROOT, startWsdrain } from './helpers/process.js';
import { REDIS_MISSING } from './helpers/redis.js';

afterEach(killAll);

/** A warn line as wsdrain's logger writes it (`"level":"warn"`), taken from a real process. */
async function realWarnLine(): Promise<LogLine> {
  const w = await startWsdrain(['--workers', '0']);
  w.child.kill('SIGHUP'); // single process: "SIGHUP ignored ..." at warn level
  const line = await w.waitFor((l) => l.level === 'warn');
  w.kill('SIGKILL');
  return line;
}

describe('storm log reading', () => {
  it('records warnings written with pino level words, and a missed deadline fails the roll budget', async () => {
    const warn = await realWarnLine();
    expect(warn.level).toBe('warn');
    const log = new WsdrainLog();
    const line = (fields: Record<string, unknown>): string =>
      JSON.stringify({ ...warn, ...fields });
    const report = { sockets: 10, clean: 10, terminated: 0, dropped: 0, lateUpgrades: 0 };
    for (const workerPid of [101, 102]) {
      log.read(
        line({
          level: 'info',
          workerPid,
          report: { ...report, durationMs: 100, windowMs: 0 },
          msg: `rolled worker ${workerPid}: drained 10 sockets in 100 ms`,
        }),
        1,
      );
    }
    log.read(line({ level: 'info', msg: 'rolling restart done: 2 workers' }), 2);
    const o = { rollWorkers: 2, drainTimeoutMs: 5000 };
    expect(rollWithinBudget(log, o)).toBe(true);

    log.read(JSON.stringify(warn), 3);
    log.read(line({ workerPid: 102, msg: 'worker 102 missed its deadline; killing it' }), 4);
    expect(log.warnings).toEqual([
      `warn ${warn.role}/${warn.pid}: ${warn.msg}`,
      `warn ${warn.role}/${warn.pid}: worker 102 missed its deadline; killing it`,
    ]);
    expect(rollWithinBudget(log, o)).toBe(false);
  });
});

describe('healthz target', () => {
  it('judges a drain p99 against an idle p99 of 0 (floored at the resolution) instead of skipping it', () => {
    expect(p99Ratio(0.5, 0)).toBe(0.5 / P99_FLOOR_MS);
    expect(p99Ratio(0.02, 0.01)).toBe(2);
    expect(p99Ratio(null, 1)).toBeNull();
  });
});

describe('fan-out verdict', () => {
  const options = { ...FANOUT_PRESETS.quick, loads: parseLoads('burst:20,5/s:4') };
  /** A run every subscriber of which got everything; `o` changes it. */
  const run = (server: FanoutRun['server'], load: string, o: Partial<FanoutRun> = {}) => {
    const l = options.loads.find((x) => x.name === load)!;
    const expected = 4000 * l.count;
    return {
      server,
      load,
      perSecond: l.perSecond,
      publications: l.count,
      subscribers: 4000,
      workers: 2,
      sent: l.count,
      expected,
      delivered: expected,
      missing: 0,
      duplicates: 0,
      reordered: 0,
      complete: true,
      spanMs: 1000,
      deliveriesPerSec: 100_000,
      p50Ms: 50,
      p99Ms: 100,
      maxMs: 120,
      serverCpuMs: 400,
      cpuUsPerDelivery: 4,
      serverCpuPct: 50,
      clientCpuPct: 50,
      otherCpuPct: 0,
      ...o,
    } satisfies FanoutRun;
  };
  const judge = (runs: FanoutRun[], servers = options.servers): string[] => {
    const f: FanoutResult = {
      options: { ...options, servers },
      runs,
      comparisons: fanoutComparisons(runs, options),
      failures: [],
      misses: [],
    };
    return fanoutMisses(f);
  };
  const socketio = [
    run('socket.io', 'burst 20', { deliveriesPerSec: 50_000, p99Ms: 400, cpuUsPerDelivery: 10 }),
    run('socket.io', '5/s', { deliveriesPerSec: 20_000, p99Ms: 200 }),
  ];

  it('passes when every subscriber got every publication once and each target is met', () => {
    expect(
      judge([run('wsdrain', 'burst 20'), run('wsdrain', '5/s', { p99Ms: 100 }), ...socketio]),
    ).toEqual([]);
  });

  it('misses a publication lost, duplicated or out of order, whatever the targets say', () => {
    const lost = run('wsdrain', '5/s', { delivered: 79_999, missing: 1 });
    const twice = run('wsdrain', 'burst 20', { duplicates: 1, delivered: 80_001 });
    const misses = judge([twice, lost, ...socketio]);
    expect(misses).toHaveLength(2);
    expect(misses[0]).toMatch(/burst 20: .*1 duplicated.*exactly once/);
    expect(misses[1]).toMatch(/5\/s: wsdrain delivered 79999 of 80000 \(1 missing/);
    expect(judge([run('wsdrain', 'burst 20', { reordered: 3 })], ['wsdrain'])).toEqual([
      expect.stringMatching(/3 out of order/),
    ]);
    // The Redis broker is held to the same guarantee (its CPU is not judged).
    const redis = run('wsdrain+redis', '5/s', {
      delivered: 79_999,
      missing: 1,
      cpuUsPerDelivery: 9,
    });
    expect(judge([redis], ['wsdrain+redis'])).toEqual([
      expect.stringMatching(/5\/s: wsdrain\+redis delivered 79999 of 80000 \(1 missing/),
    ]);
  });

  it('names each target missed: deliveries/s and CPU on a burst, p99 at every load', () => {
    const slow = run('wsdrain', 'burst 20', {
      deliveriesPerSec: 60_000,
      p99Ms: 300,
      cpuUsPerDelivery: 6,
    });
    const misses = judge([slow, run('wsdrain', '5/s', { p99Ms: 150 }), ...socketio]);
    expect(misses).toEqual([
      expect.stringMatching(/burst 20: .*6 µs .*\(target fanoutCpuUsPerDelivery <= 5\)/),
      expect.stringMatching(/burst 20: .*×1\.2 .*\(target fanoutVsSocketio >= 1\.5\)/),
      expect.stringMatching(/burst 20: .*p99 ×0\.75 .*\(target fanoutP99VsSocketio <= 0\.5\)/),
      expect.stringMatching(/5\/s: .*p99 ×0\.75 .*\(target fanoutP99VsSocketio <= 0\.5\)/),
    ]);
    // Without socket.io in the run, only what wsdrain alone can show is judged.
    expect(judge([slow], ['wsdrain'])).toEqual([
      expect.stringMatching(/target fanoutCpuUsPerDelivery/),
    ]);
  });

  it('reads --fanout-loads', () => {
    expect(parseLoads('burst:20,5/s:4')).toEqual([
      { name: 'burst 20', count: 20, perSecond: 0 },
      { name: '5/s', count: 20, perSecond: 5 },
    ]);
    expect(() => parseLoads('5/s')).toThrow(/burst:N or R\/s:SECONDS/);
    expect(() => parseLoads('burst:2,burst:2')).toThrow(/given twice/);
  });
});

describe('server CPU and work targets', () => {
  const row = (strategy: DrainSummary['strategy'], us: number | null): DrainSummary =>
    ({ strategy, stalled: 0, serverCpuUsPerRelease: us }) as DrainSummary;
  const drain = (rows: DrainSummary[]): DrainResult => ({
    options: DRAIN_PRESETS.quick,
    runs: [],
    drain: rows,
    skipped: [],
    failures: [],
  });

  it('judges wsdrain CPU per socket released against terminate, when both ran', () => {
    expect(drainMisses(drain([row('wsdrain', 45), row('terminate', 30)]))).toEqual([]);
    expect(drainMisses(drain([row('wsdrain', 120), row('terminate', 30)]))).toEqual([
      expect.stringMatching(
        /120 µs per socket released, ×4 of terminate's 30 µs \(target serverCpuPerReleaseVsTerminate <= 1\.5\)/,
      ),
    ]);
    expect(drainMisses(drain([row('wsdrain', null), row('terminate', 30)]))).toHaveLength(1);
    expect(drainMisses(drain([row('wsdrain', 120)]))).toEqual([]);
  });

  it('judges wsdrain CPU per accepted connection against plain ws', () => {
    const accept = (cpuVsWs: number | null): AcceptResult => ({
      options: { clients: 10, workers: 2, perProcess: 10, concurrency: 10, rounds: 1 },
      runs: [],
      rows: [
        { server: 'ws', cpuUsPerAccept: 200, perCoreSecond: 5000, perSecond: 1000 },
        { server: 'wsdrain', cpuUsPerAccept: 240, perCoreSecond: 4167, perSecond: 1000 },
      ],
      cpuVsWs,
      misses: [],
    });
    expect(acceptMisses(accept(1))).toEqual([]);
    expect(acceptMisses(accept(1.2))).toEqual([
      expect.stringMatching(
        /240 µs per connection, ×1\.2 of plain ws's 200 µs \(target acceptCpuVsWs <= 1\)/,
      ),
    ]);
    expect(acceptMisses(accept(null))).toHaveLength(1);
  });

  it('judges the work scenario on wsdrain only: p99s under load, replies, the drain', () => {
    const lat = (p99Ms: number) => ({ n: 100, p50Ms: p99Ms / 2, p99Ms });
    const run = (o: Partial<WorkRun> = {}): WorkRun => ({
      server: 'wsdrain',
      workers: 2,
      workPerSec: 300,
      work: lat(50),
      echoIdle: lat(2),
      echoLoad: lat(4),
      healthzIdle: lat(2),
      healthzLoad: lat(5),
      pingIdle: lat(1),
      pingLoad: lat(9),
      echoP99VsIdle: 2,
      healthzP99VsIdle: 2.5,
      pingP99VsIdle: 9,
      healthzFailed: 0,
      mismatched: 0,
      lost: 0,
      budgetMs: 3000,
      exitMs: 200,
      exitStatus: 'exit 0',
      lastCloseMs: 150,
      codes: { '1001': 54 },
      sockets: 54,
      stillOpen: 0,
      ...o,
    });
    const judge = (runs: WorkRun[]) =>
      workMisses({ options: WORK_PRESETS.quick, runs, failures: [], misses: [] });
    const inline = run({
      server: 'inline',
      echoP99VsIdle: 50,
      healthzP99VsIdle: 100,
      budgetMs: null,
    });
    expect(judge([run(), inline])).toEqual([]);
    expect(
      judge([run({ echoP99VsIdle: 4, exitMs: 3500, codes: { '1001': 53, '1006': 1 } })]),
    ).toEqual([
      expect.stringMatching(/echo p99 under load .*×4 idle .*\(target workP99VsIdle <= 3\)/),
      expect.stringMatching(/1 sockets not closed with 1001/),
      expect.stringMatching(/exit 3500 ms after SIGTERM, budget 3000 ms/),
    ]);
  });
});

describe('recovery checks', () => {
  /** A recovering run of 100 clients in which every check holds; `o` and `t` change it. */
  const run = (o: Partial<RecoveryRun> = {}, t: Partial<TopicCounts> = {}) =>
    ({
      run: 'embedded',
      broker: 'embedded',
      recovery: true,
      clients: 100,
      connected: 100,
      connectRatePerS: 1000,
      rollDoneMs: 1500,
      allBackMs: 2000,
      peakPerSec: 1000,
      peak1sPerSec: 100,
      meanPerSec: 500,
      reconnects: 100,
      handshakeP50Ms: 10,
      handshakeP99Ms: 50,
      refusals: 0,
      refusalCauses: {},
      codes: { 1012: 100 },
      closesPerSocket: { 1: 100 },
      gaveUp: 0,
      workersReplaced: true,
      serverCpuMs: 1000,
      serverCpuPct: 50,
      steadyCpuPct: 10,
      clientCpuPct: 20,
      sent: 60,
      skipped: 0,
      acked: 60,
      lastAcked: 60,
      topics: {
        subscribers: 100,
        fresh: 100,
        recovered: 100,
        unrecovered: 0,
        resubscribes: 0,
        handled: 6000,
        missing: 0,
        duplicates: 0,
        wireDuplicates: 0,
        wireHoles: 0,
        replayed: 500,
        startMin: 0,
        startMax: 0,
        endMin: 60,
        endMax: 60,
        acked: 60,
        lastAcked: 60,
        publishErrors: 0,
        byTopic: {},
        ...t,
      },
      problems: [],
      ...o,
    }) satisfies RecoveryRun;
  /** The run with its topic's range: where the subscribers started and ended, the last ack. */
  const withRange = (x: RecoveryRun, r: Partial<TopicRange> = {}): RecoveryRun => {
    const { startMin, startMax, endMin, endMax, lastAcked } = x.topics!;
    const range = { subscribers: 100, startMin, startMax, endMin, endMax, lastAcked, ...r };
    return { ...x, topics: { ...x.topics!, byTopic: { recovery: range } } };
  };
  /** The checks of run(o, t), its topic's range from its counts, changed by `r`. */
  const check = (o: Partial<RecoveryRun> = {}, t: Partial<TopicCounts> = {}, r = {}) =>
    recoveryProblems(withRange(run(o, t), r));

  it('passes a run in which every subscriber handled every offset once and came back', () => {
    expect(check()).toEqual([]);
    // A plain run has no topics to check.
    expect(recoveryProblems(run({ run: 'plain', recovery: false, topics: undefined }))).toEqual([]);
  });

  it('fails a publication lost, handled twice, sent twice, skipped or not recovered', () => {
    expect(check({}, { missing: 3 })).toEqual([
      expect.stringMatching(/missed 3 publications .*once, in order/),
    ]);
    expect(check({}, { duplicates: 1 })).toEqual([
      expect.stringMatching(/got 1 twice or out of order/),
    ]);
    expect(check({}, { wireDuplicates: 2, wireHoles: 1 })).toEqual([
      expect.stringMatching(/sent 2 publications .* skipped offsets 1 times/),
    ]);
    expect(check({}, { unrecovered: 4 })).toEqual([
      expect.stringMatching(/4 resubscriptions answered recovered: false/),
    ]);
    expect(check({}, { endMin: 59 })).toEqual([expect.stringMatching(/ended at offsets 59 to 60/)]);
    expect(check({}, {}, { lastAcked: 61 })).toEqual([
      expect.stringMatching(/the last acked was 61/),
    ]);
  });

  it('fails a client not back, a roll not done, a worker not replaced', () => {
    expect(check({ allBackMs: null, gaveUp: 1 })).toEqual([
      expect.stringMatching(/not every client came back and caught up \(1 gave up\)/),
    ]);
    expect(check({ rollDoneMs: null, workersReplaced: false })).toEqual([
      'no "rolling restart done"',
      'not every worker was replaced',
    ]);
  });
});

describe('exactly-once checks over several topics (the soak)', () => {
  /** Subscribers and publisher merged: `n` topics, 10 subscribers each, 0 -> 50, all handled. */
  const counts = (n: number, change: (t: TopicCounts) => void = () => {}): TopicCounts => {
    const t = { ...emptyTopics(), subscribers: 10 * n, handled: 10 * n * 50, recovered: 20 * n };
    for (let k = 0; k < n; k++) {
      t.byTopic[`soak-${k}`] = {
        subscribers: 10,
        startMin: 0,
        startMax: 0,
        endMin: 50,
        endMax: 50,
        lastAcked: 50,
      };
    }
    change(t);
    return t;
  };

  it('passes when every subscriber of every topic reached the last offset of its topic', () => {
    expect(topicProblems(counts(8), 80)).toEqual([]);
    // Topics end at different offsets: each is judged against its own last ack.
    expect(
      topicProblems(
        counts(2, (t) => {
          Object.assign(t.byTopic['soak-1']!, { endMin: 49, endMax: 49, lastAcked: 49 });
        }),
        20,
      ),
    ).toEqual([]);
  });

  it('names the topic whose subscribers fell short, started apart or had no subscriber', () => {
    expect(
      topicProblems(
        counts(3, (t) => {
          t.byTopic['soak-1']!.endMin = 48;
        }),
        30,
      ),
    ).toEqual([expect.stringMatching(/^subscribers of soak-1 ended at offsets 48 to 50/)]);
    expect(
      topicProblems(
        counts(3, (t) => {
          t.byTopic['soak-2']!.lastAcked = 51;
          t.byTopic['soak-0']!.startMax = 2;
        }),
        30,
      ),
    ).toEqual([
      'subscribers of soak-0 started at offsets 0 to 2, not all at one',
      expect.stringMatching(/^subscribers of soak-2 ended .* the last acked was 51/),
    ]);
    // Published to a topic nobody subscribed to (subscribers on fewer topics than published).
    expect(
      topicProblems(
        counts(2, (t) => {
          t.byTopic['soak-2'] = { ...t.byTopic['soak-1']!, subscribers: 0 };
        }),
        20,
      ),
    ).toEqual(['no subscriber of soak-2, published up to offset 50']);
    expect(topicProblems(counts(2), 21)).toEqual(['20 of 21 clients subscribed']);
    expect(topicProblems(emptyTopics(), 0)).toEqual(['no topic subscribed to']);
  });

  it('sums the statuses of several crowds, or waits for all of them', () => {
    const st = (open: number, at: number, lastReopenAt: number | null) => ({
      ...{ at, open, reconnecting: 0, closedOnce: 0, gaveUp: 0, sent: 0, echoed: 0 },
      ...{ mismatched: 0, timedOut: 0, lostOnOtherClose: 0, closes: 1, reopens: 0, refusals: 0 },
      ...{ lastReopenAt, subscribed: 1, delivered: 5, duplicates: 0, replaying: 0 },
    });
    expect(sumStatus([st(10, 5, null), st(1, 3, 7)])).toMatchObject({
      at: 3,
      open: 11,
      closes: 2,
      delivered: 10,
      lastReopenAt: 7,
    });
    expect(sumStatus([st(10, 5, null), undefined])).toBeUndefined();
    expect(sumStatus([])).toBeUndefined();
  });
});

/** `tsx bench/run.ts <args>` with tiny parameters: exit status and stderr. */
async function bench(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stderr };
}

describe('fan-out, a tiny run', () => {
  const out = mkdtempSync(join(tmpdir(), 'wsdrain-fanout-test-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('every subscriber of each server gets every publication once, framing for each dialect', async () => {
    const r = await bench([
      ...['--scenarios', 'fanout', '--fanout-subscribers', '20', '--fanout-workers', '1'],
      ...['--fanout-loads', 'burst:5,20/s:1', '--report-only', '--out', out, '--name', 'tiny'],
    ]);
    expect(r.code).toBe(0);
    const f = JSON.parse(readFileSync(join(out, 'tiny.json'), 'utf8')).fanout as FanoutResult;
    expect(f.failures).toEqual([]);
    // wsdrain+redis runs where redis-server is installed; elsewhere the report says why not.
    const servers = FANOUT_SERVERS.filter((s) => s !== 'wsdrain+redis' || !REDIS_MISSING);
    expect(f.runs.map((x) => `${x.server} ${x.load}`)).toEqual(
      servers.flatMap((s) => [`${s} burst 5`, `${s} 20/s`]),
    );
    if (REDIS_MISSING)
      expect(f.notes).toContainEqual(expect.stringMatching(/^wsdrain\+redis: skipped/));
    for (const x of f.runs.filter((y) => y.server === 'wsdrain+redis')) {
      expect(x.brokerCpuMs).toBeGreaterThanOrEqual(0);
    }
    for (const x of f.runs) {
      expect([x.delivered, x.missing, x.duplicates, x.reordered]).toEqual([x.expected, 0, 0, 0]);
      expect(x.expected).toBe(20 * x.publications);
      expect(x.p99Ms).toBeGreaterThan(0);
    }
  }, 90_000);
});

describe('recovery, a tiny run', () => {
  const out = mkdtempSync(join(tmpdir(), 'wsdrain-recovery-test-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('every subscriber recovers across the roll, with either broker; plain clients come back', async () => {
    const r = await bench([
      ...['--scenarios', 'recovery', '--recovery-clients', '20', '--recovery-rate', '50'],
      ...['--out', out, '--name', 'tiny'],
    ]);
    const f = JSON.parse(readFileSync(join(out, 'tiny.json'), 'utf8')).recovery as RecoveryResult;
    expect(f.runs.map((x) => x.run)).toEqual(
      REDIS_MISSING ? ['plain', 'embedded'] : ['plain', 'embedded', 'redis'],
    );
    expect(f.misses).toEqual([]);
    expect(r.code).toBe(0);
    for (const x of f.runs) {
      expect([x.connected, x.reconnects, x.codes]).toEqual([20, 20, { 1012: 20 }]);
      if (!x.recovery) continue;
      expect(x.topics!.recovered).toBe(20);
      expect(x.topics!.handled).toBe(20 * (x.topics!.endMax! - x.topics!.startMin!));
      expect(x.replays).toBe(20);
    }
  }, 120_000);
});

describe('bench verdict', () => {
  const out = mkdtempSync(join(tmpdir(), 'wsdrain-bench-test-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));
  // One wsdrain with one worker, 10 sockets, one SIGTERM: a few seconds.
  const tiny = [
    '--scenarios',
    'drain',
    '--strategies',
    'wsdrain',
    '--stalled',
    '0',
    '--rounds',
    '1',
  ].concat(['--sockets', '10', '--workers', '1', '--out', out, '--name', 'tiny']);

  it('exits 1 and names the target a run missed; --report-only records it and exits 0', async () => {
    const missed = await bench([...tiny, '--target', 'drainExitVsBudget=0']);
    expect(missed.stderr).toMatch(/MISSED drain: .*\(target drainExitVsBudget <= 0\)/);
    expect(missed.code).toBe(1);
    const md = readFileSync(join(out, 'tiny.md'), 'utf8');
    expect(md).toMatch(/drain: \*\*missed\*\*: .*target drainExitVsBudget <= 0/);
    expect(JSON.parse(readFileSync(join(out, 'tiny.json'), 'utf8')).verdict.passed).toBe(false);

    const recorded = await bench([...tiny, '--report-only'], {
      WSDRAIN_BENCH_TARGETS: 'drainExitVsBudget=0',
    });
    expect(recorded.stderr).toMatch(/MISSED drain: .*drainExitVsBudget/);
    expect(recorded.stderr).toContain('--report-only: not judged');
    expect(recorded.code).toBe(0);
  }, 60_000);

  it('reads the work scenario flags: a bad one exits 2 naming it', async () => {
    const badServer = await bench(['--scenarios', 'work', '--work-servers', 'wsdrain,nginx']);
    expect(badServer.stderr).toContain('--work-servers: unknown nginx (known: wsdrain, inline)');
    expect(badServer.code).toBe(2);
    const badMs = await bench(['--scenarios', 'work', '--work-ms', '0']);
    expect(badMs.stderr).toContain('--work-ms must be an integer >= 1, got 0');
    expect(badMs.code).toBe(2);
  }, 30_000);

  it('exits 0 when the same run meets its targets, and 2 on an unknown target', async () => {
    const met = await bench(tiny);
    expect(met.stderr).toContain('every target met');
    expect(met.code).toBe(0);
    const bad = await bench([...tiny, '--target', 'noSuchTarget=1']);
    expect(bad.stderr).toContain('--target');
    expect(bad.code).toBe(2);
  }, 60_000);
});
