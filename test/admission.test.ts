/**
 * Who gets in: descriptors exhausted by connections that never upgrade, per-address caps, and
 * malformed upgrade requests. Real wsdrain processes, raw TCP peers over loopback.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, nextMessages } from './helpers/clients.js';
import { killAll, sleep, startWsdrain } from './helpers/process.js';
import { rawPeer } from './helpers/raw.js';

afterEach(killAll);

const single = ['--workers', '0', '--threads', '1'];

const KEY = 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';
const upgrade = (head: string, headers = 'Host: 127.0.0.1\r\n'): string =>
  `${head}\r\n${headers}Upgrade: websocket\r\nConnection: Upgrade\r\n${KEY}\r\n`;

/** A TCP connection from `localAddress` that sends nothing; resolves once connected. */
function idle(port: number, localAddress = '127.0.0.1'): Promise<Socket & { gone: boolean }> {
  return new Promise((resolve) => {
    const s = netConnect({ port, host: '127.0.0.1', localAddress }) as Socket & { gone: boolean };
    s.gone = false;
    s.on('error', () => {});
    s.resume(); // read (and drop) whatever the server says, so its FIN is seen
    s.on('close', () => {
      s.gone = true;
    });
    s.on('connect', () => resolve(s));
  });
}

async function status(port: number, path: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  await res.arrayBuffer();
  return res.status;
}

async function until(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(10);
  }
}

describe('connections that never upgrade', () => {
  it('cannot lock out /healthz or new clients by taking every descriptor', async () => {
    const handshake = 2000;
    const srv = await startWsdrain([...single, '--handshake-timeout', String(handshake)], {
      wrap: ['/bin/sh', '-c', 'ulimit -n 300 && exec "$0" "$@"'],
    });
    // More idle connections than the process has descriptors.
    const sockets: Array<Socket & { gone: boolean }> = [];
    for (let i = 0; i < 400; i++) sockets.push(await idle(srv.port));
    // Past a tenth of the handshake timeout the oldest are fair game for newcomers.
    await sleep(handshake / 10 + 50);
    expect(await status(srv.port, '/healthz')).toBe(200);
    const c = await connect(srv.port);
    c.ws.send('in');
    expect(await nextMessages(c, 1)).toEqual(['in']);
    await srv.waitFor((l) => /^out of descriptors/.test(l.msg), 5000);
    expect(sockets.filter((s) => s.gone).length).toBeGreaterThan(100);
    expect(srv.lines.some((l) => l.msg === 'accept failed')).toBe(false);
    for (const s of sockets) s.destroy();
  });
});

describe('--max-connections-per-ip', () => {
  it('caps WebSocket connections (429 beyond) and idle connections per address', async () => {
    // One cluster worker: the cap is per worker, and the primary serves the metrics.
    const srv = await startWsdrain([
      '--workers',
      '1',
      '--threads',
      '1',
      '--max-connections-per-ip',
      '3',
      '--metrics-port',
      '0',
    ]);
    const mport = (await srv.waitFor((l) => typeof l.metricsPort === 'number'))
      .metricsPort as number;
    const mine = await Promise.all(
      [1, 2, 3].map(() => connect(srv.port, { localAddress: '127.0.0.2' })),
    );
    await expect(connect(srv.port, { localAddress: '127.0.0.2' })).rejects.toThrow(
      'unexpected response 429',
    );
    // Another address is not affected.
    const other = await connect(srv.port, { localAddress: '127.0.0.3' });
    other.ws.send('other');
    expect(await nextMessages(other, 1)).toEqual(['other']);
    // One leaves: room for one more.
    mine[0]!.ws.close(1000);
    await mine[0]!.closed;
    const again = await connect(srv.port, { localAddress: '127.0.0.2' });
    again.ws.send('again');
    expect(await nextMessages(again, 1)).toEqual(['again']);
    // Five idle connections from one address: the two oldest are closed.
    const idles: Array<Socket & { gone: boolean }> = [];
    for (let i = 0; i < 5; i++) idles.push(await idle(srv.port, '127.0.0.4'));
    await until(
      'the two oldest idle connections closed',
      () => idles[0]!.gone && idles[1]!.gone,
      5000,
    );
    await sleep(100);
    expect(idles.map((s) => s.gone)).toEqual([true, true, false, false, false]);
    for (const s of idles) s.destroy();
    const text = await (await fetch(`http://127.0.0.1:${mport}/metrics`)).text();
    expect(text).toContain('wsdrain_connections_refused_total{reason="per_ip"} 1\n');
    expect(text).toContain('wsdrain_connections_refused_total{reason="idle_evicted"} 2\n');
  });
});

describe('malformed upgrades', () => {
  it('answers 431 to oversized headers', async () => {
    const srv = await startWsdrain(single);
    const big = rawPeer(
      srv.port,
      upgrade('GET / HTTP/1.1', `Host: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n`),
    );
    expect(await big.handshake).toMatch(/^HTTP\/1\.1 431/);
  });

  it('answers 400 to an HTTP/1.0 upgrade and to a missing or repeated Host', async () => {
    const srv = await startWsdrain(single);
    const old = rawPeer(srv.port, upgrade('GET / HTTP/1.0'));
    expect(await old.handshake).toMatch(/^HTTP\/1\.1 400/);
    const nohost = rawPeer(srv.port, upgrade('GET / HTTP/1.1', ''));
    expect(await nohost.handshake).toMatch(/^HTTP\/1\.1 400/);
    const twice = rawPeer(srv.port, upgrade('GET / HTTP/1.1', 'Host: a\r\nHost: b\r\n'));
    expect(await twice.handshake).toMatch(/^HTTP\/1\.1 400/);
    const fine = rawPeer(srv.port, upgrade('GET / HTTP/1.1'));
    expect(await fine.handshake).toMatch(/^HTTP\/1\.1 101/);
  });

  it('selects no subprotocol it does not speak, even when the client offers some', async () => {
    const srv = await startWsdrain(single);
    const peer = rawPeer(
      srv.port,
      upgrade('GET / HTTP/1.1', 'Host: x\r\nSec-WebSocket-Protocol: chat, superchat\r\n'),
    );
    const answer = await peer.handshake;
    expect(answer).toMatch(/^HTTP\/1\.1 101/);
    expect(answer.toLowerCase()).not.toContain('sec-websocket-protocol');
  });
});
