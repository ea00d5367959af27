/**
 * The bench's processes and clock. Every process the bench starts is spawned `detached` (it
 * leads its own process group, so killing the group also takes cluster workers), registered
 * here and killed with its group when the bench exits for any reason. Handlers are installed
 * with the first child, not on import.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Epoch milliseconds with sub-millisecond resolution, the same clock in every bench process
 * (`performance.timeOrigin` comes from the wall clock at start), so times from the parent and
 * its children can be subtracted.
 */
export function now(): number {
  return performance.timeOrigin + performance.now();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Progress and result lines, on stderr (stdout lists the files written). */
export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** A redrawn bar when stderr is a TTY, a plain line every few seconds otherwise. */
export function progress(label: string, total: number): { update(n: number): void; end(): void } {
  const tty = process.stderr.isTTY === true;
  let last = 0;
  let lastDone = 0;
  const line = (done: number): string => {
    const filled = Math.round((30 * done) / Math.max(1, total));
    const bar = tty ? `[${'#'.repeat(filled)}${'.'.repeat(30 - filled)}] ` : '';
    return `${label} ${bar}${done}/${total}`;
  };
  return {
    update(done) {
      lastDone = done;
      if (Date.now() - last < (tty ? 100 : 2000)) return;
      last = Date.now();
      process.stderr.write(tty ? `\r${line(done)}` : `${line(done)}\n`);
    },
    end() {
      process.stderr.write(tty ? `\r${line(lastDone)}\n` : `${line(lastDone)}\n`);
    },
  };
}

const groups = new Set<number>();
let installed = false;

/** Registers a child spawned with `detached: true`. */
export function track(child: ChildProcess): void {
  if (!installed) {
    installed = true;
    process.on('exit', () => {
      for (const pid of groups) signalGroup(pid, 'SIGKILL');
    });
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.on(signal, () => {
        log(`\nbench: ${signal}, killing child processes`);
        process.exit(130);
      });
    }
  }
  if (child.pid !== undefined) groups.add(child.pid);
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** Signals the child's process group (SIGKILL by default; then it is forgotten). */
export function killGroup(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (child.pid === undefined) return;
  signalGroup(child.pid, signal);
  if (signal === 'SIGKILL') groups.delete(child.pid);
}

/** Thrown by until() when the time is up. */
export class TimeoutError extends Error {}

/**
 * Polls `done` every `everyMs` until it holds; throws TimeoutError after `timeoutMs`, or the
 * problem `check` returns (a process died).
 */
export async function until(
  done: () => unknown,
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

/** Like until(), but resolves false on timeout. */
export async function within(...args: Parameters<typeof until>): Promise<boolean> {
  try {
    await until(...args);
    return true;
  } catch (err) {
    if (err instanceof TimeoutError) return false;
    throw err;
  }
}

/** `n` items over `k` parts as evenly as can be (the first ones get one more). */
export function spread(n: number, k: number): number[] {
  return Array.from({ length: k }, (_, i) => Math.floor(n / k) + (i < n % k ? 1 : 0));
}

/** A forked bench process (`node --import tsx`) with an IPC channel; `To`/`From`: its messages. */
export class ChildProc<To, From> {
  readonly child: ChildProcess;
  exited = false;
  #stopping = false;

  constructor(
    file: string,
    args: string[],
    onMessage: (m: From) => void,
    nodeArgs: readonly string[] = [],
  ) {
    this.child = fork(file, args, {
      cwd: ROOT,
      execArgv: ['--import', 'tsx', ...nodeArgs],
      detached: true,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    track(this.child);
    this.child.on('message', (m) => onMessage(m as From));
    this.child.on('exit', () => {
      this.exited = true;
    });
  }

  /** Why the process is gone although nobody asked it to stop, or undefined. */
  get died(): string | undefined {
    if (!this.exited || this.#stopping) return undefined;
    return `a child process exited (${this.child.signalCode ?? `code ${this.child.exitCode}`})`;
  }

  /** Sends a message; never throws when the process is gone. */
  send(m: To): void {
    if (this.child.connected) this.child.send(m as object);
  }

  /** Sends `stop`, waits up to `graceMs` for the exit, then SIGKILLs the group. */
  async stop(stop: To, graceMs = 3000): Promise<void> {
    this.#stopping = true;
    this.send(stop);
    await within(() => this.exited, graceMs, 'stop', undefined, 20);
    killGroup(this.child);
  }
}

/** The child side: sends to the parent (nothing once it is gone). */
export function toParent<M extends object>(m: M): void {
  process.send?.(m);
}

/** The child side: calls `handle` with every message of the parent; exits when it is gone. */
export function onParent<M>(handle: (m: M) => void): void {
  process.on('message', (m: M) => handle(m));
  process.on('disconnect', () => process.exit(0));
}

/**
 * Runs `body` with a list it fills with clean-ups (servers, clients, redis-server), runs them
 * last-in first-out whatever happens, and records a failure in `run.error` instead of
 * throwing: one scenario run that goes wrong does not stop the others.
 */
export async function guarded<R extends { error?: string | undefined }>(
  run: R,
  body: (stops: (() => unknown)[]) => Promise<void>,
): Promise<R> {
  const stops: (() => unknown)[] = [];
  try {
    await body(stops);
  } catch (err) {
    run.error = (err as Error).message;
  } finally {
    for (const stop of stops.reverse()) {
      try {
        await stop();
      } catch {
        // killed anyway when the bench exits
      }
    }
  }
  return run;
}
