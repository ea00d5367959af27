/**
 * One clock for every bench process: epoch milliseconds with sub-millisecond resolution.
 * `performance.timeOrigin` is taken from the wall clock at process start, so values from the
 * parent and from the load-generator children can be subtracted from each other.
 */
export function now(): number {
  return performance.timeOrigin + performance.now();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
