/**
 * Rolling restarts (SIGHUP) that go wrong: a replacement killed before it listens or while the
 * old workers drain, a replacement that never becomes ready, an old worker stopped (SIGSTOP)
 * in the middle of its drain, an old worker killed while the replacements start, and a SIGHUP
 * while a crashed worker waits for its respawn. In each, a crowd of reconnecting clients and a
 * probe opening fresh connections for the whole roll: no connection refused, every client
 * served at the end, as many workers as before.
 *
 * A worker SIGKILLed loses the connections the primary is handing it at that instant (Node's
 * cluster leaves them open and unanswered in the primary): the crowd and the probe hold their
 * attempts around each kill the test makes, until the primary has logged the death, and count
 * everything else.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  alive,
  killAll,
  type LogLine,
  loggedWorkerPids,
  type Running,
  sleep,
  startWsdrain,
} from './helpers/process.js';
import { type Crowd, crowd } from './helpers/reconnecting.js';
import {
  freePort,
  killIfAlive,
  onlyWorkers,
  type PidHandler,
  type Probe,
  pidHandler,
  probe,
  stalledClients,
  workerPids,
} from './helpers/roll.js';
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

/** What the clients see through a roll: reconnecting clients and fresh connection attempts. */
interface Watch {
  crowd: Crowd;
  probe: Probe;
  n: number;
}

async function watch(port: number, n: number): Promise<Watch> {
  // 1006: the clients of a worker the test kills come back too.
  const c = await crowd(port, n, { reconnectOn: [1001, 1006, 1012, 1013] });
  return { crowd: c, probe: probe(port), n };
}

/** Runs `fn` (a kill) while no connection attempt is under way, then lets them go on. */
async function quietly<T>(w: Watch, fn: () => Promise<T>): Promise<T> {
  await Promise.all([w.crowd.hold(), w.probe.hold()]);
  try {
    return await fn();
  } finally {
    w.crowd.release();
    w.probe.release();
  }
}

const fromPrimary =
  (pid: number, msg: RegExp) =>
  (l: LogLine): boolean =>
    l.role === 'primary' && l.workerPid === pid && msg.test(l.msg);

/** SIGKILLs worker `pid` in a quiet moment; resolves once the primary logged `line` about it. */
async function killWorker(srv: Running, w: Watch, pid: number, line: RegExp): Promise<LogLine> {
  return quietly(w, async () => {
    process.kill(pid, 'SIGKILL');
    return srv.waitFor(fromPrimary(pid, line), 10_000);
  });
}

/**
 * The end of every test: every client open again and answering from one of `pids` (each a
 * worker of the cluster), not one connection refused or reset, the probe having connected
 * all along.
 */
async function servedWithoutRefusal(w: Watch, pids: number[]): Promise<void> {
  await w.crowd.waitOpen(w.n);
  const answers = await w.crowd.ask('pid');
  expect(answers).toHaveLength(w.n);
  for (const pid of answers) expect(pids).toContain(Number(pid));
  const failed = await w.probe.stop();
  expect(w.crowd.refused).toEqual([]);
  expect(failed).toEqual([]);
  expect(w.probe.opened).toBeGreaterThan(20);
  await w.crowd.stop();
}

/** Workers that logged 'worker listening' and are not among `before`. */
const newPids = (srv: Running, before: number[]): number[] =>
  loggedWorkerPids(srv.lines).filter((p) => !before.includes(p));

const line = (srv: Running, msg: RegExp): boolean => srv.lines.some((l) => msg.test(l.msg));

async function stop(srv: Running): Promise<void> {
  srv.kill('SIGTERM');
  expect((await srv.exited).code).toBe(0);
}

/** The handlers of the test under way: healed after it, their held process killed. */
const handlers: PidHandler[] = [];
afterEach(() => {
  for (const h of handlers.splice(0)) {
    killIfAlive(h.held());
    h.heal(true);
  }
});

/**
 * `wsdrain start` with `n` workers of one thread each and a 2 s drain budget, plus `args`,
 * running a {@link pidHandler} (healed after the test).
 */
async function pidCluster(
  n: number,
  args: string[] = [],
  env: NodeJS.ProcessEnv = timings(),
): Promise<{ srv: Running; handler: PidHandler }> {
  const handler = pidHandler();
  handlers.push(handler);
  const srv = await startWsdrain(
    [...workers(n), '--drain-timeout', '2000', ...args, '--handler', handler.path],
    { env },
  );
  return { srv, handler };
}

/** SIGHUP, the first replacement to load the handler held there; resolves with its pid. */
async function rollHoldingOne(srv: Running, handler: PidHandler): Promise<number> {
  handler.holdOne();
  srv.kill('SIGHUP');
  await until(() => handler.held() !== undefined, 'a replacement held at load', 15_000);
  return handler.held()!;
}

/** Each client was moved by the roll once (those on a killed worker came back after 1006). */
function movedOnce(w: Watch): void {
  for (let i = 0; i < w.n; i++) {
    expect(
      w.crowd.closesOf(i).filter((c) => c === 1012),
      `client ${i}`,
    ).toHaveLength(1);
  }
}

/**
 * Two old workers (`before`) on the fixed `port`, 20 stalled clients on them: SIGHUP, then
 * until the first old worker drains and both replacements listen. Resolves with the watch, the
 * old worker waiting for its turn, and the replacements.
 */
async function untilFirstDrain(
  srv: Running,
  port: number,
  before: number[],
): Promise<{ w: Watch; waiting: number; fresh: number[] }> {
  await stalledClients(port, 20);
  const w = await watch(port, 60);
  srv.kill('SIGHUP');
  await srv.waitFor((l) => /old workers stop accepting/.test(l.msg), 20_000);
  const draining = (await srv.waitFor((l) => l.role === 'worker' && /^drain started/.test(l.msg)))
    .pid as number;
  const waiting = before.find((p) => p !== draining)!;
  await until(() => newPids(srv, before).length >= 2, 'two replacements');
  const fresh = newPids(srv, before);
  await w.crowd.waitOpen(w.n);
  return { w, waiting, fresh };
}

/**
 * SIGKILLs every replacement (`fresh`); resolves once old worker `waiting` takes connections
 * again. Between the last death and its listening again the port is closed: the watch holds
 * its attempts over that moment (README, "Signals and exit codes").
 */
async function killReplacements(
  srv: Running,
  w: Watch,
  fresh: number[],
  waiting: number,
): Promise<void> {
  await quietly(w, async () => {
    for (const pid of fresh) process.kill(pid, 'SIGKILL');
    for (const pid of fresh) await srv.waitFor(fromPrimary(pid, /respawning/), 10_000);
    await srv.waitFor((l) => l.pid === waiting && /accepting new connections again/.test(l.msg));
  });
}

/** The end of a roll: exactly the workers `pids`, every client served by them, a clean stop. */
async function endsWith(srv: Running, w: Watch, pids: number[]): Promise<void> {
  await onlyWorkers(srv, pids);
  await servedWithoutRefusal(w, pids);
  await stop(srv);
}

describe('rolling restart faults: no refusal in any roll', { timeout: 60_000 }, () => {
  it('a replacement killed before it listens stops the roll: the old workers serve on, three of them', async () => {
    const { srv, handler } = await pidCluster(3);
    const before = await listening(srv, 3);
    const w = await watch(srv.port, 90);
    // The first replacement to load the handler hangs there: it is killed while starting.
    const first = await rollHoldingOne(srv, handler);
    await killWorker(srv, w, first, /^replacement worker exited while starting/);
    await srv.waitFor((l) => /^rolling restart stopped: a replacement/.test(l.msg), 20_000);
    const done = await srv.waitFor((l) => /^rolling restart done/.test(l.msg), 20_000);
    expect(done.msg).toMatch(/done: 0 workers replaced/);
    // The two replacements that started were drained; the old workers never stopped.
    expect(srv.lines.filter((l) => /^rolled worker/.test(l.msg))).toHaveLength(2);
    expect(line(srv, /old workers stop accepting/)).toBe(false);
    expect(line(srv, /respawning in|^worker \d+ respawned/)).toBe(false);
    await endsWith(srv, w, before);
  });

  it('a replacement killed while the first old worker drains is respawned; the roll finishes with three new workers', async () => {
    const { srv } = await pidCluster(3);
    const before = await listening(srv, 3);
    // The first old worker drained holds these until its deadline.
    await stalledClients(srv.port, 30);
    const w = await watch(srv.port, 90);
    srv.kill('SIGHUP');
    await srv.waitFor((l) => /old workers stop accepting/.test(l.msg), 20_000);
    const draining = await srv.waitFor((l) => l.role === 'worker' && /^drain started/.test(l.msg));
    expect(before).toContain(draining.pid);
    // Every replacement listens; the first old worker's clients came back to them.
    await until(() => newPids(srv, before).length >= 3, 'three replacements');
    const fresh = newPids(srv, before);
    await w.crowd.waitOpen(w.n);
    await killWorker(srv, w, fresh[0]!, /died \(SIGKILL\); respawning/);
    const done = await srv.waitFor((l) => /^rolling restart done/.test(l.msg), 30_000);
    expect(done.msg).toMatch(/done: 3 workers replaced/);
    const respawned = await srv.waitFor((l) => /^worker \d+ respawned/.test(l.msg), 20_000);
    const after = [fresh[1]!, fresh[2]!, respawned.workerPid as number];
    await onlyWorkers(srv, after);
    for (const pid of before) expect(alive(pid)).toBe(false);
    movedOnce(w);
    await endsWith(srv, w, after);
  });

  it('when every replacement dies after the old workers stopped accepting, the roll waits for a respawned one before draining the next old worker', async () => {
    // Every worker gone from the shared socket closes it (Node's cluster): the old worker that
    // takes connections again listens anew, on a fixed port (port 0 would pick another).
    const port = await freePort();
    const { srv } = await pidCluster(
      2,
      ['--port', String(port), '--reconnect-window', '300'],
      // Respawns 3 to 6 s after the crash: the roll reaches the second old worker first.
      timings({ backoffBaseMs: 6000, backoffMaxMs: 6000 }),
    );
    const before = await listening(srv, 2);
    const { w, waiting, fresh } = await untilFirstDrain(srv, port, before);
    // Both replacements killed: the old worker not drained yet takes connections again.
    await killReplacements(srv, w, fresh, waiting);
    await srv.waitFor((l) => /no worker of the new generation accepts/.test(l.msg), 20_000);
    const done = await srv.waitFor((l) => /^rolling restart done/.test(l.msg), 30_000);
    expect(done.msg).toMatch(/done: 2 workers replaced/);
    const respawns = (): number[] => newPids(srv, [...before, ...fresh]);
    await until(() => respawns().length === 2, 'both respawns to listen', 20_000);
    await endsWith(srv, w, respawns());
  });

  it('when no respawned replacement listens within the start timeout, the roll stops: the old worker serves on, and no more than --workers workers', async () => {
    const port = await freePort();
    const startTimeout = 6000;
    const { srv, handler } = await pidCluster(
      2,
      ['--port', String(port), '--reconnect-window', '300'],
      timings({ startTimeout }),
    );
    const before = await listening(srv, 2);
    const { w, waiting, fresh } = await untilFirstDrain(srv, port, before);
    // Both replacements killed; their respawns hang at load until the roll gave up.
    handler.holdFrom();
    await killReplacements(srv, w, fresh, waiting);
    await srv.waitFor(
      (l) => /^rolling restart stopped: no worker of the new generation/.test(l.msg),
      startTimeout + 15_000,
    );
    const done = await srv.waitFor((l) => /^rolling restart done/.test(l.msg));
    expect(done.msg).toMatch(/done: 1 workers replaced/);
    expect(alive(waiting)).toBe(true);
    handler.release();
    // Two respawns were on their way for one place: one is called off (stopped while
    // starting, or not forked), the other listens.
    const respawned = await srv.waitFor((l) => /^worker \d+ respawned/.test(l.msg), 20_000);
    const after = [waiting, respawned.workerPid as number];
    await onlyWorkers(srv, after);
    expect(line(srv, /stopped while starting|^not respawned/)).toBe(true);
    await endsWith(srv, w, after);
  });

  for (const n of [1, 2]) {
    it(`a replacement that never listens is killed at the start timeout and stops the roll (${n} worker${n > 1 ? 's' : ''}, no extra one)`, async () => {
      const startTimeout = 5000;
      const { srv, handler } = await pidCluster(n, [], timings({ startTimeout }));
      const before = await listening(srv, n);
      const w = await watch(srv.port, 30 * n);
      handler.holdOne();
      const t0 = Date.now();
      srv.kill('SIGHUP');
      await until(() => handler.held() !== undefined, 'a replacement held at load', 15_000);
      const hung = handler.held()!;
      await srv.waitFor(
        fromPrimary(hung, new RegExp(`did not listen within ${startTimeout} ms`)),
        startTimeout + 10_000,
      );
      expect(Date.now() - t0).toBeGreaterThanOrEqual(startTimeout - 50);
      await srv.waitFor((l) => /^rolling restart stopped: a replacement/.test(l.msg), 10_000);
      await srv.waitFor(fromPrimary(hung, /^replacement worker exited while starting/), 10_000);
      await srv.waitFor((l) => /^rolling restart done: 0 workers replaced/.test(l.msg), 20_000);
      expect(alive(hung)).toBe(false);
      expect(line(srv, /respawning in|^worker \d+ respawned/)).toBe(false);
      await endsWith(srv, w, before);
    });
  }

  it('an old worker stopped (SIGSTOP) mid-drain is killed at its budget and the roll goes on to the next one', async () => {
    const budget = 2000; // pidCluster's --drain-timeout
    const { srv } = await pidCluster(2);
    let stopped: number | undefined;
    try {
      const before = await listening(srv, 2);
      await stalledClients(srv.port, 20);
      const w = await watch(srv.port, 60);
      srv.kill('SIGHUP');
      const drain = await srv.waitFor((l) => l.role === 'worker' && /^drain started/.test(l.msg));
      stopped = drain.pid as number;
      process.kill(stopped, 'SIGSTOP');
      const t0 = Date.now();
      await srv.waitFor(fromPrimary(stopped, /missed its deadline; killing it/), budget + 10_000);
      await srv.waitFor(fromPrimary(stopped, /^rolled worker .*killed at its deadline/), 10_000);
      expect(Date.now() - t0).toBeLessThan(budget + 5000);
      const done = await srv.waitFor((l) => /^rolling restart done/.test(l.msg), 20_000);
      expect(done.msg).toMatch(/done: 2 workers replaced/);
      const after = done.pids as number[];
      expect(after).toHaveLength(2);
      for (const pid of after) expect(before).not.toContain(pid);
      expect(alive(stopped)).toBe(false);
      await endsWith(srv, w, after);
    } finally {
      killIfAlive(stopped);
    }
  });

  it('drains no old worker before every old one has answered the connections on their way to it', async () => {
    // Node's cluster keeps each connection it hands a worker until that worker answers: one
    // on its way to an old worker that then hangs in its drain (SIGSTOP) and is killed stays
    // open and unanswered for good (the drain began as the roll stopped the old workers
    // accepting: 1 busy run in 5 of the SIGSTOP test above). Here one old worker is frozen
    // from before the SIGHUP, so that connections wait in its pipe: the roll must not start
    // the other's drain, first in line, until the frozen one has answered them.
    const { srv } = await pidCluster(2);
    let frozen: number | undefined;
    try {
      const before = await listening(srv, 2);
      const w = await watch(srv.port, 60);
      // The later of the two in the roll's order (forked second).
      frozen = Math.max(...before);
      process.kill(frozen, 'SIGSTOP');
      srv.kill('SIGHUP');
      await srv.waitFor((l) => /old workers stop accepting/.test(l.msg), 20_000);
      await sleep(1500);
      expect(srv.lines.filter((l) => /^drain started/.test(l.msg)).map((l) => l.pid)).toEqual([]);
      process.kill(frozen, 'SIGCONT');
      const done = await srv.waitFor((l) => /^rolling restart done/.test(l.msg), 30_000);
      expect(done.msg).toMatch(/done: 2 workers replaced/);
      await endsWith(srv, w, done.pids as number[]);
    } finally {
      if (frozen !== undefined && alive(frozen)) process.kill(frozen, 'SIGCONT');
    }
  });

  it('an old worker killed while the replacements start is not respawned: three workers in the end', async () => {
    const { srv, handler } = await pidCluster(3);
    const before = await listening(srv, 3);
    const w = await watch(srv.port, 90);
    await rollHoldingOne(srv, handler);
    await killWorker(srv, w, before[0]!, /died during the roll \(SIGKILL\); not respawned/);
    handler.release();
    const done = await srv.waitFor((l) => /^rolling restart done/.test(l.msg), 30_000);
    expect(done.msg).toMatch(/done: 2 workers replaced/);
    const after = done.pids as number[];
    expect(after).toHaveLength(3);
    for (const pid of after) expect(before).not.toContain(pid);
    expect(line(srv, /respawning in|^worker \d+ respawned/)).toBe(false);
    await endsWith(srv, w, after);
  });

  it('an old worker killed while the replacements start, then a replacement failing, leaves as many workers as before', async () => {
    const { srv, handler } = await pidCluster(3);
    const before = await listening(srv, 3);
    const w = await watch(srv.port, 90);
    const held = await rollHoldingOne(srv, handler);
    await killWorker(srv, w, before[0]!, /died during the roll \(SIGKILL\); not respawned/);
    await killWorker(srv, w, held, /^replacement worker exited while starting/);
    await srv.waitFor((l) => /^rolling restart stopped: a replacement/.test(l.msg), 20_000);
    const done = await srv.waitFor((l) => /^rolling restart done/.test(l.msg), 20_000);
    // One replacement that started stays for the old worker that died; the other is drained.
    expect(srv.lines.filter((l) => /^rolled worker/.test(l.msg))).toHaveLength(1);
    const after = done.pids as number[];
    expect(after).toHaveLength(3);
    expect(after.filter((p) => before.includes(p))).toHaveLength(2);
    expect(line(srv, /respawning in|^worker \d+ respawned/)).toBe(false);
    await endsWith(srv, w, after);
  });

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

  it('SIGHUP while a crashed worker waits for its respawn: three workers of the new generation, each client moved once', async () => {
    // The respawn comes 1.5 to 3 s after the crash: the SIGHUP lands in that wait.
    const { srv } = await pidCluster(3, [], timings({ backoffBaseMs: 3000, backoffMaxMs: 3000 }));
    const before = await listening(srv, 3);
    const w = await watch(srv.port, 90);
    await killWorker(srv, w, before[0]!, /respawning in/);
    await w.crowd.waitOpen(w.n);
    srv.kill('SIGHUP');
    const done = await srv.waitFor((l) => /^rolling restart done/.test(l.msg), 30_000);
    expect(done.msg).toMatch(/done: 2 workers replaced/);
    const respawned = await srv.waitFor((l) => /^worker \d+ respawned/.test(l.msg), 20_000);
    // The primary's line and the worker's own 'worker listening' come on two pipes: either
    // may be read first.
    await until(() => newPids(srv, before).length >= 3, 'three workers of the new generation');
    const after = newPids(srv, before);
    expect(after).toHaveLength(3);
    expect(after).toContain(respawned.workerPid);
    await onlyWorkers(srv, after);
    movedOnce(w);
    await endsWith(srv, w, after);
  });

  it('SIGHUP while a respawned worker is still starting: it is waited for and rolled with the others, each client moved once', async () => {
    const { srv, handler } = await pidCluster(3, ['--reconnect-window', '1500']);
    const before = await listening(srv, 3);
    const w = await watch(srv.port, 90);
    // The respawn of the killed worker hangs at load until the SIGHUP has come.
    handler.holdOne();
    await killWorker(srv, w, before[0]!, /respawning in/);
    await until(() => handler.held() !== undefined, 'the respawn held at load', 15_000);
    const respawn = handler.held()!;
    await w.crowd.waitOpen(w.n);
    srv.kill('SIGHUP');
    await srv.waitFor((l) => /still starting/.test(l.msg) || /^rolled worker/.test(l.msg), 20_000);
    handler.release();
    const done = await srv.waitFor((l) => /^rolling restart done/.test(l.msg), 30_000);
    expect(done.msg).toMatch(/done: 3 workers replaced/);
    // One pass: the respawn stopped accepting with the old workers, none of them later.
    const stops = srv.lines.filter((l) => /old workers stop accepting/.test(l.msg));
    const olds = [before[1]!, before[2]!, respawn].sort((a, b) => a - b);
    expect(stops.map((l) => [...(l.pids as number[])].sort((a, b) => a - b))).toEqual([olds]);
    const after = done.pids as number[];
    expect(after).toHaveLength(3);
    for (const pid of [...before, respawn]) expect(after).not.toContain(pid);
    await onlyWorkers(srv, after);
    movedOnce(w);
    await endsWith(srv, w, after);
  });
});

/** Pids of the first `n` workers, once each logged that it listens. */
async function listening(srv: Running, n: number): Promise<number[]> {
  await until(() => loggedWorkerPids(srv.lines).length >= n, `${n} workers listening`, 15_000);
  const pids = loggedWorkerPids(srv.lines);
  expect(workerPids(srv)).toEqual([...pids].sort((a, b) => a - b));
  return pids;
}
