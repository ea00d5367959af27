/**
 * A real `redis-server` for tests: Debian's package (scripts/ci-prereqs.sh installs it; this
 * helper runs that script once when it is missing), started on a free loopback port with a
 * directory of its own and no persistence unless asked, stopped after.
 *
 * Tests that need it: `describe.skipIf(REDIS_MISSING !== undefined)`, with REDIS_MISSING in the
 * title, so a run without Redis says why.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { ROOT } from './process.js';

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const file = join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {}
  }
  return undefined;
}

function findRedis(): { path: string } | { missing: string } {
  const found = onPath('redis-server');
  if (found) return { path: found };
  // Install it as CI does (Debian's package; needs root and apt-get).
  const r = spawnSync('bash', [join(ROOT, 'scripts/ci-prereqs.sh'), 'redis'], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  const again = onPath('redis-server');
  if (again) return { path: again };
  const why = `${r.stderr ?? ''}`.trim().split('\n').at(-1) || 'scripts/ci-prereqs.sh redis failed';
  return { missing: `redis-server is missing and could not be installed: ${why}` };
}

const found = findRedis();

/** Why tests that need Redis skip (undefined: redis-server is there). */
export const REDIS_MISSING: string | undefined = 'missing' in found ? found.missing : undefined;

const REDIS_PATH = 'path' in found ? found.path : 'redis-server';

export interface RedisServer {
  port: number;
  /** redis://127.0.0.1:<port> */
  url: string;
  /** Its own directory (dumps, append-only files). */
  dir: string;
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

const servers = new Set<RedisServer>();

/** A free loopback port (taken by nobody a moment ago). */
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

/** Starts a redis-server; `persist` turns the append-only file on. */
export async function startRedis(opts: { persist?: boolean } = {}): Promise<RedisServer> {
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
    const c = spawn(REDIS_PATH, args, { stdio: ['ignore', 'pipe', 'pipe'] });
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
  servers.add(server);
  return server;
}

/** Stops every redis-server a test started and removes its directory (afterAll). */
export async function stopAllRedis(): Promise<void> {
  await Promise.all(
    [...servers].map(async (s) => {
      s.signal('SIGCONT');
      await s.kill();
      rmSync(s.dir, { recursive: true, force: true });
    }),
  );
  servers.clear();
}

/** One command in RESP. */
function resp(parts: string[]): string {
  return `*${parts.length}\r\n${parts.map((p) => `$${Buffer.byteLength(p)}\r\n${p}\r\n`).join('')}`;
}

/**
 * One Redis command over a plain socket, for tests that look at or forge what is in Redis.
 * Resolves with the raw RESP reply (QUIT's "+OK" removed).
 */
export function redisCommand(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ port, host: '127.0.0.1' });
    let buf = '';
    s.on('error', reject);
    s.setTimeout(2000, () => {
      s.destroy();
      reject(new Error(`no answer to ${args[0]}`));
    });
    s.on('data', (d) => {
      buf += d.toString();
    });
    s.on('end', () => resolve(buf.replace(/\+OK\r\n$/, '')));
    s.on('connect', () => s.write(resp(args) + resp(['QUIT'])));
  });
}
