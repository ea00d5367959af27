/** Baseline: on SIGTERM, close() every socket, terminate() them all on the next tick, exit. */
import { serve } from './cluster.js';

serve((wss, exit) => {
  for (const ws of wss.clients) ws.close();
  process.nextTick(() => {
    for (const ws of wss.clients) ws.terminate();
    exit();
  });
});
