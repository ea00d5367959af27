/**
 * For tests of rolling restarts and their faults: a handler module that can fail or hold its
 * process at load, the workers a primary has, where new clients land, and a probe that keeps
 * opening fresh connections and counts every one that fails.
 */
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { type Client, connectMany, nextMessages } from './clients.js';
import { alive, type Running } from './process.js';
import type { Crowd } from './reconnecting.js';
import { until } from './wait.js';

/** Opens `n` clients that stop reading: the worker holding them drains until its deadline. */
export async function stalledClients(port: number, n: number): Promise<Client[]> {
  const clients = await connectMany(port, n);
  for (const c of clients) c.stall();
  return clients;
}

/** Pids of the workers new clients land on (the handler of `pidHandler` answers its pid). */
export async function landingPids(port: number, n: number): Promise<Set<number>> {
  const clients = await connectMany(port, n);
  const pids = await Promise.all(
    clients.map(async (c) => {
      c.ws.send('pid');
      const [pid] = await nextMessages(c, 1);
      c.ws.terminate();
      return Number(pid);
    }),
  );
  return new Set(pids);
}

/**
 * Sockets per worker pid, asked of every open client of `crowds` (the handler of `pidHandler`
 * answers its pid).
 */
export async function socketsPerWorker(crowds: Crowd[]): Promise<Map<number, number>> {
  const per = new Map<number, number>();
  for (const c of crowds)
    for (const pid of await c.ask('pid')) per.set(Number(pid), (per.get(Number(pid)) ?? 0) + 1);
  return per;
}

export interface PidHandler {
  /** The module, for `--handler`. */
  path: string;
  /** Every process that loads it from now on fails to start. */
  failFrom: () => void;
  /** The next process that loads it fails to start; the others load. */
  failOne: () => void;
  /** The next process that loads it hangs there (it never listens) until {@link release}. */
  holdOne: () => void;
  /** Every process that loads it from now on hangs there until {@link release}. */
  holdFrom: () => void;
  /** The held processes go on loading (and those that load it later do not hang). */
  release: () => void;
  /** Pid of the process held at load, once it wrote it. */
  held: () => number | undefined;
  /** Removes every flag (and the module, with `remove`). */
  heal: (remove?: boolean) => void;
}

/**
 * A handler module answering every message with its process's pid, that can make the processes
 * loading it fail or hang before they listen. "The next process" is the one that first creates
 * a claim file (exclusive create), so exactly one process of the cluster is affected.
 */
export function pidHandler(): PidHandler {
  const path = join(tmpdir(), `wsdrain-pid-handler-${process.pid}-${Date.now()}.mjs`);
  const flag = `${path}.fail`;
  const one = `${path}.fail-one`;
  const hold = `${path}.hold-one`;
  const holdAll = `${path}.hold`;
  const released = `${path}.released`;
  const j = JSON.stringify;
  writeFileSync(
    path,
    `import { closeSync, existsSync, openSync, writeSync } from 'node:fs';
if (existsSync(${j(flag)})) throw new Error('test handler told to fail');
/** Whether this process is the one that creates \`file\` (it writes its pid there). */
const claim = (file) => {
  let fd;
  try { fd = openSync(file, 'wx'); } catch { return false; }
  writeSync(fd, String(process.pid));
  closeSync(fd);
  return true;
};
if (existsSync(${j(one)}) && claim(${j(`${one}.claimed`)})) {
  throw new Error('test handler told to fail once');
}
// Held: this process does not listen until the test releases it (or ever).
const held = () =>
  new Promise((resolve) => {
    const t = setInterval(() => {
      if (existsSync(${j(released)})) resolve(clearInterval(t));
    }, 10);
  });
if (existsSync(${j(hold)}) && claim(${j(`${hold}.claimed`)})) await held();
else if (existsSync(${j(holdAll)}) && !existsSync(${j(released)})) await held();
export default () => String(process.pid);
`,
  );
  const flags = [flag, one, `${one}.claimed`, hold, `${hold}.claimed`, holdAll, released];
  return {
    path,
    failFrom: () => writeFileSync(flag, ''),
    failOne: () => writeFileSync(one, ''),
    holdOne: () => writeFileSync(hold, ''),
    holdFrom: () => writeFileSync(holdAll, ''),
    release: () => writeFileSync(released, ''),
    held: () => {
      try {
        const pid = Number(readFileSync(`${hold}.claimed`, 'utf8'));
        return pid > 0 ? pid : undefined;
      } catch {
        return undefined;
      }
    },
    heal: (remove = false) => {
      for (const f of remove ? [...flags, path] : flags) rmSync(f, { force: true });
    },
  };
}

/** Pids of the live (not zombie) child processes of the primary: its workers, now. */
export function workerPids(srv: Running): number[] {
  const ppid = srv.child.pid;
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
    const [state, parent] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(parent) === ppid && state !== 'Z') out.push(Number(name));
  }
  return out.sort((a, b) => a - b);
}

/** Waits until the primary has exactly the workers `pids` (in any order). */
export async function onlyWorkers(srv: Running, pids: number[], timeoutMs = 10_000): Promise<void> {
  const want = [...pids].sort((a, b) => a - b).join(',');
  await until(
    () => workerPids(srv).join(',') === want,
    () => `the workers to be exactly ${want}; they are ${workerPids(srv).join(',')}`,
    timeoutMs,
  );
}

/** SIGKILLs `pid` if it is still alive (a test's cleanup: no process left, stopped or not). */
export function killIfAlive(pid: number | undefined): void {
  if (pid === undefined || !alive(pid)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {}
}

/** A port free a moment ago (bound to port 0, then closed), for a server whose port must not move. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export interface Probe {
  /** Attempts that completed a handshake. */
  readonly opened: number;
  /** Each attempt that failed: when (ms since the probe started) and why. */
  readonly failures: string[];
  /** Starts no new attempt and waits until those under way are over. */
  hold: () => Promise<void>;
  /** Starts attempts again. */
  release: () => void;
  /** Stops for good; resolves with the failures. */
  stop: () => Promise<string[]>;
}

/**
 * A probe's handshake counts as lost past this: a connection no worker answers (one the
 * primary handed to a worker that exited without answering it stays open for good) fails;
 * one answered late on a busy machine does not.
 */
const PROBE_HANDSHAKE_MS = 15_000;

/**
 * Fresh connection attempts, one after another on each of `lanes` lanes (10 ms apart), for as
 * long as the probe runs: a refused connection (ECONNREFUSED), a reset, an answer other than
 * 101 or a handshake that does not complete within 15 s is a failure. An attempt that opens is
 * closed at once. {@link Probe.hold} keeps it out of a moment the test makes on purpose (a
 * worker SIGKILLed: the connections being handed to it at that instant are lost with it).
 */
export function probe(port: number, lanes = 2): Probe {
  const born = Date.now();
  const failures: string[] = [];
  let opened = 0;
  let inFlight = 0;
  let held = false;
  let stopped = false;
  const parked: Array<() => void> = [];
  const attempt = (): void => {
    if (stopped) return;
    if (held) {
      parked.push(attempt);
      return;
    }
    inFlight++;
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { handshakeTimeout: PROBE_HANDSHAKE_MS });
    let done = false;
    const end = (failure?: string): void => {
      if (done) return;
      done = true;
      inFlight--;
      if (failure) failures.push(`at ${Date.now() - born} ms: ${failure}`);
      else opened++;
      setTimeout(attempt, 10);
    };
    ws.on('error', (e: NodeJS.ErrnoException) => end(e.code ?? e.message));
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      end(`answer ${res.statusCode}`);
      ws.terminate();
    });
    ws.on('open', () => {
      end();
      ws.terminate();
    });
    ws.on('close', () => end('closed before it opened'));
  };
  for (let i = 0; i < lanes; i++) attempt();
  return {
    get opened() {
      return opened;
    },
    failures,
    hold: async () => {
      held = true;
      await until(
        () => inFlight === 0,
        'the probe attempts under way to end',
        PROBE_HANDSHAKE_MS + 5000,
      );
    },
    release: () => {
      held = false;
      for (const a of parked.splice(0)) a();
    },
    stop: async () => {
      stopped = true;
      await until(
        () => inFlight === 0,
        'the probe attempts under way to end',
        PROBE_HANDSHAKE_MS + 5000,
      );
      return failures;
    },
  };
}
