/**
 * Every worker keeps its share of the sockets.
 *
 * Node's round robin hands each new connection to the next worker that has answered its last
 * one. A worker the scheduler leaves out for a moment (a busy machine) answers later and gets
 * fewer; in a burst (the clients of a drained worker reconnecting at once) one worker can end
 * up with far more than another, and a roll would end lopsided.
 *
 * Each worker tells the primary its socket count (when it changed, at most every 100 ms). A
 * worker more than {@link BALANCE_SLACK} ahead of the least loaded one is held: it hands each
 * new connection back to the primary, unread, and the primary gives it to the least loaded
 * worker that is not held. Released once it is back within half the slack. The least loaded
 * worker is never held.
 *
 * Held workers stay on the cluster's shared listening socket (they take connections from Node
 * and give them back): closing their listeners instead would leave the port to the others
 * alone, and should the last of those die, Node would close the port. No client is moved: only
 * where a new connection lands changes.
 */
import type { Logger } from '../log.js';
import { type ConnHandle, HANDLES_IN_FLIGHT, MAX_HOPS } from '../protocol.js';
import type { WorkerRecord } from './workers.js';

/** How far ahead of the least loaded worker one may get: a share of its sockets, at least `min`. */
export const BALANCE_SLACK = { ratio: 0.05, min: 8 };

/**
 * A worker given this many connections it has not said it took (it says so every 100 ms) is
 * left out until it does: stopped, frozen or overloaded, it is neither given more (unless no
 * other worker listens) nor the measure of the others. Node's round robin does the same, with
 * one connection.
 */
export const UNANSWERED_LIMIT = 32;

/** Takes new connections: listening, and not stopped by a roll. */
const listening = (r: WorkerRecord): boolean => r.state === 'ready' && r.accepting;

/** Has fewer than {@link UNANSWERED_LIMIT} given connections it has not said it took. */
const answering = (r: WorkerRecord): boolean => r.given - r.taken < UNANSWERED_LIMIT;

export class Balance {
  readonly #records: () => Iterable<WorkerRecord>;
  readonly #log: Logger;

  constructor(records: () => Iterable<WorkerRecord>, log: Logger) {
    this.#records = records;
    this.#log = log;
  }

  /**
   * Workers that may take new connections: listening, not stopped by a roll, and answering
   * (see {@link UNANSWERED_LIMIT}).
   */
  #candidates(): WorkerRecord[] {
    return [...this.#records()].filter((r) => listening(r) && answering(r));
  }

  /** Holds and releases workers after a count changed or a worker came or went. */
  update(): void {
    const candidates = this.#candidates();
    for (const r of this.#records()) if (r.held && !candidates.includes(r)) r.setHeld(false);
    if (candidates.length < 2) {
      for (const r of candidates) r.setHeld(false);
      return;
    }
    const low = Math.min(...candidates.map((r) => r.sockets));
    const slack = Math.max(BALANCE_SLACK.min, Math.ceil(low * BALANCE_SLACK.ratio));
    for (const r of candidates) {
      if (r.held && r.sockets <= low + slack / 2) {
        r.setHeld(false);
        this.#log.debug({ workerPid: r.pid, sockets: r.sockets, low }, 'balance: released');
      } else if (!r.held && r.sockets > low + slack) {
        r.setHeld(true);
        this.#log.debug({ workerPid: r.pid, sockets: r.sockets, low }, 'balance: held');
      }
    }
  }

  /**
   * A connection a held worker gave back: to the least loaded worker that is not held (held
   * ones only if none is left; one that leaves connections unanswered, or whose channel has
   * {@link HANDLES_IN_FLIGHT} on their way already, last; a draining one,
   * which answers it as its drain does, only if none listens). Closed when no worker is left, or
   * it went through {@link MAX_HOPS} workers already.
   */
  place(handle: ConnHandle, hops: number): void {
    if (hops <= MAX_HOPS) {
      const free = (r: WorkerRecord): boolean => r.sending < HANDLES_IN_FLIGHT;
      const order = [...this.#records()]
        .filter((r) => listening(r) || r.state === 'draining')
        .sort(
          (a, b) =>
            Number(!listening(a)) - Number(!listening(b)) ||
            Number(!answering(a)) - Number(!answering(b)) ||
            Number(!free(a)) - Number(!free(b)) ||
            Number(a.held) - Number(b.held) ||
            a.sockets - b.sockets,
        );
      for (const r of order) {
        if (r.give(handle, hops)) return;
      }
    }
    handle.close();
  }
}
