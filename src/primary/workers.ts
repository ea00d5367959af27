/**
 * The primary's records of its workers: forking one, following it through its IPC messages
 * and its exit, commanding it, and the backoff between crash respawns.
 *
 * A record's life:
 *
 *     starting --'listening'--> ready --drain()/'draining'--> draining --exit--> exited
 *         \------------------------------ exit -------------------------------/
 *
 * What a record's events mean for the cluster (respawn, roll, drain) is the coordinator's
 * business: records only report.
 */
import cluster, { type Worker } from 'node:cluster';
import type { BrokerRequest } from '../app/broker.js';
import type { Publication } from '../app/sequencer.js';
import type { DrainCommand } from '../drain/budget.js';
import type { DrainReport, WorkerOutcome } from '../drain/report.js';
import type { Logger } from '../log.js';
import { OPTIONS_ENV, type WsdrainOptions } from '../options.js';
import {
  type ConnHandle,
  isOurs,
  msg,
  pubToWire,
  replyToWire,
  requestFromWire,
  sendHandle,
  sendToWorker,
  type ToPrimary,
} from '../protocol.js';

export type WorkerState = 'starting' | 'ready' | 'draining' | 'exited';

/** What a record tells its owner. */
export interface WorkerEvents {
  /** The worker listens (on `port`). */
  listening(rec: WorkerRecord, port: number): void;
  /** The worker began draining on its own (it got a signal directly). */
  selfDrain(rec: WorkerRecord): void;
  /** The worker's drain report arrived. */
  report(rec: WorkerRecord, report: DrainReport): void;
  /** The worker exited; `was` is the state it was in. */
  exit(rec: WorkerRecord, was: WorkerState): void;
  /** A request to the embedded broker. */
  broker(rec: WorkerRecord, id: number, req: BrokerRequest): void;
  /** The worker's socket count changed. */
  sockets(rec: WorkerRecord): void;
  /** The worker handed a new connection back, unread (`hops` workers so far). */
  handback(rec: WorkerRecord, handle: ConnHandle, hops: number): void;
}

/** One forked worker as the primary sees it. */
export class WorkerRecord {
  readonly worker: Worker;
  readonly pid: number;
  state: WorkerState = 'starting';
  /** Roll generation this worker was forked in. */
  readonly generation: number;
  /** Forked by a rolling restart as a replacement: if it fails to start, the roll stops. */
  readonly forRoll: boolean;
  /**
   * Takes new connections (its share of the cluster's listening socket). False from the
   * moment a rolling restart stops it, before its drain, so reconnects go to newer workers.
   */
  accepting = true;
  /** WebSocket connections, as the worker last said, plus those handed to it since. */
  sockets = 0;
  /** Held by the balance: it hands its new connections back (see ./balance.ts). */
  held = false;
  /** Connections given to it that another worker handed back, and those it said it took. */
  given = 0;
  taken = 0;
  /** Connections given to it that have not left the primary yet. */
  sending = 0;
  /** Sockets the worker held when its drain began, and those still open. */
  drainTotal = 0;
  remaining = 0;
  report: DrainReport | undefined;
  /** Killed by the primary (deadline or second signal). */
  killed = false;
  /** Started draining on its own (a signal sent to the worker, not to the primary). */
  selfDrained = false;
  exitInfo: { code: number | null; signal: string | null } | undefined;
  /** The first fatal error it reported (why it could not start). */
  fatal: string | undefined;
  /** True once it listens; false if it exits or misses its start timeout first. */
  readonly listening: Promise<boolean>;
  readonly exited: Promise<void>;
  /** Waits of {@link setAccepting}(false) for the worker's `stopped`. */
  readonly #onStopped: Array<() => void> = [];

  constructor(
    options: WsdrainOptions,
    generation: number,
    forRoll: boolean,
    startTimeoutMs: number,
    log: Logger,
    events: WorkerEvents,
  ) {
    this.worker = cluster.fork({ [OPTIONS_ENV]: JSON.stringify(options) });
    this.pid = this.worker.process.pid ?? 0;
    this.generation = generation;
    this.forRoll = forRoll;
    let listened: (ok: boolean) => void = () => {};
    let exited: () => void = () => {};
    this.listening = new Promise((r) => {
      listened = r;
    });
    this.exited = new Promise((r) => {
      exited = r;
    });
    const startTimer = setTimeout(() => {
      log.error({ workerPid: this.pid }, `worker did not listen within ${startTimeoutMs} ms`);
      listened(false);
      this.worker.process.kill('SIGKILL');
    }, startTimeoutMs);
    this.worker.on('error', () => {});
    this.worker.on('message', (m: unknown, handle: unknown) => {
      if (!isOurs<ToPrimary>(m)) return;
      switch (m.type) {
        case 'sockets':
          this.sockets = m.count;
          this.taken = m.taken;
          events.sockets(this);
          break;
        case 'handback':
          if (handle) events.handback(this, handle as ConnHandle, m.hops);
          break;
        case 'listening':
          clearTimeout(startTimer);
          if (this.state === 'starting') this.state = 'ready';
          events.listening(this, m.port);
          listened(true);
          break;
        case 'draining':
          if (this.state !== 'exited' && this.state !== 'draining') {
            this.state = 'draining';
            this.selfDrained = true;
          }
          this.remaining = m.sockets;
          this.drainTotal = m.sockets;
          if (this.selfDrained) events.selfDrain(this);
          break;
        case 'progress':
          this.remaining = m.remaining;
          break;
        case 'report':
          this.report = m.report;
          this.remaining = 0;
          events.report(this, m.report);
          break;
        case 'fatal':
          this.fatal ??= m.message;
          log.error({ workerPid: this.pid, code: m.code }, m.message);
          break;
        case 'broker':
          events.broker(this, m.id, requestFromWire(m.req));
          break;
        case 'sync':
          sendToWorker(this.worker, msg({ type: 'synced' }));
          break;
        case 'stopped':
          for (const f of this.#onStopped.splice(0)) f();
          break;
      }
    });
    this.worker.on('exit', (code: number | null, signal: string | null) => {
      clearTimeout(startTimer);
      const was = this.state;
      this.state = 'exited';
      this.exitInfo = { code, signal };
      listened(false);
      exited();
      for (const f of this.#onStopped.splice(0)) f();
      events.exit(this, was);
    });
  }

  /** Sends the drain command; the record counts as draining from now on. */
  drain(cmd: DrainCommand): void {
    this.state = 'draining';
    this.setHeld(false);
    sendToWorker(this.worker, msg({ type: 'drain', ...cmd }));
  }

  /** Second signal: terminate every socket now. */
  terminate(): void {
    sendToWorker(this.worker, msg({ type: 'terminate' }));
  }

  /**
   * Rolling restart: stop (or resume) taking new connections. Stopping resolves once the
   * worker says every connection handed to it before it left the port is answered (or it
   * exited); resuming at once.
   */
  setAccepting(accepting: boolean): Promise<void> {
    this.accepting = accepting;
    // Its listener closes: nothing left to hand back (./balance.ts).
    if (!accepting) this.setHeld(false);
    sendToWorker(this.worker, msg({ type: 'accepting', accepting }));
    if (accepting || this.state === 'exited') return Promise.resolve();
    return new Promise((resolve) => {
      this.#onStopped.push(resolve);
    });
  }

  /** Balance: hold the worker (it hands new connections back) or release it. */
  setHeld(held: boolean): void {
    if (this.held === held) return;
    this.held = held;
    sendToWorker(this.worker, msg({ type: 'hold', held }));
  }

  /** Hands it a connection another worker gave back; false if it is gone. */
  give(handle: ConnHandle, hops: number): boolean {
    const sent = (): void => {
      this.sending--;
    };
    if (
      this.state === 'exited' ||
      !sendHandle(this.worker, msg({ type: 'conn', hops }), handle, sent)
    )
      return false;
    this.sending++;
    this.sockets++;
    this.given++;
    return true;
  }

  /** Whether every worker of the cluster listens (its /readyz follows it). */
  setClusterReady(ready: boolean): void {
    sendToWorker(this.worker, msg({ type: 'cluster-ready', ready }));
  }

  /** Answers a broker request. */
  answer(id: number, ok: boolean, value: unknown): void {
    sendToWorker(this.worker, msg({ type: 'broker-reply', id, ok, value: replyToWire(value) }));
  }

  /** Hands it a publication of a topic it wants. */
  publication(pub: Publication): void {
    sendToWorker(this.worker, msg({ type: 'publication', pub: pubToWire(pub) }));
  }

  /** SIGKILL, unless it has exited already. */
  kill(): void {
    if (this.state === 'exited') return;
    this.killed = true;
    this.worker.process.kill('SIGKILL');
  }

  /** How its drain ended, for the cluster's report. */
  outcome(): WorkerOutcome {
    return {
      pid: this.pid,
      ...(this.report ?? {}),
      exit: this.exitInfo,
      killed: this.killed,
      lost: !this.report && !this.killed,
    };
  }
}

/** Tunables of respawning after crashes; tests shorten them. */
export interface BackoffTimings {
  /** First respawn delay after a crash, in ms (doubles per recent crash, with jitter). */
  backoffBaseMs: number;
  /** Longest respawn delay, in ms. */
  backoffMaxMs: number;
  /** Crashes within `crashWindowMs` that make the primary give up. */
  crashLimit: number;
  crashWindowMs: number;
}

/**
 * Exponential backoff with jitter between crash respawns: 100 ms doubling to 10 s by default,
 * each delay drawn in the upper half of its step; more than `crashLimit` crashes within
 * `crashWindowMs` is a crash loop.
 */
export class CrashBackoff {
  readonly #t: BackoffTimings;
  #crashes: number[] = [];

  constructor(t: BackoffTimings) {
    this.#t = t;
  }

  /** Records a crash now: the respawn delay, or `loop` when the limit is passed. */
  crash(
    now = Date.now(),
    random = Math.random,
  ): { crashes: number; delayMs: number; loop: boolean } {
    this.#crashes = this.#crashes.filter((t) => now - t < this.#t.crashWindowMs);
    this.#crashes.push(now);
    const n = this.#crashes.length;
    const ceiling = Math.min(this.#t.backoffMaxMs, this.#t.backoffBaseMs * 2 ** (n - 1));
    return {
      crashes: n,
      delayMs: Math.round(ceiling / 2 + (random() * ceiling) / 2),
      loop: n > this.#t.crashLimit,
    };
  }
}
