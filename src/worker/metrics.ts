/**
 * Metrics of one worker, in a prom-client registry of its own. The primary collects them over
 * IPC and sums them (see src/primary/metrics.ts).
 */
import {
  Counter,
  Gauge,
  Histogram,
  type MetricObjectWithValues,
  type MetricValue,
  Registry,
} from 'prom-client';
import { DRAIN_BUCKETS, type DrainReport } from '../drain/report.js';
import type { WsdrainServer } from './server.js';

/**
 * A counter fed at scrape time from counts the server keeps anyway (no work on the paths
 * that count), one series per key of what `read` returns, as the value of `label` (no label
 * when `label` is '': then `read` returns one key, '').
 */
function counterOf(
  registers: Registry[],
  name: string,
  help: string,
  label: string,
  read: () => Record<string, number>,
): void {
  const seen = new Map<string, number>();
  new Counter({
    name,
    help,
    labelNames: label ? [label] : [],
    registers,
    collect() {
      for (const [value, n] of Object.entries(read())) {
        const was = seen.get(value) ?? 0;
        const labels = label ? { [label]: value } : {};
        if (n > was || !seen.has(value)) this.inc(labels, n - was);
        seen.set(value, n);
      }
    },
  });
}

/** A counter without labels, fed at scrape time from a total kept elsewhere. */
function totalOf(registers: Registry[], name: string, help: string, read: () => number): void {
  let seen = 0;
  new Counter({
    name,
    help,
    registers,
    collect() {
      const n = read();
      if (n > seen) this.inc(n - seen);
      seen = n;
    },
  });
}

/** Publish round trips to a remote broker, in seconds. */
const PUBLISH_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/**
 * Metrics of a remote broker (`--broker`), summed over workers like the rest: named
 * `wsdrain_broker_*` (the topics' own counters, publications and deliveries, are not here).
 */
function brokerMetrics(registers: Registry[], server: WsdrainServer): void {
  const broker = server.broker;
  const stats = broker.stats?.bind(broker);
  if (!stats) return;
  new Gauge({
    name: 'wsdrain_broker_connected',
    help: 'Workers connected to the broker (1 each while it is reachable; compare with the number of workers)',
    registers,
    collect() {
      this.set(stats().connected ? 1 : 0);
    },
  });
  totalOf(
    registers,
    'wsdrain_broker_lost_total',
    'Times a worker lost the broker (connection dropped or Redis stopped answering)',
    () => stats().losses,
  );
  totalOf(
    registers,
    'wsdrain_broker_errors_total',
    'Broker errors: connection errors and failed or timed-out commands',
    () => stats().errors,
  );
  totalOf(
    registers,
    'wsdrain_broker_publish_failures_total',
    'Publications the broker refused or failed (the publisher got an error; nothing was queued)',
    () => stats().publishFailures,
  );
  totalOf(
    registers,
    'wsdrain_broker_gaps_total',
    'Topics whose live stream had a hole (the broker came back, or a message was missing): their subscribers were asked to recover',
    () => stats().gaps,
  );
  const lag = new Histogram({
    name: 'wsdrain_broker_publish_seconds',
    help: 'Publish round trip to the broker (the Lua script that sequences, stores and fans out)',
    buckets: PUBLISH_BUCKETS,
    registers,
  });
  broker.onPublishTime = (seconds) => lag.observe(seconds);
}

/** The worker-side metrics. */
export class WorkerMetrics {
  readonly registry = new Registry();
  readonly #drain: Histogram;

  constructor(server: WsdrainServer) {
    const registers = [this.registry];
    new Gauge({
      name: 'wsdrain_connections_open',
      help: 'WebSocket connections open',
      registers,
      collect() {
        this.set(server.connections);
      },
    });
    const closed = new Counter({
      name: 'wsdrain_connections_closed_total',
      help: 'WebSocket connections closed, by close code',
      labelNames: ['code'],
      registers,
    });
    server.conns.on('close', (_conn: unknown, code: number) => closed.inc({ code: String(code) }));
    counterOf(
      registers,
      'wsdrain_connections_refused_total',
      'Connections and upgrades refused or closed before their upgrade, by reason',
      'reason',
      () => {
        const s = server.stats();
        return {
          full: s.refusedFull,
          origin: s.refusedOrigin,
          per_ip: s.refusedPerIp,
          malformed: s.refusedMalformed,
          draining: s.refusedDraining,
          no_descriptor: s.refusedNoRoom,
          idle_evicted: s.evictedIdle,
          idle_timeout: s.shortTimeouts,
        };
      },
    );
    counterOf(
      registers,
      'wsdrain_connections_cut_total',
      'WebSocket connections closed by a limit, by reason',
      'reason',
      () => {
        const s = server.conns.stats;
        return {
          slow_consumer: s.slowConsumers,
          rate_limit: s.rateLimited,
          heartbeat: s.heartbeatTimeouts,
          unfinished_message: s.unfinishedMessages,
        };
      },
    );
    counterOf(
      registers,
      'wsdrain_connections_balanced_total',
      'New connections a held worker handed back to the primary, and those taken from one (see Balance)',
      'direction',
      () => ({ handed_back: server.handback.stats.handedBack, taken: server.handback.stats.taken }),
    );
    const { app } = server;
    counterOf(
      registers,
      'wsdrain_publications_total',
      'Publications made from this worker (hooks, wsdrain.v1 clients), by result',
      'result',
      () => ({
        ok: app.published,
        failed: app.publishFailures,
      }),
    );
    counterOf(
      registers,
      'wsdrain_deliveries_total',
      'Publications written to subscribers',
      '',
      () => ({
        '': app.topics.deliveries,
      }),
    );
    counterOf(
      registers,
      'wsdrain_recoveries_total',
      'Subscriptions since a position: recovered, or told they could not be',
      'result',
      () => ({
        recovered: app.topics.recovered,
        not_recovered: app.topics.notRecovered,
      }),
    );
    new Gauge({
      name: 'wsdrain_subscriptions',
      help: 'Topic subscriptions held',
      registers,
      collect() {
        this.set(app.topics.subscriptions);
      },
    });
    brokerMetrics(registers, server);
    this.#drain = new Histogram({
      name: 'wsdrain_drain_duration_seconds',
      help: 'Duration of drains, from signal to the last socket released',
      buckets: DRAIN_BUCKETS,
      registers,
    });
  }

  observeDrain(report: DrainReport): void {
    this.#drain.observe(report.durationMs / 1000);
  }

  /** Metrics as JSON, for aggregation by the primary. */
  get(): Promise<MetricObjectWithValues<MetricValue<string>>[]> {
    return this.registry.getMetricsAsJSON();
  }
}
