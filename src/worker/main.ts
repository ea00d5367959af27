/**
 * A server process: a cluster worker (commanded by the primary over IPC) or, with
 * `--workers 0`, the single process that owns the signals itself.
 *
 * Signals reach a worker directly too (Ctrl-C on the process group, systemd's default
 * KillMode, pm2's treekill): SIGTERM/SIGINT start the same drain as the primary's command,
 * and whichever comes second changes nothing. A second signal terminates at once.
 */
import cluster from 'node:cluster';
import { type Broker, IpcBroker } from '../app/broker.js';
import { callHook } from '../app/hooks.js';
import { appHandler, loadApp } from '../app/load.js';
import { connectRedisBroker, redisBrokerOptions } from '../app/redis.js';
import type { WsdrainApp } from '../app/types.js';
import { CloseCode } from '../codes.js';
import { type DrainCommand, drainCommand } from '../drain/budget.js';
import { DrainProgress } from '../drain/progress.js';
import { type DrainReport, summarize, writeReport } from '../drain/report.js';
import { hintReason } from '../hint.js';
import { createLogger, type Logger } from '../log.js';
import type { WsdrainOptions } from '../options.js';
import {
  type ConnHandle,
  isOurs,
  msg,
  pubFromWire,
  replyFromWire,
  requestToWire,
  sendToPrimary,
  type ToWorker,
} from '../protocol.js';
import { installSignals } from '../signals.js';
import { maskImplementation } from './bufferutil.js';
import { drainServer } from './drain.js';
import { WorkerMetrics } from './metrics.js';
import { WsdrainServer } from './server.js';

/** Longest a drained worker waits for its report to leave before it exits, ms. */
const REPORT_FLUSH_MS = 1000;

/** Longest wait for the primary's `synced` after a roll stopped this worker accepting. */
const STOPPED_SYNC_MS = 5000;

/** A start-up failure: logged, told to the primary (or stderr), exit 1. */
function failStart(log: Logger, clustered: boolean, e: Error & { code?: string }): void {
  log.fatal({ code: e.code }, e.message);
  if (clustered)
    sendToPrimary(msg({ type: 'fatal', code: e.code ?? 'WSD_ERR', message: e.message }));
  else process.stderr.write(`wsdrain: ${e.message}\n`);
  setImmediate(() => process.exit(1));
}

/** Starts the server of this process and wires signals (and IPC in a cluster worker). */
export async function runServerProcess(options: WsdrainOptions, app?: WsdrainApp): Promise<void> {
  const clustered = cluster.isWorker;
  const log = createLogger(
    options.logLevel,
    clustered ? 'worker' : 'server',
    clustered ? { worker: cluster.worker?.id } : {},
  );
  let loaded: { app: WsdrainApp; url?: string } | undefined = app ? { app } : undefined;
  if (!loaded && options.app) {
    try {
      loaded = await loadApp(options.app);
    } catch (err) {
      return failStart(log, clustered, err as Error & { code?: string });
    }
  }
  const broker =
    clustered && !options.brokerUrl
      ? new IpcBroker((id, req) =>
          sendToPrimary(msg({ type: 'broker', id, req: requestToWire(req) })),
        )
      : undefined;
  // --broker: this process talks to Redis itself (unreachable at start: exit 1).
  let remote: Broker | undefined;
  try {
    if (options.brokerUrl) remote = await connectRedisBroker(redisBrokerOptions(options, log));
  } catch (err) {
    return failStart(log, clustered, err as Error & { code?: string });
  }
  const server = new WsdrainServer({
    ...options,
    handler: (loaded?.url && appHandler(loaded.app, loaded.url)) || options.handler,
    logger: log,
    application: loaded?.app,
    broker: remote ?? broker,
    workerId: cluster.worker?.id ?? 0,
  });
  // In a cluster, /readyz answers 200 only once the primary says every worker listens.
  if (clustered) server.setClusterReady(false);
  const metrics = new WorkerMetrics(server);
  let drainStarted = false;
  /** The deadline of the drain under way (epoch ms). */
  let drainDeadline = 0;
  let exiting = false;
  const force = new AbortController();

  const exit = (code: number): void => {
    if (exiting) return;
    exiting = true;
    // Let pino's stdout writes finish before leaving.
    setImmediate(() => process.exit(code));
  };

  const startDrain = (cmd: DrainCommand): void => {
    if (drainStarted) return;
    drainStarted = true;
    drainDeadline = cmd.deadline;
    signals.markStopping();
    const total = server.connections;
    sendToPrimary(msg({ type: 'draining', code: cmd.code, sockets: total }));
    const progress = clustered ? undefined : new DrainProgress(log, total);
    log.info(
      { code: cmd.code, sockets: total, deadlineInMs: cmd.deadline - Date.now() },
      `drain started: closing ${total} sockets with ${cmd.code}`,
    );
    drainServer(server, {
      code: cmd.code,
      deadline: cmd.deadline,
      delayMs: cmd.delayMs,
      windowMs: cmd.windowMs,
      rate: cmd.rate,
      reason: hintReason(cmd.kind, cmd.reconnectWindowMs),
      signal: force.signal,
      onProgress: (remaining) => {
        if (clustered) sendToPrimary(msg({ type: 'progress', remaining }));
        else progress?.update(remaining);
      },
      // Out as soon as it is complete, before the pool stops: the primary has it even if the
      // exit is slow.
      onReport: (report) => {
        if (!clustered) return;
        reportSent = new Promise((resolve) => {
          if (sendToPrimary(msg({ type: 'report', report }), () => resolve())) {
            setTimeout(resolve, REPORT_FLUSH_MS).unref();
          } else resolve();
        });
      },
    }).then(
      (report) => {
        progress?.end();
        metrics.observeDrain(report);
        finish(report);
      },
      (err: unknown) => {
        log.error({ err: (err as Error).message }, 'drain failed');
        exit(1);
      },
    );
  };

  /** The report's IPC message is out (or given up on). */
  let reportSent: Promise<void> | undefined;

  /** Ends the waits for the primary's `synced`, one per `sync` sent, in order. */
  const synced: Array<() => void> = [];

  /**
   * Resolves with true once the primary has answered a `sync` sent now, with the listener
   * closed; with false after `backstopMs` (a primary that does not answer: stopped,
   * overloaded) or at once when there is no primary to ask.
   * Node's cluster hands each new connection to a worker and keeps it until that worker
   * answers; one it handed over before it read that this worker's listener closed is on its
   * way here. This worker answers it on arrival (refused, so the primary hands it to another
   * worker), but only if it has not exited yet: a connection handed to an exited worker stays
   * open and unanswered in the primary. The primary's answer comes after every such hand-over.
   */
  const handoffsAnswered = (backstopMs: number): Promise<boolean> =>
    new Promise((resolve) => {
      let settled = false;
      const done = (answered: boolean): void => {
        if (settled) return;
        settled = true;
        clearTimeout(backstop);
        resolve(answered);
      };
      const backstop = setTimeout(() => done(false), backstopMs);
      synced.push(() => done(true));
      if (!sendToPrimary(msg({ type: 'sync' }))) done(false);
    });

  const finish = (report: DrainReport): void => {
    log.info({ report }, summarize(report));
    const code = force.signal.aborted ? 1 : 0;
    if (clustered) {
      // Exit once the report is out: it may queue behind thousands of IPC messages (a drain
      // ends every subscription), and exiting drops what is still queued, the report with it
      // (the primary then counts this worker lost). The timer is the backstop. And not before
      // the connections the primary was handing this worker as its listener closed are
      // answered (the listener is closed by now, on a shutdown too).
      (reportSent ?? Promise.resolve())
        .then(() => handoffsAnswered(Math.max(REPORT_FLUSH_MS, drainDeadline - Date.now())))
        .then(() => exit(code));
      return;
    }
    if (options.report) {
      writeReport(log, options.report, { ...report, workers: [{ pid: process.pid, ...report }] });
    }
    exit(code);
  };

  const forceStop = (): void => {
    force.abort();
    server.terminateAll();
    // The drain resolves on the abort and exits 1; this is the backstop.
    setTimeout(() => process.exit(1), 500).unref();
    if (!drainStarted) exit(1);
  };

  // A signal to this process: the whole budget from now, 1001. In a cluster the rate is this
  // worker's share of --drain-rate.
  const signals = installSignals({
    onStop: (signal) => {
      log.info({ signal }, `${signal}: draining (send it again to terminate now)`);
      startDrain(drainCommand('shutdown', options, Math.max(1, options.workers)));
    },
    onForce: (signal) => {
      log.warn({ signal }, `${signal} again: terminating every socket now`);
      forceStop();
    },
    onReload: () => {
      if (!clustered) log.warn('SIGHUP ignored: rolling restarts need --workers 1 or more');
    },
  });

  if (clustered) {
    process.on('message', (m: unknown, handle: unknown) => {
      if (!isOurs<ToWorker>(m)) return;
      switch (m.type) {
        case 'hold':
          // A draining worker answers new connections as its drain does.
          server.handback.held = m.held && server.state === 'running';
          log.debug(
            { held: m.held },
            m.held ? 'held: new connections go to other workers' : 'released',
          );
          break;
        case 'conn':
          if (handle) server.handback.take(handle as ConnHandle, m.hops);
          break;
        case 'drain':
          startDrain(m);
          break;
        case 'terminate':
          forceStop();
          break;
        case 'cluster-ready':
          server.setClusterReady(m.ready);
          break;
        case 'accepting':
          // A rolling restart: an old worker stops taking new connections while the new
          // generation starts (its own sockets are served until its drain), or takes them
          // again when the roll stopped.
          if (!m.accepting) {
            if (server.state !== 'running') {
              // Draining on its own: the drain owns the listener, and the exit waits for the
              // connections on their way here. Nothing for the roll to wait for.
              sendToPrimary(msg({ type: 'stopped' }));
              break;
            }
            server.closeListener();
            log.info('stopped accepting new connections');
            // The roll drains this worker only once the connections on their way here are
            // answered: stopped (SIGSTOP) or killed before, it would leave them unanswered.
            handoffsAnswered(STOPPED_SYNC_MS).then((answered) => {
              if (answered) sendToPrimary(msg({ type: 'stopped' }));
            });
          } else {
            server.reopenListener().then(
              () => log.info('accepting new connections again'),
              (err: unknown) => log.error({ err: (err as Error).message }, 'cannot listen again'),
            );
          }
          break;
        case 'broker-reply':
          broker?.answer(m.id, m.ok, replyFromWire(m.value));
          break;
        case 'publication':
          broker?.deliver(pubFromWire(m.pub));
          break;
        case 'synced':
          synced.shift()?.();
          break;
        case 'metrics-request':
          metrics.get().then(
            (metricsJson) =>
              sendToPrimary(msg({ type: 'metrics', id: m.id, metrics: metricsJson })),
            () => sendToPrimary(msg({ type: 'metrics', id: m.id, metrics: [] })),
          );
          break;
      }
    });
    // The primary is gone (killed): Node exits this worker right after this event, so there is
    // no time for an asynchronous drain. Send every close frame now, synchronously.
    cluster.worker?.on('disconnect', () => {
      broker?.fail('the primary is gone');
      if (exiting) return;
      const reason = hintReason('shutdown', options.reconnectWindow);
      for (const conn of server.conns.all) {
        server.conns.closeNow(conn, CloseCode.GOING_AWAY, reason());
      }
    });
  }

  let address: { port: number };
  try {
    const setup = loaded?.app.setup;
    if (setup) await callHook('setup', () => setup(server.app.api), options.hookTimeout, log);
    address = await server.listen();
  } catch (err) {
    await server.shutdown().catch(() => {});
    return failStart(log, clustered, err as Error & { code?: string });
  }
  log.info(
    {
      port: address.port,
      host: options.host,
      maxConnections: server.maxConnections,
      mask: maskImplementation(),
    },
    clustered ? 'worker listening' : `wsdrain ready on ${options.host}:${address.port}`,
  );
  if (clustered) {
    sendToPrimary(msg({ type: 'listening', port: address.port }));
    reportSockets(server);
  } else if (process.send) process.send('ready');
}

/** How often at most a worker tells the primary its socket count (for the balance), in ms. */
const SOCKETS_REPORT_MS = 100;

/**
 * Tells the primary the worker's WebSocket connections, and the connections handed to it that
 * it has taken, whenever either changed.
 */
function reportSockets(server: WsdrainServer): void {
  let last = { count: -1, taken: -1 };
  const timer = setInterval(() => {
    const count = server.conns.size;
    const { taken } = server.handback.stats;
    if (count === last.count && taken === last.taken) return;
    last = { count, taken };
    sendToPrimary(msg({ type: 'sockets', count, taken }));
  }, SOCKETS_REPORT_MS);
  timer.unref();
}
