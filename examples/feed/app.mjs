// A token-authenticated feed: `wsdrain start --app ./examples/feed/app.mjs`.
//
// - upgrade: the token (`?token=` or `Authorization: Bearer`) is checked in the pool
//   (api.run -> verify.mjs); its claims become the connection's context.
// - canSubscribe / canPublish: a token names the feeds it may read and write.
// - primary: a demo source publishes prices from the primary, so they reach every worker.
import { createApp, reject } from 'wsdrain';

const SYMBOLS = ['ACME', 'GLOBEX', 'INITECH'];

export default createApp({
  handler: './verify.mjs',

  primary({ publish, log }) {
    const ms = Number(process.env.FEED_TICK_MS ?? 1000);
    if (!(ms > 0)) return;
    const prices = Object.fromEntries(SYMBOLS.map((s) => [s, 100]));
    setInterval(() => {
      const symbol = SYMBOLS[Math.floor(Math.random() * SYMBOLS.length)];
      prices[symbol] = Math.max(1, prices[symbol] * (1 + (Math.random() - 0.5) / 50));
      publish('feed:prices', {
        symbol,
        price: Number(prices[symbol].toFixed(2)),
        at: Date.now(),
      }).catch((err) => log.warn({ err: err.message }, 'price not published'));
    }, ms).unref();
  },

  async upgrade(req, api) {
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    const token = req.query.get('token') ?? bearer?.[1];
    if (!token) return reject(401, 'token required', { 'WWW-Authenticate': 'Bearer' });
    const { claims, error } = JSON.parse(await api.run(token));
    if (!claims) return reject(401, error);
    return claims;
  },

  canSubscribe(conn, topic) {
    return topic.startsWith('feed:') && (conn.context.feeds ?? []).includes(topic.slice(5));
  },

  canPublish(conn, topic) {
    return topic.startsWith('feed:') && (conn.context.publish ?? []).includes(topic.slice(5));
  },

  // Readers only read: a message is answered, not handed to the pool.
  message(conn) {
    conn.send({ error: 'this feed takes subscriptions (wsdrain.v1), not messages' });
  },
});
