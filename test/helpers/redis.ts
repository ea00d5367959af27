/**
 * A real `redis-server` for tests: Debian's package (scripts/ci-prereqs.sh installs it; this
 * helper runs that script once when it is missing), started on a free loopback port with a
 * directory of its own and no persistence unless asked, stopped after. Starting and stopping
 * is bench/lib/redis.ts, shared with the bench.
 *
 * Tests that need it: `describe.skipIf(REDIS_MISSING !== undefined)`, with REDIS_MISSING in the
 * title, so a run without Redis says why.
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import {
  type RedisServer,
  redisServerPath,
  type StartRedisOptions,
  startRedis as start,
} from '../../bench/lib/redis.js';
import { ROOT } from './process.js';

export { freePort, type RedisServer } from '../../bench/lib/redis.js';

function findRedis(): { path: string } | { missing: string } {
  const found = redisServerPath();
  if (found) return { path: found };
  // Install it as CI does (Debian's package; needs root and apt-get).
  const r = spawnSync('bash', [join(ROOT, 'scripts/ci-prereqs.sh'), 'redis'], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  const again = redisServerPath();
  if (again) return { path: again };
  const why = `${r.stderr ?? ''}`.trim().split('\n').at(-1) || 'scripts/ci-prereqs.sh redis failed';
  return { missing: `redis-server is missing and could not be installed: ${why}` };
}

const found = findRedis();

/** Why tests that need Redis skip (undefined: redis-server is there). */
export const REDIS_MISSING: string | undefined = 'missing' in found ? found.missing : undefined;

const servers = new Set<RedisServer>();

/** Starts a redis-server; `persist` turns the append-only file on. */
export async function startRedis(
  opts: Pick<StartRedisOptions, 'persist'> = {},
): Promise<RedisServer> {
  const server = await start({ ...opts, ...('path' in found ? { path: found.path } : {}) });
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
