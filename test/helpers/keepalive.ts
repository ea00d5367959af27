/**
 * A WebSocket upgrade sent on an HTTP keep-alive connection opened earlier: the connection
 * stays with the worker that accepted it, whatever that worker's listener does since.
 */
import { Agent, get } from 'node:http';
import { WebSocket } from 'ws';
import { within } from './wait.js';

export interface KeptAlive {
  /** Local port of the kept-alive TCP connection. */
  localPort: number;
  /** Sends the upgrade on that connection; resolves with the socket's local port once open. */
  upgrade: () => Promise<{ ws: WebSocket; localPort: number }>;
}

/** Opens a keep-alive connection with one `GET /healthz`, then keeps it idle. */
export function keptAlive(port: number): Promise<KeptAlive> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const opened = new Promise<KeptAlive>((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path: '/healthz', agent }, (res) => {
      const localPort = res.socket.localPort ?? 0;
      res.resume();
      res.on('end', () => {
        // The agent takes the socket back on the next turn.
        setImmediate(() =>
          resolve({
            localPort,
            upgrade: () =>
              within(
                new Promise((ok, fail) => {
                  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { agent });
                  ws.on('error', fail);
                  ws.on('open', () => {
                    const socket = (ws as unknown as { _socket: { localPort?: number } })._socket;
                    ok({ ws, localPort: socket.localPort ?? 0 });
                  });
                }),
                5000,
                `the upgrade on kept-alive connection ${localPort} to open`,
              ),
          }),
        );
      });
    });
    req.on('error', reject);
  });
  return within(opened, 5000, `GET /healthz on a keep-alive connection to port ${port}`);
}
