#!/usr/bin/env node
// Publishes one item to a feed the token allows, and prints where it went:
//
//   node examples/feed/publish.mjs [--url ws://127.0.0.1:8080/] [--feed news] "text"
import { parseArgs } from 'node:util';
import { createClient } from 'wsdrain/client';
import { mint } from './token.mjs';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: 'string', default: 'ws://127.0.0.1:8080/' },
    feed: { type: 'string', default: 'news' },
  },
});
const WebSocket = globalThis.WebSocket ?? (await import('ws')).WebSocket;
const url = new URL(values.url);
url.searchParams.set('token', mint({ sub: 'editor', feeds: [], publish: [values.feed] }, 60_000));
const client = createClient(url, { WebSocket, protocol: 'wsdrain.v1', maxRetries: 3 });
client.on('error', ({ error }) => console.error(`error: ${error.message}`));
try {
  const ack = await client.publish(`feed:${values.feed}`, {
    text: positionals.join(' ') || 'hello',
    at: Date.now(),
  });
  console.log(JSON.stringify(ack));
} catch (err) {
  console.error(`not published: ${err.code ?? ''} ${err.message}`);
  process.exitCode = 1;
} finally {
  client.close();
}
