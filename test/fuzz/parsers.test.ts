/**
 * Property tests of the parsers wsdrain owns: the reconnect hint, the wsdrain.v1 client
 * messages, the IPC envelope, and the options from flags and environment. Each takes any
 * input and either gives a well-formed value or says no in the documented way; none throws
 * anything else.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatHint, InvalidOptionError, MAX_CLOSE_REASON_BYTES, parseHint } from 'wsdrain';
import {
  isOurs,
  OPTION_DEFS,
  parseClientMessage,
  resolveOptions,
  TOPIC_RE,
  WireError,
} from 'wsdrain/internal';
import { RUNS } from './runs.js';

describe('reconnect hints', () => {
  it('parse any string without throwing; what parses is a known kind and a sane delay', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.string().map((s) => `wsdrain:${s}`),
        ),
        (reason) => {
          const h = parseHint(reason);
          if (h === undefined) return;
          expect(['restart', 'shutdown']).toContain(h.kind);
          if (h.retryMs !== undefined) {
            expect(Number.isFinite(h.retryMs)).toBe(true);
            expect(h.retryMs).toBeGreaterThanOrEqual(0);
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('round-trip, and stay within a close reason', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('restart' as const, 'shutdown' as const),
        fc.option(fc.integer({ min: 0, max: 3_600_000 }), { nil: undefined }),
        (kind, retryMs) => {
          const text = formatHint({ kind, retryMs });
          expect(Buffer.byteLength(text)).toBeLessThanOrEqual(MAX_CLOSE_REASON_BYTES);
          expect(parseHint(text)).toEqual(retryMs === undefined ? { kind } : { kind, retryMs });
        },
      ),
      { numRuns: RUNS },
    );
  });
});

/** Strings that look a little like protocol messages, and anything else. */
const frames = fc.oneof(
  fc.string(),
  fc.json(),
  fc
    .record(
      {
        type: fc.oneof(
          fc.constantFrom('subscribe', 'unsubscribe', 'publish', 'message'),
          fc.string(),
        ),
        topic: fc.oneof(fc.string(), fc.stringMatching(/^[a-z:]{1,20}$/), fc.integer()),
        id: fc.oneof(fc.integer(), fc.string(), fc.object()),
        data: fc.jsonValue(),
        b64: fc.oneof(fc.base64String(), fc.integer()),
        since: fc.oneof(
          fc.record({
            offset: fc.oneof(fc.integer(), fc.double()),
            epoch: fc.oneof(fc.string(), fc.integer()),
          }),
          fc.anything(),
        ),
      },
      { requiredKeys: [] },
    )
    .map((o) => JSON.stringify(o)),
);

describe('wsdrain.v1 client messages', () => {
  it('parse to a message or an error answer, or fail with 1002/1003 only', () => {
    fc.assert(
      fc.property(frames, (text) => {
        let parsed: ReturnType<typeof parseClientMessage>;
        try {
          parsed = parseClientMessage(text);
        } catch (err) {
          expect(err).toBeInstanceOf(WireError);
          expect([1002, 1003]).toContain((err as WireError).closeCode);
          return;
        }
        if ('error' in parsed) {
          expect(parsed.error.type).toBe('error');
          expect(['bad_request', 'bad_topic']).toContain(parsed.error.code);
          return;
        }
        const m = parsed.message;
        expect(['subscribe', 'unsubscribe', 'publish', 'message']).toContain(m.type);
        if (m.type !== 'message') expect(TOPIC_RE.test(m.topic)).toBe(true);
        if (m.type === 'subscribe' && m.since) {
          expect(Number.isSafeInteger(m.since.offset) && m.since.offset >= 0).toBe(true);
          expect(typeof m.since.epoch).toBe('string');
        }
      }),
      { numRuns: RUNS * 5 },
    );
  });
});

describe('the IPC envelope', () => {
  it('tells its own messages from anything else on the channel, never throwing', () => {
    fc.assert(
      fc.property(fc.anything(), (m) => {
        const ours = isOurs(m);
        if (ours) {
          expect((m as { src: string }).src).toBe('wsdrain');
          expect(typeof (m as { type: unknown }).type).toBe('string');
        }
      }),
      { numRuns: RUNS * 5 },
    );
  });
});

describe('options from flags and environment', () => {
  const flags = OPTION_DEFS.map((d) => d.flag);
  it('resolve to valid options or say which one is bad (InvalidOptionError), nothing else', () => {
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.constantFrom(...flags),
          fc.oneof(fc.string(), fc.integer().map(String), fc.boolean()),
        ),
        fc.dictionary(
          fc.constantFrom(
            ...flags.map((f) => `WSDRAIN_${f.replaceAll('-', '_').toUpperCase()}`),
            'PORT',
          ),
          fc.oneof(fc.string(), fc.nat().map(String)),
        ),
        (given, env) => {
          try {
            const o = resolveOptions(given, env);
            expect(Number.isSafeInteger(o.port)).toBe(true);
            expect(o.drainDelay).toBeLessThan(o.drainTimeout);
          } catch (err) {
            expect(err).toBeInstanceOf(InvalidOptionError);
            expect((err as Error).message).toMatch(/--[\w-]+|WSDRAIN_\w+|PORT|options\./);
          }
        },
      ),
      { numRuns: RUNS },
    );
  });
});
