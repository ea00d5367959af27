/**
 * The formats of a batch between a worker's main thread and a pool thread.
 *
 * Messages (main thread -> pool thread) are written into a SharedArrayBuffer of the task's
 * slot, reused from task to task; the thread reads them there, nothing is copied or moved:
 *
 *     i32 claimed | u32 count | count × (u32 kind, u32 byteLength) | the payloads, in order
 *
 * `claimed` is the claim counter: before running message i the thread adds 1 to it with
 * `Atomics.add` and runs the message only if it read i. The main thread takes back the
 * messages not claimed yet with `Atomics.exchange(claimed, count)` (see ./pool.ts): from then
 * on the thread claims nothing more, and each message runs on exactly one side.
 *
 * Results (pool thread -> main thread) are written into the result SharedArrayBuffer of the
 * slot, also reused (when they outgrow it, the thread goes on in an ArrayBuffer of its own);
 * at the end the thread moves them back in an ArrayBuffer of their own:
 *
 *     i32 published | u32 count | count × (u32 kind, u32 byteLength, u32 micros) | payloads
 *
 * `published` is how many entries, from the first, are complete in the shared buffer (stored
 * with `Atomics.store` after each one): the main thread may deliver those while the thread is
 * still busy with a long call. `micros` is the time from the start of the handler call to its
 * reply (its promise settled, for async handlers), in µs (bits 0-30), with bit 31
 * ({@link ASYNC_CALL}) set when the reply was a promise. The entries of messages the thread
 * did not run (taken back) are not written: the main thread reads only the others.
 *
 * Messages go out as TEXT (UTF-8) or BINARY; results come back as TEXT, BINARY, NONE (no
 * reply, empty payload) or ERROR (the failure's message, UTF-8). Every buffer starts at offset
 * 0 of its own (Shared)ArrayBuffer (never Node's shared Buffer pool: moving that would detach
 * it), so headers can be read as 32-bit arrays. Integers are in the machine's byte order:
 * both ends are threads of one process.
 */

/**
 * What one entry of a batch holds. COMPOSITE (results only): the handler returned
 * `{ reply, publish }`; the payload is that object as JSON (binary data as `b64`, see
 * ../wire.ts `payloadField`).
 */
export const Kind = { NONE: 0, TEXT: 1, BINARY: 2, ERROR: 3, COMPOSITE: 4 } as const;
export type Kind = (typeof Kind)[keyof typeof Kind];

/** Bytes before the first payload of a message batch of `count` entries. */
export function messagesHeaderBytes(count: number): number {
  return 8 + 8 * count;
}

/**
 * A message batch's header: the claim counter at 0 (read it through {@link claimCounter}),
 * `count` at 1, then kind and byte length of entry i at 2 + 2i, 3 + 2i.
 */
export function messagesHeader(batch: SharedArrayBuffer | ArrayBuffer): Uint32Array {
  const count = new Uint32Array(batch, 4, 1)[0]!;
  return new Uint32Array(batch, 0, 2 + 2 * count);
}

/** The claim counter of a message batch, for `Atomics`. */
export function claimCounter(batch: SharedArrayBuffer | ArrayBuffer): Int32Array {
  return new Int32Array(batch, 0, 1);
}

/** Bytes before the first payload of a result batch of `count` entries. */
export function resultsHeaderBytes(count: number): number {
  return 8 + 12 * count;
}

/**
 * A result batch's header: `published` at 0 (read it through {@link publishedCounter}),
 * `count` at 1, then kind, byte length and handler time (µs, and ASYNC_CALL) of entry i at 2 + 3i, 3 + 3i,
 * 4 + 3i.
 */
export function resultsHeader(results: SharedArrayBuffer | ArrayBuffer): Uint32Array {
  const count = new Uint32Array(results, 4, 1)[0]!;
  return new Uint32Array(results, 0, 2 + 3 * count);
}

/** In a result entry's time word: the handler's reply was a promise. */
export const ASYNC_CALL = 0x8000_0000;

/** The published counter of a result batch, for `Atomics`. */
export function publishedCounter(results: SharedArrayBuffer | ArrayBuffer): Int32Array {
  return new Int32Array(results, 0, 1);
}
