/**
 * The format of a batch between a worker's main thread and a pool thread, in both directions:
 * one ArrayBuffer that is moved (transferred), not cloned item by item.
 *
 *     u32 count | count × (u32 kind, u32 byteLength) | the payloads, back to back, in order
 *
 * Messages go out as TEXT (UTF-8) or BINARY; results come back as TEXT, BINARY, NONE (no
 * reply, empty payload) or ERROR (the failure's message, UTF-8). Every batch buffer starts at
 * offset 0 of its own ArrayBuffer (never Node's shared Buffer pool: moving that would detach
 * it), so the header can be read as a Uint32Array. Integers are in the machine's byte order:
 * both ends are threads of one process.
 */

/** What one entry of a batch holds. */
export const Kind = { NONE: 0, TEXT: 1, BINARY: 2, ERROR: 3 } as const;
export type Kind = (typeof Kind)[keyof typeof Kind];

/** Bytes before the first payload of a batch of `count` entries. */
export function headerBytes(count: number): number {
  return 4 + 8 * count;
}

/** A batch's header: `count` at 0, then kind and byte length of entry i at 1 + 2i, 2 + 2i. */
export function header(batch: Uint8Array): Uint32Array {
  const count = new Uint32Array(batch.buffer, batch.byteOffset, 1)[0]!;
  return new Uint32Array(batch.buffer, batch.byteOffset, 1 + 2 * count);
}
