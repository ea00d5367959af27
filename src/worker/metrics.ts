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
import type { DrainReport } from './drain.js';
import type { WsdrainServer } from './server.js';

/** Buckets of drain durations, in seconds. */
export const DRAIN_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

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
    server.on('conn-close', (_conn: unknown, code: number) => closed.inc({ code: String(code) }));
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
