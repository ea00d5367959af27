/**
 * The cluster primary: forks the workers, owns the signals, broadcasts drains, rolls workers
 * one at a time on SIGHUP, respawns crashed ones with backoff, aggregates drain reports and
 * metrics, and picks the exit code.
 *
 * Phases of the primary:
 *
 *     starting --all listening--> running <--> rolling
 *         \                          |            |
 *          \------------------- draining <--------/   (SIGTERM/SIGINT, crash loop)
 *                                    |
 *                                  exit     (second signal: terminate now, exit 1)
 */
import cluster, { type Worker } from 'node:cluster';
import { OPTIONS_ENV } from '../cli.js';
import { createLogger, type Logger } from '../log.js';
import type { WsdrainOptions } from '../options.js';
import { DrainProgress, exitMargin } from '../progress.js';
import { isOurs, msg, sendToWorker, type ToPrimary } from '../protocol.js';
import type { DrainReport } from '../worker/drain.js';
import { summarize, writeReport } from '../worker/main.js';
import { PrimaryMetrics } from './metrics.js';
import { installSignals } from './signals.js';

type SlotState = 'starting' | 'ready' | 'draining' | 'exited';

interface Slot {
  worker: Worker;
  pid: number;
  state: SlotState;
  /** Roll generation this worker was forked in. */
  generation: number;
  /**
   * Takes new connections (its share of the cluster's listening socket). False from the
   * moment a rolling restart stops it, before its drain, so reconnects go to newer workers.
   */
  accepting: boolean;
  /** Forked by a rolling restart as a replacement: if it fails to start, the roll stops. */
  forRoll: boolean;
  forkedAt: number;
  remaining: number;
  report: DrainReport | undefined;
  /** Killed by the primary (deadline or second signal). */
  killed: boolean;
  /** Sockets the worker held when its drain began. */
  drainTotal: number;
  /** Started draining on its own (a signal sent to the worker, not to the primary). */
  selfDrained: boolean;
  listening: Promise<boolean>;
  exited: Promise<void>;
  exitInfo: { code: number | null; signal: string | null } | undefined;
}

/** Tunables that tests shorten; the defaults suit production. */
export interface CoordinatorTimings {
  /** A worker that does not listen within this is killed, in ms. @default 30000 */
  startTimeout: number;
  /** First respawn delay after a crash, in ms (doubles per recent crash, with jitter). @default 100 */
  backoffBaseMs: number;
  /** Longest respawn delay, in ms. @default 10000 */
  backoffMaxMs: number;
  /** Crashes within `crashWindowMs` that make the primary give up. @default 10 */
  crashLimit: number;
  /** @default 60000 */
  crashWindowMs: number;
}

export const kDefaultTimings: CoordinatorTimings = {
  startTimeout: 30_000,
  backoffBaseMs: 100,
  backoffMaxMs: 10_000,
  crashLimit: 10,
  crashWindowMs: 60_000,
};

/** Runs the primary until it exits the process. */
export async function runPrimary(options: WsdrainOptions): Promise<void> {
  const timings = { ...kDefaultTimings };
  const fromEnv = process.env.WSDRAIN_TIMINGS;
  if (fromEnv) Object.assign(timings, JSON.parse(fromEnv) as Partial<CoordinatorTimings>);
  const log = createLogger(options.logLevel, 'primary');
  const coordinator = new Coordinator(options, log, timings);
  await coordinator.start();
}

export class Coordinator {
  readonly #opts: WsdrainOptions;
  readonly #log: Logger;
  readonly #t: CoordinatorTimings;
  readonly #slots = new Map<number, Slot>();
  readonly #metrics: PrimaryMetrics;
  #phase: 'starting' | 'running' | 'rolling' | 'draining' = 'starting';
  #generation = 0;
  #crashes: number[] = [];
  #port = 0;
  #exitCode = 0;
  #respawnTimers = new Set<NodeJS.Timeout>();
  #forced = false;
  #firstFatal: string | undefined;

  constructor(opts: WsdrainOptions, log: Logger, timings: CoordinatorTimings) {
    this.#opts = opts;
    this.#log = log;
    this.#t = timings;
    this.#metrics = new PrimaryMetrics(log, () => this.#liveWorkers());
  }

  #liveWorkers(): Worker[] {
    return [...this.#slots.values()].filter((s) => s.state !== 'exited').map((s) => s.worker);
  }

  async start(): Promise<void> {
    installSignals({
      onStop: (signal) => this.drainAll(signal),
      onForce: (signal) => this.forceAll(signal),
      onReload: () => this.roll(),
    });
    cluster.setupPrimary({ silent: false });
    if (this.#opts.metricsPort !== undefined) {
      try {
        const port = await this.#metrics.listen(this.#opts.metricsPort, this.#opts.host);
        this.#log.info(
          { metricsPort: port },
          `metrics on http://${this.#opts.host}:${port}/metrics`,
        );
      } catch (err) {
        this.#fatal(
          `cannot serve metrics on port ${this.#opts.metricsPort}: ${(err as Error).message}`,
        );
        return;
      }
    }
    const slots = Array.from({ length: this.#opts.workers }, () => this.#fork());
    const ok = await Promise.all(slots.map((s) => s.listening));
    if (this.#phase !== 'starting') return; // a signal arrived while starting
    if (ok.includes(false)) {
      this.#fatal(`workers failed to start: ${this.#firstFatal ?? 'see the log lines above'}`);
      return;
    }
    this.#phase = 'running';
    for (const s of this.#slots.values())
      sendToWorker(s.worker, msg({ type: 'cluster-ready', ready: true }));
    this.#log.info(
      { port: this.#port, workers: this.#opts.workers, pids: slots.map((s) => s.pid) },
      `wsdrain ready on ${this.#opts.host}:${this.#port} with ${this.#opts.workers} workers`,
    );
    // pm2's wait_ready: tell the process manager we serve.
    if (process.send) process.send('ready');
  }

  #fatal(message: string): void {
    this.#log.fatal(message);
    process.stderr.write(`wsdrain: ${message}\n`);
    this.#exitCode = 1;
    this.forceAll('stopping');
  }

  #fork(forRoll = false): Slot {
    const worker = cluster.fork({ [OPTIONS_ENV]: JSON.stringify(this.#opts) });
    let onListening: (ok: boolean) => void = () => {};
    let onExit: () => void = () => {};
    const slot: Slot = {
      worker,
      pid: worker.process.pid ?? 0,
      state: 'starting',
      generation: this.#generation,
      accepting: true,
      forRoll,
      forkedAt: Date.now(),
      remaining: 0,
      report: undefined,
      killed: false,
      selfDrained: false,
      drainTotal: 0,
      listening: new Promise((r) => {
        onListening = r;
      }),
      exited: new Promise((r) => {
        onExit = r;
      }),
      exitInfo: undefined,
    };
    this.#slots.set(worker.id, slot);
    const startTimer = setTimeout(() => {
      this.#log.error(
        { workerPid: slot.pid },
        `worker did not listen within ${this.#t.startTimeout} ms`,
      );
      onListening(false);
      worker.process.kill('SIGKILL');
    }, this.#t.startTimeout);
    worker.on('error', () => {});
    worker.on('message', (m: unknown) => {
      if (!isOurs<ToPrimary>(m)) return;
      switch (m.type) {
        case 'listening':
          clearTimeout(startTimer);
          this.#port = m.port;
          if (slot.state === 'starting') slot.state = 'ready';
          if (this.#phase === 'running' || this.#phase === 'rolling') {
            sendToWorker(worker, msg({ type: 'cluster-ready', ready: true }));
          }
          onListening(true);
          break;
        case 'draining':
          // The worker started draining on its own (it got a signal directly).
          if (slot.state !== 'exited' && slot.state !== 'draining') {
            slot.state = 'draining';
            slot.selfDrained = true;
          }
          slot.remaining = m.sockets;
          slot.drainTotal = m.sockets;
          this.#keepAccepting();
          break;
        case 'progress':
          slot.remaining = m.remaining;
          break;
        case 'report':
          slot.report = m.report;
          slot.remaining = 0;
          this.#metrics.observeDrain(m.report);
          break;
        case 'fatal':
          this.#firstFatal ??= m.message;
          this.#log.error({ workerPid: slot.pid, code: m.code }, m.message);
          break;
      }
    });
    worker.on('exit', (code: number | null, signal: string | null) => {
      clearTimeout(startTimer);
      const was = slot.state;
      slot.state = 'exited';
      slot.exitInfo = { code, signal };
      onListening(false);
      onExit();
      this.#keepAccepting();
      const serving = this.#phase === 'running' || this.#phase === 'rolling';
      if (serving && slot.selfDrained) {
        // Someone signalled this worker alone: it drained; keep the capacity.
        this.#log.info(
          { workerPid: slot.pid },
          `worker ${slot.pid} drained on its own signal; replacing it`,
        );
        this.#replace('signal');
      } else if (was === 'starting' && slot.forRoll && this.#phase === 'rolling') {
        // The roll loop sees it fail and stops; the old worker it was to replace still
        // serves, so a respawn would leave one worker too many.
        this.#log.error(
          { workerPid: slot.pid, code, signal },
          'replacement worker exited while starting',
        );
      } else if (was !== 'draining' && serving) {
        this.#onCrash(slot, code, signal);
      } else if (was !== 'draining' && this.#phase === 'starting') {
        this.#log.error({ workerPid: slot.pid, code, signal }, 'worker exited while starting');
      }
    });
    return slot;
  }

  #onCrash(slot: Slot, code: number | null, signal: string | null): void {
    const now = Date.now();
    this.#crashes = this.#crashes.filter((t) => now - t < this.#t.crashWindowMs);
    this.#crashes.push(now);
    const n = this.#crashes.length;
    if (n > this.#t.crashLimit) {
      this.#log.fatal(
        { crashes: n, windowMs: this.#t.crashWindowMs },
        `crash loop: ${n} worker crashes within ${this.#t.crashWindowMs} ms; giving up`,
      );
      this.#exitCode = 1;
      this.drainAll('crash loop');
      return;
    }
    const ceiling = Math.min(this.#t.backoffMaxMs, this.#t.backoffBaseMs * 2 ** (n - 1));
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.#log.error(
      { workerPid: slot.pid, code, signal, crashesInWindow: n, respawnInMs: delay },
      `worker ${slot.pid} died (${signal ?? `code ${code}`}); respawning in ${delay} ms`,
    );
    const timer = setTimeout(() => {
      this.#respawnTimers.delete(timer);
      this.#replace('crash');
    }, delay);
    this.#respawnTimers.add(timer);
  }

  #replace(reason: 'crash' | 'signal'): void {
    if (this.#phase === 'draining') return;
    const fresh = this.#fork();
    this.#metrics.restarts.inc({ reason });
    fresh.listening.then((ok) => {
      if (ok) this.#log.info({ workerPid: fresh.pid }, `worker ${fresh.pid} respawned`);
    });
  }

  /** SIGHUP: replace every worker, one at a time; repeated SIGHUPs coalesce. */
  roll(): void {
    if (this.#phase === 'draining') return;
    this.#generation++;
    if (this.#phase === 'rolling') {
      this.#log.info('SIGHUP during a roll: workers started before it will be rolled too');
      return;
    }
    if (this.#phase === 'starting') {
      this.#log.warn('SIGHUP while starting: ignored');
      return;
    }
    this.#phase = 'rolling';
    this.#log.info({ workers: this.#slots.size }, 'SIGHUP: rolling restart');
    this.#rollLoop().catch((err: unknown) => {
      this.#log.error({ err: (err as Error).message }, 'rolling restart failed');
      if (this.#phase === 'rolling') this.#phase = 'running';
      this.#resumeAccepting('the rolling restart failed');
    });
  }

  /**
   * Rolling restart: every ready worker forked before generation `below` stops taking new
   * connections (it keeps serving its sockets until its own drain). Clients closed by a
   * drain then reconnect into the newer generation only, instead of into an old worker that
   * would move them a second time when its own turn comes.
   */
  #stopAccepting(below: number): void {
    const stopping = [...this.#slots.values()].filter(
      (s) => s.state === 'ready' && s.accepting && s.generation < below,
    );
    if (stopping.length === 0) return;
    this.#log.info(
      { pids: stopping.map((s) => s.pid) },
      `rolling restart: ${stopping.length} old workers stop accepting new connections`,
    );
    for (const s of stopping) {
      s.accepting = false;
      sendToWorker(s.worker, msg({ type: 'accepting', accepting: false }));
    }
  }

  /** Ready workers stopped by {@link #stopAccepting} take new connections again. */
  #resumeAccepting(why: string): void {
    const stopped = [...this.#slots.values()].filter((s) => s.state === 'ready' && !s.accepting);
    if (stopped.length === 0) return;
    this.#log.warn(
      { pids: stopped.map((s) => s.pid) },
      `${why}: ${stopped.length} old workers accept new connections again`,
    );
    for (const s of stopped) {
      s.accepting = true;
      sendToWorker(s.worker, msg({ type: 'accepting', accepting: true }));
    }
  }

  /**
   * The port stays served: if no ready worker accepts any more (the replacements of a roll
   * crashed or were signalled), the old ones that stopped accepting take connections again.
   * (When the last worker leaves the cluster's shared socket, Node closes it.)
   */
  #keepAccepting(): void {
    if (this.#phase === 'draining') return;
    const serving = [...this.#slots.values()].some((s) => s.state === 'ready' && s.accepting);
    if (!serving) this.#resumeAccepting('no worker accepts new connections');
  }

  async #rollLoop(): Promise<void> {
    const started = Date.now();
    let rolled = 0;
    for (;;) {
      if (this.#phase !== 'rolling') return;
      const old = this.#nextToRoll();
      if (!old) break;
      const fresh = this.#fork(true);
      const ok = await fresh.listening;
      if (this.#phase !== 'rolling') return;
      if (!ok) {
        this.#log.error('rolling restart stopped: a replacement worker failed to start');
        break;
      }
      // The replacement listens: from now on only it (and the other new ones) take new
      // connections, so the clients of each drain below are moved once.
      this.#stopAccepting(fresh.generation);
      const budget = this.#opts.drainTimeout;
      old.state = 'draining';
      // No delay on a roll: the port stays served by the new workers, and a draining
      // worker that kept listening would refuse the clients the primary hands it.
      sendToWorker(
        old.worker,
        msg({
          type: 'drain',
          code: 1012,
          kind: 'restart',
          deadline: Date.now() + budget - exitMargin(budget),
          delayMs: 0,
          windowMs: this.#opts.drainWindow,
          rate: this.#opts.drainRate,
          reconnectWindowMs: this.#opts.reconnectWindow,
        }),
      );
      this.#metrics.restarts.inc({ reason: 'roll' });
      const killTimer = setTimeout(() => this.#kill(old), budget);
      await old.exited;
      clearTimeout(killTimer);
      if (old.report)
        this.#log.info(
          { workerPid: old.pid, report: old.report },
          `rolled worker ${old.pid}: ${summarize(old.report)}`,
        );
      rolled++;
      // Its clients come back over the next --reconnect-window, as their hints ask: let that
      // wave pass before the next worker's clients are closed, so two waves never land on the
      // new workers at once.
      if (this.#nextToRoll() && this.#opts.reconnectWindow > 0) {
        await this.#rollPause(this.#opts.reconnectWindow);
      }
    }
    if (this.#phase === 'rolling') {
      this.#phase = 'running';
      // Outside a roll every ready worker accepts (after a failed replacement, the old ones).
      this.#resumeAccepting('rolling restart stopped');
      this.#log.info(
        {
          rolled,
          durationMs: Date.now() - started,
          pids: this.#liveWorkers().map((w) => w.process.pid),
        },
        `rolling restart done: ${rolled} workers replaced`,
      );
    }
  }

  /** A ready worker started before the latest SIGHUP, if any. */
  #nextToRoll(): Slot | undefined {
    return [...this.#slots.values()].find(
      (s) => s.state === 'ready' && s.generation < this.#generation,
    );
  }

  /** Ends the pause between two rolled workers now (a full drain does not wait for it). */
  #endRollPause: (() => void) | undefined;

  #rollPause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#endRollPause = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#endRollPause = done;
    });
  }

  #kill(slot: Slot): void {
    if (slot.state === 'exited') return;
    slot.killed = true;
    this.#log.warn({ workerPid: slot.pid }, `worker ${slot.pid} missed its deadline; killing it`);
    slot.worker.process.kill('SIGKILL');
  }

  /** SIGTERM/SIGINT: drain every worker at once within the budget, then exit. */
  drainAll(reason: string): void {
    if (this.#phase === 'draining') return;
    this.#phase = 'draining';
    for (const t of this.#respawnTimers) clearTimeout(t);
    this.#respawnTimers.clear();
    this.#endRollPause?.();
    const started = Date.now();
    const budget = this.#opts.drainTimeout;
    const deadline = started + budget - exitMargin(budget);
    // A worker still starting holds no sockets: stop it without ceremony.
    for (const s of this.#slots.values()) {
      if (s.state === 'starting') s.worker.process.kill('SIGKILL');
    }
    const live = [...this.#slots.values()].filter(
      (s) => s.state === 'ready' || s.state === 'draining',
    );
    // Workers tell their socket counts when they start draining ('draining' messages).
    const total = (): number => live.reduce((n, s) => n + s.drainTotal, 0);
    this.#log.info(
      { reason, workers: live.length, budgetMs: budget },
      `${reason}: draining ${live.length} workers (send it again to terminate now)`,
    );
    for (const s of live) {
      s.state = 'draining';
      sendToWorker(
        s.worker,
        msg({
          type: 'drain',
          code: 1001,
          kind: 'shutdown',
          deadline,
          delayMs: this.#opts.drainDelay,
          windowMs: this.#opts.drainWindow,
          // --drain-rate is for the whole server: each worker takes its share.
          rate: this.#opts.drainRate / Math.max(1, live.length),
          reconnectWindowMs: this.#opts.reconnectWindow,
        }),
      );
    }
    for (const s of this.#slots.values())
      sendToWorker(s.worker, msg({ type: 'cluster-ready', ready: false }));
    const progress = new DrainProgress(this.#log, total);
    const tick = setInterval(() => {
      progress.update(live.reduce((n, s) => n + (s.state === 'exited' ? 0 : s.remaining), 0));
    }, 250);
    // Backstop: whoever is still alive just before the budget ends is killed.
    const killTimer = setTimeout(
      () => {
        for (const s of live) this.#kill(s);
      },
      Math.max(0, budget - Math.min(100, exitMargin(budget) / 2)),
    );
    Promise.all(live.map((s) => s.exited)).then(() => {
      clearTimeout(killTimer);
      clearInterval(tick);
      progress.end();
      this.#finish(live, started);
    });
  }

  #finish(slots: Slot[], started: number): void {
    const workers = slots.map((s) => ({
      pid: s.pid,
      ...(s.report ?? {}),
      exit: s.exitInfo,
      killed: s.killed,
      lost: !s.report && s.exitInfo?.signal === 'SIGKILL' && !s.killed,
    }));
    const sum = (k: keyof DrainReport): number =>
      slots.reduce((n, s) => n + ((s.report?.[k] as number | undefined) ?? 0), 0);
    const report = {
      sockets: sum('sockets'),
      clean: sum('clean'),
      terminated: sum('terminated'),
      dropped: sum('dropped'),
      inflightCompleted: sum('inflightCompleted'),
      late: sum('late'),
      abandoned: sum('abandoned'),
      lateUpgrades: sum('lateUpgrades'),
      durationMs: Date.now() - started,
      code: 1001,
      windowMs: Math.max(0, ...slots.map((s) => s.report?.windowMs ?? 0)),
      // A worker that reported its drain and was only slow to exit is not a failure.
      workersKilled: slots.filter((s) => s.killed && !s.report).length,
      workersLost: slots.filter((s) => !s.report && !s.killed && s.state === 'exited').length,
      workers,
    };
    const failed = report.workersKilled + report.workersLost > 0 && !this.#forced;
    if (failed) this.#exitCode = 1;
    if (this.#forced) this.#exitCode = 1;
    this.#log.info(
      { report },
      `${summarize(report)}; ${slots.length} workers${failed ? `, ${report.workersKilled} killed, ${report.workersLost} lost` : ''}`,
    );
    if (this.#opts.report) writeReport(this.#log, this.#opts.report, report);
    this.#metrics.close();
    setImmediate(() => process.exit(this.#exitCode));
  }

  /** Second signal: terminate every socket now and exit 1 within a second. */
  forceAll(reason: string): void {
    this.#forced = true;
    this.#exitCode = 1;
    this.#log.warn({ reason }, `${reason}: terminating every socket now`);
    for (const t of this.#respawnTimers) clearTimeout(t);
    const live = [...this.#slots.values()].filter((s) => s.state !== 'exited');
    for (const s of live) sendToWorker(s.worker, msg({ type: 'terminate' }));
    setTimeout(() => {
      for (const s of live) {
        if (s.state !== 'exited') {
          s.killed = true;
          s.worker.process.kill('SIGKILL');
        }
      }
    }, 500).unref();
    Promise.all(live.map((s) => s.exited)).then(() => {
      this.#metrics.close();
      setImmediate(() => process.exit(1));
    });
    setTimeout(() => process.exit(1), 900).unref();
  }
}
