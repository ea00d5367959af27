/**
 * A wsdrain server under test started as `node dist/cli.js start ...` in its own process
 * group (tracked by procs.ts, so the group dies with the bench), with its exit recorded and
 * its readiness polled on `GET /readyz`. Subclasses read its output.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { now, sleep } from './clock.js';
import { httpStatus } from './net.js';
import { killGroup, track } from './procs.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The built CLI of this checkout. */
export const WSDRAIN_CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

/** How ready() polls `GET /readyz`. */
export interface ReadyPolls {
  /** Between two polls. @default 20 */
  everyMs?: number;
  /** `agent: false`: a fresh connection per poll (see net.ts httpStatus). */
  agent?: false;
}

export abstract class WsdrainChild {
  readonly child: ChildProcess;
  /** Epoch ms (clock.ts) of the exit, and how. */
  exitAt: number | undefined;
  exitCode: number | null = null;
  exitSignal: string | null = null;

  /** Spawns node with `args` (the CLI path first); stdout and stderr are pipes. */
  constructor(
    readonly port: number,
    args: readonly string[],
    readonly polls: ReadyPolls = {},
  ) {
    this.child = spawn(process.execPath, args, {
      cwd: ROOT,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    track(this.child);
    this.child.on('exit', (code, signal) => {
      this.exitAt = now();
      this.exitCode = code;
      this.exitSignal = signal;
    });
  }

  /** The last output, for error messages. */
  abstract get output(): string;

  /** Resolves once `GET /readyz` answers 200; throws when it exits or the time is up. */
  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = now() + timeoutMs;
    const agent = this.polls.agent === false ? { agent: false as const } : {};
    while (now() < deadline && this.exitAt === undefined) {
      if ((await httpStatus(this.port, '/readyz', agent)) === 200) return;
      await sleep(this.polls.everyMs ?? 20);
    }
    const how =
      this.exitAt === undefined ? 'timeout' : (this.exitSignal ?? `exit ${this.exitCode}`);
    throw new Error(`wsdrain did not become ready on port ${this.port} (${how}):\n${this.output}`);
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
