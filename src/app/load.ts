/**
 * Loading an app module (`--app <path|package>`) and the pool handler it names. A path is
 * taken from the current directory; a package name is looked up in the node_modules of the
 * current directory and its parents (the app's own dependencies, not wsdrain's).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { AppLoadError } from '../errors.js';
import type { WsdrainApp } from './types.js';

const HOOKS = [
  'primary',
  'setup',
  'upgrade',
  'open',
  'message',
  'close',
  'drain',
  'canSubscribe',
  'canPublish',
] as const;

/** The entry point of a package's `exports` for `import`, or its `main`. */
function packageEntry(dir: string): string | undefined {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
    exports?: unknown;
    main?: string;
  };
  const pick = (e: unknown): string | undefined => {
    if (typeof e === 'string') return e;
    if (Array.isArray(e)) return pick(e[0]);
    if (e && typeof e === 'object') {
      const o = e as Record<string, unknown>;
      if ('.' in o) return pick(o['.']);
      for (const c of ['import', 'node', 'default']) if (c in o) return pick(o[c]);
    }
    return undefined;
  };
  const entry = pick(pkg.exports) ?? pkg.main ?? 'index.js';
  return join(dir, entry);
}

/**
 * Resolves a module specifier as a user means it: a path from `cwd`, a `file:` URL, or a
 * package (optionally with a subpath) in the node_modules of `cwd` and its parents.
 */
export function resolveModule(spec: string, cwd = process.cwd()): string {
  if (/^(file|data|node):/.test(spec)) return spec;
  if (spec.startsWith('.') || isAbsolute(spec)) {
    return pathToFileURL(resolve(cwd, spec)).href;
  }
  const parts = spec.split('/');
  const name = spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
  const sub = parts.slice(spec.startsWith('@') ? 2 : 1).join('/');
  for (let dir = resolve(cwd); ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) {
      const file = sub ? join(candidate, sub) : packageEntry(candidate);
      if (file) return pathToFileURL(file).href;
    }
    if (dirname(dir) === dir) break;
  }
  throw new AppLoadError(
    `cannot find package "${name}" from ${cwd} (install it in the app's own node_modules)`,
  );
}

/** Checks that `value` is an app: an object whose hooks are functions. */
export function checkApp(value: unknown, from: string): WsdrainApp {
  if (typeof value !== 'object' || value === null) {
    throw new AppLoadError(
      `${from} exports no app: its default export must be an object of hooks, e.g. createApp({ open(conn) {} })`,
    );
  }
  const app = value as Record<string, unknown>;
  for (const hook of HOOKS) {
    if (app[hook] !== undefined && typeof app[hook] !== 'function') {
      throw new AppLoadError(`${from}: "${hook}" must be a function, got ${typeof app[hook]}`);
    }
  }
  if (app.handler !== undefined && typeof app.handler !== 'string') {
    throw new AppLoadError(`${from}: "handler" must be a module path, got ${typeof app.handler}`);
  }
  return app as WsdrainApp;
}

/** Loads the app module `spec`; its default export (or `app`) is the app. */
export async function loadApp(
  spec: string,
  cwd = process.cwd(),
): Promise<{ app: WsdrainApp; url: string }> {
  const url = resolveModule(spec, cwd);
  let mod: { default?: unknown; app?: unknown };
  try {
    mod = (await import(url)) as typeof mod;
  } catch (err) {
    throw new AppLoadError(`cannot load app ${spec}: ${(err as Error).message}`);
  }
  return { app: checkApp(mod.default ?? mod.app, `app ${spec}`), url };
}

/** The pool handler an app names, resolved next to the app module. */
export function appHandler(app: WsdrainApp, appUrl: string): string | undefined {
  if (!app.handler) return undefined;
  return new URL(app.handler, appUrl).href;
}
