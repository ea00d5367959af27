/**
 * The child side of a bench client process (loadgen/, soak/, storm/ client.ts files, forked
 * with IPC by their parents): flag helpers, messages to and from the parent, handshakes from
 * rotating source addresses, and the connect lanes.
 */
import { WebSocket } from 'ws';

/** `int()` and `fail()` over the values of node:util parseArgs, for one kind of client. */
export interface Flags<V> {
  /** The flag as a non-negative integer; exits 2 with a message otherwise. */
  int(name: keyof V & string): number;
  /** Prints `<who>: <message>` on stderr and exits 2. */
  fail(message: string): never;
}

/** Flag helpers for `values`; `who` prefixes the error messages (`loadgen client`). */
export function flags<V extends Record<string, unknown>>(who: string, values: V): Flags<V> {
  const fail = (message: string): never => {
    console.error(`${who}: ${message}`);
    process.exit(2);
  };
  return {
    int(name) {
      const v = Number(values[name]);
      if (!Number.isInteger(v) || v < 0) fail(`--${name} must be a non-negative integer`);
      return v;
    },
    fail,
  };
}

/** Sends one message to the parent (nothing when the channel is gone). */
export function toParent<M extends object>(m: M): void {
  process.send?.(m);
}

/** Calls `handle` with every message of the parent; exits when the parent is gone. */
export function onParent<M>(handle: (m: M) => void): void {
  process.on('message', (m: M) => handle(m));
  process.on('disconnect', () => process.exit(0)); // the parent is gone
}

export interface DialerOptions {
  url: string;
  /** Source addresses `<addrPrefix>.1` .. `.<addrCount>`, used in turn. */
  addrPrefix: string;
  addrCount: number;
  /** ws `handshakeTimeout`, ms. */
  handshakeTimeout: number;
}

/** Opens WebSockets to one URL, each from the next source address. */
export class Dialer {
  readonly #o: DialerOptions;
  #next = 0;

  constructor(o: DialerOptions) {
    this.#o = o;
  }

  /**
   * One handshake; resolves with the open socket, or the cause of the failure (`http 503`,
   * `ECONNREFUSED`, ...). `onOpen` runs inside the 'open' event, before any other event of
   * the socket can fire.
   */
  attempt(onOpen?: (ws: WebSocket) => void): Promise<WebSocket | string> {
    const { url, addrPrefix, addrCount, handshakeTimeout } = this.#o;
    return new Promise((resolve) => {
      const localAddress = `${addrPrefix}.${(this.#next++ % addrCount) + 1}`;
      const ws = new WebSocket(url, { localAddress, handshakeTimeout, perMessageDeflate: false });
      let cause = 'closed';
      ws.on('error', (err: Error & { code?: string }) => {
        const http = /Unexpected server response: (\d+)/.exec(err.message);
        cause = http ? `http ${http[1]}` : (err.code ?? err.message.slice(0, 40));
      });
      let opened = false;
      ws.once('open', () => {
        opened = true;
        onOpen?.(ws);
        resolve(ws);
      });
      ws.once('close', () => {
        if (!opened) resolve(cause);
      });
    });
  }
}

export interface LanesOptions {
  /** Items 0 .. count-1, each handed to `work` once. */
  count: number;
  /** Items in progress at a time. */
  concurrency: number;
  work: (i: number) => Promise<void>;
  /** Called every `tickEveryMs` until every item is done (progress reports). */
  tick: () => void;
  tickEveryMs: number;
  /** Checked before each item: false stops taking new ones. */
  keepGoing?: () => boolean;
}

/** Runs `work` over the items, `concurrency` at a time; resolves when they are all done. */
export async function inLanes(o: LanesOptions): Promise<void> {
  let next = 0;
  const keepGoing = o.keepGoing ?? (() => true);
  const lane = async (): Promise<void> => {
    while (next < o.count && keepGoing()) await o.work(next++);
  };
  const ticker = setInterval(o.tick, o.tickEveryMs);
  try {
    await Promise.all(Array.from({ length: Math.min(o.concurrency, o.count) }, lane));
  } finally {
    clearInterval(ticker);
  }
}

/** The flags every socket-opening client takes (parseArgs options; each adds its own). */
export const DIAL_FLAGS = {
  url: { type: 'string' },
  count: { type: 'string', default: '1000' },
  concurrency: { type: 'string', default: '200' },
  'addr-count': { type: 'string', default: '250' },
  'handshake-timeout': { type: 'string', default: '10000' },
} as const;

/** The progress and ready reports of a client process that opens sockets. */
export type ConnectProgress = { type: 'progress' | 'ready'; connected: number; failed: number };

export interface ConnectAllOptions {
  count: number;
  concurrency: number;
  /** Tries per socket. */
  attempts: number;
  /** One try at socket `i`; true when it opened. */
  connect: (i: number) => Promise<boolean>;
  /** Gets a progress report every `tickEveryMs`, then the ready report. */
  report: (m: ConnectProgress) => void;
  tickEveryMs: number;
  keepGoing?: () => boolean;
}

/** Opens the sockets in lanes (inLanes), counting the ones that connected and failed. */
export async function connectAll(
  o: ConnectAllOptions,
): Promise<{ connected: number; failed: number }> {
  let connected = 0;
  let failed = 0;
  await inLanes({
    count: o.count,
    concurrency: o.concurrency,
    work: async (i) => {
      let ok = false;
      for (let a = 0; a < o.attempts && !ok; a++) ok = await o.connect(i);
      if (ok) connected++;
      else failed++;
    },
    tick: () => o.report({ type: 'progress', connected, failed }),
    tickEveryMs: o.tickEveryMs,
    keepGoing: o.keepGoing,
  });
  o.report({ type: 'ready', connected, failed });
  return { connected, failed };
}

/** What DIAL_FLAGS (with `--addr-prefix`) give: the URL, the counts and a Dialer. */
export interface Dial {
  url: string;
  count: number;
  concurrency: number;
  dialer: Dialer;
}

/** Reads DIAL_FLAGS and `--addr-prefix` from the parsed values. */
export function readDial(
  values: { url?: string; 'addr-prefix': string },
  f: Pick<Flags<typeof DIAL_FLAGS>, 'int' | 'fail'>,
): Dial {
  const url = values.url ?? f.fail('--url is required');
  const dialer = new Dialer({
    url,
    addrPrefix: values['addr-prefix'],
    addrCount: f.int('addr-count'),
    handshakeTimeout: f.int('handshake-timeout'),
  });
  return { url, count: f.int('count'), concurrency: f.int('concurrency'), dialer };
}
