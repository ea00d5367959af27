/**
 * Signal -> action for the primary: the first SIGTERM/SIGINT stops (drain), a second one
 * forces, SIGHUP reloads. Returns `uninstall` so tests and embedders can undo it.
 */

export interface SignalActions {
  onStop: (signal: NodeJS.Signals) => void;
  onForce: (signal: NodeJS.Signals) => void;
  onReload: () => void;
}

/** Installs the handlers on `proc` (default: this process). */
export function installSignals(
  actions: SignalActions,
  proc: NodeJS.EventEmitter = process,
): { uninstall: () => void } {
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
    uninstall() {
      proc.off('SIGTERM', stop);
      proc.off('SIGINT', stop);
      proc.off('SIGHUP', reload);
    },
  };
}
