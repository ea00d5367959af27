/**
 * Accept: what a burst of handshakes costs the server, the figure behind a reconnect storm's
 * cost to the survivors (part of the storm scenario). wsdrain and a plain `ws` server of the
 * same cluster shape (baselines/raw-echo.ts, as many workers) each take `clients`
 * connections at once from the crowd's plain ws clients (`concurrency` handshakes at a time
 * per client process), in alternating order over `rounds` rounds.
 *
 * Server CPU per accepted connection: user + sys of the server's processes (primary and every
 * worker, threads included, /proc) from just before the first connection until the last one
 * is open, divided by the connections accepted; handshakes per second per core is its
 * inverse (connections a second of one core takes). The wall-clock rate is reported too; on a
 * machine the clients share it is theirs as much as the server's. Medians over rounds.
 *
 * wsdrain with TLS (`wsdrain+tls`: --tls-cert/--tls-key, a self-signed P-256 certificate, the
 * clients on wss://) runs in the same rounds: what TLS adds to each handshake, reported next to
 * the plain one (not judged).
 *
 * Target: wsdrain's CPU per accepted connection <= acceptCpuVsWs (1.0) x the plain ws server's.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withLoad } from '../crowd/index.js';
import { log, now, sleep } from '../lib/proc.js';
import { treeCpuMs } from '../lib/procfs.js';
import { cell, verdict } from '../lib/report.js';
import { Server } from '../lib/server.js';
import { median, round1, round2 } from '../lib/stats.js';
import { TARGETS, target } from '../lib/targets.js';
import { certificate } from '../lib/tls.js';

export type AcceptServer = 'wsdrain' | 'ws' | 'wsdrain+tls';

export interface AcceptOptions {
  clients: number;
  workers: number;
  perProcess: number;
  concurrency: number;
  rounds: number;
}

export interface AcceptRun {
  server: AcceptServer;
  round: number;
  accepted: number;
  /** First connection started -> last one open, ms. */
  wallMs: number;
  serverCpuMs: number;
  cpuUsPerAccept: number | null;
  /** 1e6 / cpuUsPerAccept: handshakes a second of one core takes. */
  perCoreSecond: number | null;
  /** accepted / wallMs, a second. */
  perSecond: number;
}

export interface AcceptSummary {
  server: AcceptServer;
  cpuUsPerAccept: number | null;
  perCoreSecond: number | null;
  perSecond: number | null;
}

export interface AcceptResult {
  options: AcceptOptions;
  runs: AcceptRun[];
  rows: AcceptSummary[];
  /** wsdrain / ws CPU per accepted connection. */
  cpuVsWs: number | null;
  /** wsdrain+tls / wsdrain CPU per accepted connection (null when TLS did not run). */
  tlsVsPlain?: number | null;
  misses: string[];
}

export async function runAccept(o: AcceptOptions): Promise<AcceptResult> {
  const runs: AcceptRun[] = [];
  const servers: AcceptServer[] = ['ws', 'wsdrain', 'wsdrain+tls'];
  const dir = mkdtempSync(join(tmpdir(), 'wsdrain-bench-tls-'));
  let tls: { cert: string; key: string } | undefined;
  try {
    tls = certificate(dir, 'bench');
  } catch (err) {
    log(`accept: no TLS row (openssl: ${(err as Error).message.split('\n')[0]})`);
  }
  const order = servers.filter((s) => s !== 'wsdrain+tls' || tls);
  try {
    for (let round = 1; round <= o.rounds; round++) {
      for (const server of round % 2 === 1 ? order : [...order].reverse()) {
        const run = await acceptOnce(server, round, o, tls);
        runs.push(run);
        log(
          `accept [round ${round}/${o.rounds}] ${server}: ${run.accepted} connections in ` +
            `${run.wallMs} ms, server CPU ${run.serverCpuMs} ms (${run.cpuUsPerAccept ?? '—'} µs ` +
            `per connection, ${run.perCoreSecond ?? '—'} handshakes/s per core)`,
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const rows = order.map((server): AcceptSummary => {
    const of = runs.filter((r) => r.server === server);
    const cpu = median(of.map((r) => r.cpuUsPerAccept));
    return {
      server,
      cpuUsPerAccept: cpu,
      perCoreSecond: cpu ? Math.round(1e6 / cpu) : null,
      perSecond: median(of.map((r) => r.perSecond)),
    };
  });
  const [ws, wsdrain, withTls] = rows;
  const cpuVsWs =
    wsdrain?.cpuUsPerAccept && ws?.cpuUsPerAccept
      ? round2(wsdrain.cpuUsPerAccept / ws.cpuUsPerAccept)
      : null;
  const tlsVsPlain =
    withTls?.cpuUsPerAccept && wsdrain?.cpuUsPerAccept
      ? round2(withTls.cpuUsPerAccept / wsdrain.cpuUsPerAccept)
      : null;
  const result: AcceptResult = { options: o, runs, rows, cpuVsWs, tlsVsPlain, misses: [] };
  result.misses = acceptMisses(result);
  log(
    `accept: wsdrain ${wsdrain?.cpuUsPerAccept ?? '—'} µs per connection, ws ` +
      `${ws?.cpuUsPerAccept ?? '—'} µs: ×${cpuVsWs ?? '—'} (target <= ${TARGETS.acceptCpuVsWs})`,
  );
  return result;
}

function acceptOnce(
  server: AcceptServer,
  round: number,
  o: AcceptOptions,
  tls: { cert: string; key: string } | undefined,
): Promise<AcceptRun> {
  const start =
    server === 'ws'
      ? Server.baseline('raw-echo', o.workers)
      : Server.wsdrain({
          workers: o.workers,
          drainTimeoutMs: 1000,
          ...(server === 'wsdrain+tls' ? { tls } : {}),
        });
  return withLoad(
    start,
    { perProcess: o.perProcess, concurrency: o.concurrency, connectTimeoutMs: 60_000 },
    async (srv, crowd) => {
      await sleep(300); // the workers' start-up settles
      const cpu0 = treeCpuMs(srv.pid);
      const t0 = now();
      const accepted = await crowd.connect(o.clients);
      const wallMs = now() - t0;
      const serverCpuMs = treeCpuMs(srv.pid) - cpu0;
      srv.assertUp();
      if (accepted < o.clients) {
        throw new Error(
          `accept: ${o.clients - accepted} of ${o.clients} never connected to ${server}`,
        );
      }
      const us = accepted > 0 ? round1((serverCpuMs * 1000) / accepted) : null;
      return {
        server,
        round,
        accepted,
        wallMs: Math.round(wallMs),
        serverCpuMs: Math.round(serverCpuMs),
        cpuUsPerAccept: us,
        perCoreSecond: us ? Math.round(1e6 / us) : null,
        perSecond: Math.round((accepted * 1000) / wallMs),
      };
    },
  );
}

export function acceptMisses(a: AcceptResult): string[] {
  if (a.cpuVsWs !== null && a.cpuVsWs <= TARGETS.acceptCpuVsWs) return [];
  const [ws, wsdrain] = a.rows;
  return [
    `accept: wsdrain server CPU ${wsdrain?.cpuUsPerAccept ?? '—'} µs per connection, ` +
      `×${a.cpuVsWs ?? '—'} of plain ws's ${ws?.cpuUsPerAccept ?? '—'} µs ${target('acceptCpuVsWs', '<=')}`,
  ];
}

export function acceptSection(a: AcceptResult): string[] {
  const o = a.options;
  return [
    '## Accept: server CPU per connection',
    '',
    `${o.clients} connections opened at once (${o.concurrency} handshakes at a time per client ` +
      `process of ≤ ${o.perProcess}) on wsdrain and on a plain \`ws\` server of the same shape ` +
      `(${o.workers} cluster workers), alternating, median of ${o.rounds} round(s). *CPU µs*: ` +
      'user + sys of the server’s processes (primary and every worker, threads included) from ' +
      'the first connection to the last one open, per connection; *per core*: handshakes one ' +
      'second of one core takes (its inverse); *wall*: connections a second as the clients saw ' +
      'them (they share the machine).',
    '',
    '| server | CPU µs / connection | handshakes/s per core | handshakes/s (wall) |',
    '|---|--:|--:|--:|',
    ...a.rows.map(
      (r) =>
        `| ${r.server === 'wsdrain' ? '**wsdrain**' : r.server === 'ws' ? 'plain ws' : 'wsdrain, TLS (wss://, P-256)'} | ${cell(r.cpuUsPerAccept)} | ` +
        `${cell(r.perCoreSecond)} | ${cell(r.perSecond)} |`,
    ),
    '',
    `wsdrain / plain ws CPU per connection: ×${a.cpuVsWs ?? '—'}; target ≤ ×${TARGETS.acceptCpuVsWs} — ${verdict(a.misses)}.`,
    ...(a.tlsVsPlain
      ? [
          '',
          `TLS: ×${a.tlsVsPlain} the CPU of a plain handshake (reported, not judged). A storm's ` +
            'peak accepts/s times this CPU per connection is what the survivors pay at its ' +
            'peak; the storm table below gives the peak cut that pacing makes.',
        ]
      : []),
  ];
}
