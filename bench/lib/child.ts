/**
 * A bench child process run with `node --import tsx` and an IPC channel, in its own process
 * group (tracked by procs.ts, so it is killed when the bench exits); a group of such client
 * processes with their per-process state; and a polling helper.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { now, sleep } from './clock.js';
import { killGroup, track } from './procs.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** One forked bench process; `To` and `From` are its IPC messages. */
export class ChildProc<To, From> {
  readonly child: ChildProcess;
  exited = false;
  #stopping = false;

  /** Forks `file` with `args`; `nodeArgs` go to node after `--import tsx`. */
  constructor(
    file: string,
    args: (string | number)[],
    onMessage: (m: From) => void,
    nodeArgs: readonly string[] = [],
  ) {
    this.child = fork(file, args.map(String), {
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

  /** True when the process died without being asked to stop. */
  get died(): boolean {
    return this.exited && !this.#stopping;
  }

  /** Sends a message; never throws when the process is gone. */
  send(m: To): void {
    if (this.child.connected) this.child.send(m as object);
  }

  /** Sends `stop` (if given), waits up to `graceMs` for the exit, then SIGKILLs the group. */
  async stop(stopMessage?: To, graceMs = 3000): Promise<void> {
    this.#stopping = true;
    if (stopMessage !== undefined) this.send(stopMessage);
    const deadline = now() + graceMs;
    while (!this.exited && now() < deadline) await sleep(20);
    killGroup(this.child);
  }
}

/** Thrown by until() when the time is up. */
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

/** `n` items spread over `k` parts as evenly as can be (the first ones get one more). */
export function spread(n: number, k: number): number[] {
  return Array.from({ length: k }, (_, i) => Math.floor(n / k) + (i < n % k ? 1 : 0));
}

/** `{ url: u, 'addr-prefix': p }` -> `['--url', u, '--addr-prefix', p]`. */
export function cliArgs(flags: Record<string, string | number>): string[] {
  return Object.entries(flags).flatMap(([k, v]) => [`--${k}`, String(v)]);
}

/** A member of a ChildGroup: its process and the state its messages update. */
export type Member<To, From, S> = S & { readonly proc: ChildProc<To, From> };

/**
 * Client processes of one kind, each with a state `S` that its messages update: summing over
 * them, polling until a condition holds (failing as soon as one dies), collecting results.
 */
export class ChildGroup<To, From, S extends { results?: unknown }> {
  members: Member<To, From, S>[] = [];

  /**
   * @param who prefixes the error messages (`loadgen`)
   * @param everyMs polling interval of until()
   */
  constructor(
    readonly who: string,
    readonly everyMs = 5,
  ) {}

  /** Forks one member with the initial `state`; `onMessage` updates it. */
  add(
    file: string,
    args: (string | number)[],
    state: S,
    onMessage: (member: Member<To, From, S>, m: From) => void,
    nodeArgs?: readonly string[],
  ): Member<To, From, S> {
    const member = state as Member<To, From, S>;
    const proc = new ChildProc<To, From>(file, args, (m) => onMessage(member, m), nodeArgs);
    (member as { proc: ChildProc<To, From> }).proc = proc;
    this.members.push(member);
    return member;
  }

  /** Sends `m` to every member. */
  broadcast(m: To): void {
    for (const c of this.members) c.proc.send(m);
  }

  sum(f: (c: Member<To, From, S>) => number): number {
    return this.members.reduce((s, c) => s + f(c), 0);
  }

  /** A member that died without being asked to stop, or undefined. */
  dead(): string | undefined {
    const d = this.members.find((c) => c.proc.died);
    return d ? `a client process exited (code ${d.proc.child.exitCode})` : undefined;
  }

  /** until() over the members: fails when one dies. */
  until(done: () => unknown, timeoutMs: number, what: string): Promise<void> {
    return until(
      () => Boolean(done()),
      timeoutMs,
      `${this.who}: ${what}`,
      () => this.dead(),
      this.everyMs,
    );
  }

  /** Like until(), but resolves false on timeout instead of throwing. */
  async within(done: () => unknown, timeoutMs: number, what: string): Promise<boolean> {
    try {
      await this.until(done, timeoutMs, what);
      return true;
    } catch (err) {
      if (err instanceof TimeoutError) return false;
      throw err;
    }
  }

  /** Clears every member's results, sends `request` and waits until each has answered. */
  async results(request: To, timeoutMs: number): Promise<NonNullable<S['results']>[]> {
    for (const c of this.members) c.results = undefined;
    this.broadcast(request);
    await this.until(
      () => this.members.every((c) => c.results !== undefined),
      timeoutMs,
      'results',
    );
    return this.members.map((c) => c.results as NonNullable<S['results']>);
  }

  /** Stops every member (ChildProc.stop) and forgets them. */
  async stop(stopMessage: To, graceMs?: number): Promise<void> {
    await Promise.all(this.members.map((c) => c.proc.stop(stopMessage, graceMs)));
    this.members = [];
  }
}

/** What a client process that opens sockets reports while connecting. */
export interface ConnectState {
  connected: number;
  failed: number;
  /** Every socket was tried. */
  ready: boolean;
}

/** Records a `progress` or `ready` message in `c`; false for any other message. */
export function connectReport(
  c: ConnectState,
  m: { type: string; connected?: number; failed?: number },
): boolean {
  if (m.type !== 'progress' && m.type !== 'ready') return false;
  c.connected = m.connected ?? 0;
  c.failed = m.failed ?? 0;
  c.ready = m.type === 'ready';
  return true;
}
