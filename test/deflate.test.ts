/**
 * permessage-deflate and close frames: while compressions are under way ws queues every frame
 * behind them, the close frame included. Every path that closes must still put its close frame
 * on the wire before the FIN: drains, rolls, late upgrades, a dead primary, limits.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { type Client, codes, connectMany } from './helpers/clients.js';
import { killAll, type Running, startWsdrain } from './helpers/process.js';
import { workersListening } from './helpers/workers.js';

afterEach(killAll);

/** Compressible text well above ws's 1 KiB compression threshold. */
const payload = (i: number): string => `${i} ${'all work and no play '.repeat(200)}`;

/** Every client sends a compressed message every `everyMs` until it is closed. */
function chatter(clients: Client[], everyMs = 50): () => void {
  let i = 0;
  const t = setInterval(() => {
    for (const c of clients) if (c.ws.readyState === WebSocket.OPEN) c.ws.send(payload(i++));
  }, everyMs);
  return () => clearInterval(t);
}

async function deflating(port: number, n: number): Promise<Client[]> {
  const clients = await connectMany(port, n);
  for (const c of clients) expect(c.ws.extensions).toContain('permessage-deflate');
  return clients;
}

/** Waits until every client has had replies, so compressions are under way on every socket. */
async function echoing(clients: Client[], timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (clients.some((c) => c.messages.length === 0)) {
    if (Date.now() - t0 > timeoutMs) throw new Error('clients got no echo');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const deflate = ['--per-message-deflate', '--threads', '1'];

describe('close frames with --per-message-deflate', () => {
  it('a shutdown drain under compressed traffic closes every client with 1001, all clean', async () => {
    const srv = await startWsdrain(['--workers', '0', ...deflate, '--drain-timeout', '4000']);
    const clients = await deflating(srv.port, 100);
    const stop = chatter(clients);
    await echoing(clients);
    srv.kill('SIGTERM');
    await Promise.all(clients.map((c) => c.closed));
    stop();
    expect(codes(clients)).toEqual({ 1001: 100 });
    expect((await srv.exited).code).toBe(0);
    const line = await srv.waitFor((l) => l.msg.startsWith('drained'));
    expect(line.report).toMatchObject({ sockets: 100, clean: 100, dropped: 0, terminated: 0 });
  });

  it('a rolling restart under compressed traffic closes every client with 1012', async () => {
    const srv = await startWsdrain(['--workers', '2', ...deflate, '--drain-timeout', '4000']);
    await workersListening(srv, 2);
    const clients = await deflating(srv.port, 100);
    const stop = chatter(clients);
    await echoing(clients);
    srv.kill('SIGHUP');
    await Promise.all(clients.map((c) => c.closed));
    stop();
    expect(codes(clients)).toEqual({ 1012: 100 });
    await srv.waitFor((l) => /rolling restart done/.test(l.msg), 20_000);
    const rolled = srv.lines.filter((l) => /^rolled worker/.test(l.msg));
    const clean = rolled.reduce((n, l) => n + (l.report as { clean: number }).clean, 0);
    expect(clean).toBe(100);
    srv.kill('SIGTERM');
    expect((await srv.exited).code).toBe(0);
  });

  it('a SIGKILLed primary still gets a 1001 to every client under compressed traffic', async () => {
    const srv: Running = await startWsdrain(['--workers', '2', ...deflate]);
    await workersListening(srv, 2);
    const clients = await deflating(srv.port, 100);
    const stop = chatter(clients);
    await echoing(clients);
    srv.kill('SIGKILL');
    await Promise.all(clients.map((c) => c.closed));
    stop();
    expect(codes(clients)).toEqual({ 1001: 100 });
  });

  it('closes a connection over --rate-limit with 1008 while its echoes are being compressed', async () => {
    // The limit counts messages as the server reads them, and on a busy machine it read these
    // 1,600 (inflated, echoed and compressed) at 500 to 800 a second: 40 a second per
    // connection, under a limit of 50 (none was closed). At 10, eleven in a second close it.
    const srv = await startWsdrain(['--workers', '0', ...deflate, '--rate-limit', '10']);
    const clients = await deflating(srv.port, 20);
    for (const c of clients) for (let i = 0; i < 80; i++) c.ws.send(payload(i));
    await Promise.all(clients.map((c) => c.closed));
    expect(codes(clients)).toEqual({ 1008: 20 });
  });
});
