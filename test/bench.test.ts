/**
 * The benchmark's own checks, fed what wsdrain really writes, and its exit status: a check
 * that cannot fail is worse than none. Tiny runs (real processes and sockets, a few seconds).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { WsdrainLog } from '../bench/lib/server.js';
import { P99_FLOOR_MS, p99Ratio } from '../bench/scenarios/healthz.js';
import { rollWithinBudget } from '../bench/scenarios/storm.js';
import { killAll, type LogLine, ROOT, startWsdrain } from './helpers/process.js';

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

describe('healthz target', () => {
  it('judges a drain p99 against an idle p99 of 0 (floored at the resolution) instead of skipping it', () => {
    expect(p99Ratio(0.5, 0)).toBe(0.5 / P99_FLOOR_MS);
    expect(p99Ratio(0.02, 0.01)).toBe(2);
    expect(p99Ratio(null, 1)).toBeNull();
  });
});

/** `tsx bench/run.ts <args>` with tiny parameters: exit status and stderr. */
async function bench(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stderr };
}

describe('bench verdict', () => {
  const out = mkdtempSync(join(tmpdir(), 'wsdrain-bench-test-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));
  // One wsdrain with one worker, 10 sockets, one SIGTERM: a few seconds.
  const tiny = [
    '--scenarios',
    'drain',
    '--strategies',
    'wsdrain',
    '--stalled',
    '0',
    '--rounds',
    '1',
  ].concat(['--sockets', '10', '--workers', '1', '--out', out, '--name', 'tiny']);

  it('exits 1 and names the target a run missed; --report-only records it and exits 0', async () => {
    const missed = await bench([...tiny, '--target', 'drainExitVsBudget=0']);
    expect(missed.stderr).toMatch(/MISSED drain: .*\(target drainExitVsBudget <= 0\)/);
    expect(missed.code).toBe(1);
    const md = readFileSync(join(out, 'tiny.md'), 'utf8');
    expect(md).toMatch(/drain: \*\*missed\*\*: .*target drainExitVsBudget <= 0/);
    expect(JSON.parse(readFileSync(join(out, 'tiny.json'), 'utf8')).verdict.passed).toBe(false);

    const recorded = await bench([...tiny, '--report-only'], {
      WSDRAIN_BENCH_TARGETS: 'drainExitVsBudget=0',
    });
    expect(recorded.stderr).toMatch(/MISSED drain: .*drainExitVsBudget/);
    expect(recorded.stderr).toContain('--report-only: not judged');
    expect(recorded.code).toBe(0);
  }, 60_000);

  it('exits 0 when the same run meets its targets, and 2 on an unknown target', async () => {
    const met = await bench(tiny);
    expect(met.stderr).toContain('every target met');
    expect(met.code).toBe(0);
    const bad = await bench([...tiny, '--target', 'noSuchTarget=1']);
    expect(bad.stderr).toContain('--target');
    expect(bad.code).toBe(2);
  }, 60_000);
});
