/**
 * The handler API. A handler module's default export (or named export `handler`) is called in
 * a pool thread for each message; what it returns is sent back on the same connection, in
 * the order of that connection's messages.
 *
 * ```ts
 * // my-handler.mjs
 * export default function handle({ data, isBinary }) {
 *   return isBinary ? data : data.toUpperCase();
 * }
 * ```
 */

/** One message as the handler sees it. */
export interface HandlerMessage {
  /** Text messages arrive as a string, binary ones as a Uint8Array. */
  data: string | Uint8Array;
  isBinary: boolean;
  /**
   * The connection it came from: its id and the context the app's `upgrade` hook gave it
   * (as JSON carries it). Undefined for the built-in echo, and for work an app runs outside
   * any connection (`api.run`).
   */
  conn?: { id: string; context: unknown } | undefined;
}

/** A publication a handler asks for: see {@link HandlerResult}. */
export interface HandlerPublication {
  topic: string;
  data: string | Uint8Array | null | boolean | number | object;
}

/** A reply and publications: what a handler returns to do more than reply. */
export interface HandlerResult {
  reply?: string | Uint8Array | null | undefined;
  /** Made in order, after the reply is sent, to every subscriber on every worker. */
  publish?: HandlerPublication[];
}

/**
 * What a handler may return: a string (sent as text), a Uint8Array (sent as binary),
 * nothing (no reply), or `{ reply, publish }`. A Promise of these works too.
 */
export type HandlerReply =
  | string
  | Uint8Array
  | HandlerResult
  | null
  | undefined
  // biome-ignore lint/suspicious/noConfusingVoidType: a handler that returns nothing is typed void
  | void;

/** The handler function. Throwing (or rejecting) closes that connection with 1011. */
export type Handler = (message: HandlerMessage) => HandlerReply | Promise<HandlerReply>;
