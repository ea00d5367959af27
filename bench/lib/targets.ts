/**
 * The targets the scenarios are judged by. Each can be changed for a run with
 * `--target <name>=<value>` or `WSDRAIN_BENCH_TARGETS="<name>=<value>,..."` (a flag wins).
 */
export const TARGETS = {
  /** /healthz p99 during a drain, at most this many times the idle p99. */
  healthzP99VsIdle: 3,
  /** wsdrain echo replies/s, at least this fraction of the raw ws baseline's. */
  throughputRatio: 0.8,
  /** Server RSS per idle socket, KiB, at most. */
  kibPerIdleSocket: 10,
  /** wsdrain's exit after SIGTERM, at most this many times its --drain-timeout. */
  drainExitVsBudget: 1,
  /** Refused reconnects during a rolling restart, at most. */
  rollRefusals: 0,
  /** Reconnect storm: peak accepts/s without pacing / with, at least. */
  stormPeakCut: 5,
  /** Fan-out burst: wsdrain deliveries/s, at least this many times socket.io's. */
  fanoutVsSocketio: 1.5,
  /** Fan-out: wsdrain latency p99, at most this many times socket.io's at the same load. */
  fanoutP99VsSocketio: 0.5,
  /** Fan-out burst: wsdrain server CPU per delivery, µs, at most. */
  fanoutCpuUsPerDelivery: 5,
  /** Drain: wsdrain's server CPU per socket released, at most this many times terminate-all's. */
  serverCpuPerReleaseVsTerminate: 1.5,
  /** Storm: wsdrain's server CPU per accepted connection, at most this many times plain ws's. */
  acceptCpuVsWs: 1,
  /** Work: wsdrain's echo and /healthz p99 under CPU-heavy messages, at most this many times idle. */
  workP99VsIdle: 3,
};

export type TargetName = keyof typeof TARGETS;

/** The defaults, before any override. */
export const DEFAULT_TARGETS: Readonly<typeof TARGETS> = { ...TARGETS };

/** Applies `name=value` overrides (from the environment first, then the flags). */
export function setTargets(
  flags: readonly string[],
  env = process.env.WSDRAIN_BENCH_TARGETS,
): void {
  const specs = [...(env ? env.split(',').filter(Boolean) : []), ...flags];
  for (const spec of specs) {
    const m = /^\s*(\w+)\s*=\s*(-?[\d.]+)\s*$/.exec(spec);
    const value = Number(m?.[2]);
    if (!m || !(m[1]! in TARGETS) || !Number.isFinite(value)) {
      throw new Error(
        `--target: <name>=<number> with a name among ${Object.keys(TARGETS).join(', ')}; got ${spec}`,
      );
    }
    TARGETS[m[1] as TargetName] = value;
  }
}

/** "(target <name> <op> <value>)", for miss lines: a reader can tell which target it was. */
export function target(name: TargetName, op: '<=' | '>='): string {
  return `(target ${name} ${op} ${TARGETS[name]})`;
}
