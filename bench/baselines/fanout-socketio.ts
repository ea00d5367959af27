/**
 * Fan-out baseline: socket.io 4 with `@socket.io/cluster-adapter` on `--workers` cluster
 * workers, set up as the adapter's README shows it (`@socket.io/sticky` in the primary, which
 * hands each connection to a worker, `setupPrimary()` relaying broadcasts between workers,
 * 'advanced' serialization), WebSocket transport only (no long-polling).
 *
 * Events: `subscribe(topic, ack)` joins the room `topic` and acknowledges; `publish(topic,
 * data)` emits `pub(data)` to the room on every worker (`io.to(topic).emit`). `READY <port>` is
 * printed once every worker is set up. SIGTERM: exit at once.
 */
import cluster from 'node:cluster';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { createAdapter, setupPrimary } from '@socket.io/cluster-adapter';
import { setupMaster, setupWorker } from '@socket.io/sticky';
import { Server } from 'socket.io';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8080' },
    workers: { type: 'string', default: '2' },
  },
});
const port = Number(values.port);
const workers = Number(values.workers);
if (!Number.isInteger(port) || !Number.isInteger(workers) || workers < 1) {
  console.error(`bad --port ${values.port} or --workers ${values.workers} (at least 1)`);
  process.exit(2);
}

if (cluster.isPrimary) {
  const httpServer = createServer();
  setupMaster(httpServer, { loadBalancingMethod: 'least-connection' });
  setupPrimary();
  cluster.setupPrimary({ serialization: 'advanced' });
  let ready = 0;
  let listening = false;
  const announce = (): void => {
    if (listening && ready === workers) console.log(`READY ${port}`);
  };
  cluster.on('message', (_w, m: unknown) => {
    if (m === 'fanout:ready') {
      ready++;
      announce();
    }
  });
  cluster.on('exit', (w, code, signal) => {
    console.error(`worker ${w.process.pid} exited (${signal ?? code})`);
    process.exit(1);
  });
  httpServer.listen(port, '127.0.0.1', () => {
    listening = true;
    announce();
  });
  process.on('SIGTERM', () => process.exit(0));
  for (let i = 0; i < workers; i++) cluster.fork();
} else {
  const httpServer = createServer();
  const io = new Server(httpServer, { transports: ['websocket'], serveClient: false });
  io.adapter(createAdapter());
  setupWorker(io);
  io.on('connection', (socket) => {
    socket.on('error', () => {});
    socket.on('subscribe', (topic: unknown, ack?: (r: string) => void) => {
      if (typeof topic !== 'string') return;
      void socket.join(topic);
      if (typeof ack === 'function') ack('ok');
    });
    socket.on('publish', (topic: unknown, data: unknown) => {
      if (typeof topic === 'string') io.to(topic).emit('pub', data);
    });
  });
  process.send?.('fanout:ready');
}
