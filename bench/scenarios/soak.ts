/**
 * Soak (`npm run soak`, not run in CI): wsdrain under a long steady load, two rolling
 * restarts and a drain, watching memory, descriptors, close codes, echoes and publications.
 *
 *   npm run soak                                  # 20,000 sockets, 3 minutes
 *   npm run soak -- --quick                       # 2,000 sockets, 1 minute
 *   npm run soak -- --sockets 10000 --minutes 5 --name 10k
 *   npm run soak -- --quick --no-topics           # echoes only, no app
 *
 * The server runs the bench's app (baselines/fanout-app.mjs). A share of the sockets
 * (--topic-share, 0.5) are wsdrain.v1 subscribers, wsdrain/client's WsdrainClient each with
 * one subscription to one of --topics (8) topics, recovering `since` the last publication it
 * handled after every reconnect; a publisher (a client process of its own, reconnecting at
 * once) publishes --publish-rate (20) a second in all to those topics, round robin, from the
 * first steady phase to the end of the last. The other sockets send a small text message
 * every ~2 s and check its echo; sockets closed by the server are reconnected (after the close
 * reason's retry hint). --no-topics: every socket echoes, no app. Phases, from the moment
 * every socket is open (D = --minutes):
 *
 *   steady  D/3 | SIGHUP, wait for "rolling restart done" and every socket back | steady until
 *   2D/3 | SIGHUP, wait | steady until D | SIGTERM, wait for the exit
 *
 * (each steady phase lasts at least 10 s, or D/6 if shorter; a roll is settled once every
 * socket was closed and is open again and every subscriber resubscribed and caught up; before
 * the drain the publisher stops and the last deliveries arrive). Every 2 s: RSS, CPU and open
 * descriptors of the primary and each worker, the TCP connections on the port each holds,
 * the clients' open sockets, echoes/s, deliveries/s and echo failures (lib/sampler.ts).
 *
 * Hard checks: every socket connected; no 1006; only 1012 on rolls and 1001 on the drain;
 * each roll settled; what the clients sent and had no answer to at a 1012 or 1001 (echoes,
 * publications, subscriptions) is what the server counted late; no echo mismatched, timed
 * out or lost; exit 0 within --drain-timeout; with topics, every subscriber handled every
 * publication of its topic from its start to the topic's last exactly once, in order, across
 * both rolls, the server sent none twice and skipped none, every resubscription was
 * recovered (the recovery scenario's topicProblems), and the publisher got no error. Soft
 * (warnings): RSS after each roll near the baseline, descriptors flat, no refused reconnect,
 * the machine to itself. Writes
 * soak-<name>.json and .md (name: quick or full unless --name), the server's output to
 * $TMPDIR/wsdrain-soak-<name>.log; a failed hard check makes the exit status 1 (unless
 * --report-only). The server's final drain report comes from its --report file, whatever the
 * log level; the rolls' reports are info lines, and their check fails when they are missing.
 * Everything is bounded in time; every process it started is killed at the end.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Crowd, type CrowdResults, Crowds, type PhaseResults } from '../crowd/index.js';
import { log as logLine, now, ROOT, sleep } from '../lib/proc.js';
import { json, writeFiles } from '../lib/report.js';
import { type ProcSample, type Sample, Sampler } from '../lib/sampler.js';
import { FANOUT_APP, type Report, Server, WSDRAIN_CLI } from '../lib/server.js';
import { addCounts, percentile, quantile, round1, sum, tallyQuantile } from '../lib/stats.js';
import { quiet, topicProblems } from './recovery.js';

/** parseArgs options of the soak (with run.ts's --quick, --name, --out, --report-only). */
export const SOAK_FLAGS = {
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
  'no-topics': { type: 'boolean', default: false },
  topics: { type: 'string', default: '8' },
  'topic-share': { type: 'string', default: '0.5' },
  'publish-rate': { type: 'string', default: '20' },
} as const;

/** Bytes of data in a publication. */
const PUBLICATION_SIZE = 64;

type Values = { [K in keyof typeof SOAK_FLAGS]?: string | boolean };

/** What the soak recorded under one phase label, with epoch times. */
type LabelResults = PhaseResults & {
  firstCloseAt: number;
  lastCloseAt: number;
  lastReopenAt: number;
};
type ClientResults = Omit<CrowdResults, 'phases'> & { labels: Record<string, LabelResults> };

interface RollRun {
  k: number;
  label: string;
  /** Epoch ms of the SIGHUP. */
  hupAt: number;
  oldPids: number[];
  rollDoneAt?: number;
  /** How the end of the roll was seen: the primary's log line, or the worker pids. */
  rollDoneVia?: 'log' | 'pids';
  settledAt?: number;
  newPids?: number[];
  error?: string;
}

interface RunData {
  name: string;
  startedAt: number;
  options: Record<string, unknown>;
  env: Record<string, unknown>;
  connect?: { requested: number; connected: number; failed: number; ms: number };
  /** Phase boundaries, seconds since the start. */
  phases: { name: string; start: number; end?: number }[];
  rolls: RollRun[];
  drain?: {
    termAt: number;
    exitAt?: number;
    exitCode: number | null;
    exitSignal: string | null;
    clientsClosedAt?: number;
  };
  server?: {
    rollsDone: Server['log']['rollsDone'];
    rolledWorkers: Server['log']['rolled'];
    finalReport: Report | undefined;
    warnings: string[];
    stderr: string;
  };
  clients?: ClientResults;
  samples: Sample[];
  /** Echo round trips by phase (stats.ts histogram). */
  rttByPhase?: Record<string, number[]>;
  /** Where the server's log lines were written. */
  serverLog?: string;
  /** Topics mode: the subscribers that connected, and what the publisher sent. */
  topics?: {
    subscribers: number;
    publisherConnected: boolean;
    published?: { sent: number; skipped: number; firstAt: number; lastAt: number };
    /** Stop of the publisher -> the last deliveries arrived, ms. */
    quietMs?: number;
  };
  error?: string;
}

/** Runs the soak; resolves with whether every hard check passed. */
export async function runSoak(
  values: Values,
  common: { quick: boolean; name: string | undefined; out: string },
): Promise<boolean> {
  const num = (flag: keyof Values, fallback?: number): number => {
    const raw = values[flag];
    const v = raw === undefined ? fallback : Number(raw);
    if (v === undefined || !Number.isFinite(v) || v <= 0) {
      throw new Error(`--${flag} must be a positive number, got ${String(raw)}`);
    }
    return Math.round(v * 1000) / 1000;
  };
  const { quick } = common;
  const name = common.name ?? (quick ? 'quick' : 'full');
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
    logLevel: String(values['log-level']),
    ignoreHints: values['ignore-hints'] === true,
    topicsOn: values['no-topics'] !== true,
    topics: Math.round(num('topics')),
    topicShare: num('topic-share'),
    publishRate: num('publish-rate'),
    subscribers: 0,
    echoSockets: 0,
    historySize: 0,
  };
  if (opts.topicsOn) {
    if (opts.topicShare >= 1) throw new Error('--topic-share must be below 1 (some sockets echo)');
    opts.subscribers = Math.round(opts.sockets * opts.topicShare);
    if (opts.subscribers < opts.topics || opts.subscribers >= opts.sockets) {
      throw new Error(
        `--topic-share ${opts.topicShare} of ${opts.sockets} sockets gives ${opts.subscribers} subscribers: at least one per topic (--topics ${opts.topics}), and some sockets left to echo`,
      );
    }
    // History for two minutes away at each topic's rate (a roll's gap is a few seconds).
    opts.historySize = Math.max(1000, Math.ceil((opts.publishRate / opts.topics) * 120));
  }
  opts.echoSockets = opts.sockets - opts.subscribers;
  const durationMs = opts.minutes * 60_000;
  const third = durationMs / 3;
  const minSteadyMs = Math.min(10_000, third / 2);
  const connectTimeoutMs = 60_000 + opts.sockets * 5;
  const log = (line: string): void => logLine(`soak ${name}: ${line}`);

  // --- build, or at least say when dist/ looks older than src/ ----------------------------
  const cli = resolve(typeof values.cli === 'string' ? values.cli : WSDRAIN_CLI);
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
  if (distStale) log('warning: src/ has files newer than dist/cli.js; run `npm run build`');
  const git = (...args: string[]): string => {
    try {
      return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
    } catch {
      return '';
    }
  };

  // --- the run ----------------------------------------------------------------------------
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
  const reportFile = join(tmpdir(), `wsdrain-soak-${name}-report.json`);
  /** Time zero of each phase of the clients (epoch ms). */
  const phaseAt: Record<string, number> = {};
  let server: Server | undefined;
  let clients: Crowds | undefined;
  let sampler: Sampler | undefined;
  let finished = false;

  const phase = (label: string, final = false): number => {
    const at = clients?.phase(label, final) ?? now();
    phaseAt[label] = at;
    const t = Math.round((at - data.startedAt) / 100) / 10;
    const last = data.phases.at(-1);
    if (last) last.end = t;
    data.phases.push({ name: label, start: t });
    if (sampler) sampler.phase = label;
    log(`${label} (t=${t} s)`);
    return at;
  };

  /** Throws when the server or a client process died. */
  const alive = (): void => {
    if (server?.exitAt !== undefined) {
      throw new Error(
        `the server exited (${server.exitStatus}) during ${sampler?.phase}: ${server.output.slice(-500)}`,
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
    const topics = opts.topicsOn ? `, ${c?.deliveriesPerSec ?? '-'} deliveries/s` : '';
    log(
      `  t=${s.t} ${s.phase} rss ${s.serverRssMiB} MiB [primary ${s.primary?.rssMiB ?? '-'}M; ${w}] clients ${c?.open ?? '-'} open, ${c?.echoesPerSec ?? '-'} echo/s, p99 ${c?.rttP99Ms ?? '-'} ms, failures ${c?.echoFailures ?? '-'}${topics}`,
    );
  };

  /** Subscribers and the publisher ready again after a roll (status `subscribed`). */
  let subscribedExpected = 0;
  const roll = async (k: number, expected: number): Promise<void> => {
    const r: RollRun = { k, label: `roll${k}`, hupAt: 0, oldPids: sampler!.workers() };
    data.rolls.push(r);
    r.hupAt = phase(r.label);
    server!.signal('SIGHUP');
    const deadline = r.hupAt + opts.settleTimeoutMs;
    while (now() < deadline) {
      alive();
      if (r.rollDoneAt === undefined) {
        const done = server!.log.rollsDone.find((x) => x.at >= r.hupAt);
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
      const st = clients!.status();
      if (
        r.rollDoneAt !== undefined &&
        st &&
        st.at > r.rollDoneAt &&
        st.open >= expected &&
        st.closes >= expected && // every socket was moved (clients may see it after the log line)
        st.reconnecting === 0 &&
        st.subscribed >= subscribedExpected && // every subscriber resubscribed ...
        st.replaying === 0 // ... and caught up
      ) {
        r.settledAt = now();
        const back = st.lastReopenAt === null ? '-' : Math.round(st.lastReopenAt - r.hupAt);
        log(
          `roll ${k}: done after ${Math.round(r.rollDoneAt - r.hupAt)} ms (${r.rollDoneVia}), every socket back after ${back} ms; ${st.closes} closes, ${st.refusals} refused attempts`,
        );
        return;
      }
      await sleep(50);
    }
    const st = clients!.status();
    r.error = `not settled within ${opts.settleTimeoutMs} ms: roll ${r.rollDoneAt === undefined ? 'not done' : 'done'}, ${st?.open} of ${expected} sockets open, ${st?.reconnecting} reconnecting${opts.topicsOn ? `, ${st?.subscribed} of ${subscribedExpected} subscribed, ${st?.replaying} replaying` : ''}`;
    log(`roll ${k}: ${r.error}`);
  };

  const run = async (): Promise<void> => {
    log(`${JSON.stringify(opts)}`);
    data.serverLog = join(tmpdir(), `wsdrain-soak-${name}.log`);
    server = await Server.wsdrain({
      cli,
      workers: opts.workers,
      drainTimeoutMs: opts.drainTimeoutMs,
      logLevel: opts.logLevel,
      logFile: data.serverLog,
      flags: [
        ...['--report', reportFile],
        ...(opts.topicsOn ? ['--app', FANOUT_APP, '--history-size', opts.historySize] : []),
      ],
    });
    await server.ready();
    const url = `ws://127.0.0.1:${server.port}`;
    const echo = new Crowd({
      url,
      perProcess: Math.min(opts.perProcess, opts.echoSockets),
      concurrency: opts.concurrency,
      messageEveryMs: opts.messageEveryMs,
      echoTimeoutMs: opts.echoTimeoutMs,
      reconnect: opts.ignoreHints ? 'now' : 'hint',
      retryDelayMs: 100,
      connectTimeoutMs,
    });
    // Topics: subscribers on `soak-<k mod topics>`, recovering after every reconnect (they
    // follow the hints whatever --ignore-hints says), and a publisher to those topics.
    const fanout = { dialect: 'wsdrain.v1', topic: 'soak-{i}', topics: opts.topics } as const;
    const subs = opts.topicsOn
      ? new Crowd({
          url,
          client: 'wsdrain',
          statusEveryMs: 100, // quiet() before the drain watches the deliveries move
          perProcess: Math.min(opts.perProcess, opts.subscribers),
          concurrency: opts.concurrency,
          echoTimeoutMs: opts.echoTimeoutMs,
          connectTimeoutMs,
          fanout: { ...fanout, role: 'subscribe', maxPublications: 0 },
        })
      : undefined;
    const pub = opts.topicsOn
      ? new Crowd({
          url,
          path: '/?role=publisher',
          perProcess: 1,
          reconnect: 'now',
          retryDelayMs: 100,
          echoTimeoutMs: opts.echoTimeoutMs,
          fanout: { ...fanout, role: 'publish', maxPublications: 0 },
        })
      : undefined;
    clients = new Crowds([echo, subs, pub].filter((c): c is Crowd => c !== undefined));
    sampler = new Sampler(server.pid, server.port, clients, data.startedAt);
    data.samples = sampler.samples;
    data.rttByPhase = sampler.rttByPhase;
    phase('connect');
    sampler.start(opts.sampleEveryMs);
    const printer = setInterval(printSample, 10_000);
    try {
      const t0 = now();
      const [echoed, subscribed] = await Promise.all([
        echo.connect(opts.echoSockets),
        subs?.connect(opts.subscribers) ?? 0,
      ]);
      const publisher = pub ? (await pub.connect(1)) === 1 : false;
      const connected = echoed + subscribed;
      const connectedAt = now();
      const failed = opts.sockets - connected;
      data.connect = {
        requested: opts.sockets,
        connected,
        failed,
        ms: Math.round(connectedAt - t0),
      };
      log(`${connected} sockets open in ${data.connect.ms} ms (${failed} failed)`);
      if (pub) {
        data.topics = { subscribers: subscribed, publisherConnected: publisher };
        log(
          `${subscribed} subscribers on ${opts.topics} topics; publisher connected: ${publisher}`,
        );
        if (!publisher) throw new Error('the publisher could not connect');
      }
      // Every socket, the publisher's too, is closed by each roll and must come back.
      const expected = connected + (publisher ? 1 : 0);
      subscribedExpected = subscribed + (publisher ? 1 : 0);
      phase('steady1');
      const publishing = pub
        ?.publish(0, 1e9, opts.publishRate, PUBLICATION_SIZE)
        .catch((err: Error) => log(`publisher: ${err.message}`));

      await waitUntil(connectedAt + third);
      await roll(1, expected);
      const settled1 = now();
      phase('steady2');

      await waitUntil(Math.max(connectedAt + 2 * third, settled1 + minSteadyMs));
      await roll(2, expected);
      const settled2 = now();
      phase('steady3');

      await waitUntil(Math.max(connectedAt + durationMs, settled2 + minSteadyMs));
      if (pub && data.topics) {
        // The publisher stops, and the subscribers get the last publications, before the drain.
        pub.stopPublishing();
        const published = await publishing;
        if (published) data.topics.published = published;
        const t = now();
        await quiet(clients);
        data.topics.quietMs = Math.round(now() - t);
        log(
          `publisher: ${published?.sent ?? '-'} sent, ${published?.skipped ?? '-'} skipped while it had no socket; deliveries quiet after ${data.topics.quietMs} ms`,
        );
      }
      const termAt = phase('drain', true);
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
        `${server.exitStatus ?? 'still running'} after ${server.exitAt === undefined ? '-' : Math.round(server.exitAt - termAt)} ms`,
      );
    } finally {
      clearInterval(printer);
      sampler.stop();
    }
  };

  const collectAndWrite = async (): Promise<boolean> => {
    if (finished) return false;
    finished = true;
    sampler?.stop();
    if (clients) {
      try {
        const r = await Promise.race([clients.results(), sleep(15_000).then(() => undefined)]);
        if (r) data.clients = withLabels(r, phaseAt);
      } catch (err) {
        log(`client results: ${(err as Error).message}`);
      }
      await clients.stop();
    }
    if (server) {
      if (server.exitAt === undefined) server.kill();
      let finalReport = server.log.finalReport;
      try {
        finalReport = JSON.parse(readFileSync(reportFile, 'utf8')) as Report;
      } catch {
        // no report file: the drain did not finish (the log line is used if there was one)
      }
      data.server = {
        rollsDone: server.log.rollsDone,
        rolledWorkers: server.log.rolled,
        finalReport,
        warnings: server.log.warnings,
        stderr: server.output,
      };
    }
    const last = data.phases.at(-1);
    if (last && last.end === undefined) last.end = Math.round((now() - data.startedAt) / 100) / 10;
    const { files, analysis } = writeResults(data, common.out);
    const t = analysis.topics;
    if (t) {
      const steady = t.byPhase.filter((x) => x.phase.startsWith('steady'));
      log(
        `topics: ${t.counts.handled} deliveries (${t.steadyDeliveriesPerSec}/s while steady), ${t.counts.missing} missing, ${t.counts.duplicates} twice, ${t.counts.recovered} resubscriptions recovered, ${t.counts.unrecovered} not, ${t.counts.replayed} replayed; latency p50/p99 ${steady.map((x) => `${x.phase} ${x.latencyMs.p50}/${x.latencyMs.p99}`).join(', ')} ms`,
      );
    }
    for (const c of analysis.checks) {
      if (!c.ok) log(`${c.hard ? 'FAIL' : 'warn'}: ${c.name}: ${c.detail}`);
    }
    log(`${analysis.passed ? 'PASS' : 'FAIL'} in ${Math.round((now() - data.startedAt) / 1000)} s`);
    if (data.serverLog) log(`server log: ${data.serverLog}`);
    for (const file of files) console.log(file);
    return analysis.passed;
  };

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
    setTimeout(() => process.exit(1), 30_000).unref();
    collectAndWrite().finally(() => process.exit(1));
  }, watchdogMs);
  watchdog.unref();

  try {
    await run();
  } catch (err) {
    data.error = (err as Error).message;
    log(`error: ${data.error}`);
  }
  const passed = await collectAndWrite();
  clearTimeout(watchdog);
  return passed;
}

/** The crowd's phases as the soak's labels: epoch first/last close and last reopen. */
function withLabels(r: CrowdResults, phaseAt: Record<string, number>): ClientResults {
  const { phases, ...totals } = r;
  const labels: Record<string, LabelResults> = {};
  for (const [label, p] of Object.entries(phases)) {
    const name = label === '' ? 'connect' : label;
    const t = phaseAt[name] ?? Number.NaN;
    const at = (v: number | undefined): number => (v === undefined ? Number.NaN : t + v);
    labels[name] = {
      ...p,
      firstCloseAt: at(p.closeTimes[0]),
      lastCloseAt: at(p.closeTimes.at(-1)),
      lastReopenAt: at(p.reopenTimes.at(-1)),
    };
  }
  return { ...totals, labels };
}

interface Check {
  name: string;
  ok: boolean;
  hard: boolean;
  detail: string;
}

const ms = (from: number, to: number | undefined | null): number | null =>
  to === undefined || to === null || Number.isNaN(to) ? null : Math.round(to - from);
const sorted = (v: readonly number[]): number[] => [...v].sort((a, b) => a - b);

interface Range {
  min: number;
  median: number;
  max: number;
}

function range(v: number[]): Range {
  const o = sorted(v);
  return { min: round1(o[0]!), median: round1(o[(o.length - 1) >> 1]!), max: round1(o.at(-1)!) };
}

/**
 * Memory over a set of samples (a phase, or its first sample): min, median and max, since
 * RSS saws up and down with V8's collections; the median is what phases are compared by.
 */
function memoryOf(samples: Sample[]) {
  if (samples.length === 0) return null;
  const workersRss = (s: Sample): number => s.workers.reduce((n, w) => n + w.rssMiB, 0);
  const conns = (s: Sample): number => s.workers.reduce((n, w) => n + w.conns, 0);
  const workers = range(samples.map(workersRss));
  const sockets = range(samples.map(conns)).median;
  return {
    t: [samples[0]!.t, samples.at(-1)!.t],
    samples: samples.length,
    serverMiB: range(samples.map((s) => s.serverRssMiB)),
    primaryMiB: range(samples.map((s) => s.primary?.rssMiB ?? 0)),
    workersMiB: workers,
    sockets,
    workerKiBPerSocket: sockets ? Math.round((workers.median * 1024) / sockets) : null,
    /** Per worker at the last sample. */
    workers: samples.at(-1)!.workers.map((w) => ({ pid: w.pid, rssMiB: w.rssMiB, conns: w.conns })),
  };
}

function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  return a === null || a === undefined || !b ? null : Math.round((100 * a) / b) / 100;
}

function analyse(d: RunData) {
  const byPhase = (name: string): Sample[] => d.samples.filter((s) => s.phase === name);
  const labels = d.clients?.labels ?? {};
  const label = (name: string): LabelResults | undefined => labels[name];

  // Memory: the baseline is steady phase 1 (after connect, before the first roll); after each
  // roll, the first sample once every client is back, and the steady phase that follows.
  const baseline = memoryOf(byPhase('steady1'));
  const memory = {
    afterConnect: memoryOf(byPhase('steady1').slice(0, 1)),
    baseline,
    afterRolls: d.rolls.map((r) => {
      const steady = byPhase(`steady${r.k + 1}`);
      const settled = memoryOf(steady.slice(0, 1));
      const phase = memoryOf(steady);
      return {
        roll: r.k,
        peakDuringRollMiB: Math.max(0, ...byPhase(r.label).map((s) => s.serverRssMiB)),
        settled,
        steady: phase,
        ratios: {
          serverSettled: ratio(settled?.serverMiB.median, baseline?.serverMiB.median),
          serverMedian: ratio(phase?.serverMiB.median, baseline?.serverMiB.median),
          serverMax: ratio(phase?.serverMiB.max, baseline?.serverMiB.max),
          primaryMedian: ratio(phase?.primaryMiB.median, baseline?.primaryMiB.median),
          workersMedian: ratio(phase?.workersMiB.median, baseline?.workersMiB.median),
          kibPerSocket: ratio(phase?.workerKiBPerSocket, baseline?.workerKiBPerSocket),
        },
      };
    }),
  };

  // Descriptors: per process, fds - TCP connections on the port, over time.
  const fdOf = (pid: number, role: string, rows: { s: Sample; p: ProcSample }[]) => {
    const steady = rows.filter((r) => r.s.phase.startsWith('steady')).map((r) => r.p.overhead);
    const all = rows.map((r) => r.p.overhead);
    const closeWait = Math.max(0, ...rows.map((r) => r.p.states.CLOSE_WAIT ?? 0));
    const closeWaitSteady = Math.max(
      0,
      ...rows.filter((r) => r.s.phase.startsWith('steady')).map((r) => r.p.states.CLOSE_WAIT ?? 0),
    );
    return {
      pid,
      role,
      from: rows[0]!.s.t,
      to: rows[rows.length - 1]!.s.t,
      phases: [...new Set(rows.map((r) => r.s.phase))],
      samples: rows.length,
      connsMax: Math.max(...rows.map((r) => r.p.conns)),
      fdsMax: Math.max(...rows.map((r) => r.p.fds)),
      overhead: {
        first: all[0]!,
        last: all[all.length - 1]!,
        min: Math.min(...all),
        max: Math.max(...all),
        steadyMin: steady.length ? Math.min(...steady) : null,
        steadyMax: steady.length ? Math.max(...steady) : null,
        steadyFirst: steady.length ? steady[0]! : null,
        steadyLast: steady.length ? steady[steady.length - 1]! : null,
      },
      closeWaitMax: closeWait,
      closeWaitSteadyMax: closeWaitSteady,
    };
  };
  const rowsByPid = new Map<number, { s: Sample; p: ProcSample }[]>();
  for (const s of d.samples) {
    for (const w of s.workers) {
      if (!rowsByPid.has(w.pid)) rowsByPid.set(w.pid, []);
      rowsByPid.get(w.pid)!.push({ s, p: w });
    }
  }
  const primaryRows = d.samples.filter((s) => s.primary).map((s) => ({ s, p: s.primary! }));
  const fds = {
    primary: primaryRows.length ? fdOf(primaryRows[0]!.p.pid, 'primary', primaryRows) : null,
    workers: [...rowsByPid.entries()].map(([pid, rows]) => fdOf(pid, 'worker', rows)),
  };

  // Close codes over the whole run, and per phase.
  const codes: Record<string, number> = {};
  const codesByPhase: Record<string, Record<string, number>> = {};
  for (const [name, l] of Object.entries(labels)) {
    addCounts(codes, l.codes);
    codesByPhase[name] = l.codes;
  }

  // Rolls: timings, reconnects, and unanswered messages vs the server's `late` count.
  const rolls = d.rolls.map((r) => {
    const l = label(r.label);
    const lat = sorted(l?.reconnectMs ?? []);
    const hint = sorted(l?.hintMs ?? []);
    const beyond = sorted(l?.beyondHintMs ?? []);
    const reports = (d.server?.rolledWorkers ?? []).filter(
      (w) => w.at >= r.hupAt && (r.settledAt === undefined || w.at <= r.settledAt + 1000),
    );
    const serverLate = reports.reduce((n, w) => n + (w.report.late ?? 0), 0);
    const ages = sorted(l?.unansweredAgeMs ?? []);
    return {
      roll: r.k,
      atS: round1((r.hupAt - d.startedAt) / 1000),
      oldPids: r.oldPids,
      newPids: r.newPids ?? null,
      rollDoneMs: ms(r.hupAt, r.rollDoneAt),
      rollDoneVia: r.rollDoneVia ?? null,
      rollDurationLoggedMs: d.server?.rollsDone.find((x) => x.at >= r.hupAt)?.durationMs ?? null,
      /** SIGHUP -> the last socket open again (the clients' own clock). */
      reconnectAllMs: ms(r.hupAt, l?.lastReopenAt),
      /** SIGHUP -> the soak saw roll done and every socket open (1 s stats granularity). */
      settledMs: ms(r.hupAt, r.settledAt),
      firstCloseMs: ms(r.hupAt, l?.firstCloseAt),
      lastCloseMs: ms(r.hupAt, l?.lastCloseAt),
      closes: l?.codes ?? {},
      reasons: l?.reasons ?? {},
      reconnects: lat.length,
      reconnectMs: {
        p50: percentile(lat, 0.5),
        p99: percentile(lat, 0.99),
        max: lat.at(-1) ?? null,
      },
      hintMs: { p50: percentile(hint, 0.5), max: hint.at(-1) ?? null },
      beyondHintMs: {
        p50: round(percentile(beyond, 0.5)),
        p99: round(percentile(beyond, 0.99)),
        max: round(beyond.at(-1) ?? null),
      },
      refusals: l?.refusals ?? {},
      unanswered: l?.unanswered ?? {},
      unansweredAgeMs: { p50: percentile(ages, 0.5), max: ages.at(-1) ?? null },
      serverLate,
      workerReports: reports.map((w) => ({ pid: w.pid, ...w.report })),
      error: r.error ?? null,
    };
  });

  // Final drain.
  const dl = label('drain');
  const drainAges = sorted(dl?.unansweredAgeMs ?? []);
  const drain = d.drain
    ? {
        exitCode: d.drain.exitCode,
        exitSignal: d.drain.exitSignal,
        drainMs: ms(d.drain.termAt, d.drain.exitAt),
        clientsAllClosedMs: ms(d.drain.termAt, d.drain.clientsClosedAt),
        closes: dl?.codes ?? {},
        unanswered: dl?.unanswered ?? {},
        unansweredAgeMs: { p50: percentile(drainAges, 0.5), max: drainAges.at(-1) ?? null },
        report: d.server?.finalReport
          ? Object.fromEntries(
              Object.entries(d.server.finalReport).filter(([k]) => k !== 'workers'),
            )
          : null,
      }
    : null;

  // Echoes.
  const c = d.clients;
  const steadyRates = d.samples
    .filter((s) => s.phase.startsWith('steady') && s.clients && s.clients.echoesPerSec > 0)
    .map((s) => s.clients!.echoesPerSec);
  const unansweredAtRestart = sum(
    Object.fromEntries(Object.entries(labels).map(([k, l]) => [k, l.unanswered['1012'] ?? 0])),
  );
  const unansweredAtShutdown = sum(
    Object.fromEntries(Object.entries(labels).map(([k, l]) => [k, l.unanswered['1001'] ?? 0])),
  );
  const serverLateAtRolls = rolls.reduce((n, r) => n + r.serverLate, 0);
  const echoes = c
    ? {
        sent: c.sent,
        echoed: c.echoed,
        mismatched: c.mismatched,
        timedOut: c.timedOut,
        lostOnOtherClose: c.lostOnOtherClose,
        pendingAtEnd: c.pendingOpen,
        unansweredAtRestart,
        serverLateAtRolls,
        unansweredAtShutdown,
        serverLateAtShutdown: d.server?.finalReport?.late ?? null,
        /** Unanswered at a drain close and not counted late by the server: really lost. */
        lost:
          unansweredAtRestart -
          serverLateAtRolls +
          (unansweredAtShutdown - (d.server?.finalReport?.late ?? unansweredAtShutdown)) +
          c.lostOnOtherClose,
        steadyEchoesPerSec: steadyRates.length
          ? Math.round(steadyRates.reduce((a, b) => a + b, 0) / steadyRates.length)
          : null,
        rttMs: {
          p50: quantile(c.rtt, 0.5),
          p99: quantile(c.rtt, 0.99),
          p999: quantile(c.rtt, 0.999),
        },
      }
    : null;

  // Checks.
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, detail: string, hard = true): void => {
    checks.push({ name, ok, hard, detail });
  };
  if (d.error) check('completed', false, d.error);
  if (d.connect)
    check(
      'all sockets connected',
      d.connect.failed === 0,
      `${d.connect.connected} of ${d.connect.requested}`,
    );
  check('no 1006 anywhere', (codes['1006'] ?? 0) === 0, `1006 x ${codes['1006'] ?? 0}`);
  const unexpected = Object.entries(labels).flatMap(([name, l]) =>
    Object.entries(l.codes)
      .filter(([code]) =>
        name.startsWith('roll') ? code !== '1012' : name === 'drain' ? code !== '1001' : true,
      )
      .map(([code, n]) => `${name}: ${code} x ${n}`),
  );
  check(
    'only 1012 on rolls, 1001 on the drain, none otherwise',
    unexpected.length === 0,
    unexpected.join(', ') || 'yes',
  );
  for (const r of rolls) {
    check(
      `roll ${r.roll} settled`,
      r.settledMs !== null && r.error === null,
      r.error ?? `all reconnected ${r.reconnectAllMs} ms after SIGHUP`,
    );
    check(
      `roll ${r.roll}: no refused reconnect`,
      sum(r.refusals) === 0,
      JSON.stringify(r.refusals),
      false,
    );
    // The server's late counts come from the "rolled worker" lines, info lines: without them
    // the check cannot be made, and says so instead of passing.
    const reports = r.workerReports.length;
    const workers = Number(d.options.workers);
    check(
      `roll ${r.roll}: unanswered at 1012 = server late`,
      reports >= workers && (r.unanswered['1012'] ?? 0) === r.serverLate,
      reports < workers
        ? `${reports} of ${workers} rolled-worker reports in the server log (info lines; --log-level ${d.options.logLevel}): the server's late count is unknown`
        : `${r.unanswered['1012'] ?? 0} unanswered, server counted ${r.serverLate} late`,
    );
  }
  if (echoes) {
    check(
      'echoes (and answers to publications and subscriptions): none mismatched, timed out or lost',
      echoes.mismatched + echoes.timedOut + echoes.lostOnOtherClose === 0,
      `${echoes.mismatched} mismatched, ${echoes.timedOut} timed out, ${echoes.lostOnOtherClose} lost on other closes`,
    );
  }
  if (drain) {
    check('exit code 0', drain.exitCode === 0, `exit ${drain.exitCode ?? drain.exitSignal}`);
    const budget = Number(d.options.drainTimeoutMs);
    check(
      'drain within --drain-timeout',
      drain.drainMs !== null && drain.drainMs <= budget,
      `${drain.drainMs} ms of ${budget}`,
    );
    if (echoes) {
      const late = echoes.serverLateAtShutdown;
      check(
        'drain: unanswered at 1001 = server late',
        late !== null && echoes.unansweredAtShutdown === late,
        late === null
          ? 'no final drain report (neither the --report file nor a "drained" line): the server\'s late count is unknown'
          : `${echoes.unansweredAtShutdown} unanswered, server counted ${late} late`,
      );
    }
  }
  for (const m of memory.afterRolls) {
    check(
      `RSS after roll ${m.roll} near baseline (median and peak <= 1.5x)`,
      m.ratios.serverMedian !== null &&
        m.ratios.serverMedian <= 1.5 &&
        m.ratios.serverMax !== null &&
        m.ratios.serverMax <= 1.5,
      `server median ${m.ratios.serverMedian}x, peak ${m.ratios.serverMax}x; primary median ${m.ratios.primaryMedian}x`,
      false,
    );
  }
  for (const w of [fds.primary, ...fds.workers]) {
    if (!w || w.overhead.steadyMin === null) continue;
    const spread = w.overhead.steadyMax! - w.overhead.steadyMin;
    check(
      `${w.role} ${w.pid}: fds - sockets flat (spread <= 16 while steady)`,
      spread <= 16 && w.closeWaitSteadyMax <= 16,
      `${w.overhead.steadyMin}..${w.overhead.steadyMax}, CLOSE_WAIT max ${w.closeWaitSteadyMax} while steady, ${w.closeWaitMax} overall`,
      false,
    );
  }

  // CPU the soak does not account for: other processes on the machine (a shared machine makes
  // every latency figure worse) and kernel time charged to no process.
  const otherCpu = Object.fromEntries(
    [...new Set(d.samples.map((s) => s.phase))].map((p) => {
      const v = d.samples.filter((s) => s.phase === p && s.machine).map((s) => s.machine!.otherPct);
      const busy = d.samples
        .filter((s) => s.phase === p && s.machine)
        .map((s) => s.machine!.busyPct);
      const mean = (a: number[]): number | null =>
        a.length ? Math.round(a.reduce((x, y) => x + y, 0) / a.length) : null;
      return [
        p,
        { meanPct: mean(v), maxPct: v.length ? Math.max(...v) : null, busyPct: mean(busy) },
      ];
    }),
  );
  // Judged on the steady phases: during rolls and the drain, workers that exit between two
  // samples take their last CPU with them, and that shows up here too.
  const allOther = d.samples
    .filter((s) => s.machine && s.phase.startsWith('steady'))
    .map((s) => s.machine!.otherPct);
  const otherMean = allOther.length
    ? Math.round(allOther.reduce((x, y) => x + y, 0) / allOther.length)
    : null;
  check(
    'machine to itself: other CPU <= 15% of a core on average while steady',
    otherMean !== null && otherMean <= 15,
    `${otherMean}% on average, ${allOther.length ? Math.max(...allOther) : '–'}% at most (other processes and unattributed kernel time)`,
    false,
  );

  const topics = topicsOf(d);
  if (topics) {
    check(
      'subscribers: every publication of their topic once, in order, across both rolls; every resubscription recovered',
      topics.problems.length === 0,
      topics.problems.join('; ') ||
        `${topics.subscribers} subscribers on ${topics.topics} topics: ${topics.counts.handled} handled, 0 missing, 0 twice, 0 sent twice or skipped on the wire; ${topics.counts.recovered} resubscriptions recovered, 0 not`,
    );
    check(
      'publisher: publications acked, no error',
      topics.counts.acked > 0 && topics.counts.publishErrors === 0,
      `${topics.published?.sent ?? '–'} sent, ${topics.counts.acked} acked, ${topics.counts.publishErrors} errors, ${topics.published?.skipped ?? '–'} skipped while it had no socket`,
    );
  }

  const rttByPhase = Object.fromEntries(
    Object.entries(d.rttByPhase ?? {}).map(([p, h]) => [
      p,
      {
        echoes: h.reduce((a, b) => a + b, 0),
        p50: quantile(h, 0.5),
        p99: quantile(h, 0.99),
        p999: quantile(h, 0.999),
      },
    ]),
  );

  return {
    connect: d.connect ?? null,
    memory,
    balance: balanceOf(d),
    topics,
    rttByPhase,
    otherCpu,
    fds,
    codes,
    codesByPhase,
    rolls,
    drain,
    echoes,
    checks,
    passed: checks.every((x) => x.ok || !x.hard),
  };
}

/**
 * Sockets held by each worker: the last sample of each steady phase and the first after each
 * roll (every socket back), so the balance after a roll shows.
 */
function balanceOf(d: RunData) {
  const rows: { when: string; t: number; workers: { pid: number; sockets: number }[] }[] = [];
  const add = (when: string, s: Sample | undefined): void => {
    if (!s) return;
    rows.push({ when, t: s.t, workers: s.workers.map((w) => ({ pid: w.pid, sockets: w.conns })) });
  };
  for (let k = 1; k <= 3; k++) {
    const steady = d.samples.filter((s) => s.phase === `steady${k}`);
    if (k > 1) add(`after roll ${k - 1} (first sample)`, steady[0]);
    add(`steady ${k}, last sample`, steady.at(-1));
  }
  return rows.map((r) => {
    const counts = r.workers.map((w) => w.sockets);
    const total = counts.reduce((a, b) => a + b, 0);
    const mean = counts.length ? total / counts.length : 0;
    return {
      ...r,
      total,
      /** The busiest worker's sockets / the mean. */
      maxOverMean: mean > 0 ? Math.round((100 * Math.max(...counts)) / mean) / 100 : null,
    };
  });
}

/** The topics mode's figures and exactly-once problems; null without topics. */
function topicsOf(d: RunData) {
  const c = d.clients;
  if (!d.topics || !c || d.options.topicsOn !== true) return null;
  const t = c.topics;
  const phases = d.phases.filter((p) => c.labels[p.name]);
  const byPhase = phases.map((p) => {
    const l = c.labels[p.name]!;
    const seconds = p.end === undefined ? null : p.end - p.start;
    const replayMs = sorted(l.replayMs);
    const catchUp = sorted(l.catchUpMs);
    return {
      phase: p.name,
      seconds,
      deliveries: l.deliveries,
      deliveriesPerSec: seconds ? Math.round(l.deliveries / seconds) : null,
      latencyMs: {
        p50: tallyQuantile(l.latency, 0.5),
        p99: tallyQuantile(l.latency, 0.99),
        max: tallyQuantile(l.latency, 1),
      },
      /** Reconnects that caught up in this phase, those that missed some, what they replayed. */
      caughtUp: l.replayed.length,
      replays: l.replayMs.length,
      replayed: l.replayed.reduce((a, b) => a + b, 0),
      replayMs: { p50: percentile(replayMs, 0.5), p99: percentile(replayMs, 0.99) },
      catchUpMs: { p50: percentile(catchUp, 0.5), p99: percentile(catchUp, 0.99) },
    };
  });
  const steady = byPhase.filter((p) => p.phase.startsWith('steady') && p.seconds);
  const steadySeconds = steady.reduce((a, p) => a + p.seconds!, 0);
  const subscribers = d.topics.subscribers;
  const topics = Number(d.options.topics);
  const rate = Number(d.options.publishRate);
  return {
    subscribers,
    topics,
    publishRate: rate,
    historySize: d.options.historySize,
    published: d.topics.published ?? null,
    quietMs: d.topics.quietMs ?? null,
    /** What the publisher's rate gives: each publication to subscribers / topics sockets. */
    expectedDeliveriesPerSec: Math.round((rate * subscribers) / topics),
    steadyDeliveriesPerSec: steadySeconds
      ? Math.round(steady.reduce((a, p) => a + p.deliveries, 0) / steadySeconds)
      : null,
    byPhase,
    counts: { ...t, byTopic: undefined },
    byTopic: t.byTopic,
    problems: topicProblems(t, subscribers),
  };
}

function round(v: number | null): number | null {
  return v === null ? null : Math.round(v * 10) / 10;
}

type Analysis = ReturnType<typeof analyse>;

const f = (v: unknown): string => (v === null || v === undefined ? '–' : String(v));

function markdown(d: RunData, a: Analysis): string {
  const o = d.options;
  const out: string[] = [];
  out.push(`# Soak: ${d.name}`, '');
  const mix = o.topicsOn
    ? ` (${f(o.echoSockets)} echoing, a message every ${f(o.messageEveryMs)} ms; ${f(o.subscribers)} wsdrain.v1 subscribers on ${f(o.topics)} topics, ${f(o.publishRate)} publications/s in all)`
    : `, a message per socket every ${f(o.messageEveryMs)} ms`;
  out.push(
    `${f(o.sockets)} sockets${mix}, ${f(o.workers)} workers, ${f(o.minutes)} min; ` +
      `${new Date(d.startedAt).toISOString()}, node ${f(d.env.node)}, ${f(d.env.cpus)} cores, commit ${f(d.env.commit)}${d.env.srcDirty ? ' (src/ modified)' : ''}${d.env.distStale ? ' (**dist/ older than src/**)' : ''}.`,
  );
  out.push(
    '',
    `**${a.passed ? 'PASS' : 'FAIL'}**`,
    '',
    '| check | | detail |',
    '| --- | --- | --- |',
  );
  for (const c of a.checks)
    out.push(`| ${c.name} | ${c.ok ? 'ok' : c.hard ? '**FAIL**' : 'warn'} | ${c.detail} |`);
  out.push('');

  out.push('## Memory (RSS, MiB)', '');
  out.push(
    '| when | t (s) | server min / median / max | primary median | workers median | sockets | KiB/socket (workers) | × baseline (median / max) |',
  );
  out.push('| --- | --- | --- | --- | --- | --- | --- | --- |');
  type Mem = ReturnType<typeof memoryOf>;
  const row = (name: string, m: Mem, r: string): void => {
    if (!m) return;
    const sv = m.serverMiB;
    const server = m.samples === 1 ? `${sv.median}` : `${sv.min} / ${sv.median} / ${sv.max}`;
    out.push(
      `| ${name} | ${m.t[0]}${m.samples > 1 ? `–${m.t[1]}` : ''} | ${server} | ${m.primaryMiB.median} | ${m.workersMiB.median} | ${m.sockets} | ${f(m.workerKiBPerSocket)} | ${r} |`,
    );
  };
  const base = a.memory.baseline;
  row(
    'first sample after connect',
    a.memory.afterConnect,
    f(ratio(a.memory.afterConnect?.serverMiB.median, base?.serverMiB.median)),
  );
  row('**baseline**: steady 1, before roll 1', base, '1 / 1');
  for (const m of a.memory.afterRolls) {
    row(`roll ${m.roll} settled (first sample)`, m.settled, f(m.ratios.serverSettled));
    row(
      `steady ${m.roll + 1}, after roll ${m.roll}`,
      m.steady,
      `**${f(m.ratios.serverMedian)}** / ${f(m.ratios.serverMax)}`,
    );
  }
  out.push('');
  out.push(
    `Peak server RSS during the rolls (three workers for a while): ${a.memory.afterRolls.map((m) => `${m.peakDuringRollMiB} MiB`).join(', ')}. ` +
      'Worker RSS saws up and down with V8 collections under the message load, so phases are compared by their median and peak over every 2-s sample.' +
      (o.topicsOn
        ? ` KiB/socket is over every socket on the port, ${f(o.subscribers)} of them holding a subscription (the primary keeps each topic's history, up to --history-size ${f(o.historySize)}).`
        : ''),
  );
  out.push('');
  out.push('## Sockets per worker', '');
  out.push('| when | t (s) | sockets | per worker (pid: sockets) | busiest / mean |');
  out.push('| --- | --- | --- | --- | --- |');
  for (const b of a.balance) {
    out.push(
      `| ${b.when} | ${b.t} | ${b.total} | ${b.workers.map((w) => `${w.pid}: ${w.sockets}`).join(', ')} | ${f(b.maxOverMean)} |`,
    );
  }
  out.push(
    '',
    'TCP connections on the port held by each worker (sampled every 2 s): before the first roll, once every socket is back after each roll, and at the end of the steady phase that follows. Every socket (the publisher’s too) is moved by each roll, so the balance after it is what the reconnects made.',
    '',
  );
  out.push(
    `Machine CPU by phase (busy / not ours, mean % of one core): ${Object.entries(a.otherCpu)
      .map(([p, c]) => `${p} ${f(c.busyPct)} / ${f(c.meanPct)}`)
      .join('; ')}.`,
  );
  out.push('');
  out.push(
    `Echo round trip by phase (p50 / p99 ms): ${Object.entries(a.rttByPhase)
      .map(([p, r]) => `${p} ${f(r.p50)} / ${f(r.p99)}`)
      .join('; ')}.`,
  );
  out.push('');

  out.push('## Descriptors: fds − sockets on the port, per process', '');
  out.push(
    '| process | alive (s) | phases | sockets max | fds − sockets: first / min / max / last | while steady | CLOSE_WAIT max |',
  );
  out.push('| --- | --- | --- | --- | --- | --- | --- |');
  for (const w of [a.fds.primary, ...a.fds.workers]) {
    if (!w) continue;
    const ov = w.overhead;
    out.push(
      `| ${w.role} ${w.pid} | ${w.from}–${w.to} | ${w.phases.join(', ')} | ${w.connsMax} | ${ov.first} / ${ov.min} / ${ov.max} / ${ov.last} | ${f(ov.steadyMin)}..${f(ov.steadyMax)} | ${w.closeWaitMax} |`,
    );
  }
  out.push('');
  // A timeline, about every 10 s.
  const every = Math.max(1, Math.round(10_000 / Number(o.sampleEveryMs ?? 2000)));
  const picked = d.samples.filter((_, i) => i % every === 0 || i === d.samples.length - 1);
  out.push(
    '| t (s) | phase | client sockets | echoes/s | deliveries/s | primary fds−sockets | workers: pid fds−sockets=overhead (RSS MiB) |',
  );
  out.push('| --- | --- | --- | --- | --- | --- | --- |');
  for (const s of picked) {
    const ws = s.workers
      .map((w) => `${w.pid} ${w.fds}−${w.conns}=${w.overhead} (${w.rssMiB})`)
      .join('; ');
    out.push(
      `| ${s.t} | ${s.phase} | ${f(s.clients?.open)} | ${f(s.clients?.echoesPerSec)} | ${f(s.clients?.deliveriesPerSec)} | ${f(s.primary?.overhead)} | ${ws} |`,
    );
  }
  out.push('');

  out.push('## Rolls', '');
  // Every socket the rolls move: the publisher's too.
  const sockets = (d.connect?.connected ?? 0) + (d.topics?.publisherConnected ? 1 : 0);
  out.push(
    '| | roll done | all reconnected | closes (beyond one per socket) | reconnect p50 / p99 / max | beyond the hint p50 / p99 / max | refused | unanswered at 1012 (sent p50 / max ms before the close) | server late |',
  );
  out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of a.rolls) {
    out.push(
      `| roll ${r.roll} (t=${r.atS} s) | ${f(r.rollDoneMs)} ms | ${f(r.reconnectAllMs)} ms | ${JSON.stringify(r.closes)} (${sum(r.closes) - sockets}) | ${f(r.reconnectMs.p50)} / ${f(r.reconnectMs.p99)} / ${f(r.reconnectMs.max)} ms | ${f(r.beyondHintMs.p50)} / ${f(r.beyondHintMs.p99)} / ${f(r.beyondHintMs.max)} ms | ${sum(r.refusals)} | ${r.unanswered['1012'] ?? 0} (${f(r.unansweredAgeMs.p50)} / ${f(r.unansweredAgeMs.max)}) | ${r.serverLate} |`,
    );
  }
  out.push('');
  out.push(
    'Times from the SIGHUP. Closes beyond one per socket: clients that reconnected to a worker of the old generation and were closed again when its turn came. "Beyond the hint": reconnect time minus the delay the close reason asked for. Unanswered at 1012: messages the client sent whose echo (or, for a publication or a subscription, whose answer) had not come when the close arrived; the server answers everything it reads before its close frame, so these crossed the close frame and the server counts them as `late` (RFC 6455: no data after a close frame).',
  );
  out.push('');

  out.push('## Close codes (whole run)', '', `| phase | ${Object.keys(a.codes).join(' | ')} |`);
  out.push(
    `| --- | ${Object.keys(a.codes)
      .map(() => '---')
      .join(' | ')} |`,
  );
  for (const [name, cs] of Object.entries(a.codesByPhase))
    out.push(
      `| ${name} | ${Object.keys(a.codes)
        .map((k) => f(cs[k] ?? 0))
        .join(' | ')} |`,
    );
  out.push(`| **total** | ${Object.values(a.codes).join(' | ')} |`, '');

  if (a.echoes) {
    const e = a.echoes;
    out.push('## Echoes', '');
    out.push(
      `${e.sent} sent, ${e.echoed} echoed (${f(e.steadyEchoesPerSec)}/s while steady), round trip p50 ${f(e.rttMs.p50)} ms, p99 ${f(e.rttMs.p99)} ms, p99.9 ${f(e.rttMs.p999)} ms. ` +
        `Failures: ${e.mismatched} mismatched, ${e.timedOut} timed out, ${e.lostOnOtherClose} lost on other closes. ` +
        `Unanswered at 1012: ${e.unansweredAtRestart} (server late on rolls: ${e.serverLateAtRolls}); at 1001: ${e.unansweredAtShutdown} (server late: ${f(e.serverLateAtShutdown)}). ` +
        `**Lost echoes (unanswered and not counted late by the server): ${e.lost}.**`,
    );
    out.push('');
  }

  if (a.topics) {
    const t = a.topics;
    const c = t.counts;
    const p = t.published;
    out.push('## Topics: publications and recovery', '');
    out.push(
      `${t.subscribers} subscribers (WsdrainClient, one subscription each) on ${t.topics} topics; a publisher sending ${t.publishRate}/s in all, round robin: ${f(p?.sent)} sent, ${f(p?.skipped)} skipped while it had no socket, ${c.acked} acked, ${c.publishErrors} errors. ` +
        `Deliveries: ${c.handled} handled in all, ${f(t.steadyDeliveriesPerSec)}/s while steady (the rate gives ${t.expectedDeliveriesPerSec}/s). ` +
        `Resubscriptions: ${c.recovered} recovered, ${c.unrecovered} not, ${c.resubscribes} beyond one per connection; ${c.replayed} publications replayed. ` +
        `**Exactly once: ${c.missing} missing, ${c.duplicates} twice or out of order (handlers); ${c.wireDuplicates} sent twice, ${c.wireHoles} holes (wire)${t.problems.length ? `; ${t.problems.join('; ')}` : ''}.**`,
      '',
    );
    out.push(
      '| phase | s | deliveries | /s | latency p50 / p99 / max (ms) | reconnects caught up (missed some) | replayed | replay p50 / p99 (ms) | close → caught up p50 / p99 (ms) |',
    );
    out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const x of t.byPhase) {
      out.push(
        `| ${x.phase} | ${f(x.seconds === null ? null : round1(x.seconds))} | ${x.deliveries} | ${f(x.deliveriesPerSec)} | ${f(x.latencyMs.p50)} / ${f(x.latencyMs.p99)} / ${f(x.latencyMs.max)} | ${x.caughtUp} (${x.replays}) | ${x.replayed} | ${f(x.replayMs.p50)} / ${f(x.replayMs.p99)} | ${f(x.catchUpMs.p50)} / ${f(x.catchUpMs.p99)} |`,
      );
    }
    out.push('');
    out.push(
      `| topic | subscribers | started at | ended at | last acked |`,
      '| --- | --- | --- | --- | --- |',
    );
    for (const [name, r] of Object.entries(t.byTopic).sort(([x], [y]) => x.localeCompare(y))) {
      out.push(
        `| ${name} | ${r.subscribers} | ${f(r.startMin)}${r.startMax === r.startMin ? '' : `–${f(r.startMax)}`} | ${f(r.endMin)}${r.endMax === r.endMin ? '' : `–${f(r.endMax)}`} | ${f(r.lastAcked)} |`,
      );
    }
    out.push(
      '',
      'Latency: from the publisher’s send to the subscriber’s handler, replayed publications included (in the roll phases they make the tail). *Replayed*: published before the reconnect opened, handled after it; a reconnect counts in the phase it caught up in. Offsets are the server’s: every subscriber of a topic must start at one offset and handle every one after it up to the topic’s last, once, in order.',
      '',
    );
  }

  if (a.drain) {
    const dr = a.drain;
    out.push('## Drain (SIGTERM)', '');
    out.push(
      `Exit ${f(dr.exitCode ?? dr.exitSignal)} ${f(dr.drainMs)} ms after SIGTERM; every client closed after ${f(dr.clientsAllClosedMs)} ms; codes ${JSON.stringify(dr.closes)}.` +
        (dr.report ? ` Server report: ${JSON.stringify(dr.report)}.` : ''),
    );
    out.push('');
  }
  const warnings = d.server?.warnings ?? [];
  if (warnings.length > 0) {
    out.push('## Server warnings', '');
    for (const w of warnings.slice(0, 20)) out.push(`- \`${w}\``);
    if (warnings.length > 20) out.push(`- … ${warnings.length - 20} more in the JSON`);
    out.push('');
  }
  return `${out.join('\n')}\n`;
}

/** Writes soak-<name>.json and .md into `dir`; returns their paths. */
function writeResults(d: RunData, dir: string): { files: string[]; analysis: Analysis } {
  const analysis = analyse(d);
  const { samples, server, clients, rttByPhase: _rtt, ...rest } = d;
  const data = {
    ...rest,
    figures: analysis,
    server: server ? { ...server, rolledWorkers: undefined } : undefined,
    clientTotals: clients ? { ...clients, labels: undefined, rtt: undefined } : undefined,
    samples,
  };
  const files = writeFiles(dir, [
    [`soak-${d.name}.json`, json(data)],
    [`soak-${d.name}.md`, markdown(d, analysis)],
  ]);
  return { files, analysis };
}
