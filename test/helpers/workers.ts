/**
 * Cluster workers as their log lines show them. The primary's ready line can reach the shared
 * stdout pipe before a worker's own 'worker listening' line: wait for the lines themselves.
 */
import type { LogLine, Running } from './process.js';

const isListening = (l: LogLine): boolean => l.role === 'worker' && l.msg === 'worker listening';

/** Pids of the workers that logged 'worker listening' so far, in order. */
export function listeningPids(lines: LogLine[]): number[] {
  return lines.filter(isListening).map((l) => l.pid as number);
}

/** Waits until `n` workers logged 'worker listening'; resolves with their pids. */
export async function workersListening(
  srv: Running,
  n: number,
  timeoutMs = 15_000,
): Promise<number[]> {
  const t0 = Date.now();
  for (;;) {
    const pids = listeningPids(srv.lines);
    if (pids.length >= n) return pids;
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(
        `waited ${timeoutMs} ms for ${n} 'worker listening' lines, saw ${pids.length}`,
      );
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}
