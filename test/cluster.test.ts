/**
 * The cluster primary with real forked workers: drains, exit codes, rolling restarts,
 * crashes, primary death, metrics. Signals go to child processes only.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { exitMargin } from 'wsdrain/internal';
import { codes, connect, connectMany } from './helpers/clients.js';
import { keptAlive } from './helpers/keepalive.js';
import {
  alive,
  gone,
  killAll,
  type LogLine,
  listeningPids,
  loggedWorkerPids,
  sleep,
  startWsdrain,
} from './helpers/process.js';
import { type Crowd, crowd } from './helpers/reconnecting.js';
import {
  landingPids,
  pidHandler,
  probe,
  socketsPerWorker,
  stalledClients,
} from './helpers/roll.js';
import { TIMER_EARLY_MS, until, within } from './helpers/wait.js';

afterEach(killAll);

const two = ['--workers', '2', '--threads', '1'];
const fastTimings = {
  WSDRAIN_TIMINGS: JSON.stringify({ backoffBaseMs: 20, backoffMaxMs: 200, startTimeout: 15000 }),
};

const three = ['--workers', '3', '--threads', '1'];

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`no ${name} in:\n${text}`);
  return Number(line.split(' ')[1]);
}

describe('cluster drain', () => {
  it('answers /readyz 503 until every worker listens, then 200', async () => {
    // A handler that keeps the second worker from listening for a while.
    const dir = mkdtempSync(join(tmpdir(), 'wsdrain-slow-'));
    const file = join(dir, 'slow.mjs');
    // The first worker to load it claims a marker file; the other one waits 1.5 s.
    writeFileSync(
      file,
      "import { openSync } from 'node:fs';\n" +
        `try { openSync(${JSON.stringify(join(dir, 'claimed'))}, 'wx'); }\n` +
        'catch { await new Promise((r) => setTimeout(r, 1500)); }\n' +
        'export default ({ data }) => data;\n',
    );
    try {
      const srv = await startWsdrain([...two, '--handler', file], { waitReady: false });
      const first = await srv.waitFor((l) => l.msg === 'worker listening');
      const readyz = async (): Promise<number> =>
        (await fetch(`http://127.0.0.1:${first.port}/readyz`)).status;
      expect(await readyz()).toBe(503);
      await srv.waitFor((l) => /^wsdrain ready/.test(l.msg), 10_000);
      let status = await readyz();
      for (let i = 0; i < 50 && status !== 200; i++) {
        await sleep(20);
        status = await readyz();
      }
      expect(status).toBe(200);
      srv.kill('SIGTERM');
      expect((await srv.exited).code).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('drains every worker with 1001 on SIGTERM, exits 0 and writes the aggregate report', async () => {
    const report = join(tmpdir(), `wsdrain-cluster-${process.pid}-${Date.now()}.json`);
    const srv = await startWsdrain([...two, '--drain-timeout', '3000', '--report', report]);
    const clients = await connectMany(srv.port, 400);
    const t0 = Date.now();
    srv.kill('SIGTERM');
    const exit = await srv.exited;
    await Promise.all(clients.map((c) => c.closed));
    expect(exit.code).toBe(0);
    expect(exit.at - t0).toBeLessThan(3000);
    expect(codes(clients)).toEqual({ 1001: 400 });
    const r = JSON.parse(readFileSync(report, 'utf8')) as {
      sockets: number;
      clean: number;
      workers: Array<{ pid: number; sockets: number }>;
    };
    expect(r.sockets).toBe(400);
    expect(r.clean).toBe(400);
    expect(r.workers).toHaveLength(2);
    expect(r.workers.reduce((n, w) => n + w.sockets, 0)).toBe(400);
    const summary = await srv.waitFor((l) => l.role === 'primary' && l.msg.startsWith('drained'));
    expect(summary.msg).toContain('400 clean');
  });

  it('cuts stalled clients at the budget and still exits 0', async () => {
    const budget = 1500;
    const srv = await startWsdrain([...two, '--drain-timeout', String(budget)]);
    const good = await connectMany(srv.port, 100);
    const stalled = await connectMany(srv.port, 10);
    for (const c of stalled) c.stall();
    const t0 = Date.now();
    srv.kill('SIGTERM');
    const exit = await srv.exited;
    expect(exit.code).toBe(0);
    // The stalled clients hold the drain until its deadline, budget - exit margin after the
    // signal: the exit comes no earlier than that, and within the budget.
    expect(exit.at - t0).toBeGreaterThanOrEqual(budget - exitMargin(budget) - TIMER_EARLY_MS);
    expect(exit.at - t0).toBeLessThan(budget + 300);
    await Promise.all(good.map((c) => c.closed));
    expect(codes(good)).toEqual({ 1001: 100 });
    const summary = await srv.waitFor((l) => l.role === 'primary' && l.msg.startsWith('drained'));
    expect(summary.report).toMatchObject({ sockets: 110, clean: 100, terminated: 10 });
  });

  it('answers /readyz 503 and /healthz 200 during --drain-delay, and closes only after it', async () => {
    const delay = 1000;
    const budget = 4000;
    const srv = await startWsdrain([
      ...two,
      '--drain-delay',
      String(delay),
      '--drain-timeout',
      String(budget),
    ]);
    // A probe's status, or what went wrong (a worker that is gone answers nothing).
    const status = (path: string): Promise<number | string> =>
      fetch(`http://127.0.0.1:${srv.port}${path}`).then(
        (r) => r.status,
        (e: Error) => String((e.cause as Error | undefined)?.message ?? e.message),
      );
    await until(async () => (await status('/readyz')) === 200, '/readyz 200 before the signal');
    const clients = await connectMany(srv.port, 100);
    const t0 = Date.now();
    srv.kill('SIGTERM');
    const started = (): number =>
      srv.lines.filter((l) => l.role === 'worker' && /^drain started/.test(l.msg)).length;
    await until(
      () => started() === 2,
      () => `both workers to start draining, ${started()} did`,
    );
    // Probes and a new client during the delay: not ready, still alive, sent elsewhere.
    const during = Promise.all([
      status('/readyz'),
      status('/healthz'),
      connect(srv.port).then(
        () => 'accepted',
        (e: Error) => e.message,
      ),
    ]).then((answers) => ({ answers, at: Date.now() }));
    // Close frames come only after the delay, and well before the deadline.
    const closes = await Promise.all(clients.map((c) => c.closed));
    for (const c of closes) {
      expect(c.code).toBe(1001);
      expect(c.at - t0).toBeGreaterThanOrEqual(delay - TIMER_EARLY_MS);
      expect(c.at - t0).toBeLessThan(budget - exitMargin(budget));
    }
    const { answers, at } = await during;
    expect(answers).toEqual([503, 200, 'unexpected response 503']);
    expect(at).toBeLessThan(Math.min(...closes.map((c) => c.at)));
    expect((await srv.exited).code).toBe(0);
  });

  it('terminates everything and exits non-zero within 1 s on a second signal', async () => {
    const srv = await startWsdrain([...two, '--drain-timeout', '30000']);
    const pids = await listeningPids(srv, 2);
    const clients = await connectMany(srv.port, 20);
    for (const c of clients) c.stall();
    srv.kill('SIGTERM');
    await srv.waitFor((l) => l.role === 'primary' && /draining 2 workers/.test(l.msg));
    await sleep(100);
    const t0 = Date.now();
    srv.kill('SIGTERM');
    const exit = await srv.exited;
    // The primary exits by itself with 1 (not killed by the signal), within a second...
    expect(exit).toMatchObject({ code: 1, signal: null });
    expect(exit.at - t0).toBeLessThan(1000);
    // ...having terminated its workers: they are gone (a short poll for /proc to catch up).
    await gone(pids, 100);
  });

  it('drains a worker that receives SIGTERM itself, and replaces it', async () => {
    const srv = await startWsdrain([...two, '--drain-timeout', '3000'], { env: fastTimings });
    const [pid] = await listeningPids(srv, 2);
    const clients = await connectMany(srv.port, 100);
    process.kill(pid!, 'SIGTERM');
    await srv.waitFor((l) => l.role === 'primary' && /respawned/.test(l.msg));
    const closed = clients.filter((c) => c.code !== undefined);
    expect(closed.length).toBeGreaterThan(0);
    for (const c of closed) expect(c.code).toBe(1001);
    srv.kill('SIGTERM');
    expect((await srv.exited).code).toBe(0);
  });

  it('a worker that leaves answers every connection the primary handed it first: none left hanging in the primary', async () => {
    // Node's cluster keeps a connection it hands to a worker until that worker answers; one
    // handed to a worker that has exited stays open and unanswered in the primary for good.
    // Here the primary is slow (stopped) while connections wait to be accepted and a worker
    // drains on its own signal, closing its listener: once the primary runs again, it hands
    // that worker connections before it reads that the listener closed.
    const srv = await startWsdrain([...two, '--drain-timeout', '5000'], { env: fastTimings });
    const [leaving, staying] = await listeningPids(srv, 2);
    const attempts = probe(srv.port, 8);
    await until(() => attempts.opened >= 50, 'connections opening');
    const primary = srv.child.pid!;
    process.kill(primary, 'SIGSTOP');
    try {
      // The hand-overs already sent are served by a worker not draining yet.
      await sleep(50);
      process.kill(leaving!, 'SIGTERM');
      // Its drain may find a probe socket or two not yet reaped (a busy machine): any count.
      await srv.waitFor((l) => l.pid === leaving && /^drained \d+ sockets/.test(l.msg), 10_000);
      await sleep(200);
    } finally {
      process.kill(primary, 'SIGCONT');
    }
    await srv.waitFor((l) => l.role === 'primary' && /respawned/.test(l.msg));
    const opened = attempts.opened;
    await until(() => attempts.opened >= opened + 50, 'connections opening again');
    expect(await attempts.stop()).toEqual([]);
    expect(alive(staying!)).toBe(true);
    srv.kill('SIGTERM');
    expect((await srv.exited).code).toBe(0);
  }, 60_000);
});

describe('rolling restart (SIGHUP)', () => {
  it('rolls every worker: clients see only 1012, reconnect without a refusal, new pids', async () => {
    const srv = await startWsdrain([...two, '--drain-timeout', '3000']);
    const before = await listeningPids(srv, 2);
    const c = await crowd(srv.port, 200);
    srv.kill('SIGHUP');
    const done = await srv.waitFor((l) => /rolling restart done/.test(l.msg), 20_000);
    await c.waitOpen(200);
    expect(c.refused).toEqual([]);
    expect(Object.keys(c.codes)).toEqual(['1012']);
    expect(c.codes[1012]).toBeGreaterThanOrEqual(200);
    const after = done.pids as number[];
    expect(after).toHaveLength(2);
    for (const pid of after) expect(before).not.toContain(pid);
    for (const pid of before) expect(alive(pid)).toBe(false);
    await c.stop();
    srv.kill('SIGTERM');
    expect((await srv.exited).code).toBe(0);
  });

  it('moves every client once: the old workers stop accepting before the first drain', async () => {
    const n = 300;
    const srv = await startWsdrain([...three, '--drain-timeout', '3000']);
    const before = await listeningPids(srv, 3);
    // These clients reconnect the moment they are closed, hints or not: without the stop,
    // a third of the first drain's clients would land on each old worker still listening.
    const c = await crowd(srv.port, n);
    srv.kill('SIGHUP');
    await srv.waitFor((l) => /rolling restart done/.test(l.msg), 20_000);
    await c.waitOpen(n);
    const moves = Array.from({ length: n }, (_, i) => c.closesOf(i).length);
    expect(moves.filter((m) => m !== 1)).toEqual([]);
    expect(c.codes).toEqual({ 1012: n });
    expect(c.refused).toEqual([]);
    const stops = srv.lines.filter((l) => /old workers stop accepting/.test(l.msg));
    expect(stops.map((l) => [...(l.pids as number[])].sort())).toEqual([[...before].sort()]);
    await c.stop();
    srv.kill('SIGTERM');
    expect((await srv.exited).code).toBe(0);
  });

  it('serves upgrades on a stopped worker normally until its own drain', async () => {
    // Keep-alive HTTP connections opened before the roll stay with their worker: an upgrade
    // sent on one after that worker stopped accepting (and before its drain) is served.
    const handler = pidHandler();
    const srv = await startWsdrain([...two, '--drain-timeout', '2000', '--handler', handler.path]);
    try {
      const before = await listeningPids(srv, 2);
      // The first old worker drains until its deadline: the second one waits, not draining.
      await stalledClients(srv.port, 20);
      const kept = await Promise.all(Array.from({ length: 4 }, () => keptAlive(srv.port)));
      srv.kill('SIGHUP');
      await srv.waitFor((l) => /old workers stop accepting/.test(l.msg), 20_000);
      const drainedFirst = (
        await srv.waitFor((l) => l.role === 'worker' && /^drain started/.test(l.msg))
      ).pid as number;
      const waiting = before.find((p) => p !== drainedFirst);
      const served = [];
      for (const k of kept) {
        const { ws, localPort } = await k.upgrade();
        expect(localPort).toBe(k.localPort);
        const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
        const reply = new Promise<string>((r) => ws.once('message', (d) => r(String(d))));
        ws.send('pid');
        const first = await within(
          Promise.race([reply, closed.then((code) => `closed ${code}`)]),
          5000,
          'a reply or a close on an upgrade sent on a kept-alive connection',
        );
        // On the worker already draining: a late upgrade, closed with 1012 at once.
        if (first === 'closed 1012') continue;
        expect(first).toBe(String(waiting));
        served.push(closed);
      }
      expect(served.length).toBeGreaterThan(0);
      expect(srv.lines.some((l) => /^rolled worker/.test(l.msg))).toBe(false);
      // ...and closed by that worker's own drain, like its other sockets.
      const codesServed = await within(
        Promise.all(served),
        10_000,
        'the drain of the waiting worker to close the upgrades it served',
      );
      for (const code of codesServed) expect(code).toBe(1012);
      await srv.waitFor((l) => /rolling restart done/.test(l.msg), 20_000);
      srv.kill('SIGTERM');
      expect((await srv.exited).code).toBe(0);
    } finally {
      handler.heal(true);
    }
  });

  it('stops the roll when a replacement fails to start: the ones that started go, the old workers serve on', async () => {
    const handler = pidHandler();
    const srv = await startWsdrain(
      [...three, '--drain-timeout', '2000', '--handler', handler.path],
      { env: fastTimings },
    );
    try {
      const before = await listeningPids(srv, 3);
      const c = await crowd(srv.port, 60);
      // One of the three replacements fails to load its handler; the other two start.
      handler.failOne();
      srv.kill('SIGHUP');
      await srv.waitFor((l) => /rolling restart stopped: a replacement/.test(l.msg), 20_000);
      await srv.waitFor((l) => /rolling restart done: 0 workers replaced/.test(l.msg), 20_000);
      handler.heal();
      // The old workers never stopped serving; the two replacements that started were drained.
      expect(srv.lines.some((l) => /old workers stop accepting/.test(l.msg))).toBe(false);
      expect(srv.lines.filter((l) => /^rolled worker/.test(l.msg))).toHaveLength(2);
      // Every old worker serves: new connections land on them (a worker the balance holds hands
      // its new ones to the others, so ask the crowd's clients too).
      const serving = new Set([
        ...(await landingPids(srv.port, 60)),
        ...(await c.ask('pid')).map(Number),
      ]);
      expect([...serving].sort()).toEqual([...before].sort());
      expect(c.refused).toEqual([]);
      for (const code of Object.keys(c.codes)) expect(code).toBe('1012');
      expect((await fetch(`http://127.0.0.1:${srv.port}/readyz`)).status).toBe(200);
      // No respawn of the failed replacement: three workers, not four.
      await sleep(300);
      expect(srv.lines.some((l) => /respawning in|^worker \d+ respawned/.test(l.msg))).toBe(false);
      await c.stop();
      srv.kill('SIGTERM');
      expect((await srv.exited).code).toBe(0);
    } finally {
      handler.heal(true);
    }
  });

  it('does not respawn an old worker that dies during a roll: its replacement serves, three workers in the end', async () => {
    const srv = await startWsdrain([...three, '--drain-timeout', '2000'], { env: fastTimings });
    const before = await listeningPids(srv, 3);
    await stalledClients(srv.port, 30);
    const c = await crowd(srv.port, 60, { reconnectOn: [1001, 1006, 1012, 1013] });
    srv.kill('SIGHUP');
    await srv.waitFor((l) => /old workers stop accepting/.test(l.msg), 20_000);
    // The first old worker drains until its deadline; kill another old one meanwhile.
    const draining = (await srv.waitFor((l) => l.role === 'worker' && /^drain started/.test(l.msg)))
      .pid as number;
    const victim = before.find((p) => p !== draining)!;
    // Stopped, as the name says: the primary's line only says the order was sent. A worker
    // killed while it still takes connections loses the ones the cluster just handed it.
    await srv.waitFor(
      (l) => l.pid === victim && l.msg === 'stopped accepting new connections',
      20_000,
    );
    process.kill(victim, 'SIGKILL');
    await srv.waitFor((l) => /died during the roll \(SIGKILL\); not respawned/.test(l.msg));
    const done = await srv.waitFor((l) => /rolling restart done/.test(l.msg), 20_000);
    const after = done.pids as number[];
    expect(after).toHaveLength(3);
    for (const pid of after) expect(before).not.toContain(pid);
    expect(srv.lines.some((l) => /respawning in|^worker \d+ respawned/.test(l.msg))).toBe(false);
    await c.waitOpen(60);
    expect(c.refused).toEqual([]);
    await c.stop();
    srv.kill('SIGTERM');
    expect((await srv.exited).code).toBe(0);
  });

  it('leaves every worker its share after each of two rolls (busiest at most 1.2 times the mean), each client moved once per roll', async () => {
    const handler = pidHandler();
    const n = 600;
    // Node's primary hands each connection to the next worker that took the last one: in a
    // burst on a busy machine, a worker the scheduler left out for a moment gets fewer. The
    // clients honour the hints, which spread each wave over 2 s (100 a second), as a deploy
    // with wsdrain/client would, so what is measured is the roll's placement, not the
    // scheduler's.
    const srv = await startWsdrain([
      ...three,
      '--drain-timeout',
      '3000',
      '--reconnect-window',
      '2000',
      '--handler',
      handler.path,
    ]);
    try {
      await listeningPids(srv, 3);
      const c = await crowd(srv.port, n, { honourHints: true });
      for (const round of [1, 2]) {
        srv.kill('SIGHUP');
        await until(
          () => srv.lines.filter((l) => /rolling restart done/.test(l.msg)).length === round,
          `roll ${round} to finish`,
          30_000,
        );
        await c.waitOpen(n);
        const counts = [...(await socketsPerWorker([c])).values()];
        expect(counts, `roll ${round}`).toHaveLength(3);
        const mean = n / 3;
        expect(Math.max(...counts), `roll ${round}: ${counts.join('/')}`).toBeLessThanOrEqual(
          1.2 * mean,
        );
        for (let i = 0; i < n; i++)
          expect(c.closesOf(i), `client ${i}`).toEqual(Array(round).fill(1012));
      }
      expect(c.refused).toEqual([]);
      await c.stop();
      srv.kill('SIGTERM');
      expect((await srv.exited).code).toBe(0);
    } finally {
      handler.heal(true);
    }
  }, 60_000);

  it('waits --reconnect-window between rolled workers; SIGTERM in that pause drains at once', async () => {
    const srv = await startWsdrain([
      ...two,
      '--drain-timeout',
      '3000',
      '--reconnect-window',
      '700',
    ]);
    const c = await crowd(srv.port, 60);
    srv.kill('SIGHUP');
    await srv.waitFor((l) => /rolling restart done/.test(l.msg), 20_000);
    const rolled = srv.lines.filter((l) => /^rolled worker/.test(l.msg));
    const drains = srv.lines.filter((l) => l.role === 'worker' && /^drain started/.test(l.msg));
    expect(rolled).toHaveLength(2);
    expect(drains).toHaveLength(2);
    // The second old worker is drained only after the pause that follows the first drain.
    const at = (l: LogLine): number => Date.parse(String(l.time));
    expect(at(drains[1]!) - at(rolled[0]!)).toBeGreaterThanOrEqual(700 - TIMER_EARLY_MS);
    expect(c.refused).toEqual([]);
    await c.stop();
    srv.kill('SIGTERM');
    expect((await srv.exited).code).toBe(0);

    const slow = await startWsdrain([
      ...two,
      '--drain-timeout',
      '3000',
      '--reconnect-window',
      '20000',
    ]);
    const c2 = await crowd(slow.port, 60);
    slow.kill('SIGHUP');
    await slow.waitFor((l) => /^rolled worker/.test(l.msg), 20_000);
    const t = Date.now();
    slow.kill('SIGTERM');
    const exit = await slow.exited;
    await c2.stop();
    expect(exit.code).toBe(0);
    expect(Date.now() - t).toBeLessThan(10_000);
    // The worker not rolled yet was drained by the SIGTERM: its clients got 1001.
    expect(c2.codes[1001]).toBeGreaterThan(0);
  });

  it('coalesces a second SIGHUP and turns SIGTERM during a roll into a full drain', async () => {
    const srv = await startWsdrain([...two, '--drain-timeout', '3000']);
    const c = await crowd(srv.port, 100);
    srv.kill('SIGHUP');
    srv.kill('SIGHUP');
    await srv.waitFor((l) => /^rolled worker/.test(l.msg), 20_000);
    const refusedDuringRoll = [...c.refused];
    srv.kill('SIGTERM');
    const exit = await srv.exited;
    await c.stop();
    expect(exit.code).toBe(0);
    expect(refusedDuringRoll).toEqual([]);
    // The first worker's clients were moved with 1012; the SIGTERM closed everyone still
    // connected (on the replacement and on the worker not rolled yet) with 1001.
    expect(c.codes[1012]).toBeGreaterThan(0);
    expect(c.codes[1001]).toBeGreaterThan(0);
    expect(Object.keys(c.codes).sort()).toEqual(['1001', '1012']);
    expect(srv.lines.filter((l) => l.msg === 'SIGHUP: rolling restart')).toHaveLength(1);
  });
});

describe('failures', () => {
  it('respawns a SIGKILLed worker with backoff and counts the restart', async () => {
    const srv = await startWsdrain([...two, '--metrics-port', '0'], { env: fastTimings });
    const metricsLine = await srv.waitFor((l) => typeof l.metricsPort === 'number');
    const mport = metricsLine.metricsPort as number;
    const [pid] = await listeningPids(srv, 2);
    process.kill(pid!, 'SIGKILL');
    await srv.waitFor((l) => /respawning in/.test(l.msg));
    await srv.waitFor((l) => /respawned/.test(l.msg));
    expect(await metric(mport, 'wsdrain_worker_restarts_total{reason="crash"}')).toBe(1);
    const clients = await connectMany(srv.port, 50);
    expect(await metric(mport, 'wsdrain_connections_open')).toBe(50);
    srv.kill('SIGTERM');
    expect((await srv.exited).code).toBe(0);
    // The primary's exit can be read before the clients' closes on a busy machine.
    await Promise.all(clients.map((c) => c.closed));
    expect(codes(clients)).toEqual({ 1001: 50 });
  });

  it('gives new connections to a respawned worker until it holds its share: the others hand theirs back, unread', async () => {
    const handler = pidHandler();
    // The respawn comes 1 to 2 s after the crash: the crashed worker's clients are back by then.
    const srv = await startWsdrain([...three, '--handler', handler.path, '--metrics-port', '0'], {
      env: {
        WSDRAIN_TIMINGS: JSON.stringify({ backoffBaseMs: 2000, backoffMaxMs: 2000 }),
      },
    });
    const mport = (await srv.waitFor((l) => typeof l.metricsPort === 'number'))
      .metricsPort as number;
    const crowds: Crowd[] = [];
    try {
      const [pid] = await listeningPids(srv, 3);
      const first = await crowd(srv.port, 300, { reconnectOn: [1006] });
      crowds.push(first);
      // Its ~100 clients reconnect at once, to the other two: the respawn listens later. (No
      // attempt while it dies: Node's primary loses the connection it is handing it then.)
      await first.hold();
      process.kill(pid!, 'SIGKILL');
      await srv.waitFor((l) => /respawning in/.test(l.msg));
      first.release();
      const respawned = await srv.waitFor((l) => /respawned/.test(l.msg), 20_000);
      await first.waitOpen(300);
      const before = await socketsPerWorker(crowds);
      const fresh = before.get(respawned.workerPid as number) ?? 0;
      // Without the balance, the round robin would give each worker a third of what comes next:
      // the two others would end at 240 or more, 1.2 times the mean (1.30 and 1.34 measured).
      expect(fresh, `the respawn holds ${fresh} of 300`).toBeLessThan(20);
      // New clients, 30 every 500 ms: 40 a second to hand back, within what the balance moves
      // on a busy machine (4 handles on their way per channel, each a round trip; at 150 a
      // second the respawn got 154 of 300 with a CPU hog).
      for (let i = 0; i < 10; i++) {
        crowds.push(await crowd(srv.port, 30));
        await sleep(500);
      }
      const after = await socketsPerWorker(crowds);
      const counts = [...after.values()];
      expect(counts).toHaveLength(3);
      const mean = 600 / 3;
      expect(Math.max(...counts), `sockets per worker: ${counts.join('/')}`).toBeLessThanOrEqual(
        1.15 * mean,
      );
      // Handed over by the balance, as the metrics count.
      const balanced = (d: string): Promise<number> =>
        metric(mport, `wsdrain_connections_balanced_total{direction="${d}"}`);
      expect(await balanced('handed_back')).toBeGreaterThan(0);
      expect(await balanced('taken')).toBeGreaterThan(0);
      // Nobody was moved for it: the first clients closed once at most (the crash), the new never.
      for (let i = 0; i < 300; i++) expect(first.closesOf(i).length).toBeLessThanOrEqual(1);
      for (const c of crowds.slice(1)) expect(c.codes).toEqual({});
      for (const c of crowds) expect(c.refused, JSON.stringify(c.refused)).toEqual([]);
    } finally {
      for (const c of crowds) await c.stop();
      handler.heal(true);
    }
  }, 60_000);

  it('gives up on a crash loop and exits non-zero', async () => {
    const srv = await startWsdrain([...two], {
      env: {
        WSDRAIN_TIMINGS: JSON.stringify({ backoffBaseMs: 5, backoffMaxMs: 20, crashLimit: 3 }),
      },
    });
    // Keep killing whatever worker is up until the primary gives up.
    const killer = setInterval(() => {
      for (const pid of loggedWorkerPids(srv.lines)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
      }
    }, 30);
    const exit = await srv.exited;
    clearInterval(killer);
    expect(exit.code).toBe(1);
    expect(srv.lines.some((l) => /crash loop/.test(l.msg))).toBe(true);
  });

  it('sends 1001 to every client when the primary is SIGKILLed, and leaves no worker behind', async () => {
    const srv = await startWsdrain([...two]);
    const pids = await listeningPids(srv, 2);
    const clients = await connectMany(srv.port, 200);
    srv.kill('SIGKILL');
    await Promise.all(clients.map((c) => c.closed));
    expect(codes(clients)).toEqual({ 1001: 200 });
    await gone(pids, 2000);
  });
});

describe('metrics', () => {
  it('sums connections over workers and answers a scrape during a drain', async () => {
    const srv = await startWsdrain([...two, '--metrics-port', '0', '--drain-timeout', '5000']);
    const mport = (await srv.waitFor((l) => typeof l.metricsPort === 'number'))
      .metricsPort as number;
    const clients = await connectMany(srv.port, 300);
    expect(await metric(mport, 'wsdrain_connections_open')).toBe(300);
    // The stalled clients keep the drain (and the primary) up until they read again.
    const stalled = clients.slice(0, 30);
    const good = clients.slice(30);
    for (const c of stalled) c.stall();
    srv.kill('SIGTERM');
    await Promise.all(good.map((c) => c.closed));
    expect(codes(good)).toEqual({ 1001: 270 });
    // Each worker counts a close once it has read the client's answer: poll until the sum
    // has them all, then it must be exactly the clients closed with 1001.
    const closed1001 = 'wsdrain_connections_closed_total{code="1001"}';
    let seen = 0;
    await until(
      async () => {
        seen = await metric(mport, closed1001);
        return seen >= 270;
      },
      () => `${closed1001} to reach 270 (it is ${seen})`,
      1000,
    );
    expect(seen).toBe(270);
    expect(stalled.every((c) => c.code === undefined)).toBe(true);
    // They answer now: the drain ends before its deadline, every client closed with 1001.
    for (const c of stalled) c.unstall();
    expect((await srv.exited).code).toBe(0);
    await Promise.all(stalled.map((c) => c.closed));
    expect(codes(clients)).toEqual({ 1001: 300 });
  });
});
