/**
 * Bounded waits: every wait in the tests ends on its own, well before the test runner's
 * timeout, and says what it was waiting for when it gives up.
 */

type What = string | (() => string);

const describeWhat = (what: What): string => (typeof what === 'function' ? what() : what);

/** Polls `cond` every 10 ms until it holds; rejects after `timeoutMs`, naming `what`. */
export async function until(
  cond: () => boolean | Promise<boolean>,
  what: What,
  timeoutMs = 5000,
): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${describeWhat(what)}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Settles like `p`, or rejects after `timeoutMs` from now, naming `what`. */
export function within<T>(p: PromiseLike<T>, timeoutMs: number, what: What): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${describeWhat(what)}`));
    }, timeoutMs);
    timer.unref();
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/**
 * `p`, with each wait on it bounded from the moment it starts (`await`, `then`,
 * `Promise.all`), not from the creation of `p`: for events that may come long after they
 * are set up, such as the close of a socket that stays open for most of a test.
 */
export function bounded<T>(p: Promise<T>, timeoutMs: number, what: What): Promise<T> {
  const wait = (): Promise<T> => within(p, timeoutMs, what);
  return {
    // biome-ignore lint/suspicious/noThenProperty: a thenable on purpose, see above
    then: (onFulfilled, onRejected) => wait().then(onFulfilled, onRejected),
    catch: (onRejected) => wait().catch(onRejected),
    finally: (onFinally) => wait().finally(onFinally),
    [Symbol.toStringTag]: 'Promise',
  };
}

/**
 * How much earlier than the wall clock says a timer of another process may fire: Node
 * measures a timer from the event loop's cached time, which lags while a callback runs.
 * Lower bounds on "not before the deadline" allow this much.
 */
export const TIMER_EARLY_MS = 50;
