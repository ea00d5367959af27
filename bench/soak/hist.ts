/**
 * A fixed log-scale latency histogram: 4 buckets per doubling from 0.05 ms to about 55 s, so
 * client processes can send one small array per second and the parent can merge them.
 */
const MIN_MS = 0.05;
const PER_DOUBLING = 4;
export const BUCKETS = 81;

export function newHist(): number[] {
  return new Array<number>(BUCKETS).fill(0);
}

export function bucketOf(ms: number): number {
  if (!(ms > MIN_MS)) return 0;
  return Math.min(BUCKETS - 1, Math.floor(Math.log2(ms / MIN_MS) * PER_DOUBLING));
}

/** Upper bound of a bucket, ms. */
export function bucketUpper(i: number): number {
  return MIN_MS * 2 ** ((i + 1) / PER_DOUBLING);
}

export function record(h: number[], ms: number): void {
  h[bucketOf(ms)]!++;
}

export function merge(into: number[], from: readonly number[]): void {
  for (let i = 0; i < BUCKETS; i++) into[i]! += from[i] ?? 0;
}

export function count(h: readonly number[]): number {
  return h.reduce((a, b) => a + b, 0);
}

/** Upper bound (ms, 2 significant digits) of the bucket holding quantile q; null if empty. */
export function quantile(h: readonly number[], q: number): number | null {
  const n = count(h);
  if (n === 0) return null;
  const rank = Math.max(1, Math.ceil(q * n));
  let seen = 0;
  for (let i = 0; i < BUCKETS; i++) {
    seen += h[i]!;
    if (seen >= rank) return Number(bucketUpper(i).toPrecision(2));
  }
  return null;
}
