/**
 * What the bench reads from /proc (Linux only): memory, CPU time and descriptors of a process
 * and its descendants (cluster workers are children of the primary; piscina threads live
 * inside the workers and count with them), the machine's busy time, and which descriptors
 * are TCP connections on a port.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** VmRSS of one process in bytes, or undefined when it is gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** The fields of /proc/<pid>/stat after the command (which may hold spaces and parentheses). */
function statFields(pid: number | string): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** User + system CPU time of one process (all its threads), ms; undefined when it is gone. */
export function cpuMs(pid: number): number | undefined {
  const f = statFields(pid); // state(0) ppid(1) ... utime(11) stime(12)
  return f ? ((Number(f[11]) + Number(f[12])) * 1000) / TICKS_PER_SECOND : undefined;
}

/**
 * User + system CPU time of one process and of the children it has waited for (cutime +
 * cstime: the children it reaped, with theirs), ms; undefined when it is gone.
 */
export function cpuWithReapedMs(pid: number): number | undefined {
  const f = statFields(pid); // ... utime(11) stime(12) cutime(13) cstime(14)
  return f
    ? ((Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 1000) / TICKS_PER_SECOND
    : undefined;
}

/**
 * Server CPU from a mark to its exit: user + sys of a server's process tree (its primary,
 * every worker, threads included) between start() and stop(), counting what they spent up to
 * the very end although /proc forgets a process once it has gone. The kernel adds the CPU of
 * a child, with what its own reaped children spent, to its parent's cutime/cstime when the
 * parent waits for it: a cluster primary waits for its workers, and this process waits for
 * the primary (its `exit` event). So the tree's CPU at the exit is what this process's
 * children-CPU grew by, less what the tree had spent at the mark.
 *
 * That holds when nothing else of this process's children ends meanwhile and the primary
 * waited for every worker. Otherwise (a process group SIGKILLed at once, a server that did not
 * exit) the figure falls back on what sampling the tree every `everyMs` saw, a lower bound,
 * marked `exact: false`.
 */
export class ExitCpu {
  readonly #pid: number;
  /** Per process of the tree: own + reaped CPU at the mark. */
  #atMark = new Map<number, number>();
  /** Per process: own CPU at the mark (0 for one born later), and the last seen. */
  #first = new Map<number, number>();
  #last = new Map<number, number>();
  #reapedAtMark = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(pid: number) {
    this.#pid = pid;
  }

  /** The mark: call right before the signal. */
  start(everyMs = 20): void {
    for (const p of [this.#pid, ...descendants(this.#pid)]) {
      const all = cpuWithReapedMs(p);
      const own = cpuMs(p);
      if (all === undefined || own === undefined) continue;
      this.#atMark.set(p, all);
      this.#first.set(p, own);
      this.#last.set(p, own);
    }
    this.#reapedAtMark = cpuWithReapedMs(process.pid)! - (cpuMs(process.pid) ?? 0);
    this.#timer = setInterval(() => this.#sample(), everyMs);
    this.#timer.unref();
  }

  #sample(): void {
    for (const p of [this.#pid, ...descendants(this.#pid)]) {
      const own = cpuMs(p);
      if (own === undefined) continue;
      if (!this.#first.has(p)) this.#first.set(p, 0);
      this.#last.set(p, own);
    }
  }

  /**
   * CPU of the tree since the mark, ms. `exited`: the server's primary has exited and this
   * process has waited for it (its 'exit' event came).
   */
  stop(exited: boolean): { ms: number; exact: boolean } {
    clearInterval(this.#timer);
    if (!exited) this.#sample();
    let sampled = 0;
    for (const [p, first] of this.#first) sampled += (this.#last.get(p) ?? first) - first;
    if (exited) {
      const reaped = cpuWithReapedMs(process.pid)! - (cpuMs(process.pid) ?? 0);
      let mark = 0;
      for (const v of this.#atMark.values()) mark += v;
      const exact = reaped - this.#reapedAtMark - mark;
      // A clock tick (10 ms) per process of slack: both figures are whole ticks.
      if (exact >= sampled - 10 * this.#first.size) return { ms: Math.max(0, exact), exact: true };
    }
    return { ms: sampled, exact: false };
  }
}

/**
 * Direct children of `pid`, ascending: /proc/<pid>/task/<tid>/children where the kernel has
 * it, else a scan of every /proc/<n>/stat for the parent pid.
 */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) for (const c of text.split(/\s+/)) out.push(Number(c));
    }
  } catch {
    out.length = 0;
    for (const name of readdirSync('/proc')) {
      if (/^\d+$/.test(name) && statFields(name)?.[1] === String(pid)) out.push(Number(name));
    }
  }
  return out.sort((a, b) => a - b);
}

/** Descendants of `pid`, breadth first (not `pid` itself). */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  for (let queue = [pid]; queue.length > 0; ) {
    const kids = childPids(queue.shift()!);
    out.push(...kids);
    queue.push(...kids);
  }
  return out;
}

/** CPU time of `pid` and its descendants, ms. */
export function treeCpuMs(pid: number): number {
  return [pid, ...descendants(pid)].reduce((s, p) => s + (cpuMs(p) ?? 0), 0);
}

/**
 * CPU time of `pid` and its descendants, ms, with that of the children they have waited for
 * (cutime + cstime): workers that exited during a roll still count, as they did while alive.
 */
export function treeCpuWithExitedMs(pid: number): number {
  return [pid, ...descendants(pid)].reduce((sum, p) => {
    const f = statFields(p); // utime(11) stime(12) cutime(13) cstime(14)
    if (!f) return sum;
    const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    return sum + (ticks * 1000) / TICKS_PER_SECOND;
  }, 0);
}

/** VmRSS of `pid` and every descendant: the sum, and pid -> bytes. */
export function treeRss(pid: number): { total: number; byPid: Record<number, number> } {
  const byPid: Record<number, number> = {};
  for (const p of [pid, ...descendants(pid)]) {
    const rss = rssBytes(p);
    if (rss !== undefined) byPid[p] = rss;
  }
  return { total: Object.values(byPid).reduce((a, b) => a + b, 0), byPid };
}

/** CPU time the whole machine (all cores, all processes) spent busy since boot, ms. */
export function machineBusyMs(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user .. steal
    return ((total - (v[3] ?? 0) - (v[4] ?? 0)) * 1000) / TICKS_PER_SECOND; // less idle, iowait
  } catch {
    return 0;
  }
}

/**
 * CPU used by processes outside this process tree (other jobs on a shared machine) between
 * start() and stop(), sampled every `everyMs`; processes first seen after start() count from 0.
 */
export class ForeignCpu {
  readonly #last = new Map<number, number>();
  /** Our processes, ever: killed server workers outlive their primary for a moment. */
  readonly #ours = new Set<number>();
  #foreignMs = 0;
  #startedAt = 0;
  #timer: NodeJS.Timeout | undefined;

  start(everyMs = 500): void {
    this.#startedAt = Date.now();
    this.#sample(true);
    this.#timer = setInterval(() => this.#sample(false), everyMs);
    this.#timer.unref();
  }

  /** Mean CPU use of foreign processes since start(), % of one core. */
  stop(): number {
    clearInterval(this.#timer);
    this.#sample(false);
    const elapsed = Date.now() - this.#startedAt;
    return elapsed > 0 ? Math.round((100 * this.#foreignMs) / elapsed) : 0;
  }

  #sample(first: boolean): void {
    for (const pid of [process.pid, ...descendants(process.pid)]) this.#ours.add(pid);
    const seen = new Set<number>();
    for (const name of readdirSync('/proc')) {
      const pid = Number(name);
      if (!/^\d+$/.test(name) || this.#ours.has(pid)) continue;
      const cpu = cpuMs(pid) ?? 0;
      seen.add(pid);
      const last = this.#last.get(pid);
      if (last !== undefined) this.#foreignMs += Math.max(0, cpu - last);
      else if (!first) this.#foreignMs += cpu;
      this.#last.set(pid, cpu);
    }
    for (const pid of this.#last.keys()) if (!seen.has(pid)) this.#last.delete(pid);
  }
}

/** TCP states as /proc/net/tcp numbers them. */
const TCP_STATES: Record<string, string> = {
  '01': 'ESTABLISHED',
  '02': 'SYN_SENT',
  '03': 'SYN_RECV',
  '04': 'FIN_WAIT1',
  '05': 'FIN_WAIT2',
  '06': 'TIME_WAIT',
  '07': 'CLOSE',
  '08': 'CLOSE_WAIT',
  '09': 'LAST_ACK',
  '0A': 'LISTEN',
  '0B': 'CLOSING',
};

/**
 * inode -> TCP state of every socket whose local port is `port` (the server side of each
 * connection, and the listener). Entries without an inode (TIME_WAIT) are left out: no
 * process holds them.
 */
export function serverSockets(port: number): Map<number, string> {
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const out = new Map<number, string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'latin1');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      // "  sl  local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ..."
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !f[1]!.endsWith(hexPort) || f[9] === '0') continue;
      out.set(Number(f[9]), TCP_STATES[f[3]!] ?? f[3]!);
    }
  }
  return out;
}

/** How many descriptors `pid` has and the inodes of its sockets; undefined when it is gone. */
export function listFds(pid: number): { fds: number; sockets: number[] } | undefined {
  let names: string[];
  try {
    names = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return undefined;
  }
  const sockets: number[] = [];
  for (const name of names) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${name}`);
      if (target.startsWith('socket:[')) sockets.push(Number(target.slice(8, -1)));
    } catch {
      // closed meanwhile
    }
  }
  return { fds: names.length, sockets };
}

/**
 * The TCP connections on the port among listed sockets (listener excluded), by state. Read
 * `ports` (serverSockets) after listing the descriptors, so that sockets opened meanwhile are
 * in it; one closed in between counts as another socket, a transient during a storm of closes.
 */
export function countConns(
  list: { sockets: number[] },
  ports: Map<number, string>,
): { conns: number; states: Record<string, number> } {
  const states: Record<string, number> = {};
  let conns = 0;
  for (const inode of list.sockets) {
    const state = ports.get(inode);
    if (state === undefined || state === 'LISTEN') continue;
    conns++;
    states[state] = (states[state] ?? 0) + 1;
  }
  return { conns, states };
}
