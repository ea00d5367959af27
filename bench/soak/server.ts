/**
 * The wsdrain server under soak: `node dist/cli.js start ...` in its own process group
 * (tracked by lib/procs.ts, so it dies with the soak), its JSON log lines read for the events
 * the soak waits for (roll done, each rolled worker's drain report, the final report) and for
 * warnings.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { now } from '../lib/clock.js';
import { WSDRAIN_CLI, WsdrainChild } from '../lib/wsdrain.js';

export { freePort } from '../lib/net.js';
export { WSDRAIN_CLI } from '../lib/wsdrain.js';

export interface ServerSpec {
  /** The wsdrain CLI to run. @default dist/cli.js of this checkout */
  cli?: string;
  port: number;
  workers: number;
  drainTimeoutMs: number;
  logLevel: string;
  /** Every stdout and stderr line of the server goes here too. */
  logFile: string;
}

/** A drain report as the worker sends it (src/worker/drain.ts DrainReport). */
export type DrainReport = Record<string, unknown> & {
  sockets?: number;
  clean?: number;
  terminated?: number;
  dropped?: number;
  late?: number;
  lateUpgrades?: number;
  inflightCompleted?: number;
  durationMs?: number;
};

export interface RollDone {
  /** Epoch ms the line was read. */
  at: number;
  pids: number[];
  durationMs: number | undefined;
  rolled: number | undefined;
}

export interface RolledWorker {
  at: number;
  pid: number;
  report: DrainReport;
}

export class WsdrainProcess extends WsdrainChild {
  readonly pid: number;
  readonly rollsDone: RollDone[] = [];
  readonly rolledWorkers: RolledWorker[] = [];
  finalReport: DrainReport | undefined;
  /** Log lines at warn and above (the first 200), and non-JSON output. */
  readonly warnings: string[] = [];
  #stderr = '';
  readonly #log: WriteStream;

  constructor(readonly spec: ServerSpec) {
    const args = [spec.cli ?? WSDRAIN_CLI, 'start', '--port', spec.port, '--host', '127.0.0.1']
      .concat(['--workers', spec.workers, '--drain-timeout', spec.drainTimeoutMs])
      .concat(['--log-level', spec.logLevel])
      .map(String);
    super(spec.port, args, { everyMs: 50 });
    this.pid = this.child.pid ?? 0;
    this.#log = createWriteStream(spec.logFile);
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.#log.write(`${line}\n`);
      this.#onLine(line);
    });
    this.child.stderr?.on('data', (chunk: Buffer) => {
      this.#log.write(chunk);
      this.#stderr = (this.#stderr + chunk.toString()).slice(-4000);
    });
  }

  get stderr(): string {
    return this.#stderr.trim();
  }

  get output(): string {
    return this.stderr;
  }

  #onLine(line: string): void {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(line) as Record<string, unknown>;
    } catch {
      if (line.trim() && this.warnings.length < 200) this.warnings.push(line.slice(0, 300));
      return;
    }
    const text = String(m.msg ?? '');
    const level = String(m.level ?? '');
    if (['warn', 'error', 'fatal'].includes(level) && this.warnings.length < 200) {
      this.warnings.push(`${level} ${m.role}/${m.pid}: ${text}`.slice(0, 300));
    }
    if (m.role !== 'primary') return;
    if (text.startsWith('rolling restart done')) {
      this.rollsDone.push({
        at: now(),
        pids: (m.pids as number[] | undefined) ?? [],
        durationMs: m.durationMs as number | undefined,
        rolled: m.rolled as number | undefined,
      });
    } else if (text.startsWith('rolled worker') && m.report) {
      this.rolledWorkers.push({
        at: now(),
        pid: m.workerPid as number,
        report: m.report as DrainReport,
      });
    } else if (text.startsWith('drained') && m.report) {
      this.finalReport = m.report as DrainReport;
    }
  }
}
