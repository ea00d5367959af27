/**
 * A bench child process run with `node --import tsx` and an IPC channel, in its own process
 * group (tracked by procs.ts, so it is killed when the bench exits), plus a polling helper.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { now, sleep } from './clock.js';
import { killGroup, track } from './procs.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export class ChildProc<To, From> {
  readonly child: ChildProcess;
  exited = false;
  #stopping = false;

  constructor(file: string, args: (string | number)[], onMessage: (m: From) => void) {
    this.child = fork(file, args.map(String), {
      cwd: ROOT,
      execArgv: ['--import', 'tsx'],
      detached: true,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    track(this.child);
    this.child.on('message', (m) => onMessage(m as From));
    this.child.on('exit', () => {
      this.exited = true;
    });
  }

  /** True when the process died without being asked to stop. */
  get died(): boolean {
    return this.exited && !this.#stopping;
  }

  send(m: To): void {
    if (this.child.connected) this.child.send(m as object);
  }

  /** Sends `stop` (if given), waits up to 3 s for the exit, then SIGKILLs the group. */
  async stop(stopMessage?: To): Promise<void> {
    this.#stopping = true;
    if (stopMessage !== undefined) this.send(stopMessage);
    const deadline = now() + 3000;
    while (!this.exited && now() < deadline) await sleep(20);
    killGroup(this.child);
  }
}

export class TimeoutError extends Error {}

/**
 * Polls `done` every `everyMs` until it returns true; throws TimeoutError after `timeoutMs`,
 * or the error `check` returns (e.g. a child process died).
 */
export async function until(
  done: () => boolean,
  timeoutMs: number,
  what: string,
  check?: () => string | undefined,
  everyMs = 5,
): Promise<void> {
  const deadline = now() + timeoutMs;
  for (;;) {
    if (done()) return;
    const problem = check?.();
    if (problem) throw new Error(`${what}: ${problem}`);
    if (now() >= deadline) throw new TimeoutError(`${what}: timed out after ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}
