/**
 * The processes of the storm scenario besides the clients: wsdrain servers started with the
 * pacing flags (`dist/cli.js start`), and the load balancer process (lb-process.ts). Each is
 * spawned `detached` and registered with lib/procs.ts, so its whole process group is killed
 * when the bench exits, whatever happens.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { now, sleep } from '../lib/clock.js';
import { killGroup, track } from '../lib/procs.js';
import type { BalancerResults, FromBalancer, ToBalancer } from './protocol.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const WSDRAIN_CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
export const DIST_CLIENT = fileURLToPath(new URL('../../dist/client/index.js', import.meta.url));
const LB = fileURLToPath(new URL('./lb-process.ts', import.meta.url));

/** Why the storm cannot run here, or undefined. */
export function missingBuild(): string | undefined {
  for (const f of [WSDRAIN_CLI, DIST_CLIENT]) {
    if (!existsSync(f)) return `storm: ${f} does not exist yet (run \`npm run build\`)`;
  }
  return undefined;
}

export interface WsdrainSpec {
  port: number;
  workers: number;
  drainTimeoutMs: number;
  /** --drain-window; 0 or undefined leaves it off. */
  drainWindowMs?: number;
  /** --drain-rate; 0 or undefined leaves it off. */
  drainRate?: number;
  /** --reconnect-window (0: hints without retry). */
  reconnectWindowMs: number;
  /** `info` is needed to see "rolling restart done". @default 'warn' */
  logLevel?: string;
  /** --report FILE */
  report?: string;
}

/** What a rolled worker reported ("rolled worker ..." log line). */
export interface RolledWorker {
  pid: number;
  sockets: number;
  clean: number;
  terminated: number;
  dropped: number;
  lateUpgrades: number;
  durationMs: number;
  windowMs: number;
}

export class WsdrainProcess {
  readonly child: ChildProcess;
  readonly args: string[];
  /** Epoch ms (lib/clock.ts) of the exit, and how. */
  exitAt: number | undefined;
  exitCode: number | null = null;
  exitSignal: string | null = null;
  /** When "rolling restart done" was logged, and its fields. */
  rollDoneAt: number | undefined;
  rollDone: { rolled: number; durationMs: number } | undefined;
  readonly rolled: RolledWorker[] = [];
  /** Messages of log lines at warn level or above. */
  readonly warnings: string[] = [];
  #tail = '';
  #partial = '';

  constructor(readonly spec: WsdrainSpec) {
    const s = spec;
    const args: (string | number)[] = [WSDRAIN_CLI, 'start', '--port', s.port, '--host'];
    args.push('127.0.0.1', '--workers', s.workers, '--drain-timeout', s.drainTimeoutMs);
    args.push('--log-level', s.logLevel ?? 'warn', '--reconnect-window', s.reconnectWindowMs);
    if (s.drainWindowMs) args.push('--drain-window', s.drainWindowMs);
    if (s.drainRate) args.push('--drain-rate', s.drainRate);
    if (s.report) args.push('--report', s.report);
    this.args = args.map(String);
    this.child = spawn(process.execPath, this.args, {
      cwd: ROOT,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    track(this.child);
    this.child.stdout?.on('data', (chunk: Buffer) => this.#onStdout(chunk.toString()));
    this.child.stderr?.on('data', (chunk: Buffer) => this.#keep(chunk.toString()));
    this.child.on('exit', (code, signal) => {
      this.exitAt = now();
      this.exitCode = code;
      this.exitSignal = signal;
    });
  }

  /** Last output, for error messages. */
  get output(): string {
    return this.#tail.trim();
  }

  #keep(text: string): void {
    this.#tail = (this.#tail + text).slice(-4000);
  }

  #onStdout(text: string): void {
    this.#keep(text);
    const lines = (this.#partial + text).split('\n');
    this.#partial = lines.pop() ?? '';
    for (const line of lines) {
      let entry: {
        level?: number;
        msg?: string;
        rolled?: number;
        durationMs?: number;
        workerPid?: number;
        report?: RolledWorker;
      };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        continue;
      }
      const msg = entry.msg ?? '';
      if (msg.startsWith('rolling restart done')) {
        this.rollDoneAt = now();
        this.rollDone = { rolled: entry.rolled ?? 0, durationMs: entry.durationMs ?? 0 };
      } else if (msg.startsWith('rolled worker') && entry.report) {
        const r = entry.report;
        this.rolled.push({
          pid: entry.workerPid ?? 0,
          sockets: r.sockets,
          clean: r.clean,
          terminated: r.terminated,
          dropped: r.dropped,
          lateUpgrades: r.lateUpgrades,
          durationMs: r.durationMs,
          windowMs: r.windowMs,
        });
      }
      if ((entry.level ?? 0) >= 40) this.warnings.push(msg);
    }
  }

  /** Resolves once `GET /readyz` answers 200. */
  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = now() + timeoutMs;
    while (now() < deadline && this.exitAt === undefined) {
      if ((await httpStatus(this.spec.port, '/readyz')) === 200) return;
      await sleep(20);
    }
    throw new Error(
      `wsdrain did not become ready on port ${this.spec.port} (${this.exitSignal ?? (this.exitAt ? `exit ${this.exitCode}` : 'timeout')}):\n${this.output}`,
    );
  }

  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  /** Resolves true when the process has exited, false after timeoutMs. */
  async waitExit(timeoutMs: number): Promise<boolean> {
    const deadline = now() + timeoutMs;
    while (this.exitAt === undefined && now() < deadline) await sleep(5);
    return this.exitAt !== undefined;
  }

  /** SIGKILLs the whole process group (workers included). */
  kill(): void {
    killGroup(this.child);
  }
}

/** The load balancer process (lb-process.ts). */
export class BalancerProcess {
  readonly child: ChildProcess;
  port = 0;
  readyStates: boolean[] = [];
  exited = false;
  #results: BalancerResults | undefined;

  constructor(readonly backends: number[]) {
    this.child = fork(LB, ['--backends', backends.join(',')], {
      cwd: ROOT,
      execArgv: ['--import', 'tsx'],
      detached: true,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    track(this.child);
    this.child.on('message', (m: FromBalancer) => {
      switch (m.type) {
        case 'listening':
          this.port = m.port;
          break;
        case 'ready':
          this.readyStates = m.ready;
          break;
        case 'results':
          this.#results = m.results;
      }
    });
    this.child.on('exit', () => {
      this.exited = true;
    });
  }

  /** Resolves once it listens and sees every backend ready. */
  async ready(timeoutMs = 10_000): Promise<void> {
    await this.#until(
      () => this.port > 0 && this.readyStates.length > 0 && this.readyStates.every(Boolean),
      timeoutMs,
      'ready',
    );
  }

  mark(t: number): void {
    this.#send({ type: 'mark', t });
  }

  async results(): Promise<BalancerResults> {
    this.#results = undefined;
    this.#send({ type: 'results' });
    await this.#until(() => this.#results, 10_000, 'results');
    return this.#results!;
  }

  stop(): void {
    this.#send({ type: 'stop' });
    killGroup(this.child);
  }

  #send(m: ToBalancer): void {
    if (this.child.connected) this.child.send(m);
  }

  async #until(done: () => unknown, timeoutMs: number, what: string): Promise<void> {
    const deadline = now() + timeoutMs;
    while (!done()) {
      if (this.exited) throw new Error(`storm lb exited (code ${this.child.exitCode}) (${what})`);
      if (now() >= deadline) throw new Error(`storm lb: ${what} timed out after ${timeoutMs} ms`);
      await sleep(5);
    }
  }
}

function httpStatus(port: number, path: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = get({ host: '127.0.0.1', port, path, timeout: 1000, agent: false }, (res) => {
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
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('port')),
      );
    });
  });
}
