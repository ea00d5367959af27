/**
 * A crowd of plain ws clients that reconnect when the server closes them, recording every
 * close code and every refused reconnect. Used to observe rolling restarts from outside.
 */
import { WebSocket } from 'ws';
import { parseHint } from 'wsdrain';

export interface Crowd {
  /** Close codes seen, over all connections. */
  codes: Record<number, number>;
  /** Reconnect attempts that failed (refused, reset, non-101 answer, handshake timeout). */
  refusals: number;
  /** Each failed attempt: which client, when (ms since the crowd started) and why. */
  refused: string[];
  /** Per client (index i of n), close codes of its connections that had opened, in order. */
  closesOf: (i: number) => number[];
  /** Connections currently open. */
  open: () => number;
  /** Resolves when `n` connections are open. */
  waitOpen: (n: number, timeoutMs?: number) => Promise<void>;
  /** Sends `message` on every open connection; resolves with each one's first reply. */
  ask: (message: string, timeoutMs?: number) => Promise<string[]>;
  /**
   * Starts no new connection attempt (a client closed meanwhile waits) and resolves once those
   * under way are over: keeps the crowd out of a moment the test makes on purpose, such as a
   * worker SIGKILLed (the connections being handed to it at that instant are lost with it).
   */
  hold: () => Promise<void>;
  /** Connection attempts go on, the waiting ones first. */
  release: () => void;
  /** Stops reconnecting and closes everything. */
  stop: () => Promise<void>;
}

/**
 * Opens `n` clients that reconnect after any close, until stop(): at once, or, with
 * `honourHints`, after the delay the close frame's reconnect hint asks for (as wsdrain/client
 * does).
 */
export async function crowd(
  port: number,
  n: number,
  opts: { reconnectOn?: number[]; honourHints?: boolean } = {},
): Promise<Crowd> {
  const codes: Record<number, number> = {};
  const perClient: number[][] = Array.from({ length: n }, () => []);
  const refused: string[] = [];
  const born = Date.now();
  let stopped = false;
  const sockets = new Set<WebSocket>();
  /** What each client is doing, for failure messages. */
  const state: string[] = Array.from({ length: n }, () => 'connecting');
  const reconnectOn = opts.reconnectOn ?? [1001, 1012, 1013];
  let held = false;
  const parked: number[] = [];
  let connecting = 0;
  const open = (i: number): void => {
    if (stopped) return;
    if (held) {
      state[i] = 'held';
      parked.push(i);
      return;
    }
    state[i] = 'connecting';
    connecting++;
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, {
      localAddress: `127.0.${1 + (i % 200)}.${1 + ((i >> 8) % 250)}`,
      // A handshake that never completes fails (and counts as a refusal) instead of hanging.
      handshakeTimeout: 5000,
    });
    let opened = false;
    let error = '';
    ws.on('error', (e) => {
      error = e.message;
    });
    ws.on('open', () => {
      connecting--;
      opened = true;
      state[i] = 'open';
      sockets.add(ws);
    });
    ws.on('close', (code, reason) => {
      sockets.delete(ws);
      if (!opened) {
        connecting--;
        refused.push(`client ${i} at ${Date.now() - born} ms: ${error || 'closed'}`);
        state[i] = `refused (${error}), retrying`;
        if (!stopped) setTimeout(() => open(i), 20);
        return;
      }
      codes[code] = (codes[code] ?? 0) + 1;
      perClient[i]?.push(code);
      if (!stopped && reconnectOn.includes(code)) {
        const retry = opts.honourHints ? parseHint(reason.toString())?.retryMs : undefined;
        if (retry === undefined) setImmediate(() => open(i));
        else setTimeout(() => open(i), retry);
      } else state[i] = `closed with ${code}, not reconnecting`;
    });
  };
  /** The clients not open, and what they are doing. */
  const notOpen = (): string =>
    state
      .flatMap((s, i) => (s === 'open' ? [] : [`client ${i}: ${s}, closes ${perClient[i]}`]))
      .join('; ');
  const c: Crowd = {
    codes,
    get refusals() {
      return refused.length;
    },
    refused,
    closesOf: (i) => perClient[i] ?? [],
    open: () => [...sockets].filter((s) => s.readyState === WebSocket.OPEN).length,
    waitOpen: async (want, timeoutMs = 10_000) => {
      const t0 = Date.now();
      while (c.open() < want) {
        if (Date.now() - t0 > timeoutMs) {
          throw new Error(`only ${c.open()} of ${want} open after ${timeoutMs} ms; ${notOpen()}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    ask: (message, timeoutMs = 10_000) => {
      const live = [...sockets].filter((s) => s.readyState === WebSocket.OPEN);
      return Promise.all(
        live.map(
          (s) =>
            new Promise<string>((resolve, reject) => {
              const t = setTimeout(
                () => reject(new Error(`no reply to "${message}" within ${timeoutMs} ms`)),
                timeoutMs,
              );
              s.once('message', (d) => {
                clearTimeout(t);
                resolve(String(d));
              });
              s.send(message);
            }),
        ),
      );
    },
    hold: async () => {
      held = true;
      const t0 = Date.now();
      while (connecting > 0) {
        if (Date.now() - t0 > 10_000) throw new Error(`${connecting} attempts still under way`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    release: () => {
      held = false;
      for (const i of parked.splice(0)) open(i);
    },
    stop: async () => {
      stopped = true;
      const all = [...sockets];
      for (const s of all) s.terminate();
      await new Promise((r) => setTimeout(r, 10));
    },
  };
  for (let i = 0; i < n; i++) open(i);
  await c.waitOpen(n);
  return c;
}
