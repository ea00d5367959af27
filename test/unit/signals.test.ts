/**
 * Signal handling of the primary and the single process, on a stand-in emitter: the first
 * SIGTERM/SIGINT stops, a second forces, SIGHUP reloads, uninstall undoes it all.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { installSignals } from 'wsdrain/internal';

function setup() {
  const proc = new EventEmitter();
  const calls: string[] = [];
  const installed = installSignals(
    {
      onStop: (s) => calls.push(`stop ${s}`),
      onForce: (s) => calls.push(`force ${s}`),
      onReload: () => calls.push('reload'),
    },
    proc,
  );
  return { proc, calls, installed };
}

describe('installSignals', () => {
  it('stops on the first signal and forces on every later one, SIGTERM and SIGINT alike', () => {
    const { proc, calls } = setup();
    proc.emit('SIGTERM', 'SIGTERM');
    proc.emit('SIGINT', 'SIGINT');
    proc.emit('SIGTERM', 'SIGTERM');
    expect(calls).toEqual(['stop SIGTERM', 'force SIGINT', 'force SIGTERM']);
  });

  it('reloads on every SIGHUP, stopping or not', () => {
    const { proc, calls } = setup();
    proc.emit('SIGHUP');
    proc.emit('SIGTERM', 'SIGTERM');
    proc.emit('SIGHUP');
    expect(calls).toEqual(['reload', 'stop SIGTERM', 'reload']);
  });

  it('forces on the first signal after a stop that came another way', () => {
    const { proc, calls, installed } = setup();
    installed.markStopping();
    proc.emit('SIGINT', 'SIGINT');
    expect(calls).toEqual(['force SIGINT']);
  });

  it('keeps its handlers (not once): a second signal never falls through to the default', () => {
    const { proc } = setup();
    proc.emit('SIGTERM', 'SIGTERM');
    expect(proc.listenerCount('SIGTERM')).toBe(1);
    expect(proc.listenerCount('SIGINT')).toBe(1);
  });

  it('uninstalls every handler', () => {
    const { proc, calls, installed } = setup();
    installed.uninstall();
    proc.emit('SIGTERM', 'SIGTERM');
    proc.emit('SIGHUP');
    expect(calls).toEqual([]);
    expect(
      proc.listenerCount('SIGTERM') + proc.listenerCount('SIGINT') + proc.listenerCount('SIGHUP'),
    ).toBe(0);
  });
});
