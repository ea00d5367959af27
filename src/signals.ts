/**
 * Signal -> action, for the cluster primary and the single process alike: the first
 * SIGTERM/SIGINT stops (drain), a second one forces, SIGHUP reloads.
 *
 * `markStopping()` records a stop that came another way (a worker's drain command from its
 * primary): a signal after it forces. `uninstall()` undoes everything, for tests and
 * embedders.
 */

export interface SignalActions {
  onStop: (signal: NodeJS.Signals) => void;
  onForce: (signal: NodeJS.Signals) => void;
  onReload: () => void;
}

export interface InstalledSignals {
  markStopping: () => void;
  uninstall: () => void;
}

/** Installs the handlers on `proc` (default: this process). */
export function installSignals(
  actions: SignalActions,
  proc: NodeJS.EventEmitter = process,
): InstalledSignals {
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      actions.onForce(signal);
      return;
    }
    stopping = true;
    actions.onStop(signal);
  };
  const reload = (): void => actions.onReload();
  proc.on('SIGTERM', stop);
  proc.on('SIGINT', stop);
  proc.on('SIGHUP', reload);
  return {
    markStopping() {
      stopping = true;
    },
    uninstall() {
      proc.off('SIGTERM', stop);
      proc.off('SIGINT', stop);
      proc.off('SIGHUP', reload);
    },
  };
}
