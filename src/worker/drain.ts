/**
 * The phased drain of one server, driven by one absolute deadline (epoch ms). Read it top to
 * bottom: each phase is one step of {@link runDrain}.
 *
 *   1. stop taking work   /readyz -> 503, no more pings; new upgrades get 503 + Retry-After
 *   2. delay              `delayMs` (bounded by the deadline) for load balancers; then, on a
 *                         restart, the listener closes (upgrades already on their way are
 *                         completed and closed with the drain code: `lateUpgrades`)
 *   3. finish in-flight   a socket's close frame waits for the replies it already owes, until
 *                         the last call (the deadline minus MIN_ANSWER_MS, the time peers
 *                         need to answer): then its work is abandoned (counted) and the
 *                         close frame goes anyway, so no socket is cut without one
 *   4. close frames       `code` + a reason with a reconnect hint, all at once in chunks (the
 *                         peers' answers are read once every frame is out) or paced over a
 *                         window; messages after a socket's close frame are `late`, counted
 *                         and never answered (RFC 6455)
 *                         once the listener has closed, connections it accepted just before
 *                         whose request is still on its way get up to ARRIVAL_GRACE_MS (to
 *                         the last call at most) to send it: completed and closed with the
 *                         drain code (late upgrades), not reset by the shutdown
 *   5. bounded wait       for the peers' close frames: `clean` when the handshake completed
 *                         both ways, `dropped` when the peer went without one
 *   6. terminate          what is left at the deadline (`terminated`); stop the pool; report
 *
 * The budget arithmetic (deadline, exit margin, last call) is in ../drain/budget.ts. No
 * per-socket timers: one for the delay, one for the last call, one for the deadline, all
 * cancelled when the drain ends early.
 */
import { CloseCode } from '../codes.js';
import { MIN_ANSWER_MS } from '../drain/budget.js';
import type { DrainReport } from '../drain/report.js';
import { DrainStateError } from '../errors.js';
import type { Connection } from './connection.js';
import type { WsdrainServer } from './server.js';

export type { DrainReport };

/** Options of one drain. */
export interface DrainOptions {
  /** Close code: 1001 on shutdown, 1012 on a rolling restart. @default 1001 */
  code?: number;
  /**
   * Close reason (at most 123 bytes), or a function called once per socket with its index in
   * the close order and the number of sockets (no arguments for late upgrades), so each can
   * carry its own reconnect hint.
   * @default ''
   */
  reason?: string | ((i?: number, n?: number) => string);
  /**
   * Spread the close frames evenly (with jitter) over this many ms, starting after the
   * delay; capped so the peers still have time to answer before the deadline. @default 0
   */
  windowMs?: number;
  /** Alternative to `windowMs`: close at most this many sockets per second. @default 0 */
  rate?: number;
  /** Source of jitter. @default Math.random */
  random?: () => number;
  /** Absolute deadline, epoch ms: sockets still open then are terminated. */
  deadline: number;
  /** Phase 2 delay, in ms. @default the server's --drain-delay */
  delayMs?: number;
  /** Sockets closed per event-loop turn in phase 4. @default 512 */
  chunk?: number;
  /** Called with the number of sockets still open, about every `progressMs`. */
  onProgress?: (remaining: number) => void;
  /** @default 250 */
  progressMs?: number;
  /** Called with the report as soon as it is complete, before the pool stops. */
  onReport?: (report: DrainReport) => void;
  /** Resolve the drain now: terminate what is left (second signal). */
  signal?: AbortSignal;
  /**
   * Keep listening until the drain ends (upgrades get 503 + Retry-After) instead of closing
   * the listener after the delay. @default true for 1001 (shutdown), false otherwise
   */
  keepListening?: boolean;
}

const drains = new WeakMap<WsdrainServer, Promise<DrainReport>>();

/** Longest a drain waits for a request on its way to a closed listener's last connections, ms. */
export const ARRIVAL_GRACE_MS = 1000;

/**
 * Drains `server`. A second call returns the running drain's promise (a drain command after
 * a drain has started changes nothing).
 */
export function drainServer(server: WsdrainServer, opts: DrainOptions): Promise<DrainReport> {
  const running = drains.get(server);
  if (running) return running;
  if (server.state === 'closed') {
    return Promise.reject(new DrainStateError('server is already closed'));
  }
  const p = runDrain(server, opts);
  drains.set(server, p);
  return p;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

async function runDrain(server: WsdrainServer, opts: DrainOptions): Promise<DrainReport> {
  const started = Date.now();
  const { conns } = server;
  const code = opts.code ?? CloseCode.GOING_AWAY;
  const given = opts.reason ?? '';
  const reason = typeof given === 'function' ? given : () => given;
  const random = opts.random ?? Math.random;
  const chunk = opts.chunk ?? 512;
  const lateUpgradesBefore = server.stats().lateUpgrades;
  const report: DrainReport = {
    sockets: conns.size,
    clean: 0,
    terminated: 0,
    dropped: 0,
    inflightCompleted: 0,
    late: 0,
    abandoned: 0,
    lateUpgrades: 0,
    durationMs: 0,
    code,
    windowMs: 0,
  };
  // The deadline (or a second signal) aborts every wait below.
  const deadline = new AbortController();
  const onForce = (): void => deadline.abort();
  opts.signal?.addEventListener('abort', onForce, { once: true });
  if (opts.signal?.aborted) deadline.abort();
  const deadlineTimer = setTimeout(onForce, Math.max(0, opts.deadline - Date.now()));

  // Accounting, from now to the end: replies owed, late messages, how each socket went.
  let closing = false; // phase 4 has begun: the last socket to go ends phase 5
  let allClosed: () => void = () => {};
  const closedAll = new Promise<void>((resolve) => {
    allClosed = resolve;
  });
  conns.watch = {
    replied: (conn) => {
      if (!conn.abandoned) report.inflightCompleted++;
    },
    late: () => {
      report.late++;
    },
  };
  const onClose = (conn: Connection, _code: number, clean: boolean): void => {
    if (conn.terminated) return; // counted in phase 6
    if (clean) report.clean++;
    else report.dropped++;
    if (closing && conns.size === 0) allClosed();
  };
  conns.on('close', onClose);

  // 1. Stop taking work: readiness off now; the listener closes after the delay.
  server.beginDrain(code, reason);
  const progress = opts.onProgress
    ? setInterval(() => opts.onProgress?.(conns.size), opts.progressMs ?? 250)
    : undefined;

  // 2. Delay. On a shutdown the port stays open to the end, so probes keep getting /healthz
  // 200 and /readyz 503 and new clients a 503 + Retry-After, not a refused connection. On a
  // restart the other workers serve the port: stop taking connections now.
  await sleep(
    Math.min(opts.delayMs ?? server.options.drainDelay, opts.deadline - Date.now()),
    deadline.signal,
  );
  const listening = opts.keepListening ?? code === CloseCode.GOING_AWAY;
  if (!listening) server.closeListener();

  // 3 + 4. Close frames, each after its socket's in-flight replies; all at once, or paced:
  // socket i of n goes at start + window * (i + jitter) / n, the window ending MIN_ANSWER_MS
  // before the deadline at the latest.
  closing = true;
  const snapshot = [...conns.all];
  const n = snapshot.length;
  // The app's `drain` hook first, for every socket at once: each close frame waits for it.
  const kind = code === CloseCode.RESTART ? 'restart' : 'shutdown';
  for (const conn of snapshot) server.app.beforeDrain(conn, kind);
  const start = Date.now();
  const room = Math.max(0, opts.deadline - start - MIN_ANSWER_MS);
  const wanted = opts.rate && opts.rate > 0 ? (n / opts.rate) * 1000 : (opts.windowMs ?? 0);
  const window = n > 1 ? Math.min(wanted, room) : 0;
  report.windowMs = Math.round(window);
  // A burst: the peers' answers wait in the kernel until every close frame is out.
  if (window === 0) conns.holdReads();
  for (let i = 0; i < n && !deadline.signal.aborted; i++) {
    if (window > 0) {
      const due = start + (window * (i + random())) / n;
      const wait = due - Date.now();
      if (wait > 1) await sleep(wait, deadline.signal);
      if (deadline.signal.aborted) break;
    }
    const conn = snapshot[i]!;
    if (!conn.open) continue;
    // 3. A socket that still owes replies gets its close frame when the last one is out. It
    // is no longer read meanwhile: what its peer sends from now on waits in the kernel and is
    // read after the close frame (late), so the replies owed stop growing and the frame goes.
    if (conn.inflight > 0) {
      conn.closeWhenIdle = { code, reason: reason(i, n) };
      conns.stopReading(conn);
    } else conns.close(conn, code, reason(i, n));
    if (window === 0 && (i + 1) % chunk === 0) await new Promise<void>((r) => setImmediate(r));
  }
  conns.releaseReads();
  // A connection the listener accepted just before it closed may not have sent its upgrade
  // yet (a drain of few sockets ends within a millisecond): wait for it, or the shutdown would
  // reset it. It is completed and closed with the drain code at once, and awaited below.
  if (!listening) {
    const until = Math.min(Date.now() + ARRIVAL_GRACE_MS, opts.deadline - MIN_ANSWER_MS);
    while (server.arriving > 0 && Date.now() < until && !deadline.signal.aborted) {
      await sleep(5, deadline.signal);
    }
  }
  if (conns.size === 0) allClosed();

  // 3, the last call: sockets still owed replies get their close frame now, their work
  // abandoned, so that their peers can still answer before the deadline.
  const lastCall = setTimeout(
    () => {
      for (const conn of conns.all) {
        if (!conn.closeWhenIdle || conn.closeSent) continue;
        conn.abandoned = true;
        report.abandoned += conn.inflight;
        conns.close(conn, conn.closeWhenIdle.code, conn.closeWhenIdle.reason);
      }
    },
    Math.max(0, opts.deadline - MIN_ANSWER_MS - Date.now()),
  );

  // 5. Bounded wait for the peers' close frames.
  if (!deadline.signal.aborted) {
    await Promise.race([
      closedAll,
      new Promise<void>((r) =>
        deadline.signal.addEventListener('abort', () => r(), { once: true }),
      ),
    ]);
  }
  clearTimeout(deadlineTimer);
  clearTimeout(lastCall);
  opts.signal?.removeEventListener('abort', onForce);

  // 6. Terminate what is left, stop the pool, report.
  report.terminated = server.terminateAll();
  if (progress) clearInterval(progress);
  conns.off('close', onClose);
  conns.watch = undefined;
  report.lateUpgrades = server.stats().lateUpgrades - lateUpgradesBefore;
  report.sockets += report.lateUpgrades;
  report.durationMs = Date.now() - started;
  // The report is complete: out before the pool's threads are stopped, which can take a while
  // on a busy machine, so that a primary about to kill a slow exit has it already.
  opts.onReport?.(report);
  await server.shutdown();
  return report;
}
