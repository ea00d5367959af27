/**
 * Applications (`--app`): auth at the upgrade, hooks, push and topics across workers, the
 * wsdrain.v1 subprotocol, and hooks that fail. Real wsdrain processes, real ws clients.
 */
import { connect as netConnect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { codes, connectMany, waitMessages } from './helpers/clients.js';
import { killAll, type Running, sleep, startWsdrain } from './helpers/process.js';
import { workersListening } from './helpers/workers.js';

afterEach(killAll);

const APP = fileURLToPath(new URL('./fixtures/app-chat.mjs', import.meta.url));
const TOPICS_APP = fileURLToPath(new URL('./fixtures/app-many-topics.mjs', import.meta.url));
const TICKS_APP = fileURLToPath(new URL('./fixtures/app-topics.mjs', import.meta.url));

interface Peer {
  ws: WebSocket;
  /** Every message, text parsed as JSON when it is JSON. */
  got: unknown[];
  closed: Promise<{ code: number; reason: string }>;
  /** Resolves with the first message (received from now on or before) that `pred` accepts. */
  next: (pred: (m: unknown) => boolean, what: string, ms?: number) => Promise<unknown>;
}

function parse(data: WebSocket.RawData, isBinary: boolean): unknown {
  if (isBinary) return data;
  const text = data.toString();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Opens a client; `protocol` asks for wsdrain.v1. Rejects with the HTTP status when refused. */
function open(port: number, query: string, protocol?: string): Promise<Peer> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/?${query}`, protocol ? [protocol] : []);
    const got: unknown[] = [];
    const closed = new Promise<{ code: number; reason: string }>((r) =>
      ws.on('close', (code, reason) => r({ code, reason: reason.toString() })),
    );
    ws.on('message', (d, b) => got.push(parse(d, b)));
    ws.on('error', (e) => reject(e));
    ws.on('unexpected-response', (_req, res) => {
      reject(
        new Error(
          `status ${res.statusCode}${res.headers['retry-after'] ? ` retry-after ${res.headers['retry-after']}` : ''}`,
        ),
      );
      res.resume();
    });
    const next = async (
      pred: (m: unknown) => boolean,
      what: string,
      ms = 5000,
    ): Promise<unknown> => {
      const t0 = Date.now();
      for (;;) {
        const hit = got.find(pred);
        if (hit !== undefined) return hit;
        if (Date.now() - t0 > ms)
          throw new Error(`waited ${ms} ms for ${what}; got ${JSON.stringify(got)}`);
        await sleep(10);
      }
    };
    ws.on('open', () => resolve({ ws, got, closed, next }));
  });
}

const is = (o: Record<string, unknown>) => (m: unknown) =>
  typeof m === 'object' &&
  m !== null &&
  Object.entries(o).every(([k, v]) => (m as Record<string, unknown>)[k] === v);

async function whoami(p: Peer): Promise<{ id: string; worker: number; user: string }> {
  p.ws.send('whoami');
  return (await p.next(
    (m) => typeof (m as { worker?: unknown })?.worker === 'number',
    'whoami',
  )) as {
    id: string;
    worker: number;
    user: string;
  };
}

function start(extra: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Running> {
  return startWsdrain(['--workers', '2', '--threads', '1', '--app', APP, ...extra], { env });
}

describe('the upgrade hook', () => {
  it('lets in with a context, refuses with the status the app gives, 500 on a throw, 503 on a hang', async () => {
    const srv = await start(['--handshake-timeout', '800']);
    const ann = await open(srv.port, 'token=t1');
    expect((await whoami(ann)).user).toBe('ann');
    await expect(open(srv.port, 'token=nope')).rejects.toThrow('status 401');
    await expect(open(srv.port, 'token=banned')).rejects.toThrow('status 403');
    await expect(open(srv.port, 'token=slow')).rejects.toThrow('status 429 retry-after 7');
    // The app's words reach the client as the body of the refusal.
    const refused = netConnect(srv.port, '127.0.0.1');
    refused.on('error', () => {});
    const chunks: Buffer[] = [];
    refused.on('data', (d: Buffer) => chunks.push(d));
    refused.write(
      'GET /?token=banned HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    await new Promise((r) => refused.once('close', r));
    const answer = Buffer.concat(chunks).toString('latin1');
    expect(answer).toMatch(/^HTTP\/1\.1 403 Forbidden/);
    expect(answer).toMatch(/\r\n\r\nbanned\n$/);
    await expect(open(srv.port, 'token=throw')).rejects.toThrow('status 500');
    const t0 = Date.now();
    await expect(open(srv.port, 'token=hang')).rejects.toThrow('status 503');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(700);
    await srv.waitFor((l) => l.hook === 'upgrade' && /auth backend down/.test(l.msg));
    // The worker stayed up through it all.
    expect((await whoami(ann)).user).toBe('ann');
  });
});

describe('topics across workers', () => {
  it('a message on one worker reaches subscribers on every worker, once each, in order', async () => {
    const srv = await start();
    await workersListening(srv, 2);
    // Clients until both workers have one.
    const peers: Peer[] = [];
    const workers = new Set<number>();
    for (let i = 0; workers.size < 2 && i < 40; i++) {
      const p = await open(srv.port, `token=t${(i % 4) + 1}`);
      workers.add((await whoami(p)).worker);
      peers.push(p);
    }
    expect(workers.size).toBe(2);
    const [speaker] = peers;
    for (let i = 0; i < 20; i++) speaker!.ws.send(`hello ${i}`);
    for (const p of peers) {
      await p.next(is({ text: 'hello 19' }), 'the last lobby message');
      const texts = p.got
        .filter(
          (m) =>
            typeof (m as { text?: unknown })?.text === 'string' &&
            (m as { text: string }).text.startsWith('hello'),
        )
        .map((m) => (m as { text: string }).text);
      expect(texts).toEqual(Array.from({ length: 20 }, (_, i) => `hello ${i}`));
    }
    // A room of one: only bob gets his direct message.
    const bob = peers.find((_p, i) => i % 4 === 1)!;
    speaker!.ws.send('dm bob psst');
    await bob.next(is({ text: 'psst' }), 'the direct message');
    await sleep(200);
    for (const p of peers) if (p !== bob) expect(p.got.some(is({ text: 'psst' }))).toBe(false);
  });

  for (const workers of ['2', '0']) {
    it(`a room left and joined again at once still gets its publications (--workers ${workers})`, async () => {
      const srv = await startWsdrain(['--workers', workers, '--threads', '1', '--app', APP]);
      if (workers !== '0') await workersListening(srv, Number(workers));
      const bob = await open(srv.port, 'token=t2');
      const ann = await open(srv.port, 'token=t1');
      await whoami(bob);
      await whoami(ann);
      // bob is the only subscriber of user:bob on his worker: the unsubscribe ends the
      // worker's interest in it and the subscribe that follows asks for it again.
      bob.ws.send('rejoin');
      await bob.next(is({ rejoined: 'bob' }), 'rejoined');
      await sleep(100);
      ann.ws.send('dm bob psst');
      await bob.next(is({ text: 'psst' }), 'the direct message after the rejoin');
    });
  }

  it('pushes from the primary to every subscriber', async () => {
    const srv = await start([], { APP_CLOCK_MS: '50' });
    const p = await open(srv.port, 'token=t1', 'wsdrain.v1');
    p.ws.send(JSON.stringify({ type: 'subscribe', topic: 'clock', id: 1 }));
    await p.next(is({ type: 'subscribed', topic: 'clock', id: 1 }), 'subscribed');
    const first = (await p.next(is({ type: 'pub', topic: 'clock' }), 'a tick')) as {
      offset: number;
    };
    await p.next(is({ type: 'pub', topic: 'clock', offset: first.offset + 3 }), 'three more ticks');
    const offsets = p.got
      .filter(is({ type: 'pub', topic: 'clock' }))
      .map((m) => (m as { offset: number }).offset);
    expect(offsets).toEqual(Array.from({ length: offsets.length }, (_, i) => first.offset + i));
  });
});

describe('the wsdrain.v1 subprotocol', () => {
  it('subscribes, publishes where the app allows, and answers errors', async () => {
    const srv = await start(['--max-topics', '4']);
    const a = await open(srv.port, 'token=t1', 'wsdrain.v1');
    const b = await open(srv.port, 'token=t2', 'wsdrain.v1');
    expect(a.ws.protocol).toBe('wsdrain.v1');
    b.ws.send(JSON.stringify({ type: 'subscribe', topic: 'open:x', id: 'b1' }));
    await b.next(is({ type: 'subscribed', topic: 'open:x', id: 'b1' }), 'subscribed');
    a.ws.send(JSON.stringify({ type: 'publish', topic: 'open:x', data: { n: 1 }, id: 7 }));
    const ack = (await a.next(is({ type: 'published', id: 7 }), 'the ack')) as {
      offset: number;
      epoch: string;
    };
    const pub = (await b.next(is({ type: 'pub', topic: 'open:x' }), 'the publication')) as Record<
      string,
      unknown
    >;
    expect(pub).toMatchObject({ offset: ack.offset, epoch: ack.epoch, data: { n: 1 } });
    // Binary data travels as b64.
    a.ws.send(
      JSON.stringify({
        type: 'publish',
        topic: 'open:x',
        b64: Buffer.from([1, 2, 255]).toString('base64'),
      }),
    );
    await b.next(
      is({ type: 'pub', topic: 'open:x', b64: Buffer.from([1, 2, 255]).toString('base64') }),
      'binary pub',
    );
    // Not allowed, bad topic, too many topics, bad fields: error answers, the connection stays.
    a.ws.send(JSON.stringify({ type: 'publish', topic: 'clock', data: 1, id: 8 }));
    await a.next(is({ type: 'error', code: 'forbidden', id: 8 }), 'forbidden publish');
    a.ws.send(JSON.stringify({ type: 'subscribe', topic: 'user:bob', id: 9 }));
    await a.next(is({ type: 'error', code: 'forbidden', id: 9 }), 'forbidden subscribe');
    a.ws.send(JSON.stringify({ type: 'subscribe', topic: 'no spaces', id: 10 }));
    await a.next(is({ type: 'error', code: 'bad_topic', id: 10 }), 'bad topic');
    for (const t of ['open:1', 'open:2', 'open:3'])
      a.ws.send(JSON.stringify({ type: 'subscribe', topic: t }));
    a.ws.send(JSON.stringify({ type: 'subscribe', topic: 'open:4', id: 11 }));
    await a.next(is({ type: 'error', code: 'too_many_topics', id: 11 }), 'too many topics');
    a.ws.send(JSON.stringify({ type: 'subscribe', id: 12 }));
    await a.next(is({ type: 'error', code: 'bad_request', id: 12 }), 'no topic');
    a.ws.send(JSON.stringify({ type: 'message', data: 'whoami' }));
    await a.next(
      (m) => (m as { type?: string; data?: { user?: string } })?.data?.user === 'ann',
      'a message reply',
    );
  });

  it('lets clients subscribe but not publish where the app has no canSubscribe or canPublish', async () => {
    const srv = await startWsdrain(['--workers', '0', '--threads', '1', '--app', TOPICS_APP], {
      env: { APP_TOPICS: '0' },
    });
    const a = await open(srv.port, '', 'wsdrain.v1');
    a.ws.send(JSON.stringify({ type: 'publish', topic: 't.x', data: 1, id: 1 }));
    await a.next(is({ type: 'error', code: 'forbidden', id: 1 }), 'forbidden publish');
    a.ws.send(JSON.stringify({ type: 'subscribe', topic: 't.x', id: 2 }));
    await a.next(is({ type: 'subscribed', topic: 't.x', id: 2 }), 'subscribed');
    expect(a.got.some((m) => (m as { type?: string }).type === 'published')).toBe(false);
  });

  it('replays, then goes live, with no duplicate while publications keep coming', async () => {
    // The primary publishes to `ticks` every millisecond; `keep` holds the worker's interest,
    // so publications are on their way to the worker while `sub` asks to recover. History
    // for a minute of ticks: a slow round on a busy machine still recovers.
    const srv = await startWsdrain(
      ['--workers', '1', '--threads', '1', '--app', TICKS_APP, '--history-size', '60000'],
      { env: { TICK_MS: '1' } },
    );
    const keep = await open(srv.port, 'token=k', 'wsdrain.v1');
    const sub = await open(srv.port, 'token=s', 'wsdrain.v1');
    keep.ws.send(JSON.stringify({ type: 'subscribe', topic: 'ticks' }));
    await keep.next(is({ type: 'subscribed', topic: 'ticks' }), 'keep subscribed');
    type Pub = { type: string; offset: number; epoch: string };
    const pubs = (from: number): Pub[] =>
      sub.got.slice(from).filter((m) => (m as Pub).type === 'pub') as Pub[];
    sub.ws.send(JSON.stringify({ type: 'subscribe', topic: 'ticks', id: 's0' }));
    await sub.next(is({ type: 'subscribed', id: 's0' }), 'subscribed');
    await sub.next(() => pubs(0).length > 0, 'a first tick');
    for (let round = 1; round <= 150; round++) {
      sub.ws.send(JSON.stringify({ type: 'unsubscribe', topic: 'ticks', id: `u${round}` }));
      await sub.next(is({ type: 'unsubscribed', id: `u${round}` }), 'unsubscribed');
      const last = pubs(0).at(-1)!;
      const mark = sub.got.length;
      const since = { offset: Math.max(0, last.offset - 3), epoch: last.epoch };
      sub.ws.send(JSON.stringify({ type: 'subscribe', topic: 'ticks', since, id: `s${round}` }));
      await sub.next(is({ type: 'subscribed', id: `s${round}`, recovered: true }), 'recovered');
      await sub.next(() => pubs(mark).length >= 8, 'replayed and live ticks');
      const offsets = pubs(mark).map((p) => p.offset);
      const expected = offsets.map((_, i) => since.offset + 1 + i);
      expect(offsets, `round ${round}`).toEqual(expected);
    }
  });

  it('closes a malformed frame with 1002 and an unknown type with 1003', async () => {
    const srv = await start();
    const a = await open(srv.port, 'token=t1', 'wsdrain.v1');
    a.ws.send('this is not json');
    expect((await a.closed).code).toBe(1002);
    const b = await open(srv.port, 'token=t2', 'wsdrain.v1');
    b.ws.send(JSON.stringify({ type: 'teleport' }));
    expect((await b.closed).code).toBe(1003);
  });

  it('recovers what a client missed, or says it cannot', async () => {
    const srv = await start(['--history-size', '5']);
    const pub = await open(srv.port, 'token=t1', 'wsdrain.v1');
    const sub = await open(srv.port, 'token=t2', 'wsdrain.v1');
    sub.ws.send(JSON.stringify({ type: 'subscribe', topic: 'open:r' }));
    const at = (await sub.next(is({ type: 'subscribed', topic: 'open:r' }), 'subscribed')) as {
      offset: number;
      epoch: string;
    };
    sub.ws.close();
    for (let i = 1; i <= 3; i++) {
      pub.ws.send(JSON.stringify({ type: 'publish', topic: 'open:r', data: i, id: i }));
      await pub.next(is({ type: 'published', id: i }), `ack ${i}`);
    }
    const back = await open(srv.port, 'token=t2', 'wsdrain.v1');
    back.ws.send(
      JSON.stringify({
        type: 'subscribe',
        topic: 'open:r',
        since: { offset: at.offset, epoch: at.epoch },
      }),
    );
    await back.next(is({ type: 'subscribed', topic: 'open:r', recovered: true }), 'recovered');
    await back.next(is({ type: 'pub', data: 3 }), 'the third');
    expect(back.got.filter(is({ type: 'pub' })).map((m) => (m as { data: number }).data)).toEqual([
      1, 2, 3,
    ]);
    // Ten more while away: history holds five, the gap cannot be covered.
    back.ws.close();
    for (let i = 4; i <= 13; i++) {
      pub.ws.send(JSON.stringify({ type: 'publish', topic: 'open:r', data: i, id: i }));
      await pub.next(is({ type: 'published', id: i }), `ack ${i}`);
    }
    const late = await open(srv.port, 'token=t2', 'wsdrain.v1');
    late.ws.send(
      JSON.stringify({
        type: 'subscribe',
        topic: 'open:r',
        since: { offset: at.offset + 3, epoch: at.epoch },
      }),
    );
    const no = (await late.next(
      is({ type: 'subscribed', topic: 'open:r' }),
      'the answer',
    )) as Record<string, unknown>;
    expect(no).toMatchObject({ recovered: false, offset: at.offset + 13 });
    await sleep(100);
    expect(late.got.filter(is({ type: 'pub' }))).toEqual([]);
  });
});

describe('start() from a script of its own', () => {
  for (const workers of ['0', '2']) {
    it(`runs the app object it is given (--workers ${workers}) and drains on SIGTERM`, async () => {
      const script = fileURLToPath(new URL('./fixtures/start-script.mjs', import.meta.url));
      const srv = await startWsdrain([], { env: { WORKERS: workers }, script });
      const p = await open(srv.port, '');
      await p.next((m) => typeof m === 'string' && m.startsWith('hello '), 'the greeting');
      p.ws.send('x');
      await p.next((m) => m === 'echo x', 'the echo');
      srv.kill('SIGTERM');
      expect((await p.closed).code).toBe(1001);
      expect((await srv.exited).code).toBe(0);
    });
  }
});

describe('pool handlers', () => {
  it('are told the connection and publish besides replying', async () => {
    const handler = fileURLToPath(new URL('./fixtures/publishing-handler.mjs', import.meta.url));
    const srv = await startWsdrain(['--workers', '2', '--threads', '1', '--handler', handler]);
    const sub = await open(srv.port, 'x', 'wsdrain.v1');
    sub.ws.send(JSON.stringify({ type: 'subscribe', topic: 'open:heard', id: 1 }));
    await sub.next(is({ type: 'subscribed', id: 1 }), 'subscribed');
    const talker = await open(srv.port, 'y');
    talker.ws.send('hello');
    const reply = (await talker.next((m) => typeof m === 'string', 'the reply')) as string;
    const id = /^(\S+) said hello$/.exec(reply)?.[1];
    expect(id).toMatch(/^[\w-]+-[0-9a-z]+$/);
    const heard = (await sub.next(is({ type: 'pub', topic: 'open:heard' }), 'the publication')) as {
      data: { from: string; text: string };
    };
    expect(heard.data).toEqual({ from: id, text: 'hello' });
  });
});

describe('metrics of topics', () => {
  it('counts publications, deliveries, subscriptions, recoveries, topics and history', async () => {
    const srv = await start(['--metrics-port', '0']);
    const mport = (await srv.waitFor((l) => typeof l.metricsPort === 'number'))
      .metricsPort as number;
    const sub = await open(srv.port, 'token=t2', 'wsdrain.v1');
    sub.ws.send(JSON.stringify({ type: 'subscribe', topic: 'open:m', id: 1 }));
    const at = (await sub.next(is({ type: 'subscribed', id: 1 }), 'subscribed')) as {
      offset: number;
      epoch: string;
    };
    const pub = await open(srv.port, 'token=t1', 'wsdrain.v1');
    for (let i = 1; i <= 3; i++)
      pub.ws.send(JSON.stringify({ type: 'publish', topic: 'open:m', data: i, id: i }));
    await sub.next(is({ type: 'pub', data: 3 }), 'the third');
    const again = await open(srv.port, 'token=t3', 'wsdrain.v1');
    again.ws.send(JSON.stringify({ type: 'subscribe', topic: 'open:m', since: at, id: 2 }));
    await again.next(is({ type: 'pub', data: 3 }), 'the replay');
    const text = await (await fetch(`http://127.0.0.1:${mport}/metrics`)).text();
    const value = (series: string): number => {
      const line = text.split('\n').find((l) => l.startsWith(`${series} `));
      if (!line) throw new Error(`no ${series} in\n${text}`);
      return Number(line.split(' ')[1]);
    };
    expect(value('wsdrain_publications_total{result="ok"}')).toBe(3);
    expect(value('wsdrain_deliveries_total')).toBe(6);
    expect(value('wsdrain_recoveries_total{result="recovered"}')).toBe(1);
    expect(value('wsdrain_subscriptions')).toBe(2 + 3 * 2); // two on open:m, each client's lobby and user room
    expect(value('wsdrain_topics')).toBeGreaterThanOrEqual(1);
    expect(value('wsdrain_history_size')).toBeGreaterThanOrEqual(3);
  });
});

describe('hooks that fail, and the drain', () => {
  it('closes the connection whose hook throws with 1011; the worker and the others carry on', async () => {
    const srv = await start();
    const a = await open(srv.port, 'token=t1');
    const b = await open(srv.port, 'token=t2');
    a.ws.send('boom');
    expect((await a.closed).code).toBe(1011);
    await srv.waitFor((l) => l.hook === 'message' && /failed on purpose/.test(l.msg));
    expect((await whoami(b)).user).toBe('bob');
  });

  it('closes with 1011 a connection whose open hook hangs past --hook-timeout', async () => {
    const srv = await start(['--hook-timeout', '300'], { APP_OPEN_HANG: '1' });
    const dee = await open(srv.port, 'token=t4');
    expect((await dee.closed).code).toBe(1011);
    await srv.waitFor((l) => l.hook === 'open' && /ran past 300 ms/.test(l.msg));
  });

  it('runs the drain hook before each close frame: goodbyes arrive before 1001 and 1012', async () => {
    const srv = await start(['--drain-timeout', '3000']);
    const clients = await Promise.all(['t1', 't2', 't3'].map((t) => open(srv.port, `token=${t}`)));
    srv.kill('SIGHUP');
    for (const c of clients) {
      expect((await c.closed).code).toBe(1012);
      expect(c.got.at(-1)).toEqual({ bye: 'restart' });
    }
    const again = await open(srv.port, 'token=t1');
    srv.kill('SIGTERM');
    expect((await again.closed).code).toBe(1001);
    expect(again.got.at(-1)).toEqual({ bye: 'shutdown' });
    expect((await srv.exited).code).toBe(0);
  });

  it('a drain that ends thousands of subscriptions still gets every worker report to the primary (exit 0)', async () => {
    // 100 connections x 100 topics of their own: each worker's drain queues thousands of
    // IPC messages (one per topic it lets go of) ahead of its report.
    const srv = await startWsdrain([
      '--workers',
      '2',
      '--app',
      TOPICS_APP,
      '--drain-timeout',
      '5000',
    ]);
    const clients = await connectMany(srv.port, 100, 20);
    await Promise.all(clients.map((c) => waitMessages(c, 1, 15_000)));
    srv.kill('SIGTERM');
    const drained = await srv.waitFor((l) => l.role === 'primary' && l.msg.startsWith('drained'));
    expect((drained.report as { workersLost: number }).workersLost).toBe(0);
    expect((await srv.exited).code).toBe(0);
    expect(codes(clients)).toEqual({ 1001: 100 });
  }, 30_000);

  it('runs CPU work of a hook in the pool, in the connection order', async () => {
    const srv = await start();
    const a = await open(srv.port, 'token=t1');
    for (let i = 0; i < 5; i++) a.ws.send(`cpu job ${i}`);
    await a.next((m) => m === 'job 4', 'the last job');
    expect(a.got).toEqual(Array.from({ length: 5 }, (_, i) => `job ${i}`));
  });
});
