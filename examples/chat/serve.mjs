#!/usr/bin/env node
// The chat page's own tiny server: wsdrain answers only WebSocket upgrades and probes, so the
// page, the browser build of `wsdrain/client`, and the sign-in (a token per connection) are
// served from here.
//
//   node examples/chat/serve.mjs [--port 3000] [--host 127.0.0.1]
//
// GET /                   the page (public/index.html), /chat.js its script
// GET /wsdrain/<file>.js  wsdrain/client's ES modules, from the installed package's dist/
// GET /token?user=NAME    { token } for NAME (any name: a demo has no passwords)
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { issue } from './token.mjs';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.CHAT_PORT ?? '3000' },
    host: { type: 'string', default: '127.0.0.1' },
  },
});

const here = dirname(fileURLToPath(import.meta.url));
// dist/client/index.js of the wsdrain this script resolves (the repo, or node_modules).
const dist = dirname(dirname(fileURLToPath(import.meta.resolve('wsdrain/client'))));
const PAGES = { '/': 'index.html', '/chat.js': 'chat.js' };
const CLIENT = /^\/wsdrain\/((?:client\/)?[a-z]+\.js)$/;
const USER = /^[A-Za-z0-9_-]{1,20}$/;

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://x');
  const headers = { 'cache-control': 'no-store' };
  const file = (path, type) => {
    try {
      res.writeHead(200, { ...headers, 'content-type': type }).end(readFileSync(path));
    } catch {
      res.writeHead(404, headers).end('not found');
    }
  };
  if (PAGES[url.pathname]) {
    const name = PAGES[url.pathname];
    file(join(here, 'public', name), name.endsWith('.js') ? 'text/javascript' : 'text/html');
    return;
  }
  const client = CLIENT.exec(url.pathname);
  if (client) {
    file(join(dist, client[1]), 'text/javascript');
    return;
  }
  if (url.pathname === '/token') {
    const user = url.searchParams.get('user') ?? '';
    if (!USER.test(user)) {
      res.writeHead(400, headers).end('user: 1 to 20 of [A-Za-z0-9_-]');
      return;
    }
    res
      .writeHead(200, { ...headers, 'content-type': 'application/json' })
      .end(JSON.stringify({ token: issue(user) }));
    return;
  }
  res.writeHead(404, headers).end('not found');
});
server.on('clientError', (_err, socket) => socket.destroy());
server.listen(Number(values.port), values.host, () => {
  const { port } = server.address();
  console.log(JSON.stringify({ msg: `chat page on http://${values.host}:${port}/`, port }));
});
const stop = () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
