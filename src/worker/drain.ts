/**
 * The phased drain of one server, driven by one absolute deadline (epoch ms):
 *
 *   1. stop taking work   /readyz -> 503; new upgrades get 503 + Retry-After
 *   2. delay              `drainDelay` ms (bounded by the deadline) for load balancers, then
 *                         the listener closes; late upgrades are closed with `code`
 *   3. finish in-flight   a socket's close frame waits for the replies it already owes, until
 *                         the last call (the deadline minus the time peers need to answer):
 *                         then the work still owed is abandoned (counted) and the close
 *                         frame goes anyway, so no socket is cut without one
 *   4. close frames       `code` + reason, sent in chunks so the event loop keeps turning
 *   5. bounded wait       for the peers' close frames, until the deadline
 *   6. terminate          what is left at the deadline; stop the pool; report
 *
 * No per-socket timers are armed here: one timer for the delay, one for the deadline, both
 * cancelled when the drain ends early.
 */
import { DrainStateError } from '../errors.js';
import { MIN_ANSWER_MS } from '../options.js';
import { CloseCode, type Conn, type WsdrainServer } from './server.js';

/** What one server's drain did. */
export interface DrainReport {
  /** WebSocket connections open when the drain began, plus late upgrades. */
  sockets: number;
  /** Closed with a complete closing handshake. */
  clean: number;
  /** Terminated at the deadline (or by a forced stop). */
  terminated: number;
  /** Closed by the peer or the network without a complete handshake before the deadline. */
  dropped: number;
  /** Messages answered during the drain (they were received before their close frame). */
  inflightCompleted: number;
  /** Messages that arrived after their socket's close frame: counted, never answered. */
  late: number;
  /** Messages whose work was still running or queued at the last call: never answered. */
  abandoned: number;
  /** Upgrades that arrived after the listener closed and were closed with the drain code. */
  lateUpgrades: number;
  /** From the start of the drain to the end of phase 6, in ms. */
  durationMs: number;
  /** Close code sent. */
  code: number;
  /** Window the close frames were spread over, in ms (0: all at once). */
  windowMs: number;
}

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
  /** Phase 2 delay, in ms. @default server.options.drainDelay */
  delayMs?: number;
  /** Sockets closed per event-loop turn in phase 4. @default 512 */
  chunk?: number;
  /** Called with the number of sockets still open, about every `progressMs`. */
  onProgress?: (remaining: number) => void;
  /** @default 250 */
  progressMs?: number;
  /** Resolve the drain now: terminate what is left (second signal). */
  signal?: AbortSignal;
  /**
   * Keep listening until the drain ends (upgrades get 503 + Retry-After) instead of closing
   * the listener after the delay. @default true for 1001 (shutdown), false otherwise
   */
  keepListening?: boolean;
}

const drains = new WeakMap<WsdrainServer, Promise<DrainReport>>();

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

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

async function runDrain(server: WsdrainServer, opts: DrainOptions): Promise<DrainReport> {
  const started = Date.now();
  const code = opts.code ?? CloseCode.GOING_AWAY;
  const given = opts.reason ?? '';
  const reason = typeof given === 'function' ? given : () => given;
  const random = opts.random ?? Math.random;
  const chunk = opts.chunk ?? 512;
  const { stats } = server;
  const before = {
    late: stats.lateMessages,
    lateUpgrades: stats.lateUpgrades,
    inflight: stats.inflightCompletedDuringDrain,
  };
  const report: DrainReport = {
    sockets: server.conns.size,
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
  // The deadline is also the abort of every wait below.
  const ac = new AbortController();
  const onForce = (): void => ac.abort();
  opts.signal?.addEventListener('abort', onForce, { once: true });
  if (opts.signal?.aborted) ac.abort();
  const deadlineTimer = setTimeout(onForce, Math.max(0, opts.deadline - Date.now()));

  let allClosed: () => void = () => {};
  const closedAll = new Promise<void>((resolve) => {
    allClosed = resolve;
  });
  const onClose = (conn: Conn): void => {
    const ws = conn.ws as unknown as { _closeFrameReceived: boolean; _closeFrameSent: boolean };
    if (conn.terminated) return;
    if (ws._closeFrameReceived && ws._closeFrameSent) report.clean++;
    else report.dropped++;
    if (server.conns.size === 0 && server.state === 'draining' && phase >= 4) allClosed();
  };
  let phase = 1;
  server.on('conn-close', onClose);

  // 1. Stop taking work: readiness off now; the listener closes after the delay.
  server.beginDrain(code, reason);
  const progress = opts.onProgress
    ? setInterval(() => opts.onProgress?.(server.conns.size), opts.progressMs ?? 250)
    : undefined;

  // 2. Delay.
  phase = 2;
  await sleep(
    Math.min(opts.delayMs ?? server.options.drainDelay, opts.deadline - Date.now()),
    ac.signal,
  );
  // On a shutdown the port stays open to the end, so probes keep getting /healthz 200 and
  // /readyz 503 and new clients a 503 + Retry-After, not a refused connection. On a restart
  // the other workers serve the port: stop taking connections here now.
  if (!(opts.keepListening ?? code === CloseCode.GOING_AWAY)) server.closeListener();

  // 3 + 4. Close frames, each after its socket's in-flight replies; all at once, or paced:
  // socket i of n goes at start + window * (i + jitter) / n.
  phase = 4;
  const snapshot = [...server.conns];
  const n = snapshot.length;
  const start = Date.now();
  const room = Math.max(0, opts.deadline - start - MIN_ANSWER_MS);
  const wanted = opts.rate && opts.rate > 0 ? (n / opts.rate) * 1000 : (opts.windowMs ?? 0);
  const window = n > 1 ? Math.min(wanted, room) : 0;
  report.windowMs = Math.round(window);
  // A burst: the peers' answers are read once every close frame is out (see holdReads).
  if (window === 0) server.holdReads();
  for (let i = 0; i < n && !ac.signal.aborted; i++) {
    if (window > 0) {
      const due = start + (window * (i + random())) / n;
      const wait = due - Date.now();
      if (wait > 1) await sleep(wait, ac.signal);
      if (ac.signal.aborted) break;
    }
    const conn = snapshot[i]!;
    if (conn.ws.readyState !== conn.ws.OPEN) continue;
    if (conn.inflight > 0) {
      conn.closeWhenIdle = code;
      conn.closeReason = reason(i, n);
    } else {
      server.closeConn(conn, code, reason(i, n));
    }
    if (window === 0 && (i + 1) % chunk === 0) await new Promise<void>((r) => setImmediate(r));
  }
  server.releaseReads();

  // 3, continued. The last call: sockets still owed replies get their close frame now, their
  // work abandoned, so that their peers can still answer before the deadline.
  const lastCall = (): void => {
    for (const conn of server.conns) {
      if (conn.closeWhenIdle === undefined || conn.closeSent) continue;
      conn.abandoned = true;
      report.abandoned += conn.inflight;
      server.closeConn(conn, conn.closeWhenIdle, conn.closeReason);
    }
  };
  const lastCallTimer = setTimeout(
    lastCall,
    Math.max(0, opts.deadline - MIN_ANSWER_MS - Date.now()),
  );

  // 5. Bounded wait.
  if (server.conns.size > 0 && !ac.signal.aborted) {
    await Promise.race([
      closedAll,
      new Promise<void>((r) => ac.signal.addEventListener('abort', () => r(), { once: true })),
    ]);
  }
  clearTimeout(deadlineTimer);
  clearTimeout(lastCallTimer);
  opts.signal?.removeEventListener('abort', onForce);

  // 6. Terminate, stop the pool, report.
  report.terminated = server.terminateAll();
  if (progress) clearInterval(progress);
  server.off('conn-close', onClose);
  await server.shutdown();
  report.late = stats.lateMessages - before.late;
  report.lateUpgrades = stats.lateUpgrades - before.lateUpgrades;
  report.sockets += report.lateUpgrades;
  report.inflightCompleted = stats.inflightCompletedDuringDrain - before.inflight;
  report.durationMs = Date.now() - started;
  return report;
}
