// A CPU-heavy pool handler: `wsdrain start --handler ./examples/cpu/handler.mjs`.
//
// Each text message `{"op":"primes","below":N,"id":X}` counts the primes below N with a sieve
// (pure CPU, about N bytes of memory, N at most 20,000,000) in one of wsdrain's worker
// threads and replies `{"id":X,"below":N,"primes":COUNT,"ms":T,"thread":I}`. Anything else is
// answered with an error reply. The worker's event loop never runs the sieve: other
// connections stay served while the threads work.
import { threadId } from 'node:worker_threads';

const MAX_BELOW = 20_000_000;

function countPrimes(below) {
  if (below < 3) return 0;
  const composite = new Uint8Array(below);
  let count = 1; // 2
  for (let i = 3; i < below; i += 2) {
    if (composite[i]) continue;
    count++;
    for (let j = i * i; j < below; j += 2 * i) composite[j] = 1;
  }
  return count;
}

export default function handle({ data, isBinary }) {
  let job;
  try {
    job = isBinary ? undefined : JSON.parse(data);
  } catch {
    job = undefined;
  }
  if (job?.op !== 'primes' || !Number.isSafeInteger(job.below) || job.below < 0) {
    return JSON.stringify({ error: 'send {"op":"primes","below":N,"id":X}' });
  }
  const below = Math.min(job.below, MAX_BELOW);
  const t0 = performance.now();
  const primes = countPrimes(below);
  const ms = Math.round(performance.now() - t0);
  return JSON.stringify({ id: job.id ?? null, below, primes, ms, thread: threadId });
}
