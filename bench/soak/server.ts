/**
 * The wsdrain server under soak: `node dist/cli.js start ...` in its own process group
 * (tracked by lib/procs.ts, so it dies with the soak), its JSON log lines read for the events
 * the soak waits for (roll done, each rolled worker's drain report, the final report) and for
 * warnings.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { now, sleep } from '../lib/clock.js';
import { killGroup, track } from '../lib/procs.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const WSDRAIN_CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

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

export class WsdrainProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  exitAt: number | undefined;
  exitCode: number | null = null;
  exitSignal: string | null = null;
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
    this.child = spawn(process.execPath, args, {
      cwd: ROOT,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    track(this.child);
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
    this.child.on('exit', (code, signal) => {
      this.exitAt = now();
      this.exitCode = code;
      this.exitSignal = signal;
    });
  }

  get stderr(): string {
    return this.#stderr.trim();
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

  /** Resolves once `GET /readyz` answers 200. */
  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = now() + timeoutMs;
    while (now() < deadline && this.exitAt === undefined) {
      if ((await httpStatus(this.spec.port, '/readyz')) === 200) return;
      await sleep(50);
    }
    throw new Error(
      `wsdrain did not become ready on port ${this.spec.port} (${this.exitAt === undefined ? 'timeout' : `exit ${this.exitCode ?? this.exitSignal}`}):\n${this.stderr}`,
    );
  }

  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  async waitExit(timeoutMs: number): Promise<boolean> {
    const deadline = now() + timeoutMs;
    while (this.exitAt === undefined && now() < deadline) await sleep(5);
    return this.exitAt !== undefined;
  }

  kill(): void {
    killGroup(this.child);
  }
}

function httpStatus(port: number, path: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = get({ host: '127.0.0.1', port, path, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
  });
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}
