/**
 * Real wsdrain processes for tests: spawned from the built CLI (dist/), listening on port 0,
 * read back through their JSON log lines on stdout.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { bounded, until } from './wait.js';

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface LogLine {
  level: string;
  msg: string;
  role?: string;
  pid?: number;
  port?: number;
  [k: string]: unknown;
}

export interface Running {
  child: ChildProcess;
  port: number;
  lines: LogLine[];
  stderr: () => string;
  /** Resolves with the first log line matching `pred` (already seen ones count). */
  waitFor: (pred: (l: LogLine) => boolean, timeoutMs?: number) => Promise<LogLine>;
  /**
   * Resolves when the process exits, with its code, its signal and the time of the exit
   * (epoch ms). A wait on it gives up after 20 s.
   */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  kill: (signal?: NodeJS.Signals) => void;
}

const live = new Set<ChildProcess>();

/** Kills whatever a test left running (call from afterEach/afterAll). */
export function killAll(): void {
  for (const c of live) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  live.clear();
}

/** Spawns `wsdrain start` and waits for its ready line. */
export async function startWsdrain(
  args: string[],
  opts: {
    env?: NodeJS.ProcessEnv;
    readyTimeoutMs?: number;
    waitReady?: boolean;
    /** Command that runs node, e.g. a shell that lowers a limit first and then execs "$0". */
    wrap?: string[];
    /** A script of one's own that calls `start()` instead of the CLI (`args` then go to it). */
    script?: string;
  } = {},
): Promise<Running> {
  const argv = opts.script
    ? [process.execPath, opts.script, ...args]
    : [process.execPath, CLI, 'start', '--port', '0', '--host', '127.0.0.1', ...args];
  const [cmd, ...rest] = [...(opts.wrap ?? []), ...argv] as [string, ...string[]];
  const child = spawn(cmd, rest, {
    cwd: ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  const lines: LogLine[] = [];
  const waiters: Array<{ pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];
  let err = '';
  let buf = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    buf += chunk;
    let i = buf.indexOf('\n');
    while (i !== -1) {
      const raw = buf.slice(0, i);
      buf = buf.slice(i + 1);
      i = buf.indexOf('\n');
      let line: LogLine;
      try {
        line = JSON.parse(raw) as LogLine;
      } catch {
        continue;
      }
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.pred(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (c: string) => {
    err += c;
  });
  const exited = once(child, 'exit').then(([code, signal]) => {
    live.delete(child);
    return { code: code as number | null, signal: signal as NodeJS.Signals | null, at: Date.now() };
  });
  const waitFor = (pred: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> => {
    const seen = lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        reject(
          new Error(
            `timed out waiting for a log line; stderr: ${err}\nlines: ${lines.map((l) => l.msg).join(' | ')}`,
          ),
        );
      }, timeoutMs);
      waiters.push({
        pred,
        resolve: (l) => {
          clearTimeout(t);
          resolve(l);
        },
      });
      exited.then(() => {
        clearTimeout(t);
        reject(
          new Error(
            `process exited before the expected log line; stderr: ${err}\nlines: ${lines.map((l) => l.msg).join(' | ')}`,
          ),
        );
      });
    });
  };
  let port = 0;
  if (opts.waitReady !== false) {
    const ready = await waitFor(
      (l) => l.msg.startsWith('wsdrain ready'),
      opts.readyTimeoutMs ?? 15_000,
    );
    port = ready.port as number;
  }
  return {
    child,
    port,
    lines,
    stderr: () => err,
    waitFor,
    exited: bounded(
      exited,
      20_000,
      () => `process ${child.pid} to exit; lines: ${lines.map((l) => l.msg).join(' | ')}`,
    ),
    kill: (signal = 'SIGTERM') => {
      child.kill(signal);
    },
  };
}

/**
 * Pids of the cluster workers that logged `worker listening`, in the order of their lines,
 * once there are at least `n` of them. Workers write their lines themselves, asynchronously,
 * on the pipe they share with the primary: the primary's `wsdrain ready` line (or any other
 * line it writes once a worker listens) can be read before the worker's own line.
 */
export async function listeningPids(
  srv: Running,
  n: number,
  timeoutMs = 10_000,
): Promise<number[]> {
  const pids = (): number[] => loggedWorkerPids(srv.lines);
  await until(
    () => pids().length >= n,
    () => `${n} 'worker listening' lines, got ${pids().length}`,
    timeoutMs,
  );
  return pids();
}

/** Pids of the workers whose `worker listening` line has been read so far, in log order. */
export function loggedWorkerPids(lines: LogLine[]): number[] {
  return [
    ...new Set(
      lines
        .filter((l) => l.role === 'worker' && l.msg === 'worker listening')
        .map((l) => l.pid as number),
    ),
  ];
}

/** Waits until none of `pids` is alive; rejects after `timeoutMs` naming the live ones. */
export function gone(pids: number[], timeoutMs: number): Promise<void> {
  return until(
    () => pids.every((p) => !alive(p)),
    () => `pids ${pids.filter(alive).join(', ')} to be gone`,
    timeoutMs,
  );
}

/** Whether a pid is alive (a zombie waiting to be reaped counts as gone). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
