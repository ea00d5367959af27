/**
 * Options of `wsdrain start`: one table of definitions drives the defaults, the command line,
 * the environment (`WSDRAIN_<FLAG_IN_CAPS>`, and `PORT`), `--help`, and validation.
 * Options are validated once, here, with exact messages that name the flag (or variable) and
 * what it accepts.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { exitMargin, MIN_ANSWER_MS } from './drain/budget.js';
import { InvalidOptionError } from './errors.js';
import { DEFAULT_MAX_WORK_MS, MAX_WORK_MS } from './handlers/echo.js';

/** Environment variable carrying the resolved options from the primary to its workers. */
export const OPTIONS_ENV = 'WSDRAIN_RESOLVED_OPTIONS';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Fully resolved options of one wsdrain server (primary and workers alike). */
export interface WsdrainOptions {
  /** TCP port of the WebSocket/HTTP server. @default 8080 */
  port: number;
  /** Address to bind. @default '0.0.0.0' */
  host: string;
  /** Cluster workers; 0 runs one process without a cluster. @default os.availableParallelism() */
  workers: number;
  /** Budget from signal to process exit, in ms. @default 10000 */
  drainTimeout: number;
  /** Wait after readiness turns off before closing sockets, in ms. @default 0 */
  drainDelay: number;
  /** Ping interval; a peer that misses a whole interval is terminated. 0 turns it off. @default 30000 */
  heartbeat: number;
  /** Largest message accepted, in bytes; larger ones are closed with 1009. @default 1048576 */
  maxPayload: number;
  /** WebSocket connections per worker; more get 503 at upgrade. @default derived from RLIMIT_NOFILE */
  maxConnections: number | undefined;
  /** Handler module (path or package); undefined means the built-in echo handler. */
  handler: string | undefined;
  /** Application module (path or package), loaded in every worker and in the primary. */
  app: string | undefined;
  /** Longest time an app hook may run, in ms (the upgrade hook has --handshake-timeout). @default 5000 */
  hookTimeout: number;
  /** Topics one connection may subscribe to. @default 100 */
  maxTopics: number;
  /** Publications kept per topic for recovery (0: none). @default 100 */
  historySize: number;
  /** Longest time a publication is kept for recovery, in ms. @default 300000 */
  historyTtl: number;
  /** `redis://host:port[/db]`: topics, history and fan-out in Redis, shared by every host on it; undefined: the embedded broker (in the primary). */
  brokerUrl: string | undefined;
  /**
   * Pool threads per worker; with 2 or more, connections whose messages are heavy use at most
   * all but one, the last stays free for the others (1: no separate lane).
   * @default max(2, round(cores / max(1, workers)))
   */
  threads: number | undefined;
  /** Longest `work` request of the built-in handler, in ms; longer ones are cut to it. @default 100 */
  maxWork: number;
  /** Port of the aggregated Prometheus endpoint (primary); undefined turns it off. */
  metricsPort: number | undefined;
  /** File to write the drain report to, as JSON. */
  report: string | undefined;
  /** pino log level. @default 'info' */
  logLevel: LogLevel;
  /** A handler call (or its promise) that makes no progress this long is aborted, its thread replaced and its connections closed with 1011, in ms. @default 30000 */
  taskTimeout: number;
  /** Time a client has to send complete upgrade request headers, in ms. @default 5000 */
  handshakeTimeout: number;
  /** Bytes queued for one client that does not read (replies, pongs, close frames); past it the client is terminated. @default 4194304 */
  maxBuffered: number;
  /** Messages per second one connection may send; more is closed with 1008. 0 = unlimited. @default 0 */
  rateLimit: number;
  /** Allowed `Origin` values (exact match); others get 403. Empty allows every origin. @default [] */
  origin: string[];
  /** TLS certificate chain (PEM file): with `tlsKey`, the port serves wss:// and https probes. */
  tlsCert: string | undefined;
  /** TLS private key (PEM file). */
  tlsKey: string | undefined;
  /** CA certificates (PEM file) that client certificates must chain to; set, clients must present one. */
  tlsCa: string | undefined;
  /** Negotiate permessage-deflate. @default false */
  perMessageDeflate: boolean;
  /** Fragments one message may have; more is closed with 1008. @default 1024 */
  maxFragments: number;
  /** Time a fragmented message may take from its first fragment to its last, in ms; later is closed with 1008. 0 = no limit. @default 10000 */
  messageTimeout: number;
  /** Bytes queued for all the clients of one worker together; past it the clients with the most queued are terminated. @default 268435456 */
  maxBufferedTotal: number;
  /** WebSocket connections, and connections still in their handshake, per client IP address per worker; more get 429. 0 = no limit. @default 0 */
  maxConnectionsPerIp: number;
  /** permessage-deflate: LZ77 window of both directions, in bits (9 to 15): memory per connection grows with it. @default 12 */
  deflateWindowBits: number;
  /** permessage-deflate: zlib memLevel of the compressor (1 to 9): memory per connection grows with it. @default 5 */
  deflateMemLevel: number;
  /** permessage-deflate: messages smaller than this many bytes are sent uncompressed. @default 1024 */
  deflateThreshold: number;
  /** permessage-deflate: compressions and decompressions running at once in one worker. @default 10 */
  deflateConcurrency: number;
  /** Spread close frames over this window, in ms (0: all at once). @default 0 */
  drainWindow: number;
  /** Alternative to drainWindow: close frames per second over the whole server. 0 = off. @default 0 */
  drainRate: number;
  /** Reconnect hints ask each client to wait up to this, spread evenly in close order; a roll waits this long between workers, in ms (0: no delay, no wait). @default 1000 */
  reconnectWindow: number;
}

type Kind = 'int' | 'string' | 'bool' | 'list' | 'level';

interface OptionDef {
  key: keyof WsdrainOptions;
  flag: string;
  kind: Kind;
  /** Shown in --help after the flag. */
  arg: string;
  help: string;
  min?: number;
  max?: number;
  /** Help text for the default value (when it is derived or absent). */
  defaultText?: string;
  /** Extra environment variable read after WSDRAIN_<FLAG>. */
  altEnv?: string;
}

/** Static defaults; derived ones (workers, threads, maxConnections) are computed at resolve time. */
export const kDefaultOptions = {
  port: 8080,
  host: '0.0.0.0',
  drainTimeout: 10_000,
  drainDelay: 0,
  heartbeat: 30_000,
  maxPayload: 1_048_576,
  logLevel: 'info',
  taskTimeout: 30_000,
  maxWork: DEFAULT_MAX_WORK_MS,
  handshakeTimeout: 5_000,
  maxBuffered: 4 * 1_048_576,
  rateLimit: 0,
  origin: [] as string[],
  perMessageDeflate: false,
  hookTimeout: 5000,
  maxTopics: 100,
  historySize: 100,
  historyTtl: 300_000,
  maxFragments: 1024,
  messageTimeout: 10_000,
  maxBufferedTotal: 256 * 1_048_576,
  maxConnectionsPerIp: 0,
  deflateWindowBits: 12,
  deflateMemLevel: 5,
  deflateThreshold: 1024,
  deflateConcurrency: 10,
  drainWindow: 0,
  drainRate: 0,
  reconnectWindow: 1000,
} as const satisfies Partial<WsdrainOptions>;

export const OPTION_DEFS: readonly OptionDef[] = [
  {
    key: 'port',
    flag: 'port',
    kind: 'int',
    arg: '<port>',
    min: 0,
    max: 65535,
    altEnv: 'PORT',
    help: 'TCP port for WebSocket upgrades and /healthz, /readyz (0 picks a free port)',
  },
  { key: 'host', flag: 'host', kind: 'string', arg: '<address>', help: 'address to bind' },
  {
    key: 'workers',
    flag: 'workers',
    kind: 'int',
    arg: '<n>',
    min: 0,
    max: 1024,
    defaultText: 'available parallelism',
    help: 'cluster workers; 0 runs a single process without a cluster',
  },
  {
    key: 'drainTimeout',
    flag: 'drain-timeout',
    kind: 'int',
    arg: '<ms>',
    min: 100,
    max: 3_600_000,
    help: 'budget from signal to process exit; sockets still open at the end of it are terminated',
  },
  {
    key: 'drainDelay',
    flag: 'drain-delay',
    kind: 'int',
    arg: '<ms>',
    min: 0,
    max: 3_600_000,
    help: 'after /readyz turns 503, wait this long before closing sockets (load balancer propagation)',
  },
  {
    key: 'heartbeat',
    flag: 'heartbeat',
    kind: 'int',
    arg: '<ms>',
    min: 0,
    max: 3_600_000,
    help: 'ping interval; a peer that does not answer within one interval is terminated (0 = off)',
  },
  {
    key: 'maxPayload',
    flag: 'max-payload',
    kind: 'int',
    arg: '<bytes>',
    min: 1,
    max: 2 ** 31 - 1,
    help: 'largest message accepted; a larger one is closed with 1009',
  },
  {
    key: 'maxConnections',
    flag: 'max-connections',
    kind: 'int',
    arg: '<n>',
    min: 1,
    max: 10_000_000,
    defaultText: 'open-file limit minus a reserve',
    help: 'WebSocket connections per worker; upgrades beyond it get 503',
  },
  {
    key: 'handler',
    flag: 'handler',
    kind: 'string',
    arg: '<module>',
    defaultText: 'built-in echo',
    help: 'module whose default export handles messages in the thread pool',
  },
  {
    key: 'app',
    flag: 'app',
    kind: 'string',
    arg: '<module>',
    defaultText: 'none',
    help: 'application module (path from the current directory, or a package in its node_modules): hooks for upgrade, open, message, close, drain, topics',
  },
  {
    key: 'hookTimeout',
    flag: 'hook-timeout',
    kind: 'int',
    arg: '<ms>',
    min: 1,
    max: 600_000,
    help: "longest an app hook may run (upgrade: --handshake-timeout; drain: the drain's budget); past it the hook's connection is closed with 1011",
  },
  {
    key: 'maxTopics',
    flag: 'max-topics',
    kind: 'int',
    arg: '<n>',
    min: 1,
    max: 1_000_000,
    help: 'topics one connection may subscribe to; a subscribe beyond it is refused (too_many_topics)',
  },
  {
    key: 'historySize',
    flag: 'history-size',
    kind: 'int',
    arg: '<n>',
    min: 0,
    max: 10_000_000,
    help: 'publications kept per topic so that reconnecting clients recover what they missed (0 = none)',
  },
  {
    key: 'historyTtl',
    flag: 'history-ttl',
    kind: 'int',
    arg: '<ms>',
    min: 1000,
    max: 7 * 24 * 3_600_000,
    help: 'longest a publication is kept for recovery',
  },
  {
    key: 'brokerUrl',
    flag: 'broker',
    kind: 'string',
    arg: '<url>',
    defaultText: 'embedded (in the primary, one host)',
    help: 'redis://[user:password@]host:port[/db]: topics, history and fan-out in Redis, shared by every wsdrain host on it. Unreachable at start: exit 1; lost while running: connections stay, publishing fails, /readyz 503; back: subscribers recover',
  },
  {
    key: 'threads',
    flag: 'threads',
    kind: 'int',
    arg: '<n>',
    min: 1,
    max: 256,
    defaultText: 'cores / workers, at least 2',
    help: 'handler threads per worker; connections with heavy messages get at most all but one of them (1 = no separate lane for the others)',
  },
  {
    key: 'maxWork',
    flag: 'max-work',
    kind: 'int',
    arg: '<ms>',
    min: 0,
    max: MAX_WORK_MS,
    help: 'longest {"op":"work"} request of the built-in handler; longer requests are cut to it',
  },
  {
    key: 'metricsPort',
    flag: 'metrics-port',
    kind: 'int',
    arg: '<port>',
    min: 0,
    max: 65535,
    defaultText: 'off',
    help: 'serve Prometheus /metrics, summed over workers, on this port',
  },
  {
    key: 'report',
    flag: 'report',
    kind: 'string',
    arg: '<file>',
    defaultText: 'none',
    help: 'write the drain report to this file as JSON',
  },
  {
    key: 'logLevel',
    flag: 'log-level',
    kind: 'level',
    arg: '<level>',
    help: `log level: ${LOG_LEVELS.join(', ')}`,
  },
  {
    key: 'taskTimeout',
    flag: 'task-timeout',
    kind: 'int',
    arg: '<ms>',
    min: 1,
    max: 3_600_000,
    help: 'a handler call (or its promise) still running after this is aborted, its thread replaced; its connections are closed with 1011',
  },
  {
    key: 'handshakeTimeout',
    flag: 'handshake-timeout',
    kind: 'int',
    arg: '<ms>',
    min: 100,
    max: 600_000,
    help: 'time a client has to send its complete upgrade request',
  },
  {
    key: 'maxBuffered',
    flag: 'max-buffered',
    kind: 'int',
    arg: '<bytes>',
    min: 1024,
    max: 2 ** 31 - 1,
    help: 'bytes queued for a client that does not read (replies, pongs, close frames); beyond it the client is terminated and counted',
  },
  {
    key: 'maxBufferedTotal',
    flag: 'max-buffered-total',
    kind: 'int',
    arg: '<bytes>',
    min: 1024,
    max: 2 ** 40,
    help: 'bytes queued for all the clients of one worker together; beyond it the clients with the most queued are terminated and counted',
  },
  {
    key: 'maxFragments',
    flag: 'max-fragments',
    kind: 'int',
    arg: '<n>',
    min: 1,
    max: 1_000_000,
    help: 'fragments one message may have; more is closed with 1008',
  },
  {
    key: 'messageTimeout',
    flag: 'message-timeout',
    kind: 'int',
    arg: '<ms>',
    min: 0,
    max: 3_600_000,
    help: 'time a fragmented message may take from its first fragment to its last; a message still unfinished then is closed with 1008 (0 = no limit)',
  },
  {
    key: 'maxConnectionsPerIp',
    flag: 'max-connections-per-ip',
    kind: 'int',
    arg: '<n>',
    min: 0,
    max: 10_000_000,
    help: 'connections per client IP address per worker, WebSocket and still in their handshake alike; upgrades beyond get 429, handshakes beyond are closed (0 = off; behind a proxy every client has its address)',
  },
  {
    key: 'rateLimit',
    flag: 'rate-limit',
    kind: 'int',
    arg: '<msgs/s>',
    min: 0,
    max: 10_000_000,
    help: 'messages per second per connection; beyond it the connection is closed with 1008 (0 = off)',
  },
  {
    key: 'origin',
    flag: 'origin',
    kind: 'list',
    arg: '<origins>',
    defaultText: 'any',
    help: 'comma-separated allow-list of Origin headers; others get 403',
  },
  {
    key: 'tlsCert',
    flag: 'tls-cert',
    kind: 'string',
    arg: '<file>',
    defaultText: 'none (plain ws:// and http)',
    help: 'TLS certificate chain (PEM); with --tls-key the port serves wss:// and https probes. Read by each worker when it starts: a SIGHUP roll picks up renewed files',
  },
  {
    key: 'tlsKey',
    flag: 'tls-key',
    kind: 'string',
    arg: '<file>',
    defaultText: 'none',
    help: 'TLS private key (PEM) of --tls-cert',
  },
  {
    key: 'tlsCa',
    flag: 'tls-ca',
    kind: 'string',
    arg: '<file>',
    defaultText: 'none (no client certificates)',
    help: 'CA certificates (PEM): clients must present a certificate that chains to one of them',
  },
  {
    key: 'perMessageDeflate',
    flag: 'per-message-deflate',
    kind: 'bool',
    arg: '',
    help: 'negotiate permessage-deflate compression',
  },
  {
    key: 'deflateWindowBits',
    flag: 'deflate-window-bits',
    kind: 'int',
    arg: '<bits>',
    min: 9,
    max: 15,
    help: 'permessage-deflate window of both directions (memory per connection grows with it)',
  },
  {
    key: 'deflateMemLevel',
    flag: 'deflate-mem-level',
    kind: 'int',
    arg: '<level>',
    min: 1,
    max: 9,
    help: "permessage-deflate compressor's zlib memLevel (memory per connection grows with it)",
  },
  {
    key: 'deflateThreshold',
    flag: 'deflate-threshold',
    kind: 'int',
    arg: '<bytes>',
    min: 0,
    max: 2 ** 31 - 1,
    help: 'messages smaller than this are sent uncompressed',
  },
  {
    key: 'deflateConcurrency',
    flag: 'deflate-concurrency',
    kind: 'int',
    arg: '<n>',
    min: 1,
    max: 1024,
    help: 'compressions and decompressions running at once per worker',
  },
  {
    key: 'drainWindow',
    flag: 'drain-window',
    kind: 'int',
    arg: '<ms>',
    min: 0,
    max: 3_600_000,
    help: 'spread close frames evenly (with jitter) over this window instead of sending all at once',
  },
  {
    key: 'drainRate',
    flag: 'drain-rate',
    kind: 'int',
    arg: '<sockets/s>',
    min: 0,
    max: 10_000_000,
    help: 'alternative to --drain-window: close at most this many sockets per second (whole server; 0 = off)',
  },
  {
    key: 'reconnectWindow',
    flag: 'reconnect-window',
    kind: 'int',
    arg: '<ms>',
    min: 0,
    max: 3_600_000,
    help: 'close reasons ask clients to reconnect after a delay up to this, spread evenly; a roll waits this long between workers (0 = no delay in the hint, no wait)',
  },
];

/** What is wrong with a `--broker` URL (undefined: nothing). */
export function brokerUrlProblem(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'not a URL';
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:')
    return 'the scheme must be redis: or rediss:';
  if (!u.hostname) return 'no host';
  if (u.pathname !== '' && u.pathname !== '/' && !/^\/\d+$/.test(u.pathname)) {
    return 'the path, when given, must be a database number (/0)';
  }
  return undefined;
}

/** Environment variable name for a flag: `drain-timeout` -> `WSDRAIN_DRAIN_TIMEOUT`. */
export function envName(flag: string): string {
  return `WSDRAIN_${flag.replaceAll('-', '_').toUpperCase()}`;
}

function describe(def: OptionDef): string {
  switch (def.kind) {
    case 'int': {
      const unit = def.arg.replace(/[<>]/g, '');
      const range =
        def.max !== undefined
          ? `from ${def.min ?? 0} to ${def.max}`
          : `of at least ${def.min ?? 0}`;
      return `an integer ${range} (${unit})`;
    }
    case 'bool':
      return 'true or false';
    case 'level':
      return `one of ${LOG_LEVELS.join(', ')}`;
    case 'list':
      return 'a comma-separated list';
    default:
      return 'a non-empty string';
  }
}

function parseValue(def: OptionDef, raw: string | boolean, source: string): unknown {
  const fail = (): never => {
    throw new InvalidOptionError(`${source} must be ${describe(def)}, got ${JSON.stringify(raw)}`);
  };
  switch (def.kind) {
    case 'int': {
      if (typeof raw !== 'string' || !/^\s*\d+\s*$/.test(raw)) return fail();
      const n = Number(raw);
      if (!Number.isSafeInteger(n)) return fail();
      if (def.min !== undefined && n < def.min) return fail();
      if (def.max !== undefined && n > def.max) return fail();
      return n;
    }
    case 'bool':
      if (raw === true || raw === 'true' || raw === '1') return true;
      if (raw === false || raw === 'false' || raw === '0') return false;
      return fail();
    case 'level':
      if (typeof raw !== 'string' || !(LOG_LEVELS as readonly string[]).includes(raw))
        return fail();
      return raw;
    case 'list': {
      if (typeof raw !== 'string') return fail();
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
    }
    default:
      if (typeof raw !== 'string' || raw.trim() === '') return fail();
      return raw;
  }
}

/** Reads the soft RLIMIT_NOFILE of this process (Linux); undefined elsewhere. */
export function openFileLimit(): number | undefined {
  try {
    const limits = readFileSync('/proc/self/limits', 'utf8');
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
    if (!m || m[1] === 'unlimited') return undefined;
    return Number(m[1]);
  } catch {
    return undefined;
  }
}

/** Plain HTTP connections (probes, refusals) accepted beyond the WebSocket limit. */
export const HTTP_EXTRA = 64;

/** Descriptors this process has open now (Linux); undefined elsewhere. */
export function openFileCount(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}

/**
 * Default WebSocket connection limit of a process: what its open-file limit leaves after the
 * descriptors already in use (listener, pool threads, logs), {@link HTTP_EXTRA} for plain
 * HTTP, and a margin of 2% (at least 32), so upgrades get 503 before accept() fails with
 * EMFILE. Call it once the process has started its threads.
 */
export function defaultMaxConnections(
  limit = openFileLimit() ?? Number.POSITIVE_INFINITY,
  used = openFileCount() ?? 64,
): number {
  if (!Number.isFinite(limit)) return 100_000;
  const spare = HTTP_EXTRA + Math.max(32, Math.ceil(limit * 0.02));
  return Math.max(1, limit - used - spare);
}

/**
 * Default pool threads: the cores shared among workers, at least two each, so that cheap
 * messages keep a thread of their own while heavy ones run (see ./worker/pool.ts).
 */
export function defaultThreads(workers: number, cores = availableParallelism()): number {
  return Math.max(2, Math.round(cores / Math.max(1, workers)));
}

/**
 * Resolves options from the command line values, the environment, and the defaults, in that
 * order of precedence. Throws {@link InvalidOptionError} naming the first bad value.
 *
 * `flags` holds raw values keyed by flag name (as given by `util.parseArgs`).
 */
export function resolveOptions(
  flags: Record<string, string | boolean | undefined>,
  env: NodeJS.ProcessEnv = process.env,
): WsdrainOptions {
  const out: Record<string, unknown> = { ...kDefaultOptions };
  for (const def of OPTION_DEFS) {
    const fromFlag = flags[def.flag];
    if (fromFlag !== undefined) {
      out[def.key] = parseValue(def, fromFlag, `--${def.flag}`);
      continue;
    }
    for (const name of def.altEnv ? [envName(def.flag), def.altEnv] : [envName(def.flag)]) {
      const v = env[name];
      if (v !== undefined && v !== '') {
        out[def.key] = parseValue(def, v, name);
        break;
      }
    }
  }
  return validateOptions(out as Partial<WsdrainOptions>);
}

/**
 * Fills derived defaults and checks cross-option rules. Also used by the programmatic API,
 * so it re-checks the types of values that did not come through the command line.
 */
export function validateOptions(partial: Partial<WsdrainOptions>): WsdrainOptions {
  const o = { ...kDefaultOptions, ...partial } as WsdrainOptions;
  for (const def of OPTION_DEFS) {
    const v = o[def.key];
    if (v === undefined) continue;
    const bad =
      (def.kind === 'int' &&
        (!Number.isSafeInteger(v) ||
          (def.min !== undefined && (v as number) < def.min) ||
          (def.max !== undefined && (v as number) > def.max))) ||
      (def.kind === 'bool' && typeof v !== 'boolean') ||
      (def.kind === 'string' && (typeof v !== 'string' || v.trim() === '')) ||
      (def.kind === 'list' && !Array.isArray(v)) ||
      (def.kind === 'level' && !(LOG_LEVELS as readonly unknown[]).includes(v));
    if (bad) {
      throw new InvalidOptionError(
        `options.${def.key} must be ${describe(def)}, got ${JSON.stringify(v)}`,
      );
    }
  }
  if (o.workers === undefined) o.workers = availableParallelism();
  const badBroker = o.brokerUrl === undefined ? undefined : brokerUrlProblem(o.brokerUrl);
  if (badBroker) {
    throw new InvalidOptionError(
      `--broker must be redis://host:port[/db], got ${JSON.stringify(o.brokerUrl)}: ${badBroker}`,
    );
  }
  if (o.drainDelay >= o.drainTimeout) {
    throw new InvalidOptionError(
      `--drain-delay (${o.drainDelay} ms) must be shorter than --drain-timeout (${o.drainTimeout} ms)`,
    );
  }
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) {
    throw new InvalidOptionError('--tls-cert and --tls-key go together: give both, or neither');
  }
  if (o.tlsCa !== undefined && o.tlsCert === undefined) {
    throw new InvalidOptionError(
      '--tls-ca checks client certificates: it needs --tls-cert and --tls-key',
    );
  }
  for (const [flag, file] of [
    ['--tls-cert', o.tlsCert],
    ['--tls-key', o.tlsKey],
    ['--tls-ca', o.tlsCa],
  ] as const) {
    if (file !== undefined && !existsSync(file)) {
      throw new InvalidOptionError(`${flag}: no such file: ${file}`);
    }
  }
  if (o.drainWindow > 0 && o.drainRate > 0) {
    throw new InvalidOptionError(
      '--drain-window and --drain-rate are two ways to pace the same closes: set only one',
    );
  }
  const room = o.drainTimeout - exitMargin(o.drainTimeout) - MIN_ANSWER_MS;
  if (o.drainWindow > 0 && o.drainDelay + o.drainWindow > room) {
    throw new InvalidOptionError(
      `--drain-delay (${o.drainDelay} ms) + --drain-window (${o.drainWindow} ms) must fit in --drain-timeout (${o.drainTimeout} ms) with ${o.drainTimeout - room} ms to spare for the last answers and the exit: use a window of at most ${Math.max(0, room - o.drainDelay)} ms or a longer --drain-timeout`,
    );
  }
  return o;
}

/** The text of `wsdrain start --help`. */
export function helpText(): string {
  const rows = OPTION_DEFS.map((def) => {
    const left = `  --${def.flag}${def.arg ? ` ${def.arg}` : ''}`;
    const dflt =
      def.defaultText ??
      JSON.stringify((kDefaultOptions as Record<string, unknown>)[def.key] ?? 'none');
    const env = envName(def.flag) + (def.altEnv ? `, ${def.altEnv}` : '');
    return `${left.padEnd(30)}${def.help}\n${' '.repeat(30)}default: ${dflt}; env: ${env}`;
  });
  return [
    'Usage: wsdrain start [options]',
    '',
    'Clustered WebSocket server with a phased, bounded drain.',
    '',
    'Options (each also read from the environment variable shown; flags win):',
    ...rows,
    `  ${'--help'.padEnd(28)}show this text`,
    `  ${'--version'.padEnd(28)}print the version`,
    '',
    'Signals:',
    '  SIGTERM, SIGINT   drain every socket (close code 1001) within --drain-timeout, then exit 0',
    '  second signal     terminate every socket now and exit 1',
    '  SIGHUP            rolling restart: one worker at a time, its sockets closed with 1012',
    '',
    'HTTP: GET /healthz (200 while alive), GET /readyz (200 when serving, 503 while starting,',
    'draining, or while the --broker is away); any other plain HTTP request gets 426.',
    '',
    'Exit codes: 0 drained within the budget, 1 forced or failed, 2 bad command line or options.',
  ].join('\n');
}
