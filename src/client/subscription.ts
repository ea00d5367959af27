/**
 * One topic subscription of `wsdrain/client` (wsdrain.v1): where the client stands in the
 * topic's stream, and the rules that keep it there across reconnects.
 *
 *     subscribing ──subscribed──▶ subscribed ──pub (next offset)──▶ onMessage, position moves
 *          ▲                          │
 *          └── reconnect, gap, other epoch, resubscribe asked, onMessage threw (after a backoff)
 *
 *     any state ──unsubscribe(), a refusal, client.close()──▶ closed
 *
 * - The position is the offset and epoch of the last publication `onMessage` returned from
 *   (or, before the first, where the server said the stream started). It moves only once the
 *   handler has returned: a handler that throws has not handled its publication.
 * - Every (re)subscription asks `since` the position, so the server replays what was missed
 *   or answers `recovered: false`, which is reported (`onUnrecovered` and the client's
 *   'unrecovered' event): never a silent hole.
 * - Live publications are checked against the position: at or below it is a duplicate
 *   (skipped); a gap or another epoch means resubscribing `since` the position. While a
 *   (re)subscription is under way, publications are not handed on: the answer's replay
 *   covers them.
 *
 * No Node imports: browsers load this module too.
 */
import { payloadOf, type StreamPosition, type WireErrorCode } from '../wire.js';

/** Where a publication stands: its topic, offset and epoch. */
export interface PublicationInfo extends StreamPosition {
  topic: string;
}

/**
 * Receives a topic's publications, in order; each is handled (returned from) at most once.
 * `data` is what was published: a JSON value (a string stays a string), or a `Uint8Array`
 * for bytes.
 */
export type PublicationHandler = (data: unknown, info: PublicationInfo) => void;

/** Payload of the 'subscribed' event and `onSubscribed`: the server's answer. */
export interface SubscribedEvent extends StreamPosition {
  topic: string;
  /**
   * `true` when the client asked `since` a position and got everything after it (replayed
   * right after this answer); `false` when it could not (see {@link UnrecoveredEvent});
   * `undefined` for a subscription from "now" (no position yet).
   */
  recovered: boolean | undefined;
}

/**
 * Payload of the 'unrecovered' event and `onUnrecovered`: publications after `since` are
 * gone for this client (history too short, or the stream restarted under another epoch).
 * The subscription goes on from `position`; reload whatever state the topic feeds.
 */
export interface UnrecoveredEvent {
  topic: string;
  /** The client's position: the last publication it handled. */
  since: StreamPosition;
  /** Where the subscription resumes: the topic's last offset and its epoch. */
  position: StreamPosition;
  /** `'epoch'`: the stream restarted (or another host's); `'history'`: too far behind. */
  reason: 'epoch' | 'history';
}

/** Options of {@link WsdrainClient.subscribe}. */
export interface SubscribeOptions {
  /**
   * Start after this position (one saved from {@link Subscription.position}, e.g. across a
   * page reload) instead of from now.
   * @default undefined (from now)
   */
  since?: StreamPosition;
  /** Called on every answer to a (re)subscription. */
  onSubscribed?: (event: SubscribedEvent) => void;
  /** Called when publications this subscription missed cannot be replayed. */
  onUnrecovered?: (event: UnrecoveredEvent) => void;
  /** Called when the server refuses the subscription for good (it is then closed). */
  onError?: (error: WsdrainClientError) => void;
}

/** `'subscribing'`, `'subscribed'`, or `'closed'` (for good). */
export type SubscriptionState = 'subscribing' | 'subscribed' | 'closed';

/** What {@link WsdrainClient.subscribe} returns. */
export interface Subscription {
  readonly topic: string;
  readonly state: SubscriptionState;
  /**
   * The offset and epoch of the last publication handled (or where the stream started for
   * this subscription); undefined until the first answer. Save it to resume with `since`.
   */
  readonly position: StreamPosition | undefined;
  /** Ends the subscription (the server is told when connected). Calling it again does nothing. */
  unsubscribe(): void;
}

/**
 * Codes of {@link WsdrainClientError}: the server's (`bad_request`, `bad_topic`, `forbidden`,
 * `too_large`, `too_many_topics`, `unavailable`) and the client's own: `disconnected` (the
 * connection closed before the answer: a publication may or may not have been made),
 * `dropped` (a queued publication pushed out by `maxQueued`), `closed` (the client closed).
 */
export type WsdrainClientErrorCode = WireErrorCode | 'disconnected' | 'dropped' | 'closed';

/** A refused subscription or publication. */
export class WsdrainClientError extends Error {
  readonly code: WsdrainClientErrorCode;
  constructor(code: WsdrainClientErrorCode, message: string) {
    super(message);
    this.name = 'WsdrainClientError';
    this.code = code;
  }
}

/** What a subscription needs from its client. */
export interface SubscriptionOwner {
  /** Sends a subscribe request (with a fresh id, returned); undefined when not connected. */
  subscribe(sub: TopicSubscription, since: StreamPosition | undefined): number | undefined;
  /** Sends an unsubscribe request when connected. */
  unsubscribe(topic: string): void;
  /** Whether a connection is open. */
  readonly connected: boolean;
  /** The subscription ended: forget it. */
  forget(sub: TopicSubscription): void;
  /** The backoff delay after `failures` consecutive failures, in ms. */
  backoff(failures: number): number;
  subscribed(event: SubscribedEvent): void;
  unrecovered(event: UnrecoveredEvent): void;
  refused(error: WsdrainClientError, topic: string): void;
  /** Reports an error thrown by app code without stopping the client. */
  report(error: unknown): void;
}

/** A publication as it comes off the wire. */
export interface WirePublication extends StreamPosition {
  topic: string;
  data?: unknown;
  b64?: string;
}

const same = (a: StreamPosition, b: StreamPosition): boolean =>
  a.offset === b.offset && a.epoch === b.epoch;

export class TopicSubscription implements Subscription {
  readonly topic: string;
  readonly #onMessage: PublicationHandler;
  readonly #options: SubscribeOptions;
  readonly #owner: SubscriptionOwner;
  #state: SubscriptionState = 'subscribing';
  #position: StreamPosition | undefined;
  /** The id of the subscribe request whose answer counts, and the `since` it carried. */
  #waiting: { id: number; since: StreamPosition | undefined } | undefined;
  /** Consecutive failures (handler throws, `unavailable`) since a publication was handled. */
  #failures = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    topic: string,
    onMessage: PublicationHandler,
    options: SubscribeOptions,
    owner: SubscriptionOwner,
  ) {
    this.topic = topic;
    this.#onMessage = onMessage;
    this.#options = options;
    this.#owner = owner;
    this.#position = options.since ? { ...options.since } : undefined;
  }

  get state(): SubscriptionState {
    return this.#state;
  }

  get position(): StreamPosition | undefined {
    return this.#position ? { ...this.#position } : undefined;
  }

  unsubscribe(): void {
    if (this.#state === 'closed') return;
    this.close();
    this.#owner.forget(this);
    this.#owner.unsubscribe(this.topic);
  }

  /** Ends it without telling the server (the client is closing, or the server refused). */
  close(): void {
    this.#state = 'closed';
    this.#waiting = undefined;
    this.#clearTimer();
  }

  /** A connection opened: subscribe, `since` the position when there is one. */
  connected(): void {
    if (this.#state === 'closed') return;
    this.#clearTimer();
    this.#subscribe();
  }

  /** The connection closed: whatever was asked on it will not be answered. */
  disconnected(): void {
    if (this.#state === 'closed') return;
    this.#clearTimer();
    this.#state = 'subscribing';
    this.#waiting = undefined;
  }

  /**
   * Asks again `since` the position. `replace`: the server still holds a subscription of
   * this connection, which must end first (it would only say where it stands).
   */
  #subscribe(replace = false): void {
    this.#state = 'subscribing';
    this.#waiting = undefined;
    if (!this.#owner.connected) return; // the next connection subscribes
    if (replace) this.#owner.unsubscribe(this.topic);
    const since = this.#position;
    const id = this.#owner.subscribe(this, since);
    if (id !== undefined) this.#waiting = { id, since: since ? { ...since } : undefined };
  }

  /** The server asks for a resubscription (`unsubscribed` with `resubscribe`: it dropped us). */
  resubscribe(): void {
    if (this.#state === 'closed') return;
    this.#clearTimer();
    this.#subscribe();
  }

  /** The server's `subscribed` answer to request `id`. */
  answered(id: number, at: StreamPosition, recovered: boolean | undefined): void {
    const asked = this.#waiting;
    if (this.#state === 'closed' || !asked || asked.id !== id) return; // a stale answer
    this.#waiting = undefined;
    const since = asked.since;
    if (since && recovered === undefined && !same(at, since)) {
      // "Already subscribed": a subscription this connection had (one the app made on the
      // server) says where it stands, and what it sent before is not ours. Start afresh.
      this.#subscribe(true);
      return;
    }
    this.#state = 'subscribed';
    if (!since || recovered === false) this.#position = { offset: at.offset, epoch: at.epoch };
    const event: SubscribedEvent = { topic: this.topic, ...at, recovered };
    call(this.#options.onSubscribed, event, this.#owner);
    this.#owner.subscribed(event);
    if (since && recovered === false) {
      const lost: UnrecoveredEvent = {
        topic: this.topic,
        since,
        position: { offset: at.offset, epoch: at.epoch },
        reason: since.epoch === at.epoch ? 'history' : 'epoch',
      };
      call(this.#options.onUnrecovered, lost, this.#owner);
      this.#owner.unrecovered(lost);
    }
  }

  /** The server refused request `id`. */
  refused(id: number, error: WsdrainClientError): void {
    const asked = this.#waiting;
    if (this.#state === 'closed' || !asked || asked.id !== id) return;
    this.#waiting = undefined;
    if (error.code === 'unavailable') {
      // The broker is away for now: try again later, from the same position.
      this.#retryLater();
      return;
    }
    this.close();
    this.#owner.forget(this);
    call(this.#options.onError, error, this.#owner);
    this.#owner.refused(error, this.topic);
  }

  /** A `pub` of this topic. */
  publication(pub: WirePublication): void {
    if (this.#state !== 'subscribed') return; // the coming answer's replay covers it
    const at = this.#position!;
    if (pub.epoch === at.epoch && pub.offset <= at.offset) return; // had it already
    if (pub.epoch !== at.epoch || pub.offset !== at.offset + 1) {
      // A hole, or another stream: ask again since where this client stands.
      this.#subscribe(true);
      return;
    }
    try {
      this.#onMessage(payloadOf(pub), { topic: this.topic, offset: pub.offset, epoch: pub.epoch });
    } catch (error) {
      // Not handled: it comes again, with what follows it, after a backoff.
      this.#owner.report(error);
      if (this.state === 'subscribed') this.#retryLater();
      return;
    }
    // The handler may have ended the subscription (the getter: TS cannot see the change).
    if (this.state === 'closed') return;
    this.#position = { offset: pub.offset, epoch: pub.epoch };
    this.#failures = 0;
  }

  /** Holds publications back, and resubscribes `since` the position after a backoff. */
  #retryLater(): void {
    this.#state = 'subscribing';
    this.#clearTimer();
    const delay = this.#owner.backoff(this.#failures++);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#state === 'subscribing' && !this.#waiting) this.#subscribe(true);
    }, delay);
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

function call<T>(fn: ((e: T) => void) | undefined, e: T, owner: SubscriptionOwner): void {
  if (!fn) return;
  try {
    fn(e);
  } catch (error) {
    owner.report(error);
  }
}
