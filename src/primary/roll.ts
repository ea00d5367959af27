/**
 * Rolling restart (SIGHUP): every worker is replaced, one at a time, without refusing a
 * client or moving one twice.
 *
 * Every replacement is forked first and waited for (the workers double for the roll); then every
 * old worker stops accepting new connections, so the clients of each drain reconnect into new
 * workers only, each moved once, and spread over all of them: the roll ends balanced. The old
 * workers are then drained one at a time with 1012, with --reconnect-window between two (the
 * span a wave's hints spread its reconnects over, so two waves never land at once).
 *
 * A SIGHUP during a roll is coalesced: workers started before it are rolled too, once more. A
 * replacement that fails to start stops the roll: the replacements that did start are drained
 * and the old workers serve on. An old worker that dies during the roll is not respawned: its
 * replacement serves already. A drain of the whole cluster (SIGTERM) ends the roll where it
 * stands.
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

  /** Ready workers of an older generation: due to be rolled. */
  #due(): WorkerRecord[] {
    return [...this.#host.records()].filter(
      (r) => r.state === 'ready' && r.generation < this.generation,
    );
  }

  /**
   * Whether `rec` is an old worker the running roll has a replacement for already (it stopped
   * accepting): if it dies, nothing needs to be respawned.
   */
  covers(rec: WorkerRecord): boolean {
    return this.#active && !rec.accepting && rec.generation < this.generation;
  }

  async #run(): Promise<void> {
    const { log, options } = this.#host;
    const started = Date.now();
    let rolled = 0;
    for (;;) {
      if (this.#host.draining()) return;
      const olds = this.#due();
      if (olds.length === 0) break;
      // Every replacement first (the workers double for the roll): the clients of each old
      // worker drained below spread over all the new ones, so the roll ends balanced.
      const fresh = olds.map(() => this.#host.fork(true));
      const ok = await Promise.all(fresh.map((f) => f.listening));
      if (this.#host.draining()) return;
      if (ok.includes(false)) {
        log.error('rolling restart stopped: a replacement worker failed to start');
        // The replacements that did start go again: the old workers stay, as many as before.
        await Promise.all(fresh.filter((f) => f.state === 'ready').map((f) => this.#retire(f)));
        break;
      }
      // The replacements listen: from now on only they take new connections, so the clients
      // of each drain below are moved once.
      this.#stopAccepting(fresh[0]!.generation);
      for (const [i, old] of olds.entries()) {
        if (this.#host.draining()) return;
        if (old.state !== 'ready') continue; // it died meanwhile; its replacement serves
        await this.#retire(old);
        this.#host.onRolled();
        rolled++;
        // Its clients come back over the next --reconnect-window, as their hints ask.
        const more = olds.slice(i + 1).some((o) => o.state === 'ready');
        if (more && options.reconnectWindow > 0) await this.#pause(options.reconnectWindow);
      }
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

  /** Drains `rec` with 1012 (no delay: the other workers serve the port) and waits for its exit. */
  async #retire(rec: WorkerRecord): Promise<void> {
    const { log, options } = this.#host;
    rec.drain(drainCommand('restart', options));
    const killTimer = setTimeout(() => {
      log.warn({ workerPid: rec.pid }, `worker ${rec.pid} missed its deadline; killing it`);
      rec.kill();
    }, killAfter(options.drainTimeout));
    await rec.exited;
    clearTimeout(killTimer);
    if (rec.report) {
      log.info(
        { workerPid: rec.pid, report: rec.report },
        `rolled worker ${rec.pid}: ${summarize(rec.report)}`,
      );
    }
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
