/**
 * The servers under test, each in its own process group (killed with the bench, workers
 * included): wsdrain (`dist/cli.js start`, ready when `GET /readyz` answers 200, its pino JSON
 * log lines read into a {@link WsdrainLog}) and the baselines (baselines/<name>.ts, ready when
 * they print `READY <port>`).
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { DrainReport } from 'wsdrain';
import { freePort, probe } from './net.js';
import { killGroup, now, ROOT, sleep, track, within } from './proc.js';

export const WSDRAIN_CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

/** The bench's wsdrain app (`--app`): topics for wsdrain.v1 clients, a publisher by query. */
export const FANOUT_APP = fileURLToPath(new URL('../baselines/fanout-app.mjs', import.meta.url));

export interface WsdrainSpec {
  workers: number;
  drainTimeoutMs: number;
  /** More `wsdrain start` flags, e.g. ['--threads', 1]. */
  flags?: (string | number)[];
  /** `info` shows the roll and drain reports. @default 'warn' */
  logLevel?: string;
  /** Another build's cli.js. @default $BENCH_WSDRAIN_CLI, else dist/cli.js of this checkout */
  cli?: string;
  /** Every line the server prints is also written to this file. */
  logFile?: string;
  /** Serve wss:// and https with this key and certificate (bench/lib/tls.ts). */
  tls?: { cert: string; key: string };
}

/** A drain report as wsdrain logs it and writes it to `--report` (the primary's adds totals). */
export type Report = Partial<DrainReport> & { workersKilled?: number; workersLost?: number };

/**
 * What the bench reads from wsdrain's log: the end of each roll, each rolled worker's drain
 * report, the final drain report, and the warnings.
 */
export class WsdrainLog {
  readonly rollsDone: { at: number; pids: number[]; durationMs?: number; rolled?: number }[] = [];
  readonly rolled: { at: number; pid: number; report: Report }[] = [];
  finalReport: Report | undefined;
  /** Lines at warn level and above (`<level> <role>/<pid>: <msg>`) and non-JSON lines, first 200. */
  readonly warnings: string[] = [];

  /** Reads one line printed at `at` (epoch ms). */
  read(line: string, at: number): void {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(line) as Record<string, unknown>;
    } catch {
      if (line.trim() && this.warnings.length < 200) this.warnings.push(line.slice(0, 300));
      return;
    }
    const msg = String(m.msg ?? '');
    // wsdrain's logger writes the level as a word (src/log.ts); pino's default is a number.
    const level = m.level;
    const warn =
      typeof level === 'number' ? level >= 40 : ['warn', 'error', 'fatal'].includes(String(level));
    if (warn && this.warnings.length < 200) {
      this.warnings.push(`${level} ${m.role}/${m.pid}: ${msg}`.slice(0, 300));
    }
    if (m.role === 'worker') return; // the primary's lines (or the single process's)
    const report = m.report as Report | undefined;
    if (msg.startsWith('rolling restart done')) {
      const { pids, durationMs, rolled } = m as {
        pids?: number[];
        durationMs?: number;
        rolled?: number;
      };
      this.rollsDone.push({ at, pids: pids ?? [], durationMs, rolled });
    } else if (msg.startsWith('rolled worker') && report) {
      this.rolled.push({ at, pid: Number(m.workerPid), report });
    } else if (msg.startsWith('drained') && report) {
      this.finalReport = report;
    }
  }
}

export class Server {
  readonly pid: number;
  /** Epoch ms of the exit, and how. */
  exitAt: number | undefined;
  exitCode: number | null = null;
  exitSignal: string | null = null;
  readonly log = new WsdrainLog();
  readonly #child;
  #tail = '';
  readonly #watchers = new Set<(line: string, at: number) => void>();

  /** Starts wsdrain on a free port of 127.0.0.1 (call ready() next). */
  static async wsdrain(spec: WsdrainSpec): Promise<Server> {
    const port = await freePort();
    const cli = spec.cli ?? process.env.BENCH_WSDRAIN_CLI ?? WSDRAIN_CLI;
    const args = [cli, 'start', '--port', port, '--host', '127.0.0.1']
      .concat(['--workers', spec.workers, '--drain-timeout', spec.drainTimeoutMs])
      .concat(['--log-level', spec.logLevel ?? 'warn', ...(spec.flags ?? [])])
      .concat(spec.tls ? ['--tls-cert', spec.tls.cert, '--tls-key', spec.tls.key] : [])
      .map(String);
    return new Server('wsdrain', port, args, spec.logFile, spec.tls !== undefined);
  }

  /** Starts a baseline of baselines/ (`raw-echo`, `terminate`, ...) on a free port. */
  static async baseline(name: string, workers: number): Promise<Server> {
    const port = await freePort();
    const file = `bench/baselines/${name}.ts`;
    return new Server(name, port, [
      '--import',
      'tsx',
      file,
      '--port',
      `${port}`,
      '--workers',
      `${workers}`,
    ]);
  }

  private constructor(
    readonly name: string,
    readonly port: number,
    /** Node's arguments (the CLI or script first). */
    readonly args: string[],
    logFile?: string,
    /** It serves wss:// and https. */
    readonly tls = false,
  ) {
    const nodeArgs =
      name === 'wsdrain' ? (process.env.BENCH_SERVER_NODE_ARGS?.split(' ') ?? []) : [];
    this.#child = spawn(process.execPath, [...nodeArgs, ...args], {
      cwd: ROOT,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    track(this.#child);
    this.pid = this.#child.pid ?? 0;
    const file = logFile ? createWriteStream(logFile) : undefined;
    let partial = '';
    const keep = (text: string): void => {
      file?.write(text);
      this.#tail = (this.#tail + text).slice(-4000);
    };
    this.#child.stdout.on('data', (chunk: Buffer) => {
      const at = now();
      const text = chunk.toString();
      keep(text);
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        this.log.read(line, at);
        for (const w of this.#watchers) w(line, at);
      }
    });
    this.#child.stderr.on('data', (chunk: Buffer) => keep(chunk.toString()));
    this.#child.on('exit', (code, signal) => {
      this.exitAt = now();
      this.exitCode = code;
      this.exitSignal = signal;
      file?.end();
    });
  }

  /** `exit <code>` or the signal, once it has exited. */
  get exitStatus(): string | undefined {
    return this.exitAt === undefined ? undefined : (this.exitSignal ?? `exit ${this.exitCode}`);
  }

  /** The last output, for error messages. */
  get output(): string {
    return this.#tail.trim();
  }

  /** Calls `fn` with every complete stdout line from now on; returns what stops it. */
  onLine(fn: (line: string, at: number) => void): () => void {
    this.#watchers.add(fn);
    return () => this.#watchers.delete(fn);
  }

  /** Resolves once the server accepts WebSocket connections on every worker. */
  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = now() + timeoutMs;
    while (now() < deadline && this.exitAt === undefined) {
      const ok =
        this.name === 'wsdrain'
          ? (await probe(this.port, '/readyz', this.tls)) === '200'
          : this.#tail.includes(`READY ${this.port}`);
      if (ok) return;
      await sleep(20);
    }
    throw new Error(
      `${this.name} did not become ready on port ${this.port} (${this.exitStatus ?? 'timeout'}):\n${this.output}`,
    );
  }

  /** Throws when the server has exited (before the signal). */
  assertUp(): void {
    if (this.exitAt !== undefined) throw new Error(`${this.name} exited early:\n${this.output}`);
  }

  signal(signal: NodeJS.Signals): void {
    this.#child.kill(signal);
  }

  /** Resolves true once the process has exited, false after timeoutMs. */
  waitExit(timeoutMs: number): Promise<boolean> {
    return within(() => this.exitAt !== undefined, timeoutMs, 'exit');
  }

  /** SIGKILLs the whole process group, as pm2's treekill does. */
  kill(): void {
    killGroup(this.#child);
  }

  /**
   * Stops the server whatever its state. Under BENCH_SERVER_NODE_ARGS (e.g. --cpu-prof)
   * wsdrain gets SIGTERM and 5 s to exit first: profiles are written only on a normal exit.
   */
  async stop(): Promise<void> {
    if (
      this.name === 'wsdrain' &&
      process.env.BENCH_SERVER_NODE_ARGS &&
      this.exitAt === undefined
    ) {
      this.signal('SIGTERM');
      await this.waitExit(5000);
    }
    this.kill();
  }
}
