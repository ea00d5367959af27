/**
 * The benchmark's own checks, fed what wsdrain really writes: a check that cannot fail is
 * worse than none.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { WsdrainLog } from '../bench/lib/server.js';
import { rollWithinBudget } from '../bench/scenarios/storm.js';
import { killAll, type LogLine, startWsdrain } from './helpers/process.js';

afterEach(killAll);

/** A warn line as wsdrain's logger writes it (`"level":"warn"`), taken from a real process. */
async function realWarnLine(): Promise<LogLine> {
  const w = await startWsdrain(['--workers', '0']);
  w.child.kill('SIGHUP'); // single process: "SIGHUP ignored ..." at warn level
  const line = await w.waitFor((l) => l.level === 'warn');
  w.kill('SIGKILL');
  return line;
}

describe('storm log reading', () => {
  it('records warnings written with pino level words, and a missed deadline fails the roll budget', async () => {
    const warn = await realWarnLine();
    expect(warn.level).toBe('warn');
    const log = new WsdrainLog();
    const line = (fields: Record<string, unknown>): string =>
      JSON.stringify({ ...warn, ...fields });
    const report = { sockets: 10, clean: 10, terminated: 0, dropped: 0, lateUpgrades: 0 };
    for (const workerPid of [101, 102]) {
      log.read(
        line({
          level: 'info',
          workerPid,
          report: { ...report, durationMs: 100, windowMs: 0 },
          msg: `rolled worker ${workerPid}: drained 10 sockets in 100 ms`,
        }),
        1,
      );
    }
    log.read(line({ level: 'info', msg: 'rolling restart done: 2 workers' }), 2);
    const o = { rollWorkers: 2, drainTimeoutMs: 5000 };
    expect(rollWithinBudget(log, o)).toBe(true);

    log.read(JSON.stringify(warn), 3);
    log.read(line({ workerPid: 102, msg: 'worker 102 missed its deadline; killing it' }), 4);
    expect(log.warnings).toEqual([
      `warn ${warn.role}/${warn.pid}: ${warn.msg}`,
      `warn ${warn.role}/${warn.pid}: worker 102 missed its deadline; killing it`,
    ]);
    expect(rollWithinBudget(log, o)).toBe(false);
  });
});
