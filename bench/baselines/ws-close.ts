/**
 * Baseline: on SIGTERM, ws.close(1001) on every socket and exit once all have closed. A peer
 * that never answers holds its socket for ws's default closeTimeout (30 s).
 */
import { serve } from './cluster.js';

serve((wss, exit) => {
  for (const ws of wss.clients) ws.close(1001);
  wss.close(exit); // stops listening; the callback runs once every client has closed
});
