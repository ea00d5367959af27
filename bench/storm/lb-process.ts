/**
 * The load balancer of lb.ts in its own process (forked with IPC by the storm scenario, run as
 * `node --import tsx lb-process.ts --backends 4001,4002`), so that piping thousands of
 * sockets does not share an event loop with the bench's bookkeeping.
 */
import { parseArgs } from 'node:util';
import { onParent, toParent } from '../lib/client-proc.js';
import { Balancer } from './lb.js';
import type { FromBalancer, ToBalancer } from './protocol.js';

const { values } = parseArgs({
  options: { backends: { type: 'string' }, 'poll-ms': { type: 'string', default: '50' } },
});
const backends = (values.backends ?? '').split(',').map(Number);
if (backends.length === 0 || backends.some((p) => !Number.isInteger(p) || p <= 0)) {
  console.error(`storm lb: --backends must list ports, got ${values.backends}`);
  process.exit(2);
}

const send: (m: FromBalancer) => void = toParent;
const lb = new Balancer({
  backends,
  pollMs: Number(values['poll-ms']),
  onReadyChange: (ready) => send({ type: 'ready', ready }),
});

onParent<ToBalancer>((m) => {
  switch (m.type) {
    case 'mark':
      lb.mark(m.t);
      break;
    case 'results':
      send({ type: 'results', results: lb.results() });
      break;
    case 'stop':
      lb.close();
      process.exit(0);
  }
});

const port = await lb.listen();
send({ type: 'listening', port });
