/**
 * WsdrainServer and drainServer driven directly, in this process (no CLI, no cluster): the
 * programmatic API as the README shows it, against real ws clients over loopback.
 */

import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { DrainStateError, drainServer, validateOptions, WsdrainServer } from 'wsdrain';
import { type Client, codes, connectMany, nextMessages } from '../helpers/clients.js';
import { rawPeer } from '../helpers/raw.js';
import { until } from '../helpers/wait.js';

const servers: WsdrainServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.terminateAll();
    await s.shutdown();
  }
});

async function start(
  extra: Record<string, unknown> = {},
): Promise<{ server: WsdrainServer; port: number }> {
  const options = validateOptions({
    port: 0,
    host: '127.0.0.1',
    workers: 0,
    threads: 1,
    heartbeat: 0,
    ...extra,
  });
  const server = new WsdrainServer({ ...options, logger: pino({ level: 'silent' }) });
  servers.push(server);
  const { port } = await server.listen();
  return { server, port };
}

describe('WsdrainServer + drainServer in-process', () => {
  it('closes every cooperative client with the code and reason given, all clean', async () => {
    const { server, port } = await start();
    const clients = await connectMany(port, 50);
    expect(server.connections).toBe(50);
    expect(server.state).toBe('running');
    const report = await drainServer(server, {
      code: 1001,
      reason: (i, n) => `bye ${i} of ${n}`,
      deadline: Date.now() + 3000,
    });
    const closes = await Promise.all(clients.map((c) => c.closed));
    expect(codes(clients)).toEqual({ 1001: 50 });
    expect(new Set(closes.map((c) => c.reason)).size).toBe(50);
    expect(closes.every((c) => /^bye \d+ of 50$/.test(c.reason))).toBe(true);
    expect(report).toMatchObject({ sockets: 50, clean: 50, terminated: 0, dropped: 0, code: 1001 });
    expect(server.state).toBe('closed');
  });

  it('terminates a peer that never answers at the deadline, not before', async () => {
    const { server, port } = await start();
    const [good, stalled] = (await connectMany(port, 2)) as [Client, Client];
    stalled.stall();
    const t0 = Date.now();
    const budget = 800;
    const report = await drainServer(server, { code: 1012, deadline: t0 + budget });
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(budget - 20);
    expect(report).toMatchObject({ sockets: 2, clean: 1, terminated: 1 });
    expect((await good.closed).code).toBe(1012);
  });

  it('answers work in flight before the close frame, and counts messages after it as late', async () => {
    const { server, port } = await start();
    const [c] = (await connectMany(port, 1)) as [Client];
    c.ws.send(JSON.stringify({ op: 'work', ms: 80, id: 'w' }));
    await new Promise((r) => setTimeout(r, 20));
    // The reply comes first, then the close frame.
    const order: string[] = [];
    c.ws.on('message', () => order.push('reply'));
    c.ws.on('close', () => order.push('close'));
    const report = await drainServer(server, { code: 1001, deadline: Date.now() + 3000 });
    await c.closed;
    expect(order).toEqual(['reply', 'close']);
    expect(c.messages).toEqual([JSON.stringify({ id: 'w', done: true })]);
    expect(report).toMatchObject({ inflightCompleted: 1, clean: 1, abandoned: 0 });
  });

  it('runs one drain: a second call gets the same promise; after it, DrainStateError', async () => {
    const { server } = await start();
    const first = drainServer(server, { deadline: Date.now() + 1000 });
    expect(drainServer(server, { deadline: Date.now() + 5 })).toBe(first);
    await first;
    await expect(drainServer(server, { deadline: Date.now() + 1000 })).resolves.toBe(await first);
    const { server: other } = await start();
    await other.shutdown();
    await expect(drainServer(other, { deadline: Date.now() + 1000 })).rejects.toBeInstanceOf(
      DrainStateError,
    );
  });

  it('terminates what is left at once when its signal aborts', async () => {
    const { server, port } = await start();
    const clients = await connectMany(port, 5);
    for (const c of clients) c.stall();
    const ac = new AbortController();
    const t0 = Date.now();
    const drained = drainServer(server, { deadline: t0 + 20_000, signal: ac.signal });
    setTimeout(() => ac.abort(), 100);
    const report = await drained;
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(report.terminated).toBe(5);
  });

  it('counts the pongs it queues against maxBuffered: a peer that pings without reading is cut', async () => {
    const max = 4096;
    const { server, port } = await start({ maxBuffered: max });
    const accepted: Socket[] = [];
    (server as unknown as { http: Server }).http.on('connection', (s) => accepted.push(s));
    const peer = rawPeer(port);
    await peer.handshake;
    // From now on nothing the server writes to it leaves the process: each pong waits there.
    accepted[0]!.cork();
    let sent = 0;
    const pings = setInterval(() => {
      peer.send({ opcode: 9, payload: 'p'.repeat(125) });
      sent++;
    }, 20);
    try {
      await until(() => server.stats().slowConsumers === 1, 'the peer cut for its pongs', 20_000);
    } finally {
      clearInterval(pings);
    }
    // Cut once its pongs (127 bytes each) passed the limit, not later.
    expect(sent * 127).toBeLessThan(2 * max);
    expect(server.connections).toBe(0);
  });

  it('keeps echoing while running (the pool answers in order)', async () => {
    const { server, port } = await start();
    const [c] = (await connectMany(port, 1)) as [Client];
    for (let i = 0; i < 20; i++) c.ws.send(`m${i}`);
    expect(await nextMessages(c, 20)).toEqual(Array.from({ length: 20 }, (_, i) => `m${i}`));
    expect(server.stats().accepted).toBe(1);
  });
});
