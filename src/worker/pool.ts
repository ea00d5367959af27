/**
 * The handler pool of one worker: a piscina thread pool fed in batches.
 *
 * Messages are queued as they arrive and flushed once per event-loop turn (setImmediate) as
 * a few batches, one piscina task each, split so every thread gets a share. A task that runs
 * past `taskTimeout` is aborted (piscina replaces the thread) and each of its messages
 * resolves to `{ error }`; a thread that crashes does the same. The pool itself never throws
 * into the server.
 *
 * Backpressure: `pending` counts messages queued or running. When it reaches `highWater`
 * the pool reports pressure (the server stops reading from the sockets that feed it); when
 * it falls to `highWater / 2` it reports relief.
 */
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { HandlerLoadError } from '../errors.js';
import type { BatchResult } from './pool-worker.js';

export type { BatchResult };

export type Item = string | Uint8Array;
type Callback = (result: BatchResult) => void;

/** Options of {@link MessagePool}. */
export interface PoolOptions {
  /** Threads in the pool. */
  threads: number;
  /** Handler module specifier as given on the command line; undefined = built-in echo. */
  handler: string | undefined;
  /** Abort a task that runs longer, in ms. */
  taskTimeout: number;
  /** Most messages in one task. @default 64 */
  maxBatch?: number;
  /** Pending messages at which pressure starts. @default 1024 */
  highWater?: number;
  /** Called with true when pressure starts and false when it ends. */
  onPressure?: (on: boolean) => void;
}

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

/** A piscina pool fed with batches of messages. */
export class MessagePool {
  readonly #piscina: Piscina;
  readonly #opts: Required<Omit<PoolOptions, 'handler' | 'onPressure'>> &
    Pick<PoolOptions, 'handler' | 'onPressure'>;
  #queue: Item[] = [];
  #callbacks: Callback[] = [];
  #scheduled = false;
  #pending = 0;
  #pressure = false;
  #closed = false;
  readonly #timers = new Set<NodeJS.Timeout>();

  constructor(opts: PoolOptions) {
    this.#opts = { maxBatch: 64, highWater: 1024, ...opts };
    this.#piscina = new Piscina({
      filename: workerFile,
      minThreads: opts.threads,
      maxThreads: opts.threads,
      idleTimeout: Number.MAX_SAFE_INTEGER,
      workerData: { handler: resolveHandlerSpec(opts.handler) },
      // Run handler threads with the same loaders (tsx in development) as this thread.
      execArgv: process.execArgv,
    });
    // A thread that fails outside a task is replaced by piscina; keep the process alive.
    this.#piscina.on('error', () => {});
  }

  /** Loads the handler in a thread; rejects with HandlerLoadError when it cannot. */
  async ready(): Promise<void> {
    try {
      await this.#piscina.run([]);
    } catch (err) {
      throw new HandlerLoadError(
        `cannot load handler ${this.#opts.handler ?? '(built-in echo)'}: ${(err as Error).message}`,
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

  /** Queues one message; `cb` gets its result exactly once. */
  submit(item: Item, cb: Callback): void {
    if (this.#closed) {
      cb({ error: 'pool closed' });
      return;
    }
    this.#queue.push(item);
    this.#callbacks.push(cb);
    this.#pending++;
    if (!this.#pressure && this.#pending >= this.#opts.highWater) {
      this.#pressure = true;
      this.#opts.onPressure?.(true);
    }
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
  }

  #flush = (): void => {
    this.#scheduled = false;
    const items = this.#queue;
    const cbs = this.#callbacks;
    this.#queue = [];
    this.#callbacks = [];
    if (items.length === 0) return;
    const size = Math.max(
      1,
      Math.min(this.#opts.maxBatch, Math.ceil(items.length / this.#opts.threads)),
    );
    for (let i = 0; i < items.length; i += size) {
      this.#runBatch(items.slice(i, i + size), cbs.slice(i, i + size));
    }
  };

  #runBatch(items: Item[], cbs: Callback[]): void {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), this.#opts.taskTimeout);
    this.#timers.add(timer);
    const settle = (results: BatchResult[] | undefined, err?: unknown): void => {
      clearTimeout(timer);
      this.#timers.delete(timer);
      const failed: BatchResult = {
        error: ac.signal.aborted
          ? `handler task exceeded ${this.#opts.taskTimeout} ms`
          : `handler thread failed: ${(err as Error | undefined)?.message ?? 'unknown error'}`,
      };
      for (let i = 0; i < cbs.length; i++) {
        this.#pending--;
        cbs[i]!(results?.[i] ?? (results ? null : failed));
      }
      if (this.#pressure && this.#pending <= this.#opts.highWater / 2) {
        this.#pressure = false;
        this.#opts.onPressure?.(false);
      }
    };
    this.#piscina.run(items, { signal: ac.signal }).then(
      (r: BatchResult[]) => settle(r),
      (e: unknown) => settle(undefined, e),
    );
  }

  /** Stops the threads now; queued and running messages resolve to `{ error }`. */
  async destroy(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    const cbs = this.#callbacks;
    this.#queue = [];
    this.#callbacks = [];
    for (const cb of cbs) {
      this.#pending--;
      cb({ error: 'pool closed' });
    }
    await this.#piscina.destroy();
  }
}
