/**
 * Fair scheduling through a real wsdrain: one connection's heavy work must not hold up the
 * other connections' echo, in service or in a drain, and the built-in `work` op is bounded
 * by `--max-work`. Bounds derive from the work asked for, not from a quiet machine.
 */
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { type Client, codes, connect, connectMany, nextMessages } from './helpers/clients.js';
import { killAll, sleep, startWsdrain } from './helpers/process.js';

afterEach(killAll);

const BLOCKING = fileURLToPath(new URL('./fixtures/blocking.mjs', import.meta.url));

const work = (ms: number, id: number): string => JSON.stringify({ op: 'work', ms, id });
const done = (id: number): string => JSON.stringify({ id, done: true });

/** Sends an echo every `everyMs` on each client and records every round trip. */
function echoLoad(clients: Client[], everyMs: number, tag = 'echo') {
  const rtts: number[] = [];
  const sentAt = clients.map(() => new Map<string, number>());
  const sent = clients.map(() => [] as string[]);
  for (const [k, c] of clients.entries()) {
    c.ws.on('message', (data) => {
      const t = sentAt[k]!.get(data.toString());
      if (t !== undefined) rtts.push(Date.now() - t);
    });
  }
  let seq = 0;
  const timer = setInterval(() => {
    seq++;
    for (const [k, c] of clients.entries()) {
      const m = `${tag}-${k}-${seq}`;
      sentAt[k]!.set(m, Date.now());
      sent[k]!.push(m);
      c.ws.send(m);
    }
  }, everyMs);
  return {
    rtts,
    sent,
    stop: () => clearInterval(timer),
  };
}

describe('fair scheduling', () => {
  it("keeps other connections' echo fast while one connection's heavy work runs, and its replies in order", async () => {
    // An echo that waited behind one of these calls would take about WORK; the bound below
    // leaves a quarter of it for a busy machine, where the slowest echo of thousands has
    // taken 1.7 s when nothing waited for the work.
    const WORK = 4000;
    const CALLS = 3;
    const srv = await startWsdrain(['--workers', '0', '--threads', '2', '--max-work', '5000']);
    const heavy = await connect(srv.port);
    const others = await connectMany(srv.port, 20);
    const load = echoLoad(others, 20);
    await sleep(200);
    const ids = Array.from({ length: CALLS }, (_, id) => id);
    for (const id of ids) heavy.ws.send(work(WORK, id));
    // The calls run one after the other on one thread.
    const replies = await nextMessages(heavy, CALLS, CALLS * WORK + 10_000);
    load.stop();
    expect(replies).toEqual(ids.map(done));
    await sleep(500);
    for (const [k, c] of others.entries()) {
      // Every echo answered, in order, and none of them waited for the work.
      expect(c.messages).toEqual(load.sent[k]);
    }
    expect(load.rtts.length).toBeGreaterThan(20 * 100);
    expect(Math.max(...load.rtts)).toBeLessThan((WORK * 3) / 4);
    for (const c of [heavy, ...others]) c.ws.close(1000);
  }, 60_000);

  it("keeps other connections' echo off the threads of connections whose calls take a few ms each", async () => {
    // Below the 10 ms that makes one call heavy: only the calls' average says these are heavy.
    // The calls hold their thread without using the CPU, so the two phases below compete for
    // the same CPU, and only the scheduling differs between them.
    const WORK = 8;
    const srv = await startWsdrain(['--workers', '0', '--threads', '2', '--handler', BLOCKING]);
    const heavy = await connectMany(srv.port, 4);
    const others = await connectMany(srv.port, 20);
    const median = (rtts: number[]): number => [...rtts].sort((p, q) => p - q)[rtts.length >> 1]!;
    // The echo alone, on this machine as it is now.
    const alone = echoLoad(others, 20, 'alone');
    await sleep(1000);
    alone.stop();
    await sleep(200);
    // Each heavy connection keeps 4 calls outstanding, the next one sent as each reply comes.
    let running = true;
    for (const h of heavy) {
      h.ws.on('message', () => {
        if (running) h.ws.send(`block:${WORK}`);
      });
      for (let k = 0; k < 4; k++) h.ws.send(`block:${WORK}`);
    }
    await sleep(300);
    const load = echoLoad(others, 20);
    await sleep(1500);
    load.stop();
    running = false;
    await sleep(300);
    for (const [k, c] of others.entries()) {
      expect(c.messages).toEqual([...alone.sent[k]!, ...load.sent[k]!]);
    }
    expect(alone.rtts.length).toBeGreaterThan(20 * 25);
    expect(load.rtts.length).toBeGreaterThan(20 * 40);
    // In a batch with the heavy connections' calls, an echo would wait for several of them.
    expect(median(load.rtts)).toBeLessThan(median(alone.rtts) + WORK);
    for (const c of [...heavy, ...others]) c.ws.close(1000);
  }, 30_000);

  it('closes well-behaved clients with 1001 in a drain while one connection runs heavy work', async () => {
    const WORK = 3000;
    const budget = 2000;
    const srv = await startWsdrain([
      '--workers',
      '0',
      '--threads',
      '2',
      '--max-work',
      '5000',
      '--drain-timeout',
      String(budget),
    ]);
    const heavy = await connect(srv.port);
    const good = await connectMany(srv.port, 50);
    const load = echoLoad(good, 20);
    await sleep(200);
    for (let id = 0; id < 4; id++) heavy.ws.send(work(WORK, id));
    await sleep(300);
    srv.kill('SIGTERM');
    await Promise.all(good.map((c) => c.closed));
    load.stop();
    // Their pending echoes ran before the deadline: each got its close frame, none was cut.
    expect(codes(good)).toEqual({ 1001: 50 });
    expect((await srv.exited).code).toBe(0);
  }, 30_000);
});

describe('--max-work', () => {
  it('cuts the built-in work op to 100 ms by default', async () => {
    const srv = await startWsdrain(['--workers', '0']);
    const c = await connect(srv.port);
    const t0 = Date.now();
    c.ws.send(work(60_000, 7));
    // Far below the 60 s asked for.
    expect(await nextMessages(c, 1, 10_000)).toEqual([done(7)]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    c.ws.close(1000);
  });

  it('cuts the work op to --max-work', async () => {
    const srv = await startWsdrain(['--workers', '0', '--max-work', '400']);
    const c = await connect(srv.port);
    const t0 = Date.now();
    c.ws.send(work(60_000, 1));
    expect(await nextMessages(c, 1, 10_000)).toEqual([done(1)]);
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(380);
    expect(took).toBeLessThan(10_000);
    c.ws.close(1000);
  });
});
