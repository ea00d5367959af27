/** Loopback HTTP probes and free ports for the servers under test. */
import { get } from 'node:http';
import { createServer } from 'node:net';

/**
 * `GET http://127.0.0.1:<port><path>` on a fresh connection (closed after the answer, as a
 * kubelet probe): the status code as a string, or the error code (`ECONNREFUSED`, ...) when no
 * answer came within 1 s.
 */
export function probe(port: number, path: string): Promise<string> {
  return new Promise((resolve) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false, timeout: 1000 }, (res) => {
      res.on('error', () => {});
      res.resume();
      resolve(String(res.statusCode));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
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
