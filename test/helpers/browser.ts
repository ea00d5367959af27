/**
 * A real browser for tests: Debian's Chromium driven by playwright-core (no browser download),
 * and a tiny HTTP server that serves a test page plus the compiled browser client from dist/.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { ROOT } from './process.js';

/** Where Debian's chromium package puts the browser. */
export const CHROMIUM = '/usr/bin/chromium';

/**
 * Makes sure Chromium is installed: runs scripts/ci-prereqs.sh when it is missing (it
 * apt-installs chromium as root) and throws, saying why, when it is still missing.
 */
export function ensureChromium(timeoutMs = 280_000): void {
  if (existsSync(CHROMIUM)) return;
  const script = join(ROOT, 'scripts', 'ci-prereqs.sh');
  const r = spawnSync('bash', [script], { cwd: ROOT, encoding: 'utf8', timeout: timeoutMs });
  if (existsSync(CHROMIUM)) return;
  const why = r.error ? r.error.message : `exit ${r.status ?? r.signal}`;
  throw new Error(
    `the browser test needs Chromium at ${CHROMIUM}; scripts/ci-prereqs.sh could not install it (${why})\n${r.stdout ?? ''}${r.stderr ?? ''}`,
  );
}

/**
 * Flags for headless Chromium on this closed network: without the background-networking ones
 * Chromium's own connections are refused and slow everything down.
 */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** Launches Debian's headless Chromium. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
}

/** Files of dist/ the page may load: the client and what it imports (no Node modules). */
const SERVED = /^\/(hint|codes|wire|client\/[a-z]+)\.js$/;

/** A test page served over HTTP, with the compiled client next to it. */
export interface PageServer {
  server: Server;
  /** http://127.0.0.1:PORT/ */
  url: string;
  close: () => Promise<void>;
}

/**
 * Serves the test page at `/` and dist/{hint,codes,wire}.js, dist/client/*.js under the same
 * paths as in dist/, so the client's relative imports (`../hint.js`, `./emitter.js`) resolve.
 */
export async function servePage(): Promise<PageServer> {
  const dist = join(ROOT, 'dist');
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const headers = { 'cache-control': 'no-store' };
    if (path === '/') {
      res.writeHead(200, { ...headers, 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE_HTML);
      return;
    }
    if (SERVED.test(path)) {
      let body: Buffer;
      try {
        body = readFileSync(join(dist, path));
      } catch {
        res.writeHead(404, headers).end(`not built: dist${path} (run npm run build)`);
        return;
      }
      res.writeHead(200, { ...headers, 'content-type': 'text/javascript; charset=utf-8' });
      res.end(body);
      return;
    }
    res.writeHead(404, headers).end('not found');
  });
  server.listen(0, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: `http://127.0.0.1:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** One thing a browser client did, as recorded by the page in `window.__events`. */
export interface PageEvent {
  /** Index of the client; -1 for marks. */
  client: number;
  type: 'mark' | 'open' | 'message' | 'sent' | 'close' | 'reconnecting' | 'error' | 'drop';
  /** Date.now() in the page. */
  t: number;
  /** mark */
  name?: string;
  /** open, reconnecting */
  attempt?: number;
  /** message, sent, drop */
  data?: string;
  /** close */
  code?: number;
  reason?: string;
  hint?: { kind: string; retryMs?: number } | null;
  willReconnect?: boolean;
  /** close, reconnecting */
  delayMs?: number | null;
  /** reconnecting: 'hint' | 'backoff'; drop: 'overflow' | 'closed' */
  why?: string;
  /** error */
  message?: string;
}

/** What the page exposes as `window.__wsdrain` (call it with page.evaluate). */
export interface PageApi {
  /**
   * Creates `n` clients of `url` with these options, one after the other once the previous
   * one opened (or failed); resolves with how many clients there are.
   */
  start(url: string, n: number, options: object): Promise<number>;
  /** Records a mark in the events, to split them into phases. */
  mark(name: string): void;
  /** Each client sends `c<i>:<seq>:<tag>` (seq counts per client). */
  send(tag: string): void;
  /** Sends a message from every client that is not closed, every `ms`. */
  startStream(ms: number): void;
  stopStream(): void;
  /** The clients' states. */
  states(): string[];
  /** Whether every client received a message whose text ends with `:<tag>`. */
  allReceived(tag: string): boolean;
  /** Whether every client had a close with `code` after the mark `name`. */
  allClosedWith(code: number, name: string): boolean;
  /** Closes every client for good. */
  closeAll(): void;
}

/**
 * The test page: a module that imports the client from /client/index.js, uses the browser's
 * own WebSocket, and records every event of every client in `window.__events`.
 */
export const PAGE_HTML = `<!doctype html>
<html>
<head><meta charset="utf-8"><title>wsdrain browser test</title></head>
<body>
<script type="module">
import { createClient } from '/client/index.js';

const events = [];
const clients = [];
const seqs = [];
let stream;
const now = () => Date.now();
const record = (client, type, payload) => events.push({ client, type, t: now(), ...payload });
const sendOne = (i, tag) => {
  const c = clients[i];
  if (c.state === 'closed') return;
  seqs[i] += 1;
  const data = 'c' + i + ':' + seqs[i] + ':' + tag;
  record(i, 'sent', { data });
  c.send(data);
};

window.__events = events;
window.__wsdrain = {
  async start(url, n, options) {
    for (let k = 0; k < n; k++) {
      const i = clients.length;
      const c = createClient(url, options);
      // One at a time: Chromium throttles a page's pending WebSocket handshakes (20 at once
      // take seconds even against a plain ws server).
      const settled = new Promise((resolve) => {
        c.once('open', resolve);
        c.once('close', resolve);
      });
      clients.push(c);
      seqs.push(0);
      c.on('open', (e) => record(i, 'open', { attempt: e.attempt }));
      c.on('message', (data) =>
        record(i, 'message', { data: typeof data === 'string' ? data : '<binary>' }),
      );
      c.on('close', (e) =>
        record(i, 'close', {
          code: e.code,
          reason: e.reason,
          hint: e.hint ?? null,
          willReconnect: e.willReconnect,
          delayMs: e.delayMs ?? null,
        }),
      );
      c.on('reconnecting', (e) =>
        record(i, 'reconnecting', { attempt: e.attempt, delayMs: e.delayMs, why: e.reason }),
      );
      c.on('error', (e) => record(i, 'error', { message: String(e.error && e.error.message) }));
      c.on('drop', (e) => record(i, 'drop', { data: String(e.data), why: e.reason }));
      await settled;
    }
    return clients.length;
  },
  mark(name) {
    events.push({ client: -1, type: 'mark', name, t: now() });
  },
  send(tag) {
    for (let i = 0; i < clients.length; i++) sendOne(i, tag);
  },
  startStream(ms) {
    let k = 0;
    clearInterval(stream);
    stream = setInterval(() => {
      k += 1;
      for (let i = 0; i < clients.length; i++) sendOne(i, 's' + k);
    }, ms);
  },
  stopStream() {
    clearInterval(stream);
  },
  states() {
    return clients.map((c) => c.state);
  },
  allReceived(tag) {
    const got = new Set();
    for (const e of events) {
      if (e.type === 'message' && e.data.endsWith(':' + tag)) got.add(e.client);
    }
    return got.size === clients.length;
  },
  allClosedWith(code, name) {
    const from = events.findIndex((e) => e.type === 'mark' && e.name === name);
    if (from === -1) return false;
    const got = new Set();
    for (const e of events.slice(from)) {
      if (e.type === 'close' && e.code === code) got.add(e.client);
    }
    return got.size === clients.length;
  },
  closeAll() {
    clearInterval(stream);
    for (const c of clients) c.close();
  },
};
window.__ready = true;
</script>
</body>
</html>
`;

/**
 * Calls a method of the page's `window.__wsdrain`. The call goes as a string expression, not a
 * function, so nothing the test transpiler adds to functions can break it in the page.
 */
export function callPage<K extends keyof PageApi>(
  page: Page,
  method: K,
  ...args: Parameters<PageApi[K]>
): Promise<Awaited<ReturnType<PageApi[K]>>> {
  const list = args.map((a) => JSON.stringify(a)).join(', ');
  return page.evaluate(`window.__wsdrain.${method}(${list})`) as Promise<
    Awaited<ReturnType<PageApi[K]>>
  >;
}

/** Every event the page recorded so far. */
export function pageEvents(page: Page): Promise<PageEvent[]> {
  return page.evaluate('window.__events') as Promise<PageEvent[]>;
}

/**
 * Waits until the expression is truthy in the page; on timeout, throws with `what` and the
 * clients' states so the failure says where things stood.
 */
export async function waitInPage(
  page: Page,
  expression: string,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  try {
    await page.waitForFunction(expression, undefined, { timeout: timeoutMs, polling: 25 });
  } catch (error) {
    const states = await callPage(page, 'states').catch(() => []);
    throw new Error(
      `timed out after ${timeoutMs} ms waiting for ${what}; client states: ${JSON.stringify(states)}; ${(error as Error).message.split('\n')[0]}`,
    );
  }
}
