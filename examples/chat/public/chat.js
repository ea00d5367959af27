// The chat page: wsdrain/client in wsdrain.v1 mode, straight from the browser.
//
// /?user=ann[&room=lobby][&ws=ws://host:8080/]
//
// - Every connect fetches a fresh token (the URL function), so a token can be short-lived.
// - The room is a subscription: after a drain's 1012 or 1001 the client comes back and asks
//   for what it missed since the last message shown; the server replays it, or says it
//   cannot (onUnrecovered), never a silent hole.
// - Posting: each message has an id and stays in the outbox until the server acknowledges it;
//   a connection that closes first gets it again on the next one. A message whose ack was lost
//   may so be posted twice: the page shows each id once.
import { createClient } from '/wsdrain/client/index.js';

const params = new URLSearchParams(location.search);
const user = params.get('user') || `guest-${Math.random().toString(36).slice(2, 7)}`;
const room = params.get('room') || 'lobby';
const wsUrl = params.get('ws') || `ws://${location.hostname}:8080/`;

const log = document.getElementById('log');
const status = document.getElementById('status');
document.getElementById('room').textContent = `#${room} as ${user}`;

/** Messages said and not acknowledged yet, in order: { id, text }. */
const outbox = [];
const shown = new Set();
let seq = 0;

// What the page saw, for whoever wants to look (the example's test reads it).
const chat = {
  user,
  room,
  worker: undefined,
  opens: 0,
  closes: [],
  /** Ids this page said. */
  said: [],
  /** Every room publication handed to the page, duplicates of an id included. */
  received: [],
  /** Messages shown, one per id. */
  messages: [],
  unrecovered: 0,
  /** Subscribed to the room: from now on it gets every message said there. */
  joined: () => roomSub.state === 'subscribed',
  pending: () => outbox.length,
  state: () => client.state,
  say,
};
window.chat = chat;

function line(text, note = false) {
  const li = document.createElement('li');
  li.textContent = text;
  if (note) li.className = 'note';
  log.append(li);
  log.scrollTop = log.scrollHeight;
}

const client = createClient(
  async () => {
    const r = await fetch(`/token?user=${encodeURIComponent(user)}`);
    if (!r.ok) throw new Error(`sign-in failed: ${r.status}`);
    const { token } = await r.json();
    const url = new URL(wsUrl);
    url.searchParams.set('token', token);
    return url.href;
  },
  { protocol: 'wsdrain.v1' },
);

const roomSub = client.subscribe(
  `room:${room}`,
  (m, { offset, epoch }) => {
    chat.received.push({ ...m, offset, epoch });
    if (m.id !== undefined && shown.has(m.id)) return;
    if (m.id !== undefined) shown.add(m.id);
    chat.messages.push(m);
    line(`${m.from}: ${m.text}`);
  },
  {
    onUnrecovered: () => {
      chat.unrecovered++;
      line('some messages were missed while away (too old to replay)', true);
    },
  },
);
client.subscribe('presence', (p) =>
  line(`${p.user} ${p.event === 'join' ? 'joined' : 'left'}`, true),
);

client.on('message', (text) => {
  if (typeof text !== 'string') return;
  const m = JSON.parse(text);
  if (m.type === 'welcome') chat.worker = m.worker;
  else if (m.type === 'ack') {
    const i = outbox.findIndex((o) => o.id === m.id);
    if (i !== -1) outbox.splice(i, 1);
  } else if (m.type === 'bye') line(`server ${m.kind}: reconnecting…`, true);
  else if (m.type === 'error') line(`error: ${m.error}`, true);
});
client.on('open', ({ url }) => {
  chat.opens++;
  status.textContent = `connected to ${new URL(url).host}`;
  // Whatever the last connection did not get acknowledged, in order.
  for (const m of outbox) transmit(m);
});
client.on('close', ({ code, willReconnect, delayMs }) => {
  chat.closes.push(code);
  status.textContent = willReconnect
    ? `closed (${code}), back in ${delayMs} ms`
    : `closed (${code})`;
});
client.on('error', ({ error }) => {
  status.textContent = `error: ${error.message}`;
});

/**
 * Sends `m` if a connection is open and not closing; else the next 'open' sends it with the
 * rest of the outbox, in order. Never through the client's own queue: the client sends what
 * it queued before 'open', so a message said while the server closed the connection would go
 * out ahead of older ones still in the outbox.
 */
function transmit(m) {
  if (client.state === 'open' && client.socket?.readyState === WebSocket.OPEN) {
    client.send(JSON.stringify({ say: m.text, room, id: m.id }));
  }
}

/** Posts `text` to the room; it is sent now, or when the next connection opens. */
function say(text) {
  const m = { id: `${user}-${++seq}`, text };
  chat.said.push(m.id);
  outbox.push(m);
  transmit(m);
  return m.id;
}

document.getElementById('say').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = document.getElementById('text');
  if (input.value.trim()) say(input.value);
  input.value = '';
});
