/**
 * Property test of the pool and its batch formats, with real threads and the built-in echo:
 * whatever the messages (text of any Unicode, bytes of any length, empty ones), the owners and
 * the small batches and buffers that force give-backs and regrowth, every message comes back
 * once, as it was sent, and in order per owner.
 */
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { Kind, MessagePool } from 'wsdrain/internal';
import { SLOW_RUNS } from './runs.js';

interface Ticket {
  owner: number;
  i: number;
  sent: string | Uint8Array;
}

const message = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.uint8Array({ maxLength: 70_000 }),
  fc.constant(''),
);

describe('the pool', () => {
  const pools: Array<MessagePool<Ticket>> = [];
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.destroy()));
  });

  it('answers every message once, as sent, in order per owner', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat(5), message), { minLength: 1, maxLength: 300 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 40 }),
        async (list, threads, maxBatch) => {
          const owners = Array.from({ length: 6 }, () => ({}));
          const results: Array<{ t: Ticket; kind: number; data: string | Buffer | null }> = [];
          let done: () => void = () => {};
          const all = new Promise<void>((r) => {
            done = r;
          });
          const pool = new MessagePool<Ticket>({
            handler: undefined,
            threads,
            taskTimeout: 10_000,
            maxBatch,
            ownerOf: (t) => owners[t.owner]!,
            onResult: (t, kind, data) => {
              results.push({ t, kind, data: data as string | Buffer | null });
              if (results.length === list.length) done();
            },
          });
          pools.push(pool);
          await pool.ready();
          const next = new Map<number, number>();
          for (const [owner, sent] of list) {
            const i = next.get(owner) ?? 0;
            next.set(owner, i + 1);
            const bytes = typeof sent === 'string' ? Buffer.from(sent) : sent;
            pool.submit(bytes, typeof sent !== 'string', { owner, i, sent });
          }
          await all;
          await pool.destroy();
          expect(results).toHaveLength(list.length);
          const seen = new Map<number, number>();
          for (const { t, kind, data } of results) {
            expect(t.i).toBe(seen.get(t.owner) ?? 0);
            seen.set(t.owner, t.i + 1);
            if (typeof t.sent === 'string') {
              // Text arrives as the UTF-8 the pool decoded: lone surrogates become U+FFFD.
              expect(kind).toBe(Kind.TEXT);
              expect(Buffer.from(data as Buffer).toString()).toBe(Buffer.from(t.sent).toString());
            } else {
              expect(kind).toBe(Kind.BINARY);
              expect(Buffer.compare(Buffer.from(data as Buffer), Buffer.from(t.sent))).toBe(0);
            }
          }
        },
      ),
      { numRuns: SLOW_RUNS },
    );
  }, 120_000);
});
