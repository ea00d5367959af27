/**
 * A tiny typed event emitter with no Node-only imports, so the client runs in browsers too.
 */

/** A listener for an event whose payload is `T`. */
export type Listener<T> = (payload: T) => void;

/**
 * Typed emitter: `Events` maps each event name to its payload type.
 *
 * Listeners run synchronously, in the order they were added. A listener that throws does not
 * stop the others nor the emitter's owner: the error is rethrown asynchronously (where the
 * host reports uncaught errors: `reportError` in browsers, `uncaughtException` in Node).
 */
export class TypedEmitter<Events extends object> {
  readonly #listeners = new Map<keyof Events, Set<Listener<never>>>();

  /**
   * Adds a listener.
   * @returns a function that removes it.
   */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return () => this.off(event, listener);
  }

  /**
   * Adds a listener that is removed after its first call.
   * @returns a function that removes it before it was called.
   */
  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  /** Removes a listener added with {@link TypedEmitter.on}; unknown listeners are ignored. */
  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void {
    this.#listeners.get(event)?.delete(listener as Listener<never>);
  }

  /** Calls every listener of `event` with `payload`. */
  protected emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const set = this.#listeners.get(event);
    if (!set || set.size === 0) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<Events[K]>)(payload);
      } catch (error) {
        rethrowLater(error);
      }
    }
  }
}

/**
 * Reports an error thrown by app code without stopping the caller: `reportError` in browsers,
 * an uncaught exception on a later turn in Node.
 */
export function rethrowLater(error: unknown): void {
  const report = (globalThis as { reportError?: (e: unknown) => void }).reportError;
  if (typeof report === 'function') report(error);
  else
    setTimeout(() => {
      throw error;
    }, 0);
}
