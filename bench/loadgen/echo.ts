/**
 * Parent side of the echo throughput load (echo-client.ts): `connections` sockets spread over
 * `processes` client processes (source addresses 127.0.<201+k>.*), started together; the
 * replies each counted in its own measuring window are summed.
 */
import { fileURLToPath } from 'node:url';
import { ChildProc, until } from '../lib/child.js';
import { treeCpuMs } from '../lib/procfs.js';

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
  const procs: { proc: ChildProc<ToEcho, FromEcho>; ready: boolean; results?: EchoResults }[] = [];
  const k = Math.max(1, Math.min(o.processes, o.connections));
  try {
    for (let i = 0; i < k; i++) {
      const connections = Math.floor(o.connections / k) + (i < o.connections % k ? 1 : 0);
      const args = [
        ['--url', o.url],
        ['--connections', connections],
        ['--window', o.window],
        ['--size', o.size],
        ['--warmup', o.warmupMs],
        ['--duration', o.durationMs],
        ['--addr-prefix', `127.0.${201 + i}`],
      ].flat();
      const p: (typeof procs)[number] = { ready: false } as (typeof procs)[number];
      p.proc = new ChildProc<ToEcho, FromEcho>(CLIENT, args, (m) => {
        if (m.type === 'ready') p.ready = true;
        else p.results = m.results;
      });
      procs.push(p);
    }
    const dead = (): string | undefined =>
      procs.some((p) => p.proc.died) ? 'an echo client process exited' : undefined;
    await until(() => procs.every((p) => p.ready), 60_000, 'echo connect', dead, 20);
    const clientCpu = (): number => procs.reduce((s, p) => s + treeCpuMs(p.proc.child.pid!), 0);
    const cpuBefore = clientCpu();
    for (const p of procs) p.proc.send({ type: 'start' });
    await until(
      () => procs.every((p) => p.results),
      o.warmupMs + o.durationMs + 30_000,
      'echo run',
      dead,
      20,
    );
    const clientCpuMs = clientCpu() - cpuBefore;
    const rs = procs.map((p) => p.results!);
    const sum = (f: (r: EchoResults) => number): number => rs.reduce((s, r) => s + f(r), 0);
    const maxOf = (f: (r: EchoResults) => number | null): number | null => {
      const xs = rs.map(f).filter((x): x is number => x !== null);
      return xs.length ? Math.max(...xs) : null;
    };
    return {
      connections: sum((r) => r.connections),
      replies: sum((r) => r.replies),
      windowMs: Math.round(Math.max(...rs.map((r) => r.windowMs))),
      repliesTotal: sum((r) => r.repliesTotal),
      sent: sum((r) => r.sent),
      mismatches: sum((r) => r.mismatches),
      closed: sum((r) => r.closed),
      // across processes: the worst process's percentile (one process in the presets)
      rttP50Ms: maxOf((r) => r.rttP50Ms),
      rttP99Ms: maxOf((r) => r.rttP99Ms),
      perSecond: Math.round(sum((r) => (r.replies * 1000) / r.windowMs)),
      clientCpuMs,
    };
  } finally {
    await Promise.all(procs.map((p) => p.proc.stop({ type: 'stop' })));
  }
}
