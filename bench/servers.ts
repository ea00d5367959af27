/**
 * The servers under test: the baselines (baselines/*.ts, ready when they print `READY <port>`)
 * and wsdrain itself (dist/cli.js, ready when `GET /readyz` answers 200). Each is started in
 * its own process group so that the group can be killed, workers included.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { now, sleep } from './lib/clock.js';
import { httpStatus } from './lib/net.js';
import { killGroup, track } from './lib/procs.js';

export { freePort } from './lib/net.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const WSDRAIN_CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

export const STRATEGIES = [
  'terminate',
  'ws-close',
  'seed-soft',
  'seed-hard',
  'pm2-default',
  'wsdrain',
] as const;
export type Strategy = (typeof STRATEGIES)[number];

/** pm2's default kill_timeout: SIGKILL this long after the signal. */
export const PM2_KILL_TIMEOUT_MS = 1600;

/** The strategy's own bound from signal to exit (0: none, it does not wait). */
export function budgetMs(strategy: Strategy, drainTimeoutMs: number): number {
  switch (strategy) {
    case 'terminate':
    case 'seed-hard':
      return 0;
    case 'ws-close':
      return 30_000; // ws's default closeTimeout
    case 'seed-soft':
      return 10_000;
    case 'pm2-default':
      return PM2_KILL_TIMEOUT_MS;
    case 'wsdrain':
      return drainTimeoutMs;
  }
}

/** Why a strategy cannot run here, or undefined. */
export function unavailable(strategy: Strategy): string | undefined {
  if (strategy === 'wsdrain' && !existsSync(WSDRAIN_CLI)) {
    return `wsdrain skipped: ${WSDRAIN_CLI} does not exist yet (run \`npm run build\`)`;
  }
  return undefined;
}

/** Servers that are not drain strategies: baselines for other scenarios. */
export type Baseline = 'raw-echo';

export interface ServerSpec {
  strategy: Strategy | Baseline;
  port: number;
  workers: number;
  drainTimeoutMs: number;
  /** wsdrain only: more `wsdrain start` flags, e.g. ['--threads', '1']. */
  extraArgs?: string[];
  /** wsdrain only. @default 'warn' */
  logLevel?: string;
}

/** One line the server printed, with the time it was read (epoch ms, lib/clock.ts). */
export interface OutputLine {
  line: string;
  at: number;
}

export class Server {
  readonly child: ChildProcess;
  /** Epoch ms (lib/clock.ts) at which the process exited. */
  exitAt: number | undefined;
  exitStatus: string | undefined;
  #output = '';
  readonly #watchers = new Set<(l: OutputLine) => void>();

  constructor(readonly spec: ServerSpec) {
    const { strategy, port, workers, drainTimeoutMs } = spec;
    const args =
      strategy === 'wsdrain'
        ? [
            ...(process.env.BENCH_SERVER_NODE_ARGS?.split(' ') ?? []),
            WSDRAIN_CLI,
            'start',
            '--port',
            port,
            '--host',
            '127.0.0.1',
            '--workers',
            workers,
          ]
            .concat(['--drain-timeout', drainTimeoutMs, '--log-level', spec.logLevel ?? 'warn'])
            .map(String)
            .concat(spec.extraArgs ?? [])
        : ['--import', 'tsx', `bench/baselines/${strategy}.ts`, '--port', `${port}`].concat([
            '--workers',
            `${workers}`,
          ]);
    this.child = spawn(process.execPath, args, {
      cwd: ROOT,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    track(this.child);
    const keep = (chunk: Buffer): void => {
      this.#output = (this.#output + chunk.toString()).slice(-4000);
    };
    let partial = '';
    this.child.stdout?.on('data', (chunk: Buffer) => {
      keep(chunk);
      const at = now();
      const parts = (partial + chunk.toString()).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) for (const w of this.#watchers) w({ line, at });
    });
    this.child.stderr?.on('data', keep);
    this.child.on('exit', (code, signal) => {
      this.exitAt = now();
      this.exitStatus = signal ?? `exit ${code}`;
    });
  }

  /** Last output lines, for error messages. */
  get output(): string {
    return this.#output.trim();
  }

  /** Resolves once the server accepts WebSocket connections on every worker. */
  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = now() + timeoutMs;
    const { strategy, port } = this.spec;
    while (now() < deadline) {
      if (this.exitAt !== undefined) break;
      const ok =
        strategy === 'wsdrain'
          ? (await httpStatus(port, '/readyz')) === 200
          : this.#output.includes(`READY ${port}`);
      if (ok) return;
      await sleep(20);
    }
    throw new Error(
      `${strategy} did not become ready on port ${port} (${this.exitStatus ?? 'timeout'}):\n${this.output}`,
    );
  }

  /**
   * Calls `fn` with every complete stdout line from now on (wsdrain logs one JSON object a
   * line); returns the function that stops it.
   */
  onLine(fn: (l: OutputLine) => void): () => void {
    this.#watchers.add(fn);
    return () => this.#watchers.delete(fn);
  }

  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  /** SIGKILLs the whole process group, as pm2's treekill does. */
  killTree(): void {
    killGroup(this.child);
  }

  /** Resolves true when the process has exited, false after timeoutMs. */
  async waitExit(timeoutMs: number): Promise<boolean> {
    const deadline = now() + timeoutMs;
    while (this.exitAt === undefined && now() < deadline) await sleep(5);
    return this.exitAt !== undefined;
  }
}
