/**
 * The embedded broker's heart: one sequencer for every topic of the host, in the primary (or
 * the single process), where a worker's roll does not lose it.
 *
 * - Each publication of a topic gets the next offset (1, 2, 3, ...) within the topic's epoch,
 *   a random string made when the topic's stream starts (this process started, or the topic
 *   was forgotten): a client that saw another epoch is told it cannot recover.
 * - History: the last --history-size publications of each topic, none older than
 *   --history-ttl. The offset and epoch outlive the history (kept while anyone is interested,
 *   and for a further --history-ttl after the last publication), so a client far behind gets
 *   a clear "no" rather than a counter that silently started again.
 * - Recovery is all or nothing: the epoch must match and history must hold every offset after
 *   the client's; otherwise `recovered: false` and no publications.
 * - Interest: who gets a topic's publications (cluster workers, by id). A worker registers
 *   its interest before its first local subscriber and gets the topic's position back: every
 *   later publication reaches it, in order. Interests are counted: each `interest` is ended
 *   by one `drop`, so a worker that asks again before the drop of its previous interest has
 *   arrived (its last subscriber left and a new one came at once) keeps getting them.
 */
import { randomBytes } from 'node:crypto';
import type { StreamPosition } from '../wire.js';
import type { PublishData } from './types.js';

/** One sequenced publication. */
export interface Publication extends StreamPosition {
  topic: string;
  data: PublishData;
  /** When it was sequenced, epoch ms (history ages by it). */
  at: number;
}

/** The answer to a recovery request. */
export interface Recovery {
  recovered: boolean;
  /** The topic's position now: the last offset and the epoch. */
  position: StreamPosition;
  /** With `recovered`, every publication after the client's offset, in order. */
  publications: Publication[];
}

export interface SequencerOptions {
  /** Publications kept per topic. */
  historySize: number;
  /** Longest time a publication is kept, in ms. */
  historyTtl: number;
  /** Most publications one recovery replays; a larger gap is `recovered: false`. */
  maxReplay?: number;
  /** Sends a publication to an interested party. */
  deliver: (to: number, pub: Publication) => void;
  now?: () => number;
}

interface Topic {
  epoch: string;
  offset: number;
  /** The last publications, oldest first. */
  history: Publication[];
  /** Interested parties: how many interests each holds (one per `interest` not dropped). */
  interested: Map<number, number>;
  lastPublished: number;
}

export class Sequencer {
  readonly #o: SequencerOptions;
  readonly #topics = new Map<string, Topic>();
  readonly #now: () => number;

  constructor(o: SequencerOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  /** Topics known (with a live stream position). */
  get size(): number {
    return this.#topics.size;
  }

  /** Publications held in history, over every topic. */
  get historyLength(): number {
    let n = 0;
    for (const t of this.#topics.values()) n += t.history.length;
    return n;
  }

  #topic(name: string): Topic {
    let t = this.#topics.get(name);
    if (!t) {
      t = {
        epoch: randomBytes(6).toString('base64url'),
        offset: 0,
        history: [],
        interested: new Map(),
        lastPublished: this.#now(),
      };
      this.#topics.set(name, t);
    }
    return t;
  }

  /** Sequences one publication and hands it to every interested party. */
  publish(topic: string, data: PublishData): Publication {
    const t = this.#topic(topic);
    const now = this.#now();
    t.offset++;
    t.lastPublished = now;
    const pub: Publication = { topic, offset: t.offset, epoch: t.epoch, data, at: now };
    if (this.#o.historySize > 0) {
      t.history.push(pub);
      if (t.history.length > this.#o.historySize) t.history.shift();
    }
    for (const to of t.interested.keys()) this.#o.deliver(to, pub);
    return pub;
  }

  /** `party` wants `topic`'s publications from now on; returns the position now. */
  interest(topic: string, party: number): StreamPosition {
    const t = this.#topic(topic);
    t.interested.set(party, (t.interested.get(party) ?? 0) + 1);
    return { offset: t.offset, epoch: t.epoch };
  }

  /** Ends one interest of `party` in `topic` (it gets nothing more once it has none left). */
  drop(topic: string, party: number): void {
    const interested = this.#topics.get(topic)?.interested;
    const n = interested?.get(party) ?? 0;
    if (n > 1) interested!.set(party, n - 1);
    else interested?.delete(party);
  }

  /** `party` is gone (a worker exited): every interest of it ends. */
  dropParty(party: number): void {
    for (const t of this.#topics.values()) t.interested.delete(party);
  }

  /** Publications of `topic` after `since`: all of them, or `recovered: false`. */
  recover(topic: string, since: StreamPosition): Recovery {
    const t = this.#topic(topic);
    this.#expire(t);
    const position = { offset: t.offset, epoch: t.epoch };
    const no = { recovered: false, position, publications: [] };
    if (since.epoch !== t.epoch || since.offset > t.offset) return no;
    const missed = t.offset - since.offset;
    if (missed === 0) return { recovered: true, position, publications: [] };
    if (missed > (this.#o.maxReplay ?? Number.POSITIVE_INFINITY)) return no;
    const first = t.history[0];
    if (!first || first.offset > since.offset + 1) return no;
    return {
      recovered: true,
      position,
      publications: t.history.slice(since.offset + 1 - first.offset),
    };
  }

  /**
   * Sweeps now and then (a quarter of --history-ttl, at most every 10 s) without keeping the
   * process alive; returns what stops it.
   */
  sweeping(): () => void {
    const timer = setInterval(() => this.sweep(), Math.min(10_000, this.#o.historyTtl / 4));
    timer.unref();
    return () => clearInterval(timer);
  }

  /** Drops expired history, and topics nobody wants whose stream went quiet long ago. */
  sweep(): void {
    const now = this.#now();
    for (const [name, t] of this.#topics) {
      this.#expire(t);
      if (
        t.interested.size === 0 &&
        t.history.length === 0 &&
        now - t.lastPublished > this.#o.historyTtl
      ) {
        this.#topics.delete(name);
      }
    }
  }

  #expire(t: Topic): void {
    const oldest = this.#now() - this.#o.historyTtl;
    let i = 0;
    while (i < t.history.length && t.history[i]!.at < oldest) i++;
    if (i > 0) t.history.splice(0, i);
  }
}
