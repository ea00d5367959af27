/**
 * Storm client process (forked with IPC by clients.ts, run as `node --import tsx`): opens
 * `--count` connections to `--url` with wsdrain's own reconnecting client (`wsdrain/client`,
 * the built package, over `ws`), at most `--concurrency` first handshakes at a time. After
 * the parent's mark it records every reconnect (when it opened, and its handshake latency:
 * from the creation of its socket to 'open'), every close of an open connection (when, which
 * code) and every failed attempt. See protocol.ts for the IPC messages.
 */
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import {
  type WebSocketConstructorLike,
  WsdrainClient,
  type WsdrainClientOptions,
} from 'wsdrain/client';
import { flags, inLanes, onParent, toParent } from '../lib/client-proc.js';
import { now } from '../lib/clock.js';
import {
  emptyStormResults,
  type FromStormClient,
  type StormClientStatus,
  type ToStormClient,
} from './protocol.js';

type Client = WsdrainClient;

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    count: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '100' },
    'hint-jitter': { type: 'string', default: 'default' },
    'max-retries': { type: 'string', default: '50' },
  },
});
const { int, fail } = flags('storm client', values);
const url = values.url ?? fail('--url is required');
const count = int('count');
const concurrency = Math.max(1, int('concurrency'));
const maxRetries = int('max-retries');
const hintJitterArg = values['hint-jitter'];
const hintJitter: WsdrainClientOptions['hintJitter'] =
  hintJitterArg === 'default'
    ? undefined
    : hintJitterArg === 'false'
      ? false
      : hintJitterArg === 'true'
        ? true
        : Number(hintJitterArg);

/** `ws`'s WebSocket, stamped with the time each attempt started. */
class StampedWebSocket extends WebSocket {
  readonly startedAt: number;
  constructor(address: string, protocols?: string | string[]) {
    const t = now();
    super(address, protocols, { perMessageDeflate: false });
    this.startedAt = t;
  }
}

interface Slot {
  client: Client;
  open: boolean;
  closedSinceMark: boolean;
}

const send: (m: FromStormClient) => void = toParent;

const slots: Slot[] = [];
let markAt = Number.NaN;
const status: StormClientStatus = { open: 0, closed: 0, gaveUp: 0 };
const results = emptyStormResults();
const marked = (): boolean => !Number.isNaN(markAt);
const ms = (t: number): number => Math.round(t * 100) / 100;

function start(): Promise<void> {
  const client: Client = new WsdrainClient(url, {
    WebSocket: StampedWebSocket as unknown as WebSocketConstructorLike,
    hintJitter,
    maxRetries,
  });
  const slot: Slot = { client, open: false, closedSinceMark: false };
  slots.push(slot);
  client.on('open', () => {
    const t = now();
    slot.open = true;
    status.open++;
    if (!marked()) return;
    const socket = client.socket as unknown as StampedWebSocket | null;
    results.opens.push(ms(t - markAt));
    if (socket) {
      results.starts.push(ms(socket.startedAt - markAt));
      results.latencies.push(ms(t - socket.startedAt));
    }
  });
  client.on('close', ({ code, willReconnect }) => {
    const t = now();
    if (slot.open) {
      slot.open = false;
      status.open--;
      if (marked()) {
        results.closes.push(ms(t - markAt));
        results.codes[code] = (results.codes[code] ?? 0) + 1;
        if (!slot.closedSinceMark) {
          slot.closedSinceMark = true;
          status.closed++;
        }
      }
    } else if (marked()) {
      results.refusals++;
      results.refusalCodes[code] = (results.refusalCodes[code] ?? 0) + 1;
    }
    if (!willReconnect) status.gaveUp++;
  });
  client.on('error', () => {
    if (!slot.open && marked()) results.connectErrors++;
  });
  client.on('reconnecting', ({ reason }) => {
    if (marked()) results.delays[reason]++;
  });
  return new Promise((resolve) => {
    client.once('open', () => resolve());
    client.once('close', ({ willReconnect }) => {
      if (!willReconnect) resolve();
    });
  });
}

async function startAll(): Promise<void> {
  await inLanes({
    count,
    concurrency,
    work: start,
    tick: () => send({ type: 'progress', open: status.open }),
    tickEveryMs: 100,
  });
  send({ type: 'ready', open: status.open });
}

onParent<ToStormClient>((m) => {
  switch (m.type) {
    case 'mark':
      markAt = m.t;
      setInterval(() => send({ type: 'status', status: { ...status } }), 50);
      break;
    case 'results':
      send({ type: 'results', results: { ...results, ...status } });
      break;
    case 'stop':
      process.exit(0);
  }
});

await startAll();
