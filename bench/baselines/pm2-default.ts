/**
 * Baseline: an app that does nothing on SIGTERM. Under pm2 with the default kill_timeout the
 * process tree is SIGKILLed 1600 ms after the signal; the bench harness does that kill itself.
 */
import { serve } from './cluster.js';

serve('ignore');
