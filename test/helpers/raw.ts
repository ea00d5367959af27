/**
 * A raw WebSocket peer over a plain TCP socket, for the frames a polite client never sends:
 * unmasked frames, invalid UTF-8, reserved opcodes, data after a close frame, and so on.
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

export interface Frame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

export interface RawPeer {
  socket: Socket;
  /** Frames received so far. */
  frames: Frame[];
  /** Resolves with the status line and headers of the handshake answer. */
  handshake: Promise<string>;
  /** Resolves with the first close frame's code (undefined when the server closed without one). */
  closeCode: () => Promise<number | undefined>;
  /** Resolves when the server has ended its side (FIN) or the socket closed. */
  closed: Promise<void>;
  send: (opts: {
    opcode?: number;
    fin?: boolean;
    payload?: Buffer | string;
    mask?: boolean;
    rsv?: number;
  }) => void;
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

/** Opens a TCP connection and sends an upgrade request (or `request` verbatim). */
export function rawPeer(port: number, request?: string): RawPeer {
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
  return {
    socket,
    frames,
    handshake,
    closed,
    closeCode: async () => {
      await closed;
      const f = frames.find((x) => x.opcode === 8);
      return f && f.payload.length >= 2 ? f.payload.readUInt16BE(0) : undefined;
    },
    send: (opts) => {
      if (socket.writable) socket.write(frame(opts));
    },
  };
}

/** Waits until `peer` has received a frame with `opcode`. */
export async function waitFrame(peer: RawPeer, opcode: number, timeoutMs = 5000): Promise<Frame> {
  const t0 = Date.now();
  for (;;) {
    const f = peer.frames.find((x) => x.opcode === opcode);
    if (f) return f;
    if (Date.now() - t0 > timeoutMs) throw new Error(`no frame with opcode ${opcode}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
