/**
 * Resident memory and CPU time of a process tree, from /proc (Linux only): a process and its
 * descendants (cluster workers are children of the primary; piscina threads live inside the
 * workers and are counted with them).
 */
import { readdirSync, readFileSync } from 'node:fs';

/** VmRSS of one process in bytes, or undefined when it is gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Direct children of `pid` (scans /proc/<n>/stat for the parent pid). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses; split after the last ')'
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Descendants of `pid`, breadth first (not `pid` itself). */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const c of childPids(queue.shift()!)) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** User + system CPU time of one process (all its threads), ms; 0 when it is gone. */
export function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // after the comm: state(0) ppid(1) ... utime(11) stime(12)
    return ((Number(f[11]) + Number(f[12])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

/** CPU time of `pid` and its descendants, ms. */
export function treeCpuMs(pid: number): number {
  return [pid, ...descendants(pid)].reduce((s, p) => s + cpuMs(p), 0);
}

export interface TreeRss {
  /** Sum over the process and its descendants, bytes. */
  total: number;
  /** pid -> bytes. */
  byPid: Record<number, number>;
}

/** VmRSS of `pid` and every descendant. */
export function treeRss(pid: number): TreeRss {
  const byPid: Record<number, number> = {};
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    const rss = rssBytes(p);
    if (rss === undefined) continue;
    byPid[p] = rss;
    queue.push(...childPids(p));
  }
  return { total: Object.values(byPid).reduce((a, b) => a + b, 0), byPid };
}

/** CPU time spent busy by the whole machine (all cores, all processes) since boot, ms. */
export function machineBusyMs(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const [, ...fields] = line.trim().split(/\s+/);
    const v = fields.map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user .. steal
    const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
    return ((total - idle) * 1000) / TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

/**
 * Measures the CPU used by processes outside this process tree (other people's jobs on a
 * shared machine) while it runs: /proc is sampled every `everyMs`; processes first seen after
 * start() count from 0. stop() returns the mean use as % of one core.
 */
export class ForeignCpu {
  readonly #last = new Map<number, number>();
  /** Our processes, ever: killed server workers outlive their primary for a moment. */
  readonly #ours = new Set<number>();
  #foreignMs = 0;
  #startedAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #first = true;

  start(everyMs = 500): void {
    this.#startedAt = Date.now();
    this.#sample();
    this.#first = false;
    this.#timer = setInterval(() => this.#sample(), everyMs);
    this.#timer.unref();
  }

  /** Mean CPU use of foreign processes since start(), % of one core. */
  stop(): number {
    clearInterval(this.#timer);
    this.#sample();
    const elapsed = Date.now() - this.#startedAt;
    return elapsed > 0 ? Math.round((100 * this.#foreignMs) / elapsed) : 0;
  }

  #sample(): void {
    for (const pid of [process.pid, ...descendants(process.pid)]) this.#ours.add(pid);
    const seen = new Set<number>();
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      const pid = Number(name);
      if (this.#ours.has(pid)) continue;
      const cpu = cpuMs(pid);
      seen.add(pid);
      const last = this.#last.get(pid);
      if (last !== undefined) this.#foreignMs += Math.max(0, cpu - last);
      else if (!this.#first) this.#foreignMs += cpu;
      this.#last.set(pid, cpu);
    }
    for (const pid of this.#last.keys()) if (!seen.has(pid)) this.#last.delete(pid);
  }
}
