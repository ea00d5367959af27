/** Baseline: on SIGTERM, terminate() every socket (no close handshake) and exit. */
import { serve } from './cluster.js';

serve((wss, exit) => {
  for (const ws of wss.clients) ws.terminate();
  exit();
});
