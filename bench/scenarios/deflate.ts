/**
 * permessage-deflate memory: server RSS per idle socket with and without
 * --per-message-deflate. For each: wsdrain with `workers` workers, `sockets` clients (offering
 * permessage-deflate in the second run), each sending one message as soon as it opens, so
 * every connection has used its compression contexts; once every echo is back and `settleMs`
 * have passed, (VmRSS of the primary and its workers - the same before connecting) / sockets.
 *
 * Verdict: every socket connected and got its echo; permessage-deflate negotiated by every
 * socket of the deflate run and none of the other. The memory itself is reported, not judged.
 */
import { withLoad } from '../crowd/index.js';
import { log, sleep } from '../lib/proc.js';
import { treeRss } from '../lib/procfs.js';
import { cell, verdict } from '../lib/report.js';
import { Server } from '../lib/server.js';
import { round1 } from '../lib/stats.js';

export interface DeflateOptions {
  sockets: number;
  workers: number;
  perProcess: number;
  /** Wait after the last echo before reading RSS, ms. */
  settleMs: number;
}

export const DEFLATE_PRESETS: Record<'quick' | 'full', DeflateOptions> = {
  quick: { sockets: 2000, workers: 2, perProcess: 6000, settleMs: 2000 },
  full: { sockets: 6000, workers: 2, perProcess: 6000, settleMs: 2000 },
};

export interface DeflateRow {
  deflate: boolean;
  connected: number;
  /** Sockets that negotiated permessage-deflate. */
  negotiated: number;
  echoed: number;
  /** VmRSS of the primary and its workers, bytes, before connecting and after the echoes. */
  rssBefore: number;
  rssAfter: number;
  kibPerSocket: number | null;
}

export interface DeflateResult {
  options: DeflateOptions;
  rows: DeflateRow[];
  /** KiB per socket with deflate / without. */
  ratio: number | null;
  misses: string[];
}

export async function runDeflate(opts: DeflateOptions): Promise<DeflateResult> {
  const rows: DeflateRow[] = [];
  for (const deflate of [false, true]) rows.push(await measure(opts, deflate));
  const [plain, compressed] = rows.map((r) => r.kibPerSocket);
  const result: DeflateResult = {
    options: opts,
    rows,
    ratio: plain && compressed ? round1(compressed / plain) : null,
    misses: [],
  };
  result.misses = deflateMisses(result);
  log(
    `deflate: ${rows.map((r) => `${r.deflate ? 'with' : 'without'} ${r.kibPerSocket} KiB/socket`).join(', ')}` +
      (result.misses.length ? `; MISSED: ${result.misses.join('; ')}` : ''),
  );
  return result;
}

function measure(opts: DeflateOptions, deflate: boolean): Promise<DeflateRow> {
  const flags = deflate ? ['--per-message-deflate'] : [];
  return withLoad(
    Server.wsdrain({ workers: opts.workers, drainTimeoutMs: 5000, flags }),
    {
      perProcess: opts.perProcess,
      deflate,
      sendOnOpen: 1,
    },
    async (server, crowd) => {
      await sleep(1000); // let the workers' start-up garbage settle
      const before = treeRss(server.pid);
      const connected = await crowd.connect(opts.sockets);
      await crowd.waitFor((s) => s.echoed >= connected, 30_000);
      await sleep(opts.settleMs);
      server.assertUp();
      const after = treeRss(server.pid);
      const r = await crowd.results();
      return {
        deflate,
        connected,
        negotiated: r.deflated,
        echoed: r.echoed,
        rssBefore: before.total,
        rssAfter: after.total,
        kibPerSocket:
          connected > 0 ? round1((after.total - before.total) / 1024 / connected) : null,
      };
    },
  );
}

export function deflateMisses(d: DeflateResult): string[] {
  const misses: string[] = [];
  for (const r of d.rows) {
    const tag = r.deflate ? 'with --per-message-deflate' : 'without';
    if (r.connected < d.options.sockets)
      misses.push(`${tag}: ${r.connected} of ${d.options.sockets} connected`);
    if (r.echoed < r.connected)
      misses.push(`${tag}: ${r.echoed} echoes for ${r.connected} sockets`);
    const expected = r.deflate ? r.connected : 0;
    if (r.negotiated !== expected) {
      misses.push(
        `${tag}: permessage-deflate negotiated by ${r.negotiated} of ${r.connected} sockets`,
      );
    }
  }
  return misses;
}

export function deflateSection(d: DeflateResult): string[] {
  const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
  const o = d.options;
  return [
    '## permessage-deflate: memory per connection',
    '',
    `${o.sockets} sockets on ${o.workers} workers, each sending one message as soon as it opens ` +
      '(so its compression contexts have been used); RSS = VmRSS of the primary + workers, read ' +
      `${o.settleMs} ms after the last echo, minus the same before connecting.`,
    '',
    '| --per-message-deflate | sockets | negotiated | RSS before (MiB) | RSS after (MiB) | KiB per socket |',
    '|---|--:|--:|--:|--:|--:|',
    ...d.rows.map(
      (r) =>
        `| ${r.deflate ? 'yes' : 'no'} | ${r.connected} | ${r.negotiated} | ${mib(r.rssBefore)} | ` +
        `${mib(r.rssAfter)} | ${cell(r.kibPerSocket)} |`,
    ),
    '',
    `With deflate / without: ${d.ratio === null ? '—' : `×${d.ratio}`}. Checks: every socket ` +
      `connected and echoed, deflate negotiated exactly where offered — ${verdict(d.misses)}.`,
  ];
}
