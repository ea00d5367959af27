/**
 * The drain budget as arithmetic, in one place for the primary and a single process.
 *
 * One number, --drain-timeout, runs from the signal to the process exit:
 *
 *     signal                                   deadline        kill   budget end
 *       |---- delay ----|-- close frames --|...   |-- exit margin --|
 *                                  last call ^    ^ stragglers terminated, report, exit
 *
 * - The deadline sent to a worker keeps an exit margin (5% of the budget, 150 to 500 ms) for
 *   terminating what is left, reporting and exiting, so the primary never has to SIGKILL.
 * - The last call comes MIN_ANSWER_MS before the deadline: a socket still owed replies gets
 *   its close frame then, its work abandoned, so its peer can still answer in time. A paced
 *   window ends there too.
 * - The primary kills a worker that hangs just before the budget ends (half the margin, at
 *   most 100 ms, before it).
 */
import { CloseCode } from '../codes.js';
import type { DrainKind } from '../hint.js';

/** Time kept at the end of a budget for terminating stragglers and exiting, in ms. */
export function exitMargin(budgetMs: number): number {
  return Math.min(500, Math.max(150, Math.round(budgetMs * 0.05)));
}

/** Time kept after the last close frame (paced, or the last call) for peers to answer, in ms. */
export const MIN_ANSWER_MS = 250;

/** When, in ms after the signal, the primary kills a worker still alive. */
export function killAfter(budgetMs: number): number {
  return Math.max(0, budgetMs - Math.min(100, exitMargin(budgetMs) / 2));
}

/** What a worker needs to drain: the primary sends it, a signal to the worker builds it. */
export interface DrainCommand {
  code: number;
  /** Put in the reconnect hint of each close frame. */
  kind: DrainKind;
  /** Absolute deadline, epoch ms. */
  deadline: number;
  /** Phase 2 delay, in ms. */
  delayMs: number;
  /** Pacing: spread close frames over this window (ms), or at this rate (sockets/s). */
  windowMs: number;
  rate: number;
  /** Each hint asks for a random reconnect delay up to this, in ms (0: none). */
  reconnectWindowMs: number;
}

/** The options a drain command is built from. */
export interface DrainSettings {
  drainTimeout: number;
  drainDelay: number;
  drainWindow: number;
  drainRate: number;
  reconnectWindow: number;
}

/**
 * The drain command of a shutdown (1001) or a rolling restart (1012) that starts `now`.
 * `--drain-rate` is for the whole server: each of `sharedBy` workers draining at once takes
 * its share. A roll has no delay: the new workers serve the port already.
 */
export function drainCommand(
  kind: DrainKind,
  s: DrainSettings,
  sharedBy = 1,
  now = Date.now(),
): DrainCommand {
  const restart = kind === 'restart';
  return {
    code: restart ? CloseCode.RESTART : CloseCode.GOING_AWAY,
    kind,
    deadline: now + s.drainTimeout - exitMargin(s.drainTimeout),
    delayMs: restart ? 0 : s.drainDelay,
    windowMs: s.drainWindow,
    rate: s.drainRate / Math.max(1, sharedBy),
    reconnectWindowMs: s.reconnectWindow,
  };
}
