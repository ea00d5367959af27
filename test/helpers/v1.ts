/**
 * A raw wsdrain.v1 client that recovers, for the tests of delivery across faults: it keeps
 * each topic's position (offset and epoch of the last publication it handled), and after any
 * close (waiting the reconnect hint), a `{"resubscribe":true}`, an `unavailable` answer or a
 * hole, it subscribes again `since` that position, on the next URL of its list. Everything it
 * sees is recorded, so a test can check "every publication once, in order, or a clear no".
 */

import { WebSocket } from 'ws';
import { parseHint } from 'wsdrain';

export interface Pub {
  offset: number;
  epoch: string;
  data: unknown;
  /** When it arrived (Date.now()). */
  at: number;
}

export interface Subscribed {
  offset: number;
  epoch: string;
  recovered?: boolean;
  /** The position the client asked from, if any. */
  since?: { offset: number; epoch: string } | undefined;
}

export interface V1Client {
  /** Per topic, the publications handled, in order (duplicates not included). */
  pubs: Map<string, Pub[]>;
  /** Per topic, every `subscribed` answer. */
  subscribed: Map<string, Subscribed[]>;
  /** Publications at or below the position (skipped). */
  duplicates: number;
  /** Publications that were not the next offset of the position's epoch (then resubscribed). */
  holes: Array<{ topic: string; at: { offset: number; epoch: string } | undefined; got: Pub }>;
  /** Close codes of the connections that had opened. */
  closes: number[];
  /** Error answers from the server. */
  errors: Array<{ code: string; message: string }>;
  /** `unsubscribed` with `resubscribe` received. */
  resubscribes: number;
  /** Whether a connection is open and every topic is subscribed on it. */
  readonly live: boolean;
  /** The URL of the open connection. */
  readonly url: string | undefined;
  stop: () => void;
}

/** Connects to `urls[0]` (then the next one after each close) and subscribes to `topics`. */
export function v1Client(urls: string[], topics: string[]): V1Client {
  const pubs = new Map<string, Pub[]>(topics.map((t) => [t, []]));
  const subscribed = new Map<string, Subscribed[]>(topics.map((t) => [t, []]));
  const position = new Map<string, { offset: number; epoch: string }>();
  /** The `since` of each topic's last subscribe. */
  const pendingSince = new Map<string, { offset: number; epoch: string } | undefined>();
  const live = new Set<string>();
  let ws: WebSocket | undefined;
  let index = 0;
  let stopped = false;
  let openUrl: string | undefined;
  const c: V1Client = {
    pubs,
    subscribed,
    duplicates: 0,
    holes: [],
    closes: [],
    errors: [],
    resubscribes: 0,
    get live() {
      return openUrl !== undefined && live.size === topics.length;
    },
    get url() {
      return openUrl;
    },
    stop: () => {
      stopped = true;
      ws?.terminate();
    },
  };
  const subscribe = (socket: WebSocket, topic: string): void => {
    live.delete(topic);
    const since = position.get(topic);
    if (socket.readyState !== WebSocket.OPEN) return;
    socket.send(
      JSON.stringify({ type: 'subscribe', topic, id: `sub:${topic}`, ...(since ? { since } : {}) }),
    );
    pendingSince.set(topic, since);
  };
  const connect = (delayMs: number): void => {
    if (stopped) return;
    setTimeout(() => {
      if (stopped) return;
      const url = urls[index % urls.length] as string;
      const socket = new WebSocket(url, ['wsdrain.v1']);
      ws = socket;
      let opened = false;
      socket.on('error', () => {});
      socket.on('open', () => {
        opened = true;
        openUrl = url;
        for (const t of topics) subscribe(socket, t);
      });
      socket.on('close', (code, reason) => {
        openUrl = undefined;
        live.clear();
        index++;
        if (!opened) return connect(50);
        c.closes.push(code);
        connect(parseHint(reason.toString())?.retryMs ?? 50);
      });
      socket.on('message', (raw, isBinary) => {
        if (isBinary) return;
        const m = JSON.parse(raw.toString()) as Record<string, unknown> & {
          type: string;
          topic: string;
        };
        // Topics the app subscribed it to on its own are not this client's business.
        if (typeof m.topic === 'string' && !topics.includes(m.topic)) return;
        switch (m.type) {
          case 'subscribed': {
            const s = m as unknown as Subscribed;
            subscribed.get(m.topic)?.push({ ...s, since: pendingSince.get(m.topic) });
            // Recovered: the position stays (the missed publications follow); otherwise
            // the stream starts after the server's position.
            if (s.recovered !== true) position.set(m.topic, { offset: s.offset, epoch: s.epoch });
            live.add(m.topic);
            return;
          }
          case 'pub': {
            const p: Pub = {
              offset: m.offset as number,
              epoch: m.epoch as string,
              data: m.data,
              at: Date.now(),
            };
            const at = position.get(m.topic);
            if (at && p.epoch === at.epoch && p.offset <= at.offset) {
              c.duplicates++;
              return;
            }
            if (!at || p.epoch !== at.epoch || p.offset !== at.offset + 1) {
              c.holes.push({ topic: m.topic, at, got: p });
              socket.send(JSON.stringify({ type: 'unsubscribe', topic: m.topic }));
              subscribe(socket, m.topic);
              return;
            }
            position.set(m.topic, { offset: p.offset, epoch: p.epoch });
            pubs.get(m.topic)?.push(p);
            return;
          }
          case 'unsubscribed':
            if (m.resubscribe === true) {
              c.resubscribes++;
              subscribe(socket, m.topic);
            }
            return;
          case 'error': {
            c.errors.push({ code: m.code as string, message: m.message as string });
            const topic = typeof m.id === 'string' && m.id.startsWith('sub:') ? m.id.slice(4) : '';
            if (topic && m.code === 'unavailable') {
              setTimeout(() => subscribe(socket, topic), 100);
            }
            return;
          }
        }
      });
    }, delayMs);
  };
  connect(0);
  return c;
}

export interface Publisher {
  /** Acknowledged publications: the data (a counter from 0) and where each went. */
  acks: Array<{ n: number; topic: string; offset: number; epoch: string }>;
  /** Error answers (`unavailable` while the broker is away). */
  errors: Array<{ n: number; code: string; message: string }>;
  /** Publications sent. */
  sent: number;
  /** Stops sending; resolves once every one sent has its answer (or after `ms`). */
  stop: (ms?: number) => Promise<void>;
}

/**
 * Publishes `{"n": 0}`, `{"n": 1}`, ... every `everyMs` over one wsdrain.v1 connection, to
 * `topics` in turn (at most `max` of them), recording each answer. Resolves once connected.
 */
export function v1Publisher(
  url: string,
  topics: string[],
  everyMs: number,
  max = Number.POSITIVE_INFINITY,
): Promise<Publisher> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['wsdrain.v1']);
    const p: Publisher = { acks: [], errors: [], sent: 0, stop: async () => {} };
    let timer: NodeJS.Timeout | undefined;
    ws.on('error', reject);
    ws.on('message', (raw) => {
      const m = JSON.parse(raw.toString()) as Record<string, unknown>;
      const n = Number(m.id);
      if (m.type === 'published') {
        p.acks.push({
          n,
          topic: m.topic as string,
          offset: m.offset as number,
          epoch: m.epoch as string,
        });
      } else if (m.type === 'error') {
        p.errors.push({ n, code: m.code as string, message: m.message as string });
      }
    });
    ws.on('open', () => {
      timer = setInterval(() => {
        if (p.sent >= max) return clearInterval(timer);
        const n = p.sent++;
        const topic = topics[n % topics.length] as string;
        ws.send(JSON.stringify({ type: 'publish', topic, data: { n }, id: n }));
      }, everyMs);
      p.stop = async (ms = 5000) => {
        clearInterval(timer);
        const t0 = Date.now();
        while (p.acks.length + p.errors.length < p.sent && Date.now() - t0 < ms) {
          await new Promise((r) => setTimeout(r, 10));
        }
        ws.close();
      };
      resolve(p);
    });
  });
}
