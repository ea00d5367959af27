/**
 * The crowd: N WebSocket clients spread over client processes (client.ts, at most
 * `perProcess` sockets each, under the 20,000 open-file limit), each process with its own
 * source-address block 127.0.<k>.1-250 (a new block for every process of the bench run, so
 * TIME_WAIT leftovers of one run never collide with the next). One client family; what a
 * socket does is set by {@link CrowdOptions}: idle, stalled, echo traffic, reconnect at once
 * or after the server's hint, wsdrain's own reconnecting client, or topics (subscribers and
 * a publisher, see {@link FanoutOptions}; with `client: 'wsdrain'`, subscribers that recover
 * what they missed across reconnects, see {@link TopicCounts}).
 *
 *   const crowd = new Crowd({ url, reconnect: 'now' });
 *   await crowd.connect(4000);
 *   const t0 = crowd.phase('roll');           // time zero; signal the server right after
 *   await crowd.waitFor((s) => s.closedOnce === 4000 && s.open === 4000, 30_000);
 *   const r = await crowd.results();          // r.phases.roll: closes, reconnects, ...
 *   await crowd.stop();
 *
 * Times in results are ms since the start of their phase; before the first phase the label
 * is '' (closes there are "early").
 */
import { fileURLToPath } from 'node:url';
import { ChildProc, progress, spread, until, within } from '../lib/proc.js';
import type { Server } from '../lib/server.js';
import { addCounts, maxOrNull, mergeHist, mergeTally, newHist, type Tally } from '../lib/stats.js';

const CLIENT = fileURLToPath(new URL('./client.ts', import.meta.url));
export const MAX_PER_PROCESS = 15_000;

export interface CrowdOptions {
  url: string;
  /** Sockets per client process. @default 6000, at most 15000 */
  perProcess?: number;
  /** First handshakes at a time per process. @default 200 */
  concurrency?: number;
  /** Tries per socket while connecting. @default 3 */
  attempts?: number;
  /** @default 10000 */
  handshakeTimeoutMs?: number;
  /**
   * 'ws': a `ws` socket per connection, reconnected by the crowd as `reconnect` says;
   * 'wsdrain': `wsdrain/client`'s WsdrainClient, which reconnects by itself (hints, backoff).
   * @default 'ws'
   */
  client?: 'ws' | 'wsdrain';
  /** WsdrainClient's `hintJitter`; undefined keeps its default. */
  hintJitter?: boolean | number;
  /** WsdrainClient's `maxRetries`. @default 50 */
  maxRetries?: number;
  /** Offer permessage-deflate. @default false */
  deflate?: boolean;
  /** Fraction of the sockets that stop reading once connected (spread evenly). @default 0 */
  stalled?: number;
  /**
   * 'drop': bytes are read and dropped (the server's FIN is seen, so the close can be timed);
   * 'pause': nothing is read (the socket stays open until the server terminates it).
   * @default 'drop'
   */
  stallMode?: 'drop' | 'pause';
  /** Messages each non-stalled socket sends as soon as it opens. @default 0 */
  sendOnOpen?: number;
  /** Each non-stalled socket sends a message every this many ms (random phase). @default 0 */
  messageEveryMs?: number;
  /** Messages each socket keeps outstanding from the first phase until a final one. @default 0 */
  window?: number;
  /** Bytes per message (at least the message's own, about 30). @default 0 */
  size?: number;
  /**
   * Messages are `work` requests of the built-in echo handler instead of echoes: each asks for
   * this many ms of CPU (`{"op":"work","ms":N,"id":"<socket>:<n>"}`) and its reply must be
   * `{"id":"<socket>:<n>","done":true}`. @default 0 (echoes)
   */
  workMs?: number;
  /** A message unanswered this long on an open socket is timed out. @default 10000 */
  echoTimeoutMs?: number;
  /** After a close by the server: nothing, reconnect at once, or after the hint's delay. */
  reconnect?: 'none' | 'now' | 'hint';
  /** Delay after a failed reconnect attempt (±50 %). @default 20 */
  retryDelayMs?: number;
  /** Reconnect attempts per close before giving up. @default 500 */
  maxAttempts?: number;
  /** Status reports, after the first phase. @default 1000 */
  statusEveryMs?: number;
  /** Give up connecting after this long. @default 120000 */
  connectTimeoutMs?: number;
  /** URL path and query of every socket, e.g. `/socket.io/?EIO=4&transport=websocket`. */
  path?: string;
  /** Topics: each socket subscribes once open, or publishes on the parent's command. */
  fanout?: FanoutOptions;
}

/**
 * A fan-out client. Subscribers subscribe to `topic` as soon as they open (connect() resolves
 * once every socket is subscribed), then count every publication they receive, per phase: the
 * latency from the publisher's stamp, each publication's number per socket (exactly once, in
 * order). The publisher sends publications on {@link Crowd.publish} (on its current socket:
 * with `reconnect`, the one it reopened; those due while it has none are skipped) and counts
 * the server's acks. One code path for every server; only the framing of `dialect` differs:
 *
 * - `wsdrain.v1` (wsdrain, and the raw ws reference): subprotocol wsdrain.v1,
 *   `{"type":"subscribe","topic":T}` until `{"type":"subscribed"...}`; publications arrive as
 *   `{"type":"pub",...,"data":D}`; the publisher sends `{"type":"publish","topic":T,"data":D}`.
 * - `socket.io`: engine.io v4 over a bare WebSocket: the open packet `0{...}`, `40` (connect to
 *   the main namespace) until `40{...}`, `420["subscribe",T]` until the ack `430[...]`;
 *   publications arrive as `42["pub",D]`; pings (`2`) are answered (`3`); the publisher emits
 *   `42["publish",T,D]`.
 *
 * D is `{"n":<number>,"t":<epoch ms when sent>,"p":"xx..."}`, padded to `size` bytes. The
 * publisher and the subscribers share the machine's clock (see ../lib/proc.ts `now()`).
 *
 * With `client: 'wsdrain'` (wsdrain.v1 only), a subscriber is wsdrain/client's WsdrainClient
 * with one `subscribe(topic)`: it reconnects by itself and resubscribes `since` the last
 * publication it handled, and the handler checks offsets instead of numbers (see
 * {@link TopicCounts}); after each reconnect it times the replay of what it missed.
 */
export interface FanoutOptions {
  role: 'subscribe' | 'publish';
  dialect: FanoutDialect;
  /**
   * The topic; `{i}` is replaced by the socket's index in the crowd (a topic per socket), or
   * with `topics`, by that index modulo `topics`.
   */
  topic: string;
  /**
   * With `{i}` in `topic`: that many topics, subscriber k on topic k mod `topics`, and the
   * publisher's publication n to topic n mod `topics`. @default a topic per socket; the
   * publisher's is topic 0's
   */
  topics?: number;
  /** Publications are numbered 0 .. maxPublications - 1 (each subscriber counts each one). */
  maxPublications: number;
}

export type FanoutDialect = 'wsdrain.v1' | 'socket.io';

/** Idle subscribers of wsdrain (drain, capacity): each subscribed to a topic of its own. */
export const A_TOPIC_EACH: FanoutOptions = {
  role: 'subscribe',
  dialect: 'wsdrain.v1',
  topic: 'feed:{i}',
  maxPublications: 0,
};

/**
 * What the parent sends: `phase` starts recording under `label` (final: no reconnects; with
 * `expect`, the publications numbered first .. first + count - 1 are this phase's, and every
 * subscriber should get each exactly once); `publish` makes a publisher send `count`
 * publications numbered from `first`, `perSecond` a second (0: all at once).
 */
export type ToClient =
  | {
      type: 'phase';
      label: string;
      t: number;
      final: boolean;
      expect?: { first: number; count: number } | undefined;
    }
  | { type: 'publish'; first: number; count: number; perSecond: number; size: number }
  /** The publisher stops the publications under way (publish then answers `published`). */
  | { type: 'stopPublish' }
  | { type: 'results' }
  | { type: 'stop' };

export type FromClient =
  | { type: 'progress' | 'ready'; connected: number; failed: number }
  | { type: 'status'; status: Status }
  /** No socket open and none reconnecting, after a phase began: epoch ms of the last close. */
  | { type: 'allClosed'; at: number }
  | { type: 'results'; results: CrowdResults }
  /**
   * A publisher sent what it was asked to (or was stopped): how many, the first and last send
   * (epoch ms), and how many were due while it had no open socket (skipped).
   */
  | { type: 'published'; sent: number; firstAt: number; lastAt: number; skipped: number };

/** Counters are cumulative; closes, reopens, refusals and lastReopenAt: this phase's. */
export interface Status {
  at: number;
  open: number;
  /** Closed and not open again yet (waiting for a hint's delay, or handshaking). */
  reconnecting: number;
  /** Sockets closed at least once since the first phase. */
  closedOnce: number;
  /** Sockets that gave up reconnecting. */
  gaveUp: number;
  sent: number;
  echoed: number;
  /** Replies that were not the next expected echo of their socket. */
  mismatched: number;
  /** Messages unanswered `echoTimeoutMs` after they were sent, socket open. */
  timedOut: number;
  /** Messages unanswered when their socket closed with a code other than 1001 or 1012. */
  lostOnOtherClose: number;
  closes: number;
  reopens: number;
  refusals: number;
  lastReopenAt: number | null;
  /** Fan-out: sockets subscribed, publications received, received more than once. */
  subscribed: number;
  delivered: number;
  duplicates: number;
  /** Recovering subscribers reconnected that have not caught up yet (see TopicCounts). */
  replaying: number;
  /** Echo round trips since the previous status (stats.ts histogram). */
  rtt: number[];
}

/** Everything recorded under one phase; times in ms since the phase began. */
export interface PhaseResults {
  /** Closes of open sockets. */
  closeTimes: number[];
  codes: Record<string, number>;
  /** Close reasons by kind: `wsdrain:restart`, `wsdrain:shutdown`, `other`, `(none)`. */
  reasons: Record<string, number>;
  /** retry=<ms> values of the close reasons. */
  hintRetries: number[];
  /** Messages without an echo when their socket closed, by close code. */
  unanswered: Record<string, number>;
  /** For those: ms from the send to the close (first 20,000 per process). */
  unansweredAgeMs: number[];
  /** Reconnects: when they opened, when their attempt started, and the handshake's length. */
  reopenTimes: number[];
  attemptTimes: number[];
  handshakeMs: number[];
  /** Close -> open again, the hint's delay included; that delay; and the rest. */
  reconnectMs: number[];
  hintMs: number[];
  beyondHintMs: number[];
  /** Failed reconnect attempts by cause (`http 503`, `ECONNREFUSED`; a close code for 'wsdrain'). */
  refusals: Record<string, number>;
  /** 'error' events of WsdrainClient sockets that had not opened. */
  connectErrors: number;
  /** WsdrainClient reconnects scheduled, by what set their delay. */
  delays: { hint: number; backoff: number };
  /** Echoes received, replies per second (summed over processes), every 4th round trip. */
  replies: number;
  repliesPerSec: number;
  rttSamples: number[];
  rtt: number[];
  /** Length of the phase on the clients' clocks (the longest), ms. */
  durationMs: number;
  /** Fan-out: publications received, and when the first and the last arrived (epoch ms). */
  deliveries: number;
  firstDeliveryAt: number | null;
  lastDeliveryAt: number | null;
  /** Publish-to-receive latency, ms: [value, count] pairs (stats.ts tally). */
  latency: [number, number][];
  /**
   * With `expect`: deliveries due (subscribers x publications), due ones never received,
   * extra copies received, and publications received after a later one on the same socket.
   */
  expected: number;
  missing: number;
  duplicates: number;
  reordered: number;
  /**
   * Recovering subscribers, per reconnect that ended in this phase: publications replayed
   * (published before the new connection opened, handled after it), and, for those that
   * missed some, from the open to the last of them handled (the replay); from the close to
   * caught up (the open when nothing was missed).
   */
  replayed: number[];
  replayMs: number[];
  catchUpMs: number[];
  /** When each of those reconnects had caught up. */
  caughtUpTimes: number[];
}

/** One topic: where its subscribers started and ended, and the publisher's last ack. */
export interface TopicRange {
  subscribers: number;
  startMin: number | null;
  startMax: number | null;
  endMin: number | null;
  endMax: number | null;
  lastAcked: number | null;
}

/**
 * Topics seen by recovering subscribers (`client: 'wsdrain'`), over the whole run, and by a
 * publisher. Offsets are the server's: a subscriber must handle every offset after the one
 * its first subscription started at, once, in order, up to the topic's last.
 */
export interface TopicCounts {
  /** Subscribers that ever subscribed. */
  subscribers: number;
  /** Answers to subscriptions: from now (the first), recovered, not recovered. */
  fresh: number;
  recovered: number;
  unrecovered: number;
  /** Subscription answers beyond one per connection (a hole or a resubscription asked). */
  resubscribes: number;
  /** Publications handed to the handlers. */
  handled: number;
  /** Offsets the handlers never got (skipped over, or lost to `recovered: false`). */
  missing: number;
  /** Offsets handled again, or after a later one. */
  duplicates: number;
  /** On the wire: `pub`s at or below the last on that connection, and jumps over offsets. */
  wireDuplicates: number;
  wireHoles: number;
  /** Publications replayed, over every reconnect. */
  replayed: number;
  /** Where subscribers started (the first answer's offset) and ended (the last handled). */
  startMin: number | null;
  startMax: number | null;
  endMin: number | null;
  endMax: number | null;
  /** Publisher: acks (`published`), the highest offset acked, `error` answers. */
  acked: number;
  lastAcked: number | null;
  publishErrors: number;
  /** The same starts, ends and last ack, per topic. */
  byTopic: Record<string, TopicRange>;
}

export function emptyTopics(): TopicCounts {
  return {
    subscribers: 0,
    fresh: 0,
    recovered: 0,
    unrecovered: 0,
    resubscribes: 0,
    handled: 0,
    missing: 0,
    duplicates: 0,
    wireDuplicates: 0,
    wireHoles: 0,
    replayed: 0,
    startMin: null,
    startMax: null,
    endMin: null,
    endMax: null,
    acked: 0,
    lastAcked: null,
    publishErrors: 0,
    byTopic: {},
  };
}

/** The range of `topic` in `t`, made empty the first time. */
export function topicRange(t: TopicCounts, topic: string): TopicRange {
  t.byTopic[topic] ??= {
    subscribers: 0,
    startMin: null,
    startMax: null,
    endMin: null,
    endMax: null,
    lastAcked: null,
  };
  return t.byTopic[topic]!;
}

/** Adds the range `b` into `a`: subscribers summed, starts, ends and acks as the extremes. */
function mergeRange(a: TopicRange | TopicCounts, b: TopicRange | TopicCounts): void {
  a.startMin = minOrNull([a.startMin, b.startMin]);
  a.endMin = minOrNull([a.endMin, b.endMin]);
  a.startMax = maxOrNull([a.startMax, b.startMax]);
  a.endMax = maxOrNull([a.endMax, b.endMax]);
  a.lastAcked = maxOrNull([a.lastAcked, b.lastAcked]);
}

/** Adds `b` into `a`: counts summed, starts and ends as the extremes of both. */
export function mergeTopics(a: TopicCounts, b: TopicCounts): void {
  const sums = [
    'subscribers',
    'fresh',
    'recovered',
    'unrecovered',
    'resubscribes',
    'handled',
    'missing',
    'duplicates',
    'wireDuplicates',
    'wireHoles',
    'replayed',
    'acked',
    'publishErrors',
  ] as const;
  for (const k of sums) a[k] += b[k];
  mergeRange(a, b);
  for (const [topic, r] of Object.entries(b.byTopic ?? {})) {
    const into = topicRange(a, topic);
    into.subscribers += r.subscribers;
    mergeRange(into, r);
  }
}

export interface CrowdResults {
  connected: number;
  failed: number;
  open: number;
  /** Sockets that stalled, and sockets whose first connection negotiated permessage-deflate. */
  stalled: number;
  deflated: number;
  /** Fan-out: sockets subscribed; publications received; messages not understood. */
  subscribed: number;
  delivered: number;
  foreign: number;
  sent: number;
  echoed: number;
  mismatched: number;
  timedOut: number;
  lostOnOtherClose: number;
  /** Messages still waiting for an echo on open sockets. */
  pendingOpen: number;
  gaveUp: number;
  /** Sockets closed at least once since the first phase. */
  closedOnce: number;
  /** How many sockets closed once, twice, ... since the first phase. */
  closesPerSocket: Record<string, number>;
  phases: Record<string, PhaseResults>;
  rtt: number[];
  topics: TopicCounts;
}

export function emptyPhase(): PhaseResults {
  return {
    closeTimes: [],
    codes: {},
    reasons: {},
    hintRetries: [],
    unanswered: {},
    unansweredAgeMs: [],
    reopenTimes: [],
    attemptTimes: [],
    handshakeMs: [],
    reconnectMs: [],
    hintMs: [],
    beyondHintMs: [],
    refusals: {},
    connectErrors: 0,
    delays: { hint: 0, backoff: 0 },
    replies: 0,
    repliesPerSec: 0,
    rttSamples: [],
    rtt: newHist(),
    durationMs: 0,
    deliveries: 0,
    firstDeliveryAt: null,
    lastDeliveryAt: null,
    latency: [],
    expected: 0,
    missing: 0,
    duplicates: 0,
    reordered: 0,
    replayed: [],
    replayMs: [],
    catchUpMs: [],
    caughtUpTimes: [],
  };
}

const SUMMED = [
  'connected',
  'failed',
  'open',
  'stalled',
  'deflated',
  'subscribed',
  'delivered',
  'foreign',
  'sent',
  'echoed',
  'mismatched',
  'timedOut',
  'lostOnOtherClose',
  'pendingOpen',
  'gaveUp',
  'closedOnce',
] as const;

const LISTS = [
  'closeTimes',
  'hintRetries',
  'unansweredAgeMs',
  'reopenTimes',
  'attemptTimes',
  'handshakeMs',
  'reconnectMs',
  'hintMs',
  'beyondHintMs',
  'rttSamples',
  'replayed',
  'replayMs',
  'catchUpMs',
  'caughtUpTimes',
] as const;

/** Sums the results of the processes; lists are sorted ascending. */
export function mergeResults(all: CrowdResults[]): CrowdResults {
  const total: CrowdResults = {
    ...(Object.fromEntries(SUMMED.map((k) => [k, 0])) as Record<(typeof SUMMED)[number], number>),
    closesPerSocket: {},
    phases: {},
    rtt: newHist(),
    topics: emptyTopics(),
  };
  const latency = new Map<string, Tally>();
  for (const r of all) {
    for (const k of SUMMED) total[k] += r[k];
    addCounts(total.closesPerSocket, r.closesPerSocket);
    mergeHist(total.rtt, r.rtt);
    mergeTopics(total.topics, r.topics);
    for (const [label, p] of Object.entries(r.phases)) {
      total.phases[label] ??= emptyPhase();
      const t = total.phases[label]!;
      for (const k of LISTS) for (const v of p[k]) t[k].push(v);
      for (const k of ['codes', 'reasons', 'unanswered', 'refusals'] as const) {
        addCounts(t[k], p[k]);
      }
      t.connectErrors += p.connectErrors;
      t.delays.hint += p.delays.hint;
      t.delays.backoff += p.delays.backoff;
      t.replies += p.replies;
      t.repliesPerSec += p.durationMs > 0 ? (p.replies * 1000) / p.durationMs : 0;
      mergeHist(t.rtt, p.rtt);
      t.durationMs = Math.max(t.durationMs, p.durationMs);
      for (const k of ['deliveries', 'expected', 'missing', 'duplicates', 'reordered'] as const) {
        t[k] += p[k];
      }
      t.firstDeliveryAt = minOrNull([t.firstDeliveryAt, p.firstDeliveryAt]);
      t.lastDeliveryAt = maxOrNull([t.lastDeliveryAt, p.lastDeliveryAt]);
      const tl = latency.get(label) ?? new Map<number, number>();
      latency.set(label, tl);
      mergeTally(tl, p.latency);
    }
  }
  for (const [label, p] of Object.entries(total.phases)) {
    for (const k of LISTS) p[k].sort((a, b) => a - b);
    p.repliesPerSec = Math.round(p.repliesPerSec);
    p.latency = [...(latency.get(label) ?? [])].sort((a, b) => a[0] - b[0]);
  }
  return total;
}

function minOrNull(values: (number | null)[]): number | null {
  const xs = values.filter((x): x is number => x !== null);
  return xs.length > 0 ? Math.min(...xs) : null;
}

/**
 * Statuses summed: counters added, `at` the oldest, `lastReopenAt` the latest; undefined
 * when there are none or one is still missing.
 */
export function sumStatus(
  all: (Omit<Status, 'rtt'> | undefined)[],
): Omit<Status, 'rtt'> | undefined {
  if (all.length === 0 || all.some((s) => s === undefined)) return undefined;
  const ss = all as Omit<Status, 'rtt'>[];
  const sums = Object.fromEntries(
    Object.keys(ss[0] ?? {})
      .filter((k) => !['at', 'lastReopenAt', 'rtt'].includes(k))
      .map((k) => [k, ss.reduce((n, x) => n + (x[k as keyof typeof x] as number), 0)]),
  ) as Omit<Status, 'rtt' | 'at' | 'lastReopenAt'>;
  const lastReopenAt = maxOrNull(ss.map((x) => x.lastReopenAt));
  return { ...sums, at: Math.min(...ss.map((x) => x.at)), lastReopenAt };
}

let nextBlock = 0;

interface Member {
  proc: ChildProc<ToClient, FromClient>;
  connected: number;
  failed: number;
  ready: boolean;
  status?: Status;
  allClosedAt?: number;
  results?: CrowdResults;
  published?: Extract<FromClient, { type: 'published' }>;
}

export class Crowd {
  readonly #o: CrowdOptions;
  #members: Member[] = [];
  /** Sockets given to client processes so far (the next process's first socket index). */
  #spawned = 0;
  #rtt = newHist();
  /** How long connect() took, ms. */
  connectMs = 0;

  constructor(o: CrowdOptions) {
    const perProcess = o.perProcess ?? 6000;
    if (!(perProcess >= 1 && perProcess <= MAX_PER_PROCESS)) {
      throw new Error(`perProcess must be in 1..${MAX_PER_PROCESS}, got ${perProcess}`);
    }
    this.#o = { ...o, perProcess };
  }

  get pids(): number[] {
    return this.#members.map((m) => m.proc.child.pid ?? 0);
  }

  /** A client process that died without being asked to stop, or undefined. */
  dead(): string | undefined {
    return this.#members.map((m) => m.proc.died).find(Boolean);
  }

  /** Opens n sockets; resolves with the number that connected. */
  async connect(n: number): Promise<number> {
    const k = Math.ceil(n / this.#o.perProcess!);
    for (const count of spread(n, k)) this.#spawn(count);
    const bar = progress(`connecting ${this.#o.url}`, n);
    const started = performance.now();
    try {
      await until(
        () => {
          bar.update(this.#sum((m) => m.connected));
          return this.#members.every((m) => m.ready);
        },
        this.#o.connectTimeoutMs ?? 120_000,
        'crowd: connect',
        () => this.dead(),
      );
    } finally {
      bar.end();
    }
    this.connectMs = performance.now() - started;
    const failed = this.#sum((m) => m.failed);
    if (failed > 0) process.stderr.write(`crowd: ${failed} of ${n} sockets failed to connect\n`);
    return this.#sum((m) => m.connected);
  }

  /**
   * Starts phase `label` in every process; returns its time zero (epoch ms). `expect`: the
   * publications of this phase (fan-out subscribers check each arrived exactly once).
   */
  phase(label: string, final = false, expect?: { first: number; count: number }): number {
    const t = performance.timeOrigin + performance.now();
    for (const m of this.#members) {
      m.allClosedAt = undefined;
      m.proc.send({ type: 'phase', label, t, final, expect });
    }
    return t;
  }

  /**
   * A fan-out publisher crowd sends `count` publications numbered from `first`, `perSecond`
   * a second (0: all at once), `size` bytes of data each; resolves once they are sent: how
   * many, and the first and the last send (epoch ms).
   */
  async publish(
    first: number,
    count: number,
    perSecond: number,
    size: number,
  ): Promise<{ sent: number; firstAt: number; lastAt: number; skipped: number }> {
    for (const m of this.#members) {
      m.published = undefined;
      m.proc.send({ type: 'publish', first, count, perSecond, size });
    }
    const ms = perSecond > 0 ? (1000 * count) / perSecond : 0;
    await until(
      () => this.#members.every((m) => m.published),
      ms + 30_000,
      'crowd: publish',
      () => this.dead(),
    );
    const all = this.#members.map((m) => m.published!);
    return {
      sent: all.reduce((n, p) => n + p.sent, 0),
      skipped: all.reduce((n, p) => n + p.skipped, 0),
      firstAt: Math.min(...all.map((p) => p.firstAt)),
      lastAt: Math.max(...all.map((p) => p.lastAt)),
    };
  }

  /** Ends the publications under way: the pending publish() resolves with what was sent. */
  stopPublishing(): void {
    for (const m of this.#members) m.proc.send({ type: 'stopPublish' });
  }

  /** The latest status of every process, summed; undefined until each has sent one. */
  status(): Omit<Status, 'rtt'> | undefined {
    return sumStatus(this.#members.map((m) => m.status));
  }

  /** Echo round trips reported since the previous call (stats.ts histogram). */
  takeRtt(): number[] {
    const h = this.#rtt;
    this.#rtt = newHist();
    return h;
  }

  /** Resolves true once `done` holds for the summed status, false after timeoutMs. */
  waitFor(done: (s: Omit<Status, 'rtt'>) => boolean, timeoutMs: number): Promise<boolean> {
    return within(
      () => {
        const s = this.status();
        return s !== undefined && done(s);
      },
      timeoutMs,
      'crowd: wait',
      () => this.dead(),
    );
  }

  /** Resolves with the epoch ms of the last close once no socket is open, else undefined. */
  async waitAllClosed(timeoutMs: number): Promise<number | undefined> {
    const done = await within(
      () => this.#members.every((m) => m.allClosedAt !== undefined),
      timeoutMs,
      'crowd: close',
      () => this.dead(),
    );
    return done ? Math.max(...this.#members.map((m) => m.allClosedAt!)) : undefined;
  }

  /** What every process recorded, merged. */
  async results(): Promise<CrowdResults> {
    for (const m of this.#members) {
      m.results = undefined;
      m.proc.send({ type: 'results' });
    }
    await until(
      () => this.#members.every((m) => m.results),
      30_000,
      'crowd: results',
      () => this.dead(),
    );
    return mergeResults(this.#members.map((m) => m.results!));
  }

  /** Stops every client process (SIGKILL after 3 s). */
  async stop(): Promise<void> {
    await Promise.all(this.#members.map((m) => m.proc.stop({ type: 'stop' })));
    this.#members = [];
  }

  #sum(f: (m: Member) => number): number {
    return this.#members.reduce((s, m) => s + f(m), 0);
  }

  #spawn(count: number): void {
    const addrPrefix = `127.0.${(nextBlock++ % 254) + 1}`;
    const first = this.#spawned;
    this.#spawned += count;
    const args = [JSON.stringify({ ...this.#o, count, first, addrPrefix })];
    const nodeArgs = process.env.BENCH_CLIENT_NODE_ARGS?.split(' ') ?? [];
    const m: Member = { connected: 0, failed: 0, ready: false } as Member;
    m.proc = new ChildProc<ToClient, FromClient>(
      CLIENT,
      args,
      (msg) => {
        switch (msg.type) {
          case 'progress':
          case 'ready':
            m.connected = msg.connected;
            m.failed = msg.failed;
            m.ready ||= msg.type === 'ready';
            break;
          case 'status':
            m.status = msg.status;
            mergeHist(this.#rtt, msg.status.rtt);
            break;
          case 'allClosed':
            m.allClosedAt = msg.at;
            break;
          case 'results':
            m.results = msg.results;
            break;
          case 'published':
            m.published = msg;
        }
      },
      nodeArgs,
    );
    this.#members.push(m);
  }
}

/**
 * Crowds of different kinds (echoing sockets, recovering subscribers, a publisher) driven as
 * one: the same phases, their statuses summed, their results merged. Each connects on its own.
 */
export class Crowds {
  constructor(readonly all: Crowd[]) {}

  get pids(): number[] {
    return this.all.flatMap((c) => c.pids);
  }

  dead(): string | undefined {
    return this.all.map((c) => c.dead()).find(Boolean);
  }

  /** Starts phase `label` in every crowd; returns its time zero (the first crowd's). */
  phase(label: string, final = false): number {
    const [t] = this.all.map((c) => c.phase(label, final));
    return t ?? performance.timeOrigin + performance.now();
  }

  status(): Omit<Status, 'rtt'> | undefined {
    return sumStatus(this.all.map((c) => c.status()));
  }

  takeRtt(): number[] {
    const h = newHist();
    for (const c of this.all) mergeHist(h, c.takeRtt());
    return h;
  }

  /** Resolves with the epoch ms of the last close once every crowd is closed, else undefined. */
  async waitAllClosed(timeoutMs: number): Promise<number | undefined> {
    const at = await Promise.all(this.all.map((c) => c.waitAllClosed(timeoutMs)));
    return at.some((x) => x === undefined) ? undefined : Math.max(...(at as number[]));
  }

  async results(): Promise<CrowdResults> {
    return mergeResults(await Promise.all(this.all.map((c) => c.results())));
  }

  async stop(): Promise<void> {
    await Promise.all(this.all.map((c) => c.stop()));
  }
}

/**
 * Waits until `server` is ready, then runs `body` with a crowd against it (ws://127.0.0.1:
 * <port>, or wss:// when it serves TLS); the crowd and the server are stopped afterwards, whatever happens.
 */
export async function withLoad<R>(
  start: Promise<Server>,
  options: Omit<CrowdOptions, 'url'>,
  body: (server: Server, crowd: Crowd) => Promise<R>,
): Promise<R> {
  const server = await start;
  const crowd = new Crowd({
    ...options,
    url: `${server.tls ? 'wss' : 'ws'}://127.0.0.1:${server.port}`,
  });
  try {
    await server.ready();
    return await body(server, crowd);
  } finally {
    await crowd.stop();
    await server.stop();
  }
}
