/**
 * Hostile and failing peers: handshake abuse, slow consumers, floods, descriptor exhaustion,
 * a worker killed mid-drain, and in-flight data while a drain lands under load.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import {
  type Client,
  connect,
  connectMany,
  nextMessages,
  waitMessages,
} from './helpers/clients.js';
import { killAll, listeningPids, sleep, startWsdrain } from './helpers/process.js';
import { rawPeer } from './helpers/raw.js';
import { TIMER_EARLY_MS, within } from './helpers/wait.js';

afterEach(killAll);

const single = ['--workers', '0', '--threads', '1'];

async function stillEchoes(port: number): Promise<void> {
  const c = await connect(port);
  c.ws.send('still here');
  expect(await nextMessages(c, 1)).toEqual(['still here']);
  c.ws.close(1000);
}

const upgrade = (headers: string): string =>
  `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${headers}\r\n`;

describe('handshake abuse', () => {
  it('answers non-HTTP bytes, a wrong version and a missing key with 400', async () => {
    const srv = await startWsdrain(single);
    const junk = rawPeer(srv.port, '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n');
    expect(await junk.handshake).toMatch(/^HTTP\/1\.1 400/);
    const version = rawPeer(
      srv.port,
      upgrade('Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 12\r\n'),
    );
    expect(await version.handshake).toMatch(/^HTTP\/1\.1 400/);
    const nokey = rawPeer(srv.port, upgrade('Sec-WebSocket-Version: 13\r\n'));
    expect(await nokey.handshake).toMatch(/^HTTP\/1\.1 400/);
    await stillEchoes(srv.port);
  });

  it('times out a client that sends its headers a byte at a time (slowloris)', async () => {
    const timeout = 500;
    const srv = await startWsdrain([...single, '--handshake-timeout', String(timeout)]);
    const peer = rawPeer(srv.port, 'G');
    const request = upgrade(
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n',
    );
    let i = 1;
    const drip = setInterval(() => {
      if (i < request.length && peer.socket.writable) peer.socket.write(request[i++]!);
    }, 50);
    const t0 = Date.now();
    await peer.closed;
    clearInterval(drip);
    const elapsed = Date.now() - t0;
    // Not before the timeout (the connection began after t0), and within the timeout plus
    // one check interval (a quarter of it, at least 100 ms) and some scheduling slack.
    expect(elapsed).toBeGreaterThanOrEqual(timeout - TIMER_EARLY_MS);
    expect(elapsed).toBeLessThan(timeout + 500);
    expect(i).toBeLessThan(request.length);
    // A silent connection is closed the same way.
    const silent = rawPeer(srv.port, '');
    const t1 = Date.now();
    await silent.closed;
    expect(Date.now() - t1).toBeGreaterThanOrEqual(timeout - TIMER_EARLY_MS);
    expect(Date.now() - t1).toBeLessThan(timeout + 500);
    await stillEchoes(srv.port);
  });

  it('answers 403 to an Origin outside --origin and accepts the listed ones', async () => {
    const srv = await startWsdrain([
      ...single,
      '--origin',
      'https://app.example,https://admin.example',
    ]);
    await expect(
      connect(srv.port, { headers: { Origin: 'https://evil.example' } }),
    ).rejects.toThrow('unexpected response 403');
    await expect(connect(srv.port)).rejects.toThrow('unexpected response 403');
    const ok = await connect(srv.port, { headers: { Origin: 'https://admin.example' } });
    ok.ws.send('hi');
    expect(await nextMessages(ok, 1)).toEqual(['hi']);
  });
});

describe('slow consumers and floods', () => {
  it('terminates a client that stops reading past --max-buffered; others are unaffected', async () => {
    const srv = await startWsdrain([...single, '--max-buffered', '1048576']);
    const slow = await connect(srv.port);
    const other = await connect(srv.port);
    slow.stall();
    const big = Buffer.alloc(64 * 1024, 1);
    // The echo of each message piles up on the server's side of a connection nobody reads.
    const pump = setInterval(() => {
      for (let k = 0; k < 8 && slow.ws.readyState === WebSocket.OPEN; k++) slow.ws.send(big);
    }, 5);
    const t0 = Date.now();
    while (Date.now() - t0 < 10_000) {
      const line = srv.lines.find((l) => l.msg === 'slow consumer terminated');
      if (line) break;
      await sleep(20);
    }
    clearInterval(pump);
    const line = srv.lines.find((l) => l.msg === 'slow consumer terminated');
    expect(line).toBeDefined();
    expect(line!.buffered as number).toBeGreaterThan(1_048_576);
    // The connection is really gone: once the client reads again, it gets what was sent
    // before the cut and then the end of the stream, without a close frame.
    slow.unstall();
    const closed = await within(slow.closed, 5000, 'the slow client to be cut off');
    expect(closed.code).toBe(1006);
    expect(other.code).toBeUndefined();
    other.ws.send('fine');
    expect(await nextMessages(other, 1)).toEqual(['fine']);
  });

  it('closes a connection that sends faster than --rate-limit with 1008', async () => {
    const srv = await startWsdrain([...single, '--rate-limit', '20']);
    const polite = await connect(srv.port);
    const flood = await connect(srv.port);
    for (let i = 0; i < 10; i++) polite.ws.send(`p${i}`);
    for (let i = 0; i < 100; i++) flood.ws.send(`f${i}`);
    expect((await flood.closed).code).toBe(1008);
    expect(flood.messages.length).toBeLessThanOrEqual(20);
    // The polite client, under the limit, gets every echo and stays open.
    expect(await waitMessages(polite, 10)).toEqual(Array.from({ length: 10 }, (_, i) => `p${i}`));
    expect(polite.code).toBeUndefined();
    polite.ws.send('still welcome');
    expect(await nextMessages(polite, 1)).toEqual(['still welcome']);
  });
});

describe('descriptor limits', () => {
  /** Starts wsdrain under a lower soft RLIMIT_NOFILE. */
  function startLimited(nofile: number, args: string[]) {
    return startWsdrain(args, { wrap: ['/bin/sh', '-c', `ulimit -n ${nofile} && exec "$0" "$@"`] });
  }

  it('derives the default limit from RLIMIT_NOFILE: 503 before EMFILE', async () => {
    const srv = await startLimited(300, [...single]);
    const limit = srv.lines.find((l) => typeof l.maxConnections === 'number')!
      .maxConnections as number;
    expect(limit).toBeGreaterThan(50);
    expect(limit).toBeLessThan(300);
    const held: Client[] = await connectMany(srv.port, limit);
    await expect(connect(srv.port)).rejects.toThrow('unexpected response 503');
    expect(srv.lines.some((l) => l.msg === 'accept failed')).toBe(false);
    held[0]!.ws.close(1000);
    await held[0]!.closed;
    await sleep(20);
    await stillEchoes(srv.port);
  });

  it('answers 503 at the open-file limit when --max-connections is above it, logs it, and accepts again once descriptors free up', async () => {
    const srv = await startLimited(150, [...single, '--max-connections', '1000']);
    const held: Client[] = [];
    for (let i = 0; i < 200; i++) {
      try {
        held.push(await connect(srv.port));
      } catch {
        break;
      }
    }
    expect(held.length).toBeLessThan(150);
    expect(srv.lines.some((l) => /more than the open-file limit allows/.test(l.msg))).toBe(true);
    await expect(connect(srv.port)).rejects.toThrow('unexpected response 503');
    await srv.waitFor((l) => /^open-file limit reached/.test(l.msg), 5000);
    expect(srv.lines.some((l) => l.msg === 'accept failed')).toBe(false);
    for (const c of held.splice(0, 20)) c.ws.terminate();
    await srv.waitFor((l) => /below the open-file limit again/.test(l.msg), 5000);
    await stillEchoes(srv.port);
  });
});

describe('failures during a drain', () => {
  it('finishes the drain of the others when a worker is SIGKILLed mid-drain, reports it, exits 1', async () => {
    const srv = await startWsdrain(['--workers', '2', '--threads', '1', '--drain-timeout', '3000']);
    const pids = await listeningPids(srv, 2);
    const clients = await connectMany(srv.port, 100);
    for (const c of clients) c.stall();
    srv.kill('SIGTERM');
    await srv.waitFor((l) => /draining 2 workers/.test(l.msg));
    process.kill(pids[0]!, 'SIGKILL');
    const exit = await srv.exited;
    expect(exit.code).toBe(1);
    const summary = await srv.waitFor((l) => l.role === 'primary' && l.msg.startsWith('drained'));
    const report = summary.report as {
      workersLost: number;
      workers: Array<{ pid: number; lost: boolean }>;
    };
    expect(report.workersLost).toBe(1);
    expect(report.workers.find((w) => w.pid === pids[0])?.lost).toBe(true);
    expect(summary.msg).toContain('1 lost');
  });

  it('answers every request received before the close frame and counts the rest', async () => {
    const srv = await startWsdrain([
      '--workers',
      '2',
      '--threads',
      '1',
      '--drain-timeout',
      '15000',
    ]);
    const n = 2000;
    const clients = await connectMany(srv.port, n);
    let sent = 0;
    const sentBy = new Map<Client, number>();
    for (const c of clients) sentBy.set(c, 0);
    const load = setInterval(() => {
      for (const c of clients) {
        if (c.ws.readyState !== WebSocket.OPEN) continue;
        const k = sentBy.get(c)!;
        c.ws.send(k % 10 === 0 ? JSON.stringify({ op: 'work', ms: 1, id: k }) : `m${k}`);
        sentBy.set(c, k + 1);
        sent++;
      }
    }, 10);
    await sleep(300);
    srv.kill('SIGTERM');
    await Promise.all(clients.map((c) => c.closed));
    clearInterval(load);
    expect((await srv.exited).code).toBe(0);
    // The reply to the k-th message of a client.
    const reply = (k: number): string =>
      k % 10 === 0 ? JSON.stringify({ id: k, done: true }) : `m${k}`;
    let replies = 0;
    const outOfOrder: string[] = [];
    for (const [i, c] of clients.entries()) {
      expect(c.code).toBe(1001);
      // Every reply in order: a prefix of the replies to what this client sent.
      replies += c.messages.length;
      expect(c.messages.length).toBeLessThanOrEqual(sentBy.get(c)!);
      const k = c.messages.findIndex((m, j) => m !== reply(j));
      if (k !== -1) outOfOrder.push(`client ${i}: reply ${k} is ${String(c.messages[k])}`);
    }
    expect(outOfOrder).toEqual([]);
    // Each client sent its first message long before the signal: each got replies.
    expect(clients.flatMap((c, i) => (c.messages.length === 0 ? [i] : []))).toEqual([]);
    const summary = await srv.waitFor((l) => l.role === 'primary' && l.msg.startsWith('drained'));
    const report = summary.report as {
      late: number;
      abandoned: number;
      clean: number;
      inflightCompleted: number;
    };
    expect(report.clean).toBe(n);
    // The signal landed under load: work in flight was answered, messages came after
    // their close frames...
    expect(report.inflightCompleted).toBeGreaterThan(0);
    expect(report.late).toBeGreaterThan(0);
    // ...and nothing was silently dropped: whatever was sent and not answered was late, or
    // abandoned at the last call (work still owed, on a machine too busy for the budget).
    expect(sent - replies).toBe(report.late + report.abandoned);
  });
});
