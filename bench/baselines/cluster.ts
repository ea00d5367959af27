/**
 * Skeleton shared by the baseline servers: `--workers` cluster workers (0 = one process, no
 * cluster) share `--port` on 127.0.0.1 (flags, or PORT / WORKERS), each with a plain `ws`
 * WebSocketServer that echoes. `READY <port>` is printed on stdout once every worker listens.
 * The primary forwards SIGTERM to the workers and exits when they all have exited; what a
 * worker does on SIGTERM is the strategy, the only thing most baseline scripts supply. A
 * script may also answer messages its own way (`message`) and `GET /healthz` with 200.
 */
import cluster from 'node:cluster';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { type RawData, type WebSocket, WebSocketServer } from 'ws';

/** What a worker does on SIGTERM; call `exit` when done. 'ignore' ignores the signal. */
export type Strategy = ((wss: WebSocketServer, exit: () => void) => void) | 'ignore';

export interface ServeOptions {
  /** Answers a message (default: echoes it as it came). */
  message?: (ws: WebSocket, data: RawData, isBinary: boolean) => void;
  /** `GET /healthz` answers 200 (otherwise ws answers every plain HTTP request with 426). */
  healthz?: boolean;
}

const echo = (ws: WebSocket, data: RawData, isBinary: boolean): void =>
  ws.send(data, { binary: isBinary });

export function serve(strategy: Strategy, options: ServeOptions = {}): void {
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

  if (workers === 0) worker(port, strategy, options, () => console.log(`READY ${port}`));
  else if (cluster.isPrimary) primary(port, workers, strategy);
  else worker(port, strategy, options, () => {});
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

function worker(
  port: number,
  strategy: Strategy,
  options: ServeOptions,
  onListening: () => void,
): void {
  let wss: WebSocketServer;
  if (options.healthz) {
    const http = createServer((req, res) => {
      res.writeHead(req.url === '/healthz' ? 200 : 426).end();
    });
    wss = new WebSocketServer({ server: http, perMessageDeflate: false });
    http.listen(port, '127.0.0.1');
  } else wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
  wss.on('listening', onListening);
  wss.on('error', (err) => fail(`listen: ${err.message}`));
  const message = options.message ?? echo;
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('message', (data, isBinary) => message(ws, data, isBinary));
  });
  process.on('SIGTERM', () => {
    if (strategy !== 'ignore') strategy(wss, () => process.exit(0));
  });
}

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}
