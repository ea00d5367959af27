#!/usr/bin/env node
// Reads feeds with wsdrain/client and prints every item with its offset:
//
//   node examples/feed/reader.mjs [--url ws://127.0.0.1:8080/] [--feeds prices,news]
//
// Each connect mints a fresh token (the URL function; in real life, ask your auth service).
// After a drain or a restart the client resumes every feed from the last item it printed, or
// says the gap could not be replayed.
import { parseArgs } from 'node:util';
import { createClient } from 'wsdrain/client';
import { mint } from './token.mjs';

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: 'ws://127.0.0.1:8080/' },
    feeds: { type: 'string', default: 'prices' },
  },
});
const feeds = values.feeds.split(',').filter(Boolean);
// Node 22+ has a WebSocket of its own; Node 20 uses ws (a dependency of wsdrain).
const WebSocket = globalThis.WebSocket ?? (await import('ws')).WebSocket;

const client = createClient(
  () => {
    const url = new URL(values.url);
    url.searchParams.set('token', mint({ sub: 'reader', feeds }, 60_000));
    return url;
  },
  { WebSocket, protocol: 'wsdrain.v1' },
);
client.on('open', ({ url }) => console.error(`connected to ${new URL(url).host}`));
client.on('close', ({ code, willReconnect, delayMs }) =>
  console.error(`closed ${code}${willReconnect ? `, back in ${delayMs} ms` : ''}`),
);
client.on('error', ({ error }) => console.error(`error: ${error.message}`));
client.on('unrecovered', ({ topic, since, position }) =>
  console.error(`${topic}: items ${since.offset + 1} to ${position.offset} could not be replayed`),
);
for (const feed of feeds) {
  client.subscribe(
    `feed:${feed}`,
    (item, { offset }) => console.log(JSON.stringify({ feed, offset, ...item })),
    { onError: (e) => console.error(`feed:${feed}: ${e.code} (${e.message})`) },
  );
}
process.once('SIGINT', () => client.close());
