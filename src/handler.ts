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
}

/**
 * What a handler may return: a string (sent as text), a Uint8Array (sent as binary),
 * or nothing (no reply). A Promise of these works too.
 */
// biome-ignore lint/suspicious/noConfusingVoidType: a handler that returns nothing is typed void
export type HandlerReply = string | Uint8Array | null | undefined | void;

/** The handler function. Throwing (or rejecting) closes that connection with 1011. */
export type Handler = (message: HandlerMessage) => HandlerReply | Promise<HandlerReply>;
