/**
 * The listening side of a worker's server: the HTTP or HTTPS server with its timeouts, the
 * WebSocket server's options (payload and fragment limits, permessage-deflate, the one
 * subprotocol selected, ws's own timers bounded), and binding the port.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type PerMessageDeflateOptions, WebSocketServer } from 'ws';
import { ListenError } from '../errors.js';
import type { Logger } from '../log.js';
import type { WsdrainOptions } from '../options.js';
import { PROTOCOL_V1 } from '../wire.js';
import { answerClientError, answerRequest, type ProbeState } from './http.js';

function noop(): void {}

/** ws's permessage-deflate options from ours: memory per connection bounded by them. */
function deflateOptions(o: WsdrainOptions): PerMessageDeflateOptions {
  return {
    serverMaxWindowBits: o.deflateWindowBits,
    // Applied when the client offers client_max_window_bits (browsers do).
    clientMaxWindowBits: o.deflateWindowBits,
    // ws sets each direction's windowBits from what was negotiated.
    zlibDeflateOptions: { memLevel: o.deflateMemLevel },
    threshold: o.deflateThreshold,
    concurrencyLimit: o.deflateConcurrency,
  };
}

/** Whether `options` ask for TLS (both the certificate and its key). */
export function usesTls(options: WsdrainOptions): boolean {
  return options.tlsCert !== undefined && options.tlsKey !== undefined;
}

/**
 * The HTTP server (HTTPS with --tls-cert and --tls-key), not listening yet. With TLS the
 * files are read now: a worker forked by a roll takes renewed certificates.
 */
export function createHttp(options: WsdrainOptions): Server {
  const handshake = options.handshakeTimeout;
  const http = {
    headersTimeout: handshake,
    requestTimeout: handshake * 2,
    connectionsCheckingInterval: Math.min(5000, Math.max(100, Math.floor(handshake / 4))),
    keepAliveTimeout: 5000,
  };
  if (!usesTls(options)) return createServer(http);
  return createHttpsServer({
    ...http,
    cert: readFileSync(options.tlsCert!),
    key: readFileSync(options.tlsKey!),
    ...(options.tlsCa
      ? { ca: readFileSync(options.tlsCa), requestCert: true, rejectUnauthorized: true }
      : {}),
    // A TLS handshake has the same time as an HTTP one.
    handshakeTimeout: handshake,
  });
}

/** The WebSocket server: upgrades are handed to it, it owns no listener. */
export function createWss(options: WsdrainOptions): WebSocketServer {
  return new WebSocketServer({
    noServer: true,
    maxPayload: options.maxPayload,
    maxFragments: options.maxFragments,
    perMessageDeflate: options.perMessageDeflate ? deflateOptions(options) : false,
    clientTracking: false,
    // ws would pick the first subprotocol a client offers; wsdrain selects only its own
    // (a client that requires another one then fails the handshake, as RFC 6455 says).
    handleProtocols: (offered: Set<string>) => (offered.has(PROTOCOL_V1) ? PROTOCOL_V1 : false),
    // ws would terminate (no close code) a peer with 60 unanswered pings; wsdrain limits
    // the ping rate itself and answers a flood with 1008.
    maxPendingAutoPongs: 0,
    // Bound ws's own per-socket close timer (30 s by default) by the drain budget.
    closeTimeout: options.drainTimeout,
  } as ConstructorParameters<typeof WebSocketServer>[0]);
}

/** Binds the configured port and host (in a cluster, joins the shared socket); rejects with a ListenError. */
export function bind(http: Server, { port, host }: WsdrainOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new ListenError(`cannot listen on ${host}:${port}: ${err.code ?? err.message}`));
    };
    http.once('error', onError);
    http.listen({ port, host, backlog: 4096 }, () => {
      http.off('error', onError);
      resolve();
    });
  });
}

/**
 * Wires `http`: probes and plain requests, upgrades, and every accepted socket (an 'error'
 * listener first, then `accepted`): with TLS, the sockets of completed handshakes (the TLS
 * handshake itself is bounded by --handshake-timeout); broken requests get their answer.
 */
export function serve(
  http: Server,
  o: {
    tls: boolean;
    log: Logger;
    probe: ProbeState;
    upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
    accepted: (socket: Socket) => void;
  },
): void {
  http.on('request', (req, res) => answerRequest(o.probe, req, res));
  http.on('upgrade', o.upgrade);
  http.on(o.tls ? 'secureConnection' : 'connection', (socket: Socket) => {
    socket.on('error', noop);
    o.accepted(socket);
  });
  if (o.tls) {
    http.on('connection', (socket: Socket) => socket.on('error', noop));
    http.on('tlsClientError', (err: Error & { code?: string }) => {
      o.log.debug({ err: err.code ?? err.message }, 'TLS handshake failed');
    });
  }
  http.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) =>
    answerClientError(o.log, err, socket),
  );
}
