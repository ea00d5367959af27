/**
 * Option validation: one test per guard, exact messages, and the CLI's exit code 2 with
 * nothing started.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  defaultMaxConnections,
  defaultThreads,
  envName,
  HTTP_EXTRA,
  helpText,
  OPTION_DEFS,
  openFileLimit,
  resolveOptions,
  validateOptions,
} from 'wsdrain/internal';
import { CLI, ROOT } from './helpers/process.js';

const noEnv = {};

describe('resolveOptions', () => {
  it('uses the contract defaults', () => {
    const o = resolveOptions({}, noEnv);
    expect(o).toMatchObject({
      port: 8080,
      host: '0.0.0.0',
      drainTimeout: 10_000,
      drainDelay: 0,
      heartbeat: 30_000,
      maxPayload: 1_048_576,
      logLevel: 'info',
      perMessageDeflate: false,
      origin: [],
      maxWork: 100,
    });
    expect(o.workers).toBeGreaterThanOrEqual(1);
    expect(o.maxConnections).toBeUndefined();
  });

  it('reads WSDRAIN_<FLAG> and PORT, and flags win over the environment', () => {
    const env = {
      PORT: '9000',
      WSDRAIN_DRAIN_TIMEOUT: '2500',
      WSDRAIN_ORIGIN: 'https://a.example, https://b.example',
    };
    const o = resolveOptions({}, env);
    expect(o.port).toBe(9000);
    expect(o.drainTimeout).toBe(2500);
    expect(o.origin).toEqual(['https://a.example', 'https://b.example']);
    expect(resolveOptions({ port: '7000' }, env).port).toBe(7000);
    expect(resolveOptions({}, { ...env, WSDRAIN_PORT: '7001' }).port).toBe(7001);
  });

  it('has an environment variable for every flag', () => {
    for (const def of OPTION_DEFS) expect(envName(def.flag)).toMatch(/^WSDRAIN_[A-Z_]+$/);
    expect(envName('drain-timeout')).toBe('WSDRAIN_DRAIN_TIMEOUT');
  });

  const bad: Array<[string, string, string]> = [
    ['port', '70000', '--port must be an integer from 0 to 65535 (port), got "70000"'],
    ['port', 'http', '--port must be an integer from 0 to 65535 (port), got "http"'],
    ['workers', '-1', '--workers must be an integer from 0 to 1024 (n), got "-1"'],
    [
      'drain-timeout',
      '1.5',
      '--drain-timeout must be an integer from 100 to 3600000 (ms), got "1.5"',
    ],
    [
      'drain-timeout',
      '50',
      '--drain-timeout must be an integer from 100 to 3600000 (ms), got "50"',
    ],
    ['drain-delay', 'soon', '--drain-delay must be an integer from 0 to 3600000 (ms), got "soon"'],
    ['heartbeat', '', '--heartbeat must be an integer from 0 to 3600000 (ms), got ""'],
    ['max-payload', '0', '--max-payload must be an integer from 1 to 2147483647 (bytes), got "0"'],
    [
      'max-connections',
      '0',
      '--max-connections must be an integer from 1 to 10000000 (n), got "0"',
    ],
    ['threads', '0', '--threads must be an integer from 1 to 256 (n), got "0"'],
    [
      'metrics-port',
      '99999',
      '--metrics-port must be an integer from 0 to 65535 (port), got "99999"',
    ],
    [
      'log-level',
      'loud',
      '--log-level must be one of fatal, error, warn, info, debug, trace, silent, got "loud"',
    ],
    ['max-work', '60001', '--max-work must be an integer from 0 to 60000 (ms), got "60001"'],
    ['task-timeout', '0', '--task-timeout must be an integer from 1 to 3600000 (ms), got "0"'],
    [
      'handshake-timeout',
      '10',
      '--handshake-timeout must be an integer from 100 to 600000 (ms), got "10"',
    ],
    [
      'max-buffered',
      '1',
      '--max-buffered must be an integer from 1024 to 2147483647 (bytes), got "1"',
    ],
    ['rate-limit', 'x', '--rate-limit must be an integer from 0 to 10000000 (msgs/s), got "x"'],
    ['handler', ' ', '--handler must be a non-empty string, got " "'],
  ];
  for (const [flag, value, message] of bad) {
    it(`rejects --${flag} ${JSON.stringify(value)}`, () => {
      expect(() => resolveOptions({ [flag]: value }, noEnv)).toThrow(message);
    });
  }

  it('names the environment variable when the bad value came from it', () => {
    expect(() => resolveOptions({}, { WSDRAIN_DRAIN_TIMEOUT: 'ten' })).toThrow(
      'WSDRAIN_DRAIN_TIMEOUT must be an integer from 100 to 3600000 (ms), got "ten"',
    );
    expect(() => resolveOptions({}, { PORT: 'eighty' })).toThrow('PORT must be an integer');
  });

  it('rejects a drain delay that does not fit in the budget', () => {
    expect(() => resolveOptions({ 'drain-delay': '5000', 'drain-timeout': '5000' }, noEnv)).toThrow(
      '--drain-delay (5000 ms) must be shorter than --drain-timeout (5000 ms)',
    );
  });

  it('rejects pacing that does not fit the budget, and both forms of pacing at once', () => {
    expect(() =>
      resolveOptions({ 'drain-window': '9500', 'drain-timeout': '10000' }, noEnv),
    ).toThrow(
      '--drain-delay (0 ms) + --drain-window (9500 ms) must fit in --drain-timeout (10000 ms) with 750 ms to spare for the last answers and the exit: use a window of at most 9250 ms or a longer --drain-timeout',
    );
    expect(() =>
      resolveOptions(
        { 'drain-window': '1000', 'drain-delay': '8800', 'drain-timeout': '10000' },
        noEnv,
      ),
    ).toThrow('use a window of at most 450 ms');
    expect(
      resolveOptions({ 'drain-window': '9250', 'drain-timeout': '10000' }, noEnv).drainWindow,
    ).toBe(9250);
    expect(() => resolveOptions({ 'drain-window': '1000', 'drain-rate': '500' }, noEnv)).toThrow(
      '--drain-window and --drain-rate are two ways to pace the same closes: set only one',
    );
  });

  it('checks programmatic options with the same rules', () => {
    expect(() => validateOptions({ drainTimeout: -1 })).toThrow(
      'options.drainTimeout must be an integer from 100 to 3600000 (ms), got -1',
    );
    expect(() => validateOptions({ perMessageDeflate: 'yes' as unknown as boolean })).toThrow(
      'options.perMessageDeflate must be true or false, got "yes"',
    );
  });

  it('derives the connection limit from RLIMIT_NOFILE and threads from cores', () => {
    // 20,000 - 40 in use - 64 for plain HTTP - 2% margin.
    expect(defaultMaxConnections(20_000, 40)).toBe(20_000 - 40 - HTTP_EXTRA - 400);
    expect(defaultMaxConnections(300, 40)).toBe(300 - 40 - HTTP_EXTRA - 32);
    expect(defaultMaxConnections(100, 90)).toBe(1);
    expect(defaultMaxConnections(Number.POSITIVE_INFINITY, 40)).toBe(100_000);
    const limit = openFileLimit();
    expect(limit).toBeGreaterThan(0);
    // At least two threads per worker, so cheap messages keep a lane while heavy ones run.
    expect(defaultThreads(2, 2)).toBe(2);
    expect(defaultThreads(0, 4)).toBe(4);
    expect(defaultThreads(8, 2)).toBe(2);
    expect(defaultThreads(1, 8)).toBe(8);
  });

  it('documents every flag in the README table', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    for (const def of OPTION_DEFS) expect(readme).toContain(`| \`--${def.flag}\` |`);
  });

  it('documents every flag in --help', () => {
    const text = helpText();
    for (const def of OPTION_DEFS) {
      expect(text).toContain(`--${def.flag}`);
      expect(text).toContain(envName(def.flag));
    }
  });
});

describe('wsdrain CLI', () => {
  const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [CLI, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      encoding: 'utf8',
      timeout: 10_000,
    });

  it('exits 2 with one line naming the flag, and starts nothing', () => {
    const r = run(['start', '--port', '0', '--drain-timeout', 'abc']);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(
      'wsdrain: --drain-timeout must be an integer from 100 to 3600000 (ms), got "abc"\n',
    );
    expect(r.stdout).toBe('');
  });

  it('exits 2 on an unknown flag, a missing or unknown command, and a bad env value', () => {
    const unknown = run(['start', '--drain-timout', '5']);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain('unknown option --drain-timout');
    expect(run([]).status).toBe(2);
    expect(run(['serve']).stderr).toContain('unknown command "serve"');
    const env = run(['start'], { WSDRAIN_WORKERS: 'many' });
    expect(env.status).toBe(2);
    expect(env.stderr).toContain('WSDRAIN_WORKERS must be an integer');
  });

  it('prints --help and --version and exits 0', () => {
    const help = run(['start', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('Usage: wsdrain start [options]');
    expect(help.stdout).toContain('--drain-timeout <ms>');
    expect(help.stdout).toContain('longer requests are cut to it');
    const version = run(['--version']);
    expect(version.status).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});
