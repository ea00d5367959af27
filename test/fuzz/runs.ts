/**
 * How long the property tests run: a bounded number of cases in the suite (CI), many more
 * under `npm run fuzz` (FUZZ_RUNS). A failure prints the seed and the shrunk case; a case that
 * failed once becomes an example test of its own.
 */
export const RUNS = Number(process.env.FUZZ_RUNS ?? 200);
/** For the properties that start real threads or sockets per case. */
export const SLOW_RUNS = Math.max(5, Math.round(RUNS / 20));
