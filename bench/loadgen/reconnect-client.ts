/**
 * Reconnecting load-generator client process (forked by reconnect.ts). Opens `--count` sockets
 * to `--url` (at most `--concurrency` handshakes at a time, source addresses rotating over
 * `--addr-prefix`.1 .. .250) and keeps them open: whenever the server closes one, it
 * reconnects at once (the drain's retry hint is read and recorded, not honoured). A failed
 * reconnect attempt (refused, reset, 503, handshake timeout) is a *refusal*; the next attempt
 * follows `--retry-delay` ms later, at most `--max-attempts` times per close.
 *
 * Recorded after the parent's mark: every close (code, hint kind), every refusal (by cause),
 * and each reconnect latency: from the 'close' event to the new socket's 'open'.
 */
import { parseArgs } from 'node:util';
import type { WebSocket } from 'ws';
import { connectAll, DIAL_FLAGS, flags, onParent, readDial, toParent } from '../lib/client-proc.js';
import { now } from '../lib/clock.js';
import type { FromReconnect, ReconnectResults, ToReconnect } from './reconnect.js';

const { values } = parseArgs({
  options: {
    ...DIAL_FLAGS,
    'addr-prefix': { type: 'string', default: '127.0.101' },
    'retry-delay': { type: 'string', default: '20' },
    'max-attempts': { type: 'string', default: '500' },
  },
});
const f = flags('reconnect client', values);
const { int } = f;
const { count, concurrency, dialer } = readDial(values, f);
const retryDelay = int('retry-delay');
const maxAttempts = int('max-attempts');

const send: (m: FromReconnect) => void = toParent;

const sockets: (WebSocket | undefined)[] = new Array(count);
const closesPerSocket = new Uint16Array(count);
let markAt = Number.NaN;
let stopping = false;
let open = 0;
/** Sockets closed by the server and not open again yet. */
let reconnecting = 0;
let lost = 0;
let closes = 0;
let earlyCloses = 0;
let refusals = 0;
let lastCloseAt = Number.NaN;
let lastReopenAt = Number.NaN;
const codes: Record<string, number> = {};
const reasons: Record<string, number> = {};
const refusalCauses: Record<string, number> = {};
const latencies: number[] = [];
const hintRetries: number[] = [];

function adopt(i: number, ws: WebSocket): void {
  sockets[i] = ws;
  open++;
  ws.on('close', (code, reason) => onClosed(i, ws, code, reason.toString()));
}

function onClosed(i: number, ws: WebSocket, code: number, reason: string): void {
  if (sockets[i] !== ws) return;
  sockets[i] = undefined;
  open--;
  if (stopping) return;
  const at = now();
  if (Number.isNaN(markAt) || at < markAt) earlyCloses++;
  else {
    closes++;
    lastCloseAt = at;
    codes[code] = (codes[code] ?? 0) + 1;
    const kind = /^(wsdrain:\w+)/.exec(reason)?.[1] ?? (reason ? 'other' : '(none)');
    reasons[kind] = (reasons[kind] ?? 0) + 1;
    const retry = /retry=(\d+)/.exec(reason);
    if (retry) hintRetries.push(Number(retry[1]));
    closesPerSocket[i]!++;
  }
  void reconnect(i, at);
}

async function reconnect(i: number, closedAt: number): Promise<void> {
  reconnecting++;
  try {
    for (let a = 0; a < maxAttempts && !stopping; a++) {
      const r = await dialer.attempt();
      if (stopping) {
        if (typeof r !== 'string') r.terminate();
        return;
      }
      if (typeof r !== 'string') {
        const at = now();
        if (!Number.isNaN(markAt) && closedAt >= markAt) {
          latencies.push(Math.round((at - closedAt) * 100) / 100);
          lastReopenAt = at;
        }
        adopt(i, r);
        return;
      }
      if (!Number.isNaN(markAt)) {
        refusals++;
        refusalCauses[r] = (refusalCauses[r] ?? 0) + 1;
      }
      await new Promise((resolve) => setTimeout(resolve, retryDelay));
    }
    if (!stopping) lost++;
  } finally {
    reconnecting--;
  }
}

/** One try at socket i: the opened socket is adopted. */
async function connectOnce(i: number): Promise<boolean> {
  const r = await dialer.attempt();
  if (typeof r === 'string') return false;
  adopt(i, r);
  return true;
}

function results(): ReconnectResults {
  const perSocket: Record<string, number> = {};
  for (const n of closesPerSocket) if (n > 0) perSocket[n] = (perSocket[n] ?? 0) + 1;
  const rel = (t: number): number | null =>
    Number.isNaN(t) ? null : Math.round((t - markAt) * 100) / 100;
  return {
    open,
    reconnecting,
    lost,
    closes,
    earlyCloses,
    codes,
    reasons,
    refusals,
    refusalCauses,
    latencies,
    hintRetries,
    closesPerSocket: perSocket,
    lastCloseMs: rel(lastCloseAt),
    lastReopenMs: rel(lastReopenAt),
  };
}

let reporting = false;
onParent<ToReconnect>((m) => {
  switch (m.type) {
    case 'mark':
      markAt = m.t;
      if (!reporting) {
        reporting = true;
        setInterval(() => send({ type: 'status', open, reconnecting, closes, refusals, lost }), 20);
      }
      break;
    case 'results':
      send({ type: 'results', results: results() });
      break;
    case 'stop':
      stopping = true;
      for (const ws of sockets) ws?.terminate();
      process.exit(0);
  }
});

await connectAll({
  count,
  concurrency,
  attempts: 3,
  connect: connectOnce,
  report: send,
  tickEveryMs: 100,
});
