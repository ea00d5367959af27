/**
 * `wsdrain start [options]`: parses flags and environment once, then runs the cluster primary
 * (`--workers N`, N >= 1), a cluster worker (forked by the primary), or a single process
 * (`--workers 0`). Bad input prints one line naming the flag and exits 2, starting nothing.
 * `./cli.ts` is the executable that calls {@link main}.
 */
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { UsageError, WsdrainError } from './errors.js';
import {
  helpText,
  OPTION_DEFS,
  OPTIONS_ENV,
  resolveOptions,
  type WsdrainOptions,
} from './options.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** Parses argv (without node and script); returns null when help or version was printed. */
export function parseCommandLine(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): WsdrainOptions | null {
  const spec: Record<string, { type: 'string' | 'boolean' }> = {
    help: { type: 'boolean' },
    version: { type: 'boolean' },
  };
  for (const def of OPTION_DEFS)
    spec[def.flag] = { type: def.kind === 'bool' ? 'boolean' : 'string' };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options: spec, allowPositionals: true, strict: true });
  } catch (err) {
    const m = /'(--?[^']+)'/.exec((err as Error).message);
    throw new UsageError(
      m
        ? `unknown option ${m[1]}; run "wsdrain start --help" for the list`
        : (err as Error).message,
    );
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${helpText()}\n`);
    return null;
  }
  if (values.version) {
    process.stdout.write(`${version()}\n`);
    return null;
  }
  const [command, ...rest] = positionals;
  if (command !== 'start') {
    throw new UsageError(
      command === undefined
        ? 'missing command; usage: wsdrain start [options] (see --help)'
        : `unknown command "${command}"; usage: wsdrain start [options] (see --help)`,
    );
  }
  if (rest.length > 0) throw new UsageError(`unexpected argument "${rest[0]}"`);
  const flags: Record<string, string | boolean | undefined> = {};
  for (const def of OPTION_DEFS) {
    const v = values[def.flag];
    if (typeof v === 'string' || typeof v === 'boolean') flags[def.flag] = v;
  }
  return resolveOptions(flags, env);
}

/**
 * Under npm (`npx wsdrain`, `npm start`), wsdrain runs below `sh -c`: a SIGTERM sent to npm
 * reaches that shell, which dies without passing it on, and wsdrain would go on with pid 1
 * as its parent. There, the parent's end is taken as a SIGTERM: the same drain, the same exit.
 */
function watchParent(): void {
  if (!process.env.npm_command && !process.env.npm_lifecycle_event) return;
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    process.stderr.write(
      'wsdrain: the npm process that started it is gone: draining as on SIGTERM\n',
    );
    process.emit('SIGTERM', 'SIGTERM');
  }, 250);
  timer.unref();
}

/** Runs the command line of this process (the primary, a worker, or a single process). */
export async function main(): Promise<void> {
  if (cluster.isWorker) {
    const options = JSON.parse(process.env[OPTIONS_ENV] ?? '{}') as WsdrainOptions;
    const { runServerProcess } = await import('./worker/main.js');
    await runServerProcess(options);
    return;
  }
  let options: WsdrainOptions | null;
  try {
    options = parseCommandLine(process.argv.slice(2));
  } catch (err) {
    if (err instanceof WsdrainError) {
      process.stderr.write(`wsdrain: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  if (!options) return;
  watchParent();
  if (options.workers === 0) {
    const { runServerProcess } = await import('./worker/main.js');
    await runServerProcess(options);
  } else {
    const { runPrimary } = await import('./primary/coordinator.js');
    await runPrimary(options);
  }
}
