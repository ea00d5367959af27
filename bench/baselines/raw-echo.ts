/** Baseline for throughput comparisons: a plain ws echo server; exits at once on SIGTERM. */
import { serve } from './cluster.js';

serve((wss, exit) => {
  for (const ws of wss.clients) ws.terminate();
  exit();
});
