/**
 * Rolling restarts (SIGHUP) that go wrong, with real forked workers, real signals and real
 * clients.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { killAll, loggedWorkerPids, type Running, startWsdrain } from './helpers/process.js';
import { workerPids } from './helpers/roll.js';
import { until, within } from './helpers/wait.js';

afterEach(killAll);

const workers = (n: number): string[] => ['--workers', String(n), '--threads', '1'];
/** Test timings: fast respawns unless told otherwise, a start timeout a loaded machine meets. */
const timings = (t: Record<string, number> = {}): NodeJS.ProcessEnv => ({
  WSDRAIN_TIMINGS: JSON.stringify({
    backoffBaseMs: 20,
    backoffMaxMs: 200,
    startTimeout: 15_000,
    ...t,
  }),
});

async function stop(srv: Running): Promise<void> {
  srv.kill('SIGTERM');
  expect((await srv.exited).code).toBe(0);
}

describe('rolling restart faults: no refusal in any roll', () => {
  it('a connection the old worker accepted before its drain, its upgrade sent once the drain began, gets 1012, not a reset', async () => {
    // The old worker holds no WebSocket: without a wait for that request, its drain ends
    // (and resets the connection) within a millisecond.
    const srv = await startWsdrain([...workers(1), '--drain-timeout', '3000'], { env: timings() });
    const [old] = await listening(srv, 1);
    const socket = netConnect(srv.port, '127.0.0.1');
    let received = Buffer.alloc(0);
    let error = '';
    socket.on('data', (d: Buffer) => {
      received = Buffer.concat([received, d]);
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
    });
    const ended = new Promise<void>((r) => socket.once('close', () => r()));
    await once(socket, 'connect');
    srv.kill('SIGHUP');
    await srv.waitFor((l) => l.pid === old && /^drain started/.test(l.msg), 20_000);
    socket.write(
      'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n\r\n`,
    );
    await within(ended, 10_000, 'the server to end the connection');
    const text = received.toString('latin1');
    expect(error).toBe('');
    expect(text.startsWith('HTTP/1.1 101 ')).toBe(true);
    const frame = received.subarray(text.indexOf('\r\n\r\n') + 4);
    // A close frame (0x88) whose payload starts with the code.
    expect(frame[0]).toBe(0x88);
    expect(frame.readUInt16BE(2)).toBe(1012);
    await srv.waitFor((l) => /^rolling restart done: 1 workers replaced/.test(l.msg), 20_000);
    await stop(srv);
  });
});

/** Pids of the first `n` workers, once each logged that it listens. */
async function listening(srv: Running, n: number): Promise<number[]> {
  await until(() => loggedWorkerPids(srv.lines).length >= n, `${n} workers listening`, 15_000);
  const pids = loggedWorkerPids(srv.lines);
  expect(workerPids(srv)).toEqual([...pids].sort((a, b) => a - b));
  return pids;
}
