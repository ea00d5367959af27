/**
 * A crowd of plain ws clients that reconnect when the server closes them, recording every
 * close code and every refused reconnect. Used to observe rolling restarts from outside.
 */
import { WebSocket } from 'ws';

export interface Crowd {
  /** Close codes seen, over all connections. */
  codes: Record<number, number>;
  /** Reconnect attempts that failed (refused, reset, non-101 answer). */
  refusals: number;
  /** Per client (index i of n), close codes of its connections that had opened, in order. */
  closesOf: (i: number) => number[];
  /** Connections currently open. */
  open: () => number;
  /** Resolves when `n` connections are open. */
  waitOpen: (n: number, timeoutMs?: number) => Promise<void>;
  /** Stops reconnecting and closes everything. */
  stop: () => Promise<void>;
}

/** Opens `n` clients that reconnect after any close, until stop(). */
export async function crowd(
  port: number,
  n: number,
  opts: { reconnectOn?: number[] } = {},
): Promise<Crowd> {
  const codes: Record<number, number> = {};
  const perClient: number[][] = Array.from({ length: n }, () => []);
  let refusals = 0;
  let stopped = false;
  const sockets = new Set<WebSocket>();
  const reconnectOn = opts.reconnectOn ?? [1001, 1012, 1013];
  const open = (i: number): void => {
    if (stopped) return;
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, {
      localAddress: `127.0.${1 + (i % 200)}.${1 + ((i >> 8) % 250)}`,
    });
    let opened = false;
    ws.on('error', () => {});
    ws.on('open', () => {
      opened = true;
      sockets.add(ws);
    });
    ws.on('close', (code) => {
      sockets.delete(ws);
      if (!opened) {
        refusals++;
        if (!stopped) setTimeout(() => open(i), 20);
        return;
      }
      codes[code] = (codes[code] ?? 0) + 1;
      perClient[i]?.push(code);
      if (!stopped && reconnectOn.includes(code)) setImmediate(() => open(i));
    });
  };
  const c: Crowd = {
    codes,
    get refusals() {
      return refusals;
    },
    closesOf: (i) => perClient[i] ?? [],
    open: () => [...sockets].filter((s) => s.readyState === WebSocket.OPEN).length,
    waitOpen: async (want, timeoutMs = 10_000) => {
      const t0 = Date.now();
      while (c.open() < want) {
        if (Date.now() - t0 > timeoutMs) throw new Error(`only ${c.open()} of ${want} open`);
        await new Promise((r) => setTimeout(r, 20));
      }
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
