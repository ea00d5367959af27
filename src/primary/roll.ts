/**
 * Rolling restart (SIGHUP): every worker is replaced, one at a time, without refusing a
 * client or moving one twice.
 *
 * For each old worker in turn: fork a replacement and wait until it listens; then (the first
 * time) every old worker stops accepting new connections, so the clients of each drain
 * reconnect into new workers only; drain the old one with 1012; wait --reconnect-window, the
 * span its clients' hints spread their reconnects over, so two waves never land at once.
 *
 * A SIGHUP during a roll is coalesced: workers started before it are rolled too, once. A
 * replacement that fails to start stops the roll, and the old workers accept again. A drain
 * of the whole cluster (SIGTERM) ends the roll where it stands.
 */
import { drainCommand, killAfter } from '../drain/budget.js';
import { summarize } from '../drain/report.js';
import type { Logger } from '../log.js';
import type { WsdrainOptions } from '../options.js';
import type { WorkerRecord } from './workers.js';

/** What the roll needs from the cluster it rolls. */
export interface RollHost {
  readonly log: Logger;
  readonly options: WsdrainOptions;
  /** Every record, exited ones included. */
  records(): Iterable<WorkerRecord>;
  /** Forks a worker of the current generation; `forRoll` marks a replacement. */
  fork(forRoll: boolean): WorkerRecord;
  /** The whole cluster is draining: the roll stops where it stands. */
  draining(): boolean;
  /** One more worker rolled (metrics). */
  onRolled(): void;
}

export class Roll {
  readonly #host: RollHost;
  /** Generation of the workers forked now: a SIGHUP makes every older worker due. */
  generation = 0;
  #active = false;
  #endPause: (() => void) | undefined;

  constructor(host: RollHost) {
    this.#host = host;
  }

  /** A roll is under way. */
  get active(): boolean {
    return this.#active;
  }

  /** SIGHUP: roll every worker started before now (coalesced into a roll under way). */
  request(): void {
    this.generation++;
    if (this.#active) {
      this.#host.log.info('SIGHUP during a roll: workers started before it will be rolled too');
      return;
    }
    this.#active = true;
    this.#host.log.info('SIGHUP: rolling restart');
    this.#run().catch((err: unknown) => {
      this.#host.log.error({ err: (err as Error).message }, 'rolling restart failed');
      this.#active = false;
      this.resumeAccepting('the rolling restart failed');
    });
  }

  /** Ends the pause between two rolled workers now (a full drain does not wait for it). */
  interrupt(): void {
    this.#endPause?.();
  }

  /**
   * Every ready worker older than generation `below` stops taking new connections (it keeps
   * serving its sockets until its own drain), so clients closed by a drain reconnect into the
   * newer generation only, not into an old worker that would move them a second time.
   */
  #stopAccepting(below: number): void {
    const stopping = [...this.#host.records()].filter(
      (r) => r.state === 'ready' && r.accepting && r.generation < below,
    );
    if (stopping.length === 0) return;
    this.#host.log.info(
      { pids: stopping.map((r) => r.pid) },
      `rolling restart: ${stopping.length} old workers stop accepting new connections`,
    );
    for (const r of stopping) r.setAccepting(false);
  }

  /** Ready workers stopped by a roll take new connections again. */
  resumeAccepting(why: string): void {
    const stopped = [...this.#host.records()].filter((r) => r.state === 'ready' && !r.accepting);
    if (stopped.length === 0) return;
    this.#host.log.warn(
      { pids: stopped.map((r) => r.pid) },
      `${why}: ${stopped.length} old workers accept new connections again`,
    );
    for (const r of stopped) r.setAccepting(true);
  }

  /**
   * The port stays served: if no ready worker accepts any more (the replacements crashed or
   * were signalled), the old ones that stopped accepting take connections again. (When the
   * last worker leaves the cluster's shared socket, Node closes it.)
   */
  keepAccepting(): void {
    if (this.#host.draining()) return;
    const serving = [...this.#host.records()].some((r) => r.state === 'ready' && r.accepting);
    if (!serving) this.resumeAccepting('no worker accepts new connections');
  }

  /** A ready worker of an older generation, if any. */
  #next(): WorkerRecord | undefined {
    return [...this.#host.records()].find(
      (r) => r.state === 'ready' && r.generation < this.generation,
    );
  }

  async #run(): Promise<void> {
    const { log, options } = this.#host;
    const started = Date.now();
    let rolled = 0;
    for (;;) {
      if (this.#host.draining()) return;
      const old = this.#next();
      if (!old) break;
      const fresh = this.#host.fork(true);
      const ok = await fresh.listening;
      if (this.#host.draining()) return;
      if (!ok) {
        log.error('rolling restart stopped: a replacement worker failed to start');
        break;
      }
      // The replacement listens: from now on only it (and the other new ones) take new
      // connections, so the clients of each drain below are moved once.
      this.#stopAccepting(fresh.generation);
      // No delay on a roll: the new workers serve the port already.
      old.drain(drainCommand('restart', options));
      this.#host.onRolled();
      const killTimer = setTimeout(() => {
        log.warn({ workerPid: old.pid }, `worker ${old.pid} missed its deadline; killing it`);
        old.kill();
      }, killAfter(options.drainTimeout));
      await old.exited;
      clearTimeout(killTimer);
      if (old.report) {
        log.info(
          { workerPid: old.pid, report: old.report },
          `rolled worker ${old.pid}: ${summarize(old.report)}`,
        );
      }
      rolled++;
      // Its clients come back over the next --reconnect-window, as their hints ask.
      if (this.#next() && options.reconnectWindow > 0) await this.#pause(options.reconnectWindow);
    }
    if (this.#host.draining()) return;
    this.#active = false;
    // Outside a roll every ready worker accepts (after a failed replacement, the old ones).
    this.resumeAccepting('rolling restart stopped');
    const pids = [...this.#host.records()].filter((r) => r.state !== 'exited').map((r) => r.pid);
    log.info(
      { rolled, durationMs: Date.now() - started, pids },
      `rolling restart done: ${rolled} workers replaced`,
    );
  }

  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#endPause = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#endPause = done;
    });
  }
}
