/**
 * What the soak samples from /proc (Linux only): resident memory, CPU time and open
 * descriptors of one process, its children, and which of its descriptors are TCP connections
 * on the server port (by inode, matched against /proc/net/tcp and /proc/net/tcp6).
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { childPids as scanChildPids } from '../lib/procfs.js';

export { rssBytes } from '../lib/procfs.js';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** User + system CPU time of all the process's threads, ms; undefined when it is gone. */
export function cpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/**
 * Direct children of `pid`: /proc/<pid>/task/<tid>/children when the kernel has it
 * (CONFIG_PROC_CHILDREN), else a scan of every /proc/<n>/stat for the parent pid.
 */
export function childPids(pid: number): number[] {
  try {
    const out: number[] = [];
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) for (const c of text.split(/\s+/)) out.push(Number(c));
    }
    return out.sort((a, b) => a - b);
  } catch {
    // no such file: scan
  }
  return scanChildPids(pid).sort((a, b) => a - b);
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
    let start = text.indexOf('\n') + 1;
    while (start > 0 && start < text.length) {
      let end = text.indexOf('\n', start);
      if (end === -1) end = text.length;
      const line = text.slice(start, end);
      start = end + 1;
      // "  sl  local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ..."
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !f[1]!.endsWith(hexPort)) continue;
      const inode = Number(f[9]);
      if (inode === 0) continue;
      out.set(inode, TCP_STATES[f[3]!] ?? f[3]!);
    }
  }
  return out;
}

export interface FdCount {
  /** Every open descriptor. */
  fds: number;
  /** Descriptors that are TCP connections on the server port (listener excluded). */
  conns: number;
  /** Those connections by TCP state (ESTABLISHED, CLOSE_WAIT, ...). */
  states: Record<string, number>;
  /** Descriptors that are sockets of any other kind (IPC, other ports, unix). */
  otherSockets: number;
}

/** The socket inodes among the descriptors of `pid`, and how many descriptors it has. */
export interface FdList {
  fds: number;
  sockets: number[];
}

/** Lists the descriptors of `pid`; undefined when it is gone. */
export function listFds(pid: number): FdList | undefined {
  let names: string[];
  try {
    names = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return undefined;
  }
  const sockets: number[] = [];
  for (const name of names) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${name}`);
    } catch {
      continue; // closed meanwhile
    }
    if (target.startsWith('socket:[')) sockets.push(Number(target.slice(8, -1)));
  }
  return { fds: names.length, sockets };
}

/**
 * Classifies the sockets of each listed process. `ports` comes from {@link serverSockets};
 * read it after listing the descriptors, so that sockets opened while they were listed are in
 * it. (A socket closed in between is gone from the table and counted as another socket: a
 * transient during a storm of closes, never in a steady state.)
 */
export function countFds(list: FdList, ports: Map<number, string>): FdCount {
  const r: FdCount = { fds: list.fds, conns: 0, states: {}, otherSockets: 0 };
  for (const inode of list.sockets) {
    const state = ports.get(inode);
    if (state === undefined) r.otherSockets++;
    else if (state !== 'LISTEN') {
      r.conns++;
      r.states[state] = (r.states[state] ?? 0) + 1;
    }
  }
  return r;
}
