/** Statistics over times and counts, and a small mergeable latency histogram. */

export const round1 = (v: number): number => Math.round(v * 10) / 10;
export const round2 = (v: number): number => Math.round(v * 100) / 100;

/** Nearest-rank percentile (q in [0, 1]) of ascending values; null when there are none. */
export function percentile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length))) - 1]!;
}

/**
 * Time by which the fraction `q` of `total` sockets had closed (nearest rank), or null when
 * fewer than that ever closed. `sorted`: the close times, ascending.
 */
export function closedBy(sorted: readonly number[], total: number, q: number): number | null {
  const rank = Math.ceil(q * total);
  if (rank <= 0) return 0;
  return rank > sorted.length ? null : sorted[rank - 1]!;
}

/** Median; null counts as "never" (larger than everything). */
export function median(values: readonly (number | null)[]): number | null {
  if (values.length === 0) return null;
  const sorted = values.map((v) => v ?? Number.POSITIVE_INFINITY).sort((a, b) => a - b);
  const m = sorted[(sorted.length - 1) >> 1]!;
  return Number.isFinite(m) ? m : null;
}

/** The largest of the numbers that are not null; null when there are none. */
export function maxOrNull(values: readonly (number | null | undefined)[]): number | null {
  const xs = values.filter((x): x is number => typeof x === 'number' && !Number.isNaN(x));
  return xs.length > 0 ? Math.max(...xs) : null;
}

/** Adds the counts of `from` into `into` (close codes, causes, ...). */
export function addCounts(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
}

export const sum = (counts: Record<string, number> | undefined): number =>
  Object.values(counts ?? {}).reduce((a, b) => a + b, 0);

/** [ms since signal, sockets still open] */
export type SeriesPoint = [number, number];

/**
 * "Sockets still open", sampled every 1 ms up to 100 ms, every 10 ms up to 10 s and every
 * 100 ms after, keeping only the points where the count changed (and the first and last).
 */
export function openSeries(sorted: readonly number[], total: number): SeriesPoint[] {
  const upTo = (t: number): number => {
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sorted[mid]! <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const end = sorted.at(-1) ?? 0;
  const points: SeriesPoint[] = [[0, total - upTo(0)]];
  let t = 0;
  while (t < end) {
    t += t < 100 ? 1 : t < 10_000 ? 10 : 100;
    const open = total - upTo(t);
    if (open !== points.at(-1)![1]) points.push([t, open]);
  }
  if (points.at(-1)![0] !== t) points.push([t, points.at(-1)![1]]);
  return points;
}

/** Counts per `bucketMs` bucket of times (ms since time zero), buckets 0..last as an array. */
export function perBucket(times: readonly number[], bucketMs = 100): number[] {
  const out: number[] = [];
  for (const t of times) {
    const b = Math.floor(t / bucketMs);
    if (b >= 0) out[b] = (out[b] ?? 0) + 1;
  }
  return Array.from(out, (n) => n ?? 0);
}

/** Largest sum of `n` consecutive buckets; null when there are none. */
export function busiest(buckets: readonly number[], n: number): number | null {
  if (buckets.length === 0) return null;
  let run = 0;
  let best = 0;
  for (let i = 0; i < buckets.length; i++) {
    run += buckets[i]! - (i >= n ? buckets[i - n]! : 0);
    best = Math.max(best, run);
  }
  return best;
}

// A fixed log-scale latency histogram: 4 buckets per doubling from 0.05 ms to about 55 s, so
// client processes can send a small array every second and the parent can merge them.
const MIN_MS = 0.05;
const PER_DOUBLING = 4;
const BUCKETS = 81;

export const newHist = (): number[] => new Array<number>(BUCKETS).fill(0);

export function record(h: number[], ms: number): void {
  h[ms > MIN_MS ? Math.min(BUCKETS - 1, Math.floor(Math.log2(ms / MIN_MS) * PER_DOUBLING)) : 0]!++;
}

export function mergeHist(into: number[], from: readonly number[]): void {
  for (let i = 0; i < BUCKETS; i++) into[i]! += from[i] ?? 0;
}

/** Upper bound (ms, 2 significant digits) of the bucket holding quantile q; null if empty. */
export function quantile(h: readonly number[], q: number): number | null {
  const n = h.reduce((a, b) => a + b, 0);
  if (n === 0) return null;
  const rank = Math.max(1, Math.ceil(q * n));
  for (let i = 0, seen = 0; i < BUCKETS; i++) {
    seen += h[i]!;
    if (seen >= rank) return Number((MIN_MS * 2 ** ((i + 1) / PER_DOUBLING)).toPrecision(2));
  }
  return null;
}

// An exact-enough latency tally: ms rounded to 0.1 below 100 ms, to 1 below 1 s and to 10
// above (about 3 significant digits), counted per value. Small to send from a client process,
// mergeable, and fine enough to compare two p99s.

/** value (ms, rounded) -> how many. */
export type Tally = Map<number, number>;

export function tally(t: Tally, ms: number): void {
  const v =
    ms < 100 ? Math.round(ms * 10) / 10 : ms < 1000 ? Math.round(ms) : Math.round(ms / 10) * 10;
  t.set(v, (t.get(v) ?? 0) + 1);
}

/** The tally as [value, count] pairs, to send (a Map does not survive JSON). */
export const tallyPairs = (t: Tally): [number, number][] => [...t];

/** Adds [value, count] pairs into `into`. */
export function mergeTally(into: Tally, pairs: Iterable<[number, number]>): void {
  for (const [v, n] of pairs) into.set(v, (into.get(v) ?? 0) + n);
}

/** Nearest-rank quantile q of [value, count] pairs; null when empty. */
export function tallyQuantile(pairs: Iterable<[number, number]>, q: number): number | null {
  const sorted = [...pairs].sort((a, b) => a[0] - b[0]);
  const total = sorted.reduce((s, [, n]) => s + n, 0);
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (const [v, n] of sorted) {
    seen += n;
    if (seen >= rank) return v;
  }
  return sorted.at(-1)![0];
}
