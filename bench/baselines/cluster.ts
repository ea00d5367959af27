/**
 * Skeleton shared by the baseline servers: `--workers` cluster workers (0 = one process, no
 * cluster) share `--port` on 127.0.0.1 (flags, or PORT / WORKERS), each with a plain `ws`
 * WebSocketServer that echoes. `READY <port>` is printed on stdout once every worker listens.
 * The primary forwards SIGTERM to the workers and exits when they all have exited; what a
 * worker does on SIGTERM is the strategy, the only thing each baseline script supplies.
 */
import cluster from 'node:cluster';
import { parseArgs } from 'node:util';
import { WebSocketServer } from 'ws';

/** What a worker does on SIGTERM; call `exit` when done. 'ignore' ignores the signal. */
export type Strategy = ((wss: WebSocketServer, exit: () => void) => void) | 'ignore';

export function serve(strategy: Strategy): void {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: process.env.PORT ?? '8080' },
      workers: { type: 'string', default: process.env.WORKERS ?? '2' },
    },
  });
  const port = Number(values.port);
  const workers = Number(values.workers);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad --port ${values.port}`);
  if (!Number.isInteger(workers) || workers < 0) fail(`bad --workers ${values.workers}`);

  if (workers === 0) worker(port, strategy, () => console.log(`READY ${port}`));
  else if (cluster.isPrimary) primary(port, workers, strategy);
  else worker(port, strategy, () => {});
}

function primary(port: number, workers: number, strategy: Strategy): void {
  let listening = 0;
  let alive = workers;
  let stopping = false;
  cluster.on('listening', () => {
    if (++listening === workers) console.log(`READY ${port}`);
  });
  cluster.on('exit', (w, code, signal) => {
    if (!stopping) console.error(`worker ${w.process.pid} died (${signal ?? code})`);
    if (--alive === 0) process.exit(stopping ? 0 : 1);
  });
  process.on('SIGTERM', () => {
    if (strategy === 'ignore') return;
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
  });
  for (let i = 0; i < workers; i++) cluster.fork();
}

function worker(port: number, strategy: Strategy, onListening: () => void): void {
  const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
  wss.on('listening', onListening);
  wss.on('error', (err) => fail(`listen: ${err.message}`));
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  process.on('SIGTERM', () => {
    if (strategy !== 'ignore') strategy(wss, () => process.exit(0));
  });
}

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}
