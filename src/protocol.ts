/**
 * IPC between the primary and its workers: typed messages tagged with `src: 'wsdrain'`.
 * Anything else on the channel (prom-client, pm2, user code) is ignored, and sending to a
 * worker that is gone never throws.
 *
 * The channel speaks JSON, Node's default: the cluster passes every accepted connection over
 * it too, and the 'advanced' (structured clone) serializer made each of those cost about
 * 2 KiB more memory in the primary, 1 KiB more in the worker, and CPU on both. Publication
 * data is the one value that is not JSON (bytes): it travels as {@link WireData}, base64 for
 * bytes, every other value as it is, so that none can be taken for the other.
 */
import type { Worker } from 'node:cluster';
import type { BrokerRequest } from './app/broker.js';
import type { Publication, Recovery } from './app/sequencer.js';
import type { PublishData } from './app/types.js';
import type { DrainCommand } from './drain/budget.js';
import type { DrainReport } from './drain/report.js';

const SRC = 'wsdrain' as const;

/** Primary -> worker. */
export type ToWorker =
  | ({ src: typeof SRC; type: 'drain' } & DrainCommand)
  | { src: typeof SRC; type: 'terminate' }
  | { src: typeof SRC; type: 'cluster-ready'; ready: boolean }
  /**
   * Rolling restart: `false` closes the worker's listening socket (it keeps serving the
   * sockets it holds, and is not draining); `true` listens again (the roll stopped).
   */
  | { src: typeof SRC; type: 'accepting'; accepting: boolean }
  | { src: typeof SRC; type: 'metrics-request'; id: number }
  /** The embedded broker's answer to a worker's request (see {@link replyToWire}). */
  | { src: typeof SRC; type: 'broker-reply'; id: number; ok: boolean; value: unknown }
  /** A publication of a topic the worker wants. */
  | { src: typeof SRC; type: 'publication'; pub: WirePublication }
  /** The answer to the worker's `sync`: every message sent to it before has reached it. */
  | { src: typeof SRC; type: 'synced' }
  /**
   * Balance: a held worker hands every new connection back to the primary, unread (see
   * primary/balance.ts); released, it takes them again.
   */
  | { src: typeof SRC; type: 'hold'; held: boolean }
  /**
   * A connection handed back by another worker, sent with its handle: taken as if accepted
   * here, held or not. `hops`: how many workers it went through.
   */
  | { src: typeof SRC; type: 'conn'; hops: number };

/** Worker -> primary. */
export type ToPrimary =
  | { src: typeof SRC; type: 'listening'; port: number }
  | { src: typeof SRC; type: 'draining'; code: number; sockets: number }
  | { src: typeof SRC; type: 'progress'; remaining: number }
  | { src: typeof SRC; type: 'report'; report: DrainReport }
  | { src: typeof SRC; type: 'metrics'; id: number; metrics: unknown[] }
  | { src: typeof SRC; type: 'fatal'; code: string; message: string }
  /** A request to the embedded broker (publish, interest, drop, recover). */
  | { src: typeof SRC; type: 'broker'; id: number; req: WireRequest }
  /**
   * A worker whose listener closed (it is about to exit, or a roll stopped it accepting): the
   * primary answers `synced` once it has read this (and so the cluster's own message that
   * took the worker off the port).
   */
  | { src: typeof SRC; type: 'sync' }
  /**
   * The answer to `accepting: false`: the listener is closed and every connection the
   * primary handed this worker before it took it off the port has been answered.
   */
  | { src: typeof SRC; type: 'stopped' }
  /**
   * The worker's WebSocket connections, and how many connections handed to it (`conn`) it has
   * taken so far; sent when either changed, at most every 100 ms.
   */
  | { src: typeof SRC; type: 'sockets'; count: number; taken: number }
  /**
   * A new connection this worker does not take (held, or no longer listening), sent with its
   * handle, unread: the primary gives it to another worker. `hops` as in `conn`.
   */
  | { src: typeof SRC; type: 'handback'; hops: number };

/** Publication data on the channel: `b`, bytes in base64; `j`, any other value. */
export type WireData = { b: string } | { j?: PublishData };
export type WirePublication = Omit<Publication, 'data'> & { data: WireData };
export type WireRequest =
  | Exclude<BrokerRequest, { op: 'publish' }>
  | { op: 'publish'; topic: string; data: WireData };

export function dataToWire(data: PublishData): WireData {
  if (!(data instanceof Uint8Array)) return { j: data };
  return { b: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64') };
}

export function dataFromWire(w: WireData): PublishData {
  return 'b' in w ? Buffer.from(w.b, 'base64') : (w.j ?? null);
}

export const pubToWire = (p: Publication): WirePublication => ({ ...p, data: dataToWire(p.data) });
export const pubFromWire = (p: WirePublication): Publication => ({
  ...p,
  data: dataFromWire(p.data),
});

export function requestToWire(req: BrokerRequest): WireRequest {
  return req.op === 'publish' ? { ...req, data: dataToWire(req.data) } : req;
}

export function requestFromWire(req: WireRequest): BrokerRequest {
  return req.op === 'publish' ? { ...req, data: dataFromWire(req.data) } : req;
}

/** A broker answer: a recovery's publications go as {@link WirePublication}s. */
export function replyToWire(value: unknown): unknown {
  const r = value as Recovery | null;
  return r && typeof r === 'object' && Array.isArray(r.publications)
    ? { ...r, publications: r.publications.map(pubToWire) }
    : value;
}

export function replyFromWire(value: unknown): unknown {
  const r = value as (Omit<Recovery, 'publications'> & { publications: WirePublication[] }) | null;
  return r && typeof r === 'object' && Array.isArray(r.publications)
    ? { ...r, publications: r.publications.map(pubFromWire) }
    : value;
}

type Body<T> = T extends unknown ? Omit<T, 'src'> : never;

/** Builds a tagged message. */
export function msg<T extends ToWorker | ToPrimary>(body: Body<T>): T {
  return { src: SRC, ...body } as T;
}

/** Whether `m` is one of ours (and so has a `type`). */
export function isOurs<T extends ToWorker | ToPrimary>(m: unknown): m is T {
  return (
    typeof m === 'object' &&
    m !== null &&
    (m as { src?: unknown }).src === SRC &&
    typeof (m as { type?: unknown }).type === 'string'
  );
}

/** A connection handed back through more workers than this is closed: none could take it. */
export const MAX_HOPS = 3;

/**
 * A connection's handle as it travels between processes: the raw TCP handle, closed in the
 * sender once it has left.
 */
export type ConnHandle = object & { close(): void };

/**
 * Sends to a worker (with a connection's `handle`, see {@link sendHandle}); a dead or
 * disconnected worker is skipped, never thrown at. `onSent` as for {@link sendToPrimary}.
 */
export function sendToWorker(
  worker: Worker,
  m: ToWorker,
  handle?: ConnHandle,
  onSent?: () => void,
): boolean {
  try {
    if (worker.isDead() || !worker.isConnected()) return false;
    // biome-ignore lint/suspicious/noExplicitAny: Node takes raw TCP handles too.
    worker.send(m, handle as any, () => onSent?.());
    return true;
  } catch {
    return false;
  }
}

/**
 * Sends to the primary from a worker; a gone primary is not an error. `onSent` is called once
 * the message has left this process (IPC messages queue behind each other), and only then.
 */
export function sendToPrimary(m: ToPrimary, onSent?: () => void, handle?: ConnHandle): boolean {
  try {
    if (!process.send || !process.connected) return false;
    // biome-ignore lint/suspicious/noExplicitAny: Node takes raw TCP handles too.
    process.send(m, handle as any, undefined, () => onSent?.());
    return true;
  } catch {
    return false;
  }
}

/**
 * Handle messages a process keeps on its way at once, per channel (see {@link sendHandle}).
 * Node sends a handle only once the last one is acknowledged, and holds every later message
 * of the channel meanwhile, the cluster's own hand-over of new connections included: a queue
 * of them would stall the channel.
 */
export const HANDLES_IN_FLIGHT = 4;

/**
 * Sends a connection's handle with `m` to a worker, or to the primary (`to` undefined); false
 * when it cannot go (the handle is still this process's then). Once it has left, this
 * process's copy is closed (Node does that itself for sockets, not for raw handles, and a copy
 * left open would keep the connection alive after its new owner closed it) and `sent` called.
 */
export function sendHandle(
  to: Worker | undefined,
  m: Extract<ToWorker, { type: 'conn' }> | Extract<ToPrimary, { type: 'handback' }>,
  handle: ConnHandle,
  sent: () => void,
): boolean {
  const done = (): void => {
    handle.close();
    sent();
  };
  return to
    ? sendToWorker(to, m as ToWorker, handle, done)
    : sendToPrimary(m as ToPrimary, done, handle);
}
