/** IPC between the soak (soak/clients.ts) and its client processes (soak/client.ts). */

/** Parent -> client. */
export type ToSoakClient =
  /**
   * From now on, closes and reconnects are recorded under `label`. With `final`, sockets that
   * close are not reconnected (the server is shutting down) and `allClosed` follows.
   */
  { type: 'label'; label: string; final: boolean } | { type: 'results' } | { type: 'stop' };

/** Client -> parent. */
export type FromSoakClient =
  | { type: 'progress'; connected: number; failed: number }
  | { type: 'ready'; connected: number; failed: number }
  | { type: 'stats'; stats: ClientStats }
  /** After a `final` label, when no socket is open any more: epoch ms of the last close. */
  | { type: 'allClosed'; at: number }
  | { type: 'results'; results: ClientResults };

/** Sent every second; counters are cumulative since the start, `rtt` since the last stats. */
export interface ClientStats {
  /** Epoch ms (lib/clock.ts). */
  at: number;
  label: string;
  open: number;
  /** Sockets closed and not open again (waiting for the hint's delay or handshaking). */
  reconnecting: number;
  sent: number;
  echoed: number;
  /** Replies that were not the next expected echo of their socket. */
  mismatched: number;
  /** Messages still unanswered `--echo-timeout` ms after they were sent, socket open. */
  timedOut: number;
  /** Messages unanswered when their socket closed with a code other than 1012 or 1001. */
  lostOnOtherClose: number;
  /** Closes, reconnects and refused attempts under the current label. */
  closes: number;
  reopens: number;
  refusals: number;
  /** Epoch ms of the last reconnect under the current label (NaN: none). */
  lastReopenAt: number;
  /** Echo round trips since the last stats (hist.ts buckets). */
  rtt: number[];
}

/** Everything recorded under one label (one phase of the soak). */
export interface LabelResults {
  closes: Record<string, number>;
  /** Close reasons, with the retry delay cut off (`wsdrain:restart`). */
  reasons: Record<string, number>;
  /** Messages without an echo when their socket closed, by close code. */
  unanswered: Record<string, number>;
  /** For those messages: ms from the send to the socket's 'close' event (first 20,000). */
  unansweredAgeMs: number[];
  /** Close -> open of each reconnect, ms, hint delay included. */
  reconnectMs: number[];
  /** The delay each of those reconnects waited because of the server's hint, ms. */
  hintMs: number[];
  /** Failed reconnect attempts, by cause (`http 503`, `ECONNREFUSED`, ...). */
  refusals: Record<string, number>;
  firstCloseAt: number;
  lastCloseAt: number;
  lastReopenAt: number;
}

export interface ClientResults {
  connected: number;
  failed: number;
  open: number;
  sent: number;
  echoed: number;
  mismatched: number;
  timedOut: number;
  lostOnOtherClose: number;
  /** Messages still waiting for an echo on sockets open now. */
  pendingOpen: number;
  /** Echo round trips over the whole run (hist.ts buckets). */
  rtt: number[];
  labels: Record<string, LabelResults>;
}

export function emptyLabelResults(): LabelResults {
  return {
    closes: {},
    reasons: {},
    unanswered: {},
    unansweredAgeMs: [],
    reconnectMs: [],
    hintMs: [],
    refusals: {},
    firstCloseAt: Number.NaN,
    lastCloseAt: Number.NaN,
    lastReopenAt: Number.NaN,
  };
}
