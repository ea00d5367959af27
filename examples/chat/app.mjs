// The chat app: wsdrain runs it in every worker (`wsdrain start --app examples/chat/app.mjs`).
//
// - Auth: the page gets a short-lived signed token from its own server and connects with
//   `?token=...`; `upgrade` checks it and the connection's context is the user.
// - Rooms: topics `room:<name>`. The page subscribes itself (wsdrain.v1), so it recovers what
//   it missed after a reconnect. Messages go through the `message` hook, which stamps the
//   sender (a client cannot post as someone else), publishes to the room and acknowledges.
// - Push: presence (who joins and leaves) is published by the server on its own, and every
//   connection gets a goodbye before a drain closes it.
import { createApp, reject } from 'wsdrain';
import { check } from './token.mjs';

const ROOM = /^[a-z0-9-]{1,32}$/;
const MAX_TEXT = 500;

export default createApp({
  upgrade(req) {
    const user = check(req.query.get('token'));
    return user ? { user } : reject(401, 'sign in first');
  },

  open(conn, api) {
    conn.send({ type: 'welcome', user: conn.context.user, worker: api.worker });
    return conn.publish('presence', { user: conn.context.user, event: 'join' });
  },

  async message(conn, data) {
    let m;
    try {
      m = JSON.parse(String(data));
    } catch {
      return void conn.send({ type: 'error', error: 'messages are JSON' });
    }
    const { say, room, id } = m ?? {};
    if (typeof say !== 'string' || say.length > MAX_TEXT || !ROOM.test(room ?? '')) {
      return void conn.send({ type: 'error', error: 'bad message', id });
    }
    const text = say.trim();
    if (!text) return;
    const ack = await conn.publish(`room:${room}`, {
      id,
      from: conn.context.user,
      text,
      at: Date.now(),
    });
    conn.send({ type: 'ack', id, offset: ack.offset });
  },

  close(conn, _code, _reason, api) {
    return api.publish('presence', { user: conn.context.user, event: 'leave' });
  },

  drain(conn, kind) {
    conn.send({ type: 'bye', kind });
  },

  canSubscribe(_conn, topic) {
    return topic === 'presence' || (topic.startsWith('room:') && ROOM.test(topic.slice(5)));
  },

  // Clients post through `message` (the server says who they are), never straight to a topic.
  canPublish() {
    return false;
  },
});
