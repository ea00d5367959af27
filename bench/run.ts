/**
 * `npm run bench` (full) and `npm run bench -- --quick` (a few minutes). Any drain flag
 * overrides the preset, e.g. `npm run bench -- --quick --strategies terminate,ws-close
 * --stalled 0`; `--name` picks the results file name (default: quick or full).
 *
 * Flags (drain.ts): --strategies a,b  --sockets N  --workers N  --stalled 0,0.1  --rounds N
 *   --drain-timeout MS  --message-every MS  --per-process N  --concurrency N  --grace MS
 */
import { parseArgs } from 'node:util';
import {
  DRAIN_DEFAULTS,
  DRAIN_FLAGS,
  type DrainOptions,
  parseDrainFlags,
  runDrain,
} from './drain.js';
import './lib/procs.js'; // kill every child process on exit, whatever happens
import { buildReport, writeReport } from './report.js';

const PRESETS: Record<'quick' | 'full', DrainOptions> = {
  quick: { ...DRAIN_DEFAULTS, sockets: 4000, workers: 2, rounds: 1, stalled: [0, 0.1] },
  full: { ...DRAIN_DEFAULTS, sockets: 12_000, workers: 2, rounds: 3, stalled: [0, 0.1] },
};

const { values } = parseArgs({
  options: { ...DRAIN_FLAGS, quick: { type: 'boolean' }, name: { type: 'string' } },
});
const preset = values.quick ? 'quick' : 'full';
const name = values.name ?? preset;
if (!/^[\w.-]+$/.test(name)) throw new Error(`--name: letters, digits, . _ - only, got ${name}`);

const options = parseDrainFlags(values, PRESETS[preset]);
const started = Date.now();
process.stderr.write(`bench ${name}: ${JSON.stringify(options)}\n`);
const result = await runDrain(options);
const files = writeReport(buildReport(name, result));
process.stderr.write(`bench ${name}: done in ${Math.round((Date.now() - started) / 1000)} s\n`);
for (const f of files) console.log(f);
process.exit(result.failures.length > 0 ? 1 : 0);
