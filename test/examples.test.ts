/**
 * The feed and cpu examples run as their READMEs say: real wsdrain processes with the
 * examples' app and handler, and the examples' own scripts as child processes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import {
  createClient,
  type WebSocketConstructorLike,
  type WsdrainClientError,
} from 'wsdrain/client';
import { killAll, ROOT, startWsdrain } from './helpers/process.js';

const example = (path: string) => fileURLToPath(new URL(`../examples/${path}`, import.meta.url));
const SECRET = 'examples-test-secret';

const children = new Set<ChildProcess>();
afterEach(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  children.clear();
  killAll();
});

/** Runs an example script; `lines` fills with its stdout lines as they come. */
function run(script: string, args: string[]) {
  const child = spawn(process.execPath, [example(script), ...args], {
    cwd: ROOT,
    env: { ...process.env, FEED_SECRET: SECRET },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const lines: string[] = [];
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d;
    const parts = out.split('\n');
    out = parts.pop()!;
    lines.push(...parts);
  });
  child.stderr!.on('data', (d: Buffer) => {
    err += d;
  });
  const exited = new Promise<number | null>((resolve) => {
    child.on('error', () => resolve(null));
    child.on('exit', (code) => resolve(code));
  });
  return { child, lines, exited, stderr: () => err };
}

/** A token from the example's own mint script. */
async function mint(args: string[]): Promise<string> {
  const m = run('feed/mint.mjs', args);
  expect(await m.exited, m.stderr()).toBe(0);
  return m.lines[0]!;
}

async function until(cond: () => boolean, what: () => string, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`waited ${ms} ms for ${what()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The HTTP status an upgrade gets (101 when it is accepted). */
function upgradeStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.on('open', () => {
      ws.close();
      resolve(101);
    });
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    ws.on('error', reject);
  });
}

describe('examples/feed', () => {
  it('checks tokens in the pool (401), serves readers the feeds their token names, lets editors publish', async () => {
    const srv = await startWsdrain(
      ['--workers', '1', '--threads', '1', '--app', example('feed/app.mjs')],
      { env: { FEED_SECRET: SECRET, FEED_TICK_MS: '50' } },
    );
    const base = `ws://127.0.0.1:${srv.port}/`;
    const good = await mint(['--sub', 't', '--feeds', 'prices']);
    expect(await upgradeStatus(`${base}?token=${good}`)).toBe(101);
    expect(await upgradeStatus(`${base}?token=${good.slice(0, -2)}xx`)).toBe(401);
    expect(await upgradeStatus(base)).toBe(401);
    const expired = await mint(['--feeds', 'prices', '--ttl=-1']);
    expect(await upgradeStatus(`${base}?token=${expired}`)).toBe(401);

    const reader = run('feed/reader.mjs', ['--url', base, '--feeds', 'prices,news']);
    await until(
      () => reader.lines.filter((l) => l.includes('"prices"')).length >= 3,
      () => `three prices; stderr: ${reader.stderr()}`,
    );
    const editor = run('feed/publish.mjs', ['--url', base, '--feed', 'news', 'hello', 'readers']);
    expect(await editor.exited, editor.stderr()).toBe(0);
    const ack = JSON.parse(editor.lines[0]!) as { topic: string; offset: number };
    expect(ack.topic).toBe('feed:news');
    await until(
      () => reader.lines.some((l) => l.includes('hello readers')),
      () => `the news item; got ${reader.lines.join('\n')}`,
    );
    const items = reader.lines.map((l) => JSON.parse(l) as { feed: string; offset: number });
    const prices = items.filter((i) => i.feed === 'prices').map((i) => i.offset);
    expect(prices).toEqual(prices.map((_o, k) => prices[0]! + k));
    expect(items.find((i) => i.feed === 'news')).toMatchObject({ offset: ack.offset });
    reader.child.kill('SIGINT');
    expect(await reader.exited).toBe(0);

    // A token without a feed: that subscription and that publication are refused.
    const client = createClient(`${base}?token=${good}`, {
      WebSocket: WebSocket as unknown as WebSocketConstructorLike,
      protocol: 'wsdrain.v1',
    });
    client.on('error', () => {});
    const refused: string[] = [];
    client.subscribe('feed:news', () => {}, { onError: (e) => refused.push(e.code) });
    const published = await client
      .publish('feed:prices', 1)
      .catch((e: WsdrainClientError) => e.code);
    await until(
      () => refused.length === 1,
      () => 'the refusal',
    );
    expect([refused[0], published]).toEqual(['forbidden', 'forbidden']);
    client.close();
  });
});

describe('examples/cpu', () => {
  it('answers every job in the pool, in each connection order', async () => {
    const srv = await startWsdrain([
      '--workers',
      '1',
      '--threads',
      '2',
      '--handler',
      example('cpu/handler.mjs'),
    ]);
    const BELOW = 200_000;
    const ask = run('cpu/ask.mjs', [
      '--url',
      `ws://127.0.0.1:${srv.port}/`,
      '--clients',
      '3',
      '--jobs',
      '4',
      '--below',
      String(BELOW),
    ]);
    expect(await ask.exited, ask.stderr()).toBe(0);
    const answers = ask.lines.map(
      (l) => JSON.parse(l) as { client: number; id: string; primes: number; thread: number },
    );
    expect(answers).toHaveLength(12);
    // Counted here by trial division, independently of the sieve.
    let primes = 0;
    for (let n = 2; n < BELOW; n++) {
      let prime = true;
      for (let d = 2; d * d <= n; d++) {
        if (n % d === 0) {
          prime = false;
          break;
        }
      }
      if (prime) primes++;
    }
    for (const a of answers) expect(a.primes).toBe(primes);
    for (let c = 0; c < 3; c++) {
      expect(answers.filter((a) => a.client === c).map((a) => a.id)).toEqual(
        [0, 1, 2, 3].map((j) => `${c}-${j}`),
      );
    }
  });
});
