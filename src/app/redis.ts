/**
 * The Redis broker (`--broker redis://host:port[/db]`): offsets, epochs, history and fan-out of
 * every topic in Redis, shared by any number of wsdrain hosts. Each worker talks to Redis
 * itself over two connections (commands, and one subscribed to the topics it holds); the
 * primary keeps one command connection to publish for its `primary` hook.
 *
 * Per topic (the braces keep a topic's keys in one Redis Cluster slot):
 *
 *     wsdrain:{topic}:meta    hash  e = epoch, o = top offset
 *     wsdrain:{topic}:stream  stream, one entry per publication: ID <offset>-0, d = data, t = ms
 *     wsdrain:{topic}:live    channel: every publication, as "<offset>:<epoch>:<ms>:<data>"
 *
 * - Publishing is one Lua script (PUBLISH_LUA): read the epoch (a new random one, and no stream,
 *   when the meta hash is gone), HINCRBY the offset, XADD with the offset as ID capped exactly
 *   at --history-size (`MAXLEN n`, not `~`: recovery then succeeds or fails exactly as with the
 *   embedded broker), PEXPIRE the stream (--history-ttl) and the meta (longer), PUBLISH. Redis
 *   runs a script alone, so the offsets of a topic are 1, 2, 3, ... and every subscribed
 *   connection gets them in that order.
 * - The meta hash outlives the stream (metaTtl, one day by default, refreshed while anyone
 *   publishes or is interested): a client far behind meets the same epoch and a clear "no",
 *   and once the meta is gone a new epoch says so too. The epoch is made once, with the counter.
 * - Interest: SUBSCRIBE to the topic's channel, and once Redis confirmed it, read the position
 *   (POSITION_LUA; it makes the meta if there is none). Publications that arrive meanwhile are
 *   held (at most `maxHeld`), sorted, and those after the position delivered; from then on
 *   each live publication must be the next offset of the same epoch: a duplicate is skipped,
 *   a hole or another epoch is a gap (`onGap`), never a silent skip.
 * - Recovery (RECOVER_LUA, one round trip, atomic): the meta (HGET) and XRANGE of exactly the
 *   missed offsets, at most `maxReplay` of them; all of them, none older than --history-ttl
 *   (by Redis's clock), or `recovered: false`.
 * - Data keeps its kind: a tag byte then the bytes: `s` text, `b` bytes (Uint8Array), `j` JSON.
 *
 * Faults. Commands never wait in a queue while Redis is away (node-redis's offline queue is
 * off; each call is bounded by `commandTimeout`), so `publish`, `interest` and `recover` fail
 * fast and memory stays bounded. `healthy` is false from the moment either connection drops or
 * a health PING goes unanswered, until both are back. When the subscribed connection was lost,
 * publications may have gone by unseen: on its return every topic held gets `onGap`, and its
 * subscribers recover from history (or hear `recovered: false`, e.g. a Redis restarted without
 * persistence has new epochs).
 */
import { randomBytes } from 'node:crypto';
import { BrokerError, PublishError } from '../errors.js';
import type { Logger } from '../log.js';
import { brokerUrlProblem, type WsdrainOptions } from '../options.js';
import type { StreamPosition } from '../wire.js';
import type { Broker, BrokerStats, Publication, Recovery } from './broker.js';
import type { PublishAck, PublishData } from './types.js';

/** Options of a {@link RedisBroker}. */
export interface RedisBrokerOptions {
  /** `redis://[user:password@]host:port[/db]` (or `rediss://`). */
  url: string;
  /** Publications kept per topic (0: none). */
  historySize: number;
  /** Longest time a publication is kept, in ms. */
  historyTtl: number;
  /** Most publications one recovery replays. @default historySize */
  maxReplay?: number | undefined;
  /** How long a topic's epoch and offset outlive its last publication or interest, in ms. @default max(86400000, 2 * historyTtl) */
  metaTtl?: number | undefined;
  /** Prefix of every key and channel. @default 'wsdrain:' */
  prefix?: string | undefined;
  /** Longest a Redis command may take before it fails, in ms. @default 2000 */
  commandTimeout?: number | undefined;
  /** How long `connect` tries to reach Redis before it gives up, in ms. @default 3000 */
  startTimeout?: number | undefined;
  /** Health PING interval, in ms. @default 1000 */
  pingInterval?: number | undefined;
  /** Live publications held for one topic while its interest is set up; more is a gap. @default 10000 */
  maxHeld?: number | undefined;
  /** Only publishes (the primary): no subscribed connection. */
  publishOnly?: boolean | undefined;
  log?: Logger | undefined;
}

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}

const TAG_TEXT = 0x73; // s
const TAG_BYTES = 0x62; // b
const TAG_JSON = 0x6a; // j

/** A publication's data as bytes that keep its kind (text, bytes or a JSON value). */
export function encodeData(data: PublishData | undefined): Buffer {
  if (typeof data === 'string') {
    const out = Buffer.allocUnsafe(1 + Buffer.byteLength(data));
    out[0] = TAG_TEXT;
    out.write(data, 1);
    return out;
  }
  if (data instanceof Uint8Array) {
    const out = Buffer.allocUnsafe(1 + data.byteLength);
    out[0] = TAG_BYTES;
    out.set(data, 1);
    return out;
  }
  return Buffer.concat([Buffer.of(TAG_JSON), Buffer.from(JSON.stringify(data ?? null) ?? 'null')]);
}

/** The data {@link encodeData} made. Throws on bytes it did not make. */
export function decodeData(bytes: Uint8Array): PublishData {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (b[0]) {
    case TAG_TEXT:
      return b.toString('utf8', 1);
    case TAG_BYTES:
      return new Uint8Array(b.subarray(1));
    case TAG_JSON:
      return JSON.parse(b.toString('utf8', 1)) as PublishData;
    default:
      throw new Error(`not a wsdrain publication (tag ${b[0]})`);
  }
}

// KEYS: meta, stream. ARGV: data, history size, history ttl ms, meta ttl ms, epoch if new,
// channel. Returns {offset, epoch}.
const PUBLISH_LUA = `
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('del', KEYS[2])
  redis.call('hset', KEYS[1], 'e', epoch, 'o', 0)
end
local offset = redis.call('hincrby', KEYS[1], 'o', 1)
local now = redis.call('time')
local at = tostring(now[1] * 1000 + math.floor(now[2] / 1000))
if tonumber(ARGV[2]) > 0 then
  redis.call('xadd', KEYS[2], 'MAXLEN', ARGV[2], tostring(offset), 'd', ARGV[1], 't', at)
  redis.call('pexpire', KEYS[2], ARGV[3])
end
redis.call('pexpire', KEYS[1], ARGV[4])
redis.call('publish', ARGV[6], tostring(offset) .. ':' .. epoch .. ':' .. at .. ':' .. ARGV[1])
return {offset, epoch}
`;

// KEYS: meta, stream. ARGV: since offset (-1: the position only), most entries, epoch if new,
// meta ttl ms. Returns {top offset, epoch, now ms, entries}: the entries after `since` when
// there are at most that many.
const RECOVER_LUA = `
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[3]
  redis.call('del', KEYS[2])
  redis.call('hset', KEYS[1], 'e', epoch, 'o', 0)
end
redis.call('pexpire', KEYS[1], ARGV[4])
local top = tonumber(redis.call('hget', KEYS[1], 'o'))
local since = tonumber(ARGV[1])
local now = redis.call('time')
local entries = {}
if since >= 0 and since < top and top - since <= tonumber(ARGV[2]) then
  entries = redis.call('xrange', KEYS[2], tostring(since + 1), tostring(top))
end
return {top, epoch, now[1] * 1000 + math.floor(now[2] / 1000), entries}
`;

interface Script {
  lua: string;
  sha: string;
}

/** The part of a node-redis client used here. */
interface RedisConn {
  readonly isReady: boolean;
  connect(): Promise<unknown>;
  on(event: string, fn: (...args: never[]) => void): unknown;
  sendCommand(args: ReadonlyArray<string | Buffer>, options?: object): Promise<unknown>;
  subscribe(channel: string, listener: Listener, bufferMode: true): Promise<void>;
  unsubscribe(channel: string, listener: Listener, bufferMode: true): Promise<void>;
  close(): Promise<void>;
  destroy(): void;
}

type Listener = (message: Buffer, channel: Buffer) => void;

/** One topic this broker was told about. */
interface TopicState {
  topic: string;
  channel: string;
  meta: string;
  stream: string;
  /** `interest` calls not yet dropped. */
  count: number;
  /** stale: no live stream (new, or after a gap); starting: SUBSCRIBE + position under way. */
  phase: 'stale' | 'starting' | 'live';
  /** A SUBSCRIBE was sent (maybe not answered) and no UNSUBSCRIBE since. */
  subscribed: boolean;
  starting: Promise<StreamPosition> | undefined;
  /** The last publication delivered (or the position the stream starts after). */
  last: StreamPosition | undefined;
  /** Live publications that arrived while starting. */
  held: Publication[] | undefined;
  overflow: boolean;
  /** The subscribed connection was lost while it was held: a gap to report on return. */
  lost: boolean;
  /** Counts starts: a start that an outage overtook knows it is stale. */
  gen: number;
}

/** What RECOVER_LUA answers. */
interface Answer {
  position: StreamPosition;
  /** Redis's clock, ms. */
  now: number;
  entries: unknown[];
}

/** A Redis command that did not answer in time. */
class BrokerTimeout extends Error {}

function timed<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new BrokerTimeout(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const newEpoch = (): string => randomBytes(6).toString('base64url');

/** Connects a {@link RedisBroker}: resolves once Redis answers, rejects naming the URL. */
export async function connectRedisBroker(o: RedisBrokerOptions): Promise<RedisBroker> {
  const bad = brokerUrlProblem(o.url);
  if (bad) throw new BrokerError(`--broker ${redactUrl(o.url)}: ${bad}`);
  const { createClient, RESP_TYPES } = await import('@redis/client');
  const { createHash } = await import('node:crypto');
  const commandTimeout = o.commandTimeout ?? 2000;
  const options = {
    url: o.url,
    // Fail fast while Redis is away: nothing waits in an unbounded queue.
    disableOfflineQueue: true,
    commandsQueueMaxLength: 10_000,
    socket: {
      connectTimeout: Math.max(commandTimeout, 1000),
      reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 1000),
    },
  };
  const cmd = createClient(options) as unknown as RedisConn;
  // The subscribed connection keeps its SUBSCRIBE/UNSUBSCRIBE commands across a reconnect
  // (node-redis subscribes again to every channel it holds before it says ready).
  const sub = o.publishOnly
    ? undefined
    : (createClient({ ...options, disableOfflineQueue: false }) as unknown as RedisConn);
  const sha = (lua: string): Script => ({
    lua,
    sha: createHash('sha1').update(lua).digest('hex'),
  });
  const broker = new RedisBroker(o, cmd, sub, {
    publish: sha(PUBLISH_LUA),
    recover: sha(RECOVER_LUA),
    buffers: { [RESP_TYPES.BLOB_STRING]: Buffer },
  });
  await broker.start();
  return broker;
}

/** The Redis broker of a wsdrain process, from its options (`--broker`, the history flags). */
export function redisBrokerOptions(
  options: Pick<WsdrainOptions, 'brokerUrl' | 'historySize' | 'historyTtl'>,
  log: Logger,
  publishOnly = false,
): RedisBrokerOptions {
  return {
    url: options.brokerUrl ?? '',
    historySize: options.historySize,
    historyTtl: options.historyTtl,
    publishOnly,
    log,
  };
}

export class RedisBroker implements Broker {
  onPublication: ((pub: Publication) => void) | undefined;
  onGap: ((topic: string) => void) | undefined;
  onPublishTime: ((seconds: number) => void) | undefined;
  readonly url: string;
  readonly #o: RedisBrokerOptions;
  readonly #cmd: RedisConn;
  readonly #sub: RedisConn | undefined;
  readonly #scripts: { publish: Script; recover: Script; buffers: object };
  readonly #topics = new Map<string, TopicState>();
  readonly #byChannel = new Map<string, TopicState>();
  readonly #log: Logger | undefined;
  readonly #prefix: string;
  readonly #metaTtl: number;
  readonly #maxReplay: number;
  readonly #timeout: number;
  #healthy = false;
  #started = false;
  #closed = false;
  #hung = false;
  #subLost = false;
  #lastError = '';
  #timers: NodeJS.Timeout[] = [];
  #stats = { errors: 0, losses: 0, publishFailures: 0, gaps: 0 };

  /** Use {@link connectRedisBroker}. */
  constructor(
    o: RedisBrokerOptions,
    cmd: RedisConn,
    sub: RedisConn | undefined,
    scripts: { publish: Script; recover: Script; buffers: object },
  ) {
    this.#o = o;
    this.url = redactUrl(o.url);
    this.#cmd = cmd;
    this.#sub = sub;
    this.#scripts = scripts;
    this.#log = o.log;
    this.#prefix = o.prefix ?? 'wsdrain:';
    this.#metaTtl = o.metaTtl ?? Math.max(86_400_000, 2 * o.historyTtl);
    this.#maxReplay = Math.min(o.maxReplay ?? o.historySize, o.historySize);
    this.#timeout = o.commandTimeout ?? 2000;
    for (const [name, conn] of [
      ['commands', cmd],
      ['subscriber', sub],
    ] as const) {
      if (!conn) continue;
      // Redis errors never crash a worker: every error is counted, logged once per outage.
      conn.on('error', (err: Error & { code?: string }) => this.#onError(name, err));
      conn.on('ready', () => this.#update());
      conn.on('reconnecting', () => this.#update());
      conn.on('end', () => this.#update());
    }
  }

  /** Connects both connections within `startTimeout`, or rejects naming the URL. */
  async start(): Promise<void> {
    const ms = this.#o.startTimeout ?? 3000;
    const conns = [this.#cmd, this.#sub].filter((c): c is RedisConn => c !== undefined);
    try {
      await timed(Promise.all(conns.map((c) => c.connect())), ms, 'connect');
    } catch (err) {
      for (const c of conns) c.destroy();
      const why = this.#lastError || (err as Error).message;
      throw new BrokerError(`cannot reach the broker at ${this.url} within ${ms} ms: ${why}`);
    }
    this.#started = true;
    this.#update();
    const ping = setInterval(() => this.#ping(), this.#o.pingInterval ?? 1000);
    const refresh = setInterval(() => this.#refreshMeta(), Math.min(this.#metaTtl / 4, 3_600_000));
    ping.unref();
    refresh.unref();
    this.#timers.push(ping, refresh);
    this.#log?.info({ broker: this.url }, `broker: ${this.url}`);
  }

  /** True while both connections are up and Redis answers. */
  get healthy(): boolean {
    return this.#healthy;
  }

  stats(): BrokerStats {
    return { connected: this.#healthy, ...this.#stats };
  }

  #key(topic: string, kind: 'meta' | 'stream' | 'live'): string {
    return `${this.#prefix}{${topic}}:${kind}`;
  }

  #unavailable(): Error {
    return new Error(
      `the broker at ${this.url} is unavailable${this.#lastError ? ` (${this.#lastError})` : ''}`,
    );
  }

  #onError(name: string, err: Error & { code?: string }): void {
    this.#stats.errors++;
    const why = err.code ?? err.message;
    // One warning per outage; the reconnect attempts that follow are debug lines.
    if (this.#healthy || why !== this.#lastError) {
      this.#log?.warn({ broker: this.url, connection: name, err: why }, `broker error: ${why}`);
    } else {
      this.#log?.debug({ broker: this.url, connection: name, err: why }, 'broker error');
    }
    this.#lastError = why;
    this.#update();
  }

  /** Recomputes `healthy`; a return after the subscribed connection was lost reports the gaps. */
  #update(): void {
    if (!this.#started) return;
    const subUp = this.#sub?.isReady ?? true;
    if (!subUp && !this.#subLost && !this.#closed) {
      // Publications may go by unseen from now on: no topic's live stream can be trusted.
      this.#subLost = true;
      for (const t of this.#topics.values()) {
        t.lost = true;
        t.phase = 'stale';
        t.held = undefined;
        t.last = undefined;
      }
    }
    const ok = !this.#closed && !this.#hung && this.#cmd.isReady && subUp;
    if (ok === this.#healthy) return;
    this.#healthy = ok;
    if (!ok) {
      if (this.#closed) return;
      this.#stats.losses++;
      this.#log?.warn(
        { broker: this.url, err: this.#lastError || undefined },
        'broker lost: publications fail until it is back; connections stay up',
      );
      return;
    }
    this.#lastError = '';
    const lost = this.#subLost ? [...this.#topics.values()].filter((t) => t.lost) : [];
    this.#subLost = false;
    this.#log?.info(
      { broker: this.url, topics: lost.length },
      `broker back: ${lost.length} topics resync`,
    );
    for (const t of lost) {
      t.lost = false;
      if (t.count > 0) this.#gap(t);
    }
  }

  /** A PING that does not answer in time marks the broker away (a hung Redis, a dead link). */
  #pinging = false;
  #ping(): void {
    if (this.#pinging || this.#closed || !this.#cmd.isReady) return;
    this.#pinging = true;
    this.#call(['PING'])
      .then(
        () => {
          this.#hung = false;
        },
        (err: unknown) => {
          this.#hung = true;
          this.#lastError = (err as Error).message;
        },
      )
      .finally(() => {
        this.#pinging = false;
        this.#update();
      });
  }

  #refreshMeta(): void {
    if (!this.#healthy) return;
    for (const t of this.#topics.values()) {
      this.#call(['PEXPIRE', t.meta, String(this.#metaTtl)]).catch(() => {});
    }
  }

  #call(args: ReadonlyArray<string | Buffer>): Promise<unknown> {
    const what = String(args[0]);
    return timed(
      this.#cmd.sendCommand(args, { typeMapping: this.#scripts.buffers }),
      this.#timeout,
      what,
    );
  }

  /**
   * EVALSHA, and EVAL when Redis does not have the script (a restart flushes them). `ordered`:
   * always EVAL. EVALSHA calls sent one behind the other can run out of order when Redis
   * lacks the script: the first fails (NOSCRIPT) and is sent again, and a later one that
   * arrives once the script is back (loaded by that retry or by another process) runs first.
   * Publications must keep their order; Redis hashes the script and runs the cached one.
   */
  async #script(
    s: Script,
    keys: string[],
    args: ReadonlyArray<string | Buffer>,
    ordered = false,
  ): Promise<unknown> {
    const tail = [String(keys.length), ...keys, ...args];
    if (ordered) return this.#call(['EVAL', s.lua, ...tail]);
    try {
      return await this.#call(['EVALSHA', s.sha, ...tail]);
    } catch (err) {
      if (!/^NOSCRIPT/.test((err as Error).message)) throw err;
      return this.#call(['EVAL', s.lua, ...tail]);
    }
  }

  #failed(err: unknown): Error {
    this.#stats.errors++;
    if (err instanceof BrokerTimeout) {
      // No answer: treat Redis as away until a PING answers again.
      this.#hung = true;
      this.#update();
    }
    return new Error(`the broker at ${this.url} failed: ${(err as Error).message}`);
  }

  async publish(topic: string, data: PublishData): Promise<PublishAck> {
    if (!this.#healthy) {
      this.#stats.publishFailures++;
      throw new PublishError(this.#unavailable().message);
    }
    const t0 = performance.now();
    let reply: unknown;
    try {
      reply = await this.#script(
        this.#scripts.publish,
        [this.#key(topic, 'meta'), this.#key(topic, 'stream')],
        [
          encodeData(data),
          String(this.#o.historySize),
          String(this.#o.historyTtl),
          String(this.#metaTtl),
          newEpoch(),
          this.#key(topic, 'live'),
        ],
        true,
      );
    } catch (err) {
      this.#stats.publishFailures++;
      throw new PublishError(this.#failed(err).message);
    }
    this.onPublishTime?.((performance.now() - t0) / 1000);
    const [offset, epoch] = reply as [number, Buffer];
    return { topic, offset: Number(offset), epoch: epoch.toString('latin1') };
  }

  interest(topic: string): Promise<StreamPosition> {
    if (!this.#sub) return Promise.reject(new Error('this broker only publishes'));
    if (!this.#healthy) return Promise.reject(this.#unavailable());
    let t = this.#topics.get(topic);
    if (!t) {
      t = {
        topic,
        channel: this.#key(topic, 'live'),
        meta: this.#key(topic, 'meta'),
        stream: this.#key(topic, 'stream'),
        count: 0,
        phase: 'stale',
        subscribed: false,
        starting: undefined,
        last: undefined,
        held: undefined,
        overflow: false,
        lost: false,
        gen: 0,
      };
      this.#topics.set(topic, t);
      this.#byChannel.set(t.channel, t);
    }
    t.count++;
    if (t.phase === 'live' && t.last) return Promise.resolve({ ...t.last });
    if (t.phase === 'stale') t.starting = this.#start(t);
    const state = t;
    return (t.starting as Promise<StreamPosition>).catch((err: unknown) => {
      this.#release(state);
      throw err;
    });
  }

  /** SUBSCRIBE, then the position; the publications held meanwhile that come after it follow. */
  async #start(t: TopicState): Promise<StreamPosition> {
    t.phase = 'starting';
    t.held = [];
    t.overflow = false;
    t.last = undefined;
    const gen = ++t.gen;
    let position: StreamPosition;
    try {
      // Every start asks: node-redis sends nothing when the channel is subscribed already (and
      // subscribes again after a reconnect before it says ready), and a SUBSCRIBE that failed
      // with a dropped connection is sent again.
      t.subscribed = true;
      await timed(
        (this.#sub as RedisConn).subscribe(t.channel, this.#onMessage, true),
        this.#timeout,
        'SUBSCRIBE',
      );
      position = this.#position(
        await this.#script(
          this.#scripts.recover,
          [t.meta, t.stream],
          ['-1', '0', newEpoch(), String(this.#metaTtl)],
        ),
      ).position;
    } catch (err) {
      if (t.phase === 'starting' && t.gen === gen) {
        t.phase = 'stale';
        t.held = undefined;
      }
      throw this.#failed(err);
    }
    // The subscribed connection dropped meanwhile: what it missed is unknown.
    if (t.phase !== 'starting' || t.gen !== gen) throw this.#unavailable();
    const held = (t.held ?? []).sort((a, b) => a.offset - b.offset);
    t.held = undefined;
    t.phase = 'live';
    t.last = position;
    let hole = t.overflow;
    for (const pub of held) {
      if (hole) break;
      hole = !this.#accept(t, pub);
    }
    // Reported once the caller has its position (after the promise's own callbacks).
    if (hole) setImmediate(() => t.phase === 'live' && this.#gap(t));
    return { ...position };
  }

  drop(topic: string): void {
    const t = this.#topics.get(topic);
    if (t) this.#release(t);
  }

  #release(t: TopicState): void {
    t.count = Math.max(0, t.count - 1);
    if (t.count > 0 || this.#topics.get(t.topic) !== t) return;
    this.#topics.delete(t.topic);
    this.#byChannel.delete(t.channel);
    t.phase = 'stale';
    if (t.subscribed && this.#sub) {
      t.subscribed = false;
      this.#sub.unsubscribe(t.channel, this.#onMessage, true).catch(() => {});
    }
  }

  /** Delivers `pub` if it is the next one; skips a duplicate; false on a hole or a new epoch. */
  #accept(t: TopicState, pub: Publication): boolean {
    const last = t.last as StreamPosition;
    if (pub.epoch !== last.epoch) return false;
    if (pub.offset <= last.offset) return true;
    if (pub.offset !== last.offset + 1) return false;
    t.last = { offset: pub.offset, epoch: pub.epoch };
    this.onPublication?.(pub);
    return true;
  }

  /** The live stream of `t` has a hole: the worker resyncs its subscribers. */
  #gap(t: TopicState): void {
    t.phase = 'stale';
    t.last = undefined;
    t.held = undefined;
    this.#stats.gaps++;
    this.#log?.warn({ broker: this.url, topic: t.topic }, `topic ${t.topic}: gap; resync`);
    this.onGap?.(t.topic);
  }

  readonly #onMessage: Listener = (message, channel) => {
    const t = this.#byChannel.get(channel.toString());
    if (!t || t.phase === 'stale') return;
    let pub: Publication;
    try {
      pub = parseLive(t.topic, message);
    } catch (err) {
      this.#stats.errors++;
      this.#log?.error({ topic: t.topic, err: (err as Error).message }, 'unreadable publication');
      if (t.phase === 'live') this.#gap(t);
      else t.overflow = true;
      return;
    }
    if (t.phase === 'starting') {
      const held = t.held as Publication[];
      if (held.length < (this.#o.maxHeld ?? 10_000)) held.push(pub);
      else t.overflow = true;
      return;
    }
    if (!this.#accept(t, pub)) this.#gap(t);
  };

  #position(reply: unknown): Answer {
    const [top, epoch, now, entries] = reply as [number, Buffer, number, unknown[]];
    return {
      position: { offset: Number(top), epoch: epoch.toString('latin1') },
      now: Number(now),
      entries,
    };
  }

  async recover(topic: string, since: StreamPosition): Promise<Recovery> {
    if (!this.#healthy) throw this.#unavailable();
    let answer: Answer;
    try {
      answer = this.#position(
        await this.#script(
          this.#scripts.recover,
          [this.#key(topic, 'meta'), this.#key(topic, 'stream')],
          [String(since.offset), String(this.#maxReplay), newEpoch(), String(this.#metaTtl)],
        ),
      );
    } catch (err) {
      throw this.#failed(err);
    }
    const { position, now, entries } = answer;
    const no: Recovery = { recovered: false, position, publications: [] };
    if (since.epoch !== position.epoch || since.offset > position.offset) return no;
    const missed = position.offset - since.offset;
    if (missed === 0) return { recovered: true, position, publications: [] };
    if (missed > this.#maxReplay || entries.length !== missed) return no;
    const publications: Publication[] = [];
    for (const [i, entry] of entries.entries()) {
      const pub = parseEntry(topic, position.epoch, entry);
      if (!pub || pub.offset !== since.offset + 1 + i) return no;
      publications.push(pub);
    }
    // The oldest one must still be within --history-ttl (the stream's TTL counts from the
    // last publication, not from each entry).
    if ((publications[0]?.at ?? 0) < now - this.#o.historyTtl) return no;
    return { recovered: true, position, publications };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#healthy = false;
    for (const t of this.#timers) clearInterval(t);
    const conns = [this.#cmd, this.#sub].filter((c): c is RedisConn => c !== undefined);
    await Promise.all(
      conns.map((c) =>
        timed(c.close(), this.#timeout, 'close').catch(() => {
          c.destroy();
        }),
      ),
    );
  }
}

/** A live message: "<offset>:<epoch>:<ms>:" then the data. */
function parseLive(topic: string, message: Buffer): Publication {
  const a = message.indexOf(58);
  const b = a < 0 ? -1 : message.indexOf(58, a + 1);
  const c = b < 0 ? -1 : message.indexOf(58, b + 1);
  if (c < 0) throw new Error('no offset, epoch and time');
  const offset = Number(message.toString('latin1', 0, a));
  const at = Number(message.toString('latin1', b + 1, c));
  if (!Number.isSafeInteger(offset) || offset < 1) throw new Error('bad offset');
  return {
    topic,
    offset,
    epoch: message.toString('latin1', a + 1, b),
    at,
    data: decodeData(message.subarray(c + 1)),
  };
}

/** A stream entry [id, [field, value, ...]], or undefined when it is not one of ours. */
function parseEntry(topic: string, epoch: string, entry: unknown): Publication | undefined {
  if (!Array.isArray(entry) || entry.length !== 2 || !Array.isArray(entry[1])) return undefined;
  const id = String(entry[0]);
  const offset = Number(id.slice(0, id.indexOf('-')));
  const fields = entry[1] as Buffer[];
  let data: Buffer | undefined;
  let at = 0;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = String(fields[i]);
    if (name === 'd') data = fields[i + 1];
    else if (name === 't') at = Number(String(fields[i + 1]));
  }
  if (!data || !Number.isSafeInteger(offset)) return undefined;
  try {
    return { topic, offset, epoch, at, data: decodeData(data) };
  } catch {
    return undefined;
  }
}
