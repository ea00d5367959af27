/**
 * `npm run bench` (full) and `npm run bench -- --quick` (under 5 minutes). Scenarios, one file
 * each: drain (drain.ts), roll (roll.ts), healthz (healthz.ts), throughput (throughput.ts) and
 * capacity (capacity.ts: full run only, or `--capacity`) and the reconnect storm (storm.ts). All
 * write into one results file, bench/results/<name>.json / .md / .svg (report.ts); `--name` picks
 * it (default: quick or full). The storm also writes storm-<name>.json.
 *
 *   npm run bench -- --quick                              # drain, roll, healthz, throughput
 *   npm run bench -- --quick --capacity                   # ... and capacity
 *   npm run bench -- --quick --scenarios roll,throughput --name try
 *
 * Drain flags (drain.ts) override its preset, e.g. `--strategies terminate,ws-close --stalled 0`:
 *   --strategies a,b  --sockets N  --workers N  --stalled 0,0.1  --rounds N
 *   --drain-timeout MS  --message-every MS  --per-process N  --concurrency N  --grace MS
 * Other scenarios:
 *   --scenarios a,b          which scenarios (drain, roll, healthz, throughput, capacity, storm)
 *   --roll-clients N         --healthz-sockets N      --capacity-sockets N  --storm-clients N
 *   --throughput-windows 1,16  --throughput-connections N  --throughput-duration S
 *   --throughput-rounds N
 * Profiling: BENCH_SERVER_NODE_ARGS (wsdrain's node, inherited by its workers) and
 * BENCH_CLIENT_NODE_ARGS (load-generator clients), e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
 */
import { parseArgs } from 'node:util';
import { CAPACITY_DEFAULTS, type CapacityOptions, runCapacity } from './capacity.js';
import {
  DRAIN_DEFAULTS,
  DRAIN_FLAGS,
  type DrainOptions,
  type DrainResult,
  parseDrainFlags,
  runDrain,
} from './drain.js';
import { HEALTHZ_PRESETS, type HealthzOptions, runHealthz } from './healthz.js';
import { log } from './lib/log.js';
import { ForeignCpu } from './lib/procfs.js';
import { buildReport, type ScenarioResults, writeReport } from './report.js';
import { ROLL_PRESETS, type RollOptions, runRoll } from './roll.js';
import { runStorm, STORM_PRESETS, type StormOptions, writeStormResult } from './storm.js';
import { runThroughput, THROUGHPUT_PRESETS, type ThroughputOptions } from './throughput.js';

const PRESETS: Record<'quick' | 'full', DrainOptions> = {
  quick: { ...DRAIN_DEFAULTS, sockets: 4000, workers: 2, rounds: 1, stalled: [0, 0.1] },
  full: { ...DRAIN_DEFAULTS, sockets: 12_000, workers: 2, rounds: 3, stalled: [0, 0.1] },
};

const SCENARIOS = ['drain', 'roll', 'healthz', 'throughput', 'capacity', 'storm'] as const;
type Scenario = (typeof SCENARIOS)[number];

const { values } = parseArgs({
  options: {
    ...DRAIN_FLAGS,
    quick: { type: 'boolean' },
    name: { type: 'string' },
    scenarios: { type: 'string' },
    capacity: { type: 'boolean' },
    'roll-clients': { type: 'string' },
    'healthz-sockets': { type: 'string' },
    'capacity-sockets': { type: 'string' },
    'storm-clients': { type: 'string' },
    'throughput-windows': { type: 'string' },
    'throughput-connections': { type: 'string' },
    'throughput-duration': { type: 'string' },
    'throughput-rounds': { type: 'string' },
  },
});
const preset = values.quick ? 'quick' : 'full';
const name = values.name ?? preset;
if (!/^[\w.-]+$/.test(name)) throw new Error(`--name: letters, digits, . _ - only, got ${name}`);

const int = (flag: keyof typeof values, d: number, min = 1): number => {
  const s = values[flag];
  if (typeof s !== 'string') return d;
  const v = Number(s);
  if (!Number.isInteger(v) || v < min) throw new Error(`--${flag} must be an integer >= ${min}`);
  return v;
};

const selected = new Set<Scenario>(
  values.scenarios
    ? values.scenarios.split(',').map((s) => {
        if (!(SCENARIOS as readonly string[]).includes(s)) {
          throw new Error(`--scenarios: unknown ${s} (known: ${SCENARIOS.join(', ')})`);
        }
        return s as Scenario;
      })
    : SCENARIOS.filter((s) => s !== 'capacity' || preset === 'full' || values.capacity),
);
if (values.capacity) selected.add('capacity');

const drainOptions = parseDrainFlags(values, PRESETS[preset]);
const rollOptions: RollOptions = {
  ...ROLL_PRESETS[preset],
  clients: int('roll-clients', ROLL_PRESETS[preset].clients),
};
const healthzOptions: HealthzOptions = {
  ...HEALTHZ_PRESETS[preset],
  sockets: int('healthz-sockets', HEALTHZ_PRESETS[preset].sockets),
};
const tp = THROUGHPUT_PRESETS[preset];
const throughputOptions: ThroughputOptions = {
  ...tp,
  windows: values['throughput-windows']?.split(',').map(Number) ?? tp.windows,
  connections: int('throughput-connections', tp.connections),
  durationS: int('throughput-duration', tp.durationS),
  rounds: int('throughput-rounds', tp.rounds),
};
if (throughputOptions.windows.some((w) => !Number.isInteger(w) || w < 1)) {
  throw new Error('--throughput-windows: positive integers, e.g. 1,16');
}
const capacityOptions: CapacityOptions = {
  ...CAPACITY_DEFAULTS,
  sockets: int('capacity-sockets', CAPACITY_DEFAULTS.sockets),
};
const stormOptions: StormOptions = {
  ...STORM_PRESETS[preset],
  clients: int('storm-clients', STORM_PRESETS[preset].clients),
};

const started = Date.now();
log(`bench ${name}: scenarios ${[...selected].join(', ')}`);
let drain: DrainResult = {
  options: drainOptions,
  runs: [],
  drain: [],
  skipped: ['drain scenario not selected'],
  failures: [],
};
const otherCpuPct: Record<string, number> = {};
if (selected.has('drain')) {
  log(`bench ${name} drain: ${JSON.stringify(drainOptions)}`);
  const foreign = new ForeignCpu();
  foreign.start();
  drain = await runDrain(drainOptions);
  otherCpuPct.drain = foreign.stop();
}
const scenarios: ScenarioResults = { scenarioFailures: [], otherCpuPct };
let files = writeReport(buildReport(name, drain, scenarios));

async function scenario<T>(
  key: Exclude<Scenario, 'drain'>,
  options: object,
  run: () => Promise<T>,
): Promise<void> {
  if (!selected.has(key)) return;
  log(`bench ${name} ${key}: ${JSON.stringify(options)}`);
  const t = Date.now();
  const foreign = new ForeignCpu();
  foreign.start();
  try {
    (scenarios as Record<string, unknown>)[key] = await run();
  } catch (err) {
    const message = `${key}: ${(err as Error).message}`;
    scenarios.scenarioFailures!.push(message);
    log(`FAILED ${message}`);
  }
  otherCpuPct[key] = foreign.stop();
  log(
    `bench ${name} ${key}: ${Math.round((Date.now() - t) / 1000)} s; other processes used ` +
      `${otherCpuPct[key]} % of one core meanwhile` +
      (otherCpuPct[key] > 20 ? ' (shared machine: figures noisy)' : ''),
  );
  files = writeReport(buildReport(name, drain, scenarios)); // keep what we have so far
}

await scenario('roll', rollOptions, () => runRoll(rollOptions));
await scenario('healthz', healthzOptions, () => runHealthz(healthzOptions));
await scenario('throughput', throughputOptions, () => runThroughput(throughputOptions));
await scenario('capacity', capacityOptions, () => runCapacity(capacityOptions));
// The reconnect storm, with and without pacing and hints: in <name>.json / .md, and in its own
// file, storm-<name>.json.
const stormFiles: string[] = [];
await scenario('storm', stormOptions, async () => {
  const storm = await runStorm(stormOptions);
  stormFiles.push(writeStormResult(name, storm));
  scenarios.storm = storm; // reported even when it failed
  if (storm.failures.length > 0) throw new Error(storm.failures.join('; '));
  return storm;
});

log(`bench ${name}: done in ${Math.round((Date.now() - started) / 1000)} s`);
for (const f of [...files, ...stormFiles]) console.log(f);
const failed = drain.failures.length + (scenarios.scenarioFailures?.length ?? 0);
process.exit(failed > 0 ? 1 : 0);
