/**
 * The cluster primary: forks the workers, owns the signals, broadcasts drains, rolls workers
 * on SIGHUP (./roll.ts), respawns crashed ones with backoff (./workers.ts), aggregates drain
 * reports and metrics, and picks the exit code.
 *
 * Phases of the primary (a roll runs while `running`):
 *
 *     starting --all listening--> running
 *         \                          |
 *          \------------------- draining     (SIGTERM/SIGINT, crash loop)
 *                                    |
 *                                  exit     (second signal: terminate now, exit 1)
 */
import cluster from 'node:cluster';
import { answerBroker } from '../app/broker.js';
import { callHook } from '../app/hooks.js';
import { loadApp } from '../app/load.js';
import { connectRedisBroker, type RedisBroker, redisBrokerOptions } from '../app/redis.js';
import { Sequencer } from '../app/sequencer.js';
import type { PrimaryApi, PublishData, WsdrainApp } from '../app/types.js';
import { drainCommand, killAfter } from '../drain/budget.js';
import { DrainProgress } from '../drain/progress.js';
import { summarize, sumReports, writeReport } from '../drain/report.js';
import { createLogger, type Logger } from '../log.js';
import type { WsdrainOptions } from '../options.js';
import { installSignals } from '../signals.js';
import { Balance } from './balance.js';
import { PrimaryMetrics } from './metrics.js';
import { Roll } from './roll.js';
import { type BackoffTimings, CrashBackoff, WorkerRecord, type WorkerState } from './workers.js';

/** Tunables that tests shorten (`WSDRAIN_TIMINGS`, JSON); the defaults suit production. */
export interface CoordinatorTimings extends BackoffTimings {
  /** A worker that does not listen within this is killed, in ms. @default 30000 */
  startTimeout: number;
}

export const kDefaultTimings: CoordinatorTimings = {
  startTimeout: 30_000,
  backoffBaseMs: 100,
  backoffMaxMs: 10_000,
  crashLimit: 10,
  crashWindowMs: 60_000,
};

/** Runs the primary until it exits the process. */
export async function runPrimary(options: WsdrainOptions, app?: WsdrainApp): Promise<Coordinator> {
  const timings = { ...kDefaultTimings };
  const fromEnv = process.env.WSDRAIN_TIMINGS;
  if (fromEnv) Object.assign(timings, JSON.parse(fromEnv) as Partial<CoordinatorTimings>);
  const log = createLogger(options.logLevel, 'primary');
  const coordinator = new Coordinator(options, log, timings, app);
  await coordinator.start();
  return coordinator;
}

export class Coordinator {
  readonly #opts: WsdrainOptions;
  readonly #log: Logger;
  readonly #t: CoordinatorTimings;
  readonly #records = new Map<number, WorkerRecord>();
  readonly #metrics: PrimaryMetrics;
  readonly #backoff: CrashBackoff;
  readonly #roll: Roll;
  readonly #balance: Balance;
  #phase: 'starting' | 'running' | 'draining' = 'starting';
  #port = 0;
  #exitCode = 0;
  #respawnTimers = new Set<NodeJS.Timeout>();
  /** Workers stopped while starting because --workers serve without them. */
  readonly #calledOff = new Set<WorkerRecord>();
  #forced = false;
  /** The embedded broker: topics' offsets, epochs and history, outside the workers. */
  readonly #seq: Sequencer;
  /** With --broker, the primary publishes through Redis (its workers talk to Redis too). */
  #remote: RedisBroker | undefined;

  readonly #app: WsdrainApp | undefined;

  /** `app`: an app given as an object (programmatic start); else `--app` is loaded. */
  constructor(opts: WsdrainOptions, log: Logger, timings: CoordinatorTimings, app?: WsdrainApp) {
    this.#app = app;
    this.#opts = opts;
    this.#log = log;
    this.#t = timings;
    this.#backoff = new CrashBackoff(timings);
    this.#seq = new Sequencer({
      historySize: opts.historySize,
      historyTtl: opts.historyTtl,
      deliver: (to, pub) => this.#records.get(to)?.publication(pub),
    });
    this.#metrics = new PrimaryMetrics(log, () => this.#live().map((r) => r.worker));
    this.#metrics.watchBroker(() => ({ topics: this.#seq.size, history: this.#seq.historyLength }));
    this.#balance = new Balance(() => this.#records.values(), log);
    this.#roll = new Roll({
      log,
      options: opts,
      records: () => this.#records.values(),
      fork: (forRoll) => this.#fork(forRoll),
      draining: () => this.#phase === 'draining',
      onRolled: () => this.#metrics.restarts.inc({ reason: 'roll' }),
      startTimeout: timings.startTimeout,
      ended: () => this.#trim(),
    });
  }

  /** What the app's `primary` hook (and an embedder) may do here: publish. */
  get primaryApi(): PrimaryApi {
    return {
      publish: async (topic: string, data: PublishData) => {
        if (this.#remote) return this.#remote.publish(topic, data);
        const { offset, epoch } = this.#seq.publish(topic, data);
        return { topic, offset, epoch };
      },
      log: this.#log,
    };
  }

  #live(): WorkerRecord[] {
    return [...this.#records.values()].filter((r) => r.state !== 'exited');
  }

  async start(): Promise<void> {
    installSignals({
      onStop: (signal) => this.drainAll(signal),
      onForce: (signal) => this.forceAll(signal),
      onReload: () => this.roll(),
    });
    // JSON on the IPC channel (Node's default): bytes in publications are encoded by
    // protocol.ts, and the cluster's own message for every accepted connection stays cheap.
    cluster.setupPrimary({ silent: false });
    this.#seq.sweeping();
    try {
      const o = this.#opts;
      if (o.brokerUrl)
        this.#remote = await connectRedisBroker(redisBrokerOptions(o, this.#log, true));
    } catch (err) {
      this.#fatal((err as Error).message);
      return;
    }
    if (this.#app || this.#opts.app) {
      try {
        const app = this.#app ?? (await loadApp(this.#opts.app!)).app;
        const hook = app.primary;
        if (hook) {
          await callHook('primary', () => hook(this.primaryApi), this.#opts.hookTimeout, this.#log);
        }
      } catch (err) {
        this.#fatal((err as Error).message);
        return;
      }
    }
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
    const first = Array.from({ length: this.#opts.workers }, () => this.#fork());
    const ok = await Promise.all(first.map((r) => r.listening));
    if (this.#phase !== 'starting') return; // a signal arrived while starting
    if (ok.includes(false)) {
      const why = first.find((r) => r.fatal)?.fatal ?? 'see the log lines above';
      this.#fatal(`workers failed to start: ${why}`);
      return;
    }
    this.#phase = 'running';
    for (const r of this.#records.values()) r.setClusterReady(true);
    this.#log.info(
      { port: this.#port, workers: this.#opts.workers, pids: first.map((r) => r.pid) },
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

  #fork(forRoll = false): WorkerRecord {
    const rec = new WorkerRecord(
      this.#opts,
      this.#roll.generation,
      forRoll,
      this.#t.startTimeout,
      this.#log,
      {
        listening: (r, port) => {
          this.#port = port;
          if (this.#phase === 'running') r.setClusterReady(true);
          this.#roll.changed();
          this.#balance.update();
        },
        sockets: () => this.#balance.update(),
        handback: (_r, handle, hops) => this.#balance.place(handle, hops),
        selfDrain: () => this.#roll.keepAccepting(),
        report: (_r, report) => this.#metrics.observeDrain(report),
        exit: (r, was) => {
          this.#seq.dropParty(r.worker.id);
          this.#balance.update();
          this.#onExit(r, was);
        },
        broker: (r, id, req) => {
          try {
            r.answer(id, true, answerBroker(this.#seq, r.worker.id, req));
          } catch (err) {
            r.answer(id, false, (err as Error).message);
          }
        },
      },
    );
    this.#records.set(rec.worker.id, rec);
    return rec;
  }

  #onExit(r: WorkerRecord, was: WorkerState): void {
    this.#roll.keepAccepting();
    if (this.#calledOff.delete(r)) return; // stopped by #trim: not a crash
    const { code, signal } = r.exitInfo ?? { code: null, signal: null };
    if (this.#phase === 'running' && r.selfDrained) {
      // Someone signalled this worker alone: it drained; keep the capacity.
      this.#log.info(
        { workerPid: r.pid },
        `worker ${r.pid} drained on its own signal; replacing it`,
      );
      this.#replace('signal');
    } else if (was === 'starting' && r.forRoll && this.#roll.active) {
      // The roll sees it fail and stops; the old worker it was to replace still serves, so a
      // respawn would leave one worker too many.
      this.#log.error(
        { workerPid: r.pid, code, signal },
        'replacement worker exited while starting',
      );
    } else if (was !== 'draining' && this.#phase === 'running' && this.#roll.covers(r)) {
      // An old worker the roll has forked a replacement for: nothing to respawn.
      this.#log.error(
        { workerPid: r.pid, code, signal },
        `old worker ${r.pid} died during the roll (${signal ?? `code ${code}`}); not respawned: the roll forked its replacement`,
      );
    } else if (was !== 'draining' && this.#phase === 'running') {
      this.#onCrash(r, code, signal);
    } else if (was !== 'draining' && this.#phase === 'starting') {
      this.#log.error({ workerPid: r.pid, code, signal }, 'worker exited while starting');
    }
  }

  #onCrash(r: WorkerRecord, code: number | null, signal: string | null): void {
    const { crashes, delayMs, loop } = this.#backoff.crash();
    if (loop) {
      this.#log.fatal(
        { crashes, windowMs: this.#t.crashWindowMs },
        `crash loop: ${crashes} worker crashes within ${this.#t.crashWindowMs} ms; giving up`,
      );
      this.#exitCode = 1;
      this.drainAll('crash loop');
      return;
    }
    this.#log.error(
      { workerPid: r.pid, code, signal, crashesInWindow: crashes, respawnInMs: delayMs },
      `worker ${r.pid} died (${signal ?? `code ${code}`}); respawning in ${delayMs} ms`,
    );
    const timer = setTimeout(() => {
      this.#respawnTimers.delete(timer);
      this.#replace('crash');
    }, delayMs);
    this.#respawnTimers.add(timer);
  }

  #replace(reason: 'crash' | 'signal'): void {
    if (this.#phase === 'draining') return;
    // Outside a roll, never more than --workers: a roll that stopped waiting for a respawned
    // replacement left an old worker serving in its place.
    const serving = this.#live().filter((r) => r.state !== 'draining').length;
    if (reason === 'crash' && !this.#roll.active && serving >= this.#opts.workers) {
      this.#log.info(
        { workers: serving },
        `not respawned: ${serving} workers serve already (--workers ${this.#opts.workers})`,
      );
      return;
    }
    const fresh = this.#fork();
    this.#metrics.restarts.inc({ reason });
    fresh.listening.then((ok) => {
      if (ok) this.#log.info({ workerPid: fresh.pid }, `worker ${fresh.pid} respawned`);
    });
  }

  /**
   * Outside a roll, never more than --workers workers: a roll that stopped waiting for a
   * respawned replacement left an old worker serving in its place, so respawns still starting
   * beyond the count are stopped (they hold no sockets); those not forked yet are not made
   * (see #replace).
   */
  #trim(): void {
    if (this.#phase !== 'running') return;
    const serving = this.#live().filter((r) => r.state !== 'draining');
    let surplus = serving.length - this.#opts.workers;
    for (const r of serving.reverse()) {
      if (surplus <= 0) break;
      if (r.state !== 'starting') continue;
      surplus--;
      this.#calledOff.add(r);
      this.#log.warn(
        { workerPid: r.pid },
        `worker ${r.pid} stopped while starting: ${this.#opts.workers} workers serve without it`,
      );
      r.kill();
    }
  }

  /** SIGHUP: replace every worker, one at a time; repeated SIGHUPs coalesce. */
  roll(): void {
    if (this.#phase === 'draining') return;
    if (this.#phase === 'starting') {
      this.#log.warn('SIGHUP while starting: ignored');
      return;
    }
    this.#roll.request();
  }

  /** SIGTERM/SIGINT: drain every worker at once within the budget, then exit. */
  drainAll(reason: string): void {
    if (this.#phase === 'draining') return;
    this.#phase = 'draining';
    for (const t of this.#respawnTimers) clearTimeout(t);
    this.#respawnTimers.clear();
    this.#roll.interrupt();
    const started = Date.now();
    const budget = this.#opts.drainTimeout;
    // A worker still starting holds no sockets: stop it without ceremony.
    for (const r of this.#records.values()) if (r.state === 'starting') r.kill();
    const live = [...this.#records.values()].filter(
      (r) => r.state === 'ready' || r.state === 'draining',
    );
    this.#log.info(
      { reason, workers: live.length, budgetMs: budget },
      `${reason}: draining ${live.length} workers (send it again to terminate now)`,
    );
    // --drain-rate is for the whole server: each worker takes its share.
    const cmd = drainCommand('shutdown', this.#opts, live.length, started);
    for (const r of live) r.drain(cmd);
    for (const r of this.#records.values()) r.setClusterReady(false);
    // Workers tell their socket counts when they start draining ('draining' messages).
    const total = (): number => live.reduce((n, r) => n + r.drainTotal, 0);
    const progress = new DrainProgress(this.#log, total);
    const tick = setInterval(() => {
      progress.update(live.reduce((n, r) => n + (r.state === 'exited' ? 0 : r.remaining), 0));
    }, 250);
    // Backstop: whoever is still alive just before the budget ends is killed.
    const killTimer = setTimeout(() => {
      for (const r of live) {
        if (r.state === 'exited') continue;
        this.#log.warn({ workerPid: r.pid }, `worker ${r.pid} missed its deadline; killing it`);
        r.kill();
      }
    }, killAfter(budget));
    Promise.all(live.map((r) => r.exited)).then(() => {
      clearTimeout(killTimer);
      clearInterval(tick);
      progress.end();
      this.#finish(live, cmd.code, started);
    });
  }

  #finish(drained: WorkerRecord[], code: number, started: number): void {
    const report = sumReports(
      drained.map((r) => r.outcome()),
      code,
      Date.now() - started,
    );
    const failed = report.workersKilled + report.workersLost > 0 && !this.#forced;
    if (failed || this.#forced) this.#exitCode = 1;
    this.#log.info(
      { report },
      `${summarize(report)}; ${drained.length} workers${failed ? `, ${report.workersKilled} killed, ${report.workersLost} lost` : ''}`,
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
    const live = this.#live();
    for (const r of live) r.terminate();
    setTimeout(() => {
      for (const r of live) r.kill();
    }, 500).unref();
    Promise.all(live.map((r) => r.exited)).then(() => {
      this.#metrics.close();
      setImmediate(() => process.exit(1));
    });
    setTimeout(() => process.exit(1), 900).unref();
  }
}
