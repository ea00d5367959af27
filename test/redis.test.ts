/**
 * `--broker redis://...` end to end: real wsdrain hosts (each its own primary and workers, its
 * own port) on one real redis-server, raw wsdrain.v1 clients that recover (helpers/v1.ts), and
 * signals to the child processes: fan-out across hosts, failover with zero loss, history too
 * short, Redis killed and restarted under a publish run, Redis down at start.
 */
import { get } from 'node:http';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { killAll, type Running, sleep, startWsdrain } from './helpers/process.js';
import { REDIS_MISSING, type RedisServer, startRedis, stopAllRedis } from './helpers/redis.js';
import { type Pub, type V1Client, v1Client, v1Publisher } from './helpers/v1.js';

afterEach(killAll);
afterAll(stopAllRedis);

const APP = fileURLToPath(new URL('./fixtures/app-chat.mjs', import.meta.url));

/** A wsdrain host on `redis`: two workers (0: one process), the chat app. */
function host(redis: RedisServer, extra: string[] = [], env: NodeJS.ProcessEnv = {}, workers = 2) {
  return startWsdrain(
    ['--workers', String(workers), '--threads', '1', '--app', APP, '--broker', redis.url, ...extra],
    { env },
  );
}

const url = (srv: Running, token = 't1'): string => `ws://127.0.0.1:${srv.port}/?token=${token}`;

/** Polls `cond` every 10 ms until true, or fails after `ms` naming `what`. */
async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 10_000) {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`waited ${ms} ms for ${what}`);
    await sleep(10);
  }
}

function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

/** One metric's value from a Prometheus text (0 when absent). */
function metric(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** A bare wsdrain.v1 connection: send objects, wait for answers by type. */
async function raw(to: string) {
  const ws = new WebSocket(to, ['wsdrain.v1']);
  ws.on('error', () => {});
  const got: Array<Record<string, unknown>> = [];
  ws.on('message', (d) => got.push(JSON.parse(String(d)) as Record<string, unknown>));
  await new Promise((r) => ws.on('open', r));
  return {
    ws,
    send: (m: object) => ws.send(JSON.stringify(m)),
    /** The offsets of the publications received. */
    pubs: (topic = 'open:h') =>
      got.filter((m) => m.type === 'pub' && m.topic === topic).map((m) => m.offset as number),
    /** The first message of `type` (about `topic`) not yet returned. */
    next: async (type: string, topic = 'open:h'): Promise<Record<string, unknown>> => {
      let hit: Record<string, unknown> | undefined;
      await until(() => {
        const i = got.findIndex((m) => m.type === type && m.topic === topic);
        if (i >= 0) hit = got.splice(i, 1)[0];
        return hit !== undefined;
      }, `a ${type} answer`);
      return hit as Record<string, unknown>;
    },
  };
}

const offsetsOf = (pubs: Pub[]): number[] => pubs.map((p) => p.offset);
const range = (from: number, to: number): number[] =>
  Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

describe.skipIf(REDIS_MISSING !== undefined)(
  `--broker redis://${REDIS_MISSING ? ` (skipped: ${REDIS_MISSING})` : ''}`,
  () => {
    it('two hosts on one Redis: every publication reaches the subscribers of both, the primary hook too', async () => {
      const redis = await startRedis();
      const [a, b] = await Promise.all([host(redis, [], { APP_CLOCK_MS: '100' }), host(redis)]);
      const clients = [a, a, a, b, b, b].map((srv) => v1Client([url(srv)], ['open:both', 'clock']));
      try {
        await until(() => clients.every((c) => c.live), 'every client subscribed');
        const pub = await v1Publisher(url(b), ['open:both'], 5);
        await until(() => pub.sent >= 50, '50 publications sent');
        await pub.stop();
        expect(pub.errors).toEqual([]);
        const last = Math.max(...pub.acks.map((x) => x.offset));
        await until(
          () => clients.every((c) => c.pubs.get('open:both')?.at(-1)?.offset === last),
          'every client to have the last publication',
        );
        for (const c of clients) {
          const got = c.pubs.get('open:both') ?? [];
          expect(offsetsOf(got)).toEqual(range(1, last));
          expect(got.map((p) => (p.data as { n: number }).n)).toEqual(range(0, pub.sent - 1));
          expect(c.duplicates).toBe(0);
          expect(c.holes).toEqual([]);
        }
        // The primary of host A publishes its clock through Redis: host B's clients get it.
        await until(
          () => clients.every((c) => (c.pubs.get('clock')?.length ?? 0) >= 3),
          'three clock ticks everywhere',
        );
        for (const c of clients) {
          const ticks = c.pubs.get('clock') ?? [];
          const first = ticks[0]!.offset;
          expect(offsetsOf(ticks)).toEqual(range(first, first + ticks.length - 1));
        }
        // Plain clients (the app's own conn.subscribe / conn.publish): across hosts too.
        const plain = new WebSocket(url(b, 't2'));
        plain.on('error', () => {});
        const heard = new Promise<string>((resolve) =>
          plain.on('message', (d) => {
            if (String(d).includes('hi from host A')) resolve(String(d));
          }),
        );
        await new Promise((r) => plain.on('open', r));
        const speaker = new WebSocket(url(a, 't1'));
        speaker.on('error', () => {});
        await new Promise((r) => speaker.on('open', r));
        // The lobby subscription is made in the open hook: give it its round trip to Redis.
        await sleep(200);
        speaker.send('hi from host A');
        expect(JSON.parse(await heard)).toEqual({ from: 'ann', text: 'hi from host A' });
        plain.close();
        speaker.close();
      } finally {
        for (const c of clients) c.stop();
      }
    });

    it('failover: clients move from host A (SIGTERM) to host B and lose and duplicate nothing', async () => {
      const redis = await startRedis();
      const opts = [
        '--history-size',
        '1000',
        '--drain-timeout',
        '3000',
        '--reconnect-window',
        '500',
      ];
      const [a, b] = await Promise.all([host(redis, opts), host(redis, opts)]);
      const topics = ['open:f1', 'open:f2'];
      const clients: V1Client[] = Array.from({ length: 20 }, () =>
        v1Client([url(a), url(b)], topics),
      );
      try {
        await until(() => clients.every((c) => c.live), 'every client subscribed on host A');
        expect(clients.every((c) => c.url === url(a))).toBe(true);
        const pub = await v1Publisher(url(b), topics, 10);
        await sleep(400);
        a.kill('SIGTERM');
        expect((await a.exited).code).toBe(0);
        await until(
          () => clients.every((c) => c.live && c.url === url(b)),
          'every client subscribed on host B',
        );
        await sleep(400);
        await pub.stop();
        expect(pub.errors).toEqual([]);
        for (const topic of topics) {
          const acks = pub.acks.filter((x) => x.topic === topic);
          const last = Math.max(...acks.map((x) => x.offset));
          expect(new Set(acks.map((x) => x.epoch)).size).toBe(1);
          await until(
            () => clients.every((c) => c.pubs.get(topic)?.at(-1)?.offset === last),
            `every client to have the last publication of ${topic}`,
          );
          for (const c of clients) {
            // Exactly once, in order: 1..last, each with the data that was published.
            const got = c.pubs.get(topic) ?? [];
            expect(offsetsOf(got)).toEqual(range(1, last));
            const sent = new Map(acks.map((x) => [x.offset, x.n]));
            expect(got.every((p) => (p.data as { n: number }).n === sent.get(p.offset))).toBe(true);
          }
        }
        // The longest time a client went without a publication (they came every 10 ms): at
        // most the reconnect window its hint allowed plus the drain's budget.
        let longestGap = 0;
        for (const c of clients) {
          expect(c.closes).toContain(1001);
          expect(c.duplicates).toBe(0);
          expect(c.holes).toEqual([]);
          // Every resubscription on host B recovered.
          for (const topic of topics) {
            const answers = c.subscribed.get(topic) ?? [];
            expect(answers.length).toBeGreaterThanOrEqual(2);
            for (const s of answers.slice(1)) expect(s.recovered).toBe(true);
            const got = c.pubs.get(topic) ?? [];
            for (let i = 1; i < got.length; i++) {
              longestGap = Math.max(longestGap, got[i]!.at - got[i - 1]!.at);
            }
          }
        }
        console.log(`failover: longest gap a client saw ${longestGap} ms`);
        expect(longestGap).toBeLessThan(500 + 3000);
      } finally {
        for (const c of clients) c.stop();
      }
    });

    it('Redis killed and restarted during a publish run: connections stay, publishing fails loudly, /readyz 503, counted; then every subscriber hears recovered: false and delivery resumes', async () => {
      const redis = await startRedis();
      const srv = await host(redis, ['--metrics-port', '0']);
      const metricsPort = (await srv.waitFor((l) => l.metricsPort !== undefined))
        .metricsPort as number;
      const scrape = async () => (await httpGet(metricsPort, '/metrics')).body;
      const clients = Array.from({ length: 6 }, () => v1Client([url(srv)], ['open:k']));
      try {
        await until(() => clients.every((c) => c.live), 'every client subscribed');
        expect((await httpGet(srv.port, '/readyz')).status).toBe(200);
        const pub = await v1Publisher(url(srv), ['open:k'], 20);
        // A plain client the app subscribed to its rooms: it cannot resubscribe itself.
        const plain = new WebSocket(url(srv, 't2'));
        plain.on('error', () => {});
        const plainClosed = new Promise<{ code: number; reason: string }>((r) =>
          plain.on('close', (code, reason) => r({ code, reason: String(reason) })),
        );
        await new Promise((r) => plain.on('open', r));
        await until(() => pub.acks.length >= 10, 'ten publications before the kill');
        await redis.kill();
        // Each worker sees it at once (its connections drop): publishing fails, not waits.
        // A publication already sent to Redis when it died fails with what the socket said;
        // the later ones are refused at once as unavailable. Each names the broker.
        const unavailable = `the broker at ${redis.url} is unavailable`;
        await until(
          () => pub.errors.length >= 5 && pub.errors.some((e) => e.message.includes(unavailable)),
          'publications refused while Redis is unavailable',
        );
        expect(new Set(pub.errors.map((e) => e.code))).toEqual(new Set(['unavailable']));
        for (const e of pub.errors) expect(e.message).toContain(`the broker at ${redis.url}`);
        // /readyz: 503 from both workers (consecutive probes land on either).
        await until(async () => {
          for (let i = 0; i < 6; i++)
            if ((await httpGet(srv.port, '/readyz')).status !== 503) return false;
          return true;
        }, '/readyz 503');
        expect((await httpGet(srv.port, '/readyz')).body).toBe('broker unavailable\n');
        const away = await scrape();
        expect(metric(away, 'wsdrain_broker_connected')).toBe(0);
        expect(metric(away, 'wsdrain_broker_lost_total')).toBe(2);
        expect(metric(away, 'wsdrain_broker_publish_failures_total')).toBeGreaterThanOrEqual(5);
        expect(metric(away, 'wsdrain_broker_errors_total')).toBeGreaterThan(0);
        const failuresWhileAway = pub.errors.length;
        await sleep(300);
        expect(pub.errors.length).toBeGreaterThan(failuresWhileAway);
        await redis.restart();
        await until(async () => (await httpGet(srv.port, '/readyz')).status === 200, '/readyz 200');
        // Its rooms may have a hole it cannot recover: it is told to reconnect, never left deaf.
        const told = await plainClosed;
        expect(told.code).toBe(1012);
        expect(told.reason).toMatch(/^wsdrain:restart/);
        await until(
          () => pub.acks.length > 0 && pub.acks.at(-1)!.epoch !== pub.acks[0]!.epoch,
          'publications in a new epoch',
        );
        await sleep(200);
        await pub.stop();
        const [e1, e2] = [...new Set(pub.acks.map((x) => x.epoch))];
        const lastOf = (epoch: string) =>
          Math.max(...pub.acks.filter((x) => x.epoch === epoch).map((x) => x.offset));
        await until(
          () => clients.every((c) => c.pubs.get('open:k')?.at(-1)?.offset === lastOf(e2!)),
          'every client to have the last publication',
        );
        for (const c of clients) {
          // Connections stayed up through it all.
          expect(c.closes).toEqual([]);
          expect(c.holes).toEqual([]);
          expect(c.duplicates).toBe(0);
          expect(c.resubscribes).toBe(1);
          const got = c.pubs.get('open:k') ?? [];
          const before = got.filter((p) => p.epoch === e1);
          const after = got.filter((p) => p.epoch === e2);
          expect(before.length + after.length).toBe(got.length);
          // Epoch 1: 1..k with no hole; then a clear no, from where it stood...
          const k = before.length;
          expect(offsetsOf(before)).toEqual(range(1, k));
          const answers = c.subscribed.get('open:k') ?? [];
          expect(answers).toHaveLength(2);
          expect(answers[1]).toMatchObject({
            recovered: false,
            epoch: e2,
            since: { offset: k, epoch: e1 },
          });
          // ...and epoch 2: every publication after the position that answer gave.
          const s = answers[1]!.offset;
          expect(offsetsOf(after)).toEqual(range(s + 1, lastOf(e2!)));
        }
        const back = await scrape();
        expect(metric(back, 'wsdrain_broker_connected')).toBe(2);
        expect(metric(back, 'wsdrain_broker_gaps_total')).toBeGreaterThanOrEqual(1);
        expect(metric(back, 'wsdrain_broker_publish_seconds_count')).toBeGreaterThan(0);
      } finally {
        for (const c of clients) c.stop();
      }
    });

    it('Redis down at start: exits 1 naming the URL; a bad URL exits 2', async () => {
      const redis = await startRedis();
      await redis.kill();
      const t0 = Date.now();
      const down = await startWsdrain(
        ['--workers', '2', '--app', APP, '--broker', `${redis.url}/3`],
        { waitReady: false },
      );
      const { code } = await down.exited;
      expect(code).toBe(1);
      expect(down.stderr()).toContain(
        `wsdrain: cannot reach the broker at ${redis.url}/3 within 3000 ms: ECONNREFUSED`,
      );
      // It gave up after its start window, without forking a worker.
      expect(Date.now() - t0).toBeLessThan(3000 + 5000);
      expect(down.lines.some((l) => l.role === 'worker')).toBe(false);
      const bad = await startWsdrain(['--broker', 'redis://127.0.0.1:6379/x'], {
        waitReady: false,
      });
      expect((await bad.exited).code).toBe(2);
      expect(bad.stderr()).toContain('--broker must be redis://host:port[/db]');
    });

    it('history too short: recovered on another host while history covers the gap, recovered: false beyond it', async () => {
      const redis = await startRedis();
      // Host B is a single process (--workers 0): it holds its broker itself.
      const [a, b] = await Promise.all([
        host(redis, ['--history-size', '5']),
        host(redis, ['--history-size', '5'], {}, 0),
      ]);
      const publish = async (count: number): Promise<void> => {
        const p = await v1Publisher(url(b), ['open:h'], 2, count);
        await until(() => p.sent === count, `${count} sent`);
        await p.stop();
        expect(p.acks).toHaveLength(count);
      };
      const first = await raw(url(a));
      first.send({ type: 'subscribe', topic: 'open:h' });
      const at = (await first.next('subscribed')) as { offset: number; epoch: string };
      first.ws.close();
      await publish(3);
      // On host B, `since` where it left on host A: the three it missed, then live.
      const back = await raw(url(b));
      back.send({ type: 'subscribe', topic: 'open:h', since: at });
      expect(await back.next('subscribed')).toMatchObject({ recovered: true, offset: at.offset });
      await until(() => back.pubs().length === 3, 'three replayed');
      expect(back.pubs()).toEqual(range(at.offset + 1, at.offset + 3));
      back.ws.close();
      // Ten more while away: history keeps five. On host A the answer is a clear no.
      await publish(10);
      const late = await raw(url(a));
      late.send({ type: 'subscribe', topic: 'open:h', since: { ...at, offset: at.offset + 3 } });
      expect(await late.next('subscribed')).toEqual({
        type: 'subscribed',
        topic: 'open:h',
        offset: at.offset + 13,
        epoch: at.epoch,
        recovered: false,
      });
      await sleep(100);
      expect(late.pubs()).toEqual([]);
      // And live publications follow that answer.
      await publish(1);
      await until(() => late.pubs().length === 1, 'the next publication');
      expect(late.pubs()).toEqual([at.offset + 14]);
      late.ws.close();
    });
  },
);
