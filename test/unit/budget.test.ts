/**
 * The drain budget as arithmetic: exit margin, kill time, drain commands, and the sum of a
 * cluster's reports. In-process, no sockets.
 */
import { describe, expect, it } from 'vitest';
import {
  drainCommand,
  exitMargin,
  killAfter,
  MIN_ANSWER_MS,
  sumReports,
  threadExecArgv,
} from 'wsdrain/internal';

const settings = {
  drainTimeout: 10_000,
  drainDelay: 1500,
  drainWindow: 2000,
  drainRate: 0,
  reconnectWindow: 1000,
};

describe('exit margin and kill time', () => {
  it('keeps 5% of the budget, at least 150 and at most 500 ms', () => {
    expect(exitMargin(100)).toBe(150);
    expect(exitMargin(3000)).toBe(150);
    expect(exitMargin(4000)).toBe(200);
    expect(exitMargin(10_000)).toBe(500);
    expect(exitMargin(3_600_000)).toBe(500);
  });

  it('kills just before the budget ends, after the worker deadline', () => {
    for (const budget of [100, 1500, 10_000, 60_000]) {
      const deadline = budget - exitMargin(budget);
      expect(killAfter(budget)).toBeGreaterThan(deadline);
      expect(killAfter(budget)).toBeLessThan(budget);
      expect(budget - killAfter(budget)).toBeLessThanOrEqual(100);
    }
  });

  it('leaves peers time to answer after the last call', () => {
    expect(MIN_ANSWER_MS).toBe(250);
  });
});

describe('drain commands', () => {
  it('a shutdown: 1001, the deadline one exit margin before the budget ends, the delay kept', () => {
    const cmd = drainCommand('shutdown', settings, 1, 1_000_000);
    expect(cmd).toEqual({
      code: 1001,
      kind: 'shutdown',
      deadline: 1_000_000 + 10_000 - 500,
      delayMs: 1500,
      windowMs: 2000,
      rate: 0,
      reconnectWindowMs: 1000,
    });
  });

  it('a restart: 1012 and no delay (the new workers serve the port already)', () => {
    const cmd = drainCommand('restart', settings, 1, 0);
    expect(cmd.code).toBe(1012);
    expect(cmd.kind).toBe('restart');
    expect(cmd.delayMs).toBe(0);
    expect(cmd.deadline).toBe(9500);
  });

  it('shares --drain-rate among the workers that drain at once', () => {
    const paced = { ...settings, drainWindow: 0, drainRate: 6000 };
    expect(drainCommand('shutdown', paced, 4).rate).toBe(1500);
    expect(drainCommand('shutdown', paced, 0).rate).toBe(6000);
    expect(drainCommand('restart', paced).rate).toBe(6000);
  });
});

describe('the sum of a cluster drain', () => {
  const worker = (pid: number, sockets: number, extra = {}) => ({
    pid,
    sockets,
    clean: sockets - 1,
    terminated: 1,
    dropped: 0,
    inflightCompleted: 2,
    late: 1,
    abandoned: 0,
    lateUpgrades: 0,
    durationMs: 100,
    code: 1001,
    windowMs: pid === 2 ? 300 : 0,
    exit: { code: 0, signal: null },
    killed: false,
    lost: false,
    ...extra,
  });

  it('adds the counts, keeps the longest window, and names the killed and the lost', () => {
    const r = sumReports(
      [
        worker(1, 10),
        worker(2, 20),
        { pid: 3, exit: { code: null, signal: 'SIGKILL' }, killed: true, lost: false },
        { pid: 4, exit: { code: null, signal: 'SIGKILL' }, killed: false, lost: true },
      ],
      1001,
      1234,
    );
    expect(r).toMatchObject({
      sockets: 30,
      clean: 28,
      terminated: 2,
      inflightCompleted: 4,
      late: 2,
      windowMs: 300,
      durationMs: 1234,
      code: 1001,
      workersKilled: 1,
      workersLost: 1,
    });
    expect(r.workers.map((w) => w.pid)).toEqual([1, 2, 3, 4]);
  });

  it('does not count a worker that reported and was only slow to exit as killed', () => {
    const r = sumReports([worker(1, 5, { killed: true })], 1001, 10);
    expect(r.workersKilled).toBe(0);
  });
});

describe('node options of the pool threads', () => {
  it('keep loaders and drop what Node refuses for a thread', () => {
    expect(
      threadExecArgv([
        '--expose-gc',
        '--import',
        'tsx',
        '--max-old-space-size=4096',
        '--require',
        './setup.cjs',
        '--cpu-prof',
        '--enable-source-maps',
        '--conditions=development',
        '--title',
        'x',
      ]),
    ).toEqual([
      '--import',
      'tsx',
      '--require',
      './setup.cjs',
      '--enable-source-maps',
      '--conditions=development',
    ]);
  });
});
