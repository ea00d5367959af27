/**
 * `/metrics` on `--metrics-port`, served by the primary: each live worker's registry, asked
 * over IPC with a short timeout, summed with prom-client's AggregatorRegistry, plus the
 * primary's own counters (restarts and drain durations live here, so they survive workers).
 *
 * A worker that is gone or slow is left out of that scrape instead of failing it: a scrape
 * during a drain always answers.
 */
import type { Worker } from 'node:cluster';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  AggregatorRegistry,
  Counter,
  Gauge,
  Histogram,
  type MetricObjectWithValues,
  type MetricValue,
  Registry,
} from 'prom-client';
import { DRAIN_BUCKETS, type DrainReport } from '../drain/report.js';
import type { Logger } from '../log.js';
import { isOurs, msg, sendToWorker, type ToPrimary } from '../protocol.js';

/** How long a scrape waits for each worker, in ms. */
const WORKER_TIMEOUT_MS = 1000;

type metric = MetricObjectWithValues<MetricValue<string>>;

export class PrimaryMetrics {
  readonly registry = new Registry();
  readonly restarts: Counter<'reason'>;
  readonly #drains: Histogram;
  readonly #log: Logger;
  readonly #workers: () => Worker[];
  #server: Server | undefined;
  #nextId = 1;

  constructor(log: Logger, workers: () => Worker[]) {
    this.#log = log;
    this.#workers = workers;
    this.restarts = new Counter({
      name: 'wsdrain_worker_restarts_total',
      help: 'Workers replaced, by reason (crash or roll)',
      labelNames: ['reason'],
      registers: [this.registry],
    });
    this.restarts.inc({ reason: 'crash' }, 0);
    this.restarts.inc({ reason: 'roll' }, 0);
    this.#drains = new Histogram({
      name: 'wsdrain_drain_duration_seconds',
      help: 'Duration of drains, from signal to the last socket released',
      buckets: DRAIN_BUCKETS,
      registers: [this.registry],
    });
  }

  /** Gauges of the embedded broker the primary holds: topics and history length. */
  watchBroker(read: () => { topics: number; history: number }): void {
    new Gauge({
      name: 'wsdrain_topics',
      help: 'Topics the embedded broker holds (a stream position, maybe history)',
      registers: [this.registry],
      collect() {
        this.set(read().topics);
      },
    });
    new Gauge({
      name: 'wsdrain_history_size',
      help: 'Publications held in the embedded broker history, over every topic',
      registers: [this.registry],
      collect() {
        this.set(read().history);
      },
    });
  }

  observeDrain(report: DrainReport): void {
    this.#drains.observe(report.durationMs / 1000);
  }

  #ask(worker: Worker): Promise<metric[] | undefined> {
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const done = (v: metric[] | undefined): void => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('exit', onExit);
        resolve(v);
      };
      const onMessage = (m: unknown): void => {
        if (isOurs<ToPrimary>(m) && m.type === 'metrics' && m.id === id)
          done(m.metrics as metric[]);
      };
      const onExit = (): void => done(undefined);
      const timer = setTimeout(() => done(undefined), WORKER_TIMEOUT_MS);
      worker.on('message', onMessage);
      worker.on('exit', onExit);
      if (!sendToWorker(worker, msg({ type: 'metrics-request', id }))) done(undefined);
    });
  }

  /** The aggregated exposition text. */
  async scrape(): Promise<string> {
    const fromWorkers = await Promise.all(this.#workers().map((w) => this.#ask(w)));
    const own = await this.registry.getMetricsAsJSON();
    // The drain histogram exists on both sides: workers' copies die with them, so the
    // primary's (fed from reports) is the one exposed.
    const lists = fromWorkers
      .filter((l): l is metric[] => Array.isArray(l))
      .map((l) => l.filter((m) => m.name !== 'wsdrain_drain_duration_seconds'));
    const merged = AggregatorRegistry.aggregate([...lists, own] as Parameters<
      typeof AggregatorRegistry.aggregate
    >[0]);
    return merged.metrics();
  }

  listen(port: number, host: string): Promise<number> {
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found: try /metrics\n');
        return;
      }
      this.scrape().then(
        (text) => res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(text),
        (err: unknown) => {
          this.#log.error({ err: (err as Error).message }, 'metrics scrape failed');
          res.writeHead(500, { 'Content-Type': 'text/plain' }).end('scrape failed\n');
        },
      );
    });
    server.on('connection', (s) => s.on('error', () => {}));
    this.#server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve((server.address() as AddressInfo).port);
      });
    });
  }

  close(): void {
    this.#server?.close();
    this.#server?.closeAllConnections();
  }
}
