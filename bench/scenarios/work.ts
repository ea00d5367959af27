/**
 * Work: what the thread pool is worth. Some connections send CPU-heavy messages (the built-in
 * handler's `{"op":"work","ms":N}`: N ms of CPU each, `window` outstanding per connection)
 * while other connections echo small messages (one every `echoEveryMs` each), on:
 *
 * - `wsdrain`: the work runs on the workers' pool threads;
 * - `inline`: a plain ws server of the same cluster shape (baselines/inline-work.ts) that runs
 *   the same handler on its event loop, as a server without a pool does.
 *
 * Phases, per server: `idle` (echoes only) for `idleS` seconds, `load` (echoes and work) for
 * `loadS` seconds, then SIGTERM with the work still running. Throughout, `/healthz` on a fresh
 * connection and a WebSocket ping on one connection per worker, every `probeEveryMs` (lib/net.ts
 * Probes). Figures: work replies per second, echo round trip p50/p99 on the other connections,
 * `/healthz` and ping p99, idle and loaded; the drain: signal to exit, close codes.
 *
 * Targets (wsdrain): echo and /healthz p99 under load <= workP99VsIdle (3) x their idle p99 (an
 * idle p99 under 0.01 ms counts as 0.01); every reply the right one; the drain: every socket
 * closed with 1001, exit 0 within drainExitVsBudget x --drain-timeout. The inline server's
 * figures are recorded, not judged.
 */
import { Crowd, type CrowdResults, withLoad } from '../crowd/index.js';
import { Probes } from '../lib/net.js';
import { log, now, sleep } from '../lib/proc.js';
import { cell, codesText, ms, verdict } from '../lib/report.js';
import { Server } from '../lib/server.js';
import { percentile, round1, round2 } from '../lib/stats.js';
import { TARGETS, target } from '../lib/targets.js';
import { p99Ratio } from './healthz.js';

export const WORK_SERVERS = ['wsdrain', 'inline'] as const;
export type WorkServer = (typeof WORK_SERVERS)[number];

export interface WorkOptions {
  servers: WorkServer[];
  workers: number;
  /** Connections sending work, and the ms of CPU each message asks for. */
  heavy: number;
  workMs: number;
  /** Work messages outstanding per heavy connection. */
  window: number;
  /** Connections echoing, one message every `echoEveryMs` each. */
  light: number;
  echoEveryMs: number;
  idleS: number;
  loadS: number;
  probeEveryMs: number;
  /** wsdrain's --drain-timeout: the drain's budget. */
  drainTimeoutMs: number;
  /** How long past the budget to wait for the sockets and the exit before giving up. */
  graceMs: number;
}

const QUICK: WorkOptions = {
  servers: [...WORK_SERVERS],
  workers: 2,
  heavy: 4,
  workMs: 5,
  window: 4,
  light: 50,
  echoEveryMs: 50,
  idleS: 3,
  loadS: 5,
  probeEveryMs: 20,
  drainTimeoutMs: 3000,
  graceMs: 5000,
};

export const WORK_PRESETS: Record<'quick' | 'full', WorkOptions> = {
  quick: QUICK,
  full: { ...QUICK, heavy: 8, light: 200, idleS: 5, loadS: 10 },
};

/** p50 / p99 of round trips, ms. */
export interface Latency {
  n: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

export interface WorkRun {
  server: WorkServer;
  workers: number;
  /** Work replies a second under load, and their round trip (send to `done`). */
  workPerSec: number;
  work: Latency;
  echoIdle: Latency;
  echoLoad: Latency;
  healthzIdle: Latency;
  healthzLoad: Latency;
  pingIdle: Latency;
  pingLoad: Latency;
  /** Loaded p99 / idle p99. */
  echoP99VsIdle: number | null;
  healthzP99VsIdle: number | null;
  pingP99VsIdle: number | null;
  /** /healthz probes not answered 200 (idle + load). */
  healthzFailed: number;
  /** Replies that were not the next expected one, and messages lost to a close. */
  mismatched: number;
  lost: number;
  /** The drain under load: signal to exit, to the last close; close codes. */
  budgetMs: number | null;
  exitMs: number | null;
  exitStatus: string;
  lastCloseMs: number | null;
  codes: Record<string, number>;
  sockets: number;
  stillOpen: number;
}

export interface WorkResult {
  options: WorkOptions;
  runs: WorkRun[];
  failures: string[];
  misses: string[];
}

export async function runWork(o: WorkOptions): Promise<WorkResult> {
  const runs: WorkRun[] = [];
  const failures: string[] = [];
  for (const server of o.servers) {
    try {
      const run = await runServer(server, o);
      runs.push(run);
      log(`work ${server}: ${describe(run)}`);
    } catch (err) {
      failures.push(`${server}: ${(err as Error).message.split('\n')[0]}`);
      log(`FAILED work ${failures.at(-1)}`);
    }
  }
  const result: WorkResult = { options: o, runs, failures, misses: [] };
  result.misses = workMisses(result);
  return result;
}

const latency = (values: number[]): Latency => {
  const sorted = [...values].sort((a, b) => a - b);
  const r = (v: number | null): number | null => (v === null ? null : round2(v));
  return {
    n: sorted.length,
    p50Ms: r(percentile(sorted, 0.5)),
    p99Ms: r(percentile(sorted, 0.99)),
  };
};

function runServer(server: WorkServer, o: WorkOptions): Promise<WorkRun> {
  const wsdrain = server === 'wsdrain';
  const start = wsdrain
    ? Server.wsdrain({
        workers: o.workers,
        drainTimeoutMs: o.drainTimeoutMs,
        flags: ['--max-work', Math.max(100, o.workMs)],
      })
    : Server.baseline('inline-work', o.workers);
  return withLoad(
    start,
    { perProcess: o.light, concurrency: 50, attempts: 1, messageEveryMs: o.echoEveryMs },
    async (srv, light) => {
      const heavy = new Crowd({
        url: `ws://127.0.0.1:${srv.port}`,
        perProcess: o.heavy,
        concurrency: 50,
        attempts: 1,
        window: o.window,
        workMs: o.workMs,
      });
      const probes = new Probes(srv.port, o.workers, o.probeEveryMs);
      try {
        const connected = (await light.connect(o.light)) + (await heavy.connect(o.heavy));
        if (connected < o.light + o.heavy) {
          throw new Error(`${o.light + o.heavy - connected} connections failed to open`);
        }
        await probes.start('');
        await sleep(500); // the echoes' random phases spread out
        srv.assertUp();
        light.phase('idle');
        probes.phase('idle');
        await sleep(o.idleS * 1000);
        // Heavy connections start their window with their first phase.
        heavy.phase('load');
        light.phase('load');
        probes.phase('load');
        await sleep(o.loadS * 1000);
        probes.phase('drain');
        await probes.stop();
        // The drain, the work still running.
        const t0 = light.phase('drain');
        heavy.phase('drain');
        srv.signal('SIGTERM');
        const budget = wsdrain ? o.drainTimeoutMs : null;
        const giveUpAt = t0 + (budget ?? o.drainTimeoutMs) + o.graceMs;
        const [lastLight, lastHeavy] = await Promise.all([
          light.waitAllClosed(giveUpAt - now()),
          heavy.waitAllClosed(giveUpAt - now()),
        ]);
        await srv.waitExit(Math.max(0, giveUpAt - now()));
        const l = await light.results();
        const h = await heavy.results();
        const codes: Record<string, number> = {};
        for (const r of [l, h]) {
          for (const [c, n] of Object.entries(r.phases.drain?.codes ?? {})) {
            codes[c] = (codes[c] ?? 0) + n;
          }
        }
        const rtts = (r: CrowdResults, phase: string): number[] =>
          r.phases[phase]?.rttSamples ?? [];
        const run: WorkRun = {
          server,
          workers: o.workers,
          workPerSec: h.phases.load?.repliesPerSec ?? 0,
          work: latency(rtts(h, 'load')),
          echoIdle: latency(rtts(l, 'idle')),
          echoLoad: latency(rtts(l, 'load')),
          healthzIdle: latency(probes.healthz.idle ?? []),
          healthzLoad: latency(probes.healthz.load ?? []),
          pingIdle: latency(probes.pings.idle ?? []),
          pingLoad: latency(probes.pings.load ?? []),
          echoP99VsIdle: null,
          healthzP99VsIdle: null,
          pingP99VsIdle: null,
          healthzFailed: (probes.failed.idle ?? 0) + (probes.failed.load ?? 0),
          mismatched: l.mismatched + h.mismatched,
          lost: l.lostOnOtherClose + h.lostOnOtherClose,
          budgetMs: budget,
          exitMs: srv.exitAt === undefined ? null : round1(srv.exitAt - t0),
          exitStatus: srv.exitStatus ?? 'still running (killed)',
          lastCloseMs:
            lastLight === undefined || lastHeavy === undefined
              ? null
              : round1(Math.max(lastLight, lastHeavy) - t0),
          codes,
          sockets: connected,
          stillOpen: l.open + h.open,
        };
        run.echoP99VsIdle = p99Ratio(run.echoLoad.p99Ms, run.echoIdle.p99Ms);
        run.healthzP99VsIdle = p99Ratio(run.healthzLoad.p99Ms, run.healthzIdle.p99Ms);
        run.pingP99VsIdle = p99Ratio(run.pingLoad.p99Ms, run.pingIdle.p99Ms);
        return run;
      } finally {
        await probes.stop();
        await heavy.stop();
      }
    },
  );
}

/** The wsdrain run's misses, and servers that failed to run. */
export function workMisses(w: WorkResult): string[] {
  const misses = w.failures.map((f) => `failed to run: ${f}`);
  for (const r of w.runs.filter((x) => x.server === 'wsdrain')) {
    const limit = TARGETS.workP99VsIdle;
    if (r.echoP99VsIdle === null || r.echoP99VsIdle > limit) {
      misses.push(
        `echo p99 under load ${ms(r.echoLoad.p99Ms)} ms, ×${r.echoP99VsIdle ?? '—'} idle ` +
          `(${ms(r.echoIdle.p99Ms)} ms) ${target('workP99VsIdle', '<=')}`,
      );
    }
    if (r.healthzP99VsIdle === null || r.healthzP99VsIdle > limit) {
      misses.push(
        `/healthz p99 under load ${ms(r.healthzLoad.p99Ms)} ms, ×${r.healthzP99VsIdle ?? '—'} idle ` +
          `(${ms(r.healthzIdle.p99Ms)} ms) ${target('workP99VsIdle', '<=')}`,
      );
    }
    if (r.mismatched + r.lost + r.healthzFailed > 0) {
      misses.push(
        `${r.mismatched} wrong replies, ${r.lost} messages lost, ${r.healthzFailed} /healthz not 200`,
      );
    }
    const not1001 = r.sockets - (r.codes['1001'] ?? 0);
    if (not1001 > 0 || r.stillOpen > 0) {
      misses.push(
        `drain under load: ${not1001} sockets not closed with 1001 (${codesText(r.codes)})`,
      );
    }
    if (r.exitStatus !== 'exit 0') misses.push(`drain under load: wsdrain ${r.exitStatus}`);
    const budget = r.budgetMs ?? 0;
    if (r.exitMs === null || r.exitMs > TARGETS.drainExitVsBudget * budget) {
      misses.push(
        `drain under load: exit ${ms(r.exitMs)} ms after SIGTERM, budget ${budget} ms ` +
          target('drainExitVsBudget', '<='),
      );
    }
  }
  return misses;
}

function describe(r: WorkRun): string {
  const l = (x: Latency): string => `p50 ${x.p50Ms ?? '—'} p99 ${x.p99Ms ?? '—'} ms`;
  return (
    `${r.workPerSec} work replies/s (${l(r.work)}); echo idle ${l(r.echoIdle)}, load ` +
    `${l(r.echoLoad)} (×${r.echoP99VsIdle ?? '—'}); /healthz idle ${l(r.healthzIdle)}, load ` +
    `${l(r.healthzLoad)} (×${r.healthzP99VsIdle ?? '—'}); ping idle ${l(r.pingIdle)}, load ` +
    `${l(r.pingLoad)} (×${r.pingP99VsIdle ?? '—'}); drain: last close ${r.lastCloseMs ?? 'never'} ` +
    `ms, exit ${r.exitMs ?? 'never'} ms (${r.exitStatus}), codes ${JSON.stringify(r.codes)}` +
    (r.mismatched + r.lost ? `, ${r.mismatched} wrong replies, ${r.lost} lost` : '')
  );
}

export function workSection(w: WorkResult): string[] {
  const o = w.options;
  const x = (v: number | null): string => (v === null ? '—' : `×${v}`);
  const p = (a: Latency, b: Latency, r: number | null): string =>
    `${ms(a.p99Ms)} → ${ms(b.p99Ms)} (${x(r)})`;
  const lines = [
    '## Work: the pool’s worth',
    '',
    `${o.heavy} connections sending work (${o.workMs} ms of CPU a message, ${o.window} ` +
      `outstanding each) while ${o.light} others echo (a message every ${o.echoEveryMs} ms ` +
      `each), ${o.workers} workers: wsdrain (the work on its pool threads) and a plain ws server ` +
      'of the same shape running the same handler on its event loop (*inline*). ' +
      `${o.idleS} s idle (echoes only), ${o.loadS} s under load, then SIGTERM with the work ` +
      `running. /healthz (a fresh connection) and a ping on one connection per worker every ` +
      `${o.probeEveryMs} ms. Round trips in ms, p99 idle → under load (× idle); *work/s*: work ` +
      'replies a second under load; drain: signal to exit (budget: wsdrain’s --drain-timeout).',
    '',
    '| server | work/s | work p50 / p99 | echo p99 | /healthz p99 | ping p99 | drain: last close | exit (budget) | codes |',
    '|---|--:|--:|--:|--:|--:|--:|--:|---|',
  ];
  for (const r of w.runs) {
    lines.push(
      `| ${r.server === 'wsdrain' ? '**wsdrain**' : 'inline (plain ws)'} | ${cell(r.workPerSec)} | ` +
        `${ms(r.work.p50Ms)} / ${ms(r.work.p99Ms)} | ${p(r.echoIdle, r.echoLoad, r.echoP99VsIdle)} | ` +
        `${p(r.healthzIdle, r.healthzLoad, r.healthzP99VsIdle)} | ${p(r.pingIdle, r.pingLoad, r.pingP99VsIdle)} | ` +
        `${ms(r.lastCloseMs)} | ${ms(r.exitMs)} (${r.budgetMs ?? 'none'}) | ${codesText(r.codes)} |`,
    );
  }
  if (w.failures.length) lines.push('', ...w.failures.map((f) => `- failed to run: ${f}`));
  lines.push(
    '',
    `Targets (wsdrain): echo and /healthz p99 under load ≤ ${TARGETS.workP99VsIdle}× idle, every ` +
      'reply the right one, the drain under load: every socket closed with 1001, exit 0 within ' +
      `its budget — ${verdict(w.misses)}.`,
  );
  return lines;
}
