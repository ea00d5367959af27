/**
 * The processes of the storm scenario besides the clients: wsdrain servers started with the
 * pacing flags (`dist/cli.js start`), and the load balancer process (lb-process.ts). Each is
 * spawned `detached` and registered with lib/procs.ts, so its whole process group is killed
 * when the bench exits, whatever happens.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ChildProc, until } from '../lib/child.js';
import { now } from '../lib/clock.js';
import { WSDRAIN_CLI, WsdrainChild } from '../lib/wsdrain.js';
import type { RolledWorker as RollReport } from '../roll.js';
import type { BalancerResults, FromBalancer, ToBalancer } from './protocol.js';

export { freePort } from '../lib/net.js';
export { WSDRAIN_CLI } from '../lib/wsdrain.js';
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

/** What a rolled worker reported ("rolled worker ..." log line), with its close window. */
export interface RolledWorker extends RollReport {
  windowMs: number;
}

export class WsdrainProcess extends WsdrainChild {
  readonly args: string[];
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
    super(s.port, args.map(String), { agent: false });
    this.args = args.map(String);
    this.child.stdout?.on('data', (chunk: Buffer) => this.#onStdout(chunk.toString()));
    this.child.stderr?.on('data', (chunk: Buffer) => this.#keep(chunk.toString()));
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
    for (const line of lines) readStormLogLine(this, line, now());
  }
}

/** What the storm reads from a wsdrain's log. */
export interface StormLog {
  rollDoneAt: number | undefined;
  rollDone: { rolled: number; durationMs: number } | undefined;
  rolled: RolledWorker[];
  warnings: string[];
}

/** Records one log line of wsdrain (pino JSON) read at `at` in `log`. */
export function readStormLogLine(log: StormLog, line: string, at: number): void {
  let entry: {
    level?: string | number;
    msg?: string;
    rolled?: number;
    durationMs?: number;
    workerPid?: number;
    report?: RolledWorker;
  };
  try {
    entry = JSON.parse(line) as typeof entry;
  } catch {
    return;
  }
  const msg = entry.msg ?? '';
  if (msg.startsWith('rolling restart done')) {
    log.rollDoneAt = at;
    log.rollDone = { rolled: entry.rolled ?? 0, durationMs: entry.durationMs ?? 0 };
  } else if (msg.startsWith('rolled worker') && entry.report) {
    const r = entry.report;
    log.rolled.push({
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
  // wsdrain's logger writes the level as a word (src/log.ts); pino's default is a number.
  const level = entry.level;
  const warn =
    typeof level === 'number' ? level >= 40 : ['warn', 'error', 'fatal'].includes(level ?? '');
  if (warn) log.warnings.push(msg);
}

/** The load balancer process (lb-process.ts). */
export class BalancerProcess {
  readonly proc: ChildProc<ToBalancer, FromBalancer>;
  port = 0;
  readyStates: boolean[] = [];
  #results: BalancerResults | undefined;

  constructor(readonly backends: number[]) {
    this.proc = new ChildProc<ToBalancer, FromBalancer>(
      LB,
      ['--backends', backends.join(',')],
      (m) => {
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
      },
    );
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
    this.proc.send({ type: 'mark', t });
  }

  async results(): Promise<BalancerResults> {
    this.#results = undefined;
    this.proc.send({ type: 'results' });
    await this.#until(() => this.#results !== undefined, 10_000, 'results');
    return this.#results!;
  }

  /** Sends `stop` and SIGKILLs the group at once. */
  stop(): Promise<void> {
    return this.proc.stop({ type: 'stop' }, 0);
  }

  #until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const exited = (): string | undefined =>
      this.proc.died ? `exited (code ${this.proc.child.exitCode})` : undefined;
    return until(done, timeoutMs, `storm lb: ${what}`, exited);
  }
}
