/**
 * Baseline of the work scenario: a plain ws server of the same cluster shape that runs
 * wsdrain's built-in handler (echo, and `{"op":"work","ms":N}` burning N ms of CPU) on its
 * event loop, as a server without a thread pool does. `GET /healthz` answers 200. On SIGTERM:
 * `close(1001)` on every socket, exit once they have all closed (as baselines/ws-close.ts).
 */
import { DEFAULT_MAX_WORK_MS, makeEcho } from 'wsdrain/internal';
import { serve } from './cluster.js';

const handle = makeEcho(DEFAULT_MAX_WORK_MS);

serve(
  (wss, exit) => {
    for (const ws of wss.clients) ws.close(1001);
    wss.close(exit);
  },
  {
    healthz: true,
    message(ws, data, isBinary) {
      const bytes = data as Buffer;
      const reply = handle({
        data: isBinary ? new Uint8Array(bytes) : bytes.toString(),
        isBinary,
      });
      if (typeof reply === 'string' || reply instanceof Uint8Array) {
        ws.send(reply, { binary: typeof reply !== 'string' });
      }
    },
  },
);
