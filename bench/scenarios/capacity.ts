/**
 * Capacity scenario (full run, or `--capacity`): `sockets` idle sockets on wsdrain with
 * `workers` workers, from client processes of at most `perProcess` sockets each (under the
 * 20,000 open-files limit). Server memory per idle socket = (VmRSS of the primary and its
 * workers after connecting - the same before) / sockets, from /proc/<pid>/status. Then
 * SIGTERM: every socket must close with 1001 within --drain-timeout, and the server exit 0.
 * Then the same again with subscribed sockets: wsdrain with the bench's app loaded, every
 * socket a wsdrain.v1 client subscribed to a topic of its own (the RSS per subscribed socket
 * is reported next to the idle one, not judged).
 * Targets: <= kibPerIdleSocket (10) KiB per idle socket; every socket closed clean with 1001;
 * exit 0 within drainExitVsBudget x --drain-timeout (both passes).
 */
import { A_TOPIC_EACH, type Crowd, MAX_PER_PROCESS, withLoad } from '../crowd/index.js';
import { now, sleep } from '../lib/proc.js';
import { treeRss } from '../lib/procfs.js';
import { codesText, judged, ms, verdict } from '../lib/report.js';
import { FANOUT_APP, Server } from '../lib/server.js';
import { closedBy, round1 } from '../lib/stats.js';
import { TARGETS, target } from '../lib/targets.js';

export interface CapacityOptions {
  sockets: number;
  workers: number;
  perProcess: number;
  drainTimeoutMs: number;
  /** Wait after the last connect before reading RSS, ms. */
  settleMs: number;
}

export const CAPACITY_DEFAULTS: CapacityOptions = {
  sockets: 30_000,
  workers: 4,
  perProcess: MAX_PER_PROCESS,
  drainTimeoutMs: 10_000,
  settleMs: 2000,
};

export interface CapacityResult {
  options: CapacityOptions;
  connected: number;
  failed: number;
  /** Sum of VmRSS over the primary and its workers, bytes. */
  rssBefore: number;
  rssAfter: number;
  /** pid -> [before, after] bytes. */
  rssByPid: Record<string, [number | null, number | null]>;
  kibPerSocket: number | null;
  /** Drain after SIGTERM: ms since the signal. */
  p50Ms: number | null;
  p99Ms: number | null;
  lastCloseMs: number | null;
  exitMs: number | null;
  exitStatus: string;
  codes: Record<string, number>;
  clean: number;
  forced: number;
  stillOpen: number;
  misses: string[];
  /** The same with subscribed sockets (a topic of its own each, an app loaded). */
  subscribed?: Omit<CapacityResult, 'options' | 'subscribed'>;
}

export async function runCapacity(opts: CapacityOptions): Promise<CapacityResult> {
  const pass = (subscribed: boolean): Promise<CapacityResult> =>
    withLoad(
      Server.wsdrain({
        workers: opts.workers,
        drainTimeoutMs: opts.drainTimeoutMs,
        flags: subscribed ? ['--app', FANOUT_APP] : [],
      }),
      {
        perProcess: opts.perProcess,
        connectTimeoutMs: 300_000,
        ...(subscribed ? { fanout: A_TOPIC_EACH } : {}),
      },
      (server, crowd) => measure(opts, server, crowd, subscribed),
    );
  const idle = await pass(false);
  const { options: _, ...subscribed } = await pass(true);
  const result: CapacityResult = { ...idle, subscribed };
  result.misses = [
    ...idle.misses,
    ...subscribed.misses
      .filter((m) => !m.includes('kibPerIdleSocket'))
      .map((m) => `subscribed sockets: ${m}`),
  ];
  return result;
}

async function measure(
  opts: CapacityOptions,
  server: Server,
  crowd: Crowd,
  subscribed: boolean,
): Promise<CapacityResult> {
  await sleep(1000); // let the workers' start-up garbage settle
  const before = treeRss(server.pid);
  const connected = await crowd.connect(opts.sockets);
  await sleep(opts.settleMs);
  server.assertUp();
  const after = treeRss(server.pid);
  const rssByPid: CapacityResult['rssByPid'] = {};
  for (const p of new Set([...Object.keys(before.byPid), ...Object.keys(after.byPid)])) {
    rssByPid[p] = [before.byPid[Number(p)] ?? null, after.byPid[Number(p)] ?? null];
  }

  const t0 = crowd.phase('drain');
  server.signal('SIGTERM');
  const giveUpAt = t0 + opts.drainTimeoutMs + 5000;
  await crowd.waitAllClosed(giveUpAt - now());
  await server.waitExit(Math.max(0, giveUpAt - now()));
  const r = await crowd.results();
  const p = r.phases.drain!;
  const total = connected - (r.phases['']?.closeTimes.length ?? 0);
  const result: CapacityResult = {
    options: opts,
    connected,
    failed: r.failed,
    rssBefore: before.total,
    rssAfter: after.total,
    rssByPid,
    kibPerSocket: connected > 0 ? round1((after.total - before.total) / 1024 / connected) : null,
    p50Ms: closedBy(p.closeTimes, total, 0.5),
    p99Ms: closedBy(p.closeTimes, total, 0.99),
    lastCloseMs: r.open === 0 ? closedBy(p.closeTimes, total, 1) : null,
    exitMs: server.exitAt === undefined ? null : round1(server.exitAt - t0),
    exitStatus: server.exitStatus ?? 'still running (killed)',
    codes: p.codes,
    clean: p.closeTimes.length - (p.codes['1006'] ?? 0),
    forced: p.codes['1006'] ?? 0,
    stillOpen: r.open,
    misses: [],
  };
  return judged(
    subscribed ? 'capacity, subscribed sockets' : 'capacity',
    result,
    capacityMisses,
    describeCapacity,
  );
}

export function capacityMisses(r: CapacityResult): string[] {
  const misses: string[] = [];
  if (r.connected < r.options.sockets) {
    misses.push(
      `${r.options.sockets - r.connected} of ${r.options.sockets} sockets never connected`,
    );
  }
  if (r.kibPerSocket === null || r.kibPerSocket > TARGETS.kibPerIdleSocket) {
    misses.push(`${r.kibPerSocket ?? '—'} KiB per idle socket ${target('kibPerIdleSocket', '<=')}`);
  }
  const not1001 = r.connected - (r.codes['1001'] ?? 0);
  if (not1001 > 0) misses.push(`${not1001} sockets not closed with 1001`);
  if (r.exitStatus !== 'exit 0') misses.push(`server ${r.exitStatus}`);
  if (r.exitMs === null || r.exitMs > TARGETS.drainExitVsBudget * r.options.drainTimeoutMs) {
    misses.push(
      `exit ${r.exitMs ?? 'never'} ms (budget ${r.options.drainTimeoutMs} ms) ${target('drainExitVsBudget', '<=')}`,
    );
  }
  return misses;
}

function describeCapacity(r: CapacityResult): string {
  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const t = (v: number | null): string => (v === null ? 'never' : `${v} ms`);
  return (
    `${r.connected} sockets on ${r.options.workers} workers: RSS ${mib(r.rssBefore)} -> ` +
    `${mib(r.rssAfter)}, ${r.kibPerSocket} KiB per socket (target <= ${TARGETS.kibPerIdleSocket}); ` +
    `SIGTERM: p50 ${t(r.p50Ms)}, p99 ${t(r.p99Ms)}, last ${t(r.lastCloseMs)}, exit ` +
    `${t(r.exitMs)} (${r.exitStatus}), codes ${JSON.stringify(r.codes)}` +
    (r.misses.length ? `; MISSED: ${r.misses.join('; ')}` : '; targets met')
  );
}

export function capacitySection(c: CapacityResult): string[] {
  const mib = (b: number | null): string => (b === null ? '—' : (b / 2 ** 20).toFixed(1));
  const o = c.options;
  const row = (what: string, p: Omit<CapacityResult, 'options' | 'subscribed'>): string =>
    `| ${what} | ${p.connected} | ${mib(p.rssBefore)} | ${mib(p.rssAfter)} | ${p.kibPerSocket ?? '—'} | ` +
    `${ms(p.p50Ms)} | ${ms(p.p99Ms)} | ${ms(p.lastCloseMs)} | ${ms(p.exitMs)} (${p.exitStatus}) | ` +
    `${codesText(p.codes)} | ${p.clean} | ${p.forced} |`;
  const perProcess = (p: Omit<CapacityResult, 'options' | 'subscribed'>): string =>
    Object.entries(p.rssByPid)
      .map(([pid, [b, a]]) => `${pid}: ${mib(b)} → ${mib(a)}`)
      .join(', ');
  const s = c.subscribed;
  return [
    '## Capacity: idle sockets',
    '',
    `${c.connected} idle sockets (${c.failed} failed) on ${o.workers} workers, client processes ` +
      `of ≤ ${o.perProcess} sockets; RSS = VmRSS of the primary + workers, read ${o.settleMs} ms ` +
      `after the last connect. Then SIGTERM, --drain-timeout ${o.drainTimeoutMs} ms.` +
      (s
        ? ' *subscribed*: the same with the bench’s app loaded, every socket a wsdrain.v1 ' +
          'client subscribed to a topic of its own.'
        : ''),
    '',
    '| sockets | connected | RSS before (MiB) | RSS after (MiB) | KiB per socket | drain p50 | p99 | last close | exit | codes | clean | forced |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|',
    row('idle', c),
    ...(s ? [row('subscribed, a topic each', s)] : []),
    '',
    `Per process (MiB, before → after): idle ${perProcess(c)}` +
      (s ? `; subscribed ${perProcess(s)}` : ''),
    '',
    `Targets: ≤ ${TARGETS.kibPerIdleSocket} KiB per idle socket, every socket closed with 1001, ` +
      `exit 0 within the budget — ${verdict(c.misses)}.`,
  ];
}
