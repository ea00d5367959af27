/**
 * The frame of the scenarios that put one server under load (drain, roll, healthz,
 * capacity): a free port, the server and its load; the body runs once the server is ready,
 * and the load and the server are stopped afterwards, whatever happens.
 */
import { freePort, Server, type ServerSpec, unavailable } from '../servers.js';
import { log } from './log.js';

/** A load generator of loadgen/ (Load, ReconnectLoad). */
export interface Stoppable {
  stop(): Promise<void>;
}

/**
 * Starts the server of `spec` on a free port and `load(url)` against it, waits until the
 * server is ready, then runs `body`; the load and the server are stopped afterwards.
 */
export async function withServer<L extends Stoppable, R>(
  spec: Omit<ServerSpec, 'port'>,
  load: (url: string) => L,
  body: (server: Server, load: L, port: number) => Promise<R>,
): Promise<R> {
  const port = await freePort();
  const server = new Server({ ...spec, port });
  const l = load(`ws://127.0.0.1:${port}`);
  try {
    await server.ready();
    return await body(server, l, port);
  } finally {
    await l.stop();
    server.killTree();
  }
}

/** {@link withServer} for wsdrain; throws when wsdrain is not built. */
export function withWsdrain<L extends Stoppable, R>(
  spec: Omit<ServerSpec, 'strategy' | 'port'>,
  load: (url: string) => L,
  body: (server: Server, load: L, port: number) => Promise<R>,
): Promise<R> {
  const why = unavailable('wsdrain');
  if (why) return Promise.reject(new Error(why));
  return withServer({ ...spec, strategy: 'wsdrain' }, load, body);
}

/** Throws when the server has already exited (before the signal). */
export function assertUp(server: Server): void {
  if (server.exitAt !== undefined) throw new Error(`server exited early:\n${server.output}`);
}

/** A scenario result with the targets it missed. */
export interface Judged {
  misses: string[];
}

/** Fills `result.misses`, logs `<name>: <describe(result)>` and returns the result. */
export function judge<R extends Judged>(
  name: string,
  result: R,
  misses: (r: R) => string[],
  describe: (r: R) => string,
): R {
  result.misses = misses(result);
  log(`${name}: ${describe(result)}`);
  return result;
}
