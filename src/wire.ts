/**
 * The `wsdrain.v1` subprotocol: topics, publications and recovery over one WebSocket, small
 * enough for a client in any language. A client asks for it in its handshake
 * (`Sec-WebSocket-Protocol: wsdrain.v1`); clients that do not ask keep plain messages.
 *
 * Text frames carry one JSON object each, with a `type`. Binary frames carry the app's binary
 * messages as they are, both ways.
 *
 * Client to server:
 *
 *     {"type":"subscribe","topic":"chat","since":{"offset":12,"epoch":"f3a9"},"id":1}
 *     {"type":"unsubscribe","topic":"chat","id":2}
 *     {"type":"publish","topic":"chat","data":{"text":"hi"},"id":3}
 *     {"type":"message","data":"anything JSON"}
 *
 * Server to client:
 *
 *     {"type":"subscribed","topic":"chat","offset":12,"epoch":"f3a9","recovered":true,"id":1}
 *     {"type":"pub","topic":"chat","offset":13,"epoch":"f3a9","data":{"text":"hi"}}
 *     {"type":"unsubscribed","topic":"chat","id":2}
 *     {"type":"unsubscribed","topic":"chat","resubscribe":true}
 *     {"type":"published","topic":"chat","offset":13,"epoch":"f3a9","id":3}
 *     {"type":"message","data":"anything JSON"}
 *     {"type":"error","code":"forbidden","message":"...","id":3}
 *
 * - `id` is optional on every request and echoed in its answer.
 * - Binary data inside a JSON message travels as `"b64":"<base64>"` instead of `"data"`.
 * - `offset` numbers the publications of a topic (1, 2, 3...) within an `epoch`; the epoch
 *   changes when the topic's stream was lost and restarted. A client keeps, per topic, the
 *   offset and epoch of the last publication it handled and subscribes `since` them after a
 *   reconnect: the server replays what it missed, after `subscribed`, then live publications
 *   follow, in order, with no gap and no duplicate (`recovered: true`); or it says
 *   `recovered: false` (history too short, or another epoch) and the client reloads its
 *   state. `recovered` is present only when `since` was given.
 * - A client checks every `pub` against its position: an offset at or below it is a duplicate
 *   (skip it); a gap, or another epoch, means it must resubscribe `since` its position. The
 *   server asks for the same with `{"type":"unsubscribed","resubscribe":true}` when its own
 *   stream may have a hole (its broker was away).
 * - Errors: `bad_request` (a field missing or of the wrong kind), `bad_topic`, `forbidden`
 *   (the app said no), `too_large`, `too_many_topics`, `unavailable` (the broker is away).
 * - A text frame that is not a JSON object with a string `type` closes the connection with
 *   1002 (protocol error); an unknown `type` with 1003 (unsupported data).
 *
 * No Node imports: the browser client uses this module too.
 */

/** The subprotocol name. */
export const PROTOCOL_V1 = 'wsdrain.v1';

/** A topic: 1 to 200 characters among letters, digits and `_ - : . / @ # = +`. */
export const TOPIC_RE = /^[\w\-:./@#=+]{1,200}$/;

/** Where a client stands in a topic's stream. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** What a client sends. */
export type ClientMessage =
  | { type: 'subscribe'; topic: string; since?: StreamPosition; id?: number | string }
  | { type: 'unsubscribe'; topic: string; id?: number | string }
  | { type: 'publish'; topic: string; data?: unknown; b64?: string; id?: number | string }
  | { type: 'message'; data?: unknown; b64?: string };

/** What the server sends. */
export type ServerMessage =
  | ({
      type: 'subscribed';
      topic: string;
      recovered?: boolean;
      id?: number | string;
    } & StreamPosition)
  | ({ type: 'pub'; topic: string; data?: unknown; b64?: string } & StreamPosition)
  | { type: 'unsubscribed'; topic: string; resubscribe?: boolean; id?: number | string }
  | ({ type: 'published'; topic: string; id?: number | string } & StreamPosition)
  | { type: 'message'; data?: unknown; b64?: string }
  | { type: 'error'; code: WireErrorCode; message: string; id?: number | string };

export type WireErrorCode =
  | 'bad_request'
  | 'bad_topic'
  | 'forbidden'
  | 'too_large'
  | 'too_many_topics'
  | 'unavailable';

/** Why a text frame is not a protocol message: 1002 (malformed) or 1003 (unknown type). */
export class WireError extends Error {
  readonly closeCode: 1002 | 1003;
  constructor(closeCode: 1002 | 1003, message: string) {
    super(message);
    this.name = 'WireError';
    this.closeCode = closeCode;
  }
}

const CLIENT_TYPES = new Set(['subscribe', 'unsubscribe', 'publish', 'message']);

function isId(v: unknown): boolean {
  return v === undefined || typeof v === 'number' || typeof v === 'string';
}

/**
 * Parses one text frame from a client. Throws {@link WireError} for what cannot be a protocol
 * message; returns an `error` answer (as `{ error }`) for a known type with bad fields.
 */
export function parseClientMessage(
  text: string,
): { message: ClientMessage } | { error: ServerMessage & { type: 'error' } } {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new WireError(1002, 'not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new WireError(1002, 'not a JSON object');
  }
  const m = v as Record<string, unknown>;
  if (typeof m.type !== 'string') throw new WireError(1002, 'no "type"');
  if (!CLIENT_TYPES.has(m.type)) throw new WireError(1003, `unknown type "${m.type}"`);
  const bad = (message: string) => ({
    error: { type: 'error' as const, code: 'bad_request' as const, message, ...idOf(m) },
  });
  if (!isId(m.id)) return bad('"id" must be a number or a string');
  if (m.b64 !== undefined && typeof m.b64 !== 'string') return bad('"b64" must be a string');
  if (m.type === 'message') return { message: m as ClientMessage };
  if (typeof m.topic !== 'string') return bad('"topic" must be a string');
  if (!TOPIC_RE.test(m.topic)) {
    return {
      error: {
        type: 'error',
        code: 'bad_topic',
        message: 'topic: 1 to 200 characters of [A-Za-z0-9_-:./@#=+]',
        ...idOf(m),
      },
    };
  }
  if (m.type === 'subscribe' && m.since !== undefined) {
    const s = m.since as Record<string, unknown> | null;
    if (
      typeof s !== 'object' ||
      s === null ||
      !Number.isSafeInteger(s.offset) ||
      (s.offset as number) < 0 ||
      typeof s.epoch !== 'string'
    ) {
      return bad('"since" must be {"offset": integer >= 0, "epoch": string}');
    }
  }
  return { message: m as ClientMessage };
}

function idOf(m: Record<string, unknown>): { id?: number | string } {
  return typeof m.id === 'number' || typeof m.id === 'string' ? { id: m.id } : {};
}

/** Encodes bytes as base64 (no Node Buffer needed). */
export function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** Decodes base64 to bytes. */
export function fromBase64(text: string): Uint8Array {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** `data` or `b64` for a JSON message, as the value calls for. */
export function payloadField(data: unknown): { data?: unknown; b64?: string } {
  return data instanceof Uint8Array ? { b64: toBase64(data) } : { data };
}

/** The value a `data` / `b64` pair carries. */
export function payloadOf(m: { data?: unknown; b64?: string }): unknown {
  return m.b64 !== undefined ? fromBase64(m.b64) : m.data;
}
