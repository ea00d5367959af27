/**
 * The chat example (examples/chat) as a user runs it: wsdrain with the example's app on 2
 * workers, the example's own page server, and two headless-Chromium pages. The pages talk
 * across the two workers, then a SIGHUP rolls both workers while they keep talking: every
 * message reaches both pages, once each, in the order it was said. Signals go to the wsdrain
 * child process only.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureChromium, launchChromium, waitInPage } from './helpers/browser.js';
import { killAll, type Running, startWsdrain } from './helpers/process.js';
import { workersListening } from './helpers/workers.js';

const APP = fileURLToPath(new URL('../examples/chat/app.mjs', import.meta.url));
const SERVE = fileURLToPath(new URL('../examples/chat/serve.mjs', import.meta.url));
/** The server's --reconnect-window: after a 1012 a page waits at most this (+ its jitter). */
const WINDOW = 500;

let browser: Browser | undefined;
let srv: Running | undefined;
let site: { child: ChildProcess; url: string } | undefined;
const pageErrors: string[] = [];

/** Starts the example's page server on a free port; resolves once it says where it listens. */
function servePages(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [SERVE, '--port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`serve.mjs said nothing: ${err}`)), 10_000);
    child.on('error', reject);
    child.stderr!.on('data', (d: Buffer) => {
      err += d;
    });
    child.stdout!.on('data', (d: Buffer) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl === -1) return;
      clearTimeout(timer);
      const { port } = JSON.parse(out.slice(0, nl)) as { port: number };
      resolve({ child, url: `http://127.0.0.1:${port}/` });
    });
    child.on('exit', (code) => reject(new Error(`serve.mjs exited (${code}): ${err}`)));
  });
}

beforeAll(async () => {
  ensureChromium();
  [srv, site, browser] = await Promise.all([
    startWsdrain([
      '--workers',
      '2',
      '--threads',
      '1',
      '--app',
      APP,
      '--drain-timeout',
      '3000',
      '--reconnect-window',
      String(WINDOW),
    ]),
    servePages(),
    launchChromium(),
  ]);
}, 300_000);

afterAll(async () => {
  await browser?.close().catch(() => {});
  if (site && site.child.exitCode === null) site.child.kill('SIGTERM');
  killAll();
}, 30_000);

/** What a page's `window.chat` holds (read as JSON). */
interface ChatState {
  worker: number | undefined;
  opens: number;
  closes: number[];
  said: string[];
  received: Array<{ id: string; from: string; text: string; offset: number; epoch: string }>;
  messages: Array<{ id: string; from: string; text: string }>;
  unrecovered: number;
  pending: number;
  state: string;
}

async function read(page: Page): Promise<ChatState> {
  return (await page.evaluate(`(() => {
    const c = window.chat;
    return {
      worker: c.worker, opens: c.opens, closes: c.closes, said: c.said, received: c.received,
      messages: c.messages, unrecovered: c.unrecovered, pending: c.pending(), state: c.state(),
    };
  })()`)) as ChatState;
}

const say = (page: Page, text: string): Promise<string> =>
  page.evaluate(`window.chat.say(${JSON.stringify(text)})`) as Promise<string>;

/**
 * Opens the chat as `user`; resolves once it is connected, knows its worker and is subscribed
 * to the room (a message said before that is not the page's to get).
 */
async function openChat(page: Page, user: string): Promise<void> {
  await page.goto(`${site!.url}?user=${user}&ws=ws://127.0.0.1:${srv!.port}/`);
  await waitInPage(
    page,
    "window.chat && window.chat.worker !== undefined && window.chat.state() === 'open' && window.chat.joined()",
    `${user}'s page to connect`,
  );
}

describe('examples/chat in Chromium', () => {
  it('two pages on two workers exchange messages, and keep exchanging through a SIGHUP roll with nothing lost', async () => {
    const server = srv!;
    const [w1, w2] = await workersListening(server, 2);
    expect(w1).not.toBe(w2);
    const ann = await browser!.newPage();
    const bob = await browser!.newPage();
    for (const p of [ann, bob]) p.on('pageerror', (e) => pageErrors.push(e.message));
    await openChat(ann, 'ann');
    await openChat(bob, 'bob');
    // The cluster hands connections out in turn: a few reloads put bob on the other worker.
    for (let i = 0; i < 10 && (await read(bob)).worker === (await read(ann)).worker; i++) {
      await openChat(bob, 'bob');
    }
    const before = [(await read(ann)).worker, (await read(bob)).worker];
    expect(new Set(before).size, `workers ${before}`).toBe(2);

    // Across the two workers, both ways.
    const hello = await say(ann, 'hello bob');
    await waitInPage(bob, `window.chat.messages.some((m) => m.id === '${hello}')`, 'ann → bob');
    const hi = await say(bob, 'hi ann');
    await waitInPage(ann, `window.chat.messages.some((m) => m.id === '${hi}')`, 'bob → ann');

    // Both keep talking while every worker is rolled.
    const talk = (page: Page) =>
      page.evaluate(
        "window.__talk = setInterval(() => window.chat.say('s' + (window.__n = (window.__n || 0) + 1)), 40)",
      );
    await Promise.all([talk(ann), talk(bob)]);
    server.kill('SIGHUP');
    const done = await server.waitFor((l) => /rolling restart done/.test(l.msg), 30_000);
    expect(done.rolled).toBe(2);
    for (const [page, who] of [
      [ann, 'ann'],
      [bob, 'bob'],
    ] as const) {
      await waitInPage(
        page,
        `window.chat.closes.includes(1012) && window.chat.state() === 'open' && ![${before}].includes(window.chat.worker)`,
        `${who}'s page to be moved to a new worker`,
        WINDOW * 10,
      );
    }
    // Talking after the roll, then the last words.
    const heard = (await read(bob)).messages.length;
    await waitInPage(
      bob,
      `window.chat.messages.length >= ${heard + 10}`,
      'ten more messages after the roll',
    );
    await Promise.all([ann, bob].map((p) => p.evaluate('clearInterval(window.__talk)')));
    await say(ann, 'bye bob');
    await say(bob, 'bye ann');
    const said = [...(await read(ann)).said, ...(await read(bob)).said];
    for (const page of [ann, bob]) {
      await waitInPage(
        page,
        `window.chat.pending() === 0 && ${JSON.stringify(said)}.every((id) => window.chat.messages.some((m) => m.id === id))`,
        'every message acknowledged and shown',
      );
    }

    const a = await read(ann);
    const b = await read(bob);
    for (const [who, s] of [
      ['ann', a],
      ['bob', b],
    ] as const) {
      // Shown: every message of each speaker, once, in the order said.
      expect(
        s.messages.filter((m) => m.from === 'ann').map((m) => m.id),
        `${who}: ann's messages`,
      ).toEqual(a.said);
      expect(
        s.messages.filter((m) => m.from === 'bob').map((m) => m.id),
        `${who}: bob's messages`,
      ).toEqual(b.said);
      // The subscription itself: one publication per offset, none skipped, nothing missed.
      for (let i = 1; i < s.received.length; i++) {
        const [p, q] = [s.received[i - 1]!, s.received[i]!];
        expect(q.epoch, `${who}: epoch`).toBe(p.epoch);
        expect(q.offset, `${who}: offset after ${p.offset}`).toBe(p.offset + 1);
      }
      expect(s.unrecovered, who).toBe(0);
      expect(
        s.closes.every((c) => c === 1012),
        `${who}: closes ${s.closes}`,
      ).toBe(true);
    }
    expect(a.said.length + b.said.length).toBeGreaterThan(20);
    expect(pageErrors).toEqual([]);
    expect(server.child.exitCode).toBeNull();
  }, 60_000);
});
