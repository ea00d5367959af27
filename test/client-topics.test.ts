/**
 * `wsdrain/client` in wsdrain.v1 mode against real wsdrain processes (dist/): subscribe and
 * publish, recovery across a rolling restart with publications running, `recovered: false`
 * when the history is too short, a URL function called before every connect, and failover
 * along a list of URLs from a host that shuts down to another one.
 */
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { type WebSocket as ServerSocket, WebSocket, WebSocketServer } from 'ws';
import {
  type CloseEvent,
  type ConnectInfo,
  createClient,
  type OpenEvent,
  type PublicationInfo,
  type ServerErrorEvent,
  type SubscribedEvent,
  type UnrecoveredEvent,
  type UrlSource,
  type WebSocketConstructorLike,
  type WsdrainClient,
  WsdrainClientError,
  type WsdrainClientOptions,
} from 'wsdrain/client';
import { killAll, type Running, sleep, startWsdrain } from './helpers/process.js';
import { workersListening } from './helpers/workers.js';

const APP = fileURLToPath(new URL('./fixtures/app-topics.mjs', import.meta.url));

const clients: WsdrainClient[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  killAll();
});

/** A publication as a subscription handed it on. */
interface Got extends PublicationInfo {
  data: unknown;
}

/** A v1 client and everything it saw. */
interface Tracked {
  client: WsdrainClient;
  /** The app's hello on each connection: the token the URL carried and the worker. */
  hellos: Array<{ hello: string; worker: number }>;
  /** Other 'message' events (JSON text parsed; binary as ArrayBuffer). */
  messages: unknown[];
  opens: OpenEvent[];
  closes: CloseEvent[];
  errors: Error[];
  subscribed: SubscribedEvent[];
  unrecovered: UnrecoveredEvent[];
  serverErrors: ServerErrorEvent[];
  /** Publications handed to the subscriptions made with {@link follow}, by topic. */
  got: Map<string, Got[]>;
}

const FAST: WsdrainClientOptions = {
  WebSocket: WebSocket as unknown as WebSocketConstructorLike,
  protocol: 'wsdrain.v1',
  backoff: { initialMs: 100, maxMs: 1000 },
  hintJitter: 100,
  openTimeoutMs: 5000,
};

function track(url: UrlSource, options: WsdrainClientOptions = {}): Tracked {
  const client = createClient(url, { ...FAST, ...options });
  clients.push(client);
  const t: Tracked = {
    client,
    hellos: [],
    messages: [],
    opens: [],
    closes: [],
    errors: [],
    subscribed: [],
    unrecovered: [],
    serverErrors: [],
    got: new Map(),
  };
  client.on('message', (data) => {
    let v: unknown = data;
    if (typeof data === 'string') {
      try {
        v = JSON.parse(data);
      } catch {
        v = data;
      }
    }
    if (typeof (v as { hello?: unknown })?.hello === 'string') {
      t.hellos.push(v as { hello: string; worker: number });
    } else t.messages.push(v);
  });
  client.on('open', (e) => t.opens.push(e));
  client.on('close', (e) => t.closes.push(e));
  client.on('error', (e) => t.errors.push(e.error));
  client.on('subscribed', (e) => t.subscribed.push(e));
  client.on('unrecovered', (e) => t.unrecovered.push(e));
  client.on('serverError', (e) => t.serverErrors.push(e));
  return t;
}

/** Subscribes `t` to `topic`, recording every publication its handler gets. */
function follow(t: Tracked, topic: string) {
  const list: Got[] = [];
  t.got.set(topic, list);
  return t.client.subscribe(topic, (data, info) => list.push({ data, ...info }));
}

/** Polls `cond` every 10 ms; throws, saying what it waited for, after `ms`. */
async function until(cond: () => boolean, what: string | (() => string), ms = 10_000) {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) {
      throw new Error(`waited ${ms} ms for ${typeof what === 'string' ? what : what()}`);
    }
    await sleep(10);
  }
}

/** Offsets of one topic as a client got them: each the one before + 1, one epoch. */
function expectContiguous(list: Got[], who: string): void {
  const offsets = list.map((g) => `${g.epoch}:${g.offset}`);
  for (let i = 1; i < list.length; i++) {
    const ok = list[i]!.epoch === list[i - 1]!.epoch && list[i]!.offset === list[i - 1]!.offset + 1;
    if (!ok) {
      throw new Error(
        `${who}: ${offsets[i - 1]} then ${offsets[i]} (a gap, a duplicate or a jump): ${offsets.join(' ')}`,
      );
    }
  }
}

function start(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Running> {
  return startWsdrain(['--threads', '1', '--app', APP, ...args], { env });
}

const urlOf = (srv: Running, token: string) => `ws://127.0.0.1:${srv.port}/?token=${token}`;

/** A port nothing listens on: connecting to it is refused at once. */
async function deadPort(): Promise<number> {
  const s = createServer();
  s.on('error', () => {});
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('wsdrain.v1 client: topics', () => {
  it('subscribes, publishes with an ack, unwraps messages, and reports refusals', async () => {
    const srv = await start(['--workers', '2'], { TICK_MS: '20' });
    const sub = track(urlOf(srv, 'sub'));
    const pub = track(urlOf(srv, 'pub'));
    follow(sub, 'ticks');
    follow(sub, 'open:chat');
    await until(() => (sub.got.get('ticks')?.length ?? 0) >= 5, 'five ticks');
    const ticks = sub.got.get('ticks')!;
    expectContiguous(ticks, 'ticks');
    // The primary is the only publisher of `ticks`: its counter is the offset.
    for (const g of ticks) expect((g.data as { n: number }).n).toBe(g.offset);
    expect(sub.subscribed.map((s) => [s.topic, s.recovered])).toEqual([
      ['ticks', undefined],
      ['open:chat', undefined],
    ]);

    const acks = await Promise.all(
      [1, 2, 3, 4, 5].map((i) => pub.client.publish('open:chat', { i })),
    );
    expect(acks.map((a) => a.offset)).toEqual(acks.map((_a, k) => acks[0]!.offset + k));
    await until(() => sub.got.get('open:chat')!.length === 5, 'the five publications');
    expect(sub.got.get('open:chat')).toEqual(
      acks.map((a, k) => ({
        topic: 'open:chat',
        offset: a.offset,
        epoch: a.epoch,
        data: { i: k + 1 },
      })),
    );
    // Bytes travel as bytes.
    await pub.client.publish('open:chat', new Uint8Array([1, 2, 255]));
    await until(() => sub.got.get('open:chat')!.length === 6, 'the binary publication');
    expect(sub.got.get('open:chat')![5]!.data).toEqual(new Uint8Array([1, 2, 255]));

    // Refusals: a publication the app does not allow rejects with the server's code; a
    // subscription it does not allow ends, with onError and 'serverError'.
    const forbidden = await pub.client.publish('ticks', 1).catch((e: unknown) => e);
    expect(forbidden).toBeInstanceOf(WsdrainClientError);
    expect((forbidden as WsdrainClientError).code).toBe('forbidden');
    const refusals: string[] = [];
    const secret = pub.client.subscribe('secret', () => {}, {
      onError: (e) => refusals.push(e.code),
    });
    await until(() => secret.state === 'closed', 'the refusal');
    expect(refusals).toEqual(['forbidden']);
    expect(pub.serverErrors.map((e) => [e.topic, e.error.code])).toEqual([['secret', 'forbidden']]);
    expect(() => pub.client.subscribe('no spaces', () => {})).toThrow(TypeError);

    // App messages in v1 mode: strings and bytes both ways, the app's JSON as its text.
    expect(sub.hellos).toEqual([{ hello: 'sub', worker: expect.any(Number) }]);
    sub.client.send('echo me');
    sub.client.send(new Uint8Array([7, 8]));
    await until(() => sub.messages.length === 2, 'two echoes');
    expect(sub.messages[0]).toBe('echo me');
    expect(new Uint8Array(sub.messages[1] as ArrayBuffer)).toEqual(new Uint8Array([7, 8]));

    // Unsubscribed: nothing more is handed on.
    sub.client.close();
    const plain = createClient(urlOf(srv, 'plain'), {
      WebSocket: WebSocket as unknown as WebSocketConstructorLike,
    });
    clients.push(plain);
    plain.on('error', () => {});
    expect(() => plain.subscribe('ticks', () => {})).toThrow(/needs the wsdrain.v1 subprotocol/);
    expect(() => plain.publish('open:chat', 1)).toThrow(/needs the wsdrain.v1 subprotocol/);
    expect(sub.errors).toEqual([]);
    expect(pub.errors).toEqual([]);
  });

  it('an unsubscribe right behind its subscribe is not overtaken by it: nothing more arrives', async () => {
    const srv = await start(['--workers', '1']);
    const t = track(urlOf(srv, 'a'));
    const pub = track(urlOf(srv, 'p'));
    await until(() => t.opens.length === 1, 'the connection');
    const strays: unknown[] = [];
    t.client.on('publication', (e) => strays.push(e));
    const handled: unknown[] = [];
    // Both requests leave in the same turn; the server answers the subscribe (after its
    // canSubscribe hook) and then the unsubscribe.
    t.client.subscribe('open:r', (d) => handled.push(d)).unsubscribe();
    const marker = follow(t, 'open:marker');
    await until(() => marker.state === 'subscribed', 'the marker subscription');
    await pub.client.publish('open:r', 1);
    await pub.client.publish('open:marker', 2);
    // Delivered in publish order: had open:r been delivered, it would be here by now.
    await until(() => t.got.get('open:marker')!.length === 1, 'the marker publication');
    expect(strays).toEqual([]);
    expect(handled).toEqual([]);
  });

  it('across a SIGHUP roll of 2 workers with publications running: nothing lost, nothing twice', async () => {
    /** --reconnect-window and the clients' hint jitter: the longest wait after a 1012. */
    const WINDOW = 500;
    const JITTER = 100;
    const TICK_MS = 10;
    // History for ten times the longest planned gap (a hint's wait) at the tick rate: the
    // test is about the resubscription, not about the history's size.
    const HISTORY = Math.ceil((10 * (WINDOW + JITTER)) / TICK_MS);
    const srv = await start(
      [
        '--workers',
        '2',
        '--drain-timeout',
        '3000',
        '--reconnect-window',
        String(WINDOW),
        '--history-size',
        String(HISTORY),
      ],
      { TICK_MS: String(TICK_MS) },
    );
    await workersListening(srv, 2);
    const subs = Array.from({ length: 10 }, (_v, i) =>
      track(urlOf(srv, `s${i}`), { hintJitter: JITTER }),
    );
    for (const s of subs) {
      follow(s, 'ticks');
      follow(s, 'open:roll');
    }
    await until(
      () => subs.every((s) => s.got.get('ticks')!.length > 0 && s.hellos.length === 1),
      'every subscriber to get a tick',
    );
    // Both workers hold subscribers.
    expect(new Set(subs.map((s) => s.hellos[0]!.worker)).size).toBe(2);

    // A publisher client too, publishing without pause through the roll.
    const publisher = track(urlOf(srv, 'p'), { hintJitter: JITTER });
    const acked: Array<{ i: number; offset: number }> = [];
    const failed: string[] = [];
    let publishing = true;
    let issued = 0;
    const loop = (async () => {
      for (let i = 1; publishing; i++) {
        issued = i;
        publisher.client.publish('open:roll', { i }).then(
          (ack) => acked.push({ i, offset: ack.offset }),
          (e: WsdrainClientError) => failed.push(e.code),
        );
        await sleep(15);
      }
    })();
    await until(() => acked.length >= 5, 'five acked publications');

    srv.kill('SIGHUP');
    const done = await srv.waitFor((l) => /rolling restart done/.test(l.msg), 30_000);
    expect(done.rolled).toBe(2);
    await until(
      () => [...subs, publisher].every((s) => s.opens.length >= 2 && s.client.state === 'open'),
      'every client to reconnect',
    );
    // Publications after the roll reach everyone.
    const after = acked.length;
    await until(() => acked.length >= after + 5, 'five publications acked after the roll');
    publishing = false;
    await loop;
    await until(() => acked.length + failed.length === issued, 'an answer to every publication');
    const lastTick = Math.max(...subs.map((s) => s.got.get('ticks')!.at(-1)!.offset));
    const lastPub = Math.max(...acked.map((a) => a.offset));
    await until(
      () =>
        subs.every(
          (s) =>
            s.got.get('ticks')!.at(-1)!.offset >= lastTick &&
            (s.got.get('open:roll')!.at(-1)?.offset ?? 0) >= lastPub,
        ),
      'every subscriber to catch up',
    );

    for (const [k, s] of subs.entries()) {
      const who = `subscriber ${k}`;
      // Moved by the roll (1012, hint honoured), resubscribed and recovered every time.
      expect(s.closes.length, who).toBeGreaterThanOrEqual(1);
      expect(
        s.closes.every((c) => c.code === 1012 && c.willReconnect),
        who,
      ).toBe(true);
      expect(s.unrecovered, who).toEqual([]);
      const again = s.subscribed.slice(2);
      expect(again.length, who).toBe(2 * s.closes.length);
      expect(
        again.every((e) => e.recovered === true),
        who,
      ).toBe(true);
      // Every tick once, in order; the primary's counter matches.
      const ticks = s.got.get('ticks')!;
      expectContiguous(ticks, `${who} ticks`);
      for (const g of ticks) expect((g.data as { n: number }).n, who).toBe(g.offset);
      // Every publication from its first on, once, in order; every acked one among them.
      const pubs = s.got.get('open:roll')!;
      expectContiguous(pubs, `${who} open:roll`);
      const byOffset = new Map(pubs.map((g) => [g.offset, (g.data as { i: number }).i]));
      for (const a of acked) {
        if (a.offset >= pubs[0]!.offset) expect(byOffset.get(a.offset), who).toBe(a.i);
      }
      expect(s.errors, who).toEqual([]);
    }
    // A publication in flight when its connection closed is reported, never silently lost.
    expect(failed.every((code) => code === 'disconnected')).toBe(true);
    expect(srv.child.exitCode).toBeNull();
  }, 45_000);

  it('recovers a gap the history covers, and says recovered: false when it does not (--history-size)', async () => {
    const HISTORY = 3;
    const srv = await start(['--workers', '1', '--history-size', String(HISTORY)]);
    // The subscriber's URL function holds its reconnects back while `gate` is set.
    let gate: Promise<void> | undefined;
    let open: () => void = () => {};
    const hold = () => {
      gate = new Promise((r) => {
        open = () => {
          gate = undefined;
          r();
        };
      });
    };
    const sub = track(async () => {
      if (gate) await gate;
      return urlOf(srv, 'sub');
    });
    const pub = track(urlOf(srv, 'pub'));
    const lost: UnrecoveredEvent[] = [];
    sub.got.set('open:h', []);
    const subscription = sub.client.subscribe(
      'open:h',
      (data, info) => sub.got.get('open:h')!.push({ data, ...info }),
      { onUnrecovered: (e) => lost.push(e) },
    );
    await until(() => subscription.state === 'subscribed', 'the subscription');
    const first = await pub.client.publish('open:h', 1);
    await until(() => sub.got.get('open:h')!.length === 1, 'the first publication');
    expect(subscription.position).toEqual({ offset: first.offset, epoch: first.epoch });

    /** Rolls the one worker and publishes `n` while the subscriber is kept away. */
    const away = async (n: number, from: number) => {
      hold();
      const closes = sub.closes.length;
      srv.kill('SIGHUP');
      await until(() => sub.closes.length > closes, 'the 1012');
      expect(sub.closes.at(-1)!.code).toBe(1012);
      const acks = await Promise.all(
        Array.from({ length: n }, (_v, k) => pub.client.publish('open:h', from + k)),
      );
      open();
      return acks;
    };

    // Two missed, three kept: replayed in order, recovered.
    const two = await away(HISTORY - 1, 2);
    await until(() => sub.got.get('open:h')!.length === 3, 'the replay');
    expect(sub.got.get('open:h')!.map((g) => [g.offset, g.data])).toEqual([
      [first.offset, 1],
      ...two.map((a, k) => [a.offset, k + 2]),
    ]);
    // The answer names the position asked from; the replay follows it.
    expect(sub.subscribed.at(-1)).toMatchObject({ recovered: true, offset: first.offset });

    // Ten missed, three kept: recovered false, said once, and nothing of the ten handed on.
    const ten = await away(10, 4);
    await until(() => lost.length === 1, 'recovered: false');
    const top = ten.at(-1)!;
    expect(lost[0]).toEqual({
      topic: 'open:h',
      since: { offset: two.at(-1)!.offset, epoch: first.epoch },
      position: { offset: top.offset, epoch: top.epoch },
      reason: 'history',
    });
    expect(sub.unrecovered).toEqual(lost);
    expect(subscription.position).toEqual({ offset: top.offset, epoch: top.epoch });
    // The subscription goes on from there.
    const next = await pub.client.publish('open:h', 14);
    await until(() => sub.got.get('open:h')!.length === 4, 'the next publication');
    expect(sub.got.get('open:h')!.at(-1)).toMatchObject({ offset: next.offset, data: 14 });
    expect(sub.got.get('open:h')!.map((g) => g.data)).toEqual([1, 2, 3, 14]);
    expect(sub.errors).toEqual([]);
  }, 45_000);

  it('calls the URL function before every connect, fresh tokens each time; a failed call backs off', async () => {
    const srv = await start(['--workers', '1', '--reconnect-window', '200']);
    const infos: ConnectInfo[] = [];
    const sub = track(async (info) => {
      infos.push(info);
      if (infos.length === 2) throw new Error('token service down');
      await sleep(5);
      return urlOf(srv, `t${infos.length}`);
    });
    follow(sub, 'open:u');
    await until(() => sub.hellos.length === 1, 'the first hello');
    srv.kill('SIGHUP');
    await until(() => sub.hellos.length === 2, 'the hello after the roll');
    expect(sub.hellos.map((h) => h.hello)).toEqual(['t1', 't3']);
    expect(infos.map((i) => [i.attempt, i.lastCode])).toEqual([
      [0, undefined],
      [1, 1012],
      [2, 1006],
    ]);
    expect(infos[2]!.lastUrl).toBe(urlOf(srv, 't1'));
    expect(sub.errors.map((e) => e.message)).toEqual(['token service down']);
    expect(sub.client.url).toBe(urlOf(srv, 't3'));
    // The subscription came back with the connection.
    await until(() => sub.subscribed.length === 2, 'the resubscription');
    expect(sub.subscribed.map((e) => e.topic)).toEqual(['open:u', 'open:u']);
    expect(sub.subscribed[1]!.recovered).toBe(true);
  });

  it('fails over along a list of URLs: past a dead one, stays on 1012, moves on 1001', async () => {
    const [a, b] = await Promise.all([
      start(['--workers', '1', '--reconnect-window', '200'], { TICK_MS: '20' }),
      start(['--workers', '1', '--reconnect-window', '200'], { TICK_MS: '20' }),
    ]);
    const dead = `ws://127.0.0.1:${await deadPort()}/?token=x`;
    const t = track([dead, urlOf(a, 'x'), urlOf(b, 'x')]);
    follow(t, 'ticks');
    await until(() => t.got.get('ticks')!.length >= 3, 'ticks from A');
    expect(t.opens.map((o) => o.url)).toEqual([urlOf(a, 'x')]);
    expect(t.closes.map((c) => c.code)).toEqual([1006]); // the dead one

    // A restart stays on A, and recovers.
    a.kill('SIGHUP');
    await until(() => t.opens.length === 2, 'the reconnect after the roll');
    expect(t.opens[1]!.url).toBe(urlOf(a, 'x'));
    await until(() => t.subscribed.length === 2, 'the resubscription');
    expect(t.subscribed[1]!.recovered).toBe(true);
    const onA = t.got.get('ticks')!.length;
    await until(() => t.got.get('ticks')!.length >= onA + 3, 'more ticks from A');

    // A shutdown moves to B: another host without a shared broker, so another epoch.
    const last = t.got.get('ticks')!.at(-1)!;
    a.kill('SIGTERM');
    await until(() => t.opens.length === 3, 'the connection to B');
    expect(t.opens[2]!.url).toBe(urlOf(b, 'x'));
    expect(t.closes.at(-1)).toMatchObject({ code: 1001, willReconnect: true });
    await until(() => t.unrecovered.length === 1, 'recovered: false from B');
    const lost = t.unrecovered[0]!;
    // Ticks from A went on arriving until its close: the client asked B from the last of them.
    const lastFromA = t.got
      .get('ticks')!
      .filter((g) => g.epoch === last.epoch)
      .at(-1)!;
    expect(lastFromA.offset).toBeGreaterThanOrEqual(last.offset);
    expect(lost.since).toEqual({ offset: lastFromA.offset, epoch: last.epoch });
    expect(lost.reason).toBe('epoch');
    expect(lost.position.epoch).not.toBe(last.epoch);
    // B's ticks follow, from B's position on, each once.
    const fromB = () => t.got.get('ticks')!.filter((g) => g.epoch === lost.position.epoch);
    await until(() => fromB().length >= 3, 'ticks from B');
    expect(fromB()[0]!.offset).toBe(lost.position.offset + 1);
    expectContiguous(fromB(), 'ticks from B');
    expectContiguous(
      t.got.get('ticks')!.filter((g) => g.epoch === last.epoch),
      'ticks from A',
    );
    expect((await a.exited).code).toBe(0);
  });
});

/** A wsdrain.v1 peer scripted by the test: real sockets, every answer written by hand. */
async function scriptedServer(selectV1 = true) {
  const wss = new WebSocketServer({
    port: 0,
    host: '127.0.0.1',
    handleProtocols: (offered) => (selectV1 && offered.has('wsdrain.v1') ? 'wsdrain.v1' : false),
  });
  await new Promise<void>((r) => wss.once('listening', r));
  wss.on('error', () => {});
  const got: Array<Record<string, unknown>> = [];
  let peer: ServerSocket | undefined;
  wss.on('connection', (ws) => {
    peer = ws;
    ws.on('error', () => {});
    ws.on('message', (d) => got.push(JSON.parse(d.toString()) as Record<string, unknown>));
  });
  scripted.push(wss);
  return {
    url: `ws://127.0.0.1:${(wss.address() as { port: number }).port}/`,
    got,
    send: (m: object) => peer!.send(JSON.stringify(m)),
    /** The next request of `type` not yet taken. */
    take: async (type: string) => {
      let hit: Record<string, unknown> | undefined;
      await until(
        () => {
          const i = got.findIndex((m) => m.type === type);
          if (i !== -1) hit = got.splice(i, 1)[0];
          return hit !== undefined;
        },
        () => `a ${type} request; got ${JSON.stringify(got)}`,
        5000,
      );
      return hit!;
    },
  };
}
const scripted: WebSocketServer[] = [];
afterEach(async () => {
  for (const wss of scripted.splice(0)) {
    for (const ws of wss.clients) ws.terminate();
    await new Promise<void>((r) => wss.close(() => r()));
  }
});

describe('wsdrain.v1 client: the rules it keeps itself (scripted server)', () => {
  it('skips duplicates, resubscribes since its position on a gap, another epoch or when asked, and redelivers what its handler threw on', async () => {
    const srv = await scriptedServer();
    const t = track(srv.url);
    const handled: Array<[number, string, unknown]> = [];
    let thrown = 0;
    const reported: unknown[] = [];
    const reportError = (globalThis as { reportError?: unknown }).reportError;
    (globalThis as { reportError?: unknown }).reportError = (e: unknown) => reported.push(e);
    try {
      const sub = t.client.subscribe('x', (data, info) => {
        if (data === 'boom' && thrown++ === 0) throw new Error('handler failed');
        handled.push([info.offset, info.epoch, data]);
      });
      const pub = (offset: number, epoch: string, data: unknown) =>
        srv.send({ type: 'pub', topic: 'x', offset, epoch, data });
      let req = await srv.take('subscribe');
      expect(req).toEqual({ type: 'subscribe', topic: 'x', id: expect.any(Number) });
      srv.send({ type: 'subscribed', topic: 'x', offset: 0, epoch: 'e1', id: req.id });
      pub(1, 'e1', 'a');
      pub(2, 'e1', 'b');
      pub(2, 'e1', 'b'); // duplicates: skipped, nothing asked
      pub(1, 'e1', 'a');
      pub(3, 'e1', 'c');
      await until(() => handled.length === 3, 'three handled');
      expect(srv.got).toEqual([]);
      pub(5, 'e1', 'e'); // a gap: resubscribe since 3
      expect(await srv.take('unsubscribe')).toMatchObject({ topic: 'x' });
      req = await srv.take('subscribe');
      expect(req.since).toEqual({ offset: 3, epoch: 'e1' });
      expect(sub.position).toEqual({ offset: 3, epoch: 'e1' });
      srv.send({
        type: 'subscribed',
        topic: 'x',
        offset: 3,
        epoch: 'e1',
        recovered: true,
        id: req.id,
      });
      pub(4, 'e1', 'd');
      pub(5, 'e1', 'e');
      // Another epoch: resubscribe since 5; the server cannot recover, the app is told.
      pub(6, 'e2', 'other');
      await srv.take('unsubscribe');
      req = await srv.take('subscribe');
      expect(req.since).toEqual({ offset: 5, epoch: 'e1' });
      srv.send({
        type: 'subscribed',
        topic: 'x',
        offset: 9,
        epoch: 'e2',
        recovered: false,
        id: req.id,
      });
      pub(10, 'e2', 'j');
      await until(() => handled.length === 6, 'six handled');
      expect(t.unrecovered).toEqual([
        {
          topic: 'x',
          since: { offset: 5, epoch: 'e1' },
          position: { offset: 9, epoch: 'e2' },
          reason: 'epoch',
        },
      ]);
      // The server asks for a resubscription (its stream may have a hole).
      srv.send({ type: 'unsubscribed', topic: 'x', resubscribe: true });
      req = await srv.take('subscribe');
      expect(req.since).toEqual({ offset: 10, epoch: 'e2' });
      srv.send({
        type: 'subscribed',
        topic: 'x',
        offset: 10,
        epoch: 'e2',
        recovered: true,
        id: req.id,
      });
      // The handler throws on 11: not handled, position stays; it comes again after a backoff.
      pub(11, 'e2', 'boom');
      pub(12, 'e2', 'l'); // held back: it follows 11 in the replay
      await srv.take('unsubscribe');
      req = await srv.take('subscribe');
      expect(req.since).toEqual({ offset: 10, epoch: 'e2' });
      expect(reported.map((e) => (e as Error).message)).toEqual(['handler failed']);
      srv.send({
        type: 'subscribed',
        topic: 'x',
        offset: 10,
        epoch: 'e2',
        recovered: true,
        id: req.id,
      });
      pub(11, 'e2', 'boom');
      pub(12, 'e2', 'l');
      await until(() => handled.length === 8, 'eight handled');
      expect(handled).toEqual([
        [1, 'e1', 'a'],
        [2, 'e1', 'b'],
        [3, 'e1', 'c'],
        [4, 'e1', 'd'],
        [5, 'e1', 'e'],
        [10, 'e2', 'j'],
        [11, 'e2', 'boom'],
        [12, 'e2', 'l'],
      ]);
      expect(sub.position).toEqual({ offset: 12, epoch: 'e2' });
      // Unsubscribed: the server is told, nothing more is handed on.
      sub.unsubscribe();
      expect(await srv.take('unsubscribe')).toMatchObject({ topic: 'x' });
      pub(13, 'e2', 'm');
      await sleep(50);
      expect(handled).toHaveLength(8);
      expect(sub.state).toBe('closed');
    } finally {
      (globalThis as { reportError?: unknown }).reportError = reportError;
    }
  });

  it('rejects publications in flight when the connection closes (disconnected), and sends queued ones after reconnecting', async () => {
    const srv = await scriptedServer();
    const t = track(srv.url);
    await until(() => t.opens.length === 1, 'the connection');
    const inFlight = t.client.publish('x', { n: 1 }).catch((e: WsdrainClientError) => e.code);
    await srv.take('publish');
    for (const ws of scripted[0]!.clients) ws.close(1011, 'cut');
    expect(await inFlight).toBe('disconnected');
    const queued = t.client.publish('x', { n: 2 });
    expect(t.client.queued).toBe(1);
    const req = await srv.take('publish');
    expect(req).toMatchObject({ topic: 'x', data: { n: 2 } });
    srv.send({ type: 'published', topic: 'x', offset: 7, epoch: 'e', id: req.id });
    expect(await queued).toEqual({ topic: 'x', offset: 7, epoch: 'e' });
  });

  it('does not use a connection on which the server did not select wsdrain.v1', async () => {
    const srv = await scriptedServer(false);
    // As a browser does: the handshake completes without a subprotocol (ws's own client would
    // refuse it itself when it asked for one, so this one asks for none).
    class Lenient extends WebSocket {
      constructor(url: string, _protocols?: string | string[]) {
        super(url);
      }
    }
    const t = track(srv.url, {
      WebSocket: Lenient as unknown as WebSocketConstructorLike,
      maxRetries: 1,
    });
    await until(() => t.client.state === 'closed', 'the client to give up');
    expect(t.opens).toEqual([]);
    expect(t.errors.map((e) => e.message)).toEqual([
      `wsdrain/client: the server at ${srv.url} did not select wsdrain.v1`,
      `wsdrain/client: the server at ${srv.url} did not select wsdrain.v1`,
    ]);
    expect(t.closes.map((c) => [c.code, c.willReconnect])).toEqual([
      [1002, true],
      [1002, false],
    ]);
  });
});
