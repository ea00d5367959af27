/**
 * `npm run soak`: wsdrain under a long steady load, two rolling restarts and a drain, watching
 * memory, descriptors, close codes and echoes. Not run in CI.
 *
 *   npm run build && npm run soak                 # 20,000 sockets, 3 minutes
 *   npm run soak -- --quick                       # 2,000 sockets, 1 minute
 *   npm run soak -- --sockets 10000 --minutes 5 --name 10k
 *
 * Every socket sends a small text message every ~2 s and checks its echo; sockets closed by
 * the server are reconnected (after the close reason's retry hint). Phases, from the moment
 * every socket is open (D = --minutes):
 *
 *   steady  D/3 | SIGHUP, wait for "rolling restart done" and every socket back | steady until
 *   2D/3 | SIGHUP, wait | steady until D | SIGTERM, wait for the exit
 *
 * (each steady phase lasts at least 10 s, or D/6 if shorter). Every 2 s: RSS, CPU and open
 * descriptors of the primary and each worker, the TCP connections on the port each holds,
 * the clients' open sockets, echoes/s and echo failures. Writes
 * bench/results/soak-<name>.json and .md (name: quick or full unless --name), the server's
 * log lines to $TMPDIR/wsdrain-soak-<name>.log, and exits 1 when a hard check failed.
 * Everything is bounded in time; every process it started is killed at the end (lib/procs.ts).
 *
 * Flags: --sockets N  --minutes M  --quick  --name S  --workers N (2)  --drain-timeout MS
 *   (10000)  --message-every MS (2000)  --echo-timeout MS (10000)  --per-process N (10000)
 *   --concurrency N (200)  --sample-every MS (2000)  --settle-timeout MS (60000)
 *   --log-level L (info: the roll and drain reports are info lines)  --ignore-hints
 *   (reconnect at once instead of after the hint's delay)  --build (npm run build first)
 *   --cli PATH (another build's cli.js, e.g. of a clean checkout; default dist/cli.js)
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { now, sleep } from './lib/clock.js';
import { SoakClients } from './soak/clients.js';
import { type RollRun, type RunData, writeResults } from './soak/report.js';
import { Sampler } from './soak/sampler.js';
import { freePort, WSDRAIN_CLI, WsdrainProcess } from './soak/server.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    name: { type: 'string' },
    sockets: { type: 'string' },
    minutes: { type: 'string' },
    workers: { type: 'string', default: '2' },
    'drain-timeout': { type: 'string', default: '10000' },
    'message-every': { type: 'string', default: '2000' },
    'echo-timeout': { type: 'string', default: '10000' },
    'per-process': { type: 'string', default: '10000' },
    concurrency: { type: 'string', default: '200' },
    'sample-every': { type: 'string', default: '2000' },
    'settle-timeout': { type: 'string', default: '60000' },
    'log-level': { type: 'string', default: 'info' },
    'ignore-hints': { type: 'boolean', default: false },
    build: { type: 'boolean', default: false },
    cli: { type: 'string' },
  },
});

const num = (flag: keyof typeof values, fallback?: number): number => {
  const raw = values[flag];
  const v = raw === undefined ? fallback : Number(raw);
  if (v === undefined || !Number.isFinite(v) || v <= 0) {
    throw new Error(`--${flag} must be a positive number, got ${String(raw)}`);
  }
  return v;
};

const quick = values.quick === true;
const name = values.name ?? (quick ? 'quick' : 'full');
if (!/^[\w.-]+$/.test(name)) throw new Error(`--name: letters, digits, . _ - only, got ${name}`);
const opts = {
  sockets: Math.round(num('sockets', quick ? 2000 : 20_000)),
  minutes: num('minutes', quick ? 1 : 3),
  workers: Math.round(num('workers')),
  drainTimeoutMs: Math.round(num('drain-timeout')),
  messageEveryMs: Math.round(num('message-every')),
  echoTimeoutMs: Math.round(num('echo-timeout')),
  perProcess: Math.round(num('per-process')),
  concurrency: Math.round(num('concurrency')),
  sampleEveryMs: Math.round(num('sample-every')),
  settleTimeoutMs: Math.round(num('settle-timeout')),
  logLevel: values['log-level']!,
  ignoreHints: values['ignore-hints'] === true,
};
const durationMs = opts.minutes * 60_000;
const third = durationMs / 3;
const minSteadyMs = Math.min(10_000, third / 2);
const connectTimeoutMs = 60_000 + opts.sockets * 5;

const log = (line: string): void => {
  process.stderr.write(`soak ${name}: ${line}\n`);
};

// --- build, or at least say when dist/ looks older than src/ ------------------------------

const cli = resolve(values.cli ?? WSDRAIN_CLI);
if (values.build) {
  log('npm run build');
  execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
}
const newest = (dir: string): number =>
  readdirSync(dir, { withFileTypes: true }).reduce((m, e) => {
    const p = join(dir, e.name);
    return Math.max(m, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }, 0);
let distAt: number;
try {
  distAt = statSync(cli).mtimeMs;
} catch {
  throw new Error(`${cli} does not exist: run \`npm run build\` (or pass --build)`);
}
const distStale = values.cli === undefined && newest(join(ROOT, 'src')) > distAt;
if (distStale) {
  log('warning: src/ has files newer than dist/cli.js; run `npm run build` or pass --build');
}
const git = (...args: string[]): string => {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
};

// --- the run --------------------------------------------------------------------------------

const data: RunData = {
  name,
  startedAt: now(),
  options: { ...opts, quick, durationMs },
  env: {
    node: process.version,
    cpus: availableParallelism(),
    cli,
    // The checkout's commit and state describe the server only when it runs this dist/.
    commit: values.cli === undefined ? git('rev-parse', '--short', 'HEAD') : `(--cli ${cli})`,
    srcDirty: values.cli === undefined && git('status', '--porcelain', '--', 'src') !== '',
    distStale,
  },
  phases: [],
  rolls: [],
  samples: [],
};
let server: WsdrainProcess | undefined;
let clients: SoakClients | undefined;
let sampler: Sampler | undefined;
let finished = false;

const phase = (label: string, final = false): void => {
  const t = Math.round((now() - data.startedAt) / 100) / 10;
  const last = data.phases.at(-1);
  if (last) last.end = t;
  data.phases.push({ name: label, start: t });
  if (sampler) sampler.phase = label;
  clients?.label(label, final);
  log(`${label} (t=${t} s)`);
};

/** Throws when the server or a client process died. */
const alive = (): void => {
  if (server?.exitAt !== undefined) {
    throw new Error(
      `the server exited (${server.exitCode ?? server.exitSignal}) during ${sampler?.phase}: ${server.stderr.slice(-500)}`,
    );
  }
  const dead = clients?.dead();
  if (dead) throw new Error(dead);
};

const waitUntil = async (at: number): Promise<void> => {
  while (now() < at) {
    alive();
    await sleep(Math.min(200, Math.max(1, at - now())));
  }
};

const printSample = (): void => {
  const s = sampler?.samples.at(-1);
  if (!s) return;
  const w = s.workers.map((x) => `${x.pid}:${x.conns}s/${x.rssMiB}M/+${x.overhead}fd`).join(' ');
  const c = s.clients;
  log(
    `  t=${s.t} ${s.phase} rss ${s.serverRssMiB} MiB [primary ${s.primary?.rssMiB ?? '-'}M; ${w}] clients ${c?.open ?? '-'} open, ${c?.echoesPerSec ?? '-'} echo/s, p99 ${c?.rttP99Ms ?? '-'} ms, failures ${c?.echoFailures ?? '-'}`,
  );
};

async function roll(k: number, expected: number): Promise<void> {
  const r: RollRun = { k, label: `roll${k}`, hupAt: 0, oldPids: sampler!.workers() };
  data.rolls.push(r);
  phase(r.label);
  r.hupAt = now();
  server!.signal('SIGHUP');
  const deadline = r.hupAt + opts.settleTimeoutMs;
  while (now() < deadline) {
    alive();
    if (r.rollDoneAt === undefined) {
      const done = server!.rollsDone.find((x) => x.at >= r.hupAt);
      const pids = sampler!.workers();
      if (done) {
        r.rollDoneAt = done.at;
        r.rollDoneVia = 'log';
        r.newPids = done.pids;
      } else if (pids.length >= opts.workers && pids.every((p) => !r.oldPids.includes(p))) {
        r.rollDoneAt = now();
        r.rollDoneVia = 'pids';
        r.newPids = pids;
      }
    }
    const st = clients!.stats();
    if (
      r.rollDoneAt !== undefined &&
      st &&
      st.at > r.rollDoneAt &&
      st.open >= expected &&
      st.reconnecting === 0
    ) {
      r.settledAt = now();
      log(
        `roll ${k}: done after ${Math.round(r.rollDoneAt - r.hupAt)} ms (${r.rollDoneVia}), every socket back after ${Math.round(st.lastReopenAt - r.hupAt)} ms; ${st.closes} closes, ${st.refusals} refused attempts`,
      );
      return;
    }
    await sleep(50);
  }
  const st = clients!.stats();
  r.error = `not settled within ${opts.settleTimeoutMs} ms: roll ${r.rollDoneAt === undefined ? 'not done' : 'done'}, ${st?.open} of ${expected} sockets open, ${st?.reconnecting} reconnecting`;
  log(`roll ${k}: ${r.error}`);
}

async function run(): Promise<void> {
  log(`${JSON.stringify(opts)}`);
  const port = await freePort();
  data.serverLog = join(tmpdir(), `wsdrain-soak-${name}.log`);
  server = new WsdrainProcess({
    cli,
    port,
    workers: opts.workers,
    drainTimeoutMs: opts.drainTimeoutMs,
    logLevel: opts.logLevel,
    logFile: data.serverLog,
  });
  await server.ready();
  clients = new SoakClients({
    url: `ws://127.0.0.1:${port}`,
    sockets: opts.sockets,
    perProcess: Math.min(opts.perProcess, opts.sockets),
    concurrency: opts.concurrency,
    messageEveryMs: opts.messageEveryMs,
    echoTimeoutMs: opts.echoTimeoutMs,
    ignoreHints: opts.ignoreHints,
    connectTimeoutMs,
  });
  sampler = new Sampler(server.pid, port, clients, data.startedAt);
  data.samples = sampler.samples;
  data.rttByPhase = sampler.rttByPhase;
  phase('connect');
  sampler.start(opts.sampleEveryMs);
  const printer = setInterval(printSample, 10_000);
  try {
    const t0 = now();
    const { connected, failed } = await clients.connect();
    const connectedAt = now();
    data.connect = {
      requested: opts.sockets,
      connected,
      failed,
      ms: Math.round(connectedAt - t0),
    };
    log(`${connected} sockets open in ${data.connect.ms} ms (${failed} failed)`);
    phase('steady1');

    await waitUntil(connectedAt + third);
    await roll(1, connected);
    const settled1 = now();
    phase('steady2');

    await waitUntil(Math.max(connectedAt + 2 * third, settled1 + minSteadyMs));
    await roll(2, connected);
    const settled2 = now();
    phase('steady3');

    await waitUntil(Math.max(connectedAt + durationMs, settled2 + minSteadyMs));
    phase('drain', true);
    const termAt = now();
    data.drain = { termAt, exitCode: null, exitSignal: null };
    server.signal('SIGTERM');
    const exited = await server.waitExit(opts.drainTimeoutMs + 5000);
    sampler.sample();
    data.drain.exitAt = server.exitAt;
    data.drain.exitCode = server.exitCode;
    data.drain.exitSignal = server.exitSignal;
    if (!exited) log(`the server did not exit within ${opts.drainTimeoutMs + 5000} ms`);
    data.drain.clientsClosedAt = await clients.waitAllClosed(exited ? 5000 : 1000);
    log(
      `exit ${server.exitCode ?? server.exitSignal} after ${server.exitAt === undefined ? '-' : Math.round(server.exitAt - termAt)} ms`,
    );
  } finally {
    clearInterval(printer);
    sampler.stop();
  }
}

async function collectAndWrite(): Promise<boolean> {
  if (finished) return false;
  finished = true;
  sampler?.stop();
  if (clients) {
    try {
      data.clients = await Promise.race([clients.results(), sleep(15_000).then(() => undefined)]);
    } catch (err) {
      log(`client results: ${(err as Error).message}`);
    }
    await clients.stop();
  }
  if (server) {
    if (server.exitAt === undefined) server.kill();
    data.server = {
      rollsDone: server.rollsDone,
      rolledWorkers: server.rolledWorkers,
      finalReport: server.finalReport,
      warnings: server.warnings,
      stderr: server.stderr,
    };
  }
  const last = data.phases.at(-1);
  if (last && last.end === undefined) last.end = Math.round((now() - data.startedAt) / 100) / 10;
  const { files, analysis } = writeResults(data);
  for (const c of analysis.checks) {
    if (!c.ok) log(`${c.hard ? 'FAIL' : 'warn'}: ${c.name}: ${c.detail}`);
  }
  log(`${analysis.passed ? 'PASS' : 'FAIL'} in ${Math.round((now() - data.startedAt) / 1000)} s`);
  if (data.serverLog) log(`server log: ${data.serverLog}`);
  for (const file of files) console.log(file);
  return analysis.passed;
}

// Everything is bounded: connect, the phases, two rolls that must settle, the drain, margin.
const watchdogMs =
  connectTimeoutMs +
  durationMs +
  2 * (opts.settleTimeoutMs + minSteadyMs) +
  opts.drainTimeoutMs +
  60_000;
const watchdog = setTimeout(() => {
  data.error = `watchdog: still running after ${Math.round(watchdogMs / 1000)} s`;
  log(data.error);
  const hard = setTimeout(() => process.exit(1), 30_000);
  hard.unref();
  collectAndWrite().finally(() => process.exit(1));
}, watchdogMs);
watchdog.unref();

let passed = false;
try {
  await run();
} catch (err) {
  data.error = (err as Error).message;
  log(`error: ${data.error}`);
}
passed = await collectAndWrite();
clearTimeout(watchdog);
process.exit(passed ? 0 : 1);
