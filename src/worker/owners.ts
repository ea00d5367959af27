/**
 * The owners of the pool's messages (their connections), as the pool schedules them (see
 * ./pool.ts): each owner's queued messages, its place in a round-robin queue, and what its
 * handler calls cost.
 *
 * Costs. Each handler call's time comes back with its result (see ./batch.ts): until its
 * reply, and whether that reply was a promise. An owner keeps two figures of them:
 * - `cost`, the last call's time or more while an older, longer one decays: one long call
 *   makes the owner heavy at once;
 * - `serial`, a moving average of the time each call holds its thread before the next one of
 *   its task can start: the call's time if it was synchronous, none if its reply was a promise
 *   (the waits of one task overlap). Calls of a few ms one after the other make the owner
 *   heavy by this figure; one call that the OS or a collection stretched does not. A task
 *   stops at a budget of these estimates.
 */

/** What the pool keeps per owner; in a WeakMap, so it goes with its connection. */
export interface Owner<T> {
  /**
   * Queued messages from `head` to `tail` (the arrays keep their room when emptied): tickets,
   * and per message its position in the stream of queued bytes (see MessagePool.#base) and
   * `byteLength * 2 + isBinary`.
   */
  tickets: T[];
  places: number[];
  head: number;
  tail: number;
  /** Messages the task being built takes from this owner. */
  take: number;
  /** Messages given back sit before later ones in the list but after them in the bytes. */
  scrambled: boolean;
  /** The running task that holds this owner's messages. */
  task: object | undefined;
  /** In the light or the heavy round-robin queue. */
  waiting: boolean;
  /** Since when it waits in the heavy queue (epoch ms). */
  queuedAt: number;
  /** Recent handler time per message, ms: the last one, or more while an older one decays. */
  cost: number;
  /** Moving average of the time per message that its task spends on it alone, ms. */
  serial: number;
}

export function newOwner<T>(): Owner<T> {
  return {
    tickets: [],
    places: [],
    head: 0,
    tail: 0,
    take: 0,
    scrambled: false,
    task: undefined,
    waiting: false,
    queuedAt: 0,
    cost: 0,
    serial: 0,
  };
}

/** Records one handler call of `o`: `ms` until its reply, `async` if that was a promise. */
export function recordCall<T>(o: Owner<T>, ms: number, async: boolean): void {
  o.cost = Math.max(ms, (3 * o.cost + ms) / 4);
  o.serial = (3 * o.serial + (async ? 0 : ms)) / 4;
}

/**
 * How many of its queued messages `o` may put in a task that has `budget` ms of estimated
 * handler time left, at most `most`: at least one.
 */
export function affordable<T>(o: Owner<T>, budget: number, most: number): number {
  const n = Math.min(o.tail - o.head, most);
  return o.serial > 0 ? Math.max(1, Math.min(n, Math.floor(budget / o.serial))) : n;
}

/** A first-in first-out queue of owners. */
export class OwnerQueue<T> {
  #items: Array<Owner<T> | undefined> = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  peek(): Owner<T> | undefined {
    return this.#items[this.#head];
  }

  push(o: Owner<T>): void {
    this.#items.push(o);
  }

  /** Puts `o` first (an owner whose turn was interrupted). */
  unshift(o: Owner<T>): void {
    if (this.#head > 0) this.#items[--this.#head] = o;
    else this.#items.unshift(o);
  }

  shift(): Owner<T> | undefined {
    const o = this.#items[this.#head];
    if (o === undefined) return undefined;
    this.#items[this.#head++] = undefined;
    if (this.#head === this.#items.length) {
      this.#items.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && 2 * this.#head > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return o;
  }

  forEach(f: (o: Owner<T>) => void): void {
    for (let i = this.#head; i < this.#items.length; i++) f(this.#items[i]!);
  }
}
