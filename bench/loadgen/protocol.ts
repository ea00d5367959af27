/** IPC between the load-generator parent (index.ts) and its client processes (client.ts). */

/** Parent -> client. */
export type ToClient =
  /** Time zero (epoch ms, see lib/clock.ts): close times are reported relative to it. */
  { type: 'mark'; t: number } | { type: 'results' } | { type: 'stop' };

/** Client -> parent. */
export type FromClient =
  | { type: 'progress'; connected: number; failed: number }
  | { type: 'ready'; connected: number; failed: number }
  /** Sent once, after the mark, when no socket of this client is open any more. */
  | { type: 'allClosed' }
  | { type: 'results'; results: ClientResults };

export interface ClientResults {
  /** ms from the mark to each socket's 'close' event, for sockets that closed after the mark. */
  closeTimes: number[];
  /** Close codes of those sockets. */
  codes: Record<string, number>;
  /** Closed with a close frame from the server (code !== 1006). */
  clean: number;
  /** Closed without one (1006: TCP closed under the socket). */
  forced: number;
  /** Sockets that closed before the mark. */
  early: number;
  /** Sockets still open. */
  open: number;
  /** Sockets that never connected. */
  failed: number;
  /** Messages sent and received. */
  sent: number;
  received: number;
}
