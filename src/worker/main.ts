/**
 * A server process: a cluster worker (commanded by the primary over IPC) or, with
 * `--workers 0`, the single process that owns the signals itself.
 *
 * Signals reach a worker directly too (Ctrl-C on the process group, systemd's default
 * KillMode, pm2's treekill): SIGTERM/SIGINT start the same drain as the primary's command,
 * and whichever comes second changes nothing. A second signal terminates at once.
 */
import cluster from 'node:cluster';
import { writeFileSync } from 'node:fs';
import { hintReason } from '../hint.js';
import { createLogger, type Logger } from '../log.js';
import type { WsdrainOptions } from '../options.js';
import { DrainProgress, exitMargin } from '../progress.js';
import { type DrainCommand, isOurs, msg, sendToPrimary, type ToWorker } from '../protocol.js';
import { maskImplementation } from './bufferutil.js';
import { type DrainOptions, type DrainReport, drainServer } from './drain.js';
import { WorkerMetrics } from './metrics.js';
import { CloseCode, WsdrainServer } from './server.js';

/** Starts the server of this process and wires signals (and IPC in a cluster worker). */
export async function runServerProcess(options: WsdrainOptions): Promise<void> {
  const clustered = cluster.isWorker;
  const log = createLogger(
    options.logLevel,
    clustered ? 'worker' : 'server',
    clustered ? { worker: cluster.worker?.id } : {},
  );
  const server = new WsdrainServer({ ...options, logger: log });
  // In a cluster, /readyz answers 200 only once the primary says every worker listens.
  if (clustered) server.clusterReady = false;
  const metrics = new WorkerMetrics(server);
  let drainStarted = false;
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
    const total = server.connections;
    const o: DrainOptions = {
      code: cmd.code,
      deadline: cmd.deadline,
      delayMs: cmd.delayMs,
      windowMs: cmd.windowMs,
      rate: cmd.rate,
      reason: hintReason(cmd.kind, cmd.reconnectWindowMs),
    };
    sendToPrimary(msg({ type: 'draining', code: cmd.code, sockets: total }));
    const progress = clustered ? undefined : new DrainProgress(log, total);
    log.info(
      { code: o.code, sockets: total, deadlineInMs: o.deadline - Date.now() },
      `drain started: closing ${total} sockets with ${o.code}`,
    );
    drainServer(server, {
      ...o,
      signal: force.signal,
      onProgress: (remaining) => {
        if (clustered) sendToPrimary(msg({ type: 'progress', remaining }));
        else progress?.update(remaining);
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

  const finish = (report: DrainReport): void => {
    log.info({ report }, summarize(report));
    if (clustered) {
      sendToPrimary(msg({ type: 'report', report }));
    } else if (options.report) {
      writeReport(log, options.report, { ...report, workers: [{ pid: process.pid, ...report }] });
    }
    exit(force.signal.aborted ? 1 : 0);
  };

  const onSignal = (signal: NodeJS.Signals): void => {
    if (!drainStarted) {
      log.info({ signal }, `${signal}: draining (send it again to terminate now)`);
      startDrain(localDrainCommand(options));
      return;
    }
    log.warn({ signal }, `${signal} again: terminating every socket now`);
    forceStop();
  };

  const forceStop = (): void => {
    force.abort();
    server.terminateAll();
    // The drain resolves on the abort and exits 1; this is the backstop.
    setTimeout(() => process.exit(1), 500).unref();
    if (!drainStarted) exit(1);
  };

  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', () => {
    if (!clustered) log.warn('SIGHUP ignored: rolling restarts need --workers 1 or more');
  });

  if (clustered) {
    process.on('message', (m: unknown) => {
      if (!isOurs<ToWorker>(m)) return;
      switch (m.type) {
        case 'drain':
          startDrain(m);
          break;
        case 'terminate':
          forceStop();
          break;
        case 'cluster-ready':
          server.clusterReady = m.ready;
          break;
        case 'accepting':
          // A rolling restart: an old worker stops taking new connections while the new
          // generation starts (its own sockets are served until its drain), or takes them
          // again when the roll stopped.
          if (!m.accepting) {
            if (server.state !== 'running') break; // draining: the drain owns the listener
            server.closeListener();
            log.info('stopped accepting new connections');
          } else {
            server.reopenListener().then(
              () => log.info('accepting new connections again'),
              (err: unknown) => log.error({ err: (err as Error).message }, 'cannot listen again'),
            );
          }
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
      if (exiting) return;
      const reason = hintReason('shutdown', options.reconnectWindow);
      for (const conn of server.conns) server.closeConnNow(conn, CloseCode.GOING_AWAY, reason());
    });
  }

  let address: { port: number };
  try {
    address = await server.listen();
  } catch (err) {
    const e = err as Error & { code?: string };
    log.fatal({ code: e.code }, e.message);
    if (clustered)
      sendToPrimary(msg({ type: 'fatal', code: e.code ?? 'WSD_ERR', message: e.message }));
    else process.stderr.write(`wsdrain: ${e.message}\n`);
    await server.shutdown().catch(() => {});
    exit(1);
    return;
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
  if (clustered) sendToPrimary(msg({ type: 'listening', port: address.port }));
  else if (process.send) process.send('ready');
}

/**
 * The drain this process runs when it gets SIGTERM/SIGINT itself: the whole budget from
 * now, close code 1001. In a cluster the rate is the worker's share of --drain-rate.
 */
export function localDrainCommand(options: WsdrainOptions): DrainCommand {
  const budget = options.drainTimeout;
  return {
    code: CloseCode.GOING_AWAY,
    kind: 'shutdown',
    deadline: Date.now() + budget - exitMargin(budget),
    delayMs: options.drainDelay,
    windowMs: options.drainWindow,
    rate: options.drainRate / Math.max(1, options.workers),
    reconnectWindowMs: options.reconnectWindow,
  };
}

/** One-line human summary of a report. */
export function summarize(r: DrainReport): string {
  return `drained ${r.sockets} sockets in ${r.durationMs} ms: ${r.clean} clean, ${r.terminated} terminated, ${r.dropped} dropped; ${r.inflightCompleted} in-flight replies sent, ${r.abandoned ?? 0} abandoned at the deadline, ${r.late} late messages counted`;
}

/** Writes a report file; a failure is logged, not fatal. */
export function writeReport(log: Logger, file: string, data: unknown): void {
  try {
    writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
  } catch (err) {
    log.error({ err: (err as Error).message, file }, 'cannot write the drain report');
  }
}
