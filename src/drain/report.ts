/**
 * What a drain did: the report of one server, the sum over a cluster's workers, the line an
 * operator reads, and the JSON file of --report.
 */
import { writeFileSync } from 'node:fs';
import type { Logger } from '../log.js';

/** Buckets of the drain-duration histogram (worker and primary), in seconds. */
export const DRAIN_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** What one server's drain did. */
export interface DrainReport {
  /** WebSocket connections open when the drain began, plus late upgrades. */
  sockets: number;
  /** Closed with a complete closing handshake. */
  clean: number;
  /** Terminated at the deadline (or by a forced stop). */
  terminated: number;
  /** Closed by the peer or the network without a complete handshake before the deadline. */
  dropped: number;
  /** Messages answered during the drain (they were received before their close frame). */
  inflightCompleted: number;
  /** Messages that arrived after their socket's close frame: counted, never answered. */
  late: number;
  /** Messages whose work was still running or queued at the last call: never answered. */
  abandoned: number;
  /** Upgrades that arrived after the listener closed and were closed with the drain code. */
  lateUpgrades: number;
  /** From the start of the drain to the end of phase 6, in ms. */
  durationMs: number;
  /** Close code sent. */
  code: number;
  /** Window the close frames were spread over, in ms (0: all at once). */
  windowMs: number;
}

/** How one worker of a cluster ended its drain. */
export interface WorkerOutcome extends Partial<DrainReport> {
  pid: number;
  exit: { code: number | null; signal: string | null } | undefined;
  /** Killed by the primary (deadline or second signal). */
  killed: boolean;
  /** Gone without a report, and not by the primary's hand. */
  lost: boolean;
}

/** The drain of a whole cluster: the workers' reports summed, and each worker's outcome. */
export interface ClusterReport extends DrainReport {
  /** Workers killed before they reported. */
  workersKilled: number;
  /** Workers that exited without a report, not killed by the primary. */
  workersLost: number;
  workers: WorkerOutcome[];
}

const COUNTS = [
  'sockets',
  'clean',
  'terminated',
  'dropped',
  'inflightCompleted',
  'late',
  'abandoned',
  'lateUpgrades',
] as const;

/** Sums the workers' reports; `durationMs` is the cluster's own, from its signal. */
export function sumReports(
  workers: WorkerOutcome[],
  code: number,
  durationMs: number,
): ClusterReport {
  const out = {
    durationMs,
    code,
    windowMs: Math.max(0, ...workers.map((w) => w.windowMs ?? 0)),
    // A worker that reported its drain and was only slow to exit is not a failure.
    workersKilled: workers.filter((w) => w.killed && w.sockets === undefined).length,
    workersLost: workers.filter((w) => w.lost).length,
    workers,
  } as ClusterReport;
  for (const k of COUNTS) out[k] = workers.reduce((n, w) => n + (w[k] ?? 0), 0);
  return out;
}

/** One-line human summary of a report. */
export function summarize(r: DrainReport): string {
  return `drained ${r.sockets} sockets in ${r.durationMs} ms: ${r.clean} clean, ${r.terminated} terminated, ${r.dropped} dropped; ${r.inflightCompleted} in-flight replies sent, ${r.abandoned} abandoned at the deadline, ${r.late} late messages counted`;
}

/** Writes a report file; a failure is logged, not fatal. */
export function writeReport(log: Logger, file: string, data: unknown): void {
  try {
    writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
  } catch (err) {
    log.error({ err: (err as Error).message, file }, 'cannot write the drain report');
  }
}
