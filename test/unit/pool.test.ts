/**
 * The handler pool in process, with real threads: fair scheduling across owners, the lane
 * kept for light owners, messages given back from a task whose current call runs long, and
 * results delivered once and in order per owner.
 */
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Kind, MessagePool, type PoolOptions } from 'wsdrain/internal';

const fixture = (name: string): string =>
  fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));

interface Ticket {
  owner: string;
  i: number;
}

interface Seen extends Ticket {
  kind: number;
  data: string;
  /** ms since the harness started. */
  at: number;
}

const pools: Array<MessagePool<Ticket>> = [];

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.destroy()));
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A pool over the given handler whose owners are named by strings, recording every result. */
async function harness(
  opts: Partial<PoolOptions<Ticket>> & { threads: number },
  handler = fixture('sleepy.mjs'),
) {
  const seen: Seen[] = [];
  const keys = new Map<string, object>();
  const sent = new Map<string, number>();
  const sentAt = new Map<string, number>();
  const pool = new MessagePool<Ticket>({
    handler,
    taskTimeout: 10_000,
    ...opts,
    ownerOf: (t) => {
      let k = keys.get(t.owner);
      if (!k) {
        k = {};
        keys.set(t.owner, k);
      }
      return k;
    },
    onResult: (t, kind, data) => seen.push({ ...t, kind, data: String(data), at: Date.now() - t0 }),
  });
  pools.push(pool);
  await pool.ready();
  const t0 = Date.now();
  return {
    pool,
    seen,
    /** Submits `text` as the next message of `owner`; returns its index. */
    send(owner: string, text: string): number {
      const i = sent.get(owner) ?? 0;
      sent.set(owner, i + 1);
      sentAt.set(`${owner}/${i}`, Date.now() - t0);
      pool.submit(Buffer.from(text), false, { owner, i });
      return i;
    },
    /** Results of `owner`, in the order they came. */
    of: (owner: string): Seen[] => seen.filter((s) => s.owner === owner),
    /** ms from submitting message i of `owner` to its result. */
    latency(owner: string, i: number): number {
      const r = seen.find((s) => s.owner === owner && s.i === i);
      if (!r) throw new Error(`no result for ${owner}/${i}`);
      return r.at - sentAt.get(`${owner}/${i}`)!;
    },
    async waitFor(n: number, timeoutMs = 15_000): Promise<void> {
      const end = Date.now() + timeoutMs;
      while (seen.length < n) {
        if (Date.now() > end) throw new Error(`${seen.length} of ${n} results`);
        await sleep(5);
      }
    },
  };
}

describe('MessagePool scheduling', () => {
  it("runs one owner's messages one task at a time, in order, and leaves the other threads to the others", async () => {
    const WORK = 600;
    const h = await harness({ threads: 2 });
    for (let k = 0; k < 4; k++) h.send('x', `sleep:${WORK}`);
    h.send('y', 'thread');
    await sleep(WORK / 4);
    h.send('z', 'thread');
    await h.waitFor(6, 8 * WORK);
    // The others never wait for x's work.
    expect(h.latency('y', 0)).toBeLessThan(WORK / 2);
    expect(h.latency('z', 0)).toBeLessThan(WORK / 2);
    // x's messages ran one after the other (never on two threads at once), in order.
    const x = h.of('x');
    expect(x.map((s) => s.i)).toEqual([0, 1, 2, 3]);
    expect(x[3]!.at).toBeGreaterThanOrEqual(4 * WORK - 20);
    for (let k = 1; k < 4; k++) expect(x[k]!.at - x[k - 1]!.at).toBeGreaterThanOrEqual(WORK - 20);
  });

  it("gives back a task's unstarted messages when its current call runs long: they complete on another thread first", async () => {
    const LONG = 1500;
    const h = await harness({ threads: 2 });
    // One thread busy for a moment, so that a and b leave together, as one task, on the other.
    h.send('z', 'sleep:150');
    await sleep(30);
    h.send('a', `sleep:${LONG}`);
    h.send('b', 'thread');
    await h.waitFor(3, 4 * LONG);
    const a = h.of('a')[0]!;
    const b = h.of('b')[0]!;
    expect(h.latency('b', 0)).toBeLessThan(LONG / 2);
    expect(b.at).toBeLessThan(a.at);
    expect(h.latency('a', 0)).toBeGreaterThanOrEqual(LONG - 20);
    // b ran on the other thread, not after a on a's.
    const aThread = a.data.split(':')[2];
    expect(b.data).not.toBe(aThread);
  });

  it('delivers the results finished before a long call without waiting for it', async () => {
    const LONG = 1500;
    const h = await harness({ threads: 2 });
    h.send('z', 'sleep:150');
    await sleep(30);
    // b runs first in the task, then a's long call: b's reply must not wait for a's.
    h.send('b', 'thread');
    h.send('a', `sleep:${LONG}`);
    await h.waitFor(3, 4 * LONG);
    expect(h.latency('b', 0)).toBeLessThan(LONG / 2);
    expect(h.latency('a', 0)).toBeGreaterThanOrEqual(LONG - 20);
    // Same thread: b's result left the thread while it was still busy with a.
    expect(h.of('b')[0]!.data).toBe(h.of('a')[0]!.data.split(':')[2]);
  });

  it('keeps heavy owners to threads - 1, so light messages keep a lane', async () => {
    const WORK = 1000;
    const h = await harness({ threads: 3 });
    // Each h* owner shows it is heavy (a call longer than heavyMs), then asks for long work.
    for (const o of ['h1', 'h2', 'h3']) h.send(o, 'sleep:50');
    await h.waitFor(3);
    for (const o of ['h1', 'h2', 'h3']) h.send(o, `sleep:${WORK}`);
    await sleep(30);
    h.send('light', 'thread');
    await h.waitFor(7, 5 * WORK);
    expect(h.latency('light', 0)).toBeLessThan(WORK / 2);
    // Two heavy calls at a time: the third one waited for one of them.
    const ends = ['h1', 'h2', 'h3'].map((o) => h.latency(o, 1)).sort((p, q) => p - q);
    expect(ends[2]!).toBeGreaterThanOrEqual(2 * WORK - 50);
  });

  it("judges afresh an owner that one slow call made heavy, rather than keep it behind a heavy owner's long call", async () => {
    const WORK = 4000;
    const h = await harness({ threads: 2 });
    h.send('heavy', 'sleep:50');
    // One call past heavyMs, as when the OS holds a cheap call's thread off the CPU.
    h.send('once', 'sleep:20');
    await h.waitFor(2);
    h.send('heavy', `sleep:${WORK}`);
    await sleep(30);
    h.send('once', 'quick');
    await h.waitFor(3, 2 * WORK);
    expect(h.of('once').map((s) => s.data)).toEqual([expect.stringMatching(/^slept:20:/), 'quick']);
    // Judged afresh after about 1 s (100 heavyMs, 50 of its 20 ms calls), while the heavy
    // lane was still held: in that lane it would have waited for the whole call.
    expect(h.latency('once', 1)).toBeLessThan(WORK / 2);
    await h.waitFor(4, 2 * WORK);
  });

  it("bounds a task by its messages' estimated handler time: a heavy owner's replies come a few at a time", async () => {
    // Calls shorter than heavyMs, so that no call is long enough to give back the rest of its
    // task: only the budget (heavyMs of estimated time) can keep the ten apart. Large enough
    // that a stall of the machine is small beside the ten calls of one task (10 × WORK).
    const WORK = 150;
    const h = await harness({ threads: 1, heavyMs: 200 });
    for (let k = 0; k < 4; k++) h.send('h', `sleep:${WORK}`);
    await h.waitFor(4);
    for (let k = 0; k < 10; k++) h.send('h', `sleep:${WORK}`);
    await h.waitFor(14);
    // Not all ten at the end of one task of 10 × WORK ms.
    expect(h.latency('h', 4)).toBeLessThan(5 * WORK);
    expect(h.of('h').map((s) => s.i)).toEqual(Array.from({ length: 14 }, (_, k) => k));
  });

  it('bounds a light task by its estimated handler time: a message behind many cheap-but-not-free calls waits for a few of them', async () => {
    // Every figure ten times the defaults' (heavyMs 10, heavyAvgMs 2, calls of 1.8 ms), so that
    // a stall of the machine is small beside the 32 calls of an unbounded task.
    const h = await harness({ threads: 1, heavyMs: 100, heavyAvgMs: 20 });
    // a's calls (18 ms) keep it light; without a bound on its cost, a task would take 32 of them.
    for (let k = 0; k < 8; k++) h.send('a', 'sleep:18');
    await h.waitFor(8);
    for (let k = 0; k < 60; k++) h.send('a', 'sleep:18');
    h.send('e', 'thread');
    await h.waitFor(69);
    expect(h.latency('e', 0)).toBeLessThan(300);
    expect(h.of('a').map((s) => s.i)).toEqual(Array.from({ length: 68 }, (_, k) => k));
  });

  it('takes owners round robin: a deep queue does not hold back the message of another owner', async () => {
    const h = await harness({ threads: 1 });
    for (let k = 0; k < 1000; k++) h.send('deep', `d${k}`);
    h.send('other', 'o');
    await h.waitFor(1001);
    const at = h.seen.findIndex((s) => s.owner === 'other');
    // With the first batch (at most maxBatch / 2 of deep's before it), not after all 1000.
    expect(at).toBeLessThanOrEqual(256);
    expect(h.of('deep').map((s) => s.i)).toEqual(Array.from({ length: 1000 }, (_, k) => k));
  });

  it('answers every message once, in order per owner, under a mix of long and short calls', async () => {
    const h = await harness({ threads: 2 });
    const owners = Array.from({ length: 10 }, (_, k) => `o${k}`);
    const expected = new Map<string, string[]>();
    let n = 0;
    for (let round = 0; round < 30; round++) {
      for (const [k, o] of owners.entries()) {
        // Some calls run past heavyMs (given back, owners turning heavy), most are instant.
        const text = (round + k) % 7 === 0 ? `sleep:${12 + (k % 5)}` : `m${round}`;
        h.send(o, text);
        const list = expected.get(o) ?? [];
        list.push(text);
        expected.set(o, list);
        n++;
      }
      if (round % 5 === 0) await sleep(3);
    }
    await h.waitFor(n, 30_000);
    await sleep(50);
    expect(h.seen).toHaveLength(n);
    for (const o of owners) {
      const got = h.of(o);
      expect(got.map((s) => s.i)).toEqual(expected.get(o)!.map((_, i) => i));
      expect(got.every((s) => s.kind === Kind.TEXT)).toBe(true);
      expect(got.map((s) => s.data.replace(/^slept:(\d+):\d+$/, 'sleep:$1'))).toEqual(
        expected.get(o),
      );
    }
  });

  it('fails only the call that hangs: a message queued behind it in its task is answered', async () => {
    const h = await harness({ threads: 1, taskTimeout: 400 }, fixture('faulty.mjs'));
    h.send('bad', 'hang');
    h.send('good', 'fine');
    await h.waitFor(2, 10_000);
    expect(h.of('bad')[0]).toMatchObject({ kind: Kind.ERROR });
    expect(h.of('good')[0]).toMatchObject({ kind: Kind.TEXT, data: 'ok:fine' });
  });

  it('reports pressure at its high-water marks (messages, then bytes) and relief at half of both', async () => {
    const events: Array<{ on: boolean; pending: number }> = [];
    let pool: MessagePool<Ticket> | undefined;
    const h = await harness({
      threads: 1,
      highWater: 40,
      highWaterBytes: 64 * 1024,
      onPressure: (on) => events.push({ on, pending: pool!.pending }),
    });
    pool = h.pool;
    // Messages: the 40th queued starts the pressure; all are answered, then it ends.
    for (let i = 0; i < 60; i++) h.send(`o${i % 6}`, 'sleep:2');
    expect(events).toEqual([{ on: true, pending: 40 }]);
    await h.waitFor(60);
    expect(events).toHaveLength(2);
    expect(events[1]!.on).toBe(false);
    expect(events[1]!.pending).toBeLessThanOrEqual(20);
    // Bytes: two 40 kB messages are far from 40 messages, but past 64 kB.
    h.send('big', `sleep:5${' '.repeat(40 * 1024)}`);
    expect(events).toHaveLength(2);
    h.send('big', `sleep:5${' '.repeat(40 * 1024)}`);
    expect(events).toHaveLength(3);
    expect(events[2]!.on).toBe(true);
    await h.waitFor(62);
    expect(events.map((e) => e.on)).toEqual([true, false, true, false]);
  });

  it('fails only the call whose thread dies: the rest of its task runs once on a fresh thread', async () => {
    const h = await harness({ threads: 1 }, fixture('faulty.mjs'));
    // One task (one tick, one thread): two messages before the crash, three after it.
    h.send('before', 'a');
    h.send('before', 'b');
    h.send('bad', 'crash');
    for (const owner of ['after1', 'after2', 'after3']) h.send(owner, 'thread');
    await h.waitFor(6, 20_000);
    expect(h.seen).toHaveLength(6);
    expect(h.of('bad')).toEqual([expect.objectContaining({ kind: Kind.ERROR })]);
    expect(h.of('before').map((s) => s.data)).toEqual(['ok:a', 'ok:b']);
    const threads = new Set<string>();
    for (const owner of ['after1', 'after2', 'after3']) {
      const got = h.of(owner);
      expect(got, owner).toEqual([expect.objectContaining({ kind: Kind.TEXT })]);
      threads.add(got[0]!.data);
    }
    // Answered by the thread that replaced the dead one, each once.
    expect(threads.size).toBe(1);
    await sleep(200);
    expect(h.seen).toHaveLength(6);
  });
});
