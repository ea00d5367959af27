// Signed tokens for the chat example: `<user>.<expiry>.<signature>`, HMAC-SHA256 with a secret
// the page server (which hands tokens out) and the app (which checks them) share.
import { createHmac, timingSafeEqual } from 'node:crypto';

const SECRET = process.env.CHAT_SECRET ?? 'chat-example-secret-change-me';

const sign = (payload) => createHmac('sha256', SECRET).update(payload).digest('base64url');

/** A token for `user`, valid for `ttlMs`. */
export function issue(user, ttlMs = 60_000) {
  const payload = `${user}.${Date.now() + ttlMs}`;
  return `${payload}.${sign(payload)}`;
}

/** The user a token names, or undefined when it is forged, malformed or expired. */
export function check(token) {
  const parts = String(token ?? '').split('.');
  if (parts.length !== 3) return undefined;
  const [user, exp, sig] = parts;
  const want = Buffer.from(sign(`${user}.${exp}`));
  const got = Buffer.from(sig);
  if (got.length !== want.length || !timingSafeEqual(got, want)) return undefined;
  if (!(Number(exp) > Date.now())) return undefined;
  return user;
}
