/**
 * Plain HTTP on the WebSocket port: `/healthz` (200 while alive), `/readyz` (200 when serving,
 * 503 with Retry-After while starting or draining), 426 for anything else; the answers to
 * requests that never became one (400, 408, 431); and the one-line refusals of upgrades.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log.js';

/** What the probes report. */
export interface ProbeState {
  /** `/readyz` answers 200. */
  ready: () => boolean;
  /** Shown in a 503's body: starting, draining, closed. */
  state: () => string;
  /** Answers carry `Connection: close` (the server is going). */
  closing: () => boolean;
}

/** Answers one plain HTTP request. */
export function answerRequest(probe: ProbeState, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?', 1)[0];
  if (req.method === 'GET' || req.method === 'HEAD') {
    if (path === '/healthz') return plain(probe, res, 200, 'ok\n');
    if (path === '/readyz') {
      if (probe.ready()) return plain(probe, res, 200, 'ready\n');
      res.setHeader('Retry-After', '1');
      return plain(probe, res, 503, `${probe.state()}\n`);
    }
  }
  res.setHeader('Upgrade', 'websocket');
  res.setHeader('Connection', 'Upgrade');
  plain(probe, res, 426, 'this is a WebSocket endpoint: send an Upgrade request\n');
}

function plain(probe: ProbeState, res: ServerResponse, status: number, body: string): void {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  if (probe.closing()) res.setHeader('Connection', 'close');
  res.end(body);
}

/** Answers a request the HTTP parser gave up on (Node's 'clientError'), then closes. */
export function answerClientError(log: Logger, err: NodeJS.ErrnoException, socket: Duplex): void {
  log.debug({ err: err.code ?? err.message }, 'client error before upgrade');
  if (socket.writable && !(socket as Socket).writableEnded) {
    const status =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? '408 Request Timeout'
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? '431 Request Header Fields Too Large'
          : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  }
  socket.destroy();
}

/** Refuses an upgrade with `status` (extra header lines, a text body), then closes. */
export function refuse(socket: Duplex, status: string, headers = '', body = ''): void {
  if (socket.writable) {
    const text = body ? `${body}\n` : '';
    const type = text ? 'Content-Type: text/plain; charset=utf-8\r\n' : '';
    socket.end(
      `HTTP/1.1 ${status}\r\nConnection: close\r\n${type}Content-Length: ${Buffer.byteLength(text)}\r\n${headers}\r\n${text}`,
    );
  }
  socket.destroy();
}
