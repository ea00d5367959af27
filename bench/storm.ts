/**
 * Reconnect storm: do paced drains and reconnect hints cut the peak reconnect rate on the
 * servers that stay up? Closing 30k sockets in one second moves 30k reconnects onto the
 * survivors in that same second.
 *
 * Two scenarios (see storm/scenarios.ts), each run twice with the same --drain-timeout:
 * `baseline` (no --drain-window, --reconnect-window 0, clients with `hintJitter: false`) and
 * `paced` (--drain-window and --reconnect-window, clients with their default hint handling):
 *
 * - roll: one wsdrain with 2 workers, SIGHUP (rolling restart, 1012);
 * - failover: wsdrain A and B behind a readiness-polling TCP balancer (storm/lb.ts), SIGTERM A
 *   (1001), its clients move to B.
 *
 * Clients are wsdrain's own reconnecting client (the built dist/client/index.js over `ws`) in
 * separate processes. Figures per run: peak accepts per second on the survivors (largest
 * 100 ms bucket x 10), reconnect handshake latency p50/p99, refusals, close codes, time until
 * every client is connected again; and the ratio baseline peak / paced peak per scenario.
 *
 *   npx tsx bench/storm.ts --quick     # 3000 clients, < 2 min; writes bench/results/storm-quick.json
 *   npx tsx bench/storm.ts             # 8000 clients; writes bench/results/storm-full.json
 *
 * Flags: --clients N  --per-process N  --drain-timeout MS  --drain-window MS
 *   --reconnect-window MS  --scenarios roll,failover  --name NAME
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { missingBuild } from './storm/processes.js';
import {
  type Mode,
  runStormScenario,
  type Scenario,
  type StormOptions,
  type StormRun,
} from './storm/scenarios.js';

export type { StormOptions, StormRun } from './storm/scenarios.js';

export const STORM_PRESETS: Record<'quick' | 'full', StormOptions> = {
  quick: {
    clients: 3000,
    perProcess: 1500,
    concurrency: 100,
    drainTimeoutMs: 5000,
    drainWindowMs: 2000,
    reconnectWindowMs: 2000,
    rollWorkers: 2,
    settleMs: 500,
    graceMs: 5000,
  },
  full: {
    clients: 8000,
    perProcess: 2000,
    concurrency: 100,
    drainTimeoutMs: 5000,
    drainWindowMs: 2000,
    reconnectWindowMs: 2000,
    rollWorkers: 2,
    settleMs: 1000,
    graceMs: 5000,
  },
};

/** The ratio the issue asks for: baseline peak / paced peak. */
export const TARGET_RATIO = 5;

export interface StormResult {
  options: StormOptions;
  roll: { baseline: StormRun | null; paced: StormRun | null };
  failover: { baseline: StormRun | null; paced: StormRun | null };
  /** Baseline peak / paced peak (accepts per second on the survivors, 100 ms buckets). */
  peakRatio: { roll: number | null; failover: number | null };
  /** The same ratio over the survivors' busiest second (accepts in any 1 s window). */
  peakRatio1s: { roll: number | null; failover: number | null };
  /** Per scenario: ratio >= TARGET_RATIO, no more refusals paced than not, both drains within budget. */
  checks: Record<Scenario, { ratio: boolean; refusals: boolean; budget: boolean }>;
  failures: string[];
  durationMs: number;
  /**
   * The machine: cores and 1-minute load average before and after. Every figure depends on
   * the bench having the cores to itself; a load already above ~1 before means someone else
   * was busy.
   */
  host: { cpus: number; loadBefore: number; loadAfter: number };
}

/**
 * Runs the storm: for each scenario, baseline then paced, one after the other (never two
 * servers under test at once). Every process is killed at the end of each run, even on failure.
 */
export async function runStorm(
  options: Partial<StormOptions> = {},
  scenarios: readonly Scenario[] = ['roll', 'failover'],
): Promise<StormResult> {
  const o: StormOptions = { ...STORM_PRESETS.quick, ...options };
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
    durationMs: 0,
    host: { cpus: availableParallelism(), loadBefore: load1(), loadAfter: 0 },
  };
  const missing = missingBuild();
  if (missing) {
    result.failures.push(missing);
    return result;
  }
  if (result.host.loadBefore > 1) {
    process.stderr.write(
      `storm: load average ${result.host.loadBefore} before starting: figures may be skewed by other work on this machine\n`,
    );
  }
  for (const scenario of scenarios) {
    for (const mode of ['baseline', 'paced'] as Mode[]) {
      process.stderr.write(`storm ${scenario} ${mode}: ${o.clients} clients\n`);
      const run = await runStormScenario(scenario, mode, o);
      result[scenario][mode] = run;
      if (run.error) result.failures.push(`${scenario} ${mode}: ${run.error}`);
      process.stderr.write(`storm ${scenario} ${mode}: ${line(run)}\n`);
    }
    const { baseline, paced } = result[scenario];
    const ratio = ratioOf(baseline?.peakPerSec, paced?.peakPerSec);
    result.peakRatio[scenario] = ratio;
    result.peakRatio1s[scenario] = ratioOf(baseline?.peak1sPerSec, paced?.peak1sPerSec);
    result.checks[scenario] = {
      ratio: ratio !== null && ratio >= TARGET_RATIO,
      // "At no cost in refusals": pacing may not add any (the unpaced storm sometimes has some).
      refusals:
        Boolean(baseline && paced && !baseline.error && !paced.error) &&
        paced!.refusals <= baseline!.refusals,
      budget: Boolean(baseline?.withinBudget && paced?.withinBudget),
    };
  }
  result.durationMs = Date.now() - started;
  result.host.loadAfter = load1();
  return result;
}

function load1(): number {
  return Math.round(loadavg()[0]! * 100) / 100;
}

function ratioOf(a: number | null | undefined, b: number | null | undefined): number | null {
  return a && b ? Math.round((a / b) * 100) / 100 : null;
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

/** Writes bench/results/storm-<name>.json; returns its path. */
export function writeStormResult(name: string, result: StormResult): string {
  const dir = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const file = `${dir}storm-${name}.json`;
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  return file;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      name: { type: 'string' },
      clients: { type: 'string' },
      'per-process': { type: 'string' },
      'drain-timeout': { type: 'string' },
      'drain-window': { type: 'string' },
      'reconnect-window': { type: 'string' },
      scenarios: { type: 'string' },
    },
  });
  const preset = values.quick ? 'quick' : 'full';
  const name = values.name ?? preset;
  if (!/^[\w.-]+$/.test(name)) throw new Error(`--name: letters, digits, . _ - only, got ${name}`);
  const o: StormOptions = { ...STORM_PRESETS[preset] };
  const int = (flag: keyof typeof values, key: keyof StormOptions): void => {
    const v = values[flag];
    if (v === undefined) return;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${flag} must be an integer >= 0`);
    o[key] = n;
  };
  int('clients', 'clients');
  int('per-process', 'perProcess');
  int('drain-timeout', 'drainTimeoutMs');
  int('drain-window', 'drainWindowMs');
  int('reconnect-window', 'reconnectWindowMs');
  const scenarios = (values.scenarios ?? 'roll,failover').split(',') as Scenario[];
  if (scenarios.some((s) => s !== 'roll' && s !== 'failover')) {
    throw new Error(`--scenarios: roll and/or failover, got ${values.scenarios}`);
  }
  // Bounded: each run is bounded on its own; this is the backstop (children die on exit).
  const limitMs = preset === 'quick' ? 115_000 : 300_000;
  setTimeout(() => {
    process.stderr.write(`storm: still running after ${limitMs / 1000} s; giving up\n`);
    process.exit(1);
  }, limitMs).unref();

  process.stderr.write(`storm ${name}: ${JSON.stringify(o)}\n`);
  const result = await runStorm(o, scenarios);
  const file = writeStormResult(name, result);
  console.log(JSON.stringify(result, null, 2));
  process.stderr.write(
    `storm ${name}: peak ratio roll ${result.peakRatio.roll ?? '-'}x, failover ${result.peakRatio.failover ?? '-'}x (target >= ${TARGET_RATIO}x; busiest second: ${result.peakRatio1s.roll ?? '-'}x, ${result.peakRatio1s.failover ?? '-'}x); ${JSON.stringify(result.checks)}; ${Math.round(result.durationMs / 1000)} s; wrote ${file}\n`,
  );
  process.exit(result.failures.length > 0 ? 1 : 0);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
