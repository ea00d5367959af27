/**
 * Reconnect hints carried in the reason of a drain close frame.
 *
 * Format (ASCII, at most 123 bytes as RFC 6455 allows for a close reason):
 *
 *     wsdrain:<kind>[;retry=<ms>]
 *
 * - `kind` is `restart` (rolling restart, close code 1012) or `shutdown` (1001).
 * - `retry` is how long the client should wait before reconnecting, in milliseconds.
 *
 * Examples: `wsdrain:restart;retry=1830`, `wsdrain:shutdown`.
 * Unknown `key=value` pairs after the kind are ignored by parsers, so the format can grow.
 *
 * This module has no Node-only imports: the browser client uses it too.
 */

/** Why the server closed the connection on purpose. */
export type DrainKind = 'restart' | 'shutdown';

/** A parsed reconnect hint. */
export interface ReconnectHint {
  kind: DrainKind;
  /** Suggested delay before reconnecting, in ms; undefined when the server gave none. */
  retryMs?: number | undefined;
}

const PREFIX = 'wsdrain:';

/** Largest close reason RFC 6455 allows (125-byte control payload minus the 2-byte code). */
export const MAX_CLOSE_REASON_BYTES = 123;

/** Builds the close reason for a drain. */
export function formatHint(hint: ReconnectHint): string {
  let reason = PREFIX + hint.kind;
  if (hint.retryMs !== undefined) reason += `;retry=${Math.max(0, Math.round(hint.retryMs))}`;
  return reason;
}

/** Parses a close reason; returns undefined when it is not a wsdrain hint. */
export function parseHint(reason: string): ReconnectHint | undefined {
  if (!reason.startsWith(PREFIX)) return undefined;
  const [kind, ...pairs] = reason.slice(PREFIX.length).split(';');
  if (kind !== 'restart' && kind !== 'shutdown') return undefined;
  const hint: ReconnectHint = { kind };
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq === -1) continue;
    if (pair.slice(0, eq) === 'retry') {
      const ms = Number(pair.slice(eq + 1));
      if (Number.isFinite(ms) && ms >= 0) hint.retryMs = ms;
    }
  }
  return hint;
}

/**
 * Close reasons carrying a reconnect hint, each with its own delay in [0, windowMs].
 *
 * Called as `reason(i, n)` for the i-th of n sockets of a drain (in the order their close
 * frames go out), the delay is stratified: socket i gets `windowMs * (i + random()) / n`. With
 * a paced drain (socket i closed at about `drainWindow * i / n`) the reconnects then spread
 * evenly over drainWindow + windowMs; two independent uniform delays would add up to a
 * triangle, twice as steep in its middle. Without an index (late upgrades) the delay is
 * uniform in the window.
 */
export function hintReason(
  kind: DrainKind,
  windowMs: number,
  random = Math.random,
): (i?: number, n?: number) => string {
  return (i, n) => {
    if (windowMs <= 0) return formatHint({ kind });
    const share = i !== undefined && n !== undefined && n > 0 ? (i + random()) / n : random();
    return formatHint({ kind, retryMs: Math.round(Math.min(1, share) * windowMs) });
  };
}
