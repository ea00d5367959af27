/**
 * Socket-level helpers under `ws`: they reach below the public stream API (ws internals,
 * libuv handles) where a drain of thousands of sockets pays for what the stream layer does.
 */
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import type { WebSocket } from 'ws';
import * as wsModule from 'ws';

/**
 * ws ends a socket, and its frame parser (a Writable), more than once in a clean close
 * (after each close frame, on the peer's FIN, on 'close'). Past the first call, Node builds
 * and drops an ERR_STREAM_ALREADY_FINISHED error, stack trace included, every time: the
 * largest single cost of a drain in CPU profiles. Make the extra calls no-ops (ws passes
 * no callback to these calls).
 */
export function idempotentEnd(stream: Writable | undefined): void {
  if (!stream || typeof stream.end !== 'function') return;
  // One function for every stream (not a closure each): it calls the end of the stream's
  // class, found on its prototype.
  stream.end = endOnce as Writable['end'];
}

function endOnce(this: Writable, ...args: unknown[]): Writable {
  if (this.writableEnded) return this;
  const end = (Object.getPrototypeOf(this) as Writable).end as (...a: unknown[]) => Writable;
  return end.apply(this, args);
}

/**
 * {@link idempotentEnd} on both streams ws ends more than once: its socket and its parser (a
 * patched Receiver, see {@link patchReceiver}, has it from its class already).
 */
export function idempotentEnds(ws: object): void {
  const inner = ws as { _socket?: Writable; _receiver?: Writable };
  idempotentEnd(inner._socket);
  if (!patched) idempotentEnd(inner._receiver);
}

/** The libuv stream under a net.Socket, as far as reading goes. */
interface ReadHandle {
  readStop(): number;
  readStart(): number;
}

function readHandle(socket: Socket): ReadHandle | undefined {
  const handle = (socket as unknown as { _handle?: Partial<ReadHandle> | null })._handle;
  return typeof handle?.readStop === 'function' && typeof handle.readStart === 'function'
    ? (handle as ReadHandle)
    : undefined;
}

/**
 * Stops reading `socket` in libuv, below the stream: nothing is read, so nothing is parsed,
 * until {@link startReading}. Node's own `reading` flag is left as it is, so the stream does
 * not start reading again by itself meanwhile. False when the socket has no such handle.
 */
export function stopReading(socket: Socket): boolean {
  if (socket.destroyed) return false;
  const handle = readHandle(socket);
  return handle !== undefined && handle.readStop() === 0;
}

/** Undoes {@link stopReading}; a socket that cannot read again is destroyed. */
export function startReading(socket: Socket): void {
  if (socket.destroyed) return;
  const err = readHandle(socket)?.readStart() ?? 0;
  if (err !== 0) socket.destroy();
}

/** ws's frame sender, as far as closing goes. */
interface SenderInternals {
  /** 0 when idle; compressing (or reading a Blob) otherwise, with frames queued meanwhile. */
  _state: number;
  /** Queued sends: [method, data, compress, options (with `opcode`), callback]. */
  _queue: unknown[][];
}

function senderOf(ws: object): SenderInternals | undefined {
  const sender = (ws as { _sender?: Partial<SenderInternals> })._sender;
  return typeof sender?._state === 'number' && Array.isArray(sender._queue)
    ? (sender as SenderInternals)
    : undefined;
}

/**
 * Puts a close frame on the wire now, synchronously, and half-closes: for the moment before
 * the process exits (its primary died), when there is no time for queued compressions to
 * finish. Frames ws still holds in its queue are dropped, never sent after the close frame.
 * Returns false when the socket cannot be written.
 */
export function closeFrameNow(ws: object, socket: Socket, code: number, reason: string): boolean {
  if (socket.destroyed || !socket.writable) return false;
  const sender = senderOf(ws);
  if (sender) sender._queue.length = 0;
  const text = Buffer.from(reason);
  const body = Buffer.allocUnsafe(2 + text.length);
  body.writeUInt16BE(code, 0);
  text.copy(body, 2);
  // A server's frames are not masked: FIN + opcode 8, then the payload length (< 126).
  socket.write(Buffer.concat([Buffer.from([0x88, body.length]), body]));
  socket.end();
  return true;
}

/** Where the patched receivers keep their fragment list and fragmented-message opcode. */
const kFragments = Symbol('wsdrain.fragments');
const kFragmented = Symbol('wsdrain.fragmented');

/**
 * The fragments of one message, kept compact: the first one as ws parsed it (a view of the
 * chunk it arrived in), every later one copied into one buffer grown by doubling. ws keeps each
 * fragment as a view of its own (with a Buffer object of a few hundred bytes behind it), so a
 * message sent as thousands of one-byte fragments cost hundreds of times its payload; here a
 * message in the making costs at most about twice its payload. ws's `concat()` returns the only
 * entry as it is, so a finished message is not copied again.
 */
class Fragments extends Array<Buffer> {
  #acc: Buffer | undefined;
  #used = 0;

  override push(...bufs: Buffer[]): number {
    for (const b of bufs) this.#add(b);
    return this.length;
  }

  #add(b: Buffer): void {
    if (this.length === 0) {
      this[0] = b;
      return;
    }
    if (!this.#acc) {
      const first = this[0]!;
      this.#acc = Buffer.allocUnsafeSlow(Math.max(1024, 2 * (first.length + b.length)));
      first.copy(this.#acc, 0);
      this.#used = first.length;
    } else if (this.#used + b.length > this.#acc.length) {
      const grown = Buffer.allocUnsafeSlow(2 * (this.#used + b.length));
      this.#acc.copy(grown, 0, 0, this.#used);
      this.#acc = grown;
    }
    b.copy(this.#acc, this.#used);
    this.#used += b.length;
    this[0] = this.#acc.subarray(0, this.#used);
  }
}

/**
 * Receivers in the middle of a fragmented message, with the time (epoch ms) its first fragment
 * arrived. A peer that answers pings between fragments could otherwise keep a message
 * unfinished forever; the server closes those past its limit ({@link forgetReceiver} when a
 * connection goes).
 */
export const unfinishedMessages = new Map<object, number>();

/** The receiver (frame parser) of a ws WebSocket. */
export function receiverOf(ws: object): object | undefined {
  return (ws as { _receiver?: object })._receiver;
}

let kWebSocket: symbol | undefined;

/** The ws WebSocket a receiver parses for (ws keeps it under a symbol of its own). */
export function webSocketOf(receiver: object): object | undefined {
  kWebSocket ??= Object.getOwnPropertySymbols(receiver).find((s) => s.description === 'websocket');
  return kWebSocket ? (receiver as Record<symbol, object | undefined>)[kWebSocket] : undefined;
}

/** Drops a receiver from {@link unfinishedMessages} (its connection closed). */
export function forgetReceiver(ws: object): void {
  const r = receiverOf(ws);
  if (r) unfinishedMessages.delete(r);
}

let patched = false;

/**
 * Patches ws's Receiver class (the copy of ws this server uses), once per process: fragments kept compact ({@link Fragments}),
 * and the start of every fragmented message recorded in {@link unfinishedMessages}. Both go
 * through the two fields ws uses for them, `_fragments` and `_fragmented`, made accessors on
 * the prototype (no per-connection cost). Idempotent.
 */
export function patchReceiver(): void {
  if (patched) return;
  patched = true;
  const { Receiver } = wsModule as unknown as { Receiver: { prototype: Writable } };
  // ws ends a receiver more than once in a clean close: make the extra calls no-ops for every
  // receiver at once (see idempotentEnd), instead of a property on each.
  const end = Receiver.prototype.end;
  Receiver.prototype.end = function (this: Writable, ...args: unknown[]) {
    if (this.writableEnded) return this;
    return (end as (...a: unknown[]) => Writable).apply(this, args);
  } as Writable['end'];
  type Patched = { [kFragments]?: Buffer[]; [kFragmented]?: number };
  Object.defineProperty(Receiver.prototype, '_fragments', {
    configurable: true,
    get(this: Patched) {
      let list = this[kFragments];
      if (!list) {
        list = new Fragments();
        this[kFragments] = list;
      }
      return list;
    },
    set(this: Patched, list: Buffer[]) {
      // ws assigns an empty list after every message: made again only when it is read, so an
      // idle connection carries none (nor a property for it, from ws's constructor on).
      if (list.length === 0) {
        if (this[kFragments] !== undefined) this[kFragments] = undefined;
        return;
      }
      const fresh = new Fragments();
      for (const b of list) fresh.push(b);
      this[kFragments] = fresh;
    },
  });
  Object.defineProperty(Receiver.prototype, '_fragmented', {
    configurable: true,
    get(this: Patched) {
      return this[kFragmented] ?? 0;
    },
    set(this: Patched, opcode: number) {
      const was = this[kFragmented] ?? 0;
      if (opcode === was) return;
      this[kFragmented] = opcode;
      if (opcode !== 0 && was === 0) unfinishedMessages.set(this, Date.now());
      else if (opcode === 0 && was !== 0) unfinishedMessages.delete(this);
    },
  });
}

/** Whether ws saw the closing handshake both ways: its close frame sent, the peer's received. */
export function closedCleanly(ws: object): boolean {
  const w = ws as { _closeFrameReceived?: boolean; _closeFrameSent?: boolean };
  return w._closeFrameReceived === true && w._closeFrameSent === true;
}

/** A message framed once, for many sockets: an unmasked server frame, FIN set. */
export interface Frame {
  /** Header and payload, one buffer: written as it is to every socket. */
  readonly bytes: Buffer;
  /** The payload, for a socket whose frames ws must send itself. */
  readonly data: Buffer;
  readonly binary: boolean;
}

/** Frames a text (string) or binary (bytes) message once. */
export function frameOf(message: string | Uint8Array): Frame {
  const binary = typeof message !== 'string';
  const data = binary
    ? Buffer.from(message.buffer, message.byteOffset, message.byteLength)
    : Buffer.from(message);
  const n = data.length;
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const bytes = Buffer.allocUnsafe(head + n);
  bytes[0] = 0x80 | (binary ? 0x02 : 0x01);
  if (n < 126) {
    bytes[1] = n;
  } else if (n < 65536) {
    bytes[1] = 126;
    bytes.writeUInt16BE(n, 2);
  } else {
    bytes[1] = 127;
    bytes.writeBigUInt64BE(BigInt(n), 2);
  }
  data.copy(bytes, head);
  return { bytes, data, binary };
}

/**
 * Writes a frame built once to `ws`'s socket, in order with what ws itself sends: as it is
 * when ws's sender is idle (with permessage-deflate a message may go uncompressed), through
 * `ws.send` while ws holds frames back behind a compression.
 */
export function writeFrame(ws: WebSocket, socket: Socket, frame: Frame): void {
  const sender = senderOf(ws);
  if (sender && sender._state === 0 && sender._queue.length === 0) socket.write(frame.bytes);
  else ws.send(frame.data, { binary: frame.binary });
}
