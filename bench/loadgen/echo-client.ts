/**
 * Echo throughput client process (forked by throughput.ts). Opens `--connections` sockets to
 * `--url`; on `start`, each keeps `--window` messages outstanding (a new one goes out as each
 * reply comes back). Messages are `--size`-byte text: a 10-digit sequence number, '|', and
 * padding; every reply is checked (text, size, and the sequence number due on that
 * connection: replies must keep the order of the messages).
 *
 * Replies are counted between `--warmup` and `--warmup` + `--duration` ms after the start;
 * round-trip times of every 4th reply in that window are kept for percentiles.
 */
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { flags, onParent, toParent } from '../lib/client-proc.js';
import { now } from '../lib/clock.js';
import type { EchoResults, FromEcho, ToEcho } from './echo.js';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    connections: { type: 'string', default: '100' },
    window: { type: 'string', default: '16' },
    size: { type: 'string', default: '64' },
    warmup: { type: 'string', default: '1000' },
    duration: { type: 'string', default: '5000' },
    'addr-prefix': { type: 'string', default: '127.0.201' },
  },
});
const { int, fail } = flags('echo client', values);
const url = values.url ?? fail('--url is required');
const connections = int('connections');
const window = Math.max(1, int('window'));
const size = Math.max(12, int('size'));
const warmup = int('warmup');
const duration = int('duration');

const send: (m: FromEcho) => void = toParent;

const PAD = 'x'.repeat(size);
const payload = (seq: number): string => `${String(seq).padStart(10, '0')}|${PAD}`.slice(0, size);

interface Conn {
  ws: WebSocket;
  /** Next sequence number to send, and the one the next reply must carry. */
  nextSend: number;
  nextReply: number;
  /** Send times of the outstanding messages, a ring indexed by sequence number. */
  sentAt: Float64Array;
}

const conns: Conn[] = [];
let running = false;
let measuring = false;
let replies = 0;
let repliesTotal = 0;
let sent = 0;
let mismatches = 0;
let closed = 0;
let windowStart = Number.NaN;
let windowEnd = Number.NaN;
const rtts: number[] = [];

function connect(i: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const localAddress = `${values['addr-prefix']}.${(i % 250) + 1}`;
    const ws = new WebSocket(url, { localAddress, perMessageDeflate: false });
    ws.once('error', reject);
    ws.once('open', () => {
      ws.off('error', reject);
      ws.on('error', () => {});
      const c: Conn = { ws, nextSend: 0, nextReply: 0, sentAt: new Float64Array(window) };
      conns.push(c);
      ws.on('message', (data: Buffer, isBinary: boolean) => onReply(c, data, isBinary));
      ws.on('close', () => {
        if (running) closed++;
      });
      resolve();
    });
  });
}

function sendOne(c: Conn): void {
  c.sentAt[c.nextSend % window] = now();
  c.ws.send(payload(c.nextSend++));
  sent++;
}

function onReply(c: Conn, data: Buffer, isBinary: boolean): void {
  const seq = c.nextReply++;
  if (isBinary || data.length !== size || Number(data.toString('latin1', 0, 10)) !== seq) {
    mismatches++;
  }
  repliesTotal++;
  if (measuring) {
    replies++;
    if ((replies & 3) === 0) rtts.push(now() - c.sentAt[seq % window]!);
  }
  if (running) sendOne(c);
}

function start(): void {
  running = true;
  setTimeout(() => {
    measuring = true;
    windowStart = now();
  }, warmup);
  setTimeout(() => {
    measuring = false;
    windowEnd = now();
    running = false;
    // the replies still on their way are not counted; let them arrive before reporting
    setTimeout(() => send({ type: 'results', results: results() }), 200);
  }, warmup + duration);
  for (const c of conns) for (let k = 0; k < window; k++) sendOne(c);
}

function results(): EchoResults {
  rtts.sort((a, b) => a - b);
  const q = (p: number): number | null =>
    rtts.length
      ? Math.round(rtts[Math.min(rtts.length - 1, Math.floor(p * rtts.length))]! * 100) / 100
      : null;
  return {
    connections: conns.length,
    replies,
    windowMs: windowEnd - windowStart,
    repliesTotal,
    sent,
    mismatches,
    closed,
    rttP50Ms: q(0.5),
    rttP99Ms: q(0.99),
  };
}

onParent<ToEcho>((m) => {
  switch (m.type) {
    case 'start':
      start();
      break;
    case 'stop':
      for (const c of conns) c.ws.terminate();
      process.exit(0);
  }
});

// connect 50 at a time
for (let i = 0; i < connections; i += 50) {
  const batch: Promise<void>[] = [];
  for (let j = i; j < Math.min(connections, i + 50); j++) batch.push(connect(j));
  try {
    await Promise.all(batch);
  } catch (err) {
    fail(`connect: ${(err as Error).message}`);
  }
}
send({ type: 'ready', connected: conns.length });
