/**
 * The benchmark's one entry: `npm run bench` (this file), `npm run soak` (`run.ts soak`), the
 * storm alone (`run.ts storm`) and re-rendering a report (`run.ts report <json>`). Scenarios
 * are in scenarios/, one file each; `--help` lists every flag.
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { log } from './lib/proc.js';
import { ForeignCpu } from './lib/procfs.js';
import {
  json,
  machine,
  pct,
  RESULTS_DIR,
  type Verdict,
  verdictOf,
  verdictSection,
  writeFiles,
} from './lib/report.js';
import { DEFAULT_TARGETS, setTargets, TARGETS } from './lib/targets.js';
import { type CapacityResult, capacitySection, runCapacity } from './scenarios/capacity.js';
import {
  DEFLATE_PRESETS,
  type DeflateResult,
  deflateSection,
  runDeflate,
} from './scenarios/deflate.js';
import {
  DRAIN_PRESETS,
  type DrainOptions,
  type DrainResult,
  drainChart,
  drainMisses,
  drainSection,
  runDrain,
  STRATEGIES,
  type Strategy,
} from './scenarios/drain.js';
import {
  FANOUT_PRESETS,
  FANOUT_SERVERS,
  type FanoutResult,
  fanoutSection,
  loadSpec,
  parseLoads,
  runFanout,
} from './scenarios/fanout.js';
import {
  HEALTHZ_PRESETS,
  type HealthzResult,
  healthzSection,
  runHealthz,
} from './scenarios/healthz.js';
import {
  RECOVERY_PRESETS,
  RECOVERY_RUNS,
  type RecoveryResult,
  recoverySection,
  runRecovery,
} from './scenarios/recovery.js';
import { ROLL_PRESETS, type RollResult, rollSection, runRoll } from './scenarios/roll.js';
import { runSoak, SOAK_FLAGS } from './scenarios/soak.js';
import {
  runStorm,
  STORM_PARTS,
  STORM_PRESETS,
  type StormPart,
  type StormResult,
  stormSection,
} from './scenarios/storm.js';
import {
  runThroughput,
  THROUGHPUT_PRESETS,
  type ThroughputResult,
  throughputSection,
} from './scenarios/throughput.js';
import {
  runWork,
  WORK_PRESETS,
  WORK_SERVERS,
  type WorkResult,
  workSection,
} from './scenarios/work.js';

const HELP = `Usage:
  npm run bench -- [flags]                 the benchmark (full, or --quick: under 5 minutes)
  npm run soak -- [soak flags]             the soak (tsx bench/run.ts soak ...)
  tsx bench/run.ts storm [storm flags]     the reconnect storm alone
  tsx bench/run.ts report <results.json>   re-render <name>.md and .svg from a results JSON

Every command (npm run bench and npm run soak build first):
  --quick                  the small preset (default: full)
  --name NAME              results file names (default: quick or full)
  --out DIR                where results go (default: bench/results)
  --report-only            record the figures without judging them: exit 0 whatever they are
  --target NAME=VALUE      change a target for this run (repeatable; also the variable
                           WSDRAIN_BENCH_TARGETS="NAME=VALUE,..."). Names and defaults:
                           ${Object.entries(DEFAULT_TARGETS)
                             .map(([k, v]) => `${k}=${v}`)
                             .join(', ')}
  --help                   this text

Bench: scenarios drain, roll, healthz, throughput, deflate, storm, fanout, work, recovery
(capacity: full run or --capacity). Writes <name>.json, .md, .svg and storm-<name>.json.
  --scenarios a,b          which scenarios (drain, roll, healthz, throughput, capacity, deflate,
                           storm, fanout, work, recovery)
  --capacity               add capacity to a quick run
  --no-deflate             leave out the permessage-deflate rows (drain, roll) and the deflate scenario
  drain: --strategies a,b (${STRATEGIES.join(', ')})
         --sockets N  --workers N  --stalled 0,0.1  --rounds N  --drain-timeout MS
         --message-every MS  --per-process N  --concurrency N  --grace MS
  --roll-clients N  --healthz-sockets N  --capacity-sockets N  --deflate-sockets N
  --storm-clients N  --throughput-windows 1,16  --throughput-connections N
  --throughput-duration S  --throughput-rounds N
  fanout: --fanout-subscribers N  --fanout-workers N  --fanout-servers a,b (${FANOUT_SERVERS.join(', ')})
         --fanout-loads burst:N,R/s:SECONDS,...  (quick: ${FANOUT_PRESETS.quick.loads.map(loadSpec).join(',')})
  work: --work-servers a,b (${WORK_SERVERS.join(', ')})  --work-heavy N  --work-ms MS
         --work-window K  --work-light N  (quick: ${WORK_PRESETS.quick.heavy} connections x ${WORK_PRESETS.quick.window} messages of ${WORK_PRESETS.quick.workMs} ms, ${WORK_PRESETS.quick.light} echoing)
  recovery: --recovery-clients N (quick ${RECOVERY_PRESETS.quick.clients}, full ${RECOVERY_PRESETS.full.clients})  --recovery-runs a,b (${RECOVERY_RUNS.join(', ')})
         --recovery-rate N (publications/s; quick ${RECOVERY_PRESETS.quick.perSecond}, full ${RECOVERY_PRESETS.full.perSecond})  --recovery-window MS (--reconnect-window and --drain-window; quick 0, full 2000)
  Profiling: BENCH_SERVER_NODE_ARGS (wsdrain's node, inherited by its workers) and
  BENCH_CLIENT_NODE_ARGS (client processes), e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  Another build of wsdrain: BENCH_WSDRAIN_CLI=/path/to/dist/cli.js.

Storm: --clients N  --per-process N  --drain-timeout MS  --drain-window MS
  --reconnect-window MS  --scenarios accept,roll,failover. Writes storm-<name>.json.

Soak: --sockets N  --minutes M  --workers N (2)  --drain-timeout MS (10000)
  --message-every MS (2000)  --echo-timeout MS (10000)  --per-process N (10000)
  --concurrency N (200)  --sample-every MS (2000)  --settle-timeout MS (60000)
  --log-level L (info)  --ignore-hints (echoing sockets reconnect at once, not after the
  hint's delay; subscribers, wsdrain/client's, always follow the hints)
  --build (build again)  --cli PATH (another build's cli.js)
  Topics (on by default; the server runs baselines/fanout-app.mjs): --topic-share F (0.5: that
  share of the sockets are wsdrain.v1 subscribers recovering across the rolls, the rest echo)
  --topics N (8)  --publish-rate N (20 publications/s in all, from one publisher)
  --no-topics (every socket echoes, no app). Writes soak-<name>.json, .md.

Exit status: 0 every target met (or --report-only), 1 a target missed or a scenario failed
(the report says which), 2 a bad flag.
`;

const COMMON = {
  quick: { type: 'boolean' },
  name: { type: 'string' },
  out: { type: 'string' },
  'report-only': { type: 'boolean' },
  target: { type: 'string', multiple: true },
  help: { type: 'boolean' },
} as const;

/** parseArgs options taking a value, by name. */
const strings = <const K extends string>(...names: K[]) =>
  Object.fromEntries(names.map((n) => [n, { type: 'string' }])) as { [N in K]: { type: 'string' } };

const BENCH_FLAGS = {
  ...COMMON,
  capacity: { type: 'boolean' },
  'no-deflate': { type: 'boolean' },
  ...strings('scenarios', 'strategies', 'sockets', 'workers', 'stalled', 'rounds', 'grace'),
  ...strings('drain-timeout', 'message-every', 'per-process', 'concurrency', 'roll-clients'),
  ...strings('healthz-sockets', 'capacity-sockets', 'deflate-sockets', 'storm-clients'),
  ...strings('throughput-windows', 'throughput-connections', 'throughput-duration'),
  ...strings('throughput-rounds', 'fanout-subscribers', 'fanout-workers', 'fanout-servers'),
  ...strings('fanout-loads', 'work-servers', 'work-heavy', 'work-ms', 'work-window', 'work-light'),
  ...strings('fanout-loads', 'recovery-clients', 'recovery-runs', 'recovery-rate'),
  ...strings('recovery-window'),
} as const;

const STORM_FLAGS = {
  ...COMMON,
  ...strings('clients', 'per-process', 'drain-timeout', 'drain-window', 'reconnect-window'),
  ...strings('scenarios'),
} as const;

const SCENARIOS = [
  'drain',
  'roll',
  'healthz',
  'throughput',
  'capacity',
  'deflate',
  'storm',
  'fanout',
  'work',
  'recovery',
] as const;
type Scenario = (typeof SCENARIOS)[number];

export interface BenchReport {
  name: string;
  createdAt: string;
  machine: ReturnType<typeof machine>;
  /** The drain scenario's options, its summary rows and every run without its series. */
  options: DrainOptions;
  drain: DrainResult['drain'];
  runs: Omit<DrainResult['runs'][number], 'series'>[];
  skipped: string[];
  failures: string[];
  roll?: RollResult;
  /** The roll with --per-message-deflate. */
  rollDeflate?: RollResult;
  healthz?: HealthzResult;
  throughput?: ThroughputResult;
  capacity?: CapacityResult;
  /** permessage-deflate memory per connection. */
  deflate?: DeflateResult;
  /** The reconnect storm; also in storm-<name>.json. */
  storm?: StormResult;
  /** One publication to many subscribers: wsdrain, socket.io, raw ws. */
  fanout?: FanoutResult;
  /** CPU-heavy messages beside echoes: wsdrain's pool against a server working inline. */
  work?: WorkResult;
  /** Recovery during a roll (embedded broker, Redis), and the storm with and without it. */
  recovery?: RecoveryResult;
  /** Scenarios that failed to run (an exception), as "<scenario>: <message>". */
  scenarioFailures?: string[];
  /** Per scenario, mean CPU used by processes outside the bench while it ran, % of one core. */
  otherCpuPct?: Record<string, number>;
  /** The targets this run was judged by, and the verdict. */
  targets?: typeof TARGETS;
  verdict?: Verdict;
}

class FlagError extends Error {}

function parse<const O extends NonNullable<ParseArgsConfig['options']>>(
  argv: string[],
  options: O,
) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true }).values;
  } catch (err) {
    throw new FlagError((err as Error).message);
  }
}

function intFlag(v: string | undefined, flag: string, d: number, min = 0): number {
  if (v === undefined) return d;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min)
    throw new FlagError(`--${flag} must be an integer >= ${min}, got ${v}`);
  return n;
}

function listFlag<T extends string>(
  v: string | undefined,
  flag: string,
  known: readonly T[],
  d: T[],
): T[] {
  if (v === undefined) return d;
  return v.split(',').map((s) => {
    if (!(known as readonly string[]).includes(s)) {
      throw new FlagError(`--${flag}: unknown ${s} (known: ${known.join(', ')})`);
    }
    return s as T;
  });
}

/** --name, --out, --target and --report-only, common to every command. */
function common(v: {
  quick?: boolean;
  name?: string;
  out?: string;
  target?: string[];
  'report-only'?: boolean;
}) {
  const preset: 'quick' | 'full' = v.quick ? 'quick' : 'full';
  if (v.name !== undefined && !/^[\w.-]+$/.test(v.name)) {
    throw new FlagError(`--name: letters, digits, . _ - only, got ${v.name}`);
  }
  try {
    setTargets(v.target ?? []);
  } catch (err) {
    throw new FlagError((err as Error).message);
  }
  return {
    preset,
    name: v.name ?? preset,
    out: resolve(v.out ?? RESULTS_DIR),
    reportOnly: v['report-only'] === true,
  };
}

/** Prints the verdict and returns the exit status. */
function conclude(what: string, v: Verdict): number {
  for (const [scenario, misses] of Object.entries(v.scenarios)) {
    for (const m of misses) log(`${what}: MISSED ${scenario}: ${m}`);
  }
  const judged = v.reportOnly ? ' (--report-only: not judged)' : '';
  log(`${what}: ${v.passed ? 'every target met' : 'targets missed'}${judged}`);
  return v.passed || v.reportOnly ? 0 : 1;
}

async function bench(argv: string[]): Promise<number> {
  const v = parse(argv, BENCH_FLAGS);
  const { preset, name, out, reportOnly } = common(v);
  const deflate = v['no-deflate'] !== true;
  const base = DRAIN_PRESETS[preset];
  const drainOpts: DrainOptions = {
    strategies: listFlag(v.strategies, 'strategies', STRATEGIES, base.strategies).filter(
      (s: Strategy) => deflate || s !== 'wsdrain+deflate',
    ),
    stalled: (v.stalled?.split(',') ?? base.stalled.map(String)).map((s) => {
      const f = Number(s);
      if (!(f >= 0 && f <= 1)) throw new FlagError(`--stalled: fractions in [0, 1], got ${s}`);
      return f;
    }),
    sockets: intFlag(v.sockets, 'sockets', base.sockets, 1),
    workers: intFlag(v.workers, 'workers', base.workers),
    rounds: intFlag(v.rounds, 'rounds', base.rounds, 1),
    drainTimeoutMs: intFlag(v['drain-timeout'], 'drain-timeout', base.drainTimeoutMs, 1),
    messageEveryMs: intFlag(v['message-every'], 'message-every', base.messageEveryMs),
    perProcess: intFlag(v['per-process'], 'per-process', base.perProcess, 1),
    concurrency: intFlag(v.concurrency, 'concurrency', base.concurrency, 1),
    graceMs: intFlag(v.grace, 'grace', base.graceMs),
  };
  const all = SCENARIOS.filter(
    (s) => (s !== 'capacity' || preset === 'full' || v.capacity) && (s !== 'deflate' || deflate),
  );
  const selected = new Set<Scenario>(listFlag(v.scenarios, 'scenarios', SCENARIOS, all));
  if (v.capacity) selected.add('capacity');
  const roll = {
    ...ROLL_PRESETS[preset],
    clients: intFlag(v['roll-clients'], 'roll-clients', ROLL_PRESETS[preset].clients, 1),
  };
  const hz = HEALTHZ_PRESETS[preset];
  const healthz = {
    ...hz,
    sockets: intFlag(v['healthz-sockets'], 'healthz-sockets', hz.sockets, 1),
  };
  const tp = THROUGHPUT_PRESETS[preset];
  const throughput = {
    ...tp,
    windows: (v['throughput-windows']?.split(',') ?? tp.windows.map(String)).map((w) =>
      intFlag(w, 'throughput-windows', 0, 1),
    ),
    connections: intFlag(v['throughput-connections'], 'throughput-connections', tp.connections, 1),
    durationS: intFlag(v['throughput-duration'], 'throughput-duration', tp.durationS, 1),
    rounds: intFlag(v['throughput-rounds'], 'throughput-rounds', tp.rounds, 1),
  };
  const capacity = {
    sockets: 30_000,
    workers: 4,
    perProcess: 15_000,
    drainTimeoutMs: 10_000,
    settleMs: 2000,
  };
  capacity.sockets = intFlag(v['capacity-sockets'], 'capacity-sockets', capacity.sockets, 1);
  const df = DEFLATE_PRESETS[preset];
  const deflateOpts = {
    ...df,
    sockets: intFlag(v['deflate-sockets'], 'deflate-sockets', df.sockets, 1),
  };
  const st = STORM_PRESETS[preset];
  const storm = { ...st, clients: intFlag(v['storm-clients'], 'storm-clients', st.clients, 1) };
  const fo = FANOUT_PRESETS[preset];
  const fanout = {
    ...fo,
    servers: listFlag(v['fanout-servers'], 'fanout-servers', FANOUT_SERVERS, fo.servers),
    subscribers: intFlag(v['fanout-subscribers'], 'fanout-subscribers', fo.subscribers, 1),
    workers: intFlag(v['fanout-workers'], 'fanout-workers', fo.workers, 1),
    loads: fo.loads,
  };
  const rc = RECOVERY_PRESETS[preset];
  const recovery = {
    ...rc,
    runs: listFlag(v['recovery-runs'], 'recovery-runs', RECOVERY_RUNS, rc.runs),
    clients: intFlag(v['recovery-clients'], 'recovery-clients', rc.clients, 1),
    perSecond: intFlag(v['recovery-rate'], 'recovery-rate', rc.perSecond, 1),
  };
  if (v['recovery-window'] !== undefined) {
    // Both windows, as the storm's paced mode sets them (0: unpaced).
    const w = intFlag(v['recovery-window'], 'recovery-window', 0);
    Object.assign(recovery, { reconnectWindowMs: w, drainWindowMs: w });
  }
  if (v['fanout-loads'] !== undefined) {
    try {
      fanout.loads = parseLoads(v['fanout-loads']);
    } catch (err) {
      throw new FlagError((err as Error).message);
    }
  }

  const wk = WORK_PRESETS[preset];
  const work = {
    ...wk,
    servers: listFlag(v['work-servers'], 'work-servers', WORK_SERVERS, wk.servers),
    heavy: intFlag(v['work-heavy'], 'work-heavy', wk.heavy, 1),
    workMs: intFlag(v['work-ms'], 'work-ms', wk.workMs, 1),
    window: intFlag(v['work-window'], 'work-window', wk.window, 1),
    light: intFlag(v['work-light'], 'work-light', wk.light, 1),
  };

  const started = Date.now();
  log(`bench ${name}: scenarios ${[...selected].join(', ')}`);
  const report: BenchReport = {
    name,
    createdAt: new Date().toISOString(),
    machine: machine(),
    options: drainOpts,
    drain: [],
    runs: [],
    skipped: [],
    failures: [],
    scenarioFailures: [],
    otherCpuPct: {},
    targets: { ...TARGETS },
  };
  const misses: Record<string, string[]> = {};
  const files: string[] = [];
  const write = (): void => {
    report.verdict = verdictOf(misses, reportOnly);
    files.splice(0, files.length, ...writeBench(report, out));
  };
  /** Runs one scenario; `run` stores its result in the report and returns its misses. */
  const scenario = async (
    key: Scenario,
    options: object,
    run: () => Promise<Record<string, string[]>>,
  ): Promise<void> => {
    if (!selected.has(key)) return;
    log(`bench ${name} ${key}: ${JSON.stringify(options)}`);
    const t = Date.now();
    const foreign = new ForeignCpu();
    foreign.start();
    try {
      Object.assign(misses, await run());
    } catch (err) {
      const message = (err as Error).message;
      report.scenarioFailures!.push(`${key}: ${message}`);
      misses[key] = [...(misses[key] ?? []), `failed to run: ${message.split('\n')[0]}`];
      log(`FAILED ${key}: ${message}`);
    }
    const other = foreign.stop();
    report.otherCpuPct![key] = other;
    log(
      `bench ${name} ${key}: ${Math.round((Date.now() - t) / 1000)} s; other processes used ` +
        `${other} % of one core meanwhile${other > 20 ? ' (shared machine: figures noisy)' : ''}`,
    );
    write(); // keep what we have so far
  };

  await scenario('drain', drainOpts, async () => {
    const d = await runDrain(drainOpts);
    drainSeries = d;
    Object.assign(report, { drain: d.drain, failures: d.failures });
    report.runs = d.runs.map(({ series: _, ...r }) => r);
    return { drain: drainMisses(d) };
  });
  await scenario('roll', roll, async () => {
    report.roll = await runRoll(roll);
    const m: Record<string, string[]> = { roll: report.roll.misses };
    if (deflate) report.rollDeflate = await runRoll({ ...roll, deflate: true });
    if (report.rollDeflate) m['roll (deflate)'] = report.rollDeflate.misses;
    return m;
  });
  await scenario('healthz', healthz, async () => {
    const h = await runHealthz(healthz);
    report.healthz = h;
    return {
      healthz: h.runs.flatMap((x) => x.misses.map((m) => `--drain-delay ${x.drainDelayMs}: ${m}`)),
    };
  });
  await scenario('throughput', throughput, async () => {
    report.throughput = await runThroughput(throughput);
    return { throughput: report.throughput.misses };
  });
  await scenario('capacity', capacity, async () => {
    report.capacity = await runCapacity(capacity);
    return { capacity: report.capacity.misses };
  });
  await scenario('deflate', deflateOpts, async () => {
    report.deflate = await runDeflate(deflateOpts);
    return { deflate: report.deflate.misses };
  });
  await scenario('storm', storm, async () => {
    report.storm = await runStorm(storm);
    writeFiles(out, [[`storm-${name}.json`, json(report.storm, 2)]]);
    return { storm: report.storm.misses };
  });
  await scenario('fanout', fanout, async () => {
    report.fanout = await runFanout(fanout);
    return { fanout: report.fanout.misses };
  });
  await scenario('work', work, async () => {
    report.work = await runWork(work);
    return { work: report.work.misses };
  });
  await scenario('recovery', recovery, async () => {
    report.recovery = await runRecovery(recovery);
    return { recovery: report.recovery.misses };
  });
  write();
  log(`bench ${name}: done in ${Math.round((Date.now() - started) / 1000)} s`);
  for (const f of new Set([
    ...files,
    ...(report.storm ? [resolve(out, `storm-${name}.json`)] : []),
  ])) {
    console.log(f);
  }
  return conclude(`bench ${name}`, report.verdict!);
}

/** The drain's series (left out of the JSON's runs, drawn in the SVG). */
let drainSeries: DrainResult | undefined;

function writeBench(r: BenchReport, dir: string): string[] {
  const d: DrainResult = drainSeries ?? {
    options: r.options,
    runs: [],
    drain: r.drain,
    skipped: r.skipped,
    failures: r.failures,
  };
  return writeFiles(dir, [
    [`${r.name}.json`, json(r)],
    [`${r.name}.md`, markdown(r, d)],
    [`${r.name}.svg`, drainChart({ ...d, drain: r.drain })],
  ]);
}

function markdown(r: BenchReport, d: DrainResult): string {
  const o = r.options;
  const noise = (key: string): string[] => {
    const v = r.otherCpuPct?.[key];
    if (v === undefined) return [];
    return [
      '',
      `Other processes on the machine used ${v} % of one core on average while this ran` +
        (v > 20 ? ': **a shared machine, figures noisy**.' : '.'),
    ];
  };
  const lines = [
    `# Benchmark: ${r.name}`,
    '',
    `${r.createdAt} · Node ${r.machine.node} · ${r.machine.platform} · ${r.machine.cpus} CPUs ` +
      `(${r.machine.cpuModel}) · ${o.sockets} sockets · ${o.workers} workers · ${o.rounds} round(s) · ` +
      `wsdrain --drain-timeout ${o.drainTimeoutMs} ms` +
      (o.messageEveryMs ? ` · a message per socket every ${o.messageEveryMs} ms` : ''),
    '',
    ...(r.verdict ? verdictSection(r.verdict) : []),
    '',
  ];
  if (r.drain.length)
    lines.push(...drainSection(d), '', `![sockets still open](${r.name}.svg)`, ...noise('drain'));
  const rolls = [r.roll, r.rollDeflate].filter((x): x is RollResult => x !== undefined);
  if (rolls.length) lines.push('', ...rollSection(rolls), ...noise('roll'));
  if (r.healthz) lines.push('', ...healthzSection(r.healthz), ...noise('healthz'));
  if (r.throughput) lines.push('', ...throughputSection(r.throughput), ...noise('throughput'));
  if (r.capacity) lines.push('', ...capacitySection(r.capacity), ...noise('capacity'));
  if (r.deflate) lines.push('', ...deflateSection(r.deflate), ...noise('deflate'));
  if (r.storm) lines.push('', ...stormSection(r.storm), ...noise('storm'));
  if (r.fanout) lines.push('', ...fanoutSection(r.fanout), ...noise('fanout'));
  if (r.work) lines.push('', ...workSection(r.work), ...noise('work'));
  if (r.recovery) lines.push('', ...recoverySection(r.recovery), ...noise('recovery'));
  if (r.scenarioFailures?.length) {
    lines.push(
      '',
      '## Scenarios that failed to run',
      '',
      ...r.scenarioFailures.map((s) => `- ${s}`),
    );
  }
  const changed = Object.entries(r.targets ?? {}).filter(
    ([k, x]) => DEFAULT_TARGETS[k as keyof typeof TARGETS] !== x,
  );
  if (changed.length)
    lines.push(
      '',
      `Targets changed for this run: ${changed.map(([k, x]) => `${k}=${x}`).join(', ')}.`,
    );
  lines.push('');
  return lines.join('\n');
}

async function stormCommand(argv: string[]): Promise<number> {
  const v = parse(argv, STORM_FLAGS);
  const { preset, name, out, reportOnly } = common(v);
  const o = { ...STORM_PRESETS[preset] };
  o.clients = intFlag(v.clients, 'clients', o.clients, 1);
  o.perProcess = intFlag(v['per-process'], 'per-process', o.perProcess, 1);
  o.drainTimeoutMs = intFlag(v['drain-timeout'], 'drain-timeout', o.drainTimeoutMs, 1);
  o.drainWindowMs = intFlag(v['drain-window'], 'drain-window', o.drainWindowMs);
  o.reconnectWindowMs = intFlag(v['reconnect-window'], 'reconnect-window', o.reconnectWindowMs);
  const cases = listFlag<StormPart>(v.scenarios, 'scenarios', STORM_PARTS, [...STORM_PARTS]);
  // Bounded: each run is bounded on its own; this is the backstop (children die on exit).
  const limitMs = preset === 'quick' ? 150_000 : 360_000;
  setTimeout(() => {
    log(`storm: still running after ${limitMs / 1000} s; giving up`);
    process.exit(1);
  }, limitMs).unref();
  log(`storm ${name}: ${JSON.stringify(o)}`);
  const result = await runStorm(o, cases);
  const [file] = writeFiles(out, [[`storm-${name}.json`, json(result, 2)]]);
  log(
    `storm ${name}: peak ratio roll ${result.peakRatio.roll ?? '-'}x, failover ${result.peakRatio.failover ?? '-'}x ` +
      `(busiest second: ${result.peakRatio1s.roll ?? '-'}x, ${result.peakRatio1s.failover ?? '-'}x); ` +
      `accept CPU vs plain ws ${result.accept?.cpuVsWs ?? '-'}x; ` +
      `${Math.round(result.durationMs / 1000)} s`,
  );
  console.log(file);
  return conclude(`storm ${name}`, verdictOf({ storm: result.misses }, reportOnly));
}

async function soakCommand(argv: string[]): Promise<number> {
  const v = parse(argv, { ...COMMON, ...SOAK_FLAGS });
  const { name, out, reportOnly } = common(v);
  const passed = await runSoak(v, {
    quick: v.quick === true,
    name: v.name === undefined ? undefined : name,
    out,
  });
  return conclude(
    'soak',
    verdictOf({ soak: passed ? [] : ['a hard check failed (see above)'] }, reportOnly),
  );
}

function reportCommand(argv: string[]): number {
  const file = argv[0];
  if (!file) throw new FlagError('report: give a results JSON, e.g. bench/results/full.json');
  const r = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
  const d: DrainResult = {
    options: r.options,
    runs: [],
    drain: r.drain,
    skipped: r.skipped ?? [],
    failures: r.failures ?? [],
  };
  const name = basename(file, '.json');
  for (const f of writeFiles(dirname(file), [
    [`${name}.md`, markdown(r, d)],
    [`${name}.svg`, drainChart(d)],
  ])) {
    console.log(f);
  }
  return 0;
}

const [command, ...rest] = process.argv.slice(2);
const commands: Record<string, (argv: string[]) => number | Promise<number>> = {
  soak: soakCommand,
  storm: stormCommand,
  report: reportCommand,
};
const argv = process.argv.slice(2);
if (argv.includes('--help') || argv.includes('-h')) {
  process.stdout.write(HELP);
  process.exit(0);
}
try {
  const status = await (command && commands[command] ? commands[command](rest) : bench(argv));
  process.exit(status);
} catch (err) {
  if (!(err instanceof FlagError)) throw err;
  log(`bench: ${err.message} (see --help)`);
  process.exit(2);
}

export { pct };
