/**
 * Progress on stderr: a redrawn bar when stderr is a TTY, a plain line every few seconds
 * otherwise (CI logs).
 */
export interface Progress {
  update(done: number): void;
  end(): void;
}

export function progress(label: string, total: number): Progress {
  const tty = process.stderr.isTTY === true;
  const minGapMs = tty ? 100 : 2000;
  let last = 0;
  const line = (done: number): string => {
    const width = 30;
    const filled = Math.round((width * done) / Math.max(1, total));
    const bar = tty ? `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ` : '';
    return `${label} ${bar}${done}/${total}`;
  };
  let lastDone = 0;
  return {
    update(done) {
      lastDone = done;
      const t = Date.now();
      if (t - last < minGapMs) return;
      last = t;
      process.stderr.write(tty ? `\r${line(done)}` : `${line(done)}\n`);
    },
    end() {
      process.stderr.write(tty ? `\r${line(lastDone)}\n` : `${line(lastDone)}\n`);
    },
  };
}
