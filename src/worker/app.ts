/**
 * An application in a worker: its hooks around each connection, the `Conn` its hooks see,
 * the wsdrain.v1 subprotocol (subscribe, unsubscribe, publish, message), and publishing.
 *
 * Order and the drain. Each message hook, `conn.run()`, `open` and `drain` hold a place in
 * their connection's order (the same queue as the pool's replies): a drain's close frame
 * waits for them like for any in-flight work (bounded by the last call), and what a hook
 * sends goes out before it. Message hooks of one connection run one at a time, in order.
 *
 * Failure isolation: a hook that throws, rejects or runs past --hook-timeout closes its own
 * connection with 1011 (`close` and `drain` failures are only logged); `upgrade` failures are
 * a 500, and past --handshake-timeout a 503.
 */
import type { IncomingMessage } from 'node:http';
import type { Broker } from '../app/broker.js';
import { callHook } from '../app/hooks.js';
import {
  type AppApi,
  type Conn,
  type DrainKind,
  isRejection,
  type PublishAck,
  type PublishData,
  type WsdrainApp,
} from '../app/types.js';
import { CloseCode } from '../codes.js';
import { PublishError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  type ClientMessage,
  PROTOCOL_V1,
  parseClientMessage,
  payloadField,
  payloadOf,
  type StreamPosition,
  TOPIC_RE,
  WireError,
} from '../wire.js';
import type { Connection, Connections, Slot } from './connection.js';
import { Kind } from './pool.js';
import { TopicError, Topics } from './topics.js';

export interface AppRuntimeOptions {
  log: Logger;
  /** Cluster worker id; 0 in a single process. */
  worker: number;
  app: WsdrainApp | undefined;
  broker: Broker;
  conns: Connections;
  /** Hands a message to the pool (work outside any connection: `slot.conn` undefined). */
  submit: (data: Uint8Array, isBinary: boolean, slot: Slot) => void;
  hookTimeout: number;
  handshakeTimeout: number;
  maxTopics: number;
  maxPayload: number;
  /** A close reason with a reconnect hint (restart, within --reconnect-window). */
  reconnectReason: () => string;
}

/** What the upgrade hook decided. */
export type UpgradeOutcome =
  | { ok: true; context: unknown }
  | { ok: false; status: string; headers?: string; body?: string };

const STATUS: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  409: 'Conflict',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

function cookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    const raw = part.slice(eq + 1).trim();
    try {
      out[name] = decodeURIComponent(raw);
    } catch {
      out[name] = raw;
    }
  }
  return out;
}

/** Decodes a message as the app sees it: text as a string, bytes as a Buffer. */
function asData(data: Buffer, isBinary: boolean): string | Buffer {
  return isBinary ? data : data.toString();
}

export class AppRuntime {
  readonly api: AppApi;
  readonly topics: Topics<Connection>;
  readonly #o: AppRuntimeOptions;
  readonly #app: WsdrainApp;
  /** Publications made from this worker, and those that failed. */
  published = 0;
  publishFailures = 0;
  /** Per connection and topic: its subscribe / unsubscribe requests still under way. */
  readonly #underWay = new WeakMap<Connection, Map<string, Promise<void>>>();

  constructor(o: AppRuntimeOptions) {
    this.#o = o;
    this.#app = o.app ?? {};
    this.api = {
      publish: (topic, data) => this.publish(topic, data),
      run: (data) =>
        this.#run(typeof data === 'string' ? Buffer.from(data) : data, typeof data !== 'string'),
      log: o.log,
      worker: o.worker,
    };
    this.topics = new Topics<Connection>({
      log: o.log,
      broker: o.broker,
      maxTopics: o.maxTopics,
      write: (conn, frame) => o.conns.write(conn, frame),
      control: (conn, message) => this.#control(conn, message),
      reconnect: (conn) => o.conns.close(conn, CloseCode.RESTART, o.reconnectReason()),
    });
  }

  /** Whether the app decides who gets in (an `upgrade` hook). */
  get hasUpgradeHook(): boolean {
    return this.#app.upgrade !== undefined;
  }

  /** Publishes to every subscriber of `topic`, on every worker. */
  async publish(topic: string, data: PublishData): Promise<PublishAck> {
    if (typeof topic !== 'string' || !TOPIC_RE.test(topic)) {
      throw new PublishError(
        `bad topic ${JSON.stringify(topic)}: 1 to 200 characters of [A-Za-z0-9_-:./@#=+]`,
      );
    }
    const size =
      data instanceof Uint8Array
        ? data.byteLength
        : typeof data === 'string'
          ? Buffer.byteLength(data)
          : Buffer.byteLength(JSON.stringify(data) ?? '');
    if (size > this.#o.maxPayload) {
      throw new PublishError(
        `publication of ${size} bytes over --max-payload (${this.#o.maxPayload})`,
      );
    }
    try {
      const ack = await this.#o.broker.publish(topic, data);
      this.published++;
      return ack;
    } catch (err) {
      this.publishFailures++;
      throw new PublishError(`cannot publish to ${topic}: ${(err as Error).message}`);
    }
  }

  /** A publication a pool handler asked for: made, a failure logged (the reply went out). */
  handlerPublish(c: Connection, topic: unknown, data: unknown): void {
    this.publish(topic as string, data as PublishData).catch((err: unknown) => {
      this.#o.log.warn(
        { conn: c.id, topic, err: (err as Error).message },
        'a handler publication failed',
      );
    });
  }

  /** The `upgrade` hook (none: every client in, no context). */
  async upgrade(req: IncomingMessage): Promise<UpgradeOutcome> {
    const hook = this.#app.upgrade;
    if (!hook) return { ok: true, context: undefined };
    const url = req.url ?? '/';
    const request = {
      url,
      query: new URL(url, 'http://localhost').searchParams,
      headers: req.headers,
      cookies: cookies(req.headers.cookie),
      protocols: (req.headers['sec-websocket-protocol'] ?? '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
      ip: req.socket.remoteAddress ?? '',
    };
    let result: unknown;
    try {
      result = await callHook(
        'upgrade',
        () => hook(request, this.api),
        this.#o.handshakeTimeout,
        this.#o.log,
        { url },
      );
    } catch (err) {
      const timedOut = (err as { timedOut?: boolean }).timedOut === true;
      return timedOut
        ? { ok: false, status: '503 Service Unavailable', headers: 'Retry-After: 1\r\n' }
        : { ok: false, status: '500 Internal Server Error' };
    }
    if (isRejection(result)) {
      const extra = Object.entries(result.headers)
        .filter(([k, v]) => /^[\w-]+$/.test(k) && !/[\r\n]/.test(v))
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('');
      return {
        ok: false,
        status: `${result.status} ${STATUS[result.status] ?? 'Refused'}`,
        headers: extra,
        body: result.message,
      };
    }
    return { ok: true, context: result };
  }

  /** The app's view of a connection. */
  conn(c: Connection): Conn {
    c.handle ??= new AppConn(c, this);
    return c.handle as Conn;
  }

  /** A connection opened: the `open` hook, in its order. */
  opened(c: Connection): void {
    const hook = this.#app.open;
    if (hook) this.#inOrder(c, 'open', () => hook(this.conn(c), this.api));
  }

  /** Every message of an open connection. */
  receive(c: Connection, data: Buffer, isBinary: boolean): void {
    if (c.protocol === PROTOCOL_V1 && !isBinary) {
      this.#protocol(c, data.toString());
      return;
    }
    this.#message(c, asData(data, isBinary), isBinary, data);
  }

  /** A message for the app: its hook, or the pool (whose reply is sent back). */
  #message(c: Connection, value: unknown, isBinary: boolean, raw?: Uint8Array): void {
    const hook = this.#app.message;
    if (hook) {
      this.#inOrder(c, 'message', () => hook(this.conn(c), value, isBinary, this.api));
      return;
    }
    const bytes =
      raw ??
      (value instanceof Uint8Array
        ? value
        : Buffer.from(typeof value === 'string' ? value : (JSON.stringify(value) ?? 'null')));
    this.#o.conns.submit(c, bytes, isBinary);
  }

  /** Runs `fn` as a hook of `c`, one at a time, holding its place in `c`'s order. */
  #inOrder(c: Connection, name: string, fn: () => unknown): void {
    const release = this.#o.conns.hold(c);
    c.hooks = (c.hooks ?? Promise.resolve()).then(async () => {
      try {
        if (c.open) await callHook(name, fn, this.#o.hookTimeout, this.#o.log, { conn: c.id });
      } catch {
        this.#o.conns.close(c, CloseCode.INTERNAL, `${name} hook failed`);
      } finally {
        release();
      }
    });
  }

  /** A wsdrain.v1 text frame. */
  #protocol(c: Connection, text: string): void {
    let parsed: ReturnType<typeof parseClientMessage>;
    try {
      parsed = parseClientMessage(text);
    } catch (err) {
      const e = err as WireError;
      this.#o.conns.close(c, e instanceof WireError ? e.closeCode : 1002, e.message.slice(0, 100));
      return;
    }
    if ('error' in parsed) {
      this.#control(c, parsed.error);
      return;
    }
    const m: ClientMessage = parsed.message;
    switch (m.type) {
      case 'message':
        this.#message(c, payloadOf(m), false);
        return;
      case 'subscribe': {
        const release = this.#o.conns.hold(c);
        this.#inTopicOrder(c, m.topic, () =>
          this.#subscribe(c, m.topic, m.since, m.id).finally(release),
        );
        return;
      }
      case 'unsubscribe':
        this.#inTopicOrder(c, m.topic, () => this.topics.unsubscribe(c, m.topic, true, m.id));
        return;
      case 'publish':
        this.#clientPublish(c, m.topic, payloadOf(m) as PublishData, m.id);
        return;
    }
  }

  /**
   * Runs `fn`, a subscribe or unsubscribe of `c`, once the requests of `c` on `topic` still
   * under way have settled (at once when there are none): a subscribe waiting for its
   * `canSubscribe` answer is not overtaken by the unsubscribe that followed it.
   */
  #inTopicOrder(c: Connection, topic: string, fn: () => unknown): void {
    let byTopic = this.#underWay.get(c);
    const before = byTopic?.get(topic);
    const run = before ? before.then(fn) : fn();
    if (!(run instanceof Promise)) return;
    if (!byTopic) {
      byTopic = new Map();
      this.#underWay.set(c, byTopic);
    }
    const settled: Promise<void> = run.then(
      () => {},
      () => {},
    );
    byTopic.set(topic, settled);
    settled.then(() => {
      if (byTopic.get(topic) === settled) byTopic.delete(topic);
    });
  }

  #subscribe(
    c: Connection,
    topic: string,
    since: StreamPosition | undefined,
    id?: number | string,
  ): Promise<void> {
    return this.#allowed('canSubscribe', c, topic, true)
      .then(async (yes) => {
        if (!yes) {
          this.#error(c, 'forbidden', `not allowed to subscribe to ${topic}`, id);
          return;
        }
        await this.topics.subscribe(c, topic, since, id);
      })
      .catch((err: unknown) => {
        const code = err instanceof TopicError ? err.code : 'unavailable';
        this.#error(c, code, (err as Error).message, id);
      });
  }

  /**
   * Whether the app's `hook` lets `c` use `topic` (only a `true` does; a hook that throws or
   * times out refuses); `otherwise` when the app has no such hook.
   */
  #allowed(
    hook: 'canSubscribe' | 'canPublish',
    c: Connection,
    topic: string,
    otherwise: boolean,
  ): Promise<boolean> {
    const ask = this.#app[hook];
    if (!ask) return Promise.resolve(otherwise);
    return callHook(
      hook,
      () => ask.call(this.#app, this.conn(c), topic, this.api),
      this.#o.hookTimeout,
      this.#o.log,
      { conn: c.id, topic },
    ).then(
      (yes) => yes === true,
      () => false,
    );
  }

  #clientPublish(c: Connection, topic: string, data: PublishData, id?: number | string): void {
    const release = this.#o.conns.hold(c);
    this.#allowed('canPublish', c, topic, false)
      .then(async (yes) => {
        if (!yes) {
          this.#error(c, 'forbidden', `not allowed to publish to ${topic}`, id);
          return;
        }
        const ack = await this.publish(topic, data);
        this.#control(c, { type: 'published', ...ack, ...(id === undefined ? {} : { id }) });
      })
      .catch((err: unknown) => {
        const msg = (err as Error).message;
        this.#error(c, /over --max-payload/.test(msg) ? 'too_large' : 'unavailable', msg, id);
      })
      .finally(release);
  }

  /** `api.run()`: work in the pool outside any connection; its reply or its failure. */
  #run(data: Uint8Array, isBinary: boolean): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const slot: Slot = {
        conn: undefined,
        kind: -1,
        data: null,
        take: (kind, out) => {
          if (kind === Kind.ERROR) reject(new Error(String(out)));
          else if (kind === Kind.TEXT) resolve((out as Buffer).toString());
          else resolve(kind === Kind.BINARY ? out : undefined);
        },
      };
      this.#o.submit(data, isBinary, slot);
    });
  }

  #error(c: Connection, code: string, message: string, id?: number | string): void {
    this.#control(c, { type: 'error', code, message, ...(id === undefined ? {} : { id }) });
  }

  /** Sends a wsdrain.v1 control message (only to wsdrain.v1 clients). */
  #control(c: Connection, message: object): void {
    if (c.protocol !== PROTOCOL_V1 || !c.open) return;
    c.ws.send(JSON.stringify(message));
    this.#o.conns.checkBuffered(c);
  }

  /**
   * A drain is about to close `c`: the `drain` hook, holding its place so the close frame
   * waits for it (until the last call).
   */
  beforeDrain(c: Connection, kind: DrainKind): void {
    const hook = this.#app.drain;
    if (!hook || !c.open) return;
    const release = this.#o.conns.hold(c);
    callHook('drain', () => hook(this.conn(c), kind, this.api), this.#o.hookTimeout, this.#o.log, {
      conn: c.id,
    })
      .catch(() => {})
      .finally(release);
  }

  /** A connection closed: its subscriptions end, then the `close` hook. */
  closed(c: Connection, code: number, reason: string): void {
    this.topics.leaveAll(c);
    const hook = this.#app.close;
    if (!hook) return;
    callHook(
      'close',
      () => hook(this.conn(c), code, reason, this.api),
      this.#o.hookTimeout,
      this.#o.log,
      {
        conn: c.id,
      },
    ).catch(() => {});
  }

  /** Sends app data to `c` (see {@link Conn.send}). */
  send(c: Connection, data: PublishData): boolean {
    if (!c.open) return false;
    if (data instanceof Uint8Array) c.ws.send(data, { binary: true });
    else if (c.protocol === PROTOCOL_V1)
      c.ws.send(JSON.stringify({ type: 'message', ...payloadField(data) }));
    else c.ws.send(typeof data === 'string' ? data : JSON.stringify(data));
    return this.#o.conns.checkBuffered(c);
  }

  /** Closes `c` with the closing handshake. */
  close(c: Connection, code: number, reason: string): void {
    this.#o.conns.close(c, code, reason);
  }

  /** Runs `data` through the pool in `c`'s order; a failure closes `c` with 1011. */
  run(c: Connection, data: string | Uint8Array): Promise<unknown> {
    const isBinary = typeof data !== 'string';
    const bytes = isBinary ? data : Buffer.from(data);
    return new Promise((resolve, reject) => {
      if (!c.open) {
        reject(new Error('connection closed'));
        return;
      }
      this.#o.conns.submit(c, bytes, isBinary, (kind, out) => {
        if (kind === Kind.ERROR) reject(new Error(String(out)));
        else if (kind === Kind.TEXT) resolve((out as Buffer).toString());
        else if (kind === Kind.BINARY) resolve(out);
        else resolve(undefined);
      });
    });
  }
}

/** The `Conn` an app's hooks see. */
class AppConn implements Conn {
  readonly #c: Connection;
  readonly #rt: AppRuntime;

  constructor(c: Connection, rt: AppRuntime) {
    this.#c = c;
    this.#rt = rt;
  }

  get id(): string {
    return this.#c.id;
  }

  get context(): unknown {
    return this.#c.context;
  }

  get protocol(): string {
    return this.#c.protocol;
  }

  get topics(): ReadonlySet<string> {
    return new Set(this.#c.subs?.keys() ?? []);
  }

  get open(): boolean {
    return this.#c.open;
  }

  send(data: PublishData): boolean {
    return this.#rt.send(this.#c, data);
  }

  subscribe(topic: string): Promise<void> {
    if (!TOPIC_RE.test(topic))
      return Promise.reject(new PublishError(`bad topic ${JSON.stringify(topic)}`));
    return this.#rt.topics.subscribe(this.#c, topic);
  }

  unsubscribe(topic: string): void {
    this.#rt.topics.unsubscribe(this.#c, topic);
  }

  publish(topic: string, data: PublishData): Promise<PublishAck> {
    return this.#rt.publish(topic, data);
  }

  run(data: string | Uint8Array): Promise<unknown> {
    return this.#rt.run(this.#c, data);
  }

  close(code = 1000, reason = ''): void {
    this.#rt.close(this.#c, code, reason);
  }

  toJSON(): object {
    return { id: this.id, protocol: this.protocol, topics: [...(this.#c.subs?.keys() ?? [])] };
  }
}
