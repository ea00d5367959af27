/**
 * The pm2 recipe (scripts/deploy/ecosystem.config.cjs) under a real pm2 daemon with its own
 * PM2_HOME in a temp dir: `pm2 start` waits for wsdrain's 'ready', `pm2 sendSignal SIGHUP`
 * rolls the workers (clients see 1012 only and reconnect without a refusal), `pm2 stop`
 * drains (clients see 1001, never 1006) and the primary exits 0 before pm2 would SIGKILL it.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { alive, type LogLine, ROOT, sleep } from './helpers/process.js';

const PM2 = join(ROOT, 'node_modules', '.bin', 'pm2');
const ECOSYSTEM = join(ROOT, 'scripts', 'deploy', 'ecosystem.config.cjs');
const DRAIN_TIMEOUT = 3000;
const CLIENTS = 50;

let pm2Home = '';
let env: NodeJS.ProcessEnv = {};

/** Runs the pm2 CLI with our PM2_HOME; rejects with its output on a non-zero exit. */
function pm2(args: string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      PM2,
      args,
      { env, cwd: ROOT, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`pm2 ${args.join(' ')}: ${err.message}\n${stdout}\n${stderr}`));
        else resolve(stdout);
      },
    );
  });
}

interface Pm2Proc {
  name: string;
  pid: number;
  pm2_env: {
    status: string;
    exit_code?: number;
    restart_time: number;
    unstable_restarts: number;
    pm_out_log_path: string;
    pm_err_log_path: string;
  };
}

async function jlist(): Promise<Pm2Proc[]> {
  const out = await pm2(['jlist']);
  return JSON.parse(out.slice(out.indexOf('['))) as Pm2Proc[];
}

async function app(): Promise<Pm2Proc> {
  const found = (await jlist()).find((p) => p.name === 'wsdrain');
  if (!found) throw new Error('pm2 does not list the app wsdrain');
  return found;
}

/** A free TCP port: listen on 0, read it, close. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** The app's JSON log lines (pm2 writes the primary's and workers' stdout to one file). */
function logLines(file: string): LogLine[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: LogLine[] = [];
  for (const raw of text.split('\n')) {
    try {
      out.push(JSON.parse(raw) as LogLine);
    } catch {
      // pm2 or node may write non-JSON lines; skip them.
    }
  }
  return out;
}

async function waitLog(
  file: string,
  pred: (l: LogLine) => boolean,
  timeoutMs = 15_000,
): Promise<LogLine> {
  const t0 = Date.now();
  for (;;) {
    const hit = logLines(file).find(pred);
    if (hit) return hit;
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(
        `timed out waiting for a log line in ${file}:\n${logLines(file)
          .map((l) => l.msg)
          .join('\n')}`,
      );
    }
    await sleep(50);
  }
}

async function readyz(port: number): Promise<number> {
  try {
    return (await fetch(`http://127.0.0.1:${port}/readyz`)).status;
  } catch {
    return 0;
  }
}

/** One logical client: reconnects after 1012 (a restart), stays closed after anything else. */
interface Slot {
  ws: WebSocket | undefined;
  codes: number[];
  reasons: string[];
  refusals: number;
  opens: number;
}

function startClients(port: number, n: number) {
  const slots: Slot[] = [];
  let stopped = false;
  const open = (slot: Slot, i: number): void => {
    if (stopped) return;
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, {
      localAddress: `127.0.${1 + (i % 200)}.${1 + ((i >> 8) % 250)}`,
    });
    slot.ws = ws;
    let opened = false;
    ws.on('error', () => {});
    ws.on('open', () => {
      opened = true;
      slot.opens++;
    });
    ws.on('close', (code, reason) => {
      if (!opened) {
        // Refused, reset or answered with something else than 101.
        slot.refusals++;
        if (!stopped) setTimeout(() => open(slot, i), 20);
        return;
      }
      slot.codes.push(code);
      slot.reasons.push(reason.toString());
      if (code === 1012) setImmediate(() => open(slot, i));
    });
  };
  for (let i = 0; i < n; i++) {
    const slot: Slot = { ws: undefined, codes: [], reasons: [], refusals: 0, opens: 0 };
    slots.push(slot);
    open(slot, i);
  }
  const openCount = (): number => slots.filter((s) => s.ws?.readyState === WebSocket.OPEN).length;
  return {
    slots,
    openCount,
    async waitOpen(want: number, timeoutMs = 15_000): Promise<void> {
      const t0 = Date.now();
      while (openCount() < want) {
        if (Date.now() - t0 > timeoutMs) throw new Error(`only ${openCount()} of ${want} open`);
        await sleep(20);
      }
    },
    async waitAllClosed(timeoutMs = 15_000): Promise<void> {
      const t0 = Date.now();
      while (slots.some((s) => s.ws && s.ws.readyState !== WebSocket.CLOSED)) {
        if (Date.now() - t0 > timeoutMs) throw new Error('clients still open');
        await sleep(20);
      }
    },
    stop(): void {
      stopped = true;
      for (const s of slots) s.ws?.terminate();
    },
  };
}

/** Pids of processes that carry our PM2_HOME in their environment (daemon, app, workers). */
function pidsWithOurHome(): number[] {
  const marker = `PM2_HOME=${pm2Home}\0`;
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (`${readFileSync(`/proc/${name}/environ`, 'latin1')}\0`.includes(marker))
        out.push(Number(name));
    } catch {
      // gone, or not ours to read
    }
  }
  return out.filter((pid) => pid !== process.pid);
}

beforeAll(async () => {
  pm2Home = mkdtempSync(join(tmpdir(), 'wsdrain-pm2-'));
  // pm2 checks for a new version (over the network) the first time a PM2_HOME is used,
  // unless this file exists.
  writeFileSync(join(pm2Home, 'touch'), String(Date.now()));
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('WSDRAIN_') && !k.startsWith('PM2_') && k !== 'PORT') base[k] = v;
  }
  env = {
    ...base,
    PM2_HOME: pm2Home,
    PM2_DISABLE_VERSION_CHECK: 'true',
    PORT: String(await freePort()),
    WSDRAIN_WORKERS: '2',
    WSDRAIN_THREADS: '1',
    WSDRAIN_HOST: '127.0.0.1',
    WSDRAIN_DRAIN_TIMEOUT: String(DRAIN_TIMEOUT),
  };
});

afterAll(async () => {
  if (!pm2Home) return;
  try {
    await pm2(['kill'], 20_000);
  } catch {
    // the daemon may not be running; leftovers are killed below
  }
  // Whatever survived (a failed test, a hung daemon): only processes carrying our PM2_HOME.
  for (const pid of pidsWithOurHome()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  rmSync(pm2Home, { recursive: true, force: true });
}, 30_000);

describe('pm2 recipe (scripts/deploy/ecosystem.config.cjs)', () => {
  it('starts when ready, rolls on SIGHUP with 1012 only, stops with a 1001 drain and exit 0', {
    timeout: 60_000,
  }, async () => {
    const port = Number(env.PORT);

    // Start: wait_ready makes `pm2 start` return once the primary sent 'ready'.
    await pm2(['start', ECOSYSTEM], 45_000);
    const started = await app();
    expect(started.pm2_env.status).toBe('online');
    const out = started.pm2_env.pm_out_log_path;
    const ready = await waitLog(out, (l) => l.msg.startsWith('wsdrain ready'));
    expect(ready.msg).toBe(`wsdrain ready on 127.0.0.1:${port} with 2 workers`);
    expect(ready.pid).toBe(started.pid);
    const before = ready.pids as number[];
    expect(before).toHaveLength(2);
    const t0 = Date.now();
    while ((await readyz(port)) !== 200) {
      if (Date.now() - t0 > 10_000) throw new Error('/readyz never answered 200');
      await sleep(50);
    }

    const clients = startClients(port, CLIENTS);
    try {
      await clients.waitOpen(CLIENTS);

      // Rolling restart through pm2: the signal reaches the primary only (treekill: false).
      await pm2(['sendSignal', 'SIGHUP', 'wsdrain']);
      const done = await waitLog(out, (l) => /rolling restart done/.test(l.msg), 20_000);
      await clients.waitOpen(CLIENTS);
      const after = done.pids as number[];
      expect(after).toHaveLength(2);
      for (const pid of after) expect(before).not.toContain(pid);
      for (const pid of before) expect(alive(pid)).toBe(false);
      for (const s of clients.slots) {
        expect(s.codes.length).toBeGreaterThanOrEqual(1);
        expect(new Set(s.codes)).toEqual(new Set([1012]));
        expect(s.refusals).toBe(0);
      }
      expect(clients.slots.every((s) => s.reasons[0]?.startsWith('wsdrain:restart'))).toBe(true);
      const rolled = await app();
      expect(rolled.pm2_env.status).toBe('online');
      expect(rolled.pid).toBe(started.pid); // pm2 saw no restart: the primary stayed
      expect(rolled.pm2_env.restart_time).toBe(0);
      const rollCodes = clients.slots.map((s) => s.codes.length);

      // Stop through pm2 (SIGINT to the primary): a 1001 drain well inside kill_timeout.
      const tStop = Date.now();
      await pm2(['stop', 'wsdrain'], 30_000);
      const stopMs = Date.now() - tStop;
      await clients.waitAllClosed();
      for (const [i, s] of clients.slots.entries()) {
        const fresh = s.codes.slice(rollCodes[i]);
        expect(fresh).toEqual([1001]);
        expect(s.reasons.at(-1)).toMatch(/^wsdrain:shutdown;retry=\d+$/);
        expect(s.refusals).toBe(0);
      }
      const all = clients.slots.flatMap((s) => s.codes);
      expect(all).not.toContain(1006);
      expect(stopMs).toBeLessThan(DRAIN_TIMEOUT + 2000);

      const stopped = await app();
      expect(stopped.pm2_env.status).toBe('stopped');
      expect(stopped.pm2_env.exit_code).toBe(0);
      expect(stopped.pm2_env.restart_time).toBe(0);
      const summary = await waitLog(
        out,
        (l) => l.role === 'primary' && /^drained \d+ sockets/.test(l.msg),
      );
      expect(summary.report).toMatchObject({
        sockets: CLIENTS,
        clean: CLIENTS,
        terminated: 0,
        workersKilled: 0,
        workersLost: 0,
      });
      for (const pid of [started.pid, ...after]) expect(alive(pid)).toBe(false);
    } finally {
      clients.stop();
    }
  });
});
