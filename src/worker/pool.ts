/**
 * The handler pool of one worker: a piscina thread pool fed in batches, scheduled fairly
 * across the owners of the messages (their connections).
 *
 * Queue. Messages are copied, as they arrive, into one queue buffer (their bytes back to
 * back); each owner keeps the list of its queued messages, in order. Messages leave in any
 * order; when the buffer is full, the span from the oldest queued message on moves to the
 * front in one copy. Owners with queued messages wait in one of two round-robin queues,
 * light and heavy (below). The queue is flushed once per event-loop turn (setImmediate) and
 * whenever a thread comes back.
 *
 * Tasks. Each thread runs at most one task at a time: a batch in the format of ./batch.ts,
 * written into the shared message buffer of the task's slot (one slot per thread, its
 * buffers reused); the thread writes the results into the slot's shared result buffer and
 * moves them back in a buffer of their own. At most one running task holds the messages of a
 * given owner: what the owner sends meanwhile waits for that task, so one connection can
 * never hold more than one thread, and its messages start in order. A light task takes owners
 * round robin, a bounded share of messages from each (at least `ownerShare`, more when few
 * owners wait), so a deep queue does not crowd out the others; what arrives while the threads
 * are busy leaves as the next batch, so the busier the pool, the larger its batches and the
 * fewer its thread hops. Every task also stops at about `heavyMs` of estimated handler time
 * (each message counted at its owner's recent time per call, see ./owners.ts; at least one
 * message), so a thread comes back to the queue that often and the owners waiting take turns.
 *
 * Heavy owners. The thread measures each handler call (until its reply, for async handlers)
 * and returns the times with the results. An owner is heavy when one recent call took
 * `heavyMs` or more (a decaying maximum), or when its synchronous calls take `heavyAvgMs` or
 * more on average (a moving average: calls of a few ms each fill the threads as surely; an
 * async call's wait for its reply counts only toward `heavyMs`, the waits of a task overlap):
 * its messages run in tasks of their own, and with two or more threads such tasks hold at
 * most `threads - 1` of them, so the last thread stays a lane for the others (with one thread,
 * heavy and light tasks take turns). A light message thus waits for the light tasks before
 * it, each of them about `heavyMs` of work at most, not for heavy owners' backlog. An owner
 * that waits long for the heavy lane is judged afresh (see #promote): one stretched call
 * does not keep a cheap owner behind another one's call of seconds.
 *
 * Long calls. A task whose current call has run for `heavyMs` counts as heavy, and neither
 * the results it has computed nor the messages it has not started wait for that call:
 * - the thread publishes each result in the slot's result buffer as it is complete
 *   (Atomics.store of a counter); the main thread copies those out and delivers them now;
 * - before each call the thread claims its message in the batch's claim counter
 *   (Atomics.add); the main thread takes the unclaimed rest with Atomics.exchange, queues them
 *   again (their bytes are still in the slot's buffer) in front of their owners' later
 *   messages, releases the task's other owners, and ignores those entries of the task's
 *   results. The owner of the long call becomes heavy.
 * Cheap messages therefore wait behind a heavy one for `heavyMs` at most, once per owner not
 * yet known to be heavy. A call that already runs is never moved.
 *
 * Timeouts: one watchdog timer for the whole pool, which also looks for long calls. A pool
 * thread records progress (before each handler call, when an async reply settles) in shared
 * memory; a task that made none for `taskTimeout` is aborted (piscina replaces the thread).
 * When a task fails so (or its thread crashes), its completed results are delivered, the
 * messages it had not claimed are queued again (they never ran: they run once, on another
 * thread), and only the claimed ones resolve to an error. The slot of a failed task gets new
 * buffers, so a thread still dying can claim nothing more. The pool never throws into the server.
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
import { resolveModule } from '../app/load.js';
import { HandlerLoadError } from '../errors.js';
import {
  ASYNC_CALL,
  claimCounter,
  Kind,
  messagesHeaderBytes,
  publishedCounter,
  resultsHeader,
  resultsHeaderBytes,
} from './batch.js';
import { affordable, newOwner, type Owner, OwnerQueue, recordCall } from './owners.js';
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
   * The owner of a message (its connection), an opaque object. The messages of one owner are
   * started in the order they were submitted, and at most one running task holds them.
   * Without it, every message is an owner of its own.
   */
  ownerOf?: (ticket: T) => object;
  /**
   * Where a message comes from, for the handler (`message.conn`): JSON of its connection's id
   * and context, or undefined. Without it handlers are not told (the built-in echo).
   */
  describe?: (ticket: T) => string | undefined;
  /**
   * A handler call this long (until its reply) makes its owner heavy, a task whose current
   * call has run this long gives back the messages it has not started, and a task holds at
   * most about this much estimated handler time, in ms. @default 10
   */
  heavyMs?: number;
  /**
   * Synchronous handler calls this long on average (a moving average) make their owner heavy,
   * in ms. @default 2
   */
  heavyAvgMs?: number;
  /**
   * Messages one owner puts in a light task while others wait too; when few owners wait,
   * each may put up to `maxBatch` / their number. @default 32
   */
  ownerShare?: number;
  /** Longest `work` of the built-in handler, in ms (see ../handlers/echo.ts). @default 100 */
  maxWork?: number;
  /**
   * Most messages in one task: a task that hangs or whose thread dies takes its messages
   * (their connections get 1011) with it. Larger tasks mean fewer thread wake-ups when the
   * queue is deep. @default 256
   */
  maxBatch?: number;
  /** Pending messages at which pressure starts. @default 4096 */
  highWater?: number;
  /** Pending message bytes at which pressure starts. @default 16 MiB */
  highWaterBytes?: number;
  /** Called with true when pressure starts and false when it ends. */
  onPressure?: (on: boolean) => void;
}

/** An owner waits this many of its estimated calls for the heavy lane before it is judged afresh... */
const PROMOTE_WAITS = 50;
/** ...and this many times heavyMs at least (1 s by default). */
const PROMOTE_HEAVY_MS = 100;

/** Defaults of the optional {@link PoolOptions}. */
export const kPoolDefaults = {
  heavyMs: 10,
  heavyAvgMs: 2,
  ownerShare: 32,
  maxBatch: 256,
  highWater: 4096,
  highWaterBytes: 16 * 1024 * 1024,
} as const;

/** The shared buffers of a slot, and the main thread's views of them. */
interface SlotBuffers {
  input: SharedArrayBuffer;
  inputBytes: Buffer;
  inputWords: Uint32Array;
  claims: Int32Array;
  output: SharedArrayBuffer;
  published: Int32Array;
}

function slotBuffers(inputSize: number, outputSize: number): SlotBuffers {
  const round = (n: number): number => Math.ceil(Math.max(MIN_BUFFER, n) / 8) * 8;
  const input = new SharedArrayBuffer(round(inputSize));
  const output = new SharedArrayBuffer(round(outputSize));
  return {
    input,
    inputBytes: Buffer.from(input),
    inputWords: new Uint32Array(input),
    claims: claimCounter(input),
    output,
    published: publishedCounter(output),
  };
}

/** One running task. */
interface Running<T> {
  slot: number;
  /** The slot's buffers when the task started. */
  buffers: SlotBuffers;
  /** Messages in the batch. */
  count: number;
  /** Messages still this task's, from the first: those after were given back. */
  live: number;
  /** Results delivered already (published while a long call ran), from the first. */
  delivered: number;
  /** Offset in the results of the payload of the first result not delivered. */
  resultAt: number;
  tickets: T[];
  /** Owner of each message. */
  owners: Owner<T>[];
  /** The distinct owners the task holds (or held, before it gave them back). */
  held: Owner<T>[];
  /** Message bytes of the live messages. */
  bytes: number;
  /** Epoch ms at dispatch. */
  start: number;
  timedOut: boolean;
  /** Counted against the heavy threads: a heavy owner's task, or one whose call ran long. */
  heavy: boolean;
}

/**
 * Replies of a result batch up to this size are views of it; in a larger one, a reply
 * smaller than half of it is copied, so a reply held in a slow socket's buffer does not keep
 * a large batch (other connections' replies) alive.
 */
const VIEW_LIMIT = 64 * 1024;

/** Queue buffer kept for reuse once the queue is empty; a larger one is dropped. */
const QUEUE_BYTES_KEPT = 1024 * 1024;

/** Smallest queue buffer and slot buffer; slot buffers larger than QUEUE_BYTES_KEPT are not kept. */
const MIN_BUFFER = 64 * 1024;

const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const workerFile = fileURLToPath(new URL(`./pool-worker${ext}`, import.meta.url));

/** Resolves a `--handler` value: paths become file URLs, bare names stay package names. */
export function resolveHandlerSpec(
  spec: string | undefined,
  cwd = process.cwd(),
): string | undefined {
  if (!spec) return undefined;
  try {
    // A path from `cwd`, or a package of the app's own node_modules (not wsdrain's).
    return resolveModule(spec, cwd);
  } catch {
    // Not found there: let the thread's import say what is missing.
    return spec;
  }
}

/**
 * The node options of this process that a worker thread accepts: module loaders and the like
 * (tsx in development), so handler threads load code as this thread does. V8 flags and
 * process-wide options (`--expose-gc`, `--max-old-space-size`, `--cpu-prof`, ...) stay with the
 * process: Node refuses them for threads (ERR_WORKER_INVALID_EXEC_ARGV).
 */
export function threadExecArgv(argv: readonly string[]): string[] {
  const withValue = /^(--import|--require|-r|--loader|--experimental-loader|--conditions|-C)$/;
  const alone =
    /^(--import|--require|--loader|--experimental-loader|--conditions)=|^--(enable-source-maps|no-warnings|no-deprecation|experimental-[\w-]+)$/;
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (withValue.test(a) && i + 1 < argv.length) out.push(a, argv[++i]!);
    else if (alone.test(a)) out.push(a);
  }
  return out;
}

/** Copies `len` bytes; a loop beats a native call for the small messages that dominate. */
function copyBytes(src: Buffer, from: number, dst: Buffer, to: number, len: number): void {
  if (len > 64) src.copy(dst, to, from, from + len);
  else for (let k = 0; k < len; k++) dst[to + k] = src[from + k]!;
}

/** A piscina pool fed with batches of messages; `T` identifies a message to its owner. */
export class MessagePool<T> {
  readonly #piscina: Piscina;
  readonly #threads: number;
  readonly #heavyThreads: number;
  readonly #taskTimeout: number;
  readonly #heavyMs: number;
  readonly #heavyAvgMs: number;
  readonly #ownerShare: number;
  readonly #maxBatch: number;
  readonly #highWater: number;
  readonly #highWaterBytes: number;
  readonly #handler: string | undefined;
  readonly #onResult: ResultHandler<T>;
  readonly #onPressure: ((on: boolean) => void) | undefined;
  readonly #ownerOf: ((ticket: T) => object) | undefined;
  readonly #describe: ((ticket: T) => string | undefined) | undefined;
  readonly #owners = new WeakMap<object, Owner<T>>();
  /** The owner of the last submitted message (messages come in bursts per connection). */
  #lastKey: object | undefined;
  #lastOwner: Owner<T> | undefined;
  /** Owners with queued messages that no task holds, round robin. */
  readonly #light = new OwnerQueue<T>();
  readonly #heavy = new OwnerQueue<T>();
  /** The last task started was heavy (with both kinds waiting, they take turns). */
  #lastHeavy = false;
  /**
   * Queued message bytes. Messages are placed by their position in the stream of all bytes
   * ever queued; the buffer holds positions #base to #base + #used. Messages leave in any
   * order and leave holes; making room moves the span still queued to the front in one copy.
   */
  #bytes = Buffer.alloc(0);
  #base = 0;
  #used = 0;
  #queued = 0;
  #queuedBytes = 0;
  /** Running tasks by slot (at most one per thread). */
  readonly #running: Array<Running<T> | undefined>;
  /** Per slot, its shared buffers (replaced after a failure, and when they must grow). */
  readonly #buffers: Array<SlotBuffers | undefined>;
  /**
   * Per slot, the abort signal piscina gets with the slot's tasks: an EventEmitter (piscina
   * takes one) reused from task to task, replaced once it has fired. Cheaper than an
   * AbortController per task, and a task with a signal has its thread to itself.
   */
  readonly #aborts: EventEmitter[];
  #runningCount = 0;
  #heavyRunning = 0;
  readonly #progress: Float64Array;
  #watchdog: NodeJS.Timeout | undefined;
  #scheduled = false;
  #pending = 0;
  #pendingBytes = 0;
  #pressure = false;
  #closed = false;

  constructor(opts: PoolOptions<T>) {
    this.#threads = Math.max(1, opts.threads);
    this.#heavyThreads = Math.max(1, this.#threads - 1);
    this.#taskTimeout = opts.taskTimeout;
    this.#heavyMs = Math.max(1, opts.heavyMs ?? kPoolDefaults.heavyMs);
    this.#heavyAvgMs = Math.max(0.001, opts.heavyAvgMs ?? kPoolDefaults.heavyAvgMs);
    this.#ownerShare = Math.max(1, opts.ownerShare ?? kPoolDefaults.ownerShare);
    this.#maxBatch = Math.max(1, opts.maxBatch ?? kPoolDefaults.maxBatch);
    this.#highWater = opts.highWater ?? kPoolDefaults.highWater;
    this.#highWaterBytes = opts.highWaterBytes ?? kPoolDefaults.highWaterBytes;
    this.#handler = opts.handler;
    this.#onResult = opts.onResult;
    this.#onPressure = opts.onPressure;
    this.#ownerOf = opts.ownerOf;
    this.#describe = opts.describe;
    this.#running = new Array(this.#threads).fill(undefined);
    this.#buffers = new Array(this.#threads).fill(undefined);
    this.#aborts = Array.from({ length: this.#threads }, () => new EventEmitter());
    const progress = new SharedArrayBuffer(8 * this.#threads);
    this.#progress = new Float64Array(progress);
    this.#piscina = new Piscina({
      filename: workerFile,
      minThreads: this.#threads,
      maxThreads: this.#threads,
      idleTimeout: Number.MAX_SAFE_INTEGER,
      workerData: { handler: resolveHandlerSpec(opts.handler), progress, maxWork: opts.maxWork },
      // Run handler threads with the same loaders (tsx in development) as this thread.
      execArgv: threadExecArgv(process.execArgv),
    });
    // A thread that fails outside a task is replaced by piscina; keep the process alive.
    this.#piscina.on('error', () => {});
  }

  /**
   * Resolves once every thread has loaded the handler; rejects with HandlerLoadError when it
   * cannot be loaded.
   */
  async ready(): Promise<void> {
    const barrier = new SharedArrayBuffer(8);
    new Int32Array(barrier)[1] = this.#threads;
    const task: Task = {
      input: new SharedArrayBuffer(messagesHeaderBytes(0)),
      output: new SharedArrayBuffer(resultsHeaderBytes(0)),
      slot: 0,
      barrier,
    };
    try {
      await Promise.all(Array.from({ length: this.#threads }, () => this.#piscina.run(task)));
    } catch (err) {
      // No thread is left running or starting (piscina replaces the ones that failed) when
      // the process exits on this error.
      await this.destroy().catch(() => {});
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
    const owner = this.#ownerFor(ticket);
    const n = data.byteLength;
    if (this.#used + n > this.#bytes.length) this.#makeRoom(n);
    this.#bytes.set(data, this.#used);
    const k = owner.tail++;
    owner.tickets[k] = ticket;
    owner.places[2 * k] = this.#base + this.#used;
    owner.places[2 * k + 1] = n * 2 + (isBinary ? 1 : 0);
    this.#used += n;
    this.#queued++;
    this.#queuedBytes += n;
    if (owner.task === undefined && !owner.waiting) this.#enqueue(owner, false);
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

  #ownerFor(ticket: T): Owner<T> {
    const key = this.#ownerOf?.(ticket);
    if (key === undefined) return newOwner();
    if (key === this.#lastKey) return this.#lastOwner!;
    let owner = this.#owners.get(key);
    if (!owner) {
      owner = newOwner();
      this.#owners.set(key, owner);
    }
    this.#lastKey = key;
    this.#lastOwner = owner;
    return owner;
  }

  #isHeavy(o: Owner<T>): boolean {
    return o.cost >= this.#heavyMs || o.serial >= this.#heavyAvgMs;
  }

  /** Puts an owner with queued messages (and no task) in its round-robin queue. */
  #enqueue(o: Owner<T>, first: boolean): void {
    o.waiting = true;
    const q = this.#isHeavy(o) ? this.#heavy : this.#light;
    // Only the heavy queue's wait is timed (see #promote): no clock read on the light path.
    if (q === this.#heavy) o.queuedAt = Date.now();
    if (first) q.unshift(o);
    else q.push(o);
  }

  /** The first owner of `q` that belongs there; the others move to the other queue. */
  #front(q: OwnerQueue<T>, heavy: boolean): Owner<T> | undefined {
    for (let o = q.peek(); o !== undefined; o = q.peek()) {
      if (this.#isHeavy(o) === heavy) return o;
      q.shift();
      if (!heavy) o.queuedAt = Date.now();
      (heavy ? this.#light : this.#heavy).push(o);
    }
    return undefined;
  }

  /**
   * An owner judged heavy by one call that the OS stretched (its thread held off the CPU mid-
   * call) waits for the heavy lane like a truly heavy one, possibly behind another owner's
   * call of seconds, and its figures cannot come down while none of its calls runs. The
   * first owner of the heavy queue, while the heavy lane is full, is judged afresh once it has
   * waited PROMOTE_WAITS of its own estimated calls (PROMOTE_HEAVY_MS of heavyMs at least):
   * its figures start over and it takes its turn in the light queue, where its next call
   * measures it again. A truly heavy one goes back at once, having held the light lane for
   * about heavyMs (its task's budget, or the long-call check).
   */
  #promote(now?: number): boolean {
    if (this.#heavyRunning < this.#heavyThreads) return false;
    const o = this.#heavy.peek();
    if (!o) return false;
    // The clock only now: #dispatch, the hot path, calls this for every batch.
    const wait = Math.max(PROMOTE_HEAVY_MS * this.#heavyMs, PROMOTE_WAITS * o.cost);
    if ((now ?? Date.now()) - o.queuedAt < wait) return false;
    this.#heavy.shift();
    o.cost = 0;
    o.serial = 0;
    this.#light.unshift(o);
    return true;
  }

  /** Calls `f` with every owner that has queued messages. */
  #eachQueued(f: (o: Owner<T>) => void): void {
    this.#light.forEach(f);
    this.#heavy.forEach(f);
    for (const task of this.#running) {
      if (!task) continue;
      for (const o of task.held) if (o.task === task && o.head < o.tail) f(o);
    }
  }

  /**
   * Makes room for `n` more queued bytes: moves the span from the oldest queued message on to
   * the front (of this buffer, or of a larger one), in one copy; when that span is mostly
   * holes, gathers the queued messages one by one instead.
   */
  #makeRoom(n: number): void {
    const live = this.#queuedBytes;
    if (live === 0) {
      this.#base += this.#used;
      this.#used = 0;
      if (n > this.#bytes.length) this.#bytes = Buffer.allocUnsafeSlow(Math.max(MIN_BUFFER, 2 * n));
      return;
    }
    let lo = Number.POSITIVE_INFINITY;
    this.#eachQueued((o) => {
      if (!o.scrambled) lo = Math.min(lo, o.places[2 * o.head]!);
      else for (let j = o.head; j < o.tail; j++) lo = Math.min(lo, o.places[2 * j]!);
    });
    const from = lo - this.#base;
    const keep = this.#used - from;
    if (keep <= 2 * live) {
      if (keep + n <= this.#bytes.length / 2) this.#bytes.copyWithin(0, from, this.#used);
      else {
        const next = Buffer.allocUnsafeSlow(Math.max(MIN_BUFFER, 2 * (keep + n)));
        this.#bytes.copy(next, 0, from, this.#used);
        this.#bytes = next;
      }
      this.#base = lo;
      this.#used = keep;
      return;
    }
    const next = Buffer.allocUnsafeSlow(Math.max(MIN_BUFFER, 2 * (live + n)));
    const base = this.#base + this.#used;
    let at = 0;
    this.#eachQueued((o) => {
      const { places } = o;
      for (let j = o.head; j < o.tail; j++) {
        const len = places[2 * j + 1]! >>> 1;
        copyBytes(this.#bytes, places[2 * j]! - this.#base, next, at, len);
        places[2 * j] = base + at;
        at += len;
      }
      o.scrambled = false;
    });
    this.#bytes = next;
    this.#base = base;
    this.#used = at;
  }

  #flush = (): void => {
    this.#scheduled = false;
    this.#dispatch();
  };

  /** Hands queued messages to the free threads. */
  #dispatch(): void {
    this.#promote();
    while (this.#runningCount < this.#threads) {
      let light = this.#front(this.#light, false);
      const heavy =
        this.#heavyRunning < this.#heavyThreads ? this.#front(this.#heavy, true) : undefined;
      light ??= this.#front(this.#light, false);
      if (heavy && (!light || !this.#lastHeavy)) this.#runHeavy();
      else if (light) this.#runLight();
      else break;
    }
    if (this.#queued === 0) {
      this.#base += this.#used;
      this.#used = 0;
      // Do not keep a buffer that one burst of large messages grew.
      if (this.#bytes.length > QUEUE_BYTES_KEPT) this.#bytes = Buffer.alloc(0);
    }
  }

  /** Starts a task with the first heavy owner's messages (up to `maxBatch` and the budget). */
  #runHeavy(): void {
    const o = this.#heavy.shift()!;
    o.waiting = false;
    o.take = affordable(o, this.#heavyMs, this.#maxBatch);
    this.#lastHeavy = true;
    this.#start([o], o.take, true);
  }

  /**
   * Starts a task with light owners, round robin: its even share of the queue (at most
   * `maxBatch`), at most a bounded share from each owner, and about `heavyMs` of their
   * estimated handler time.
   */
  #runLight(): void {
    this.#lastHeavy = false;
    const free = this.#threads - this.#runningCount;
    const target = Math.min(this.#maxBatch, Math.ceil(this.#queued / free));
    const share = Math.max(this.#ownerShare, Math.ceil(target / this.#light.length));
    const owners: Owner<T>[] = [];
    let count = 0;
    let budget = this.#heavyMs;
    while (count < target && budget > 0) {
      const o = this.#front(this.#light, false);
      if (!o) break;
      this.#light.shift();
      o.waiting = false;
      o.take = affordable(o, budget, Math.min(share, target - count));
      budget -= o.take * o.serial;
      owners.push(o);
      count += o.take;
    }
    this.#start(owners, count, false);
  }

  /** Moves `o.take` messages of each of `owners` (`count` in all) into a batch and runs it on a free slot. */
  #start(owners: Owner<T>[], count: number, heavy: boolean): void {
    let bytes = 0;
    for (const o of owners) {
      for (let j = o.head; j < o.head + o.take; j++) bytes += o.places[2 * j + 1]! >>> 1;
    }
    const slot = this.#running.indexOf(undefined);
    const size = messagesHeaderBytes(count) + bytes;
    // Replies are about as large as messages (echo); larger ones go to the thread's own buffer.
    const outSize = resultsHeaderBytes(count) + bytes + 64;
    let buffers = this.#buffers[slot];
    if (!buffers || buffers.input.byteLength < size || buffers.output.byteLength < outSize) {
      buffers = slotBuffers(size, outSize);
      this.#buffers[slot] = buffers;
    }
    const { input, output, inputBytes: buf, inputWords: head } = buffers;
    head[0] = 0; // the claim counter; the thread sees both once the task is posted
    head[1] = count;
    buffers.published[0] = 0;
    const tickets = new Array<T>(count);
    const itemOwners = new Array<Owner<T>>(count);
    const task: Running<T> = {
      slot,
      buffers,
      count,
      live: count,
      delivered: 0,
      resultAt: resultsHeaderBytes(count),
      tickets,
      owners: itemOwners,
      held: owners,
      bytes,
      start: Date.now(),
      timedOut: false,
      heavy,
    };
    let i = 0;
    let at = messagesHeaderBytes(count);
    // Messages that lie back to back in the queue (a burst of one connection) are copied as one.
    let runFrom = 0;
    let runTo = 0;
    let runLen = 0;
    const base = this.#base;
    for (let h = 0; h < owners.length; h++) {
      const o = owners[h]!;
      const { places } = o;
      const end = o.head + o.take;
      for (let j = o.head; j < end; j++) {
        const meta = places[2 * j + 1]!;
        const len = meta >>> 1;
        const from = places[2 * j]! - base;
        head[2 + 2 * i] = meta & 1 ? Kind.BINARY : Kind.TEXT;
        head[3 + 2 * i] = len;
        if (runLen > 0 && from === runFrom + runLen) runLen += len;
        else {
          copyBytes(this.#bytes, runFrom, buf, runTo, runLen);
          runFrom = from;
          runTo = at;
          runLen = len;
        }
        at += len;
        tickets[i] = o.tickets[j]!;
        o.tickets[j] = undefined as T;
        itemOwners[i] = o;
        i++;
      }
      o.task = task;
      if (end === o.tail) {
        o.head = 0;
        o.tail = 0;
        o.scrambled = false;
      } else o.head = end;
    }
    copyBytes(this.#bytes, runFrom, buf, runTo, runLen);
    this.#queued -= count;
    this.#queuedBytes -= bytes;
    this.#running[slot] = task;
    this.#runningCount++;
    if (heavy) this.#heavyRunning++;
    this.#watch();
    const payload: Task = { input, output, slot };
    if (this.#describe) this.#describeTask(payload, tickets);
    this.#piscina.run(payload, { signal: this.#aborts[slot]! }).then(
      (own: Uint8Array | undefined) => this.#settle(task, own, undefined),
      (err: unknown) => this.#settle(task, undefined, err),
    );
  }

  /** Tells the handler where each message of a task comes from (one entry per connection). */
  #describeTask(payload: Task, tickets: T[]): void {
    const conns: string[] = [];
    const index = new Map<string, number>();
    const who = new Uint16Array(tickets.length).fill(0xffff);
    for (let i = 0; i < tickets.length; i++) {
      const d = this.#describe!(tickets[i]!);
      if (d === undefined) continue;
      let k = index.get(d);
      if (k === undefined) {
        k = conns.push(d) - 1;
        index.set(d, k);
      }
      who[i] = k;
    }
    payload.conns = conns;
    payload.who = who;
  }

  /**
   * Takes back the messages of `task` from `from` on (none of them started): queued again in
   * front of their owners' later messages. The owners the task holds are released, except
   * the owner of the message that runs (`from - 1`), which becomes heavy.
   */
  #giveBack(task: Running<T>, from: number): void {
    const { inputWords: head, inputBytes: src } = task.buffers;
    let at = messagesHeaderBytes(task.count);
    for (let i = 0; i < from; i++) at += head[3 + 2 * i]!;
    let given = 0;
    for (let i = from; i < task.live; i++) given += head[3 + 2 * i]!;
    if (this.#used + given > this.#bytes.length) this.#makeRoom(given);
    // Per owner, the messages given back, in order.
    const back = new Map<Owner<T>, { tickets: T[]; places: number[] }>();
    for (let i = from; i < task.live; i++) {
      const o = task.owners[i]!;
      const len = head[3 + 2 * i]!;
      let b = back.get(o);
      if (!b) {
        b = { tickets: [], places: [] };
        back.set(o, b);
      }
      copyBytes(src, at, this.#bytes, this.#used, len);
      b.tickets.push(task.tickets[i]!);
      b.places.push(this.#base + this.#used, len * 2 + (head[2 + 2 * i] === Kind.BINARY ? 1 : 0));
      task.tickets[i] = undefined as T;
      at += len;
      this.#used += len;
    }
    for (const [o, b] of back) {
      if (o.head < o.tail) o.scrambled = true;
      o.tickets = b.tickets.concat(o.tickets.slice(o.head, o.tail));
      o.places = b.places.concat(o.places.slice(2 * o.head, 2 * o.tail));
      o.head = 0;
      o.tail = o.tickets.length;
    }
    this.#queued += task.live - from;
    this.#queuedBytes += given;
    task.bytes -= given;
    task.live = from;
    const running = from > 0 ? task.owners[from - 1] : undefined;
    if (running) running.cost = Math.max(running.cost, this.#heavyMs);
    // Their turn was interrupted: they go first, in their order.
    for (let h = task.held.length - 1; h >= 0; h--) {
      const o = task.held[h]!;
      if (o === running || o.task !== task) continue;
      o.task = undefined;
      if (o.head < o.tail) this.#enqueue(o, true);
    }
  }

  /** A task ended: with its results, moved back from the thread, or failed with `err`. */
  #settle(task: Running<T>, own: Uint8Array | undefined, err: unknown): void {
    const { slot } = task;
    this.#running[slot] = undefined;
    this.#runningCount--;
    if (task.heavy) this.#heavyRunning--;
    let results: Buffer | undefined;
    let head: Uint32Array | undefined;
    if (own) {
      results = Buffer.from(own.buffer, own.byteOffset, own.byteLength);
      head = resultsHeader(own.buffer as ArrayBuffer);
      this.#measure(task, head, task.live);
      // Do not keep the buffers that one large batch grew.
      const { input, output } = task.buffers;
      if (input.byteLength + output.byteLength > 2 * QUEUE_BYTES_KEPT)
        this.#buffers[slot] = undefined;
    } else {
      // The thread may still be dying: it must start nothing more, and the slot's next task
      // gets buffers of its own. What it completed is delivered; what it had not started
      // (other connections' messages, innocent of the failure) is queued again, to run once
      // on another thread. Only the calls that had started fail.
      const started = Math.min(Atomics.exchange(task.buffers.claims, 0, task.count), task.live);
      const done = Math.min(Atomics.load(task.buffers.published, 0), started);
      if (done > task.delivered) {
        const results = this.#copyResults(task, done);
        const h = resultsHeader(results.buffer as ArrayBuffer);
        this.#measure(task, h, done);
        this.#deliver(task, results, h, done);
      }
      if (started < task.live && !this.#closed) this.#giveBack(task, started);
      if (this.#buffers[slot] === task.buffers) this.#buffers[slot] = undefined;
    }
    for (const o of task.held) {
      if (o.task !== task) continue;
      o.task = undefined;
      if (o.head < o.tail) this.#enqueue(o, false);
    }
    // The thread is free: give it what queued meanwhile before answering this batch.
    if (!this.#closed) this.#dispatch();
    this.#pendingBytes -= task.bytes;
    if (results) this.#deliver(task, results, head!, task.live);
    else {
      const why = task.timedOut
        ? `handler made no progress for ${this.#taskTimeout} ms`
        : `handler thread failed: ${(err as Error | undefined)?.message ?? 'unknown error'}`;
      this.#pending -= task.live - task.delivered;
      for (let i = task.delivered; i < task.live; i++) {
        this.#onResult(task.tickets[i]!, Kind.ERROR, why);
      }
    }
    this.#relieve();
  }

  /** Ends the pressure once both counts are back at half their marks. */
  #relieve(): void {
    if (
      this.#pressure &&
      this.#pending <= this.#highWater / 2 &&
      this.#pendingBytes <= this.#highWaterBytes / 2
    ) {
      this.#pressure = false;
      this.#onPressure?.(false);
    }
  }

  /**
   * Copies the results of `task` up to entry `upTo` (header and payloads) out of the slot's
   * result buffer, which the thread goes on writing.
   */
  #copyResults(task: Running<T>, upTo: number): Buffer {
    const { output } = task.buffers;
    const head = new Uint32Array(output, 0, 2 + 3 * task.count);
    let end = task.resultAt;
    for (let i = task.delivered; i < upTo; i++) end += head[3 + 3 * i]!;
    const copy = Buffer.allocUnsafeSlow(end);
    copy.set(new Uint8Array(output, 0, end));
    return copy;
  }

  /** Updates the owners' costs with the handler times of the results not delivered yet, up to `upTo`. */
  #measure(task: Running<T>, head: Uint32Array, upTo: number): void {
    for (let i = task.delivered; i < upTo; i++) {
      const o = task.owners[i]!;
      const time = head[4 + 3 * i]!;
      recordCall(o, (time & ~ASYNC_CALL) / 1000, time >= ASYNC_CALL);
    }
  }

  /** Hands the results not delivered yet, up to `upTo`, to their owners (`head`: their header). */
  #deliver(task: Running<T>, results: Buffer, head: Uint32Array, upTo: number): void {
    const big = results.byteLength > VIEW_LIMIT;
    let at = task.resultAt;
    const from = task.delivered;
    task.delivered = upTo;
    this.#pending -= upTo - from;
    for (let i = from; i < upTo; i++) {
      const kind = (head[2 + 3 * i] ?? Kind.ERROR) as Kind;
      const len = head[3 + 3 * i] ?? 0;
      const ticket = task.tickets[i]!;
      task.tickets[i] = undefined as T;
      if (kind === Kind.TEXT || kind === Kind.BINARY || kind === Kind.COMPOSITE) {
        const view = results.subarray(at, at + len);
        this.#onResult(
          ticket,
          kind,
          big && 2 * len < results.byteLength ? Buffer.from(view) : view,
        );
      } else if (kind === Kind.ERROR) {
        this.#onResult(ticket, kind, results.toString('utf8', at, at + len));
      } else {
        this.#onResult(ticket, Kind.NONE, null);
      }
      at += len;
    }
    task.resultAt = at;
  }

  /** Runs the watchdog while tasks run; it stops itself once none does. */
  #watch(): void {
    if (this.#watchdog) return;
    const every = Math.min(
      1000,
      Math.max(5, Math.floor(this.#taskTimeout / 8)),
      Math.max(2, Math.floor(this.#heavyMs / 2)),
    );
    this.#watchdog = setInterval(() => this.#check(), every);
    this.#watchdog.unref();
  }

  /** Aborts the tasks that made no progress for `taskTimeout`; handles long calls. */
  #check(): void {
    if (this.#runningCount === 0) {
      clearInterval(this.#watchdog);
      this.#watchdog = undefined;
      return;
    }
    const now = Date.now();
    let gaveBack = false;
    for (let slot = 0; slot < this.#running.length; slot++) {
      const task = this.#running[slot];
      if (!task || task.timedOut) continue;
      // A mark older than the dispatch was left by the slot's previous task.
      const idle = now - Math.max(task.start, this.#progress[slot]!);
      if (idle >= this.#taskTimeout) {
        task.timedOut = true;
        const fired = this.#aborts[slot]!;
        this.#aborts[slot] = new EventEmitter();
        fired.emit('abort');
      } else if (idle >= this.#heavyMs) {
        gaveBack = this.#long(task) || gaveBack;
      }
    }
    if ((this.#promote(now) || gaveBack) && !this.#closed) this.#dispatch();
  }

  /**
   * A task whose current call (or whose wait for its async replies) has lasted `heavyMs`:
   * it counts as heavy once a call has started, and gives back what it has not started.
   * Returns whether it gave anything back.
   */
  #long(task: Running<T>): boolean {
    // Results already complete (before the long call) need not wait for it.
    const { published, claims } = task.buffers;
    const done = Math.min(Atomics.load(published, 0), task.live);
    if (done > task.delivered) {
      const results = this.#copyResults(task, done);
      const head = resultsHeader(results.buffer as ArrayBuffer);
      this.#measure(task, head, done);
      this.#deliver(task, results, head, done);
      this.#relieve();
    }
    let started = Math.min(Atomics.load(claims, 0), task.live);
    let gave = false;
    if (started < task.live) {
      started = Math.min(Atomics.exchange(claims, 0, task.count), task.live);
      if (started < task.live) {
        this.#giveBack(task, started);
        gave = true;
      }
    }
    if (started > 0 && !task.heavy) {
      task.heavy = true;
      this.#heavyRunning++;
    }
    return gave;
  }

  /** Stops the threads now; queued and running messages resolve to errors. */
  async destroy(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#watchdog);
    this.#watchdog = undefined;
    const queued: T[] = [];
    this.#eachQueued((o) => {
      for (let j = o.head; j < o.tail; j++) queued.push(o.tickets[j]!);
      o.tickets = [];
      o.places = [];
      o.head = 0;
      o.tail = 0;
    });
    for (const t of queued) {
      this.#pending--;
      this.#onResult(t, Kind.ERROR, 'pool closed');
    }
    await this.#piscina.destroy();
  }
}
