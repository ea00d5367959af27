/**
 * Every process the bench starts is registered here and killed, with its whole process group,
 * when the bench exits for any reason (normal end, exception, Ctrl-C). Children are spawned
 * `detached` so each one leads its own group: killing the group also takes cluster workers.
 */
import type { ChildProcess } from 'node:child_process';

const groups = new Set<number>();

/** Registers a child spawned with `detached: true`. */
export function track(child: ChildProcess): void {
  installHandlers();
  if (child.pid !== undefined) groups.add(child.pid);
}

/** SIGKILLs the child's process group (and the child itself if it has no group). */
export function killGroup(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  const pid = child.pid;
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
  if (signal === 'SIGKILL') groups.delete(pid);
}

function killAll(): void {
  for (const pid of groups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  groups.clear();
}

let installed = false;

/** On the first child: kill every group on exit, and exit on a signal (importing does nothing). */
function installHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', killAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      process.stderr.write(`\nbench: ${signal}, killing child processes\n`);
      process.exit(130);
    });
  }
}
