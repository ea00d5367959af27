/**
 * Close codes wsdrain sends itself (RFC 6455, section 7.4.1). No Node imports: the browser
 * client reads them too.
 */
export const CloseCode = {
  /** A shutdown drain, a late upgrade during one, or a dead primary. */
  GOING_AWAY: 1001,
  /** Rate limit, ping flood, too many fragments, a message unfinished in time. */
  POLICY: 1008,
  /** The handler failed (threw, rejected, ran past --task-timeout, its thread died). */
  INTERNAL: 1011,
  /** A rolling restart, or a late upgrade into a rolling worker. */
  RESTART: 1012,
  TRY_AGAIN: 1013,
} as const;

export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];
