/**
 * Real `ws` clients over loopback for tests, each with an 'error' listener, recording what
 * the server did to them.
 */
import { WebSocket } from 'ws';
import { bounded, within } from './wait.js';

export interface Client {
  ws: WebSocket;
  messages: Array<string | Buffer>;
  /** Resolves when the connection has closed; a wait on it gives up after 20 s. */
  closed: Promise<{ code: number; reason: string; at: number }>;
  code: number | undefined;
  closedAt: number | undefined;
  /** Stop reading: the peer never sees (or answers) a close frame. */
  stall: () => void;
  /** Read again after {@link Client.stall}. */
  unstall: () => void;
}

/** Opens one client; rejects if the handshake fails. */
export function connect(
  port: number,
  opts: { path?: string; headers?: Record<string, string>; localAddress?: string } = {},
): Promise<Client> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${opts.path ?? '/'}`, {
      headers: opts.headers,
      localAddress: opts.localAddress,
      // A handshake that never completes rejects instead of hanging.
      handshakeTimeout: 5000,
    });
    const socket = (): { pause(): void; resume(): void; localPort?: number } =>
      (ws as unknown as { _socket: { pause(): void; resume(): void; localPort?: number } })._socket;
    const client: Client = {
      ws,
      messages: [],
      code: undefined,
      closedAt: undefined,
      closed: bounded(
        new Promise((res) => {
          ws.on('close', (code, reason) => {
            client.code = code;
            client.closedAt = Date.now();
            res({ code, reason: reason.toString(), at: client.closedAt });
          });
        }),
        20_000,
        () => `the client on local port ${socket()?.localPort} to close`,
      ),
      stall: () => socket().pause(),
      unstall: () => socket().resume(),
    };
    let opened = false;
    ws.on('error', (e) => {
      if (!opened) reject(e);
    });
    ws.on('message', (data, isBinary) =>
      client.messages.push(isBinary ? (data as Buffer) : data.toString()),
    );
    ws.on('open', () => {
      opened = true;
      resolve(client);
    });
    ws.on('unexpected-response', (_req, res) => {
      reject(new Error(`unexpected response ${res.statusCode}`));
      res.resume();
    });
  });
}

/** Opens `n` clients with bounded concurrency, spreading source addresses over 127.0.x.y. */
export async function connectMany(port: number, n: number, concurrency = 200): Promise<Client[]> {
  const out: Client[] = new Array(n);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      out[i] = await connect(port, {
        localAddress: `127.0.${1 + (i % 200)}.${1 + ((i >> 8) % 250)}`,
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return out;
}

/** Waits for the next `count` (at least 1) messages on a client. */
export function nextMessages(
  c: Client,
  count: number,
  timeoutMs = 5000,
): Promise<Array<string | Buffer>> {
  // Waiting for no message would resolve at once, whatever the server does.
  if (!(count >= 1)) throw new RangeError(`nextMessages: count must be 1 or more, got ${count}`);
  const start = c.messages.length;
  return new Promise((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Error(`got ${c.messages.length - start} of ${count} messages`)),
      timeoutMs,
    );
    const check = (): void => {
      if (c.messages.length - start >= count) {
        clearTimeout(t);
        c.ws.off('message', check);
        resolve(c.messages.slice(start, start + count));
      }
    };
    c.ws.on('message', check);
    setImmediate(check);
  });
}

/**
 * Resolves once the server has read everything `c` sent so far: a ping sent behind it is
 * answered (frames are read in order). Rejects after `timeoutMs`.
 */
export function heard(c: Client, timeoutMs = 5000): Promise<void> {
  return within(
    new Promise<void>((resolve) => {
      c.ws.once('pong', () => resolve());
      c.ws.ping();
    }),
    timeoutMs,
    'the server to answer a ping sent behind the messages',
  );
}

/** Counts close codes. */
export function codes(clients: Client[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const c of clients) if (c.code !== undefined) out[c.code] = (out[c.code] ?? 0) + 1;
  return out;
}

/** Waits until a client has received `total` messages since it connected; returns them. */
export async function waitMessages(
  c: Client,
  total: number,
  timeoutMs = 5000,
): Promise<Array<string | Buffer>> {
  const t0 = Date.now();
  while (c.messages.length < total) {
    if (Date.now() - t0 > timeoutMs)
      throw new Error(`got ${c.messages.length} of ${total} messages`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return c.messages.slice(0, total);
}
