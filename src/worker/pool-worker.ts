/**
 * Runs inside a piscina thread: loads the handler module once, then answers batches of
 * messages (format in ./batch.ts). Each message becomes a string (text) or a Uint8Array
 * (binary) for the handler; the results go back in one buffer, moved to the main thread, in
 * the positions of their messages: a reply (text or binary), none, or an error.
 *
 * Progress: before each handler call, and when an async reply settles, the thread writes the
 * time into its task's slot of the shared `progress` array; the main thread's watchdog aborts
 * a task that made no progress for `--task-timeout` (see ./pool.ts).
 */
import { workerData } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { Handler, HandlerReply } from '../handler.js';
import { header, headerBytes, Kind } from './batch.js';

/** What the main thread sends: a batch and the progress slot its task writes to. */
export interface Task {
  batch: Uint8Array;
  slot: number;
}

interface PoolWorkerData {
  handler?: string;
  /** One Float64 per task slot: epoch ms of the task's last progress. */
  progress?: SharedArrayBuffer;
}

async function loadHandler(spec: string | undefined): Promise<Handler> {
  if (!spec) return (await import('../handlers/echo.js')).default;
  const mod = (await import(spec)) as { default?: unknown; handler?: unknown };
  const fn = typeof mod.default === 'function' ? mod.default : mod.handler;
  if (typeof fn !== 'function') {
    throw new Error(`handler module ${spec} exports no function (default export or "handler")`);
  }
  return fn as Handler;
}

const data = (workerData ?? {}) as PoolWorkerData;
const handler = await loadHandler(data.handler);
const progress = data.progress ? new Float64Array(data.progress) : new Float64Array(1);

/** Writes the results of one batch into a growing buffer of its own. */
class ResultWriter {
  #buf: Buffer;
  #head: Uint32Array;
  #used: number;

  constructor(count: number, payloadHint: number) {
    this.#buf = Buffer.from(new ArrayBuffer(headerBytes(count) + payloadHint + 64));
    this.#head = new Uint32Array(this.#buf.buffer, 0, 1 + 2 * count);
    this.#head[0] = count;
    this.#used = headerBytes(count);
  }

  #room(bytes: number): void {
    if (this.#used + bytes <= this.#buf.length) return;
    const grown = Buffer.from(new ArrayBuffer(Math.max(2 * this.#buf.length, this.#used + bytes)));
    this.#buf.copy(grown, 0, 0, this.#used);
    this.#buf = grown;
    this.#head = new Uint32Array(grown.buffer, 0, this.#head.length);
  }

  #entry(i: number, kind: Kind, bytes: number): void {
    this.#head[1 + 2 * i] = kind;
    this.#head[2 + 2 * i] = bytes;
    this.#used += bytes;
  }

  text(i: number, s: string, kind: Kind = Kind.TEXT): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit; measure only when that might not fit.
    if (this.#used + 3 * s.length > this.#buf.length) this.#room(Buffer.byteLength(s));
    this.#entry(i, kind, this.#buf.write(s, this.#used));
  }

  bytes(i: number, b: Uint8Array): void {
    this.#room(b.byteLength);
    this.#buf.set(b, this.#used);
    this.#entry(i, Kind.BINARY, b.byteLength);
  }

  none(i: number): void {
    this.#entry(i, Kind.NONE, 0);
  }

  reply(i: number, reply: HandlerReply): void {
    if (reply === undefined || reply === null) this.none(i);
    else if (typeof reply === 'string') this.text(i, reply);
    else if (reply instanceof Uint8Array) this.bytes(i, reply);
    else {
      this.text(
        i,
        `handler returned ${typeof reply}; expected string, Uint8Array or nothing`,
        Kind.ERROR,
      );
    }
  }

  failure(i: number, err: unknown): void {
    this.text(i, err instanceof Error ? err.message : String(err), Kind.ERROR);
  }

  /** The results, ready to be moved: a view from offset 0 of its own buffer. */
  finish(): Uint8Array {
    return new Uint8Array(this.#buf.buffer, 0, this.#used);
  }
}

function isPromise(r: unknown): r is Promise<HandlerReply> {
  return r !== null && typeof r === 'object' && typeof (r as Promise<unknown>).then === 'function';
}

type Outcome = { ok: true; reply: HandlerReply } | { ok: false; err: unknown };

/**
 * Answers one batch. Handlers run in message order and async ones overlap; a batch whose
 * replies are all synchronous never waits on a promise. Payloads must leave in message
 * order: from the first async reply on, results are kept and written once all have settled.
 */
export default async function run(task: Task): Promise<unknown> {
  const { batch, slot } = task;
  const head = header(batch);
  const count = head[0]!;
  const input = Buffer.from(batch.buffer, batch.byteOffset, batch.byteLength);
  const out = new ResultWriter(count, batch.byteLength - headerBytes(count));
  let deferred: Array<Outcome | Promise<Outcome>> | undefined;
  let from = 0;
  let at = headerBytes(count);
  for (let i = 0; i < count; i++) {
    const kind = head[1 + 2 * i];
    const end = at + head[2 + 2 * i]!;
    // Binary messages get a copy of their own, as if the message had been cloned.
    const message =
      kind === Kind.TEXT
        ? input.toString('utf8', at, end)
        : new Uint8Array(input.subarray(at, end));
    at = end;
    progress[slot] = Date.now();
    try {
      const r = handler({ data: message, isBinary: kind !== Kind.TEXT });
      if (isPromise(r)) {
        if (!deferred) {
          deferred = [];
          from = i;
        }
        deferred.push(
          r.then(
            (reply): Outcome => {
              progress[slot] = Date.now();
              return { ok: true, reply };
            },
            (err: unknown): Outcome => {
              progress[slot] = Date.now();
              return { ok: false, err };
            },
          ),
        );
      } else if (deferred) deferred.push({ ok: true, reply: r });
      else out.reply(i, r);
    } catch (err) {
      if (deferred) deferred.push({ ok: false, err });
      else out.failure(i, err);
    }
  }
  if (deferred) {
    const settled = await Promise.all(deferred);
    for (let k = 0; k < settled.length; k++) {
      const o = settled[k]!;
      if (o.ok) out.reply(from + k, o.reply);
      else out.failure(from + k, o.err);
    }
  }
  return Piscina.move(out.finish());
}
