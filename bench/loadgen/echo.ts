/**
 * Parent side of the echo throughput load (echo-client.ts): `connections` sockets spread over
 * `processes` client processes (source addresses 127.0.<201+k>.*), started together; the
 * replies each counted in its own measuring window are summed.
 */
import { fileURLToPath } from 'node:url';
import { ChildGroup, cliArgs, spread } from '../lib/child.js';
import { treeCpuMs } from '../lib/procfs.js';
import { maxOrNull } from '../lib/stats.js';

const CLIENT = fileURLToPath(new URL('./echo-client.ts', import.meta.url));

export type ToEcho = { type: 'start' } | { type: 'stop' };
export type FromEcho =
  | { type: 'ready'; connected: number }
  | { type: 'results'; results: EchoResults };

export interface EchoResults {
  connections: number;
  /** Replies inside the measuring window. */
  replies: number;
  windowMs: number;
  repliesTotal: number;
  sent: number;
  /** Replies that were not the expected text of the expected size and sequence number. */
  mismatches: number;
  /** Sockets closed while running. */
  closed: number;
  rttP50Ms: number | null;
  rttP99Ms: number | null;
}

export interface EchoLoadOptions {
  url: string;
  connections: number;
  window: number;
  size: number;
  warmupMs: number;
  durationMs: number;
  processes: number;
}

export interface EchoTotals extends EchoResults {
  /** Sum over processes of replies / window. */
  perSecond: number;
  /** CPU time of the client processes from start to results, ms. */
  clientCpuMs: number;
}

/** Runs one measurement; resolves with the totals. */
export async function runEchoLoad(o: EchoLoadOptions): Promise<EchoTotals> {
  const procs = new ChildGroup<ToEcho, FromEcho, { ready: boolean; results?: EchoResults }>(
    'echo',
    20,
  );
  const k = Math.max(1, Math.min(o.processes, o.connections));
  try {
    spread(o.connections, k).forEach((connections, i) => {
      const args = cliArgs({
        url: o.url,
        connections,
        window: o.window,
        size: o.size,
        warmup: o.warmupMs,
        duration: o.durationMs,
        'addr-prefix': `127.0.${201 + i}`,
      });
      procs.add(CLIENT, args, { ready: false }, (p, m) => {
        if (m.type === 'ready') p.ready = true;
        else p.results = m.results;
      });
    });
    await procs.until(() => procs.members.every((p) => p.ready), 60_000, 'connect');
    const clientCpu = (): number => procs.sum((p) => treeCpuMs(p.proc.child.pid!));
    const cpuBefore = clientCpu();
    procs.broadcast({ type: 'start' });
    await procs.until(
      () => procs.members.every((p) => p.results),
      o.warmupMs + o.durationMs + 30_000,
      'run',
    );
    const clientCpuMs = clientCpu() - cpuBefore;
    const rs = procs.members.map((p) => p.results!);
    const sum = (f: (r: EchoResults) => number): number => rs.reduce((s, r) => s + f(r), 0);
    return {
      connections: sum((r) => r.connections),
      replies: sum((r) => r.replies),
      windowMs: Math.round(Math.max(...rs.map((r) => r.windowMs))),
      repliesTotal: sum((r) => r.repliesTotal),
      sent: sum((r) => r.sent),
      mismatches: sum((r) => r.mismatches),
      closed: sum((r) => r.closed),
      // across processes: the worst process's percentile (one process in the presets)
      rttP50Ms: maxOrNull(rs.map((r) => r.rttP50Ms)),
      rttP99Ms: maxOrNull(rs.map((r) => r.rttP99Ms)),
      perSecond: Math.round(sum((r) => (r.replies * 1000) / r.windowMs)),
      clientCpuMs,
    };
  } finally {
    await procs.stop({ type: 'stop' });
  }
}
