/**
 * pm2 recipe for wsdrain.
 *
 *   npm run build
 *   PORT=8080 WSDRAIN_WORKERS=4 pm2 start scripts/deploy/ecosystem.config.cjs
 *   pm2 sendSignal SIGHUP wsdrain   # zero-downtime rolling restart (clients see 1012)
 *   pm2 stop wsdrain                # graceful drain (clients see 1001), then exit 0
 *
 * wsdrain's own primary process does the clustering, drains and rolling restarts; pm2 only
 * supervises that one process. Do not use `pm2 reload`/`pm2 restart` for deploys: in fork mode
 * they are a stop followed by a start (every client sees 1001, and there is a short gap with
 * nothing listening). SIGHUP replaces the workers one at a time instead, with the port open.
 *
 * This file is read by the pm2 CLI (not by the daemon) when you run `pm2 start`, so the
 * environment of that shell decides the values below. pm2 keeps them: to change one, run
 * `pm2 delete wsdrain && pm2 start scripts/deploy/ecosystem.config.cjs` (a full drain), then
 * `pm2 save` again.
 *
 * To start at boot (once per machine, as the user that runs pm2):
 *   pm2 startup                     # prints a command to run as root: it writes and enables
 *                                   # the systemd unit pm2-<user>.service (pm2 resurrect)
 *   pm2 save                        # after `pm2 start`: the app list, options and environment
 *                                   # in $PM2_HOME/dump.pm2, which that unit resurrects
 * Never `systemctl reload pm2-<user>` (nor restart) to deploy: its ExecReload is
 * `pm2 reload all`, a stop and a start of every app in fork mode (every client sees 1001, the
 * port closes for a moment). Deploy with `pm2 sendSignal SIGHUP wsdrain`.
 *
 * Logs: pm2 appends the JSON lines to $PM2_HOME/logs/wsdrain-out.log and does not rotate it:
 *   pm2 install pm2-logrotate       # a pm2 module, from the npm registry
 *   pm2 set pm2-logrotate:max_size 100M && pm2 set pm2-logrotate:retain 10
 */
'use strict';

const path = require('node:path');

/** Drain budget of wsdrain in ms (`--drain-timeout`), the same default as the CLI. */
const drainTimeout = Number(process.env.WSDRAIN_DRAIN_TIMEOUT || 10_000);
if (!Number.isSafeInteger(drainTimeout) || drainTimeout < 100) {
  throw new Error(
    `WSDRAIN_DRAIN_TIMEOUT must be an integer of at least 100 (ms), got ${process.env.WSDRAIN_DRAIN_TIMEOUT}`,
  );
}
/** Time pm2 grants beyond the drain budget before it sends SIGKILL, in ms. */
const killMargin = 5_000;

/**
 * Every WSDRAIN_* variable set in the shell that runs `pm2 start` (unset ones keep wsdrain's
 * defaults), so any flag can be given to the app the same way as to the CLI.
 */
const wsdrainEnv = Object.fromEntries(
  Object.entries(process.env).filter(
    ([name, value]) => name.startsWith('WSDRAIN_') && value !== undefined && value !== '',
  ),
);

module.exports = {
  apps: [
    {
      name: 'wsdrain',
      // The built CLI (`npm run build`), resolved from this file so the recipe works from any
      // working directory. pm2 runs it as `node dist/cli.js start`.
      script: path.join(__dirname, '../../dist/cli.js'),
      args: 'start',
      cwd: path.join(__dirname, '../..'),

      // Fork mode, one instance: wsdrain's primary forks the workers (`WSDRAIN_WORKERS`) and
      // they share the port through node:cluster. pm2's cluster mode would put a second,
      // drain-unaware balancer on top and break SIGHUP rolling restarts.
      exec_mode: 'fork',
      instances: 1,

      // wsdrain reads every flag from WSDRAIN_<FLAG> (and PORT). The drain budget is passed
      // explicitly so the app uses the very value kill_timeout is computed from.
      env: {
        NODE_ENV: 'production',
        ...wsdrainEnv,
        PORT: process.env.PORT || '8080',
        // Worker processes; unset means the available parallelism. Match it to the CPUs this
        // machine (or container limit) really gives the app.
        ...(process.env.WSDRAIN_WORKERS ? { WSDRAIN_WORKERS: process.env.WSDRAIN_WORKERS } : {}),
        WSDRAIN_DRAIN_TIMEOUT: String(drainTimeout),
      },

      // Stopping. pm2 signals the process and waits up to kill_timeout before SIGKILL. (Were
      // the primary ever SIGKILLed, its workers would still send 1001 as they go down.)
      // wsdrain exits by itself within --drain-timeout (from the signal to exit), so grant the
      // whole budget plus a margin: pm2 must never SIGKILL a drain that is on schedule.
      kill_timeout: drainTimeout + killMargin,
      // Signal the primary only. With treekill (pm2's default) every worker would get the
      // signal too; wsdrain copes (each worker drains on its own), but the primary is the one
      // that coordinates the drain, aggregates the report and picks the exit code.
      treekill: false,
      // pm2 stops with SIGINT (daemon-wide, set by PM2_KILL_SIGNAL; there is no per-app
      // kill_signal option in pm2). wsdrain treats SIGINT exactly like SIGTERM: drain with
      // 1001 within the budget, exit 0. A second signal terminates at once.
      shutdown_with_message: false,

      // Starting. The primary calls process.send('ready') once every worker listens, so
      // `pm2 start` returns (and pm2 counts the app online) only when the port serves.
      wait_ready: true,
      // A bit above wsdrain's own 30 s worker start timeout, so wsdrain's verdict (it exits 1
      // when workers cannot start) comes before pm2 gives up waiting for 'ready'.
      listen_timeout: 35_000,

      // Crashes of the primary (workers are respawned by the primary itself, with backoff).
      autorestart: true,
      // An exit within min_uptime counts as unstable; after max_restarts of those in a row pm2
      // stops trying and shows the app as errored instead of looping forever.
      min_uptime: 10_000,
      max_restarts: 10,
      // Back off between restarts: 100 ms, then 1.5 times longer each time, at most 15 s (pm2).
      exp_backoff_restart_delay: 100,

      // wsdrain logs JSON lines with their own timestamps: no pm2 prefix.
      time: false,
    },
  ],
};
