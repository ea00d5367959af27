/**
 * Fan-out reference: one process (one core), a plain `ws` server and the broadcast loop of
 * ws's README, speaking just enough of wsdrain.v1 for the bench's clients:
 * `{"type":"subscribe","topic":T}` is answered `{"type":"subscribed","topic":T}`, and
 * `{"type":"publish","topic":T,"data":D}` is sent to every subscriber of T as
 * `{"type":"pub","topic":T,"data":D}`: encoded once, then `ws.send()` for each subscriber
 * (ws frames every send on its own). `READY <port>` once listening; SIGTERM: exit at once.
 */
import { parseArgs } from 'node:util';
import { type WebSocket, WebSocketServer } from 'ws';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8080' },
    workers: { type: 'string', default: '0' },
  },
});
const port = Number(values.port);
if (!Number.isInteger(port)) {
  console.error(`bad --port ${values.port}`);
  process.exit(2);
}

const topics = new Map<string, Set<WebSocket>>();
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('listening', () => console.log(`READY ${port}`));
wss.on('error', (err) => {
  console.error(`listen: ${err.message}`);
  process.exit(2);
});
wss.on('connection', (ws) => {
  const mine = new Set<string>();
  ws.on('error', () => {});
  ws.on('close', () => {
    for (const t of mine) topics.get(t)?.delete(ws);
  });
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let m: { type?: unknown; topic?: unknown; data?: unknown };
    try {
      m = JSON.parse(data.toString());
    } catch {
      ws.close(1002, 'not JSON');
      return;
    }
    if (typeof m.topic !== 'string') return;
    if (m.type === 'subscribe') {
      const set = topics.get(m.topic) ?? new Set<WebSocket>();
      topics.set(m.topic, set);
      set.add(ws);
      mine.add(m.topic);
      ws.send(JSON.stringify({ type: 'subscribed', topic: m.topic }));
    } else if (m.type === 'publish') {
      const out = Buffer.from(JSON.stringify({ type: 'pub', topic: m.topic, data: m.data }));
      for (const sub of topics.get(m.topic) ?? []) {
        if (sub.readyState === sub.OPEN) sub.send(out, { binary: false });
      }
    }
  });
});
process.on('SIGTERM', () => process.exit(0));
