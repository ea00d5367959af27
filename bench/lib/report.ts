/**
 * Writing results: files under bench/results (or --out), the Markdown helpers every scenario
 * section uses, the verdict lines, and the "sockets still open" chart (handwritten SVG).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { arch, availableParallelism, cpus, platform, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SeriesPoint } from './stats.js';

export const RESULTS_DIR = fileURLToPath(new URL('../results', import.meta.url));

/** Writes `<dir>/<file>` for each [file, text]; returns the paths. */
export function writeFiles(dir: string, files: [string, string][]): string[] {
  mkdirSync(dir, { recursive: true });
  return files.map(([file, text]) => {
    const path = join(dir, file);
    writeFileSync(path, text);
    return path;
  });
}

export const json = (v: unknown, indent = 1): string => `${JSON.stringify(v, null, indent)}\n`;

export function machine(): {
  node: string;
  platform: string;
  cpus: number;
  cpuModel: string;
  memGiB: number;
} {
  return {
    node: process.version,
    platform: `${platform()} ${arch()}`,
    cpus: availableParallelism(),
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memGiB: Math.round(totalmem() / 2 ** 30),
  };
}

/** ms for a table: one decimal below 10, 'never' for null. */
export const ms = (v: number | null | undefined): string =>
  v === null || v === undefined ? 'never' : v < 10 ? v.toFixed(1) : `${Math.round(v)}`;

/** Any value for a table; '—' for nothing. */
export const cell = (v: unknown): string => (v === null || v === undefined ? '—' : String(v));

/** `×<v / base>`, or '—'. */
export function ratio(v: number | null, base: number | null | undefined): string {
  if (v === null || base === null || base === undefined || base <= 0) return '—';
  const r = v / base;
  return `×${r < 10 ? r.toFixed(1) : Math.round(r)}`;
}

export const pct = (f: number): string => `${Math.round(f * 1000) / 10}%`;

export const codesText = (codes: Record<string, number>): string =>
  Object.entries(codes)
    .map(([c, n]) => `${c}: ${n}`)
    .join(', ') || '—';

/** "**targets met**" or "**missed**: ..." */
export const verdict = (misses: readonly string[]): string =>
  misses.length === 0 ? '**targets met**' : `**missed**: ${misses.join('; ')}`;

/** Fills `result.misses`, logs `<name>: <describe(result)>` and returns the result. */
export function judged<R extends { misses: string[] }>(
  name: string,
  result: R,
  misses: (r: R) => string[],
  describe: (r: R) => string,
): R {
  result.misses = misses(result);
  process.stderr.write(`${name}: ${describe(result)}\n`);
  return result;
}

/** What the run was judged by: each scenario's misses (empty: its targets were met). */
export interface Verdict {
  /** --report-only: recorded, not judged (exit 0 whatever the misses). */
  reportOnly: boolean;
  passed: boolean;
  scenarios: Record<string, string[]>;
}

export function verdictOf(scenarios: Record<string, string[]>, reportOnly: boolean): Verdict {
  return { reportOnly, passed: Object.values(scenarios).every((m) => m.length === 0), scenarios };
}

/** The Markdown summary: which scenarios met their targets, which missed and how. */
export function verdictSection(v: Verdict): string[] {
  const lines = [
    '## Verdict',
    '',
    v.passed
      ? 'Every target met.'
      : `**Targets missed**${v.reportOnly ? ' (recorded with --report-only: not judged)' : ''}.`,
    '',
  ];
  for (const [name, misses] of Object.entries(v.scenarios)) {
    lines.push(`- ${name}: ${verdict(misses)}`);
  }
  return lines;
}

// ---------------------------------------------------------------- SVG

/** One line of the chart. */
export interface ChartLine {
  label: string;
  color: string;
  series: SeriesPoint[];
  lastCloseMs: number | null;
  /** Drawn thicker. */
  bold?: boolean;
}

const W = 900;
const PANEL_H = 380;
const M = { left: 70, right: 210, top: 46, bottom: 52 };
const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fmtT = (t: number): string => (t >= 1000 ? `${t / 1000} s` : `${t} ms`);
const fmtMs = (v: number): string => (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${ms(v)} ms`);
const n1 = (v: number): string => v.toFixed(1);

/** "Sockets still open" vs time since the signal, one panel per entry, x log-scaled. */
export function chart(
  panels: { title: string; lines: ChartLine[]; budgetMs?: number; budgetColor?: string }[],
): string {
  const h = Math.max(1, panels.length) * PANEL_H;
  const tMax = logCeil(
    Math.max(10, ...panels.flatMap((p) => p.lines.flatMap((l) => l.series.map((s) => s[0])))),
  );
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${h}" viewBox="0 0 ${W} ${h}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${W}" height="${h}" fill="#fff"/>`,
    ...panels.map((p, i) => panel(p, i * PANEL_H, tMax)),
    '</svg>',
    '',
  ].join('\n');
}

/** The smallest 1, 2 or 5 x 10^k that is >= t. */
function logCeil(t: number): number {
  const p = 10 ** Math.floor(Math.log10(t));
  return ([1, 2, 5, 10].find((k) => k * p >= t) ?? 10) * p;
}

function panel(p: Parameters<typeof chart>[0][number], top: number, tMax: number): string {
  const [x0, x1, y0, y1] = [M.left, W - M.right, top + M.top, top + PANEL_H - M.bottom];
  const total = Math.max(1, ...p.lines.map((l) => l.series[0]?.[1] ?? 0));
  const x = (t: number): number => x0 + ((x1 - x0) * Math.log10(Math.max(1, t))) / Math.log10(tMax);
  const y = (open: number): number => y1 - ((y1 - y0) * open) / total;
  const out = [
    `<text x="${x0}" y="${top + 26}" font-size="15" font-weight="bold">${esc(p.title)}</text>`,
  ];
  // grid and x ticks: 1, 2 .. 9 x 10^k; labels on the decades and at tMax
  for (let t = 1; t <= tMax; t *= 10) {
    for (let k = 1; k < 10 && k * t <= tMax; k++) {
      const label = k === 1 || k * t === tMax;
      const xk = n1(x(k * t));
      out.push(
        `<line x1="${xk}" y1="${y0}" x2="${xk}" y2="${y1}" stroke="${label ? '#ccc' : '#eee'}"/>`,
      );
      if (label) {
        out.push(`<text x="${xk}" y="${y1 + 16}" text-anchor="middle">${fmtT(k * t)}</text>`);
      }
    }
  }
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
  if (p.budgetMs !== undefined) {
    const bx = n1(x(p.budgetMs));
    out.push(
      `<line x1="${bx}" y1="${y0}" x2="${bx}" y2="${y1}" stroke="${p.budgetColor}" stroke-dasharray="5 4"/>`,
      `<text x="${bx}" y="${y0 - 4}" text-anchor="middle" fill="${p.budgetColor}">wsdrain budget</text>`,
    );
  }
  p.lines.forEach((l, i) => {
    const [first, ...rest] = l.series;
    if (first) {
      const path = [`M${n1(x(first[0]))} ${n1(y(first[1]))}`];
      for (const [t, open] of rest) path.push(`H${n1(x(t))}V${n1(y(open))}`);
      out.push(
        `<path d="${path.join('')}" fill="none" stroke="${l.color}" stroke-width="${l.bold ? 3 : 2}" stroke-linejoin="round"/>`,
      );
    }
    const ly = y0 + 10 + i * 36;
    const last = l.lastCloseMs === null ? 'not all closed' : `last close ${fmtMs(l.lastCloseMs)}`;
    out.push(
      `<line x1="${x1 + 14}" y1="${ly}" x2="${x1 + 40}" y2="${ly}" stroke="${l.color}" stroke-width="3"/>`,
      `<text x="${x1 + 46}" y="${ly + 4}">${esc(l.label)}</text>`,
      `<text x="${x1 + 46}" y="${ly + 18}" fill="#555" font-size="11">${esc(last)}</text>`,
    );
  });
  return `<g>\n${out.join('\n')}\n</g>`;
}
