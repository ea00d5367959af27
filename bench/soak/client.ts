/**
 * Soak client process (forked with IPC by soak/clients.ts, run as `node --import tsx`).
 *
 * Opens `--count` sockets to `--url` (at most `--concurrency` handshakes at a time, source
 * addresses rotating over `--addr-prefix`.1 .. .250) and keeps them open for the whole soak:
 *
 * - every socket sends a small text message every `--message-every` ms (random phase) and
 *   checks each reply: the echo handler answers in order, so a reply must be the oldest
 *   message still waiting on that socket; anything else is a mismatch. A message still
 *   unanswered `--echo-timeout` ms after it was sent, on an open socket, is timed out.
 * - a socket the server closes is reconnected (any code, unless the parent said `final`):
 *   after the delay of the reconnect hint in the close reason (`wsdrain:restart;retry=830`)
 *   unless `--ignore-hints`, then at once; a failed attempt is a refusal, retried after
 *   `--retry-delay` ms (with jitter).
 * - at each close, messages sent on that socket and not answered are counted by close code,
 *   with how long before the close they were sent: on a drain (1012, 1001) those are the
 *   messages that crossed the server's close frame, which the server counts as `late` and
 *   must not answer (RFC 6455).
 *
 * Stats go to the parent every second, the full results on request (protocol.ts).
 */
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { parseHint } from 'wsdrain';
import { connectAll, DIAL_FLAGS, flags, onParent, readDial, toParent } from '../lib/client-proc.js';
import { now } from '../lib/clock.js';
import { newHist, record } from './hist.js';
import {
  type ClientResults,
  type ClientStats,
  emptyLabelResults,
  type FromSoakClient,
  type LabelResults,
  type ToSoakClient,
} from './protocol.js';

const { values } = parseArgs({
  options: {
    ...DIAL_FLAGS,
    'message-every': { type: 'string', default: '2000' },
    'echo-timeout': { type: 'string', default: '10000' },
    'addr-prefix': { type: 'string', default: '127.0.201' },
    'retry-delay': { type: 'string', default: '100' },
    'ignore-hints': { type: 'boolean', default: false },
  },
});
const f = flags('soak client', values);
const { int } = f;
const { count, concurrency, dialer } = readDial(values, f);
const messageEvery = int('message-every');
const echoTimeout = int('echo-timeout');
const retryDelay = int('retry-delay');
const ignoreHints = values['ignore-hints'] === true;

/** Unanswered-message ages kept per label (the counts are exact, the ages a sample). */
const MAX_AGES = 20_000;

interface Sock {
  ws: WebSocket | undefined;
  /** Next sequence number to send (per socket index, across reconnects). */
  seq: number;
  /** Messages sent and not answered yet, oldest first. */
  pendSeq: number[];
  pendAt: number[];
  /** Highest sequence number already counted as timed out. */
  timedOutSeq: number;
  timer: NodeJS.Timeout | undefined;
  closedAt: number;
  hintMs: number;
}

const send: (m: FromSoakClient) => void = toParent;

const socks: Sock[] = Array.from({ length: count }, () => ({
  ws: undefined,
  seq: 0,
  pendSeq: [],
  pendAt: [],
  timedOutSeq: -1,
  timer: undefined,
  closedAt: Number.NaN,
  hintMs: 0,
}));
let label = 'connect';
let final = false;
let stopping = false;
let open = 0;
let reconnecting = 0;
let connected = 0;
let failed = 0;
let sent = 0;
let echoed = 0;
let mismatched = 0;
let timedOut = 0;
let lostOnOtherClose = 0;
let rttSince = newHist();
const rttAll = newHist();
const labels: Record<string, LabelResults> = {};

function current(): LabelResults {
  if (!labels[label]) labels[label] = emptyLabelResults();
  return labels[label]!;
}

const payload = (i: number, seq: number): string => `{"op":"echo","s":${i},"n":${seq}}`;

function adopt(i: number, ws: WebSocket): void {
  const s = socks[i]!;
  s.ws = ws;
  open++;
  ws.on('message', (data: Buffer, isBinary: boolean) => onReply(s, i, data, isBinary));
  ws.once('close', (code: number, reason: Buffer) => onClose(i, ws, code, reason.toString()));
  if (messageEvery > 0) {
    const tick = (): void => {
      if (ws.readyState !== WebSocket.OPEN) return;
      const seq = s.seq++;
      s.pendSeq.push(seq);
      s.pendAt.push(now());
      ws.send(payload(i, seq));
      sent++;
    };
    // A random phase, then a fixed period. (Not timer.refresh(): that would repeat the
    // random first delay, not the period.) clearTimeout() clears either timer.
    s.timer = setTimeout(() => {
      tick();
      s.timer = setInterval(tick, messageEvery);
    }, Math.random() * messageEvery);
  }
}

function onReply(s: Sock, i: number, data: Buffer, isBinary: boolean): void {
  const text = isBinary ? '' : data.toString();
  if (s.pendSeq.length > 0 && text === payload(i, s.pendSeq[0]!)) {
    s.pendSeq.shift();
    record(rttSince, now() - s.pendAt.shift()!);
    echoed++;
    return;
  }
  // Not the next echo: wrong socket, wrong order or altered. Drop what it skips over, if it
  // is one of ours at all.
  mismatched++;
  const m = /"n":(\d+)\}$/.exec(text);
  const k = m ? s.pendSeq.indexOf(Number(m[1])) : -1;
  if (k >= 0 && text === payload(i, s.pendSeq[k]!)) {
    s.pendSeq.splice(0, k + 1);
    s.pendAt.splice(0, k + 1);
  }
}

function onClose(i: number, ws: WebSocket, code: number, reason: string): void {
  const s = socks[i]!;
  if (s.ws !== ws) return;
  const t = now();
  const L = current();
  L.closes[code] = (L.closes[code] ?? 0) + 1;
  const kind = reason.split(';', 1)[0] || '(none)';
  L.reasons[kind] = (L.reasons[kind] ?? 0) + 1;
  const n = s.pendSeq.length;
  if (n > 0) {
    L.unanswered[code] = (L.unanswered[code] ?? 0) + n;
    for (const at of s.pendAt) {
      if (L.unansweredAgeMs.length < MAX_AGES)
        L.unansweredAgeMs.push(Math.round((t - at) * 10) / 10);
    }
    if (code !== 1012 && code !== 1001) lostOnOtherClose += n;
  }
  s.pendSeq = [];
  s.pendAt = [];
  clearTimeout(s.timer);
  s.timer = undefined;
  s.ws = undefined;
  open--;
  if (Number.isNaN(L.firstCloseAt)) L.firstCloseAt = t;
  L.lastCloseAt = t;
  if (stopping) return;
  if (final) {
    checkAllClosed();
    return;
  }
  s.closedAt = t;
  const hint = ignoreHints ? undefined : parseHint(reason);
  s.hintMs = hint?.retryMs ?? 0;
  reconnecting++;
  setTimeout(() => void reconnect(i), s.hintMs);
}

async function reconnect(i: number): Promise<void> {
  const s = socks[i]!;
  for (;;) {
    if (final || stopping) {
      reconnecting--;
      checkAllClosed();
      return;
    }
    const r = await dialer.attempt();
    if (typeof r !== 'string') {
      reconnecting--;
      const L = current();
      const t = now();
      L.reconnectMs.push(Math.round((t - s.closedAt) * 10) / 10);
      L.hintMs.push(s.hintMs);
      L.lastReopenAt = t;
      if (stopping) {
        r.terminate();
        return;
      }
      adopt(i, r);
      return;
    }
    const L = current();
    L.refusals[r] = (L.refusals[r] ?? 0) + 1;
    await new Promise((resolve) => setTimeout(resolve, retryDelay * (0.5 + Math.random())));
  }
}

function checkAllClosed(): void {
  if (final && open === 0 && reconnecting === 0) {
    const L = labels[label];
    send({ type: 'allClosed', at: L?.lastCloseAt ?? now() });
  }
}

/** Counts messages unanswered for longer than --echo-timeout on open sockets (once each). */
function checkTimeouts(): void {
  const limit = now() - echoTimeout;
  for (const s of socks) {
    if (!s.ws) continue;
    for (let k = 0; k < s.pendAt.length && s.pendAt[k]! < limit; k++) {
      if (s.pendSeq[k]! > s.timedOutSeq) {
        timedOut++;
        s.timedOutSeq = s.pendSeq[k]!;
      }
    }
  }
}

function stats(): ClientStats {
  const L = labels[label];
  const st: ClientStats = {
    at: now(),
    label,
    open,
    reconnecting,
    sent,
    echoed,
    mismatched,
    timedOut,
    lostOnOtherClose,
    closes: L ? Object.values(L.closes).reduce((a, b) => a + b, 0) : 0,
    reopens: L?.reconnectMs.length ?? 0,
    refusals: L ? Object.values(L.refusals).reduce((a, b) => a + b, 0) : 0,
    lastReopenAt: L?.lastReopenAt ?? Number.NaN,
    rtt: rttSince,
  };
  for (let k = 0; k < rttSince.length; k++) rttAll[k]! += rttSince[k]!;
  rttSince = newHist();
  return st;
}

function results(): ClientResults {
  let pendingOpen = 0;
  for (const s of socks) if (s.ws) pendingOpen += s.pendSeq.length;
  // Fold the round trips not sent with stats yet into the total.
  for (let k = 0; k < rttSince.length; k++) rttAll[k]! += rttSince[k]!;
  rttSince = newHist();
  return {
    connected,
    failed,
    open,
    sent,
    echoed,
    mismatched,
    timedOut,
    lostOnOtherClose,
    pendingOpen,
    rtt: rttAll,
    labels,
  };
}

/** One try at socket i: the opened socket is adopted. */
async function connectOnce(i: number): Promise<boolean> {
  const ws = await dialer.attempt();
  if (typeof ws === 'string') return false;
  adopt(i, ws);
  return true;
}

onParent<ToSoakClient>((m) => {
  switch (m.type) {
    case 'label':
      label = m.label;
      final = m.final;
      current();
      if (final) checkAllClosed();
      break;
    case 'results':
      send({ type: 'results', results: results() });
      break;
    case 'stop':
      stopping = true;
      for (const s of socks) s.ws?.terminate();
      process.exit(0);
  }
});

setInterval(() => send({ type: 'stats', stats: stats() }), 1000);
setInterval(checkTimeouts, 1000);

({ connected, failed } = await connectAll({
  count,
  concurrency,
  attempts: 3,
  connect: connectOnce,
  report: send,
  tickEveryMs: 250,
  keepGoing: () => !stopping,
}));
