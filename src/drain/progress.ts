/**
 * Drain progress for operators: a log line per interval, and a live bar on stderr when it
 * is a terminal.
 */
import type { Logger } from '../log.js';

/** Reports remaining sockets during a drain. */
export class DrainProgress {
  readonly #log: Logger;
  readonly #total: () => number;
  readonly #tty: boolean;
  #last = -1;

  constructor(log: Logger, total: number | (() => number), tty = Boolean(process.stderr.isTTY)) {
    this.#log = log;
    this.#total = typeof total === 'function' ? total : () => total;
    this.#tty = tty;
  }

  /** Called about every 250 ms with the sockets still open. */
  update(remaining: number): void {
    if (remaining === this.#last) return;
    this.#last = remaining;
    if (this.#tty) {
      const width = 30;
      const total = this.#total();
      const done = total > 0 ? (total - remaining) / total : 1;
      const filled = Math.max(0, Math.min(width, Math.round(done * width)));
      process.stderr.write(
        `\rdraining [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${remaining} sockets left   `,
      );
    }
    this.#log.info({ remaining, total: this.#total() }, `draining: ${remaining} sockets left`);
  }

  /** Ends the bar line. */
  end(): void {
    if (this.#tty && this.#last !== -1) process.stderr.write('\n');
  }
}
