/**
 * Samples a server and its crowd every `everyMs` (the soak): RSS, CPU and descriptors of the
 * primary and of each worker (children of the primary), the TCP connections on the server port
 * each of them holds, the machine's CPU, and the clients' sockets, echo and delivery rates and
 * failures.
 */
import type { Crowd } from '../crowd/index.js';
import { now } from './proc.js';
import {
  childPids,
  countConns,
  cpuMs,
  listFds,
  machineBusyMs,
  rssBytes,
  serverSockets,
} from './procfs.js';
import { mergeHist, newHist, quantile, round1 } from './stats.js';

export interface ProcSample {
  pid: number;
  rssMiB: number;
  /** CPU used since the previous sample, % of one core. */
  cpuPct: number | null;
  fds: number;
  /** Descriptors that are TCP connections on the server port. */
  conns: number;
  /** Those by TCP state (a growing CLOSE_WAIT would be a leak). */
  states: Record<string, number>;
  /** fds - conns: everything else the process holds; flat when nothing leaks. */
  overhead: number;
}

export interface ClientSample {
  open: number;
  reconnecting: number;
  sentPerSec: number;
  echoesPerSec: number;
  /** Publications received by subscribers, a second; recovering subscribers not caught up. */
  deliveriesPerSec: number;
  replaying: number;
  /** Cumulative: mismatched + timed out + unanswered at closes other than 1012/1001. */
  echoFailures: number;
  rttP50Ms: number | null;
  rttP99Ms: number | null;
  /** CPU of the client processes together, % of one core. */
  cpuPct: number | null;
}

/** CPU of the whole machine since the previous sample, % of one core (2 cores: up to 200). */
export interface MachineSample {
  busyPct: number;
  /** The server, the clients and the soak itself. */
  oursPct: number;
  /** Everything else: other processes, and kernel time charged to no process (softirq). */
  otherPct: number;
}

export interface Sample {
  /** Seconds since the soak started. */
  t: number;
  phase: string;
  machine: MachineSample | undefined;
  primary: ProcSample | undefined;
  workers: ProcSample[];
  /** Primary + workers. */
  serverRssMiB: number;
  clients: ClientSample | undefined;
  /** How long taking this sample took, ms. */
  costMs: number;
}

const MiB = 1024 * 1024;

export class Sampler {
  readonly samples: Sample[] = [];
  /** Echo round trips by phase (hist.ts buckets). */
  readonly rttByPhase: Record<string, number[]> = {};
  phase = 'connect';
  #timer: NodeJS.Timeout | undefined;
  readonly #lastCpu = new Map<number, { at: number; ms: number }>();
  #lastMachine: { at: number; busyMs: number; selfUs: number } | undefined;
  #lastClients: { at: number; sent: number; echoed: number; delivered: number } | undefined;

  constructor(
    readonly primaryPid: number,
    readonly port: number,
    readonly clients: Pick<Crowd, 'status' | 'takeRtt' | 'pids'>,
    readonly startedAt: number,
  ) {}

  start(everyMs: number): void {
    this.sample();
    this.#timer = setInterval(() => this.sample(), everyMs);
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** Pids of the workers now. */
  workers(): number[] {
    return childPids(this.primaryPid);
  }

  sample(): Sample {
    const t0 = now();
    // Descriptors first, then the TCP table (see countFds).
    const pids = [this.primaryPid, ...this.workers()];
    const lists = pids.map((pid) => ({ pid, rss: rssBytes(pid), fds: listFds(pid) }));
    const ports = serverSockets(this.port);
    const procs = lists.map((l) => this.#proc(l.pid, l.rss, l.fds, ports));
    const primary = procs[0];
    const workers = primary ? procs.slice(1).filter((p): p is ProcSample => p !== undefined) : [];
    const clients = this.#clients(t0);
    const s: Sample = {
      t: Math.round((t0 - this.startedAt) / 100) / 10,
      phase: this.phase,
      machine: this.#machine(t0, [primary, ...workers], clients),
      primary,
      workers,
      serverRssMiB: round1((primary?.rssMiB ?? 0) + workers.reduce((n, w) => n + w.rssMiB, 0)),
      clients,
      costMs: 0,
    };
    s.costMs = Math.round(now() - t0);
    this.samples.push(s);
    return s;
  }

  #machine(
    at: number,
    procs: (ProcSample | undefined)[],
    clients: ClientSample | undefined,
  ): MachineSample | undefined {
    const busyMs = machineBusyMs();
    const u = process.cpuUsage();
    const selfUs = u.user + u.system;
    const last = this.#lastMachine;
    this.#lastMachine = { at, busyMs, selfUs };
    if (!last || at <= last.at) return undefined;
    const dt = at - last.at;
    const busyPct = Math.round((100 * (busyMs - last.busyMs)) / dt);
    const oursPct = Math.round(
      procs.reduce((n, p) => n + (p?.cpuPct ?? 0), 0) +
        (clients?.cpuPct ?? 0) +
        (100 * (selfUs - last.selfUs)) / 1000 / dt,
    );
    return { busyPct, oursPct, otherPct: Math.max(0, busyPct - oursPct) };
  }

  #cpuPct(pid: number, at: number): number | null {
    const ms = cpuMs(pid);
    if (ms === undefined) return null;
    const last = this.#lastCpu.get(pid);
    this.#lastCpu.set(pid, { at, ms });
    if (!last || at <= last.at) return null;
    return Math.round((100 * (ms - last.ms)) / (at - last.at));
  }

  #proc(
    pid: number,
    rss: number | undefined,
    list: ReturnType<typeof listFds>,
    ports: Map<number, string>,
  ): ProcSample | undefined {
    if (rss === undefined || list === undefined) return undefined;
    const { conns, states } = countConns(list, ports);
    return {
      pid,
      rssMiB: round1(rss / MiB),
      cpuPct: this.#cpuPct(pid, now()),
      fds: list.fds,
      conns,
      states,
      overhead: list.fds - conns,
    };
  }

  #clients(at: number): ClientSample | undefined {
    const st = this.clients.status();
    if (!st) return undefined;
    const rtt = this.clients.takeRtt();
    this.rttByPhase[this.phase] ??= newHist();
    mergeHist(this.rttByPhase[this.phase]!, rtt);
    const last = this.#lastClients;
    this.#lastClients = { at: st.at, sent: st.sent, echoed: st.echoed, delivered: st.delivered };
    const dt = last ? (st.at - last.at) / 1000 : 0;
    let cpu: number | null = 0;
    for (const pid of this.clients.pids) {
      const c = this.#cpuPct(pid, at);
      cpu = c === null || cpu === null ? null : cpu + c;
    }
    return {
      open: st.open,
      reconnecting: st.reconnecting,
      sentPerSec: last && dt > 0 ? Math.round((st.sent - last.sent) / dt) : 0,
      echoesPerSec: last && dt > 0 ? Math.round((st.echoed - last.echoed) / dt) : 0,
      deliveriesPerSec: last && dt > 0 ? Math.round((st.delivered - last.delivered) / dt) : 0,
      replaying: st.replaying,
      echoFailures: st.mismatched + st.timedOut + st.lostOnOtherClose,
      rttP50Ms: quantile(rtt, 0.5),
      rttP99Ms: quantile(rtt, 0.99),
      cpuPct: cpu,
    };
  }
}
