/**
 * The handler pool of one worker: a piscina thread pool fed in batches.
 *
 * Messages are copied, as they arrive, into one queue buffer (their bytes back to back) and
 * handed to the threads as batches in the format of ./batch.ts: one buffer moved to the
 * thread per task, one buffer moved back with the results. Each thread runs at most one task
 * at a time; what arrives meanwhile waits in the queue and leaves as the next batch, so the
 * busier the pool, the larger its batches and the fewer its thread hops. The queue is
 * flushed once per event-loop turn (setImmediate) and whenever a thread comes back, split so
 * every free thread gets a share.
 *
 * Timeouts: one watchdog timer for the whole pool. A pool thread records progress (before
 * each handler call, when an async reply settles) in shared memory; a task that made none
 * for `taskTimeout` is aborted (piscina replaces the thread) and each of its messages
 * resolves to an error; a thread that crashes does the same. The pool never throws into the
 * server.
 *
 * Backpressure: `pending` counts messages queued or running, `pendingBytes` their bytes.
 * When either reaches its high-water mark (`highWater`, `highWaterBytes`) the pool reports
 * pressure (the server stops reading from the sockets that feed it); when both are back at
 * half, it reports relief. Counting bytes too lets many small messages queue (throughput)
 * while a few large ones still stop the readers (memory).
 */
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { HandlerLoadError } from '../errors.js';
import { header, headerBytes, Kind } from './batch.js';
import type { Task } from './pool-worker.js';

export { Kind };

/**
 * Receives the result of one message: a reply (`TEXT` or `BINARY`, `data` its bytes), no
 * reply (`NONE`, `data` null) or a failure (`ERROR`, `data` the message).
 */
export type ResultHandler<T> = (ticket: T, kind: Kind, data: Buffer | string | null) => void;

/** Options of {@link MessagePool}. */
export interface PoolOptions<T> {
  /** Threads in the pool. */
  threads: number;
  /** Handler module specifier as given on the command line; undefined = built-in echo. */
  handler: string | undefined;
  /** Abort a task that made no progress (no handler call started or settled) for this long, in ms. */
  taskTimeout: number;
  /** Called once with each message's result. */
  onResult: ResultHandler<T>;
  /**
   * Most messages in one task: a task that hangs or whose thread dies takes its messages
   * (their connections get 1011) with it; what queues behind it on that thread waits as long
   * anyway. Larger tasks mean fewer thread wake-ups when the queue is deep. @default 256
   */
  maxBatch?: number;
  /** Pending messages at which pressure starts. @default 4096 */
  highWater?: number;
  /** Pending message bytes at which pressure starts. @default 16 MiB */
  highWaterBytes?: number;
  /** Called with true when pressure starts and false when it ends. */
  onPressure?: (on: boolean) => void;
}

/** One running task. */
interface Running<T> {
  tickets: T[];
  /** Message bytes of the task. */
  bytes: number;
  /** Epoch ms at dispatch. */
  start: number;
  timedOut: boolean;
}

/**
 * Replies of a result batch up to this size are views of it; in a larger one, a reply
 * smaller than half of it is copied, so a reply held in a slow socket's buffer does not keep
 * a large batch (other connections' replies) alive.
 */
const VIEW_LIMIT = 64 * 1024;

/** Queue buffer kept for reuse once the queue is empty; a larger one is dropped. */
const QUEUE_BYTES_KEPT = 1024 * 1024;

const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const workerFile = fileURLToPath(new URL(`./pool-worker${ext}`, import.meta.url));

/** Resolves a `--handler` value: paths become file URLs, bare names stay package names. */
export function resolveHandlerSpec(
  spec: string | undefined,
  cwd = process.cwd(),
): string | undefined {
  if (!spec) return undefined;
  if (/^(file|data|node):/.test(spec)) return spec;
  if (spec.startsWith('.') || spec.startsWith('/')) {
    return new URL(spec, `file://${cwd.endsWith('/') ? cwd : `${cwd}/`}`).href;
  }
  return spec;
}

/** A piscina pool fed with batches of messages; `T` identifies a message to its owner. */
export class MessagePool<T> {
  readonly #piscina: Piscina;
  readonly #threads: number;
  readonly #taskTimeout: number;
  readonly #maxBatch: number;
  readonly #highWater: number;
  readonly #highWaterBytes: number;
  readonly #handler: string | undefined;
  readonly #onResult: ResultHandler<T>;
  readonly #onPressure: ((on: boolean) => void) | undefined;
  /** Queued messages: owners, `byteLength * 2 + isBinary`, bytes back to back from #qHead. */
  #tickets: T[] = [];
  #meta: number[] = [];
  #qHead = 0;
  #bytes = Buffer.alloc(0);
  #bytesHead = 0;
  #bytesUsed = 0;
  /** Running tasks by progress slot (at most one per thread). */
  readonly #running: Array<Running<T> | undefined>;
  /**
   * Per slot, the abort signal piscina gets with the slot's tasks: an EventEmitter (piscina
   * takes one) reused from task to task, replaced once it has fired. Cheaper than an
   * AbortController per task, and a task with a signal has its thread to itself.
   */
  readonly #aborts: EventEmitter[];
  #runningCount = 0;
  readonly #progress: Float64Array;
  #watchdog: NodeJS.Timeout | undefined;
  #scheduled = false;
  #pending = 0;
  #pendingBytes = 0;
  #pressure = false;
  #closed = false;

  constructor(opts: PoolOptions<T>) {
    this.#threads = Math.max(1, opts.threads);
    this.#taskTimeout = opts.taskTimeout;
    this.#maxBatch = Math.max(1, opts.maxBatch ?? 256);
    this.#highWater = opts.highWater ?? 4096;
    this.#highWaterBytes = opts.highWaterBytes ?? 16 * 1024 * 1024;
    this.#handler = opts.handler;
    this.#onResult = opts.onResult;
    this.#onPressure = opts.onPressure;
    this.#running = new Array(this.#threads).fill(undefined);
    this.#aborts = Array.from({ length: this.#threads }, () => new EventEmitter());
    const progress = new SharedArrayBuffer(8 * this.#threads);
    this.#progress = new Float64Array(progress);
    this.#piscina = new Piscina({
      filename: workerFile,
      minThreads: this.#threads,
      maxThreads: this.#threads,
      idleTimeout: Number.MAX_SAFE_INTEGER,
      workerData: { handler: resolveHandlerSpec(opts.handler), progress },
      // Run handler threads with the same loaders (tsx in development) as this thread.
      execArgv: process.execArgv,
    });
    // A thread that fails outside a task is replaced by piscina; keep the process alive.
    this.#piscina.on('error', () => {});
  }

  /** Loads the handler in a thread; rejects with HandlerLoadError when it cannot. */
  async ready(): Promise<void> {
    const batch = new Uint8Array(new ArrayBuffer(headerBytes(0)));
    const task: Task = { batch, slot: 0 };
    try {
      await this.#piscina.run(task, { transferList: [batch.buffer] });
    } catch (err) {
      throw new HandlerLoadError(
        `cannot load handler ${this.#handler ?? '(built-in echo)'}: ${(err as Error).message}`,
      );
    }
  }

  /** Messages queued or running. */
  get pending(): number {
    return this.#pending;
  }

  /** Whether the pool is past its high-water mark. */
  get pressure(): boolean {
    return this.#pressure;
  }

  /**
   * Queues one message (its bytes are copied: `data` may be reused once this returns);
   * `onResult` gets `ticket` and its result exactly once, synchronously if the pool is closed.
   */
  submit(data: Uint8Array, isBinary: boolean, ticket: T): void {
    if (this.#closed) {
      this.#onResult(ticket, Kind.ERROR, 'pool closed');
      return;
    }
    const n = data.byteLength;
    if (this.#bytesUsed + n > this.#bytes.length) this.#grow(n);
    this.#bytes.set(data, this.#bytesUsed);
    this.#bytesUsed += n;
    this.#tickets.push(ticket);
    this.#meta.push(n * 2 + (isBinary ? 1 : 0));
    this.#pending++;
    this.#pendingBytes += n;
    if (
      !this.#pressure &&
      (this.#pending >= this.#highWater || this.#pendingBytes >= this.#highWaterBytes)
    ) {
      this.#pressure = true;
      this.#onPressure?.(true);
    }
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
  }

  /** Makes room for `n` more queued bytes, dropping the bytes already sent. */
  #grow(n: number): void {
    const live = this.#bytesUsed - this.#bytesHead;
    const size = Math.max(64 * 1024, 2 * (live + n));
    const next = size <= this.#bytes.length ? this.#bytes : Buffer.allocUnsafeSlow(size);
    this.#bytes.copy(next, 0, this.#bytesHead, this.#bytesUsed);
    this.#bytes = next;
    this.#bytesHead = 0;
    this.#bytesUsed = live;
  }

  #flush = (): void => {
    this.#scheduled = false;
    this.#dispatch();
  };

  /** Hands the queue to the free threads, an even share each (at most `maxBatch`). */
  #dispatch(): void {
    while (this.#runningCount < this.#threads && this.#qHead < this.#tickets.length) {
      const queued = this.#tickets.length - this.#qHead;
      const free = this.#threads - this.#runningCount;
      this.#runBatch(Math.min(this.#maxBatch, Math.ceil(queued / free)));
    }
    if (this.#qHead === this.#tickets.length) {
      this.#tickets = [];
      this.#meta = [];
      this.#qHead = 0;
      this.#bytesHead = 0;
      this.#bytesUsed = 0;
      // Do not keep a buffer that one burst of large messages grew.
      if (this.#bytes.length > QUEUE_BYTES_KEPT) this.#bytes = Buffer.alloc(0);
    } else if (this.#qHead > 4096) {
      this.#tickets = this.#tickets.slice(this.#qHead);
      this.#meta = this.#meta.slice(this.#qHead);
      this.#qHead = 0;
    }
  }

  /** Moves the first `count` queued messages to a free thread as one task. */
  #runBatch(count: number): void {
    const from = this.#qHead;
    this.#qHead += count;
    const tickets = this.#tickets.slice(from, from + count);
    let bytes = 0;
    for (let i = from; i < from + count; i++) bytes += Math.floor(this.#meta[i]! / 2);
    const start = headerBytes(count);
    const batch = new Uint8Array(new ArrayBuffer(start + bytes));
    const head = new Uint32Array(batch.buffer, 0, 1 + 2 * count);
    head[0] = count;
    for (let i = 0; i < count; i++) {
      const m = this.#meta[from + i]!;
      head[1 + 2 * i] = m % 2 === 1 ? Kind.BINARY : Kind.TEXT;
      head[2 + 2 * i] = Math.floor(m / 2);
    }
    batch.set(this.#bytes.subarray(this.#bytesHead, this.#bytesHead + bytes), start);
    this.#bytesHead += bytes;

    const slot = this.#running.indexOf(undefined);
    const task: Running<T> = { tickets, bytes, start: Date.now(), timedOut: false };
    this.#running[slot] = task;
    this.#runningCount++;
    this.#watch();
    const payload: Task = { batch, slot };
    this.#piscina.run(payload, { signal: this.#aborts[slot]!, transferList: [batch.buffer] }).then(
      (results: Uint8Array) => this.#settle(slot, task, results, undefined),
      (err: unknown) => this.#settle(slot, task, undefined, err),
    );
  }

  #settle(slot: number, task: Running<T>, results: Uint8Array | undefined, err: unknown): void {
    this.#running[slot] = undefined;
    this.#runningCount--;
    // The thread is free: give it what queued meanwhile before answering this batch.
    if (!this.#closed) this.#dispatch();
    const { tickets } = task;
    this.#pending -= tickets.length;
    this.#pendingBytes -= task.bytes;
    if (results) this.#deliver(tickets, results);
    else {
      const why = task.timedOut
        ? `handler made no progress for ${this.#taskTimeout} ms`
        : `handler thread failed: ${(err as Error | undefined)?.message ?? 'unknown error'}`;
      for (const t of tickets) this.#onResult(t, Kind.ERROR, why);
    }
    if (
      this.#pressure &&
      this.#pending <= this.#highWater / 2 &&
      this.#pendingBytes <= this.#highWaterBytes / 2
    ) {
      this.#pressure = false;
      this.#onPressure?.(false);
    }
  }

  /** Hands each result of a batch to its owner. */
  #deliver(tickets: T[], results: Uint8Array): void {
    const head = header(results);
    const ab = results.buffer as ArrayBuffer;
    const big = results.byteLength > VIEW_LIMIT;
    let at = results.byteOffset + headerBytes(head[0]!);
    for (let i = 0; i < tickets.length; i++) {
      const kind = (head[1 + 2 * i] ?? Kind.ERROR) as Kind;
      const len = head[2 + 2 * i] ?? 0;
      const ticket = tickets[i]!;
      if (kind === Kind.TEXT || kind === Kind.BINARY) {
        const view = Buffer.from(ab, at, len);
        this.#onResult(
          ticket,
          kind,
          big && 2 * len < results.byteLength ? Buffer.from(view) : view,
        );
      } else if (kind === Kind.ERROR) {
        this.#onResult(ticket, kind, Buffer.from(ab, at, len).toString('utf8'));
      } else {
        this.#onResult(ticket, Kind.NONE, null);
      }
      at += len;
    }
  }

  /** Runs the watchdog while tasks run; it stops itself once none does. */
  #watch(): void {
    if (this.#watchdog) return;
    const every = Math.min(1000, Math.max(5, Math.floor(this.#taskTimeout / 8)));
    this.#watchdog = setInterval(() => this.#check(), every);
    this.#watchdog.unref();
  }

  /** Aborts the tasks that made no progress for `taskTimeout`. */
  #check(): void {
    if (this.#runningCount === 0) {
      clearInterval(this.#watchdog);
      this.#watchdog = undefined;
      return;
    }
    const now = Date.now();
    for (let slot = 0; slot < this.#running.length; slot++) {
      const task = this.#running[slot];
      if (!task || task.timedOut) continue;
      // A mark older than the dispatch was left by the slot's previous task.
      const last = Math.max(task.start, this.#progress[slot]!);
      if (now - last >= this.#taskTimeout) {
        task.timedOut = true;
        const fired = this.#aborts[slot]!;
        this.#aborts[slot] = new EventEmitter();
        fired.emit('abort');
      }
    }
  }

  /** Stops the threads now; queued and running messages resolve to errors. */
  async destroy(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#watchdog);
    this.#watchdog = undefined;
    const queued = this.#tickets.slice(this.#qHead);
    this.#tickets = [];
    this.#meta = [];
    this.#qHead = 0;
    for (const t of queued) {
      this.#pending--;
      this.#onResult(t, Kind.ERROR, 'pool closed');
    }
    await this.#piscina.destroy();
  }
}
