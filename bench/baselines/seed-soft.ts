/**
 * Baseline, the widely copied recipe: on SIGTERM, close() every socket (no code: peers see
 * 1005), terminate() whatever is left after 10 s, exit. Exits early if every socket closed.
 */
import { serve } from './cluster.js';

serve((wss, exit) => {
  for (const ws of wss.clients) ws.close();
  wss.close(exit);
  setTimeout(() => {
    for (const ws of wss.clients) ws.terminate();
    exit();
  }, 10_000);
});
