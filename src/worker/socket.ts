/**
 * Socket-level helpers under `ws`: they reach below the public stream API (ws internals,
 * libuv handles) where a drain of thousands of sockets pays for what the stream layer does.
 */
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';

/**
 * ws ends a socket, and its frame parser (a Writable), more than once in a clean close
 * (after each close frame, on the peer's FIN, on 'close'). Past the first call, Node builds
 * and drops an ERR_STREAM_ALREADY_FINISHED error, stack trace included, every time: the
 * largest single cost of a drain in CPU profiles. Make the extra calls no-ops (ws passes
 * no callback to these calls).
 */
export function idempotentEnd(stream: Writable | undefined): void {
  if (!stream || typeof stream.end !== 'function') return;
  const end = stream.end;
  stream.end = function (this: Writable, ...args: unknown[]) {
    if (this.writableEnded) return this;
    return (end as (...a: unknown[]) => Writable).apply(this, args);
  } as Writable['end'];
}

/** {@link idempotentEnd} on both streams ws ends more than once: its socket and its parser. */
export function idempotentEnds(ws: object): void {
  const inner = ws as { _socket?: Writable; _receiver?: Writable };
  idempotentEnd(inner._socket);
  idempotentEnd(inner._receiver);
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
