/**
 * Runs inside a piscina thread: loads the handler module once, then answers batches of
 * messages (formats in ./batch.ts). Each message becomes a string (text) or a Uint8Array
 * (binary) for the handler; the results go back in one buffer, moved to the main thread, in
 * the positions of their messages: a reply (text or binary), none, or an error, each with the
 * time its handler call took.
 *
 * Claims: the thread claims each message in the batch's claim counter before running it; a
 * message the main thread took back in the meantime is not run (see ./pool.ts).
 *
 * Progress: before each handler call, and when an async reply settles, the thread writes the
 * time into its task's slot of the shared `progress` array; the main thread's watchdog aborts
 * a task that made no progress for `--task-timeout` and takes back the messages of a task
 * whose current call runs long (see ./pool.ts).
 */
import { workerData } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { Handler, HandlerReply, HandlerResult } from '../handler.js';
import { makeEcho } from '../handlers/echo.js';
import { payloadField } from '../wire.js';
import {
  ASYNC_CALL,
  claimCounter,
  Kind,
  messagesHeader,
  messagesHeaderBytes,
  publishedCounter,
  resultsHeaderBytes,
} from './batch.js';

/**
 * What the main thread sends: its slot's message and result buffers, and the slot, which is
 * also the task's place in the progress array.
 */
export interface Task {
  input: SharedArrayBuffer;
  output: SharedArrayBuffer;
  slot: number;
  /**
   * With a handler that is told where messages come from: each distinct connection of the
   * batch as JSON `{"id":..., "context":...}`, and for each message its index in that list
   * (0xffff: none).
   */
  conns?: string[];
  who?: Uint16Array;
  /**
   * Start-up only, instead of messages: Int32 [arrived, expected]. The thread arrives and
   * waits (up to BARRIER_MS) until every thread has, so each start-up task takes a thread of
   * its own and all of them have loaded the handler.
   */
  barrier?: SharedArrayBuffer;
}

/** Longest wait at the start-up barrier, in ms. */
const BARRIER_MS = 10_000;

function meet(barrier: SharedArrayBuffer): void {
  const b = new Int32Array(barrier);
  Atomics.add(b, 0, 1);
  Atomics.notify(b, 0);
  const end = performance.now() + BARRIER_MS;
  for (let seen = Atomics.load(b, 0); seen < b[1]!; seen = Atomics.load(b, 0)) {
    const left = end - performance.now();
    if (left <= 0) return;
    Atomics.wait(b, 0, seen, left);
  }
}

interface PoolWorkerData {
  handler?: string;
  /** One Float64 per task slot: epoch ms of the task's last progress. */
  progress?: SharedArrayBuffer;
  /** Longest `work` of the built-in handler, in ms. */
  maxWork?: number;
}

async function loadHandler(
  spec: string | undefined,
  maxWork: number | undefined,
): Promise<Handler> {
  if (!spec) return makeEcho(maxWork);
  const mod = (await import(spec)) as { default?: unknown; handler?: unknown };
  const fn = typeof mod.default === 'function' ? mod.default : mod.handler;
  if (typeof fn !== 'function') {
    throw new Error(`handler module ${spec} exports no function (default export or "handler")`);
  }
  return fn as Handler;
}

const data = (workerData ?? {}) as PoolWorkerData;
/**
 * A handler that cannot be loaded fails the start-up task, not this module: a thread whose
 * module throws is replaced by piscina, its replacement fails the same way, and so on; a
 * thread stopped while evaluating its modules (the process exiting on the error) made V8
 * abort (SIGTRAP) instead of the exit code 1, about once in 200 starts on a busy machine.
 */
let loadError: unknown;
const handler = await loadHandler(data.handler, data.maxWork).catch((err: unknown): Handler => {
  loadError = err;
  return () => {
    throw err;
  };
});
const progress = data.progress ? new Float64Array(data.progress) : new Float64Array(1);

/** Handler time as stored in a result entry: µs, within 31 bits. */
function micros(ms: number): number {
  return Math.min(0x7fff_ffff, Math.max(0, Math.round(ms * 1000)));
}

/**
 * Writes the results of one batch: into the slot's shared result buffer, publishing each
 * entry as it is complete, or, once they outgrow it, into a growing buffer of its own.
 */
class ResultWriter {
  #buf: Buffer;
  #head: Uint32Array;
  #published: Int32Array | undefined;
  #used: number;

  constructor(output: SharedArrayBuffer, count: number, payloadHint: number) {
    const start = resultsHeaderBytes(count);
    if (output.byteLength >= start) {
      this.#buf = Buffer.from(output);
      this.#published = publishedCounter(output);
    } else {
      this.#buf = Buffer.from(new ArrayBuffer(start + payloadHint + 64));
    }
    this.#head = new Uint32Array(this.#buf.buffer, 0, 2 + 3 * count);
    this.#head[1] = count;
    this.#used = start;
  }

  #room(bytes: number): void {
    if (this.#used + bytes <= this.#buf.length) return;
    const grown = Buffer.from(new ArrayBuffer(Math.max(2 * this.#buf.length, this.#used + bytes)));
    this.#buf.copy(grown, 0, 0, this.#used);
    this.#buf = grown;
    this.#head = new Uint32Array(grown.buffer, 0, this.#head.length);
    // The main thread keeps what was published; the rest comes with the answer.
    this.#published = undefined;
  }

  #entry(i: number, kind: Kind, bytes: number): void {
    this.#head[2 + 3 * i] = kind;
    this.#head[3 + 3 * i] = bytes;
    this.#used += bytes;
  }

  /** Records how long entry i's handler call took, in ms, and whether its reply was a promise. */
  time(i: number, ms: number, async = false): void {
    this.#head[4 + 3 * i] = (micros(ms) | (async ? ASYNC_CALL : 0)) >>> 0;
  }

  /** Entries 0 to i are complete: the main thread may read them now. */
  publish(i: number): void {
    if (this.#published) Atomics.store(this.#published, 0, i + 1);
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
    else if (typeof reply === 'object' && ('reply' in reply || 'publish' in reply)) {
      this.text(i, composite(reply), Kind.COMPOSITE);
    } else {
      this.text(
        i,
        `handler returned ${typeof reply}; expected a string, a Uint8Array, { reply, publish } or nothing`,
        Kind.ERROR,
      );
    }
  }

  failure(i: number, err: unknown): void {
    this.text(i, err instanceof Error ? err.message : String(err), Kind.ERROR);
  }

  /**
   * The results, ready to be moved: a view from offset 0 of a buffer of their own. Results in
   * the shared buffer are copied out here, on this thread, not on the busier main thread.
   */
  finish(): Uint8Array {
    if (!(this.#buf.buffer instanceof SharedArrayBuffer)) {
      return new Uint8Array(this.#buf.buffer, 0, this.#used);
    }
    const own = new Uint8Array(new ArrayBuffer(this.#used));
    own.set(this.#buf.subarray(0, this.#used));
    return own;
  }
}

/** `{ reply, publish }` as JSON, bytes as base64 (the main thread checks the rest). */
function composite(r: HandlerResult): string {
  const publish = Array.isArray(r.publish)
    ? r.publish.map((p) => ({ topic: p?.topic, ...payloadField(p?.data) }))
    : undefined;
  const reply =
    r.reply === undefined || r.reply === null
      ? {}
      : r.reply instanceof Uint8Array
        ? { b64: payloadField(r.reply).b64 }
        : { data: String(r.reply) };
  return JSON.stringify({ ...reply, publish });
}

function isPromise(r: unknown): r is Promise<HandlerReply> {
  return r !== null && typeof r === 'object' && typeof (r as Promise<unknown>).then === 'function';
}

type Outcome =
  | { ok: true; reply: HandlerReply; ms: number; async: boolean }
  | { ok: false; err: unknown; ms: number; async: boolean };

/** An async reply settled: records progress and the call's time, from `start`. */
function settledAt(o: Outcome, slot: number, start: number): Outcome {
  const now = performance.now();
  progress[slot] = performance.timeOrigin + now;
  o.ms = now - start;
  return o;
}

/**
 * Answers one batch. Handlers run in message order and async ones overlap; a batch whose
 * replies are all synchronous never waits on a promise. Payloads must leave in message
 * order: from the first async reply on, results are kept and written once all have settled.
 * The batch ends early when the main thread has taken back the messages not started yet.
 */
export default async function run(task: Task): Promise<unknown> {
  if (task.barrier) {
    meet(task.barrier);
    if (loadError !== undefined) throw loadError;
    return undefined;
  }
  const { input, output, slot } = task;
  const conns = task.conns?.map((c) => JSON.parse(c) as { id: string; context: unknown });
  const head = messagesHeader(input);
  const claimed = claimCounter(input);
  const count = head[1]!;
  const bytes = Buffer.from(input);
  let at = messagesHeaderBytes(count);
  const out = new ResultWriter(output, count, input.byteLength - at);
  let deferred: Array<Outcome | Promise<Outcome>> | undefined;
  let from = 0;
  // One clock read per call: the end of one call is the start of the next. Progress is in
  // epoch ms, as the main thread's Date.now().
  const origin = performance.timeOrigin;
  let t = performance.now();
  for (let i = 0; i < count; i++) {
    // Taken back by the main thread: this message and the rest run elsewhere.
    if (Atomics.add(claimed, 0, 1) !== i) break;
    const start = t;
    progress[slot] = origin + start;
    const kind = head[2 + 2 * i];
    const end = at + head[3 + 2 * i]!;
    // Binary messages get a copy of their own (not shared memory), as if cloned.
    const message =
      kind === Kind.TEXT
        ? bytes.toString('utf8', at, end)
        : new Uint8Array(bytes.subarray(at, end));
    at = end;
    try {
      const r = handler({
        data: message,
        isBinary: kind !== Kind.TEXT,
        conn: conns ? conns[task.who![i]!] : undefined,
      });
      t = performance.now();
      if (isPromise(r)) {
        if (!deferred) {
          deferred = [];
          from = i;
        }
        deferred.push(
          r.then(
            (reply): Outcome => settledAt({ ok: true, reply, ms: 0, async: true }, slot, start),
            (err: unknown): Outcome =>
              settledAt({ ok: false, err, ms: 0, async: true }, slot, start),
          ),
        );
      } else if (deferred) deferred.push({ ok: true, reply: r, ms: t - start, async: false });
      else {
        out.time(i, t - start);
        out.reply(i, r);
        out.publish(i);
      }
    } catch (err) {
      t = performance.now();
      if (deferred) deferred.push({ ok: false, err, ms: t - start, async: false });
      else {
        out.time(i, t - start);
        out.failure(i, err);
        out.publish(i);
      }
    }
  }
  if (deferred) {
    const settled = await Promise.all(deferred);
    for (let k = 0; k < settled.length; k++) {
      const o = settled[k]!;
      out.time(from + k, o.ms, o.async);
      if (o.ok) out.reply(from + k, o.reply);
      else out.failure(from + k, o.err);
    }
  }
  return Piscina.move(out.finish());
}
