/**
 * Runs inside a piscina thread: loads the handler module once, then answers batches of
 * messages. A batch item is a string (text message) or a Uint8Array (binary); the result
 * keeps the positions: a reply, null (no reply) or `{ error }` when the handler failed.
 */
import { workerData } from 'node:worker_threads';
import type { Handler, HandlerReply } from '../handler.js';

/** What one message of a batch became. */
export type BatchResult = string | Uint8Array | null | { error: string };

async function loadHandler(spec: string | undefined): Promise<Handler> {
  if (!spec) return (await import('../handlers/echo.js')).default;
  const mod = (await import(spec)) as { default?: unknown; handler?: unknown };
  const fn = typeof mod.default === 'function' ? mod.default : mod.handler;
  if (typeof fn !== 'function') {
    throw new Error(`handler module ${spec} exports no function (default export or "handler")`);
  }
  return fn as Handler;
}

const handler = await loadHandler((workerData as { handler?: string } | undefined)?.handler);

function normalise(reply: HandlerReply): BatchResult {
  if (reply === undefined || reply === null) return null;
  if (typeof reply === 'string' || reply instanceof Uint8Array) return reply;
  return { error: `handler returned ${typeof reply}; expected string, Uint8Array or nothing` };
}

function failure(err: unknown): BatchResult {
  return { error: err instanceof Error ? err.message : String(err) };
}

/** Answers one batch. Handlers run in message order; async ones overlap. */
export default async function run(items: Array<string | Uint8Array>): Promise<BatchResult[]> {
  const out: Array<BatchResult | Promise<BatchResult>> = new Array(items.length);
  for (let i = 0; i < items.length; i++) {
    const data = items[i]!;
    try {
      const r = handler({ data, isBinary: typeof data !== 'string' });
      out[i] =
        r && typeof (r as Promise<HandlerReply>).then === 'function'
          ? (r as Promise<HandlerReply>).then(normalise, failure)
          : normalise(r as HandlerReply);
    } catch (err) {
      out[i] = failure(err);
    }
  }
  return Promise.all(out);
}
