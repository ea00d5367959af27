/**
 * The Redis broker in this process (wsdrain/internal) against a real redis-server: the broker
 * contract of src/app/broker.ts (offsets from one sequencer, live delivery after the interest
 * position, recovery all or nothing, gaps reported), data kinds, history bounds, and faults.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  connectRedisBroker,
  type Publication,
  type RedisBroker,
  type RedisBrokerOptions,
} from 'wsdrain/internal';
import { sleep } from './helpers/process.js';
import {
  REDIS_MISSING,
  type RedisServer,
  redisCommand,
  startRedis,
  stopAllRedis,
} from './helpers/redis.js';

const brokers: RedisBroker[] = [];

afterEach(async () => {
  await Promise.all(brokers.splice(0).map((b) => b.close()));
});
afterAll(stopAllRedis);

async function broker(
  redis: RedisServer,
  o: Partial<RedisBrokerOptions> = {},
): Promise<RedisBroker & { got: Publication[]; gaps: string[] }> {
  const b = (await connectRedisBroker({
    url: redis.url,
    historySize: 100,
    historyTtl: 60_000,
    ...o,
  })) as RedisBroker & { got: Publication[]; gaps: string[] };
  b.got = [];
  b.gaps = [];
  b.onPublication = (pub) => b.got.push(pub);
  b.onGap = (topic) => b.gaps.push(topic);
  brokers.push(b);
  return b;
}

/** Polls `cond` every 10 ms until true, or fails after `ms` naming `what`. */
async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`waited ${ms} ms for ${what}`);
    await sleep(10);
  }
}

const offsets = (pubs: Publication[], topic: string): number[] =>
  pubs.filter((p) => p.topic === topic).map((p) => p.offset);

const range = (from: number, to: number): number[] =>
  Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

describe.skipIf(REDIS_MISSING !== undefined)(
  `the Redis broker${REDIS_MISSING ? ` (skipped: ${REDIS_MISSING})` : ''}`,
  () => {
    it('numbers publications 1, 2, 3 in one epoch; an interested broker gets each later one once, in order', async () => {
      const redis = await startRedis();
      const pub = await broker(redis, { historySize: 5 });
      const sub = await broker(redis);
      const acks = [];
      for (let i = 0; i < 3; i++) acks.push(await pub.publish('t1', i));
      expect(acks.map((a) => a.offset)).toEqual([1, 2, 3]);
      const epoch = acks[0]!.epoch;
      expect(acks.every((a) => a.epoch === epoch)).toBe(true);
      const at = await sub.interest('t1');
      expect(at).toEqual({ offset: 3, epoch });
      // Publications racing with another interest: only those after its position, in order.
      const racing = Array.from({ length: 40 }, (_, i) => pub.publish('t1', 3 + i));
      const second = sub.interest('t2');
      const racing2 = Array.from({ length: 40 }, (_, i) => pub.publish('t2', i));
      const p2 = await second;
      await Promise.all([...racing, ...racing2]);
      await until(() => offsets(sub.got, 't1').length === 40, '40 publications of t1');
      await until(
        () => offsets(sub.got, 't2').length === 40 - p2.offset,
        'the publications of t2 after its position',
      );
      expect(offsets(sub.got, 't1')).toEqual(range(4, 43));
      expect(offsets(sub.got, 't2')).toEqual(range(p2.offset + 1, 40));
      expect(sub.got.filter((p) => p.topic === 't1').map((p) => p.data)).toEqual(range(3, 42));
      // History is capped exactly at --history-size; both keys expire, the meta later.
      expect(await redisCommand(redis.port, 'XLEN', 'wsdrain:{t1}:stream')).toBe(':5\r\n');
      const ttl = async (k: string): Promise<number> =>
        Number((await redisCommand(redis.port, 'PTTL', k)).slice(1));
      const streamTtl = await ttl('wsdrain:{t1}:stream');
      expect(streamTtl).toBeGreaterThan(0);
      expect(streamTtl).toBeLessThanOrEqual(60_000);
      expect(await ttl('wsdrain:{t1}:meta')).toBeGreaterThan(streamTtl);
      // Dropped: no more deliveries.
      sub.drop('t1');
      await pub.publish('t1', 'after');
      await sleep(100);
      expect(offsets(sub.got, 't1')).toHaveLength(40);
    });

    it("keeps one publisher's order when Redis does not have the scripts yet (a fresh or restarted Redis)", async () => {
      const redis = await startRedis();
      for (let round = 0; round < 3; round++) {
        // Forget the scripts, as a restart does; another broker loads them meanwhile.
        await redisCommand(redis.port, 'SCRIPT', 'FLUSH');
        const pub = await broker(redis);
        const other = await broker(redis);
        const topic = `order${round}`;
        const acks: Array<Promise<{ offset: number }>> = [];
        // A burst arriving over several turns of the event loop, as messages from a socket do.
        for (let turn = 0; turn < 20; turn++) {
          for (let k = 0; k < 5; k++) acks.push(pub.publish(topic, turn * 5 + k));
          if (turn === 1) void other.publish(`elsewhere${round}`, 0);
          await new Promise((r) => setImmediate(r));
        }
        const offsets = (await Promise.all(acks)).map((a) => a.offset);
        // In the order of the calls: publication i is offset i + 1.
        expect(offsets).toEqual(range(1, 100));
      }
    });

    it('keeps the kind of data: text, bytes and JSON values', async () => {
      const redis = await startRedis();
      const pub = await broker(redis);
      const sub = await broker(redis);
      await sub.interest('kinds');
      const values = [
        'plain text',
        '',
        '5',
        'null',
        'héllo ✓ 𝄞',
        new Uint8Array([0, 1, 2, 255, 58, 0]),
        new Uint8Array([]),
        null,
        0,
        -1.5,
        true,
        false,
        { nested: { a: [1, 'two', null] } },
        [1, 2, 3],
      ];
      for (const v of values) await pub.publish('kinds', v);
      await until(() => sub.got.length === values.length, 'every value');
      expect(sub.got.map((p) => p.data)).toEqual(values);
      expect(sub.got[5]!.data).toBeInstanceOf(Uint8Array);
      const rec = await sub.recover('kinds', { offset: 0, epoch: sub.got[0]!.epoch });
      expect(rec.recovered).toBe(true);
      expect(rec.publications.map((p) => p.data)).toEqual(values);
    });

    it('recovers all or nothing: within history, capped, the epoch must match', async () => {
      const redis = await startRedis();
      const b = await broker(redis, { historySize: 10, maxReplay: 8 });
      const first = await b.interest('r');
      expect(first.offset).toBe(0);
      for (let i = 1; i <= 12; i++) await b.publish('r', i);
      const epoch = first.epoch;
      const at = (offset: number) => b.recover('r', { offset, epoch });
      // Within history and the cap: every one after `since`, and the position.
      const ok = await at(6);
      expect(ok).toMatchObject({ recovered: true, position: { offset: 12, epoch } });
      expect(ok.publications.map((p) => p.offset)).toEqual(range(7, 12));
      expect(ok.publications.map((p) => p.data)).toEqual(range(7, 12));
      // Nothing missed: true, none.
      expect(await at(12)).toMatchObject({ recovered: true, publications: [] });
      // More than the cap (8), history gone (size 10), ahead of the top, another epoch.
      for (const r of [
        await at(3),
        await at(1),
        await at(13),
        await b.recover('r', { offset: 6, epoch: 'other' }),
      ]) {
        expect(r).toMatchObject({
          recovered: false,
          position: { offset: 12, epoch },
          publications: [],
        });
      }
      // A topic nobody published to yet gets an epoch at once, and keeps it.
      const fresh = await b.recover('never', { offset: 0, epoch: '' });
      expect(fresh).toMatchObject({ recovered: false, position: { offset: 0 } });
      const ack = await b.publish('never', 'x');
      expect(ack).toMatchObject({ offset: 1, epoch: fresh.position.epoch });
      expect(await b.recover('never', { offset: 0, epoch: ack.epoch })).toMatchObject({
        recovered: true,
        publications: [{ offset: 1, data: 'x' }],
      });
    });

    it('forgets history after --history-ttl; the epoch and offset outlive it', async () => {
      const redis = await startRedis();
      const ttl = 1000;
      const b = await broker(redis, { historyTtl: ttl });
      const a1 = await b.publish('ttl', 1);
      await b.publish('ttl', 2);
      expect((await b.recover('ttl', { offset: 0, epoch: a1.epoch })).recovered).toBe(true);
      await sleep(ttl + 200);
      const late = await b.recover('ttl', { offset: 0, epoch: a1.epoch });
      expect(late).toMatchObject({ recovered: false, position: { offset: 2, epoch: a1.epoch } });
      expect(await b.publish('ttl', 3)).toMatchObject({ offset: 3, epoch: a1.epoch });
      // An entry older than the TTL counts as gone even while newer ones keep the stream alive.
      await sleep(ttl / 2);
      await b.publish('ttl', 4);
      await sleep(ttl / 2 + 100);
      expect((await b.recover('ttl', { offset: 2, epoch: a1.epoch })).recovered).toBe(false);
      expect((await b.recover('ttl', { offset: 3, epoch: a1.epoch })).recovered).toBe(true);
    });

    it('reports a hole or another epoch in the live stream as a gap, and starts again on the next interest', async () => {
      const redis = await startRedis();
      const b = await broker(redis);
      const p = await b.interest('holes');
      await b.publish('holes', 'one');
      await until(() => b.got.length === 1, 'the first publication');
      // Offset 3 without 2 (forged on the channel): a hole.
      await redisCommand(redis.port, 'PUBLISH', 'wsdrain:{holes}:live', `3:${p.epoch}:0:sforged`);
      await until(() => b.gaps.length === 1, 'the gap');
      expect(b.gaps).toEqual(['holes']);
      expect(b.stats().gaps).toBe(1);
      // Nothing is delivered on a topic in a gap until it is asked for again.
      await b.publish('holes', 'two');
      await sleep(100);
      expect(b.got.map((x) => x.data)).toEqual(['one']);
      b.drop('holes');
      expect(await b.interest('holes')).toEqual({ offset: 2, epoch: p.epoch });
      await b.publish('holes', 'three');
      await until(() => b.got.length === 2, 'the third publication');
      // Another epoch: a gap too.
      await redisCommand(redis.port, 'PUBLISH', 'wsdrain:{holes}:live', '4:otherepoch:0:sx');
      await until(() => b.gaps.length === 2, 'the second gap');
      // A duplicate is skipped, not a gap.
      b.drop('holes');
      const again = await b.interest('holes');
      await redisCommand(
        redis.port,
        'PUBLISH',
        'wsdrain:{holes}:live',
        `${again.offset}:${again.epoch}:0:sdup`,
      );
      await b.publish('holes', 'four');
      await until(() => b.got.length === 3, 'the fourth publication');
      expect(b.got.map((x) => x.data)).toEqual(['one', 'three', 'four']);
      expect(b.gaps).toHaveLength(2);
    });

    it('while Redis is away: fails fast, holds nothing; when it is back: a gap for every topic held, a new epoch', async () => {
      const redis = await startRedis();
      const b = await broker(redis, { pingInterval: 200 });
      const pub = await broker(redis);
      const p = await b.interest('down');
      await pub.publish('down', 1);
      await until(() => b.got.length === 1, 'the first publication');
      await redis.kill();
      await until(() => !b.healthy && !pub.healthy, 'both brokers to see Redis gone', 3000);
      expect(b.stats()).toMatchObject({ connected: false });
      expect(b.stats().losses).toBeGreaterThanOrEqual(1);
      const t0 = Date.now();
      const failures = await Promise.allSettled(
        Array.from({ length: 100 }, (_, i) => pub.publish('down', i)),
      );
      expect(failures.every((f) => f.status === 'rejected')).toBe(true);
      expect(String((failures[0] as PromiseRejectedResult).reason)).toMatch(
        `the broker at ${redis.url} is unavailable`,
      );
      await expect(b.interest('other')).rejects.toThrow('unavailable');
      await expect(b.recover('down', p)).rejects.toThrow('unavailable');
      // Fast: no waiting on a connection that is not there.
      expect(Date.now() - t0).toBeLessThan(500);
      expect(pub.stats().publishFailures).toBe(100);
      expect(b.gaps).toEqual([]);
      await redis.restart();
      await until(() => b.healthy && pub.healthy, 'both brokers back', 5000);
      await until(() => b.gaps.length === 1, 'the gap on return');
      expect(b.gaps).toEqual(['down']);
      // Redis ran without persistence: the topic starts again with another epoch.
      b.drop('down');
      const after = await b.interest('down');
      expect(after.offset).toBe(0);
      expect(after.epoch).not.toBe(p.epoch);
      expect((await b.recover('down', { offset: 1, epoch: p.epoch })).recovered).toBe(false);
      const ack = await pub.publish('down', 'again');
      expect(ack).toMatchObject({ offset: 1, epoch: after.epoch });
      await until(() => b.got.length === 2, 'delivery resumed');
    });

    it('a subscribed connection dropped alone: a gap for every topic held when it is back', async () => {
      const redis = await startRedis();
      const b = await broker(redis);
      const pub = await broker(redis, { publishOnly: true });
      await b.interest('one');
      await b.interest('two');
      await pub.publish('one', 1);
      await until(() => b.got.length === 1, 'the first publication');
      await redisCommand(redis.port, 'CLIENT', 'KILL', 'TYPE', 'pubsub');
      await until(() => b.gaps.length === 2, 'a gap for each topic');
      expect(b.gaps.sort()).toEqual(['one', 'two']);
      expect(b.healthy).toBe(true);
      expect(b.stats().losses).toBe(1);
      // The publisher has no subscribed connection at all.
      await expect(pub.interest('one')).rejects.toThrow('only publishes');
    });

    it('a Redis that stops answering: publish fails within the command timeout; once it answers, delivery goes on with no gap', async () => {
      const redis = await startRedis();
      const timeout = 400;
      const b = await broker(redis, { pingInterval: 100, commandTimeout: timeout });
      await b.interest('hang');
      await b.publish('hang', 'before');
      await until(() => b.got.length === 1, 'the first publication');
      redis.signal('SIGSTOP');
      const t0 = Date.now();
      await expect(b.publish('hang', 'during')).rejects.toThrow('no answer within 400 ms');
      expect(Date.now() - t0).toBeLessThan(timeout * 3);
      expect(b.healthy).toBe(false);
      // Away: refused at once, not after another command timeout.
      const t1 = Date.now();
      await expect(b.publish('hang', 'refused')).rejects.toThrow('unavailable');
      expect(Date.now() - t1).toBeLessThan(timeout / 2);
      redis.signal('SIGCONT');
      await until(() => b.healthy, 'answering again', 3000);
      await b.publish('hang', 'after');
      // The one that timed out had reached Redis: it went out, in order (its publisher was
      // told it failed: a publisher retrying it may publish it twice, never a subscriber
      // twice the same offset).
      await until(() => b.got.at(-1)?.data === 'after', 'the last publication');
      expect(b.got.map((p) => p.data)).toEqual(['before', 'during', 'after']);
      expect(b.got.map((p) => p.offset)).toEqual([1, 2, 3]);
      expect(b.gaps).toEqual([]);
    });

    it('down at start: rejects within the start window, naming the URL', async () => {
      const redis = await startRedis();
      await redis.kill();
      const t0 = Date.now();
      await expect(
        connectRedisBroker({
          url: `redis://:secret@127.0.0.1:${redis.port}/2`,
          historySize: 1,
          historyTtl: 1000,
          startTimeout: 500,
        }),
      ).rejects.toThrow(
        `cannot reach the broker at redis://:***@127.0.0.1:${redis.port}/2 within 500 ms: ECONNREFUSED`,
      );
      expect(Date.now() - t0).toBeLessThan(2000);
      await expect(
        connectRedisBroker({ url: 'http://x', historySize: 1, historyTtl: 1000 }),
      ).rejects.toThrow('the scheme must be redis: or rediss:');
    });
  },
);
