/**
 * A raw WebSocket peer over a plain TCP socket, for the frames a polite client never sends:
 * unmasked frames, invalid UTF-8, reserved opcodes, data after a close frame, and so on.
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { bounded, until, within } from './wait.js';

/** How long a raw peer waits for the server by default, in ms. */
export const RAW_WAIT_MS = 5000;

export interface Frame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

export interface RawPeer {
  socket: Socket;
  /** Frames received so far. */
  frames: Frame[];
  /**
   * Resolves with the status line and headers of the handshake answer (or whatever came
   * before the server ended the connection). A wait on it gives up after the peer's timeout.
   */
  handshake: Promise<string>;
  /**
   * Resolves with the first close frame's code (undefined when the server closed without
   * one), once the server has ended the connection; gives up after `timeoutMs`.
   */
  closeCode: (timeoutMs?: number) => Promise<number | undefined>;
  /**
   * Resolves when the server has ended its side (FIN) or the socket closed. A wait on it
   * gives up after the peer's timeout.
   */
  closed: Promise<void>;
  send: (opts: {
    opcode?: number;
    fin?: boolean;
    payload?: Buffer | string;
    mask?: boolean;
    rsv?: number;
  }) => void;
}

/** The opcodes of `frames`, for failure messages. */
function received(frames: Frame[]): string {
  return `${frames.length} frames (opcodes: ${frames.map((f) => f.opcode).join(',') || 'none'})`;
}

/** Builds one frame. Masked by default, as RFC 6455 requires of clients. */
export function frame(opts: {
  opcode?: number;
  fin?: boolean;
  payload?: Buffer | string;
  mask?: boolean;
  rsv?: number;
}): Buffer {
  const payload = Buffer.isBuffer(opts.payload) ? opts.payload : Buffer.from(opts.payload ?? '');
  const mask = opts.mask ?? true;
  const b0 = (opts.fin === false ? 0 : 0x80) | ((opts.rsv ?? 0) << 4) | (opts.opcode ?? 1);
  let header: Buffer;
  if (payload.length < 126) {
    header = Buffer.from([b0, (mask ? 0x80 : 0) | payload.length]);
  } else if (payload.length < 65536) {
    header = Buffer.alloc(4);
    header[0] = b0;
    header[1] = (mask ? 0x80 : 0) | 126;
    header.writeUInt16BE(payload.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = b0;
    header[1] = (mask ? 0x80 : 0) | 127;
    header.writeBigUInt64BE(BigInt(payload.length), 2);
  }
  if (!mask) return Buffer.concat([header, payload]);
  const key = randomBytes(4);
  const body = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i++) body[i] = payload[i]! ^ key[i & 3]!;
  return Buffer.concat([header, key, body]);
}

/**
 * Opens a TCP connection and sends an upgrade request (or `request` verbatim). Waits on the
 * peer give up after `timeoutMs` (default {@link RAW_WAIT_MS}) and say what they waited for.
 */
export function rawPeer(
  port: number,
  request?: string,
  opts: { timeoutMs?: number } = {},
): RawPeer {
  const timeoutMs = opts.timeoutMs ?? RAW_WAIT_MS;
  // Half-open allowed: like a peer that goes on sending after the server's FIN.
  const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => {});
  const frames: Frame[] = [];
  let buf = Buffer.alloc(0);
  let headerDone = false;
  let onHandshake: (s: string) => void = () => {};
  const handshake = new Promise<string>((r) => {
    onHandshake = r;
  });
  // The server is done with us once it has sent its FIN (or the socket is gone).
  const closed = new Promise<void>((r) => {
    socket.once('end', () => r());
    socket.once('close', () => r());
  });
  socket.on('end', () => onHandshake(buf.toString('latin1')));
  socket.on('close', () => onHandshake(buf.toString('latin1')));
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    if (!headerDone) {
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      headerDone = true;
      onHandshake(buf.subarray(0, end).toString('latin1'));
      buf = buf.subarray(end + 4);
    }
    for (;;) {
      if (buf.length < 2) return;
      let len = buf[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      if (buf.length < off + len) return;
      frames.push({
        fin: (buf[0]! & 0x80) !== 0,
        opcode: buf[0]! & 0x0f,
        payload: buf.subarray(off, off + len),
      });
      buf = buf.subarray(off + len);
    }
  });
  socket.write(
    request ??
      'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  const closedWhat = (): string =>
    `the server on port ${port} to end the connection; got ${headerDone ? received(frames) : 'no handshake answer'}`;
  return {
    socket,
    frames,
    handshake: bounded(
      handshake,
      timeoutMs,
      () =>
        `a handshake answer from port ${port}; got ${JSON.stringify(buf.toString('latin1').slice(0, 80))}`,
    ),
    closed: bounded(closed, timeoutMs, closedWhat),
    closeCode: async (ms = timeoutMs) => {
      await within(
        closed,
        ms,
        () =>
          `a close frame from port ${port} and the end of the connection; got ${received(frames)}`,
      );
      const f = frames.find((x) => x.opcode === 8);
      return f && f.payload.length >= 2 ? f.payload.readUInt16BE(0) : undefined;
    },
    send: (opts) => {
      if (socket.writable) socket.write(frame(opts));
    },
  };
}

/** Waits until `peer` has received a frame with `opcode`. */
export async function waitFrame(
  peer: RawPeer,
  opcode: number,
  timeoutMs = RAW_WAIT_MS,
): Promise<Frame> {
  const find = (): Frame | undefined => peer.frames.find((x) => x.opcode === opcode);
  await until(
    () => find() !== undefined,
    () => `a frame with opcode ${opcode}; got ${received(peer.frames)}`,
    timeoutMs,
  );
  return find()!;
}
