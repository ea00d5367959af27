/**
 * Load-generator client process (forked with IPC by index.ts, run as `node --import tsx`).
 * Opens `--count` sockets to `--url`, at most `--concurrency` handshakes at a time, rotating
 * source addresses over `--addr-prefix`.1 .. .`--addr-count`. A `--stalled` fraction of the
 * sockets stop reading once connected (`--stall-mode drop`: bytes are read and dropped, so the
 * server's FIN is seen; `pause`: nothing is read, a peer that holds its socket until the
 * server's deadline); the others send a message every `--message-every` ms
 * (0 = no traffic). Records, per socket, when it closed relative to the parent's mark and with
 * which code. See protocol.ts for the IPC messages.
 */
import type { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { idempotentEnds } from 'wsdrain/internal';
import { connectAll, DIAL_FLAGS, flags, onParent, readDial, toParent } from '../lib/client-proc.js';
import { now } from '../lib/clock.js';
import type { ClientResults, FromClient, ToClient } from './protocol.js';

const { values } = parseArgs({
  options: {
    ...DIAL_FLAGS,
    stalled: { type: 'string', default: '0' },
    'message-every': { type: 'string', default: '0' },
    'addr-prefix': { type: 'string', default: '127.0.1' },
    attempts: { type: 'string', default: '3' },
    'stall-mode': { type: 'string', default: 'drop' },
  },
});
const f = flags('loadgen client', values);
const { int, fail } = f;
const { count, concurrency, dialer } = readDial(values, f);
const stalled = Number(values.stalled);
const messageEvery = int('message-every');
const attempts = int('attempts');
const stallMode = values['stall-mode'];
if (!(stalled >= 0 && stalled <= 1)) fail(`--stalled must be in [0, 1], got ${values.stalled}`);
if (stallMode !== 'drop' && stallMode !== 'pause') fail('--stall-mode must be drop or pause');

const send: (m: FromClient) => void = toParent;

/** Epoch ms of each socket's close (NaN while open or never connected). */
const closedAt = new Float64Array(count).fill(Number.NaN);
const closeCode = new Uint16Array(count);
const sockets: (WebSocket | undefined)[] = new Array(count);
let markAt = Number.NaN;
let open = 0;
let failed = 0;
let sent = 0;
let received = 0;

/** Spreads `count * stalled` stalled sockets evenly over the indexes. */
const isStalled = (i: number): boolean => Math.floor((i + 1) * stalled) > Math.floor(i * stalled);

async function connectOnce(i: number): Promise<boolean> {
  return typeof (await dialer.attempt((ws) => adopt(i, ws))) !== 'string';
}

function adopt(i: number, ws: WebSocket): void {
  ws.on('close', (code) => closed(i, code));
  // The same for every strategy: ws's repeated end() calls cost this process CPU that, on a
  // machine shared with the server, would be taken from the server under test.
  idempotentEnds(ws);
  sockets[i] = ws;
  open++;
  if (isStalled(i)) {
    if (stallMode === 'pause') ws.pause();
    else stopReading(ws);
    return;
  }
  ws.on('message', () => {
    received++;
  });
  if (messageEvery > 0) {
    const payload = `{"op":"echo","socket":${i}}`;
    const tick = (): void => {
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send(payload);
      sent++;
      timer.refresh();
    };
    const timer = setTimeout(tick, Math.random() * messageEvery);
    timer.unref();
    ws.once('close', () => clearTimeout(timer));
  }
}

/**
 * A stalled peer: ws never gets another byte, so it never answers the server's close frame.
 * The bytes are drained and dropped rather than left unread with `socket.pause()`: a paused
 * socket would not see the server's FIN either, and its close could not be timed.
 */
function stopReading(ws: WebSocket): void {
  const socket = (ws as unknown as { _socket: Duplex })._socket;
  socket.removeAllListeners('data');
  socket.on('data', () => {});
}

function closed(i: number, code: number): void {
  closedAt[i] = now();
  closeCode[i] = code;
  sockets[i] = undefined;
  open--;
  if (open === 0 && !Number.isNaN(markAt)) send({ type: 'allClosed' });
}

function results(): ClientResults {
  const r: ClientResults = {
    closeTimes: [],
    codes: {},
    clean: 0,
    forced: 0,
    early: 0,
    open,
    failed,
    sent,
    received,
  };
  for (let i = 0; i < count; i++) {
    const at = closedAt[i]!;
    if (Number.isNaN(at)) continue;
    if (Number.isNaN(markAt) || at < markAt) {
      r.early++;
      continue;
    }
    const code = closeCode[i]!;
    r.closeTimes.push(Math.round((at - markAt) * 100) / 100);
    r.codes[code] = (r.codes[code] ?? 0) + 1;
    if (code === 1006) r.forced++;
    else r.clean++;
  }
  return r;
}

onParent<ToClient>((m) => {
  switch (m.type) {
    case 'mark':
      markAt = m.t;
      if (open === 0) send({ type: 'allClosed' });
      break;
    case 'results':
      send({ type: 'results', results: results() });
      break;
    case 'stop':
      for (const ws of sockets) ws?.terminate();
      process.exit(0);
  }
});

({ failed } = await connectAll({
  count,
  concurrency,
  attempts,
  connect: connectOnce,
  report: send,
  tickEveryMs: 100,
}));
