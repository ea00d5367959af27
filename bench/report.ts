/**
 * Writes a benchmark's results: bench/results/<name>.json (everything), <name>.md (tables
 * with ratios to terminate, then the roll, healthz, throughput, capacity and storm scenarios
 * with their targets) and <name>.svg (sockets still open vs time since the signal, one
 * line per strategy, one panel per stalled fraction; handwritten SVG).
 *
 * Re-render the .md and .svg from an existing JSON: `npx tsx bench/report.ts bench/results/quick.json`
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { arch, availableParallelism, cpus, platform, totalmem } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { CapacityResult } from './capacity.js';
import { type DrainResult, type DrainSummary, pct } from './drain.js';
import type { HealthzResult, ProbeStats } from './healthz.js';
import { TARGETS } from './lib/targets.js';
import type { RollResult } from './roll.js';
import { type StormResult, type StormRun, TARGET_RATIO } from './storm.js';
import type { ThroughputResult } from './throughput.js';

export const RESULTS_DIR = fileURLToPath(new URL('./results', import.meta.url));

export interface BenchReport {
  name: string;
  createdAt: string;
  machine: { node: string; platform: string; cpus: number; cpuModel: string; memGiB: number };
  options: DrainResult['options'];
  drain: DrainSummary[];
  /** Every run, without its time series. */
  runs: Omit<DrainResult['runs'][number], 'series'>[];
  skipped: string[];
  failures: string[];
  /** The other scenarios, when they ran (roll.ts, healthz.ts, throughput.ts, capacity.ts, storm.ts). */
  roll?: RollResult;
  healthz?: HealthzResult;
  throughput?: ThroughputResult;
  capacity?: CapacityResult;
  /** The reconnect storm (storm.ts), when it ran in the same invocation; also in storm-<name>.json. */
  storm?: StormResult;
  /** Scenarios that failed to run (an exception), as "<scenario>: <message>". */
  scenarioFailures?: string[];
  /**
   * Per scenario, mean CPU used by processes outside the bench while it ran, % of one core
   * (lib/procfs.ts ForeignCpu): above ~20 the machine was shared and the figures are noisy.
   */
  otherCpuPct?: Record<string, number>;
}

/** Results of the scenarios other than drain. */
export type ScenarioResults = Pick<
  BenchReport,
  'roll' | 'healthz' | 'throughput' | 'capacity' | 'storm' | 'scenarioFailures' | 'otherCpuPct'
>;

export function buildReport(
  name: string,
  result: DrainResult,
  scenarios: ScenarioResults = {},
): BenchReport {
  return {
    name,
    createdAt: new Date().toISOString(),
    machine: {
      node: process.version,
      platform: `${platform()} ${arch()}`,
      cpus: availableParallelism(),
      cpuModel: cpus()[0]?.model ?? 'unknown',
      memGiB: Math.round(totalmem() / 2 ** 30),
    },
    options: result.options,
    drain: result.drain,
    runs: result.runs.map(({ series: _series, ...run }) => run),
    skipped: result.skipped,
    failures: result.failures,
    ...scenarios,
  };
}

/** Writes <name>.json, .md and .svg; returns their paths. */
export function writeReport(report: BenchReport, dir = RESULTS_DIR): string[] {
  mkdirSync(dir, { recursive: true });
  const files: [string, string][] = [
    [`${report.name}.json`, `${JSON.stringify(report, null, 1)}\n`],
    [`${report.name}.md`, markdown(report)],
    [`${report.name}.svg`, svg(report)],
  ];
  return files.map(([file, text]) => {
    const path = join(dir, file);
    writeFileSync(path, text);
    return path;
  });
}

// ---------------------------------------------------------------- Markdown

const ms = (v: number | null): string =>
  v === null ? 'never' : v < 10 ? v.toFixed(1) : `${Math.round(v)}`;

function ratio(v: number | null, base: number | null | undefined): string {
  if (v === null || base === null || base === undefined || base <= 0) return '—';
  const r = v / base;
  return `×${r < 10 ? r.toFixed(1) : Math.round(r)}`;
}

export function markdown(r: BenchReport): string {
  const o = r.options;
  const lines = [
    `# Drain benchmark: ${r.name}`,
    '',
    `${r.createdAt} · Node ${r.machine.node} · ${r.machine.platform} · ${r.machine.cpus} CPUs ` +
      `(${r.machine.cpuModel}) · ${o.sockets} sockets · ${o.workers} workers · ${o.rounds} round(s) · ` +
      `wsdrain --drain-timeout ${o.drainTimeoutMs} ms` +
      (o.messageEveryMs ? ` · a message per socket every ${o.messageEveryMs} ms` : ''),
    '',
    'Times in ms from SIGTERM, seen by the clients; medians over rounds (codes: median round).',
    '*clean*: closed with a close frame from the server; *forced*: 1006, the TCP connection was',
    'cut without one. *budget*: the strategy’s own bound (0: it does not wait). Ratios are to',
    'the terminate row with the same stalled fraction. *cpu* (0% stalled): CPU time the whole',
    'machine spent (all cores, servers and clients) from the signal to the last close, ms, and',
    '× the terminate row’s.',
  ];
  for (const stalled of o.stalled) {
    const rows = r.drain.filter((d) => d.stalled === stalled);
    if (rows.length === 0) continue;
    const base = rows.find((d) => d.strategy === 'terminate');
    // The cooperative table (no stalled peers) also shows the CPU each drain cost.
    const cpu = stalled === 0;
    lines.push(
      '',
      `## ${pct(stalled)} stalled peers`,
      '',
      `| strategy | budget | p50 | p90 | p99 | last close | exit | clean | forced | codes | last / terminate | exit / terminate |${cpu ? ' cpu |' : ''}`,
      `|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|${cpu ? '--:|' : ''}`,
    );
    for (const d of rows) {
      const codes = Object.entries(d.codes)
        .map(([c, n]) => `${c}: ${n}`)
        .join(', ');
      const cpuMs = d.cpuMs ?? null;
      lines.push(
        `| ${d.strategy} | ${d.budgetMs} | ${ms(d.p50Ms)} | ${ms(d.p90Ms)} | ${ms(d.p99Ms)} | ` +
          `${ms(d.lastCloseMs)} | ${ms(d.exitMs)} | ${d.clean} | ${d.forced} | ${codes} | ` +
          `${ratio(d.lastCloseMs, base?.lastCloseMs)} | ${ratio(d.exitMs, base?.exitMs)} |` +
          (cpu ? ` ${cpuMs === null ? '—' : `${cpuMs} (${ratio(cpuMs, base?.cpuMs)})`} |` : ''),
      );
    }
  }
  if (r.skipped.length) lines.push('', '## Skipped', '', ...r.skipped.map((s) => `- ${s}`));
  if (r.failures.length) lines.push('', '## Failed runs', '', ...r.failures.map((s) => `- ${s}`));
  if (r.drain.length) lines.push('', `![sockets still open](${r.name}.svg)`);
  const noise = (key: string): string[] => {
    const v = r.otherCpuPct?.[key];
    if (v === undefined) return [];
    return [
      '',
      `Other processes on the machine used ${v} % of one core on average while this ran` +
        (v > 20 ? ': **a shared machine, figures noisy**.' : '.'),
    ];
  };
  if (r.otherCpuPct?.drain !== undefined) lines.push(...noise('drain'));
  if (r.roll) lines.push('', ...rollSection(r.roll), ...noise('roll'));
  if (r.healthz) lines.push('', ...healthzSection(r.healthz), ...noise('healthz'));
  if (r.throughput) lines.push('', ...throughputSection(r.throughput), ...noise('throughput'));
  if (r.capacity) lines.push('', ...capacitySection(r.capacity), ...noise('capacity'));
  if (r.storm) lines.push('', ...stormSection(r.storm), ...noise('storm'));
  if (r.scenarioFailures?.length) {
    lines.push(
      '',
      '## Scenarios that failed to run',
      '',
      ...r.scenarioFailures.map((s) => `- ${s}`),
    );
  }
  lines.push('');
  return lines.join('\n');
}

const codesText = (codes: Record<string, number>): string =>
  Object.entries(codes)
    .map(([c, n]) => `${c}: ${n}`)
    .join(', ') || '—';

const verdict = (misses: string[]): string =>
  misses.length === 0 ? '**targets met**' : `**missed**: ${misses.join('; ')}`;

function rollSection(r: RollResult): string[] {
  const o = r.options;
  const perSocket = Object.entries(r.closesPerSocket)
    .map(([k, n]) => `${n} closed ${k}x`)
    .join(', ');
  return [
    '## Rolling restart (SIGHUP)',
    '',
    `${r.connected} clients that reconnect at once on every close (retry hints ignored), ` +
      `${o.workers} workers, --drain-timeout ${o.drainTimeoutMs} ms; a refused attempt is retried ` +
      `after ${o.retryDelayMs} ms. Times in ms from SIGHUP.`,
    '',
    '| roll done (log line) | logged durationMs | all reconnected | last close | closes | codes | refusals | reconnect p50 | p90 | p99 | max | workers replaced |',
    '|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|---|',
    `| ${ms(r.rollDoneMs)} | ${ms(r.rollDurationMs)} | ${ms(r.allReconnectedMs)} | ` +
      `${ms(r.lastCloseMs)} | ${r.closes} | ${codesText(r.codes)} | ${r.refusals} | ` +
      `${ms(r.reconnectP50Ms)} | ${ms(r.reconnectP90Ms)} | ${ms(r.reconnectP99Ms)} | ` +
      `${ms(r.reconnectMaxMs)} | ${r.allWorkersReplaced ? 'all' : 'NOT all'} ` +
      `(${r.workersBefore.join(', ')} → ${r.workersAfter.join(', ')}) |`,
    '',
    `Closes per socket: ${perSocket || '—'} (more than 1x: the client was moved twice). ` +
      `Refusal causes: ${codesText(r.refusalCauses)}. ` +
      `Retry hints sent: median ${ms(r.hintRetryP50Ms)}, max ${ms(r.hintRetryMaxMs)}. ` +
      `For scale: the first connect ran at ${r.connectRatePerS ?? '—'} handshakes/s, so ` +
      `${Math.round(r.connected / o.workers)} clients reconnecting at once take about ` +
      `${r.connectRatePerS ? Math.round((r.connected / o.workers / r.connectRatePerS) * 1000) : '—'} ms ` +
      'to get through.',
    ...(r.rolled.length
      ? [
          '',
          'Per rolled worker (the primary\'s "rolled worker" lines): ' +
            r.rolled
              .map(
                (w) =>
                  `${w.pid}: ${w.sockets} sockets, ${w.clean} clean, ${w.terminated} terminated, ` +
                  `${w.dropped} dropped, ${w.lateUpgrades} late upgrades, ${w.durationMs} ms`,
              )
              .join('; '),
        ]
      : []),
    '',
    `Targets: 0 refusals, every close 1012, every client back, every worker replaced — ${verdict(r.misses)}.`,
  ];
}

function probeCells(p: ProbeStats): string {
  return `${p.responses} | ${p.non2xx} | ${p.errors} | ${ms(p.p50Ms)} | ${ms(p.p99Ms)} | ${ms(p.maxMs)}`;
}

function healthzSection(h: HealthzResult): string[] {
  const o = h.options;
  const lines = [
    '## /healthz and /readyz during a drain',
    '',
    `autocannon on GET /healthz, ${o.connections} connections, a fresh connection per request ` +
      `(as kubelet probes), ${o.durationS} s idle, then ${o.durationS} s with SIGTERM ` +
      `${o.signalAfterMs} ms in; ${o.sockets} sockets, ${pct(o.stalled)} of them paused (never ` +
      `read), so the drain lasts until --drain-timeout (window + 3 s) and the server stays up for ` +
      `the whole window. "drain" rows: responses completed after SIGTERM; "reachable": the part ` +
      `before the first refused connection. Latencies in ms, timed per response (sub-ms).`,
    '',
    '| --drain-delay | phase | responses | non-2xx | conn. errors | p50 | p99 | max | p99 / idle |',
    '|--:|---|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of h.runs) {
    lines.push(
      `| ${r.drainDelayMs} | idle | ${probeCells(r.idle)} | |`,
      `| ${r.drainDelayMs} | drain (${r.drainWindowMs} ms) | ${probeCells(r.drain)} | |`,
      `| ${r.drainDelayMs} | drain, reachable | ${probeCells(r.drainReachable)} | ` +
        `${r.p99Ratio === null ? '—' : `×${r.p99Ratio}`} |`,
    );
  }
  lines.push(
    '',
    '| --drain-delay | /readyz 503 after | first refused /readyz after | /readyz answers after SIGTERM (when sent) | first refused /healthz after | server exit |',
    '|--:|--:|--:|---|--:|--:|',
  );
  for (const r of h.runs) {
    lines.push(
      `| ${r.drainDelayMs} | ${ms(r.readyz503Ms)} | ${ms(r.readyzRefusedMs)} | ` +
        `${r.readyzTimeline.join(', ')} | ${ms(r.healthzRefusedMs ?? null)} | ${ms(r.exitMs)} |`,
    );
  }
  lines.push(
    '',
    `Target: /healthz p99 during the drain within ${TARGETS.healthzP99VsIdle}× idle, no non-2xx. ` +
      'Contract (DESIGN.md): /healthz 200 while the server is alive, /readyz 503 while draining.',
    '',
  );
  for (const r of h.runs) lines.push(`- --drain-delay ${r.drainDelayMs}: ${verdict(r.misses)}`);
  return lines;
}

function throughputSection(t: ThroughputResult): string[] {
  const o = t.options;
  const n = (v: number | null): string => (v === null ? '—' : `${v}`);
  const lines = [
    '## Echo throughput: wsdrain vs raw ws',
    '',
    `${o.connections} connections, ${o.size}-byte text messages, K outstanding per connection, ` +
      `${o.durationS} s after ${o.warmupS} s warm-up, ${o.workers} workers (wsdrain --threads ` +
      `${o.threads}), ${o.clientProcesses} client process(es), median of ${o.rounds} round(s). ` +
      'CPU ms/1k: server processes (primary + workers, threads included) per 1000 replies. ' +
      'CPU %: mean use during the run, % of one core (server / client); *other*: the largest ' +
      'CPU use by processes outside the bench in any run (above 20 %, the row is noisy).',
    '',
    '| K | raw replies/s | wsdrain replies/s | wsdrain / raw | raw rtt p50 / p99 | wsdrain rtt p50 / p99 | raw CPU ms/1k | wsdrain CPU ms/1k | raw CPU % | wsdrain CPU % | other |',
    '|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of t.rows) {
    lines.push(
      `| ${r.window} | ${n(r.rawPerSecond)} | ${n(r.wsdrainPerSecond)} | ` +
        `${r.ratio === null ? '—' : `×${r.ratio}`} | ${ms(r.rawRttP50Ms)} / ${ms(r.rawRttP99Ms)} | ` +
        `${ms(r.wsdrainRttP50Ms)} / ${ms(r.wsdrainRttP99Ms)} | ${n(r.rawCpuMsPer1k)} | ` +
        `${n(r.wsdrainCpuMsPer1k)} | ${n(r.rawServerCpuPct)} / ${n(r.rawClientCpuPct)} | ` +
        `${n(r.wsdrainServerCpuPct)} / ${n(r.wsdrainClientCpuPct)} | ${r.maxOtherCpuPct ?? '—'} % |`,
    );
  }
  lines.push('', `Target: wsdrain / raw ≥ ${TARGETS.throughputRatio} — ${verdict(t.misses)}.`);
  return lines;
}

function capacitySection(c: CapacityResult): string[] {
  const mib = (b: number | null): string => (b === null ? '—' : (b / 2 ** 20).toFixed(1));
  const o = c.options;
  return [
    '## Capacity: idle sockets',
    '',
    `${c.connected} idle sockets (${c.failed} failed) on ${o.workers} workers, client processes ` +
      `of ≤ ${o.perProcess} sockets; RSS = VmRSS of the primary + workers, read ${o.settleMs} ms ` +
      `after the last connect. Then SIGTERM, --drain-timeout ${o.drainTimeoutMs} ms.`,
    '',
    '| RSS before (MiB) | RSS after (MiB) | KiB per socket | drain p50 | p99 | last close | exit | codes | clean | forced |',
    '|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|',
    `| ${mib(c.rssBefore)} | ${mib(c.rssAfter)} | ${c.kibPerSocket ?? '—'} | ${ms(c.p50Ms)} | ` +
      `${ms(c.p99Ms)} | ${ms(c.lastCloseMs)} | ${ms(c.exitMs)} (${c.exitStatus}) | ` +
      `${codesText(c.codes)} | ${c.clean} | ${c.forced} |`,
    '',
    'Per process (MiB, before → after): ' +
      Object.entries(c.rssByPid)
        .map(([pid, [b, a]]) => `${pid}: ${mib(b)} → ${mib(a)}`)
        .join(', '),
    '',
    `Targets: ≤ ${TARGETS.kibPerIdleSocket} KiB per idle socket, every socket closed with 1001, ` +
      `exit 0 within the budget — ${verdict(c.misses)}.`,
  ];
}

const STORM_CASES = [
  ['roll', 'rolling restart (SIGHUP)'],
  ['failover', 'failover to a second server (SIGTERM)'],
] as const;

export function stormSection(s: StormResult): string[] {
  const o = s.options;
  const n = (v: number | null | undefined): string =>
    v === null || v === undefined ? '—' : `${v}`;
  const x = (v: number | null): string => (v === null ? '—' : `×${v}`);
  const lines = [
    '## Reconnect storm: pacing and hints',
    '',
    `${o.clients} clients (wsdrain's own reconnecting client), --drain-timeout ${o.drainTimeoutMs} ms. ` +
      'Without pacing: no --drain-window, --reconnect-window 0, clients with `hintJitter: false`; ' +
      `with: --drain-window ${o.drainWindowMs} ms, --reconnect-window ${o.reconnectWindowMs} ms, ` +
      `default hint handling. Rolling restart: one server with ${o.rollWorkers} workers; ` +
      'failover: two servers behind a readiness-polling balancer, the first one stopped. *Peak*: ' +
      'accepts per second on the servers that stay up (largest 100 ms bucket × 10; busiest ' +
      'second in brackets). Handshake latency: socket creation to open, ms. *Peak cut*: the peak ' +
      'without pacing / with (busiest second in brackets).',
    '',
    '| case | pacing + hints | peak accepts/s | handshake p50 | p99 | refusals | codes | all reconnected | drains within budget | peak cut |',
    '|---|---|--:|--:|--:|--:|---|--:|---|--:|',
  ];
  const row = (label: string, paced: boolean, run: StormRun | null, cut: string): string =>
    run === null
      ? `| ${label} | ${paced ? 'yes' : 'no'} | not run | | | | | | | ${cut} |`
      : `| ${label} | ${paced ? 'yes' : 'no'} | ${n(run.peakPerSec)} (${n(run.peak1sPerSec)}) | ` +
        `${ms(run.latencyP50Ms)} | ${ms(run.latencyP99Ms)} | ${run.refusals} | ` +
        `${codesText(run.codes)} | ${ms(run.allReconnectedMs)} | ${run.withinBudget ? 'yes' : 'no'} | ${cut} |`;
  for (const [key, label] of STORM_CASES) {
    const { baseline, paced } = s[key];
    if (baseline === null && paced === null) continue;
    const cut = `${x(s.peakRatio[key])} (${x(s.peakRatio1s[key])})`;
    lines.push(row(label, false, baseline, ''), row(label, true, paced, cut));
  }
  const errors = STORM_CASES.flatMap(([key, label]) =>
    (['baseline', 'paced'] as const).flatMap((mode) => {
      const e = s[key][mode]?.error;
      return e ? [`- ${label}, ${mode}: ${e.split('\n')[0]}`] : [];
    }),
  );
  const checks = STORM_CASES.filter(([key]) => s[key].baseline || s[key].paced).map(
    ([key, label]) => {
      const c = s.checks[key];
      const missed = [
        c.ratio ? '' : `peak cut below ×${TARGET_RATIO}`,
        c.refusals ? '' : 'refusals',
        c.budget ? '' : 'a drain over its budget',
      ].filter(Boolean);
      return `${label}: ${verdict(missed)}`;
    },
  );
  lines.push(
    '',
    `Targets: peak cut ≥ ×${TARGET_RATIO}, no more refusals with pacing than without, every drain within its budget — ${checks.join('; ')}.`,
    '',
    `Load average ${s.host.loadBefore} before, ${s.host.loadAfter} after (${s.host.cpus} CPUs); ` +
      `${Math.round(s.durationMs / 1000)} s in all.`,
  );
  if (errors.length) lines.push('', ...errors);
  return lines;
}

// ---------------------------------------------------------------- SVG

const COLORS: Record<string, string> = {
  terminate: '#7f7f7f',
  'ws-close': '#ff7f0e',
  'seed-soft': '#9467bd',
  'seed-hard': '#8c564b',
  'pm2-default': '#d62728',
  wsdrain: '#1f77b4',
};
const W = 900;
const PANEL_H = 380;
const M = { left: 70, right: 210, top: 46, bottom: 52 };

const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fmtT = (t: number): string => (t >= 1000 ? `${t / 1000} s` : `${t} ms`);
const n1 = (v: number): string => v.toFixed(1);

export function svg(r: BenchReport): string {
  const panels = r.options.stalled.filter((s) => r.drain.some((d) => d.stalled === s));
  const h = Math.max(1, panels.length) * PANEL_H;
  const tMax = logCeil(Math.max(10, ...r.drain.flatMap((d) => d.series.map((p) => p[0]))));
  const body = panels.map((stalled, i) =>
    panel(
      r.drain.filter((d) => d.stalled === stalled),
      `${r.options.sockets} sockets, ${r.options.workers} workers, ${pct(stalled)} stalled peers`,
      i * PANEL_H,
      tMax,
      r.options.drainTimeoutMs,
    ),
  );
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${h}" viewBox="0 0 ${W} ${h}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${W}" height="${h}" fill="#fff"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

/** The smallest 1, 2 or 5 x 10^k that is >= t. */
function logCeil(t: number): number {
  const p = 10 ** Math.floor(Math.log10(t));
  return ([1, 2, 5, 10].find((k) => k * p >= t) ?? 10) * p;
}

/** One chart: x is log-scaled from 1 ms to tMax ms, y linear from 0 to the sockets. */
function panel(
  rows: DrainSummary[],
  title: string,
  top: number,
  tMax: number,
  budgetMs: number,
): string {
  const x0 = M.left;
  const x1 = W - M.right;
  const y0 = top + M.top;
  const y1 = top + PANEL_H - M.bottom;
  const total = Math.max(1, ...rows.map((d) => d.series[0]?.[1] ?? d.sockets));
  const span = Math.log10(tMax);
  const x = (t: number): number => x0 + ((x1 - x0) * Math.log10(Math.max(1, t))) / span;
  const y = (open: number): number => y1 - ((y1 - y0) * open) / total;

  const out: string[] = [
    `<text x="${x0}" y="${top + 26}" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  // grid and x ticks: 1, 2 .. 9 x 10^k; labels on the decades and at tMax
  for (let t = 1; t <= tMax; t *= 10) {
    for (let k = 1; k < 10 && k * t <= tMax; k++) {
      const label = k === 1 || k * t === tMax;
      const xk = n1(x(k * t));
      out.push(
        `<line x1="${xk}" y1="${y0}" x2="${xk}" y2="${y1}" stroke="${label ? '#ccc' : '#eee'}"/>`,
      );
      if (label)
        out.push(`<text x="${xk}" y="${y1 + 16}" text-anchor="middle">${fmtT(k * t)}</text>`);
    }
  }
  // y ticks
  for (let q = 0; q <= 4; q++) {
    const open = Math.round((total * q) / 4);
    out.push(
      `<line x1="${x0}" y1="${n1(y(open))}" x2="${x1}" y2="${n1(y(open))}" stroke="#ddd"/>`,
      `<text x="${x0 - 6}" y="${n1(y(open) + 4)}" text-anchor="end">${open}</text>`,
    );
  }
  out.push(
    `<rect x="${x0}" y="${y0}" width="${x1 - x0}" height="${y1 - y0}" fill="none" stroke="#333"/>`,
    `<text x="${(x0 + x1) / 2}" y="${y1 + 38}" text-anchor="middle">time since SIGTERM (log scale)</text>`,
    `<text transform="translate(${x0 - 52} ${(y0 + y1) / 2}) rotate(-90)" text-anchor="middle">sockets still open</text>`,
  );
  if (rows.some((d) => d.strategy === 'wsdrain')) {
    const bx = n1(x(budgetMs));
    out.push(
      `<line x1="${bx}" y1="${y0}" x2="${bx}" y2="${y1}" stroke="${COLORS.wsdrain}" stroke-dasharray="5 4"/>`,
      `<text x="${bx}" y="${y0 - 4}" text-anchor="middle" fill="${COLORS.wsdrain}">wsdrain budget</text>`,
    );
  }
  // lines (step functions) and legend
  rows.forEach((d, i) => {
    const color = COLORS[d.strategy] ?? '#000';
    const [first, ...rest] = d.series;
    if (first) {
      const path = [`M${n1(x(first[0]))} ${n1(y(first[1]))}`];
      for (const [t, open] of rest) path.push(`H${n1(x(t))}V${n1(y(open))}`);
      const width = d.strategy === 'wsdrain' ? 3 : 2;
      out.push(
        `<path d="${path.join('')}" fill="none" stroke="${color}" stroke-width="${width}" stroke-linejoin="round"/>`,
      );
    }
    const ly = y0 + 10 + i * 36;
    const last = d.lastCloseMs === null ? 'not all closed' : `last close ${fmtMs(d.lastCloseMs)}`;
    out.push(
      `<line x1="${x1 + 14}" y1="${ly}" x2="${x1 + 40}" y2="${ly}" stroke="${color}" stroke-width="3"/>`,
      `<text x="${x1 + 46}" y="${ly + 4}">${esc(d.strategy)}</text>`,
      `<text x="${x1 + 46}" y="${ly + 18}" fill="#555" font-size="11">${esc(last)}</text>`,
    );
  });
  return `<g>\n${out.join('\n')}\n</g>`;
}

const fmtMs = (v: number): string => (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${ms(v)} ms`);

// Re-render from a JSON file given on the command line.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: tsx bench/report.ts bench/results/<name>.json');
    process.exit(2);
  }
  const report = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
  const name = basename(file, '.json');
  writeFileSync(join(dirname(file), `${name}.md`), markdown(report));
  writeFileSync(join(dirname(file), `${name}.svg`), svg(report));
  console.log(`wrote ${name}.md and ${name}.svg in ${dirname(file)}`);
}
