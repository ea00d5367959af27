/** Loopback HTTP probes and free ports for the servers under test. */
import { get } from 'node:http';
import { createServer } from 'node:net';

/**
 * Status code of `GET http://127.0.0.1:<port><path>`, or undefined when it failed or took
 * more than 1 s. `agent: false` opens a fresh connection that closes after the answer;
 * otherwise Node's global agent (keep-alive) is used.
 */
export function httpStatus(
  port: number,
  path: string,
  options: { agent?: false } = {},
): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = get({ host: '127.0.0.1', port, path, timeout: 1000, ...options }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
  });
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('port')),
      );
    });
  });
}
