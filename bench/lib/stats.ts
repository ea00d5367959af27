/** Close-time statistics over the sockets of one run. Times are ms since the signal. */

/**
 * Time by which the fraction `q` of `total` sockets had closed (nearest rank), or null when
 * fewer sockets than that ever closed. `sorted` holds the close times, ascending.
 */
export function closedBy(sorted: readonly number[], total: number, q: number): number | null {
  const rank = Math.ceil(q * total);
  if (rank <= 0) return 0;
  if (rank > sorted.length) return null;
  return sorted[rank - 1]!;
}

/** [ms since signal, sockets still open] */
export type SeriesPoint = [number, number];

/**
 * "Sockets still open" sampled every 1 ms up to 100 ms, every 10 ms up to 10 s and every
 * 100 ms after that, keeping only the samples where the count changed (and the first and last):
 * a step function that stays exact enough for a log-time chart and small in JSON.
 */
export function openSeries(sorted: readonly number[], total: number): SeriesPoint[] {
  const end = sorted.length > 0 ? sorted[sorted.length - 1]! : 0;
  const points: SeriesPoint[] = [[0, total - countUpTo(sorted, 0)]];
  let t = 0;
  while (t < end) {
    t += t < 100 ? 1 : t < 10_000 ? 10 : 100;
    const open = total - countUpTo(sorted, t);
    if (open !== points[points.length - 1]![1]) points.push([t, open]);
  }
  const last = points[points.length - 1]!;
  if (last[0] !== t) points.push([t, last[1]]);
  return points;
}

/** Number of values <= t in an ascending array. */
function countUpTo(sorted: readonly number[], t: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Median of the numbers; null counts as "never" (larger than everything). */
export function median(values: readonly (number | null)[]): number | null {
  if (values.length === 0) return null;
  const sorted = values.map((v) => v ?? Number.POSITIVE_INFINITY).sort((a, b) => a - b);
  const m = sorted[(sorted.length - 1) >> 1]!;
  return Number.isFinite(m) ? m : null;
}

export function round1(ms: number): number {
  return Math.round(ms * 10) / 10;
}

/** Nearest-rank percentile (q in [0, 1]) of ascending values; null when there are none. */
export function percentile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return sorted[rank - 1]!;
}

/** Rounds to 2 decimals (sub-millisecond figures). */
export function round2(v: number): number {
  return Math.round(v * 100) / 100;
}

/** Adds the counts of `from` into `into` (close codes, causes, ...). */
export function addCounts(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
}

/** The largest of the numbers that are not null; null when there are none. */
export function maxOrNull(values: readonly (number | null)[]): number | null {
  const xs = values.filter((x): x is number => x !== null);
  return xs.length > 0 ? Math.max(...xs) : null;
}

/** Adds the number fields `keys` of `from` into `into` (results summed over processes). */
export function addFields<K extends string>(
  into: Record<K, number>,
  from: Record<K, number>,
  keys: readonly K[],
): void {
  for (const k of keys) into[k] += from[k];
}
