/**
 * IPC of the storm scenario: the parent (storm.ts) with its client processes (client.ts) and
 * with the load balancer process (lb-process.ts). Times are epoch ms from lib/clock.ts, or ms
 * since the parent's mark where said.
 */

/** Parent -> storm client process. */
export type ToStormClient =
  /** Time zero: reconnects, closes and refusals are reported relative to it. */
  { type: 'mark'; t: number } | { type: 'results' } | { type: 'stop' };

/** Storm client process -> parent. */
export type FromStormClient =
  /** While opening the first connections. */
  | { type: 'progress'; open: number }
  /** Every client has opened its first connection. */
  | { type: 'ready'; open: number }
  /** Every 50 ms after the mark. */
  | { type: 'status'; status: StormClientStatus }
  | { type: 'results'; results: StormClientResults };

export interface StormClientStatus {
  /** Clients with an open connection now. */
  open: number;
  /** Clients whose connection closed at least once since the mark. */
  closed: number;
  /** Clients that closed for good (no reconnect will follow); should stay 0. */
  gaveUp: number;
}

export interface StormClientResults extends StormClientStatus {
  /** ms from the mark to each reconnect's 'open'. */
  opens: number[];
  /** ms from the mark to the creation of each reconnect's socket (the attempt that opened). */
  starts: number[];
  /** Handshake latency of each reconnect: from the socket's creation to 'open', in ms. */
  latencies: number[];
  /** ms from the mark to each 'close' of an open connection. */
  closes: number[];
  /** Close codes of those closes. */
  codes: Record<string, number>;
  /** Failed attempts since the mark: a socket that closed before it opened. */
  refusals: number;
  /** Codes of the failed attempts (1006 for a reset or refused TCP connection). */
  refusalCodes: Record<string, number>;
  /** 'error' events of sockets that had not opened yet (each is followed by a refusal). */
  connectErrors: number;
  /** Reconnects scheduled since the mark, by what set their delay. */
  delays: { hint: number; backoff: number };
}

/** Results with nothing counted yet. */
export function emptyStormResults(): StormClientResults {
  return {
    open: 0,
    closed: 0,
    gaveUp: 0,
    opens: [],
    starts: [],
    latencies: [],
    closes: [],
    codes: {},
    refusals: 0,
    refusalCodes: {},
    connectErrors: 0,
    delays: { hint: 0, backoff: 0 },
  };
}

/** Parent -> load balancer process. */
export type ToBalancer = { type: 'mark'; t: number } | { type: 'results' } | { type: 'stop' };

/** Load balancer process -> parent. */
export type FromBalancer =
  | { type: 'listening'; port: number }
  /** After every readiness poll round, and at once when a backend's readiness changes. */
  | { type: 'ready'; ready: boolean[] }
  | { type: 'results'; results: BalancerResults };

export interface BackendCounts {
  port: number;
  /** Connections piped to this backend before the mark. */
  beforeMark: number;
  /** Connections piped to it after the mark, by 100 ms bucket since the mark: [bucket, count]. */
  buckets: [number, number][];
  /** Connections piped to it in all. */
  accepted: number;
  /** Connection attempts to it that failed (then retried on another ready backend). */
  failed: number;
  /** Readiness polls left unanswered for 1 s (they keep the previous state). */
  pollTimeouts: number;
}

export interface BalancerResults {
  backends: BackendCounts[];
  /** Client connections closed because no backend was ready or every ready one failed. */
  refused: number;
  /** Client connections retried on another backend after a failed backend connect. */
  redispatched: number;
}
