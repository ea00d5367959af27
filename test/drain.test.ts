/**
 * The phased drain of a single process (`--workers 0`), driven by real signals sent to a
 * real child process, observed by real ws clients.
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { exitMargin } from 'wsdrain/internal';
import { codes, connect, connectMany, heard } from './helpers/clients.js';
import { killAll, sleep, startWsdrain } from './helpers/process.js';
import { rawPeer, waitFrame } from './helpers/raw.js';
import { TIMER_EARLY_MS, within } from './helpers/wait.js';

afterEach(killAll);

const single = ['--workers', '0', '--threads', '1', '--log-level', 'info'];

async function get(port: number, path: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  await res.arrayBuffer();
  return res.status;
}

describe('drain on SIGTERM (--workers 0)', () => {
  it('closes every cooperative client with 1001 and exits 0 with a report', async () => {
    const report = join(tmpdir(), `wsdrain-report-${process.pid}-${Date.now()}.json`);
    const srv = await startWsdrain([...single, '--drain-timeout', '3000', '--report', report]);
    const clients = await connectMany(srv.port, 300);
    const t0 = Date.now();
    srv.kill('SIGTERM');
    const exit = await srv.exited;
    await Promise.all(clients.map((c) => c.closed));
    expect(exit.code).toBe(0);
    expect(codes(clients)).toEqual({ 1001: 300 });
    expect(exit.at - t0).toBeLessThan(3000);
    // Each close carries a reconnect hint with its own delay, within --reconnect-window.
    const retries = new Set<number>();
    for (const c of clients) {
      const m = /^wsdrain:shutdown;retry=(\d+)$/.exec((await c.closed).reason);
      expect(m).not.toBeNull();
      expect(Number(m![1])).toBeLessThanOrEqual(1000);
      retries.add(Number(m![1]));
    }
    expect(retries.size).toBeGreaterThan(100);
    const written = JSON.parse(readFileSync(report, 'utf8')) as Record<string, number>;
    expect(written).toMatchObject({ sockets: 300, clean: 300, terminated: 0, code: 1001 });
    expect(typeof written.durationMs).toBe('number');
  });

  it('terminates a client that never answers the close frame at the deadline, not later', async () => {
    const budget = 1500;
    const srv = await startWsdrain([...single, '--drain-timeout', String(budget)]);
    const good = await connectMany(srv.port, 20);
    const stalled = await connectMany(srv.port, 5);
    for (const c of stalled) c.stall();
    const t0 = Date.now();
    srv.kill('SIGTERM');
    const exit = await srv.exited;
    const elapsed = exit.at - t0;
    expect(exit.code).toBe(0);
    // Terminated at the deadline (budget - exit margin): the budget is kept, and it was not
    // an early cut either.
    expect(elapsed).toBeLessThan(budget + 300);
    expect(elapsed).toBeGreaterThanOrEqual(budget - exitMargin(budget) - TIMER_EARLY_MS);
    await Promise.all(good.map((c) => c.closed));
    expect(codes(good)).toEqual({ 1001: 20 });
    const line = await srv.waitFor((l) => l.msg.startsWith('drained'));
    expect(line.report).toMatchObject({ sockets: 25, clean: 20, terminated: 5 });
  });

  it('answers work in flight before the close frame', async () => {
    const srv = await startWsdrain([...single, '--threads', '2', '--drain-timeout', '5000']);
    const clients = await connectMany(srv.port, 10);
    for (const [i, c] of clients.entries()) {
      c.ws.send(JSON.stringify({ op: 'work', ms: 400, id: i }));
    }
    // The requests have reached the server (and its pool) before the signal.
    await Promise.all(clients.map((c) => heard(c)));
    srv.kill('SIGTERM');
    await Promise.all(clients.map((c) => c.closed));
    for (const [i, c] of clients.entries()) {
      expect(c.messages).toEqual([JSON.stringify({ id: i, done: true })]);
      expect(c.code).toBe(1001);
    }
    expect((await srv.exited).code).toBe(0);
    const line = await srv.waitFor((l) => l.msg.startsWith('drained'));
    expect(line.report).toMatchObject({ inflightCompleted: 10, clean: 10 });
  });

  it('turns /readyz to 503 at once and waits --drain-delay before closing', async () => {
    const delay = 600;
    const srv = await startWsdrain([
      ...single,
      '--drain-delay',
      String(delay),
      '--drain-timeout',
      '3000',
    ]);
    expect(await get(srv.port, '/readyz')).toBe(200);
    expect(await get(srv.port, '/healthz')).toBe(200);
    // A keep-alive connection opened before the signal still answers while draining.
    const c = await connect(srv.port);
    const probe = netConnect(srv.port, '127.0.0.1');
    probe.on('error', () => {});
    await within(once(probe, 'connect'), 5000, 'the probe to connect');
    const t0 = Date.now();
    srv.kill('SIGTERM');
    await srv.waitFor((l) => l.msg.startsWith('drain started'));
    probe.write('GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n');
    const answer = String(
      (await within(once(probe, 'data'), 5000, 'an answer to /readyz on the kept-alive probe'))[0],
    );
    expect(answer).toMatch(/^HTTP\/1\.1 503/);
    // During the delay the port stays open: new probes see 503 / 200, and a new client is
    // refused with 503 + Retry-After instead of a connection reset.
    expect(await get(srv.port, '/readyz')).toBe(503);
    expect(await get(srv.port, '/healthz')).toBe(200);
    await expect(connect(srv.port)).rejects.toThrow('unexpected response 503');
    const closed = await c.closed;
    expect(closed.code).toBe(1001);
    expect(closed.at - t0).toBeGreaterThanOrEqual(delay - TIMER_EARLY_MS);
    expect((await srv.exited).code).toBe(0);
  });

  it('keeps the port answering for the whole shutdown drain: 503 to upgrades, probes served', async () => {
    const srv = await startWsdrain([...single, '--drain-timeout', '1500']);
    // A peer that never answers keeps the drain going until the deadline.
    const holder = await connect(srv.port);
    holder.stall();
    // TCP connection accepted before the signal; its upgrade request comes after it.
    const raw = netConnect(srv.port, '127.0.0.1');
    raw.on('error', () => {});
    await within(once(raw, 'connect'), 5000, 'the raw connection to connect');
    srv.kill('SIGTERM');
    await srv.waitFor((l) => l.msg.startsWith('drain started'));
    await sleep(300);
    // Well past the (zero) delay: still reachable, never a refused connection.
    expect(await get(srv.port, '/healthz')).toBe(200);
    expect(await get(srv.port, '/readyz')).toBe(503);
    await expect(connect(srv.port)).rejects.toThrow('unexpected response 503');
    const chunks: Buffer[] = [];
    raw.on('data', (d: Buffer) => chunks.push(d));
    raw.write(
      'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    await within(once(raw, 'close'), 5000, 'the server to answer the late upgrade and close');
    const text = Buffer.concat(chunks).toString('latin1');
    expect(text).toMatch(/^HTTP\/1\.1 503/);
    expect(text).toContain('Retry-After: 1');
    expect((await srv.exited).code).toBe(0);
  });

  it('spreads close frames over --drain-window, each with its own reconnect hint', async () => {
    const srv = await startWsdrain([
      ...single,
      '--drain-window',
      '1000',
      '--reconnect-window',
      '300',
      '--drain-timeout',
      '3000',
    ]);
    const clients = await connectMany(srv.port, 100);
    const t0 = Date.now();
    srv.kill('SIGTERM');
    const closes = await Promise.all(clients.map((c) => c.closed));
    const times = closes.map((c) => c.at - t0).sort((a, b) => a - b);
    // Evenly spread: the first closes come early, the last near the end of the window.
    expect(times[0]!).toBeLessThan(200);
    expect(times.at(-1)!).toBeGreaterThan(700);
    expect(times[50]! - times[0]!).toBeGreaterThan(300);
    for (const c of closes) {
      expect(c.code).toBe(1001);
      const retry = Number(/retry=(\d+)$/.exec(c.reason)?.[1]);
      expect(retry).toBeGreaterThanOrEqual(0);
      expect(retry).toBeLessThanOrEqual(300);
    }
    expect((await srv.exited).code).toBe(0);
    const line = await srv.waitFor((l) => l.msg.startsWith('drained'));
    expect(line.report).toMatchObject({ clean: 100, windowMs: 1000 });
  });

  it('paces by --drain-rate and caps the window so peers can still answer in the budget', async () => {
    const srv = await startWsdrain([...single, '--drain-rate', '50', '--drain-timeout', '1500']);
    const clients = await connectMany(srv.port, 100);
    const t0 = Date.now();
    srv.kill('SIGTERM');
    const exit = await srv.exited;
    // 100 sockets at 50/s would take 2 s: the window is capped to fit the 1.5 s budget.
    expect(exit.code).toBe(0);
    expect(exit.at - t0).toBeLessThan(1500 + 300);
    const closes = await Promise.all(clients.map((c) => c.closed));
    expect(closes.every((c) => c.code === 1001)).toBe(true);
    const line = await srv.waitFor((l) => l.msg.startsWith('drained'));
    const report = line.report as { windowMs: number; clean: number };
    expect(report.windowMs).toBeGreaterThan(900);
    expect(report.windowMs).toBeLessThan(1500);
    expect(report.clean).toBe(100);
  });

  it('terminates everything and exits 1 on a second signal', async () => {
    const srv = await startWsdrain([...single, '--drain-timeout', '20000']);
    const clients = await connectMany(srv.port, 10);
    for (const c of clients) c.stall();
    srv.kill('SIGTERM');
    await srv.waitFor((l) => l.msg.startsWith('drain started'));
    const t0 = Date.now();
    srv.kill('SIGINT');
    const exit = await srv.exited;
    expect(exit.code).toBe(1);
    expect(exit.at - t0).toBeLessThan(1000);
  });

  it('counts messages that arrive after the close frame, never answering them', async () => {
    const srv = await startWsdrain([...single, '--drain-timeout', '3000']);
    const peer = rawPeer(srv.port);
    expect(await peer.handshake).toMatch(/^HTTP\/1\.1 101/);
    peer.send({ payload: 'before' });
    const echo = await waitFrame(peer, 1);
    expect(echo.payload.toString()).toBe('before');
    srv.kill('SIGTERM');
    const close = await waitFrame(peer, 8);
    expect(close.payload.readUInt16BE(0)).toBe(1001);
    // A peer that ignores the close frame and sends data anyway, then answers it.
    peer.send({ payload: 'after-1' });
    peer.send({ payload: 'after-2' });
    peer.send({ opcode: 8, payload: close.payload.subarray(0, 2) });
    peer.socket.end();
    await peer.closed;
    expect(peer.frames.filter((f) => f.opcode === 1)).toHaveLength(1);
    const line = await srv.waitFor((l) => l.msg.startsWith('drained'));
    expect(line.report).toMatchObject({ late: 2, clean: 1, terminated: 0 });
    expect((await srv.exited).code).toBe(0);
  });
});
