/**
 * The worker server as a client sees it: HTTP endpoints, protocol errors, reply ordering,
 * backpressure, and handler failures, all through a real single-process wsdrain.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, connectMany, nextMessages, waitMessages } from './helpers/clients.js';
import { killAll, type Running, sleep, startWsdrain } from './helpers/process.js';
import { rawPeer } from './helpers/raw.js';

const fixture = (name: string): string =>
  fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

async function stillEchoes(port: number): Promise<void> {
  const c = await connect(port);
  c.ws.send('still here');
  expect(await nextMessages(c, 1)).toEqual(['still here']);
  c.ws.close(1000);
  await c.closed;
}

describe('default server', () => {
  let srv: Running;
  beforeAll(async () => {
    srv = await startWsdrain(['--workers', '0', '--threads', '2', '--max-payload', '4096']);
  });
  afterAll(killAll);

  it('answers /healthz, /readyz and 426 for other HTTP', async () => {
    const health = await fetch(`http://127.0.0.1:${srv.port}/healthz`);
    expect(health.status).toBe(200);
    const ready = await fetch(`http://127.0.0.1:${srv.port}/readyz`);
    expect(ready.status).toBe(200);
    const other = await fetch(`http://127.0.0.1:${srv.port}/anything`);
    expect(other.status).toBe(426);
    expect(other.headers.get('upgrade')).toBe('websocket');
    const post = await fetch(`http://127.0.0.1:${srv.port}/healthz`, { method: 'POST', body: 'x' });
    expect(post.status).toBe(426);
  });

  it('echoes text as text and binary as binary', async () => {
    const c = await connect(srv.port);
    c.ws.send('hello');
    c.ws.send(Buffer.from([0, 1, 2, 255]));
    const [text, bin] = await nextMessages(c, 2);
    expect(text).toBe('hello');
    expect(Buffer.isBuffer(bin)).toBe(true);
    expect([...(bin as Buffer)]).toEqual([0, 1, 2, 255]);
    c.ws.close(1000);
  });

  it('keeps replies in the order of the messages on each connection', async () => {
    const clients = await connectMany(srv.port, 5);
    const expected: string[][] = clients.map(() => []);
    for (let i = 0; i < 60; i++) {
      for (const [k, c] of clients.entries()) {
        // Slow work and instant echoes interleaved: a pool thread finishes the echoes first.
        const m =
          i % 3 === 0 ? JSON.stringify({ op: 'work', ms: 5, id: `${k}-${i}` }) : `m-${k}-${i}`;
        c.ws.send(m);
        expected[k]!.push(i % 3 === 0 ? JSON.stringify({ id: `${k}-${i}`, done: true }) : m);
      }
    }
    for (const [k, c] of clients.entries()) {
      expect(await waitMessages(c, 60, 10_000)).toEqual(expected[k]);
      c.ws.close(1000);
    }
  });

  const abuse: Array<[string, Parameters<ReturnType<typeof rawPeer>['send']>[0], number]> = [
    ['invalid UTF-8 in a text frame', { payload: Buffer.from([0xc3, 0x28]) }, 1007],
    ['a message over --max-payload', { payload: Buffer.alloc(5000, 97) }, 1009],
    ['an unmasked frame', { payload: 'plain', mask: false }, 1002],
    ['a reserved opcode', { opcode: 3, payload: 'x' }, 1002],
    ['RSV bits without an extension', { payload: 'x', rsv: 4 }, 1002],
    ['a fragmented control frame', { opcode: 9, fin: false, payload: 'p' }, 1002],
    ['an invalid close code', { opcode: 8, payload: Buffer.from([0x03, 0xe7]) }, 1002],
  ];
  for (const [what, f, code] of abuse) {
    it(`answers ${what} with ${code} and keeps serving`, async () => {
      const peer = rawPeer(srv.port);
      expect(await peer.handshake).toMatch(/^HTTP\/1\.1 101/);
      peer.send(f);
      expect(await peer.closeCode()).toBe(code);
      await stillEchoes(srv.port);
    });
  }

  it('closes with 1009 when tiny fragments add up past --max-payload', async () => {
    const peer = rawPeer(srv.port);
    await peer.handshake;
    // 600 fragments of 8 bytes: past the 4096-byte limit, well within --max-fragments.
    peer.send({ opcode: 1, fin: false, payload: 'aaaaaaaa' });
    for (let i = 0; i < 600; i++) peer.send({ opcode: 0, fin: false, payload: 'aaaaaaaa' });
    expect(await peer.closeCode()).toBe(1009);
    await stillEchoes(srv.port);
  });

  it('answers pings with pongs, and a flood of pings with 1008', async () => {
    const polite = rawPeer(srv.port);
    await polite.handshake;
    for (let i = 0; i < 20; i++) polite.send({ opcode: 9, payload: `p${i}` });
    const t0 = Date.now();
    while (polite.frames.filter((f) => f.opcode === 10).length < 20 && Date.now() - t0 < 5000) {
      await sleep(10);
    }
    expect(polite.frames.filter((f) => f.opcode === 10).map((f) => f.payload.toString())).toEqual(
      Array.from({ length: 20 }, (_, i) => `p${i}`),
    );
    polite.socket.destroy();
    const flood = rawPeer(srv.port);
    await flood.handshake;
    for (let i = 0; i < 2000; i++) flood.send({ opcode: 9, payload: 'p' });
    expect(await flood.closeCode()).toBe(1008);
    await stillEchoes(srv.port);
  });
});

describe('handler module and failures', () => {
  let srv: Running;
  beforeAll(async () => {
    srv = await startWsdrain([
      '--workers',
      '0',
      '--threads',
      '1',
      '--handler',
      fixture('faulty.mjs'),
      '--task-timeout',
      '300',
    ]);
  });
  afterAll(killAll);

  for (const kind of ['throw', 'reject', 'hang', 'crash']) {
    it(`closes the connection with 1011 when the handler does "${kind}", and recovers`, async () => {
      const bad = await connect(srv.port);
      const bystander = await connect(srv.port);
      bad.ws.send(kind);
      const closed = await bad.closed;
      expect(closed.code).toBe(1011);
      // Give the pool a moment to replace a dead thread: a message dispatched to a thread in
      // the instant it dies shares its fate (1011), see the README.
      await sleep(200);
      bystander.ws.send('after');
      expect(await nextMessages(bystander, 1, 5000)).toEqual(['ok:after']);
      bystander.ws.close(1000);
    });
  }

  it('loads a handler module given by path', async () => {
    const s = await startWsdrain([
      '--workers',
      '0',
      '--threads',
      '1',
      '--handler',
      fixture('upper.mjs'),
    ]);
    const c = await connect(s.port);
    c.ws.send('shout');
    c.ws.send(Buffer.alloc(7));
    expect(await nextMessages(c, 2)).toEqual(['SHOUT', 'binary:7']);
    s.kill('SIGTERM');
    expect((await s.exited).code).toBe(0);
  });

  it('refuses to start with a handler that cannot be loaded', async () => {
    for (const spec of [fixture('no-function.mjs'), './does-not-exist.mjs']) {
      const s = await startWsdrain(['--workers', '0', '--handler', spec], { waitReady: false });
      const exit = await s.exited;
      expect(exit, `${spec}: ${s.stderr()}`).toMatchObject({ code: 1, signal: null });
      expect(s.stderr()).toContain('cannot load handler');
    }
  });
});

describe('limits and timeouts', () => {
  afterAll(killAll);

  it('stops reading from a connection whose work piles up (TCP backpressure), losing nothing', async () => {
    const srv = await startWsdrain(['--workers', '0', '--threads', '1']);
    const c = await connect(srv.port);
    const pad = 'x'.repeat(20_000);
    const n = 1000;
    for (let i = 0; i < n; i++) c.ws.send(JSON.stringify({ op: 'work', ms: 1, id: i, pad }));
    await sleep(300);
    // 20 MB sent; the server holds at most a bounded window of it, the rest waits in the
    // client's buffer because the server stopped reading.
    expect(c.ws.bufferedAmount).toBeGreaterThan(1_000_000);
    const replies = await waitMessages(c, n, 20_000);
    expect(replies.map((r) => (JSON.parse(r as string) as { id: number }).id)).toEqual(
      Array.from({ length: n }, (_, i) => i),
    );
    expect(c.ws.bufferedAmount).toBe(0);
    c.ws.close(1000);
  });

  it('answers upgrades beyond --max-connections with 503 and serves again when one leaves', async () => {
    const srv = await startWsdrain(['--workers', '0', '--threads', '1', '--max-connections', '3']);
    const held = await connectMany(srv.port, 3);
    await expect(connect(srv.port)).rejects.toThrow('unexpected response 503');
    held[0]!.ws.close(1000);
    await held[0]!.closed;
    await sleep(20);
    await stillEchoes(srv.port);
  });

  it('terminates a peer that stops answering pings after one heartbeat', async () => {
    const srv = await startWsdrain(['--workers', '0', '--threads', '1', '--heartbeat', '200']);
    const live = await connect(srv.port);
    // A raw peer never answers pings.
    const dead = rawPeer(srv.port);
    await dead.handshake;
    const t0 = Date.now();
    await dead.closed;
    expect(dead.frames.some((f) => f.opcode === 9)).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(live.code).toBeUndefined();
    live.ws.send('ping?');
    expect(await nextMessages(live, 1)).toEqual(['ping?']);
  });
});
