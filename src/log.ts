/**
 * Logging: pino, one JSON line per event on stdout, with the process role and pid so lines
 * from the primary and every worker can be told apart when they share a terminal or journal.
 */
import { type Logger, pino } from 'pino';
import type { LogLevel } from './options.js';

export type { Logger };

/** Creates the logger of one process (`role` is 'primary', 'worker' or 'server'). */
export function createLogger(
  level: LogLevel,
  role: string,
  extra: Record<string, unknown> = {},
): Logger {
  return pino({
    level,
    base: { role, pid: process.pid, ...extra },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}
