/**
 * Reconnect hints: the close-reason format and how drains spread the retry delays.
 */
import { describe, expect, it } from 'vitest';
import { formatHint, hintReason, MAX_CLOSE_REASON_BYTES, parseHint } from 'wsdrain';

describe('hint format', () => {
  it('round-trips kind and retry, ignores unknown pairs, rejects other reasons', () => {
    expect(formatHint({ kind: 'restart', retryMs: 734.4 })).toBe('wsdrain:restart;retry=734');
    expect(formatHint({ kind: 'shutdown' })).toBe('wsdrain:shutdown');
    expect(parseHint('wsdrain:restart;retry=734')).toEqual({ kind: 'restart', retryMs: 734 });
    expect(parseHint('wsdrain:shutdown;zone=b;retry=5')).toEqual({ kind: 'shutdown', retryMs: 5 });
    expect(parseHint('wsdrain:shutdown;retry=-3')).toEqual({ kind: 'shutdown' });
    expect(parseHint('wsdrain:reboot;retry=5')).toBeUndefined();
    expect(parseHint('bye')).toBeUndefined();
    const longest = formatHint({ kind: 'shutdown', retryMs: 3_600_000 });
    expect(Buffer.byteLength(longest)).toBeLessThanOrEqual(MAX_CLOSE_REASON_BYTES);
  });
});

describe('hintReason', () => {
  it("gives the i-th of n sockets a retry in its own n-th of the window, so a drain's reconnects spread evenly", () => {
    const n = 1000;
    const reason = hintReason('restart', 2000);
    const retries = Array.from({ length: n }, (_, i) => parseHint(reason(i, n))?.retryMs ?? -1);
    retries.forEach((ms, i) => {
      expect(ms).toBeGreaterThanOrEqual(Math.floor((2000 * i) / n));
      expect(ms).toBeLessThanOrEqual(Math.ceil((2000 * (i + 1)) / n));
    });
    // Every tenth of the window holds a tenth of the retries.
    const tenths = new Array(10).fill(0);
    for (const ms of retries) tenths[Math.min(9, Math.floor(ms / 200))]++;
    for (const count of tenths) expect(Math.abs(count - n / 10)).toBeLessThanOrEqual(2);
  });

  it('draws a uniform retry without an index, and gives none for a zero window', () => {
    const fixed = hintReason('shutdown', 1000, () => 0.25);
    expect(fixed()).toBe('wsdrain:shutdown;retry=250');
    expect(hintReason('shutdown', 0)(3, 10)).toBe('wsdrain:shutdown');
  });
});
