/**
 * `start()`: wsdrain from a script of your own instead of the command line.
 *
 * ```js
 * // server.mjs: run with `node server.mjs`; it runs in the primary and in every worker
 * import { createApp, start } from 'wsdrain';
 * const app = createApp({ open(conn) { conn.subscribe('news'); } });
 * await start({ app, port: 8080, workers: 2 });
 * ```
 *
 * With workers, the primary forks this same script for each worker (that is how node:cluster
 * works), and `start()` there runs the worker with the same options (the primary's) and the
 * app the script built. The primary owns the signals as with the command line, and exits the
 * process when its drain is done. Options are those of the command line, validated the same
 * way; `app` may be a module path (as `--app`) or the app itself.
 */
import cluster from 'node:cluster';
import type { WsdrainApp } from './app/types.js';
import { OPTIONS_ENV, validateOptions, type WsdrainOptions } from './options.js';

/** Options of {@link start}: any command-line option, and the app as a path or an object. */
export type StartOptions = Partial<Omit<WsdrainOptions, 'app'>> & {
  app?: string | WsdrainApp | undefined;
};

/** Where `start()` runs. */
export type StartedAs = 'primary' | 'worker' | 'single';

/** Starts wsdrain in this process: the primary, a worker, or a single process. */
export async function start(options: StartOptions = {}): Promise<StartedAs> {
  const app = typeof options.app === 'object' ? options.app : undefined;
  if (cluster.isWorker) {
    const resolved = JSON.parse(process.env[OPTIONS_ENV] ?? '{}') as WsdrainOptions;
    const { runServerProcess } = await import('./worker/main.js');
    await runServerProcess(resolved, app);
    return 'worker';
  }
  const resolved = validateOptions({
    ...options,
    app: typeof options.app === 'string' ? options.app : undefined,
  });
  if (resolved.workers === 0) {
    const { runServerProcess } = await import('./worker/main.js');
    await runServerProcess(resolved, app);
    return 'single';
  }
  const { runPrimary } = await import('./primary/coordinator.js');
  await runPrimary(resolved, app);
  return 'primary';
}
