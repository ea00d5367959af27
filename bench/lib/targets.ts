/** The targets printed next to the figures (each scenario computes whether it met them). */
export const TARGETS = {
  /** /healthz p99 during a drain, at most this many times the idle p99. */
  healthzP99VsIdle: 3,
  /** wsdrain echo replies/s, at least this fraction of the raw ws baseline's. */
  throughputRatio: 0.8,
  /** Server RSS per idle socket, KiB. */
  kibPerIdleSocket: 10,
} as const;
