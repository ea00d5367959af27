/**
 * The broker as a worker sees it: publish, be told about a topic, recover a gap. The embedded
 * broker keeps its sequencer (./sequencer.ts) in the primary and talks to workers over the
 * cluster's IPC channel; a single process (`--workers 0`) holds it itself.
 *
 * Ordering: the primary answers a worker and sends it publications over one channel, in
 * order. The answer to `interest` gives the position the worker's stream of that topic
 * starts after; the answer to `recover` holds every publication up to the position it names,
 * and live publications after it follow it on the channel. That is what lets a worker replay
 * a gap and switch to live delivery without a hole or a duplicate.
 */
import type { StreamPosition } from '../wire.js';
import { type Publication, type Recovery, Sequencer } from './sequencer.js';
import type { PublishAck, PublishData } from './types.js';

export type { Publication, Recovery };

/**
 * What a worker needs of a broker. The contract every broker keeps:
 *
 * - Offsets of a topic are 1, 2, 3, ... within an epoch, assigned by one sequencer (never by a
 *   worker); a new epoch means the stream was lost and restarted.
 * - After `interest(topic)` resolves with a position, `onPublication` receives every later
 *   publication of that topic, in offset order, each once: none at or below the position.
 *   Interests are counted: each `interest` call is ended by one `drop`, and publications keep
 *   coming while any is left (a worker may ask again before the drop of an earlier one).
 * - `recover(topic, since)` is all or nothing: every publication after `since` (up to the
 *   position it returns), or `recovered: false`.
 * - When a broker cannot keep the second promise (it lost its connection and publications
 *   may have gone by), it calls `onGap(topic)` for each topic it was told about: the worker
 *   then makes its subscribers recover (wsdrain.v1 clients resubscribe `since` their last
 *   offset), and asks `interest` again.
 * - `publish` rejects, fast, when the broker is away: nothing is queued without bound.
 */
export interface Broker {
  /** Sequences a publication and sends it to every interested worker. */
  publish(topic: string, data: PublishData): Promise<PublishAck>;
  /** This worker wants `topic`: resolves with the position its live stream starts after. */
  interest(topic: string): Promise<StreamPosition>;
  /** This worker no longer wants `topic`. */
  drop(topic: string): void;
  /** Every publication after `since`, or `recovered: false`. */
  recover(topic: string, since: StreamPosition): Promise<Recovery>;
  /** Receives the live publications of the topics this worker wants. */
  onPublication: ((pub: Publication) => void) | undefined;
  /** Told when the live stream of a topic may have a hole (see the contract above). */
  onGap?: ((topic: string) => void) | undefined;
  /** False while the broker is away (publications fail, /readyz says 503). */
  readonly healthy?: boolean;
  /** Stops: connections closed, timers cleared. */
  close?(): Promise<void>;
  /** What a remote broker counts (read when metrics are scraped). */
  stats?(): BrokerStats;
  /** Told how long each publish took, in seconds (a remote broker's round trip). */
  onPublishTime?: ((seconds: number) => void) | undefined;
}

/** Counts of a remote broker, over the life of its process. */
export interface BrokerStats {
  /** Whether it is reachable now. */
  connected: boolean;
  /** Errors: connection errors and failed commands. */
  errors: number;
  /** Times it went away (connected turned false). */
  losses: number;
  /** Publications refused or failed (the publisher was told). */
  publishFailures: number;
  /** Topics whose live stream had a hole (told to resync). */
  gaps: number;
}

/** The embedded broker of a single process: the sequencer is right here. */
export class LocalBroker implements Broker {
  onPublication: ((pub: Publication) => void) | undefined;
  readonly #seq: Sequencer;

  constructor(seq: Sequencer) {
    this.#seq = seq;
  }

  /** A broker with a sequencer of its own (a single process: nothing is shared). */
  static standalone(history: { historySize: number; historyTtl: number }): LocalBroker {
    const local: LocalBroker = new LocalBroker(
      new Sequencer({ ...history, deliver: (_to, pub) => local.deliver(pub) }),
    );
    return local;
  }

  get sequencer(): Sequencer {
    return this.#seq;
  }

  /** Where the sequencer delivers (party 0 is this process). */
  deliver(pub: Publication): void {
    this.onPublication?.(pub);
  }

  async publish(topic: string, data: PublishData): Promise<PublishAck> {
    const { offset, epoch } = this.#seq.publish(topic, data);
    return { topic, offset, epoch };
  }

  async interest(topic: string): Promise<StreamPosition> {
    return this.#seq.interest(topic, 0);
  }

  drop(topic: string): void {
    this.#seq.drop(topic, 0);
  }

  async recover(topic: string, since: StreamPosition): Promise<Recovery> {
    return this.#seq.recover(topic, since);
  }
}

/** A request from a worker to the primary's broker. */
export type BrokerRequest =
  | { op: 'publish'; topic: string; data: PublishData }
  | { op: 'interest'; topic: string }
  | { op: 'drop'; topic: string }
  | { op: 'recover'; topic: string; since: StreamPosition };

/** Answers a worker's request with the primary's sequencer (party = the worker's id). */
export function answerBroker(seq: Sequencer, party: number, req: BrokerRequest): unknown {
  switch (req.op) {
    case 'publish': {
      const { offset, epoch } = seq.publish(req.topic, req.data);
      return { topic: req.topic, offset, epoch };
    }
    case 'interest':
      return seq.interest(req.topic, party);
    case 'drop':
      seq.drop(req.topic, party);
      return null;
    case 'recover':
      return seq.recover(req.topic, req.since);
  }
}

/** The embedded broker of a cluster worker: requests to the primary over IPC. */
export class IpcBroker implements Broker {
  onPublication: ((pub: Publication) => void) | undefined;
  readonly #send: (id: number, req: BrokerRequest) => boolean;
  readonly #waiting = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();
  #next = 1;

  /** `send` posts a request to the primary; false when the primary is gone. */
  constructor(send: (id: number, req: BrokerRequest) => boolean) {
    this.#send = send;
  }

  #ask<T>(req: BrokerRequest): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      if (!this.#send(id, req)) {
        this.#waiting.delete(id);
        reject(new Error('the primary is gone: no broker'));
      }
    });
  }

  /** The primary's answer to request `id`. */
  answer(id: number, ok: boolean, value: unknown): void {
    const w = this.#waiting.get(id);
    if (!w) return;
    this.#waiting.delete(id);
    if (ok) w.resolve(value);
    else w.reject(new Error(String(value)));
  }

  /** A publication from the primary. */
  deliver(pub: Publication): void {
    this.onPublication?.(pub);
  }

  /** The primary is gone: every request waiting fails. */
  fail(why: string): void {
    for (const w of this.#waiting.values()) w.reject(new Error(why));
    this.#waiting.clear();
  }

  publish(topic: string, data: PublishData): Promise<PublishAck> {
    return this.#ask({ op: 'publish', topic, data });
  }

  interest(topic: string): Promise<StreamPosition> {
    return this.#ask({ op: 'interest', topic });
  }

  drop(topic: string): void {
    const id = this.#next++;
    this.#send(id, { op: 'drop', topic });
  }

  recover(topic: string, since: StreamPosition): Promise<Recovery> {
    return this.#ask({ op: 'recover', topic, since });
  }
}
