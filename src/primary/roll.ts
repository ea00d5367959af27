/**
 * Rolling restart (SIGHUP): every worker is replaced, one at a time, without refusing a
 * client or moving one twice.
 *
 * Every replacement is forked first and waited for (the workers double for the roll); then every
 * old worker stops accepting new connections, so the clients of each drain reconnect into new
 * workers only, each moved once, and spread over all of them: the roll ends balanced. The old
 * workers are then drained one at a time with 1012, with --reconnect-window between two (the
 * span a wave's hints spread its reconnects over, so two waves never land at once). Where each
 * reconnect lands among the new workers is the balance's business (./balance.ts).
 *
 * A SIGHUP during a roll is coalesced: workers started before it are rolled too, once more.
 * Workers still starting at the SIGHUP (a crashed one's respawn) are waited for and rolled with
 * the others, so no client lands on one and is moved again. A replacement that fails to start
 * stops the roll: the replacements that did start are drained (but as many as old workers died
 * meanwhile) and the old workers serve on. An old worker that dies during the roll is not
 * respawned: its replacement serves. A replacement that dies once it listens is respawned (by
 * the coordinator, like any crash); before each drain the roll makes sure a worker of the new
 * generation takes connections, waiting up to the start timeout for a respawned one (the old
 * workers take connections again meanwhile), or it stops. A drain of the whole cluster (SIGTERM)
 * ends the roll where it stands.
 */
import { drainCommand, killAfter } from '../drain/budget.js';
import { summarize } from '../drain/report.js';
import type { Logger } from '../log.js';
import type { WsdrainOptions } from '../options.js';
import type { WorkerRecord } from './workers.js';

/** Longest wait for the old workers to answer the connections on their way to them. */
const STOPPED_WAIT_MS = 5000;

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
  /** A worker that does not listen within this is killed, in ms: how long a drain may wait for one. */
  readonly startTimeout: number;
  /** The roll is over (not by a full drain): the cluster goes back to --workers workers. */
  ended(): void;
}

export class Roll {
  readonly #host: RollHost;
  /** Generation of the workers forked now: a SIGHUP makes every older worker due. */
  generation = 0;
  #active = false;
  #endPause: (() => void) | undefined;
  /** Ends a wait of the roll for a worker to listen. */
  #wake: (() => void) | undefined;
  /** The old workers of the pass under way: each has its replacement forked. */
  #olds = new Set<WorkerRecord>();

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
    this.#wake?.();
  }

  /** A worker listened: a roll waiting for one looks again. */
  changed(): void {
    this.#wake?.();
  }

  /**
   * Every ready worker older than generation `below` stops taking new connections (it keeps
   * serving its sockets until its own drain), so clients closed by a drain reconnect into the
   * newer generation only, not into an old worker that would move them a second time.
   * Resolves once each has answered the connections handed to it before it left the port
   * (at most STOPPED_WAIT_MS): a worker that hangs (SIGSTOP) or is killed in its drain must
   * not hold one of them, which Node's cluster would leave open and unanswered for good.
   */
  async #stopAccepting(below: number): Promise<void> {
    const stopping = [...this.#host.records()].filter(
      (r) => r.state === 'ready' && r.accepting && r.generation < below,
    );
    if (stopping.length === 0) return;
    this.#host.log.info(
      { pids: stopping.map((r) => r.pid) },
      `rolling restart: ${stopping.length} old workers stop accepting new connections`,
    );
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(stopping.map((r) => r.setAccepting(false))),
      new Promise((resolve) => {
        timer = setTimeout(resolve, STOPPED_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
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
   * Whether `rec` is an old worker the running roll has forked a replacement for: if it dies,
   * nothing needs to be respawned.
   */
  covers(rec: WorkerRecord): boolean {
    return this.#active && this.#olds.has(rec);
  }

  /** Waits until `cond` holds, checked again whenever a worker listens; false after `ms`. */
  async #waitFor(cond: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!cond()) {
      const left = deadline - Date.now();
      if (left <= 0 || this.#host.draining()) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => this.#wake?.(), left);
        this.#wake = () => {
          clearTimeout(timer);
          this.#wake = undefined;
          resolve();
        };
      });
    }
    return true;
  }

  /**
   * Workers started before the SIGHUP and still starting (a crashed worker's respawn) run the
   * old code: they are waited for, to be rolled in this pass. One rolled later would have taken
   * the clients of this pass's drains, to move them a second time.
   */
  async #settle(): Promise<void> {
    const starting = [...this.#host.records()].filter(
      (r) => r.state === 'starting' && r.generation < this.generation,
    );
    if (starting.length === 0) return;
    this.#host.log.info(
      { pids: starting.map((r) => r.pid) },
      `rolling restart: waiting for ${starting.length} workers still starting (they are rolled too)`,
    );
    await Promise.all(starting.map((r) => r.listening));
  }

  /**
   * Before an old worker is drained, a worker of generation `gen` must take new connections,
   * or its clients would be refused. If none does (the replacements died after the old workers
   * stopped accepting: those accept again meanwhile), waits for a respawned one, up to the start
   * timeout. False when none came.
   */
  async #successor(gen: number): Promise<boolean> {
    const { log, startTimeout } = this.#host;
    const accepting = (): WorkerRecord | undefined =>
      [...this.#host.records()].find(
        (r) => r.state === 'ready' && r.accepting && r.generation >= gen,
      );
    if (accepting()) return true;
    log.warn(
      `rolling restart: no worker of the new generation accepts new connections; waiting up to ${startTimeout} ms for a respawned one before the next drain`,
    );
    if (!(await this.#waitFor(() => accepting() !== undefined, startTimeout))) return false;
    log.info({ workerPid: accepting()?.pid }, 'rolling restart: a new worker accepts; going on');
    return true;
  }

  async #run(): Promise<void> {
    const { log, options } = this.#host;
    const started = Date.now();
    let rolled = 0;
    for (;;) {
      if (this.#host.draining()) return;
      await this.#settle();
      if (this.#host.draining()) return;
      const olds = this.#due();
      if (olds.length === 0) break;
      this.#olds = new Set(olds);
      // Every replacement first (the workers double for the roll): the clients of each old
      // worker drained below spread over all the new ones, so the roll ends balanced.
      const fresh = olds.map(() => this.#host.fork(true));
      const ok = await Promise.all(fresh.map((f) => f.listening));
      if (this.#host.draining()) return;
      if (ok.includes(false)) {
        log.error('rolling restart stopped: a replacement worker failed to start');
        await this.#abandon(olds, fresh);
        break;
      }
      const gen = fresh[0]!.generation;
      let stopped = false;
      for (const [i, old] of olds.entries()) {
        if (this.#host.draining()) return;
        if (old.state !== 'ready') continue; // it died meanwhile; its replacement serves
        if (!(await this.#successor(gen))) {
          if (this.#host.draining()) return;
          log.error(
            `rolling restart stopped: no worker of the new generation accepted new connections within ${this.#host.startTimeout} ms`,
          );
          stopped = true;
          break;
        }
        // From now on only the new generation takes new connections, so the clients of each
        // drain are moved once (again, if the old workers had to take connections back).
        await this.#stopAccepting(gen);
        if (this.#host.draining()) return;
        if (old.state !== 'ready') continue; // it died meanwhile
        await this.#retire(old);
        this.#host.onRolled();
        rolled++;
        // Its clients come back over the next --reconnect-window, as their hints ask.
        const more = olds.slice(i + 1).some((o) => o.state === 'ready');
        if (more && options.reconnectWindow > 0) await this.#pause(options.reconnectWindow);
      }
      this.#olds.clear();
      if (stopped) break;
    }
    if (this.#host.draining()) return;
    this.#active = false;
    this.#olds.clear();
    // Outside a roll every ready worker accepts (after a failed replacement, the old ones).
    this.resumeAccepting('rolling restart stopped');
    this.#host.ended();
    const pids = [...this.#host.records()].filter((r) => r.state !== 'exited').map((r) => r.pid);
    log.info(
      { rolled, durationMs: Date.now() - started, pids },
      `rolling restart done: ${rolled} workers replaced`,
    );
  }

  /**
   * A replacement failed to start: the old workers stay, as many as before. The replacements
   * that started are drained, but as many as old workers died meanwhile (not respawned: they
   * stay in their place); the roll ends once the failed ones have exited, so none of them is
   * taken for a crash to respawn.
   */
  async #abandon(olds: WorkerRecord[], fresh: WorkerRecord[]): Promise<void> {
    const started = fresh.filter((f) => f.state === 'ready');
    const died = olds.filter((o) => o.state === 'exited').length;
    const kept = started.slice(0, died);
    if (kept.length > 0) {
      this.#host.log.warn(
        { pids: kept.map((r) => r.pid) },
        `rolling restart: ${kept.length} replacements stay for old workers that died during the roll`,
      );
    }
    await Promise.all([
      ...started.slice(died).map((f) => this.#retire(f)),
      ...fresh.filter((f) => f.state === 'starting').map((f) => f.exited),
    ]);
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
    } else {
      const how = rec.killed ? 'killed at its deadline' : 'it died draining';
      log.warn({ workerPid: rec.pid }, `rolled worker ${rec.pid}: no drain report (${how})`);
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
