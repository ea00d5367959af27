/**
 * The reconnecting client in a real browser (Debian's headless Chromium, native WebSocket)
 * against a real wsdrain cluster: a rolling restart (SIGHUP) and a shutdown (SIGTERM) seen
 * from the page. Signals go to the wsdrain child process only.
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  callPage,
  ensureChromium,
  launchChromium,
  type PageEvent,
  type PageServer,
  pageEvents,
  servePage,
  waitInPage,
} from './helpers/browser.js';
import { killAll, type Running, startWsdrain } from './helpers/process.js';

/** Browser clients. */
const N = 20;
/** The server's --reconnect-window: retry hints are in [0, WINDOW] ms. */
const WINDOW = 1000;
/** The clients' hintJitter: the wait after a hint is in [retry, retry + JITTER] ms. */
const JITTER = 200;
const CLIENT_OPTIONS = {
  backoff: { initialMs: 200, maxMs: 2000 },
  hintJitter: JITTER,
  openTimeoutMs: 5000,
};

let browser: Browser | undefined;
let page: Page | undefined;
let site: PageServer | undefined;
let srv: Running | undefined;
const pageErrors: string[] = [];

beforeAll(async () => {
  ensureChromium();
  site = await servePage();
  browser = await launchChromium();
  page = await browser.newPage();
  page.on('pageerror', (error) => pageErrors.push(error.message));
  srv = await startWsdrain([
    '--workers',
    '2',
    '--threads',
    '1',
    '--drain-timeout',
    '3000',
    '--reconnect-window',
    String(WINDOW),
  ]);
}, 300_000);

afterAll(async () => {
  await page?.close().catch(() => {});
  await browser?.close().catch(() => {});
  await site?.close().catch(() => {});
  if (srv && srv.child.exitCode === null && srv.child.signalCode === null) {
    srv.kill('SIGKILL');
    await srv.exited;
  }
  killAll();
}, 30_000);

/** The events of one client after the mark `from` and before the mark `to` (if given). */
function phase(events: PageEvent[], client: number, from: string, to?: string): PageEvent[] {
  const start = events.findIndex((e) => e.type === 'mark' && e.name === from);
  expect(start, `mark ${from}`).toBeGreaterThanOrEqual(0);
  let end = to ? events.findIndex((e) => e.type === 'mark' && e.name === to) : events.length;
  if (end === -1) end = events.length;
  return events.slice(start + 1, end).filter((e) => e.client === client);
}

/** A compact trace of a client's lifecycle events, for failure messages. */
function trace(client: number, events: PageEvent[]): string {
  const life = events.filter((e) => e.type !== 'message' && e.type !== 'sent');
  return `client ${client}: ${life
    .map((e) =>
      e.type === 'close'
        ? `close(${e.code} "${e.reason}" willReconnect=${e.willReconnect} delay=${e.delayMs})`
        : e.type === 'reconnecting'
          ? `reconnecting(${e.why} ${e.delayMs})`
          : e.type === 'error'
            ? `error(${e.message})`
            : e.type,
    )
    .join(' -> ')}`;
}

describe('browser client (Chromium) against a wsdrain cluster', () => {
  it('reconnects every client after a rolling restart, by the hint, without losing order or duplicating', async () => {
    const p = page!;
    const server = srv!;
    await p.goto(site!.url);
    await waitInPage(p, 'window.__ready === true', 'the page module to load');

    expect(await callPage(p, 'start', `ws://127.0.0.1:${server.port}/`, N, CLIENT_OPTIONS)).toBe(N);
    await waitInPage(
      p,
      "window.__wsdrain.states().every((s) => s === 'open')",
      `${N} clients to open`,
      15_000,
    );
    await callPage(p, 'send', 'before');
    await waitInPage(p, "window.__wsdrain.allReceived('before')", 'the echo of "before"');

    await callPage(p, 'mark', 'roll');
    await callPage(p, 'startStream', 50);
    server.kill('SIGHUP');
    const done = await server.waitFor((l) => /rolling restart done/.test(l.msg), 30_000);
    expect(done.rolled).toBe(2);
    await waitInPage(
      p,
      "window.__wsdrain.allClosedWith(1012, 'roll') && window.__wsdrain.states().every((s) => s === 'open')",
      'every client to be closed with 1012 and to reconnect',
      15_000,
    );
    await callPage(p, 'stopStream');
    await callPage(p, 'send', 'after');
    await waitInPage(p, "window.__wsdrain.allReceived('after')", 'the echo of "after"');
    await callPage(p, 'mark', 'rolled');

    const events = await pageEvents(p);
    expect(events.filter((e) => e.type === 'close' && e.code === 1006)).toEqual([]);
    expect(events.filter((e) => e.type === 'error' || e.type === 'drop')).toEqual([]);

    for (let i = 0; i < N; i++) {
      const roll = phase(events, i, 'roll', 'rolled');
      const why = trace(i, roll);
      const closes = roll.filter((e) => e.type === 'close');
      const reconnects = roll.filter((e) => e.type === 'reconnecting');
      const opens = roll.filter((e) => e.type === 'open');
      // At least one 1012 (a client that reconnected to the other old worker sees a second).
      expect(closes.length, why).toBeGreaterThanOrEqual(1);
      for (const c of closes) {
        expect(c.code, why).toBe(1012);
        expect(c.reason, why).toMatch(/^wsdrain:restart;retry=\d+$/);
        expect(c.hint, why).toEqual({ kind: 'restart', retryMs: expect.any(Number) });
        const retry = c.hint!.retryMs!;
        expect(retry, why).toBeGreaterThanOrEqual(0);
        expect(retry, why).toBeLessThanOrEqual(WINDOW);
        expect(c.willReconnect, why).toBe(true);
        // The hint sets the wait: retry plus at most the jitter, never less than retry.
        expect(c.delayMs, why).toBeGreaterThanOrEqual(retry);
        expect(c.delayMs, why).toBeLessThanOrEqual(retry + JITTER);
      }
      expect(reconnects.length, why).toBe(closes.length);
      expect(
        reconnects.every((r) => r.why === 'hint'),
        why,
      ).toBe(true);
      // Every close is followed by a reopen: close, reconnecting, open, ... ending open.
      const life = roll.filter((e) => e.type === 'close' || e.type === 'open').map((e) => e.type);
      expect(life, why).toEqual(closes.flatMap(() => ['close', 'open']));
      expect(
        opens.every((o) => o.attempt === 1),
        why,
      ).toBe(true);

      // Messages: each echo is one this client sent, at most once, in the order sent.
      const mine = events.filter((e) => e.client === i);
      const sent = new Set(mine.filter((e) => e.type === 'sent').map((e) => e.data));
      const got = mine.filter((e) => e.type === 'message').map((e) => e.data!);
      expect(
        got.filter((d) => !sent.has(d)),
        why,
      ).toEqual([]);
      expect(new Set(got).size, `${why}: duplicated echoes`).toBe(got.length);
      const seqs = got.map((d) => Number(d.split(':')[1]));
      expect(
        seqs.every((s, k) => k === 0 || s > seqs[k - 1]!),
        `${why}: echoes out of order: ${seqs.join(',')}`,
      ).toBe(true);
      expect(got.filter((d) => d.endsWith(':before'))).toHaveLength(1);
      expect(got.filter((d) => d.endsWith(':after'))).toHaveLength(1);
    }
    expect(pageErrors).toEqual([]);
    expect(server.child.exitCode).toBeNull();
  }, 60_000);

  it('sees 1001 with a shutdown hint on SIGTERM and would reconnect', async () => {
    const p = page!;
    const server = srv!;
    // The first test must have left every client open.
    expect(await callPage(p, 'states')).toEqual(Array(N).fill('open'));

    await callPage(p, 'mark', 'shutdown');
    server.kill('SIGTERM');
    await waitInPage(
      p,
      "window.__wsdrain.allClosedWith(1001, 'shutdown')",
      'every client to be closed with 1001',
    );
    await callPage(p, 'mark', 'closing');
    await callPage(p, 'closeAll');
    const exit = await server.exited;
    expect(exit.code).toBe(0);
    await waitInPage(
      p,
      "window.__wsdrain.states().every((s) => s === 'closed')",
      'every client to close for good',
    );
    const events = await pageEvents(p);

    for (let i = 0; i < N; i++) {
      const down = phase(events, i, 'shutdown');
      const why = trace(i, down);
      const closes = down.filter((e) => e.type === 'close');
      const first = closes[0];
      expect(first, why).toBeDefined();
      expect(first!.code, why).toBe(1001);
      // The server sets --reconnect-window: every shutdown hint carries a retry within it.
      expect(first!.reason, why).toMatch(/^wsdrain:shutdown;retry=\d+$/);
      expect(first!.hint, why).toEqual({ kind: 'shutdown', retryMs: expect.any(Number) });
      const retry = first!.hint!.retryMs!;
      expect(retry, why).toBeGreaterThanOrEqual(0);
      expect(retry, why).toBeLessThanOrEqual(WINDOW);
      expect(first!.willReconnect, why).toBe(true);
      expect(first!.delayMs, why).toBeGreaterThanOrEqual(retry);
      expect(first!.delayMs, why).toBeLessThanOrEqual(retry + JITTER);
      // The close is followed by a scheduled reconnect.
      const next = down[down.indexOf(first!) + 1];
      expect(next?.type, why).toBe('reconnecting');
      // Until the page closed the clients, each one kept reconnecting (attempts at a server
      // that is gone fail); then exactly one final close.
      expect(
        closes.slice(0, -1).every((c) => c.willReconnect),
        why,
      ).toBe(true);
      expect(closes.at(-1)!.willReconnect, why).toBe(false);
      const beforeClosing = phase(events, i, 'shutdown', 'closing').filter(
        (e) => e.type === 'close',
      );
      expect(
        beforeClosing.every((c) => c.willReconnect),
        why,
      ).toBe(true);
    }
    expect(pageErrors).toEqual([]);
  }, 30_000);
});
