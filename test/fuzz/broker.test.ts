/**
 * Property tests of the embedded broker's sequencer: whatever the publications, interests and
 * recoveries, offsets rise by one per topic, interested parties get every later publication
 * once and in order while they hold an interest (interests are counted: each drop ends one),
 * and a recovery is all or nothing.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Sequencer } from 'wsdrain/internal';
import { RUNS } from './runs.js';

type Op =
  | { op: 'publish'; topic: number }
  | { op: 'interest'; topic: number; party: number }
  | { op: 'drop'; topic: number; party: number }
  | { op: 'recover'; topic: number; back: number; wrongEpoch: boolean }
  | { op: 'tick'; ms: number };

const ops = fc.array(
  fc.oneof(
    fc.record({ op: fc.constant('publish' as const), topic: fc.nat(2) }),
    fc.record({ op: fc.constant('interest' as const), topic: fc.nat(2), party: fc.nat(2) }),
    fc.record({ op: fc.constant('drop' as const), topic: fc.nat(2), party: fc.nat(2) }),
    fc.record({
      op: fc.constant('recover' as const),
      topic: fc.nat(2),
      back: fc.nat(20),
      wrongEpoch: fc.boolean(),
    }),
    fc.record({ op: fc.constant('tick' as const), ms: fc.nat(2000) }),
  ),
  { maxLength: 200 },
);

describe('the sequencer', () => {
  it('numbers, delivers and recovers as its contract says', () => {
    fc.assert(
      fc.property(
        ops,
        fc.integer({ min: 0, max: 10 }),
        fc.integer({ min: 500, max: 3000 }),
        (list, size, ttl) => {
          let now = 0;
          const got = new Map<string, number[]>(); // `${party}/${topic}` -> offsets
          const from = new Map<string, { offset: number; epoch: string }>(); // where it started
          const held = new Map<string, number>(); // interests not dropped
          const seq = new Sequencer({
            historySize: size,
            historyTtl: ttl,
            deliver: (to, pub) => {
              const key = `${to}/${pub.topic}`;
              got.set(key, [...(got.get(key) ?? []), pub.offset]);
            },
            now: () => now,
          });
          const top = new Map<string, { offset: number; epoch: string }>();
          for (const o of list as Op[]) {
            const topic = `t${'topic' in o ? o.topic : 0}`;
            if (o.op === 'publish') {
              const p = seq.publish(topic, 'x');
              const before = top.get(topic);
              if (before && before.epoch === p.epoch) expect(p.offset).toBe(before.offset + 1);
              top.set(topic, { offset: p.offset, epoch: p.epoch });
            } else if (o.op === 'interest') {
              const at = seq.interest(topic, o.party);
              const key = `${o.party}/${topic}`;
              held.set(key, (held.get(key) ?? 0) + 1);
              if (!from.has(key)) {
                from.set(key, at);
                got.set(key, []);
              }
            } else if (o.op === 'drop') {
              seq.drop(topic, o.party);
              const key = `${o.party}/${topic}`;
              const n = (held.get(key) ?? 0) - 1;
              if (n > 0) held.set(key, n);
              else {
                // The last interest ended: nothing more reaches this party.
                held.delete(key);
                from.delete(key);
                got.delete(key);
              }
            } else if (o.op === 'recover') {
              const t = top.get(topic) ?? { offset: 0, epoch: 'never published' };
              const since = {
                offset: Math.max(0, t.offset - o.back),
                epoch: o.wrongEpoch ? 'nope' : t.epoch,
              };
              const r = seq.recover(topic, since);
              if (r.recovered) {
                expect(r.position.epoch).toBe(since.epoch);
                expect(r.publications.map((p) => p.offset)).toEqual(
                  Array.from(
                    { length: r.position.offset - since.offset },
                    (_, i) => since.offset + 1 + i,
                  ),
                );
              } else {
                expect(r.publications).toEqual([]);
              }
              if (o.wrongEpoch) expect(r.recovered).toBe(false);
              if (o.back > size && o.back <= t.offset && !o.wrongEpoch)
                expect(r.recovered).toBe(false);
            } else {
              now += o.ms;
              seq.sweep();
            }
          }
          // Every interest got every later publication of its topic, once, in order, up to the
          // last (a topic someone is interested in keeps its epoch), and nothing after it ended.
          for (const [key, offsets] of got) {
            const start = from.get(key)!;
            for (let i = 1; i < offsets.length; i++) expect(offsets[i]).toBe(offsets[i - 1]! + 1);
            if (offsets.length > 0) expect(offsets[0]).toBe(start.offset + 1);
            const t = top.get(key.slice(key.indexOf('/') + 1));
            const last = t?.epoch === start.epoch ? t.offset : start.offset;
            expect(offsets.length).toBe(last - start.offset);
          }
        },
      ),
      {
        numRuns: RUNS,
        examples: [
          // Found once: a party that asked twice and dropped once still gets the publication.
          [
            [
              { op: 'interest', topic: 2, party: 0 },
              { op: 'interest', topic: 2, party: 0 },
              { op: 'drop', topic: 2, party: 0 },
              { op: 'publish', topic: 2 },
            ],
            0,
            500,
          ],
        ],
      },
    );
  });
});
