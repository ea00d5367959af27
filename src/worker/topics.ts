/**
 * Topics on one worker: who is subscribed here, and every publication the broker hands this
 * worker delivered to each of them once, in offset order.
 *
 * - The worker tells the broker it wants a topic before its first local subscriber and lets
 *   go after its last one; the broker then sends it every publication of the topic.
 * - A publication is encoded and framed once per worker (once as a wsdrain.v1 `pub`, once as
 *   a plain message, each only if someone here needs it) and the same bytes are written to
 *   every subscriber; writes are corked until the end of the event-loop turn, so a socket gets
 *   everything due to it in one system call. A subscriber that does not read is bounded by
 *   --max-buffered like any client and never holds the others back.
 * - Recovery (wsdrain.v1 `subscribe` with `since`): the subscriber starts buffering live
 *   publications, the broker is asked for what came after `since`, and once it answers the
 *   client gets `subscribed`, the missed publications, then what was buffered, skipping any
 *   offset it has already had: no gap, no duplicate. `recovered: false` when the broker
 *   cannot cover the gap (history too short, another epoch).
 */
import type { Broker, Publication } from '../app/broker.js';
import type { Logger } from '../log.js';
import { PROTOCOL_V1, payloadField, type StreamPosition } from '../wire.js';
import { type Frame, frameOf } from './socket.js';

/** What the topics need of a connection. */
export interface Subscriber {
  readonly id: string;
  readonly protocol: string;
  /** Its subscriptions (created on the first one). */
  subs: Map<string, Subscription> | undefined;
  readonly open: boolean;
}

/** One connection's subscription to one topic. */
export interface Subscription {
  /** The last offset sent to this client (wsdrain.v1: it must never go back). */
  sent: number;
  epoch: string;
  /** Live publications held back while a recovery is under way. */
  buffer: Publication[] | undefined;
}

interface TopicHere<S extends Subscriber> {
  /** The last publication seen here (undefined until the broker has answered). */
  position: StreamPosition | undefined;
  /** The broker's answer: where this worker's stream of the topic starts after. */
  ready: Promise<StreamPosition>;
  subscribers: Set<S>;
}

export interface TopicsOptions<S extends Subscriber> {
  log: Logger;
  broker: Broker;
  /** Most topics one connection may subscribe to. */
  maxTopics: number;
  /** Writes a frame built once (corked until the end of the turn); false if `conn` is closing. */
  write: (conn: S, frame: Frame) => boolean;
  /** Sends one wsdrain.v1 control message (subscribed, unsubscribed, error). */
  control: (conn: S, message: object) => void;
  /** Asks a plain client to reconnect (it missed publications it cannot recover). */
  reconnect: (conn: S) => void;
}

/** Why a subscription was refused. */
export class TopicError extends Error {
  readonly code: 'too_many_topics' | 'unavailable';
  constructor(code: 'too_many_topics' | 'unavailable', message: string) {
    super(message);
    this.code = code;
  }
}

export class Topics<S extends Subscriber> {
  readonly #o: TopicsOptions<S>;
  readonly #here = new Map<string, TopicHere<S>>();
  /** Publications delivered to sockets, over the worker's life. */
  deliveries = 0;
  /** Subscriptions `since` a position: recovered, or told they could not be. */
  recovered = 0;
  notRecovered = 0;

  constructor(o: TopicsOptions<S>) {
    this.#o = o;
    o.broker.onPublication = (pub) => this.#live(pub);
    o.broker.onGap = (topic) => this.resync(topic);
  }

  /** Topics with a subscriber on this worker. */
  get size(): number {
    return this.#here.size;
  }

  /** Subscriptions on this worker, over every topic. */
  get subscriptions(): number {
    let n = 0;
    for (const here of this.#here.values()) n += here.subscribers.size;
    return n;
  }

  /**
   * Subscribes `conn` to `topic`: from now on, or, given `since`, from there (recovery). Live
   * publications are held back until the client has its answer (and what it missed).
   */
  async subscribe(
    conn: S,
    topic: string,
    since?: StreamPosition,
    id?: number | string,
  ): Promise<void> {
    const v1 = conn.protocol === PROTOCOL_V1;
    const had = conn.subs?.get(topic);
    if (had) {
      // Already subscribed: say so again, with where it stands.
      if (v1)
        this.#o.control(conn, {
          type: 'subscribed',
          topic,
          offset: had.sent,
          epoch: had.epoch,
          ...idOf(id),
        });
      return;
    }
    if ((conn.subs?.size ?? 0) >= this.#o.maxTopics) {
      throw new TopicError('too_many_topics', `at most ${this.#o.maxTopics} topics per connection`);
    }
    const sub: Subscription = { sent: 0, epoch: '', buffer: [] };
    conn.subs ??= new Map();
    conn.subs.set(topic, sub);
    const here = this.#join(topic, conn);
    // "Now": where the topic stands on this worker, or, if it is new here, where the broker
    // says its stream starts for this worker.
    const known = here.position;
    let start: StreamPosition;
    let recovery: Awaited<ReturnType<Broker['recover']>> | undefined;
    try {
      start = known ?? (await here.ready);
      if (since && (since.epoch !== start.epoch || since.offset !== start.offset)) {
        recovery = await this.#o.broker.recover(topic, since);
      }
    } catch (err) {
      if (conn.subs.get(topic) === sub) conn.subs.delete(topic);
      this.#leave(topic, conn);
      throw new TopicError('unavailable', (err as Error).message);
    }
    if (!conn.open || conn.subs.get(topic) !== sub) return; // gone, or unsubscribed meanwhile
    const held = sub.buffer ?? [];
    sub.buffer = undefined;
    if (!since) {
      sub.sent = start.offset;
      sub.epoch = start.epoch;
      if (v1) this.#o.control(conn, { type: 'subscribed', topic, ...start, ...idOf(id) });
    } else if (!recovery || recovery.recovered) {
      this.recovered++;
      // Nothing missed, or every missed publication at hand.
      sub.sent = since.offset;
      sub.epoch = since.epoch;
      this.#o.control(conn, { type: 'subscribed', topic, ...since, recovered: true, ...idOf(id) });
      for (const pub of recovery?.publications ?? []) this.#send(conn, sub, pub, frameV1(pub));
    } else {
      this.notRecovered++;
      sub.sent = recovery.position.offset;
      sub.epoch = recovery.position.epoch;
      this.#o.control(conn, {
        type: 'subscribed',
        topic,
        ...recovery.position,
        recovered: false,
        ...idOf(id),
      });
    }
    for (const pub of held) {
      if (v1) this.#send(conn, sub, pub, frameV1(pub));
      else if (pub.epoch !== sub.epoch || pub.offset > sub.sent) {
        sub.sent = pub.offset;
        sub.epoch = pub.epoch;
        if (this.#o.write(conn, framePlain(pub.data))) this.deliveries++;
      }
    }
  }

  /** Ends `conn`'s subscription to `topic`; `reply` tells a wsdrain.v1 client. */
  unsubscribe(conn: S, topic: string, reply = false, id?: number | string): void {
    const had = conn.subs?.delete(topic) ?? false;
    if (had) this.#leave(topic, conn);
    if (reply && conn.protocol === PROTOCOL_V1) {
      this.#o.control(conn, { type: 'unsubscribed', topic, ...idOf(id) });
    }
  }

  /**
   * The broker's stream of `topic` may have a hole: every subscriber here is unsubscribed and
   * the worker's interest ends, to be asked again by the next subscribe. wsdrain.v1 clients
   * are asked to resubscribe `since` their position, and recover; a plain client cannot, so it
   * is closed with a restart code and a hint (its app subscribes it again when it is back):
   * never a silent end of its topic.
   */
  resync(topic: string): void {
    const here = this.#here.get(topic);
    if (!here) return;
    this.#here.delete(topic);
    for (const conn of here.subscribers) {
      conn.subs?.delete(topic);
      if (conn.protocol === PROTOCOL_V1) {
        this.#o.control(conn, { type: 'unsubscribed', topic, resubscribe: true });
      } else {
        this.#o.reconnect(conn);
      }
    }
    here.ready.then(
      () => this.#o.broker.drop(topic),
      () => {},
    );
  }

  /** `conn` is gone: every subscription of it ends. */
  leaveAll(conn: S): void {
    if (!conn.subs) return;
    for (const topic of conn.subs.keys()) this.#leave(topic, conn);
    conn.subs.clear();
  }

  #join(topic: string, conn: S): TopicHere<S> {
    let here = this.#here.get(topic);
    if (!here) {
      const ready = this.#o.broker.interest(topic);
      const created: TopicHere<S> = { position: undefined, ready, subscribers: new Set() };
      ready.then(
        (position) => {
          // Publications may have arrived already (they start after `position`).
          created.position ??= position;
        },
        () => {
          if (this.#here.get(topic) === created) this.#here.delete(topic);
        },
      );
      here = created;
      this.#here.set(topic, here);
    }
    here.subscribers.add(conn);
    return here;
  }

  #leave(topic: string, conn: S): void {
    const here = this.#here.get(topic);
    if (!here) return;
    here.subscribers.delete(conn);
    if (here.subscribers.size === 0) {
      this.#here.delete(topic);
      here.ready.then(
        () => this.#o.broker.drop(topic),
        () => {},
      );
    }
  }

  /** A live publication: to every subscriber here, framed once per kind. */
  #live(pub: Publication): void {
    const here = this.#here.get(pub.topic);
    if (!here) return;
    here.position = { offset: pub.offset, epoch: pub.epoch };
    let v1: Frame | undefined;
    let plain: Frame | undefined;
    for (const conn of here.subscribers) {
      const sub = conn.subs?.get(pub.topic);
      if (!sub) continue;
      if (sub.buffer) {
        sub.buffer.push(pub);
        continue;
      }
      if (conn.protocol === PROTOCOL_V1) {
        v1 ??= frameV1(pub);
        this.#send(conn, sub, pub, v1);
      } else {
        plain ??= framePlain(pub.data);
        if (this.#o.write(conn, plain)) this.deliveries++;
      }
    }
  }

  /** Sends one publication to one wsdrain.v1 subscriber, never one it has had. */
  #send(conn: S, sub: Subscription, pub: Publication, frame: Frame): void {
    if (pub.epoch === sub.epoch && pub.offset <= sub.sent) return;
    sub.sent = pub.offset;
    sub.epoch = pub.epoch;
    if (this.#o.write(conn, frame)) this.deliveries++;
  }
}

function idOf(id: number | string | undefined): { id?: number | string } {
  return id === undefined ? {} : { id };
}

/** A publication as a wsdrain.v1 `pub` message, framed. */
export function frameV1(pub: Publication): Frame {
  return frameOf(
    JSON.stringify({
      type: 'pub',
      topic: pub.topic,
      offset: pub.offset,
      epoch: pub.epoch,
      ...payloadField(pub.data),
    }),
  );
}

/** Data as a plain client gets it: text, bytes, or a JSON value's text. */
export function framePlain(data: unknown): Frame {
  if (data instanceof Uint8Array) return frameOf(data);
  return frameOf(typeof data === 'string' ? data : JSON.stringify(data));
}
