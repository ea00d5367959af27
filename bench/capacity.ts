/**
 * Capacity scenario (full run, or `--capacity`): `sockets` idle sockets on wsdrain with
 * `workers` workers, from client processes of at most `perProcess` sockets each (under the
 * 20,000 open-files limit). Server memory per idle socket = (VmRSS of the primary and its
 * workers after connecting - the same before) / sockets, from /proc/<pid>/status. Then
 * SIGTERM: every socket must close with 1001 within --drain-timeout, and the server exit 0.
 * Targets: <= 10 KiB per idle socket; every socket closed clean with 1001.
 */
import { now, sleep } from './lib/clock.js';
import { treeRss } from './lib/procfs.js';
import { assertUp, judge, withWsdrain } from './lib/scenario.js';
import { closedBy, round1 } from './lib/stats.js';
import { TARGETS } from './lib/targets.js';
import { Load, MAX_PER_PROCESS } from './loadgen/index.js';

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

const TARGET_KIB_PER_SOCKET = TARGETS.kibPerIdleSocket;

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
}

export function runCapacity(opts: CapacityOptions): Promise<CapacityResult> {
  const spec = { workers: opts.workers, drainTimeoutMs: opts.drainTimeoutMs };
  const newLoad = (url: string): Load =>
    new Load({ url, perProcess: opts.perProcess, connectTimeoutMs: 300_000 });
  return withWsdrain(spec, newLoad, async (server, load) => {
    await sleep(1000); // let the workers' start-up garbage settle
    const pid = server.child.pid!;
    const before = treeRss(pid);
    const connected = await load.connect(opts.sockets);
    await sleep(opts.settleMs);
    assertUp(server);
    const after = treeRss(pid);
    const rssByPid: CapacityResult['rssByPid'] = {};
    for (const p of new Set([...Object.keys(before.byPid), ...Object.keys(after.byPid)])) {
      rssByPid[p] = [before.byPid[Number(p)] ?? null, after.byPid[Number(p)] ?? null];
    }

    const t0 = load.mark();
    server.signal('SIGTERM');
    const giveUpAt = t0 + opts.drainTimeoutMs + 5000;
    await load.waitAllClosed(giveUpAt - now());
    await server.waitExit(Math.max(0, giveUpAt - now()));
    const r = await load.results();
    const total = connected - r.early;
    const result: CapacityResult = {
      options: opts,
      connected,
      failed: r.failed,
      rssBefore: before.total,
      rssAfter: after.total,
      rssByPid,
      kibPerSocket: connected > 0 ? round1((after.total - before.total) / 1024 / connected) : null,
      p50Ms: closedBy(r.closeTimes, total, 0.5),
      p99Ms: closedBy(r.closeTimes, total, 0.99),
      lastCloseMs: r.open === 0 ? closedBy(r.closeTimes, total, 1) : null,
      exitMs: server.exitAt === undefined ? null : round1(server.exitAt - t0),
      exitStatus: server.exitStatus ?? 'still running (killed)',
      codes: r.codes,
      clean: r.clean,
      forced: r.forced,
      stillOpen: r.open,
      misses: [],
    };
    return judge('capacity', result, capacityMisses, describeCapacity);
  });
}

export function capacityMisses(r: CapacityResult): string[] {
  const misses: string[] = [];
  if (r.connected < r.options.sockets) {
    misses.push(
      `${r.options.sockets - r.connected} of ${r.options.sockets} sockets never connected`,
    );
  }
  if (r.kibPerSocket === null || r.kibPerSocket > TARGET_KIB_PER_SOCKET) {
    misses.push(
      `${r.kibPerSocket ?? '—'} KiB per idle socket (target <= ${TARGET_KIB_PER_SOCKET})`,
    );
  }
  const not1001 = r.connected - (r.codes['1001'] ?? 0);
  if (not1001 > 0) misses.push(`${not1001} sockets not closed with 1001`);
  if (r.exitStatus !== 'exit 0') misses.push(`server ${r.exitStatus}`);
  if (r.exitMs === null || r.exitMs > r.options.drainTimeoutMs) {
    misses.push(`exit ${r.exitMs ?? 'never'} ms (budget ${r.options.drainTimeoutMs} ms)`);
  }
  return misses;
}

export function describeCapacity(r: CapacityResult): string {
  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const ms = (v: number | null): string => (v === null ? 'never' : `${v} ms`);
  return (
    `${r.connected} sockets on ${r.options.workers} workers: RSS ${mib(r.rssBefore)} -> ` +
    `${mib(r.rssAfter)}, ${r.kibPerSocket} KiB per socket (target <= ${TARGET_KIB_PER_SOCKET}); ` +
    `SIGTERM: p50 ${ms(r.p50Ms)}, p99 ${ms(r.p99Ms)}, last ${ms(r.lastCloseMs)}, exit ` +
    `${ms(r.exitMs)} (${r.exitStatus}), codes ${JSON.stringify(r.codes)}` +
    (r.misses.length ? `; MISSED: ${r.misses.join('; ')}` : '; targets met')
  );
}
