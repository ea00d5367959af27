/**
 * A crowd client process (forked by index.ts, its options as one JSON argument, run as
 * `node --import tsx`). Opens `count` sockets to `url`, `concurrency` handshakes at a time,
 * source addresses rotating over `<addrPrefix>`.1 .. .250, and keeps them as the options say:
 *
 * - stalled (a fraction, spread evenly): stops reading once open ('drop': reads and drops the
 *   bytes, so the server's FIN is seen; 'pause': reads nothing). Never answers a close frame.
 * - traffic (the others): `sendOnOpen` messages at once, one every `messageEveryMs` (random
 *   phase), or `window` outstanding from the first phase on; echoes, or `work` requests
 *   (`workMs`). Every reply is checked: the echo handler answers in order, so it must be the
 *   oldest message still waiting on its socket (its echo, or the work's `done`).
 * - closed by the server: nothing more ('none'), a new socket at once ('now') or after the
 *   close reason's retry hint ('hint'); a failed attempt is a refusal, retried after
 *   `retryDelayMs` (±50 %). With `client: 'wsdrain'`, wsdrain/client's WsdrainClient does it.
 *
 * - fan-out (`fanout`, see index.ts FanoutOptions): a subscriber subscribes as soon as it
 *   opens (a stalled one too, without reading the answer) and counts the publications it
 *   receives; a publisher sends publications when the parent says so. With `client:
 *   'wsdrain'`, a subscriber is a WsdrainClient subscription that recovers across reconnects:
 *   its handler checks the offsets, and after each reconnect the replay of what it missed is
 *   timed (index.ts TopicCounts, PhaseResults.replayMs).
 *
 * Recorded under the phase the parent last started: closes (when, code, reason), messages
 * unanswered at each close, reconnects and refusals, echoes and their round trips,
 * publications and their latency.
 */
import type { Duplex } from 'node:stream';
import { WebSocket } from 'ws';
import { PROTOCOL_V1, parseHint } from 'wsdrain';
import { type WebSocketConstructorLike, WsdrainClient } from 'wsdrain/client';
import { idempotentEnds } from 'wsdrain/internal';
import { now, onParent, sleep, toParent } from '../lib/proc.js';
import { mergeHist, newHist, record, round2, type Tally, tally, tallyPairs } from '../lib/stats.js';
import {
  type CrowdOptions,
  type CrowdResults,
  emptyPhase,
  emptyTopics,
  type FromClient,
  type PhaseResults,
  type ToClient,
  topicRange,
} from './index.js';

const o = JSON.parse(process.argv[2] ?? '{}') as CrowdOptions & {
  count: number;
  /** The crowd's index of this process's first socket. */
  first: number;
  addrPrefix: string;
};
const { count } = o;
const url = o.url + (o.path ?? '');
const fanout = o.fanout;
const stalledFraction = o.stalled ?? 0;
const messageEvery = o.messageEveryMs ?? 0;
const windowSize = o.window ?? 0;
const reconnectMode = o.reconnect ?? 'none';
const MAX_KEPT = 20_000; // unanswered ages kept per phase (the counts are exact)
const MAX_SAMPLES = 200_000; // round trips kept per phase (every 4th)

const send: (m: FromClient) => void = toParent;

interface Sock {
  ws: WebSocket | undefined;
  stalled: boolean;
  /**
   * Next sequence number (per socket index, across reconnects); messages not answered yet:
   * echoes, and wsdrain.v1 requests (a publisher's `publish`, a recovering subscriber's
   * `subscribe`) by their id.
   */
  seq: number;
  pendSeq: number[];
  pendAt: number[];
  /** Highest sequence number already counted as timed out. */
  timedOutSeq: number;
  timer: NodeJS.Timeout | undefined;
  /** Epoch ms of the close being reconnected (NaN: none), and the hint's delay. */
  closedAt: number;
  hintMs: number;
  /** Closes since the first phase. */
  closes: number;
  /** Fan-out: resolves the wait for the subscription (true) or its failure (false). */
  joined: ((ok: boolean) => void) | undefined;
  /** Fan-out: subscribed now (or, a publisher, ready), and ever. */
  subscribed: boolean;
  joinedOnce: boolean;
  /** Fan-out: the number of the last publication received. */
  lastN: number;
  /** Recovering subscriber: offsets where it started and of the last publication handled. */
  start: number;
  pos: number;
  /** The last offset received on the current connection (the wire check). */
  wireLast: number;
  /** Opens and subscription answers (more answers than opens: resubscriptions). */
  opens: number;
  answers: number;
  /** After a reconnect: replaying what was missed, since when, how many, the last at. */
  replaying: boolean;
  closedAtForReplay: number;
  reopenAt: number;
  replayed: number;
  replayLastAt: number;
}

const socks: Sock[] = Array.from({ length: count }, (_, i) => ({
  ws: undefined,
  stalled: Math.floor((i + 1) * stalledFraction) > Math.floor(i * stalledFraction),
  seq: 0,
  pendSeq: [],
  pendAt: [],
  timedOutSeq: -1,
  timer: undefined,
  closedAt: Number.NaN,
  hintMs: 0,
  closes: 0,
  joined: undefined,
  subscribed: false,
  joinedOnce: false,
  lastN: -1,
  start: -1,
  pos: -1,
  wireLast: -1,
  opens: 0,
  answers: 0,
  replaying: false,
  closedAtForReplay: Number.NaN,
  reopenAt: Number.NaN,
  replayed: 0,
  replayLastAt: Number.NaN,
}));

const phases: Record<string, PhaseResults> = { '': emptyPhase() };
let P = phases['']!;
/** Time zero of the phase (the parent's), and when it reached this process. */
let phaseT = now();
let phaseAt = phaseT;
let phaseLastReopenAt: number | null = null;
let marked = false;
let final = false;
let running = false;
let stopping = false;
let allClosedSent = false;
let lastCloseAt = Number.NaN;
const n = {
  open: 0,
  reconnecting: 0,
  closedOnce: 0,
  gaveUp: 0,
  connected: 0,
  failed: 0,
  stalled: 0,
  deflated: 0,
  sent: 0,
  echoed: 0,
  mismatched: 0,
  timedOut: 0,
  lostOnOtherClose: 0,
  subscribed: 0,
  delivered: 0,
  duplicates: 0,
  foreign: 0,
  replaying: 0,
};
const topics = emptyTopics();
let rttSince = newHist();
let nextAddr = 0;

const rel = (t: number): number => round2(t - phaseT);
const localAddress = (): string => `${o.addrPrefix}.${(nextAddr++ % 250) + 1}`;
const bump = (counts: Record<string, number>, key: string | number, by = 1): void => {
  counts[key] = (counts[key] ?? 0) + by;
};

const PAD = 'x'.repeat(o.size ?? 0);
const workMs = o.workMs ?? 0;
/** The message `seq` of socket `i`, padded to `size` bytes; a `work` request with workMs. */
function payload(i: number, seq: number): string {
  if (workMs > 0) return `{"op":"work","ms":${workMs},"id":"${i}:${seq}"}`;
  const base = `{"op":"echo","s":${i},"n":${seq}`;
  const pad = (o.size ?? 0) - base.length - 10; // ,"pad":""}
  return pad > 0 ? `${base},"pad":"${PAD.slice(0, pad)}"}` : `${base}}`;
}

type Stamped = WebSocket & { startedAt: number };

/**
 * One handshake: resolves with the open socket, or the cause of the failure (`http 503`,
 * `ECONNREFUSED`, ...). `onOpen` runs inside the 'open' event, before any other event.
 */
function dial(onOpen: (ws: Stamped) => void): Promise<Stamped | string> {
  return new Promise((resolve) => {
    const startedAt = now();
    const ws = new WebSocket(url, fanout?.dialect === 'wsdrain.v1' ? PROTOCOL_V1 : [], {
      localAddress: localAddress(),
      handshakeTimeout: o.handshakeTimeoutMs ?? 10_000,
      perMessageDeflate: o.deflate ?? false,
      // wss:// in the bench is a self-signed certificate for 127.0.0.1.
      rejectUnauthorized: false,
    }) as Stamped;
    ws.startedAt = startedAt;
    let cause = 'closed';
    ws.on('error', (err: Error & { code?: string }) => {
      const http = /Unexpected server response: (\d+)/.exec(err.message);
      cause = http ? `http ${http[1]}` : (err.code ?? err.message.slice(0, 40));
    });
    let opened = false;
    ws.once('open', () => {
      opened = true;
      onOpen(ws);
      resolve(ws);
    });
    ws.once('close', () => {
      if (!opened) resolve(cause);
    });
  });
}

/** A first connection opened. */
function adoptFirst(i: number, ws: WebSocket): void {
  if (ws.extensions.includes('permessage-deflate')) n.deflated++;
  if (socks[i]!.stalled) n.stalled++;
  adopt(i, ws);
}

function adopt(i: number, ws: WebSocket): void {
  const s = socks[i]!;
  s.ws = ws;
  n.open++;
  ws.on('close', (code, reason) => onClose(i, ws, code, reason.toString()));
  // ws's repeated end() calls cost this process CPU taken from the server on a shared machine.
  idempotentEnds(ws);
  if (fanout) {
    adoptFanout(s, i, ws);
    return;
  }
  if (s.stalled) {
    stall(ws);
    return;
  }
  ws.on('message', (data: Buffer, isBinary: boolean) => onReply(s, i, data, isBinary));
  for (let k = 0; k < (o.sendOnOpen ?? 0); k++) sendOne(s, i);
  if (running) for (let k = 0; k < windowSize; k++) sendOne(s, i);
  if (messageEvery > 0) {
    const tick = (): void => {
      if (ws.readyState === WebSocket.OPEN) sendOne(s, i);
    };
    // A random phase, then a fixed period; clearTimeout() clears either timer.
    s.timer = setTimeout(() => {
      tick();
      s.timer = setInterval(tick, messageEvery);
    }, Math.random() * messageEvery);
  }
}

/** Stops reading `ws` as `stallMode` says. */
function stall(ws: WebSocket): void {
  if (o.stallMode === 'pause') ws.pause();
  else {
    const socket = (ws as unknown as { _socket: Duplex })._socket;
    socket.removeAllListeners('data');
    socket.on('data', () => {});
  }
}

// ---------------------------------------------------------------- fan-out

const maxPubs = fanout?.maxPublications ?? 0;
/** Per socket and publication number: how many times it arrived (saturating at 255). */
const received = new Uint8Array(fanout?.role === 'subscribe' ? count * maxPubs : 0);
/** Latency tallies and expected publications of the phases. */
const latencies = new Map<PhaseResults, Tally>();
const expects = new Map<PhaseResults, { first: number; count: number }>();

/** The topic of socket `i` (a subscriber), or of publication `i` (a publisher, with `topics`). */
const topicOf = (i: number, index = o.first + i): string =>
  fanout!.topic.replace('{i}', String(fanout!.topics ? index % fanout!.topics : index));

/**
 * Opens socket `i` and waits for its subscription (or, for a publisher, its readiness); a
 * socket that does not get there within `handshakeTimeoutMs` is dropped for a new one, as a
 * client would, `attempts` tries in all.
 */
async function connectFanout(i: number): Promise<boolean> {
  const s = socks[i]!;
  for (let a = 0; a < (o.attempts ?? 3) && !stopping; a++) {
    const joined = new Promise<boolean>((resolve) => {
      s.joined = (ok) => {
        s.joined = undefined;
        resolve(ok);
      };
    });
    const r = await dial((ws) => adoptFirst(i, ws));
    if (typeof r === 'string') {
      s.joined = undefined;
      continue;
    }
    const timer = setTimeout(() => s.joined?.(false), o.handshakeTimeoutMs ?? 10_000);
    const ok = await joined;
    clearTimeout(timer);
    if (ok) return true;
    if (s.ws === r) {
      const closed = new Promise((resolve) => r.once('close', resolve));
      r.terminate();
      await closed;
    }
  }
  return false;
}

function adoptFanout(s: Sock, i: number, ws: WebSocket): void {
  const f = fanout!;
  const v1 = f.dialect === 'wsdrain.v1';
  if (v1 && f.role === 'subscribe')
    ws.send(JSON.stringify({ type: 'subscribe', topic: topicOf(i) }));
  if (s.stalled) {
    // Subscribed without reading the answer (wsdrain.v1), then never reads again.
    s.joinedOnce = true;
    s.joined?.(true);
    stall(ws);
    return;
  }
  ws.on('message', (data: Buffer, isBinary: boolean) => onFanout(s, i, ws, data, isBinary));
  if (v1 && f.role === 'publish') joined(s);
  // socket.io: the handshake starts with the server's open packet.
}

function joined(s: Sock): void {
  if (!s.subscribed) {
    s.subscribed = true;
    s.joinedOnce = true;
    n.subscribed++;
  }
  s.lastN = -1;
  s.joined?.(true);
}

function onFanout(s: Sock, i: number, ws: WebSocket, data: Buffer, isBinary: boolean): void {
  const text = isBinary ? '' : data.toString('latin1');
  if (fanout!.dialect === 'socket.io') {
    if (text.startsWith('42["pub",')) return receive(s, i, text);
    if (text === '2') return void ws.send('3'); // engine.io ping
    if (text.startsWith('0{')) return void ws.send('40'); // engine.io open: join "/"
    if (text.startsWith('40')) {
      if (fanout!.role === 'publish') joined(s);
      else ws.send(`420${JSON.stringify(['subscribe', topicOf(i)])}`);
      return;
    }
    if (text.startsWith('430')) return joined(s); // the subscribe's ack
  } else {
    if (text.startsWith('{"type":"pub"')) return receive(s, i, text);
    if (text.startsWith('{"type":"subscribed"')) return joined(s);
    if (text.startsWith('{"type":"published"')) {
      const ack = JSON.parse(text) as { topic: string; offset: number; id?: number };
      topics.acked++;
      if (ack.offset > (topics.lastAcked ?? 0)) topics.lastAcked = ack.offset;
      const r = topicRange(topics, ack.topic);
      if (ack.offset > (r.lastAcked ?? 0)) r.lastAcked = ack.offset;
      answered(s, ack.id);
      return;
    }
    if (text.startsWith('{"type":"error"') && fanout!.role === 'publish') {
      topics.publishErrors++;
      answered(s, (JSON.parse(text) as { id?: number }).id);
      return;
    }
  }
  n.foreign++;
}

/** The request `id` of socket `s` got its answer (an ack or an error). */
function answered(s: Sock, id: number | undefined): void {
  const k = id === undefined ? -1 : s.pendSeq.indexOf(id);
  if (k < 0) return;
  s.pendSeq.splice(k, 1);
  s.pendAt.splice(k, 1);
}

/** The number after `key` in `text` (NaN when absent). */
function numberAfter(text: string, key: string): number {
  const j = text.indexOf(key);
  return j < 0 ? Number.NaN : Number.parseFloat(text.slice(j + key.length, j + key.length + 24));
}

/** Counts a delivery received at `at` of a publication sent at `sentAt`. */
function delivery(at: number, sentAt: number): void {
  n.delivered++;
  P.deliveries++;
  P.firstDeliveryAt ??= at;
  P.lastDeliveryAt = at;
  let t = latencies.get(P);
  if (!t) {
    t = new Map();
    latencies.set(P, t);
  }
  tally(t, at - sentAt);
}

/** A publication arrived on socket `i`. */
function receive(s: Sock, i: number, text: string): void {
  const at = now();
  const num = numberAfter(text, '"n":');
  const sentAt = numberAfter(text, '"t":');
  if (!(Number.isInteger(num) && num >= 0 && num < maxPubs && sentAt > 0)) {
    n.foreign++;
    return;
  }
  delivery(at, sentAt);
  const k = i * maxPubs + num;
  if (received[k]! > 0) n.duplicates++;
  if (received[k]! < 255) received[k]!++;
  if (num < s.lastN) P.reordered++;
  s.lastN = num;
}

/**
 * One publication's text: data `{"n":..,"t":..,"p":"x.."}` of `size` bytes, framed (wsdrain.v1:
 * with the publication's number as the request's `id`).
 */
function publication(num: number, sentAt: number, size: number, topic: string): string {
  const head = `{"n":${num},"t":${sentAt},"p":"`;
  const data = `${head}${'x'.repeat(Math.max(0, size - head.length - 2))}"}`;
  return fanout!.dialect === 'socket.io'
    ? `42["publish",${JSON.stringify(topic)},${data}]`
    : `{"type":"publish","topic":${JSON.stringify(topic)},"data":${data},"id":${num}}`;
}

let stopPublishing = false;

/**
 * Sends what the parent asked for from socket 0 (the socket it has now: one reopened after a
 * close too), paced, stamping each with its send time, until done or stopped. With `topics`,
 * publication n goes to topic n mod `topics`. A wsdrain.v1 publication waits for its ack as
 * an echo waits for its reply (unanswered at a close, timed out).
 */
async function publish(m: Extract<ToClient, { type: 'publish' }>): Promise<void> {
  let sent = 0;
  let skipped = 0;
  let firstAt = Number.NaN;
  let lastAt = Number.NaN;
  const topic = (num: number): string => (fanout!.topics ? topicOf(0, num) : topicOf(0));
  const s = socks[0]!;
  stopPublishing = false;
  const one = (num: number): void => {
    const ws = s.ws;
    if (ws?.readyState !== WebSocket.OPEN) {
      skipped++;
      return;
    }
    const t = now();
    if (fanout!.dialect === 'wsdrain.v1') {
      s.pendSeq.push(num);
      s.pendAt.push(t);
    }
    ws.send(publication(num, t, m.size, topic(num)));
    sent++;
    if (Number.isNaN(firstAt)) firstAt = t;
    lastAt = t;
  };
  const t0 = now();
  for (let k = 0; k < m.count && !stopPublishing; k++) {
    if (m.perSecond > 0) {
      const wait = t0 + (k * 1000) / m.perSecond - now();
      if (wait > 1) await sleep(wait);
      if (stopPublishing) break;
    }
    one(m.first + k);
  }
  send({ type: 'published', sent, firstAt, lastAt, skipped });
}

/**
 * Each phase's latency tally, and what arrived of its expected publications at each socket
 * that ever subscribed (one that closed since counts: what it missed is missing).
 */
function fanoutResults(): void {
  for (const [p, t] of latencies) p.latency = tallyPairs(t);
  if (fanout?.role !== 'subscribe') return;
  for (const [p, e] of expects) {
    let subscribers = 0;
    let missing = 0;
    let duplicates = 0;
    for (let i = 0; i < count; i++) {
      if (socks[i]!.stalled || !socks[i]!.joinedOnce) continue;
      subscribers++;
      for (let num = e.first; num < e.first + e.count; num++) {
        const c = num < maxPubs ? received[i * maxPubs + num]! : 0;
        if (c === 0) missing++;
        else duplicates += c - 1;
      }
    }
    p.expected = subscribers * e.count;
    p.missing = missing;
    p.duplicates = duplicates;
  }
}

function sendOne(s: Sock, i: number): void {
  const seq = s.seq++;
  s.pendSeq.push(seq);
  s.pendAt.push(now());
  s.ws!.send(payload(i, seq));
  n.sent++;
}

/** The reply the message `seq` of socket `i` must get: its echo, or the work's `done`. */
function answer(i: number, seq: number): string {
  return workMs > 0 ? `{"id":"${i}:${seq}","done":true}` : payload(i, seq);
}

function onReply(s: Sock, i: number, data: Buffer, isBinary: boolean): void {
  const text = isBinary ? '' : data.toString();
  if (s.pendSeq.length > 0 && text === answer(i, s.pendSeq[0]!)) {
    s.pendSeq.shift();
    const rtt = now() - s.pendAt.shift()!;
    record(rttSince, rtt);
    record(P.rtt, rtt);
    n.echoed++;
    if ((++P.replies & 3) === 0 && P.rttSamples.length < MAX_SAMPLES)
      P.rttSamples.push(round2(rtt));
  } else {
    // Not the next echo: wrong socket, wrong order or altered. Drop what it skips over.
    n.mismatched++;
    const m = /"n":(\d+)|"id":"\d+:(\d+)"/.exec(text);
    const k = m ? s.pendSeq.indexOf(Number(m[1] ?? m[2])) : -1;
    if (k >= 0 && text === answer(i, s.pendSeq[k]!)) {
      s.pendSeq.splice(0, k + 1);
      s.pendAt.splice(0, k + 1);
    }
  }
  if (running && s.ws?.readyState === WebSocket.OPEN) sendOne(s, i);
}

/**
 * What socket `s` was still waiting for when its connection closed with `code`: the server
 * answers everything it read before its close frame (1012, 1001), so these crossed that frame
 * and the server counts them late; after any other close they are lost.
 */
function unansweredAtClose(s: Sock, t: number, code: number): void {
  if (s.pendSeq.length === 0) return;
  bump(P.unanswered, code, s.pendSeq.length);
  for (const at of s.pendAt) {
    if (P.unansweredAgeMs.length < MAX_KEPT) P.unansweredAgeMs.push(round2(t - at));
  }
  if (code !== 1012 && code !== 1001) n.lostOnOtherClose += s.pendSeq.length;
  s.pendSeq = [];
  s.pendAt = [];
}

/** Records a close of an open socket of index `i`. */
function recordClose(s: Sock, t: number, code: number, reason: string): void {
  lastCloseAt = t;
  P.closeTimes.push(rel(t));
  bump(P.codes, code);
  bump(P.reasons, /^(wsdrain:\w+)/.exec(reason)?.[1] ?? (reason ? 'other' : '(none)'));
  const retry = /retry=(\d+)/.exec(reason);
  if (retry) P.hintRetries.push(Number(retry[1]));
  if (marked && ++s.closes === 1) n.closedOnce++;
}

function onClose(i: number, ws: WebSocket, code: number, reason: string): void {
  const s = socks[i]!;
  if (s.ws !== ws) return;
  const t = now();
  s.ws = undefined;
  n.open--;
  s.joined?.(false);
  if (s.subscribed) {
    s.subscribed = false;
    n.subscribed--;
  }
  clearTimeout(s.timer);
  s.timer = undefined;
  recordClose(s, t, code, reason);
  unansweredAtClose(s, t, code);
  if (stopping) return;
  if (final || reconnectMode === 'none') {
    checkAllClosed();
    return;
  }
  s.closedAt = t;
  s.hintMs = reconnectMode === 'hint' ? (parseHint(reason)?.retryMs ?? 0) : 0;
  n.reconnecting++;
  if (s.hintMs > 0) setTimeout(() => void reconnect(i), s.hintMs);
  else void reconnect(i);
}

function recordReopen(s: Sock, t: number, startedAt: number): void {
  if (!marked) return;
  P.reopenTimes.push(rel(t));
  P.attemptTimes.push(rel(startedAt));
  P.handshakeMs.push(round2(t - startedAt));
  P.reconnectMs.push(round2(t - s.closedAt));
  phaseLastReopenAt = t;
}

async function reconnect(i: number): Promise<void> {
  const s = socks[i]!;
  for (let a = 0; a < (o.maxAttempts ?? 500) && !final && !stopping; a++) {
    const r = await dial((ws) => {
      n.reconnecting--;
      recordReopen(s, now(), ws.startedAt);
      if (marked) {
        P.hintMs.push(s.hintMs);
        P.beyondHintMs.push(round2(now() - s.closedAt - s.hintMs));
      }
      adopt(i, ws);
    });
    if (typeof r !== 'string') return;
    if (marked) bump(P.refusals, r);
    await sleep((o.retryDelayMs ?? 20) * (0.5 + Math.random()));
  }
  n.reconnecting--;
  if (!final && !stopping) n.gaveUp++;
  checkAllClosed();
}

/**
 * `ws`, stamped with the time each attempt started, from the rotating source addresses. With
 * `owner`, the `subscribe` and `publish` requests it sends wait for their answers in the
 * owner's pending list (see {@link onWire}).
 */
class StampedWebSocket extends WebSocket {
  readonly startedAt: number;
  constructor(address: string, protocols?: string | string[], owner?: Sock) {
    const t = now();
    super(address, protocols, {
      localAddress: localAddress(),
      perMessageDeflate: o.deflate ?? false,
    });
    this.startedAt = t;
    this.on('error', () => {}); // the client listens too; never unhandled
    if (!owner) return;
    const send = this.send.bind(this);
    this.send = ((data: unknown, ...rest: unknown[]) => {
      if (typeof data === 'string' && /^\{"type":"(subscribe|publish)"/.test(data)) {
        const id = numberAfter(data, '"id":');
        if (Number.isInteger(id)) {
          owner.pendSeq.push(id);
          owner.pendAt.push(now());
        }
      }
      (send as (...a: unknown[]) => void)(data, ...rest);
    }) as WebSocket['send'];
  }
}

// ---------------------------------------------------------------- recovering subscribers

/** Subscribers that are WsdrainClient subscriptions (recovering across reconnects). */
const recovering = o.client === 'wsdrain' && fanout?.role === 'subscribe';

/**
 * The wire check: what the server sent on socket `s`'s current connection, in order; and the
 * answers to its requests.
 */
function onWire(s: Sock, data: Buffer, isBinary: boolean): void {
  if (isBinary) return;
  const text = data.toString('latin1', 0, 300);
  if (text.startsWith('{"type":"pub"')) {
    const offset = numberAfter(text, '"offset":');
    if (offset <= s.wireLast) topics.wireDuplicates++;
    else if (offset > s.wireLast + 1) topics.wireHoles++;
    s.wireLast = Math.max(s.wireLast, offset);
  } else if (text.startsWith('{"type":"subscribed"')) {
    // From here the server sends what follows this offset (the client's `since`, recovered).
    s.wireLast = numberAfter(text, '"offset":');
    answered(s, numberAfter(text, '"id":'));
  } else if (text.startsWith('{"type":"error"')) {
    answered(s, (JSON.parse(data.toString()) as { id?: number }).id);
  }
}

/** The answer to a subscription (the first, or one after a reconnect or a hole). */
function onSubscribed(s: Sock, offset: number, recovered: boolean | undefined): void {
  s.answers++;
  if (s.answers > s.opens) topics.resubscribes++;
  if (recovered === undefined) topics.fresh++;
  else if (recovered) topics.recovered++;
  else {
    topics.unrecovered++;
    // What lies between is lost to this client; it goes on from the topic's last offset.
    if (s.pos >= 0 && offset > s.pos) topics.missing += offset - s.pos;
    s.pos = offset;
  }
  if (s.start < 0) {
    s.start = offset;
    s.pos = offset;
    topics.subscribers++;
  }
  if (!s.subscribed) {
    s.subscribed = true;
    n.subscribed++;
  }
  s.joined?.(true);
}

/** A publication handed to the handler of socket `s`'s subscription. */
function onHandled(s: Sock, data: unknown, offset: number): void {
  const at = now();
  const sentAt = Number((data as { t?: unknown } | null)?.t);
  if (offset <= s.pos) topics.duplicates++;
  else if (offset > s.pos + 1) topics.missing += offset - s.pos - 1;
  s.pos = Math.max(s.pos, offset);
  topics.handled++;
  if (sentAt > 0) delivery(at, sentAt);
  if (!s.replaying) return;
  if (sentAt < s.reopenAt) {
    s.replayed++;
    s.replayLastAt = at;
  } else caughtUp(s);
}

/** The reconnect of `s` is over: everything published before it opened is handled. */
function caughtUp(s: Sock): void {
  if (!s.replaying) return;
  s.replaying = false;
  n.replaying--;
  P.replayed.push(s.replayed);
  topics.replayed += s.replayed;
  const done = s.replayed > 0 ? s.replayLastAt : s.reopenAt;
  if (s.replayed > 0) P.replayMs.push(round2(done - s.reopenAt));
  P.caughtUpTimes.push(rel(done));
  if (!Number.isNaN(s.closedAtForReplay)) P.catchUpMs.push(round2(done - s.closedAtForReplay));
}

/** wsdrain/client's reconnecting client for socket `i`: true once it opened (subscribed). */
function startClient(i: number): Promise<boolean> {
  const s = socks[i]!;
  // Its requests wait for their answers (unanswered at a close: see unansweredAtClose).
  const Socket = class extends StampedWebSocket {
    constructor(address: string, protocols?: string | string[]) {
      super(address, protocols, recovering ? s : undefined);
    }
  };
  const client = new WsdrainClient(url, {
    WebSocket: Socket as unknown as WebSocketConstructorLike,
    hintJitter: o.hintJitter,
    maxRetries: o.maxRetries ?? 50,
    ...(recovering ? { protocol: PROTOCOL_V1 } : {}),
  });
  let isOpen = false;
  let first = true;
  if (recovering) {
    client.subscribe(topicOf(i), (data, info) => onHandled(s, data, info.offset), {
      onSubscribed: (e) => onSubscribed(s, e.offset, e.recovered),
    });
  }
  client.on('open', () => {
    const t = now();
    const socket = client.socket as unknown as StampedWebSocket | null;
    isOpen = true;
    n.open++;
    s.ws = socket ?? undefined;
    if (first && socket?.extensions.includes('permessage-deflate')) n.deflated++;
    first = false;
    if (recovering) {
      s.opens++;
      s.wireLast = Number.POSITIVE_INFINITY; // until the subscription's answer
      socket?.on('message', (data: Buffer, isBinary: boolean) => onWire(s, data, isBinary));
    }
    if (!Number.isNaN(s.closedAt)) {
      n.reconnecting--;
      recordReopen(s, t, socket?.startedAt ?? t);
      if (recovering && marked) {
        caughtUp(s); // a reconnect before the last one caught up
        s.replaying = true;
        n.replaying++;
        s.closedAtForReplay = s.closedAt;
        s.reopenAt = t;
        s.replayed = 0;
      }
      s.closedAt = Number.NaN;
    }
  });
  /** Closed for good by this process (in the final phase), not given up. */
  let ended = false;
  client.on('close', ({ code, reason, willReconnect }) => {
    const t = now();
    if (ended) return;
    if (isOpen) {
      isOpen = false;
      n.open--;
      s.ws = undefined;
      if (s.subscribed) {
        s.subscribed = false;
        n.subscribed--;
      }
      recordClose(s, t, code, reason);
      unansweredAtClose(s, t, code);
      if (willReconnect && !final) {
        n.reconnecting++;
        s.closedAt = t;
      } else if (willReconnect) {
        // The final phase: no reconnect, as for the crowd's own sockets.
        ended = true;
        client.close();
        checkAllClosed();
        return;
      }
    } else if (marked) bump(P.refusals, code);
    if (!willReconnect) {
      if (!Number.isNaN(s.closedAt)) n.reconnecting--;
      s.closedAt = Number.NaN;
      n.gaveUp++;
    }
    checkAllClosed();
  });
  client.on('error', () => {
    if (!isOpen && marked) P.connectErrors++;
  });
  client.on('reconnecting', ({ reason }) => {
    if (marked) P.delays[reason]++;
  });
  return new Promise((resolve) => {
    if (recovering) s.joined = (ok) => resolve(ok);
    else client.once('open', () => resolve(true));
    client.on('close', ({ willReconnect }) => {
      if (!willReconnect) resolve(false);
    });
  });
}

function checkAllClosed(): void {
  if (!marked || allClosedSent || n.open > 0 || n.reconnecting > 0) return;
  allClosedSent = true;
  send({ type: 'allClosed', at: Number.isNaN(lastCloseAt) ? now() : lastCloseAt });
}

/** Counts messages unanswered for longer than echoTimeoutMs on open sockets (once each). */
function checkTimeouts(): void {
  const limit = now() - (o.echoTimeoutMs ?? 10_000);
  for (const s of socks) {
    if (!s.ws) continue;
    for (let k = 0; k < s.pendAt.length && s.pendAt[k]! < limit; k++) {
      if (s.pendSeq[k]! > s.timedOutSeq) {
        n.timedOut++;
        s.timedOutSeq = s.pendSeq[k]!;
      }
    }
  }
}

function status(): void {
  const { open, reconnecting, closedOnce, gaveUp, sent, echoed, mismatched, timedOut } = n;
  const { subscribed, delivered, duplicates, replaying } = n;
  send({
    type: 'status',
    status: {
      at: now(),
      ...{ open, reconnecting, closedOnce, gaveUp, sent, echoed, mismatched, timedOut },
      ...{ subscribed, delivered, duplicates, replaying },
      lostOnOtherClose: n.lostOnOtherClose,
      closes: P.closeTimes.length,
      reopens: P.reopenTimes.length,
      refusals: Object.values(P.refusals).reduce((a, b) => a + b, 0),
      lastReopenAt: phaseLastReopenAt,
      rtt: rttSince,
    },
  });
  rttSince = newHist();
}

function results(): CrowdResults {
  P.durationMs = round2(now() - phaseAt); // the current phase, so far
  let pendingOpen = 0;
  const closesPerSocket: Record<string, number> = {};
  for (const s of socks) {
    if (s.ws) pendingOpen += s.pendSeq.length;
    if (s.closes > 0) bump(closesPerSocket, s.closes);
  }
  const rtt = newHist();
  for (const p of Object.values(phases)) mergeHist(rtt, p.rtt);
  fanoutResults();
  // Where the recovering subscribers stand (those still replaying count as they are), in all
  // and per topic.
  for (const r of [topics, ...Object.values(topics.byTopic)]) {
    r.startMin = r.startMax = r.endMin = r.endMax = null;
  }
  for (const r of Object.values(topics.byTopic)) r.subscribers = 0;
  socks.forEach((s, i) => {
    caughtUp(s);
    if (s.start < 0) return;
    for (const r of [topics, topicRange(topics, topicOf(i))]) {
      r.startMin = Math.min(r.startMin ?? s.start, s.start);
      r.startMax = Math.max(r.startMax ?? s.start, s.start);
      r.endMin = Math.min(r.endMin ?? s.pos, s.pos);
      r.endMax = Math.max(r.endMax ?? s.pos, s.pos);
    }
    topicRange(topics, topicOf(i)).subscribers++;
  });
  const { reconnecting: _, duplicates: __, replaying: ___, ...counts } = n;
  return { ...counts, pendingOpen, closesPerSocket, phases, rtt, topics: { ...topics } };
}

onParent<ToClient>((m) => {
  switch (m.type) {
    case 'phase': {
      const at = now();
      P.durationMs = round2(at - phaseAt);
      phases[m.label] ??= emptyPhase();
      P = phases[m.label]!;
      phaseT = m.t;
      phaseAt = at;
      phaseLastReopenAt = null;
      marked = true;
      final = m.final;
      if (m.expect) expects.set(P, m.expect);
      allClosedSent = false;
      const start = !running && windowSize > 0 && !final;
      running = windowSize > 0 && !final;
      if (start) {
        socks.forEach((s, i) => {
          if (s.ws && !s.stalled) for (let k = 0; k < windowSize; k++) sendOne(s, i);
        });
      }
      checkAllClosed();
      break;
    }
    case 'results':
      send({ type: 'results', results: results() });
      break;
    case 'publish':
      void publish(m);
      break;
    case 'stopPublish':
      stopPublishing = true;
      break;
    case 'stop':
      stopping = true;
      for (const s of socks) s.ws?.terminate();
      process.exit(0);
  }
});

setInterval(status, o.statusEveryMs ?? 1000);
setInterval(checkTimeouts, 1000);

// Open every socket, `concurrency` at a time, `attempts` tries each.
const connectOnce =
  o.client === 'wsdrain'
    ? startClient
    : fanout
      ? connectFanout
      : async (i: number): Promise<boolean> =>
          typeof (await dial((ws) => adoptFirst(i, ws))) !== 'string';
// WsdrainClient retries by itself, and so does connectFanout (until a socket opens).
const attempts = o.client === 'wsdrain' || fanout ? 1 : (o.attempts ?? 3);
let next = 0;
const lane = async (): Promise<void> => {
  while (next < count && !stopping) {
    const i = next++;
    let ok = false;
    for (let a = 0; a < attempts && !ok; a++) ok = await connectOnce(i);
    if (ok) n.connected++;
    else n.failed++;
  }
};
const ticker = setInterval(
  () => send({ type: 'progress', connected: n.connected, failed: n.failed }),
  100,
);
await Promise.all(Array.from({ length: Math.min(o.concurrency ?? 200, count) }, lane));
clearInterval(ticker);
send({ type: 'ready', connected: n.connected, failed: n.failed });
