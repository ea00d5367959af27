/**
 * A real `redis-server` on a free loopback port, with a directory of its own and no persistence
 * unless asked: started by the tests (test/helpers/redis.ts re-exports this module and installs
 * Debian's package when it is missing) and by the bench's Redis rows (which skip, saying why,
 * when it is missing). The server answers a PING before startRedis() resolves.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, mkdtempSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { freePort } from './net.js';

export { freePort };

/** The path of `redis-server` on PATH, or undefined. */
export function redisServerPath(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const file = join(dir, 'redis-server');
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {}
  }
  return undefined;
}

export interface RedisServer {
  port: number;
  /** redis://127.0.0.1:<port> */
  url: string;
  /** Its own directory (dumps, append-only files). */
  dir: string;
  /** The process id while it runs (its threads count with it in /proc). */
  readonly pid: number | undefined;
  /** Whether it runs now. */
  readonly running: boolean;
  /** Its output so far. */
  output: () => string;
  /** SIGKILL, and wait for the exit. */
  kill: () => Promise<void>;
  /** SIGTERM, and wait for the exit. */
  stop: () => Promise<void>;
  /** Starts it again on the same port and directory (after kill or stop). */
  restart: () => Promise<void>;
  /** Sends `signal` to it (SIGSTOP / SIGCONT: a Redis that stops answering). */
  signal: (signal: NodeJS.Signals) => void;
}

export interface StartRedisOptions {
  /** Turn the append-only file on. @default false */
  persist?: boolean;
  /** `redis-server` to run. @default the one on PATH */
  path?: string;
  /** Spawn it in a process group of its own (the bench kills groups when it exits). */
  detached?: boolean;
  /** Called with every process started (the first, and each restart). */
  spawned?: (child: ChildProcess) => void;
}

/** Resolves once something on `port` answers a PING with PONG. */
async function answers(port: number, timeoutMs: number): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = tcpConnect({ port, host: '127.0.0.1' });
      let buf = '';
      const done = (v: boolean): void => {
        s.destroy();
        resolve(v);
      };
      s.on('error', () => done(false));
      s.setTimeout(500, () => done(false));
      s.on('data', (d) => {
        buf += d.toString();
        if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
      });
      s.on('connect', () => s.write('PING\r\n'));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}

/** Starts a redis-server on a free port of 127.0.0.1; resolves once it answers. */
export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisServer> {
  const path = opts.path ?? redisServerPath() ?? 'redis-server';
  const dir = mkdtempSync(join(tmpdir(), 'wsdrain-redis-'));
  let child: ChildProcess | undefined;
  let out = '';
  let port = 0;
  const launch = async (): Promise<boolean> => {
    const args = [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      opts.persist ? 'yes' : 'no',
      '--daemonize',
      'no',
      '--protected-mode',
      'no',
      '--logfile',
      '',
    ];
    const c = spawn(path, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: opts.detached === true,
    });
    c.on('error', (e) => {
      out += `spawn failed: ${e.message}\n`;
    });
    c.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    c.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child = c;
    opts.spawned?.(c);
    const exited = once(c, 'exit').then(() => false);
    return Promise.race([answers(port, 10_000), exited]);
  };
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    if (await launch()) break;
    if (child && child.exitCode === null) child.kill('SIGKILL');
    if (attempt >= 4) throw new Error(`redis-server did not start:\n${out}`);
  }
  const waitExit = async (signal: NodeJS.Signals): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = once(c, 'exit');
    c.kill(signal);
    await gone;
  };
  const server: RedisServer = {
    get port() {
      return port;
    },
    get url() {
      return `redis://127.0.0.1:${port}`;
    },
    dir,
    get pid() {
      return server.running ? child?.pid : undefined;
    },
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    output: () => out,
    kill: () => waitExit('SIGKILL'),
    signal: (signal) => {
      child?.kill(signal);
    },
    stop: () => waitExit('SIGTERM'),
    restart: async () => {
      if (server.running) throw new Error('redis-server still runs');
      // The port was ours a moment ago; retry briefly if the kernel holds it.
      for (let attempt = 0; ; attempt++) {
        if (await launch()) return;
        if (attempt >= 20) throw new Error(`redis-server did not start again:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
  return server;
}
