/**
 * The reconnecting client against real `ws` servers over loopback: drain hints, backoff,
 * final codes, the send queue, close() and maxRetries.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { type WebSocket as ServerSocket, WebSocket, WebSocketServer } from 'ws';
import {
  type CloseEvent,
  createClient,
  type ReconnectingEvent,
  type WebSocketConstructorLike,
  type WsdrainClient,
  type WsdrainClientEvents,
  type WsdrainClientOptions,
} from 'wsdrain/client';

// Both the browser's WebSocket and ws's fit the constructor option (checked by tsc).
const domCtor: WebSocketConstructorLike | undefined = (
  globalThis as { WebSocket?: typeof globalThis.WebSocket }
).WebSocket;
void domCtor;

/** One server-side connection and what it received. */
interface Conn {
  ws: ServerSocket;
  messages: string[];
  at: number;
  protocol: string;
}

/** A real ws server whose upgrade handling each test scripts. */
interface TestServer {
  port: number;
  url: string;
  conns: Conn[];
  /** Upgrade requests seen, accepted or not. */
  upgrades: number;
  /** When each upgrade request arrived (performance.now()). */
  upgradeAt: number[];
  /** Decides each upgrade: accept, refuse with 503, or hang (never answer). */
  decide: (n: number) => 'accept' | 'refuse' | 'hang';
  onConnection: (conn: Conn, n: number) => void;
}

const servers: Array<{ http: Server; wss: WebSocketServer; raw: Set<Socket> }> = [];
const clients: WsdrainClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const { http, wss, raw } of servers.splice(0)) {
    for (const ws of wss.clients) ws.terminate();
    for (const s of raw) s.destroy();
    wss.close();
    await new Promise<void>((r) => http.close(() => r()));
  }
});

async function startServer(
  onConnection: TestServer['onConnection'] = () => {},
  decide: TestServer['decide'] = () => 'accept',
): Promise<TestServer> {
  const http = createServer((_req, res) => res.writeHead(426).end());
  const wss = new WebSocketServer({ noServer: true });
  const raw = new Set<Socket>();
  wss.on('error', () => {});
  const t: TestServer = {
    port: 0,
    url: '',
    conns: [],
    upgrades: 0,
    upgradeAt: [],
    decide,
    onConnection,
  };
  http.on('upgrade', (req, socket: Socket, head) => {
    raw.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => raw.delete(socket));
    t.upgradeAt.push(performance.now());
    const n = t.upgrades++;
    const what = t.decide(n);
    if (what === 'hang') return;
    if (what === 'refuse') {
      socket.end(
        'HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n',
      );
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', () => {});
      const conn: Conn = { ws, messages: [], at: performance.now(), protocol: ws.protocol };
      ws.on('message', (data, isBinary) => {
        conn.messages.push(isBinary ? `bin:${(data as Buffer).toString('hex')}` : String(data));
      });
      t.conns.push(conn);
      t.onConnection(conn, t.conns.length - 1);
    });
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  t.port = (http.address() as AddressInfo).port;
  t.url = `ws://127.0.0.1:${t.port}/`;
  servers.push({ http, wss, raw });
  return t;
}

/** What a client emitted, with times. */
interface Recorded {
  client: WsdrainClient;
  events: Array<{ name: keyof WsdrainClientEvents; at: number; payload: unknown }>;
  closes: CloseEvent[];
  reconnecting: ReconnectingEvent[];
  opens: number[];
  errors: Error[];
  drops: Array<{ data: unknown; reason: string }>;
  messages: unknown[];
}

function client(url: string, options: WsdrainClientOptions = {}): Recorded {
  const c = createClient(url, {
    WebSocket,
    backoff: { initialMs: 10, maxMs: 50 },
    random: () => 0,
    openTimeoutMs: 2000,
    ...options,
  });
  clients.push(c);
  const r: Recorded = {
    client: c,
    events: [],
    closes: [],
    reconnecting: [],
    opens: [],
    errors: [],
    drops: [],
    messages: [],
  };
  const names: Array<keyof WsdrainClientEvents> = [
    'open',
    'message',
    'close',
    'reconnecting',
    'error',
    'drop',
  ];
  for (const name of names) {
    c.on(name, (payload: unknown) => r.events.push({ name, at: performance.now(), payload }));
  }
  c.on('close', (e) => r.closes.push(e));
  c.on('reconnecting', (e) => r.reconnecting.push(e));
  c.on('open', (e) => r.opens.push(e.attempt));
  c.on('error', (e) => r.errors.push(e.error));
  c.on('drop', (e) => r.drops.push(e));
  c.on('message', (d) => r.messages.push(d));
  return r;
}

/** Resolves with the next `event` of `c` matching `pred`; rejects after `ms`. */
function next<K extends keyof WsdrainClientEvents>(
  c: WsdrainClient,
  event: K,
  pred: (p: WsdrainClientEvents[K]) => boolean = () => true,
  ms = 2000,
): Promise<WsdrainClientEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no '${String(event)}' within ${ms} ms`));
    }, ms);
    const off = c.on(event, (p) => {
      if (!pred(p)) return;
      clearTimeout(timer);
      off();
      resolve(p);
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves when `cond()` holds; rejects after `ms`. */
async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > ms) throw new Error('condition not met in time');
    await sleep(2);
  }
}

describe('drain hints', () => {
  it('reconnects after 1012 once the hinted retry has passed, not before', async () => {
    let closeSentAt = 0;
    const srv = await startServer((conn, n) => {
      if (n === 0) {
        closeSentAt = performance.now();
        conn.ws.close(1012, 'wsdrain:restart;retry=50');
      }
    });
    const r = client(srv.url);
    const closed = await next(r.client, 'close');
    expect(closed).toEqual({
      code: 1012,
      reason: 'wsdrain:restart;retry=50',
      hint: { kind: 'restart', retryMs: 50 },
      willReconnect: true,
      delayMs: 50,
    });
    expect(r.reconnecting).toEqual([{ attempt: 1, delayMs: 50, reason: 'hint' }]);
    expect(r.client.state).toBe('waiting');
    expect(srv.upgrades).toBe(1);
    await next(r.client, 'open');
    expect(srv.conns).toHaveLength(2);
    // Counted from when the close left the server, which the client's timer cannot start
    // before: timers run on the event loop's clock, whole milliseconds read after each poll
    // (hence the 1). From the client's close event, a busy loop's stale clock let a 50 ms
    // timer fire 47.8 ms later.
    expect(srv.conns[1]!.at - closeSentAt).toBeGreaterThan(50 - 1);
    expect(r.opens).toEqual([0, 1]);
    expect(r.client.state).toBe('open');
  });

  it('honours a 1001 shutdown hint, with jitter added after it, never before', async () => {
    let closeSentAt = 0;
    const srv = await startServer((conn, n) => {
      if (n === 0) {
        closeSentAt = performance.now();
        conn.ws.close(1001, 'wsdrain:shutdown;retry=30');
      }
    });
    // Jitter span = backoff.initialMs (40): 30 + 0.5 * 40 = 50.
    const r = client(srv.url, { random: () => 0.5, backoff: { initialMs: 40 } });
    const closed = await next(r.client, 'close');
    expect(closed.hint).toEqual({ kind: 'shutdown', retryMs: 30 });
    expect(closed.delayMs).toBe(50);
    expect(r.reconnecting).toEqual([{ attempt: 1, delayMs: 50, reason: 'hint' }]);
    await next(r.client, 'open');
    expect(srv.conns[1]!.at - closeSentAt).toBeGreaterThan(50 - 1);
  });

  it('hintJitter: false waits exactly the hint; a number sets the span', async () => {
    const srv = await startServer((conn, n) => {
      // The first connection of each client (a: 0, b: 2) is drained.
      if (n % 2 === 0) conn.ws.close(1012, 'wsdrain:restart;retry=20');
    });
    const a = client(srv.url, { random: () => 0.5, hintJitter: false });
    await next(a.client, 'open', (e) => e.attempt === 1);
    expect(a.reconnecting).toEqual([{ attempt: 1, delayMs: 20, reason: 'hint' }]);
    const b = client(srv.url, { random: () => 0.5, hintJitter: 10 });
    await next(b.client, 'open', (e) => e.attempt === 1);
    expect(b.reconnecting).toEqual([{ attempt: 1, delayMs: 25, reason: 'hint' }]);
  });

  it('a planned close without a retry hint uses a first backoff step and does not grow it', async () => {
    const srv = await startServer((conn, n) => {
      if (n < 3) conn.ws.close(1001, n === 0 ? 'wsdrain:shutdown' : '');
    });
    const r = client(srv.url, { random: () => 0.5, backoff: { initialMs: 20, maxMs: 1000 } });
    await until(() => r.opens.length === 4);
    expect(r.closes.map((c) => c.hint)).toEqual([{ kind: 'shutdown' }, undefined, undefined]);
    // Planned closes never count as failures: every delay is 0.5 * initialMs.
    expect(r.reconnecting).toEqual([
      { attempt: 1, delayMs: 10, reason: 'backoff' },
      { attempt: 1, delayMs: 10, reason: 'backoff' },
      { attempt: 1, delayMs: 10, reason: 'backoff' },
    ]);
    expect(r.opens).toEqual([0, 1, 1, 1]);
  });

  it('a hint on a code other than 1001/1012 is reported but not honoured', async () => {
    const srv = await startServer((conn, n) => {
      if (n === 0) conn.ws.close(1011, 'wsdrain:restart;retry=500');
    });
    const r = client(srv.url, { random: () => 0.5, backoff: { initialMs: 20 } });
    const closed = await next(r.client, 'close');
    expect(closed.hint).toEqual({ kind: 'restart', retryMs: 500 });
    expect(closed.delayMs).toBe(10);
    expect(r.reconnecting).toEqual([{ attempt: 1, delayMs: 10, reason: 'backoff' }]);
    await next(r.client, 'open');
  });
});

describe('final codes', () => {
  it.each([
    [1000, 'bye'],
    [1008, 'policy'],
    [4001, 'app says no'],
  ])('does not reconnect after %i', async (code, reason) => {
    const srv = await startServer((conn) => conn.ws.close(code, reason));
    const r = client(srv.url, { backoff: { initialMs: 1 } });
    r.client.send('queued after close frame?');
    const closed = await next(r.client, 'close');
    expect(closed).toEqual({
      code,
      reason,
      hint: undefined,
      willReconnect: false,
      delayMs: undefined,
    });
    expect(r.client.state).toBe('closed');
    await sleep(40);
    expect(srv.upgrades).toBe(1);
    expect(r.reconnecting).toEqual([]);
    expect(r.closes).toHaveLength(1);
    expect(() => r.client.send('x')).toThrow(/after close/);
  });
});

describe('backoff', () => {
  it('grows full-jitter backoff over failed attempts on 1006 and resets after an open', async () => {
    // Connection 0 is cut (1006 after open); upgrades 1-4 are refused with 503 (1006, never
    // open); upgrade 5 is accepted and cut again.
    const srv = await startServer(
      (conn, n) => {
        if (n < 2) setTimeout(() => conn.ws.terminate(), 5);
      },
      (n) => (n >= 1 && n <= 4 ? 'refuse' : 'accept'),
    );
    const r = client(srv.url, {
      random: () => 0.5,
      backoff: { initialMs: 10, maxMs: 60, factor: 2 },
    });
    await until(() => r.opens.length === 3);
    expect(r.closes.every((c) => c.code === 1006)).toBe(true);
    // caps 10, 20, 40, 60 (max), 60; then, after the open, 10 again.
    expect(r.reconnecting).toEqual([
      { attempt: 1, delayMs: 5, reason: 'backoff' },
      { attempt: 2, delayMs: 10, reason: 'backoff' },
      { attempt: 3, delayMs: 20, reason: 'backoff' },
      { attempt: 4, delayMs: 30, reason: 'backoff' },
      { attempt: 5, delayMs: 30, reason: 'backoff' },
      { attempt: 1, delayMs: 5, reason: 'backoff' },
    ]);
    expect(r.opens).toEqual([0, 5, 1]);
    expect(r.errors.length).toBeGreaterThanOrEqual(4);
    expect(r.errors[0]!.message).toMatch(/503/);
    // Each attempt came no earlier than its delay after the server ended the one before.
    expect(r.events.filter((e) => e.name === 'close')).toHaveLength(6);
    expect(srv.upgrades).toBe(7);
    r.reconnecting.forEach((e, i) => {
      expect(srv.upgradeAt[i + 1]! - srv.upgradeAt[i]!).toBeGreaterThan(e.delayMs - 1);
    });
  });

  it('reconnects on 1011 and 1013 with backoff', async () => {
    const srv = await startServer((conn, n) => {
      if (n === 0) conn.ws.close(1011, 'oops');
      if (n === 1) conn.ws.close(1013, 'try later');
    });
    const r = client(srv.url, { random: () => 1, backoff: { initialMs: 8 } });
    await until(() => r.opens.length === 3);
    expect(r.closes.map((c) => [c.code, c.willReconnect, c.delayMs])).toEqual([
      [1011, true, 8],
      [1013, true, 8],
    ]);
  });

  it('aborts an attempt that does not open within openTimeoutMs and retries', async () => {
    const srv = await startServer(
      () => {},
      (n) => (n === 0 ? 'hang' : 'accept'),
    );
    const t0 = performance.now();
    // The client starts its timer on the next turn of the event loop, whose clock is read
    // after t0: a timer started in this turn may count from a clock read before t0 (stale
    // by as long as the process was held off the CPU), and fire "early".
    await sleep(1);
    const r = client(srv.url, { openTimeoutMs: 30 });
    await next(r.client, 'open');
    expect(performance.now() - t0).toBeGreaterThan(30 - 1);
    expect(r.closes).toHaveLength(1);
    expect(r.closes[0]!.code).toBe(1006);
    expect(r.opens).toEqual([1]);
    expect(srv.upgrades).toBe(2);
  });

  it('maxRetries reached -> final close with willReconnect false', async () => {
    const srv = await startServer(
      () => {},
      () => 'refuse',
    );
    const r = client(srv.url, { maxRetries: 2 });
    r.client.send('never sent');
    const final = await next(r.client, 'close', (e) => !e.willReconnect);
    expect(final).toMatchObject({ code: 1006, willReconnect: false, delayMs: undefined });
    expect(r.client.state).toBe('closed');
    expect(r.reconnecting.map((e) => e.attempt)).toEqual([1, 2]);
    expect(r.closes.map((c) => c.willReconnect)).toEqual([true, true, false]);
    expect(r.drops).toEqual([{ data: 'never sent', reason: 'closed' }]);
    await sleep(30);
    expect(srv.upgrades).toBe(3);
  });
});

describe('sending', () => {
  it('queues while disconnected and flushes exactly once, in order, after reconnecting', async () => {
    const srv = await startServer((conn, n) => {
      if (n === 0) conn.ws.close(1012, 'wsdrain:restart;retry=20');
    });
    const r = client(srv.url);
    expect(r.client.send('q0')).toBe(false); // still connecting
    await next(r.client, 'close');
    expect(r.client.state).toBe('waiting');
    for (const m of ['a', 'b', 'c']) expect(r.client.send(m)).toBe(false);
    expect(r.client.queued).toBe(3);
    r.client.once('open', () => r.client.send('from-open'));
    await next(r.client, 'open', (e) => e.attempt === 1);
    expect(r.client.queued).toBe(0);
    expect(r.client.send('d')).toBe(true);
    await until(() => srv.conns[1]?.messages.length === 5);
    await sleep(20);
    expect(srv.conns[0]!.messages).toEqual(['q0']);
    expect(srv.conns[1]!.messages).toEqual(['a', 'b', 'c', 'from-open', 'd']);
  });

  it('sends nothing twice: messages handed to a socket that is then cut are not resent', async () => {
    const srv = await startServer((conn, n) => {
      if (n === 0) conn.ws.once('message', () => conn.ws.terminate());
    });
    const r = client(srv.url);
    await next(r.client, 'open');
    for (const m of ['m1', 'm2', 'm3']) expect(r.client.send(m)).toBe(true);
    await next(r.client, 'close');
    expect(r.client.queued).toBe(0);
    expect(r.client.send('n1')).toBe(false);
    await next(r.client, 'open');
    r.client.send('n2');
    await until(() => srv.conns[1]?.messages.length === 2);
    await sleep(20);
    expect(srv.conns[1]!.messages).toEqual(['n1', 'n2']);
    const all = srv.conns.flatMap((c) => c.messages);
    expect(new Set(all).size).toBe(all.length);
    expect(all.filter((m) => m.startsWith('m')).length).toBeLessThanOrEqual(3);
  });

  it('bounds the queue: the oldest message is dropped with a drop event', async () => {
    const srv = await startServer();
    const r = client(srv.url, { maxQueued: 2 });
    for (const m of ['a', 'b', 'c']) r.client.send(m);
    expect(r.drops).toEqual([{ data: 'a', reason: 'overflow' }]);
    await next(r.client, 'open');
    await until(() => srv.conns[0]?.messages.length === 2);
    expect(srv.conns[0]!.messages).toEqual(['b', 'c']);
  });

  it('receives text as strings and binary as ArrayBuffer; offers the protocols', async () => {
    const srv = await startServer((conn) => {
      conn.ws.send('hello');
      conn.ws.send(Buffer.from([1, 2, 3]));
    });
    const r = client(srv.url, { protocols: ['chat.v1'] });
    await until(() => r.messages.length === 2);
    expect(r.messages[0]).toBe('hello');
    expect(r.messages[1]).toBeInstanceOf(ArrayBuffer);
    expect([...new Uint8Array(r.messages[1] as ArrayBuffer)]).toEqual([1, 2, 3]);
    expect(srv.conns[0]!.protocol).toBe('chat.v1');
    r.client.send(new Uint8Array([9, 8]));
    await until(() => srv.conns[0]!.messages.length === 1);
    expect(srv.conns[0]!.messages).toEqual(['bin:0908']);
  });
});

describe('close()', () => {
  it('while waiting: cancels the reconnect and emits the final close at once', async () => {
    const srv = await startServer((conn) => conn.ws.close(1012, 'wsdrain:restart;retry=20'));
    const r = client(srv.url);
    await next(r.client, 'reconnecting');
    r.client.send('dropped');
    r.client.close();
    expect(r.client.state).toBe('closed');
    expect(r.closes.at(-1)).toEqual({
      code: 1000,
      reason: '',
      hint: undefined,
      willReconnect: false,
      delayMs: undefined,
    });
    expect(r.drops).toEqual([{ data: 'dropped', reason: 'closed' }]);
    await sleep(50);
    expect(srv.upgrades).toBe(1);
    expect(r.closes).toHaveLength(2);
    r.client.close(); // idempotent
    expect(r.closes).toHaveLength(2);
  });

  it('while open: closes with the given code and reason, and never reconnects', async () => {
    const seen: Array<[number, string]> = [];
    const srv = await startServer((conn) =>
      conn.ws.on('close', (code, reason) => seen.push([code, String(reason)])),
    );
    const r = client(srv.url);
    await next(r.client, 'open');
    r.client.close(4000, 'done');
    expect(r.client.state).toBe('closed');
    const final = await next(r.client, 'close');
    expect(final).toMatchObject({ code: 4000, reason: 'done', willReconnect: false });
    await until(() => seen.length === 1);
    expect(seen).toEqual([[4000, 'done']]);
    await sleep(30);
    expect(srv.upgrades).toBe(1);
    expect(r.reconnecting).toEqual([]);
  });

  it('while connecting: aborts the attempt without an error event', async () => {
    const srv = await startServer(
      () => {},
      () => 'hang',
    );
    const r = client(srv.url);
    await until(() => srv.upgrades === 1);
    r.client.close();
    const final = await next(r.client, 'close');
    expect(final.willReconnect).toBe(false);
    expect(r.errors).toEqual([]);
    await sleep(30);
    expect(srv.upgrades).toBe(1);
    expect(r.closes).toHaveLength(1);
  });

  it('from a close listener: no reconnect is scheduled', async () => {
    const srv = await startServer((conn) => conn.ws.close(1011));
    const r = client(srv.url);
    r.client.once('close', () => r.client.close());
    await until(() => r.closes.length === 2);
    expect(r.closes.map((c) => c.willReconnect)).toEqual([true, false]);
    expect(r.reconnecting).toEqual([]);
    await sleep(30);
    expect(srv.upgrades).toBe(1);
  });
});

describe('options', () => {
  it('rejects invalid numbers', () => {
    expect(() => createClient('ws://127.0.0.1:1/', { WebSocket, maxQueued: -1 })).toThrow(
      /maxQueued must be a number >= 0/,
    );
    expect(() =>
      createClient('ws://127.0.0.1:1/', { WebSocket, backoff: { initialMs: Number.NaN } }),
    ).toThrow(/backoff.initialMs/);
  });

  it('throws without a WebSocket constructor (none given, none global)', () => {
    // Node 22+ has a global WebSocket: hide it for this test, as on Node 20.
    const own = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
    delete (globalThis as { WebSocket?: unknown }).WebSocket;
    try {
      expect((globalThis as { WebSocket?: unknown }).WebSocket).toBeUndefined();
      expect(() => createClient('ws://127.0.0.1:1/')).toThrow(/no WebSocket constructor/);
    } finally {
      if (own) Object.defineProperty(globalThis, 'WebSocket', own);
    }
  });
});
