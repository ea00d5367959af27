#!/usr/bin/env node
// Sends prime-counting jobs over a few connections and prints the answers and the rate:
//
//   node examples/cpu/ask.mjs [--url ws://127.0.0.1:8080/] [--clients 4] [--jobs 8] [--below 5000000]
//
// Each connection gets its answers in the order it asked, whatever thread ran them.
import { parseArgs } from 'node:util';
import { createClient } from 'wsdrain/client';

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: 'ws://127.0.0.1:8080/' },
    clients: { type: 'string', default: '4' },
    jobs: { type: 'string', default: '8' },
    below: { type: 'string', default: '5000000' },
  },
});
const WebSocket = globalThis.WebSocket ?? (await import('ws')).WebSocket;
const clients = Number(values.clients);
const jobs = Number(values.jobs);
const below = Number(values.below);

const t0 = performance.now();
await Promise.all(
  Array.from({ length: clients }, (_v, c) => {
    const client = createClient(values.url, { WebSocket, maxRetries: 5 });
    client.on('error', ({ error }) => console.error(`client ${c}: ${error.message}`));
    return new Promise((resolve, reject) => {
      let next = 0;
      client.on('message', (text) => {
        const answer = JSON.parse(text);
        if (answer.id !== `${c}-${next}`) {
          reject(new Error(`client ${c}: answer ${answer.id} out of order`));
          return;
        }
        console.log(JSON.stringify({ client: c, ...answer }));
        if (++next === jobs) {
          client.close();
          resolve();
        }
      });
      client.on('close', ({ code, willReconnect }) => {
        if (!willReconnect && next < jobs) reject(new Error(`client ${c}: closed with ${code}`));
      });
      for (let j = 0; j < jobs; j++) {
        client.send(JSON.stringify({ op: 'primes', below, id: `${c}-${j}` }));
      }
    });
  }),
);
const s = (performance.now() - t0) / 1000;
console.error(
  `${clients * jobs} jobs in ${s.toFixed(2)} s: ${((clients * jobs) / s).toFixed(1)}/s`,
);
