/**
 * Calling an app hook: bounded in time and isolated. A hook that throws, rejects or runs past
 * its time gives a {@link HookError} naming it, logged once; nothing it does reaches the
 * worker's own loop.
 */
import { HookError } from '../errors.js';
import type { Logger } from '../log.js';

/** Calls `fn` (sync or async) and settles within `timeoutMs`. */
export async function callHook<T>(
  name: string,
  fn: () => T | Promise<T>,
  timeoutMs: number,
  log: Logger,
  about: Record<string, unknown> = {},
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const value = fn();
    if (
      !(value instanceof Promise) &&
      !(typeof (value as { then?: unknown })?.then === 'function')
    ) {
      return value as T;
    }
    return await Promise.race([
      value as Promise<T>,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new HookError(name, `hook ${name} ran past ${timeoutMs} ms`, true)),
          timeoutMs,
        );
      }),
    ]);
  } catch (err) {
    const e =
      err instanceof HookError
        ? err
        : new HookError(name, `hook ${name} failed: ${(err as Error)?.message ?? String(err)}`);
    log.warn({ hook: name, code: e.code, err: e.message, ...about }, e.message);
    throw e;
  } finally {
    if (timer) clearTimeout(timer);
  }
}
