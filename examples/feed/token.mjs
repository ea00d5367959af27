// Feed tokens: `<claims as base64url JSON>.<HMAC-SHA256 of them>`, claims
// `{ sub, feeds: [names it may read], publish: [names it may write], exp: epoch ms }`.
// Whoever holds FEED_SECRET mints them (your auth service; here mint.mjs); wsdrain checks them.
import { createHmac, timingSafeEqual } from 'node:crypto';

const secret = () => process.env.FEED_SECRET ?? 'feed-example-secret-change-me';
const mac = (body) => createHmac('sha256', secret()).update(body).digest('base64url');

/** A token carrying `claims`, valid for `ttlMs`. */
export function mint(claims, ttlMs = 3_600_000) {
  const body = Buffer.from(JSON.stringify({ ...claims, exp: Date.now() + ttlMs })).toString(
    'base64url',
  );
  return `${body}.${mac(body)}`;
}

/** `{ claims }` for a good token, `{ error }` for a forged, malformed or expired one. */
export function verify(token) {
  const [body, sig, extra] = String(token).split('.');
  if (!body || !sig || extra !== undefined) return { error: 'malformed token' };
  const want = Buffer.from(mac(body));
  const got = Buffer.from(sig);
  if (got.length !== want.length || !timingSafeEqual(got, want)) return { error: 'bad signature' };
  let claims;
  try {
    claims = JSON.parse(Buffer.from(body, 'base64url').toString());
  } catch {
    return { error: 'malformed claims' };
  }
  if (!(claims?.exp > Date.now())) return { error: 'expired' };
  return { claims };
}
