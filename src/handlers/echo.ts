/**
 * The default handler: echoes every message as it came (text stays text, binary stays
 * binary). A text message `{"op":"work","ms":N,"id":X}` keeps the pool thread busy (CPU, not a
 * timer) for about N ms, cut to `--max-work`, then replies `{"id":X,"done":true}`.
 */
import type { Handler, HandlerMessage, HandlerReply } from '../handler.js';

/** Default of `--max-work`: the longest `work` honoured, in ms. */
export const DEFAULT_MAX_WORK_MS = 100;

/** Largest `--max-work` accepted, in ms: a client can never pin a thread for longer. */
export const MAX_WORK_MS = 60_000;

function busy(ms: number): void {
  const end = performance.now() + ms;
  let x = 0;
  while (performance.now() < end) x = (x + 1) | 0;
}

/** Echo, plus the `work` op of the contract with requests cut to `maxWorkMs`. */
export function makeEcho(maxWorkMs = DEFAULT_MAX_WORK_MS): Handler {
  const cap = Math.min(Math.max(maxWorkMs, 0), MAX_WORK_MS);
  return function echo(message: HandlerMessage): HandlerReply {
    const { data } = message;
    if (typeof data === 'string' && data.startsWith('{') && data.includes('"work"')) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(data);
      } catch {
        return data;
      }
      if (parsed && typeof parsed === 'object' && (parsed as { op?: unknown }).op === 'work') {
        const { ms, id } = parsed as { ms?: unknown; id?: unknown };
        const n =
          typeof ms === 'number' && Number.isFinite(ms) ? Math.min(Math.max(ms, 0), cap) : 0;
        busy(n);
        return JSON.stringify({ id: id ?? null, done: true });
      }
    }
    return data;
  };
}

/** Echo with the default `--max-work`. */
export default makeEcho();
