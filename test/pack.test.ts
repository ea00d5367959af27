/**
 * wsdrain as a new app uses it: the packed package (`npm pack`) installed into a fresh app with
 * its own app module and its own dependency, started as the README says (`npx wsdrain start
 * --app ./app.mjs`), stopped with SIGTERM sent to npx; and a TypeScript app type-checked
 * against the published types under `strict`, with no @types installed by hand.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { ROOT } from './helpers/process.js';

let dir: string;
let started: ChildProcess | undefined;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'wsdrain-app-'));
  execFileSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], {
    cwd: ROOT,
    stdio: 'pipe',
  });
  const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'))!;
  // The app's own dependency, which wsdrain does not have: the app module must find it.
  mkdirSync(join(dir, 'greeter'));
  writeFileSync(
    join(dir, 'greeter', 'package.json'),
    JSON.stringify({ name: 'greeter', version: '1.0.0', type: 'module', exports: './index.js' }),
  );
  writeFileSync(
    join(dir, 'greeter', 'index.js'),
    "export const greet = (who) => 'hello, ' + who;\n",
  );
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({
      name: 'an-app',
      version: '1.0.0',
      private: true,
      type: 'module',
      dependencies: { wsdrain: `file:./${tarball}`, greeter: 'file:./greeter' },
    }),
  );
  writeFileSync(
    join(dir, 'app.mjs'),
    `import { createApp, reject } from 'wsdrain';
import { greet } from 'greeter';
export default createApp({
  upgrade(req) { const who = req.query.get('who'); return who ? { who } : reject(401); },
  message(conn) { conn.send(greet(conn.context.who)); },
});
`,
  );
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--silent'], {
    cwd: dir,
    stdio: 'pipe',
  });
}, 180_000);

afterAll(() => {
  if (started && started.exitCode === null) started.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('the packed package in a new app', () => {
  it('runs the app with npx, finds the app dependencies, and drains on a SIGTERM to npx', async () => {
    const npx = spawn(
      'npx',
      [
        'wsdrain',
        'start',
        '--app',
        './app.mjs',
        '--port',
        '0',
        '--host',
        '127.0.0.1',
        '--workers',
        '1',
      ],
      {
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    started = npx;
    let out = '';
    let err = '';
    npx.stdout!.on('data', (d) => {
      out += d;
    });
    npx.stderr!.on('data', (d) => {
      err += d;
    });
    const t0 = Date.now();
    let port = 0;
    while (!port) {
      if (Date.now() - t0 > 60_000)
        throw new Error(`no ready line; stdout: ${out}\nstderr: ${err}`);
      port = Number(/"port":(\d+)[^\n]*wsdrain ready/.exec(out)?.[1] ?? 0);
      await new Promise((r) => setTimeout(r, 50));
    }
    const ws = new WebSocket(`ws://127.0.0.1:${port}/?who=ada`);
    ws.on('error', () => {});
    const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
    await new Promise((r) => ws.on('open', r));
    const reply = new Promise<string>((r) => ws.once('message', (d) => r(String(d))));
    ws.send('hi');
    expect(await reply).toBe('hello, ada');
    // Signals reach wsdrain although npm runs it below a shell.
    npx.kill('SIGTERM');
    expect(await closed).toBe(1001);
    const gone = Date.now();
    while (/"msg":"drained/.test(out) === false) {
      if (Date.now() - gone > 15_000)
        throw new Error(`no drain report; stdout: ${out}\nstderr: ${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  it('type-checks a TypeScript app against the published types under strict', () => {
    writeFileSync(
      join(dir, 'app.ts'),
      `import { type Conn, createApp, reject, type HandlerReply, CloseCode, drainServer, WsdrainServer } from 'wsdrain';
import { createClient } from 'wsdrain/client';
interface Ctx { user: string }
export default createApp<Ctx>({
  upgrade(req) {
    const user = req.query.get('user');
    return user ? { user } : reject(401, 'who are you?');
  },
  async open(conn: Conn<Ctx>) {
    await conn.subscribe(\`user:\${conn.context.user}\`);
  },
  async message(conn, data) {
    const ack = await conn.publish('lobby', { from: conn.context.user, text: String(data) });
    conn.send({ offset: ack.offset });
  },
});
export const reply: HandlerReply = { reply: 'x', publish: [{ topic: 't', data: 1 }] };
export const codes: number[] = [CloseCode.GOING_AWAY, CloseCode.RESTART];
export type S = typeof WsdrainServer | typeof drainServer | typeof createClient;
`,
    );
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          noEmit: true,
        },
        files: ['app.ts'],
      }),
    );
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    let output = '';
    try {
      output = execFileSync(process.execPath, [tsc, '-p', 'tsconfig.json'], {
        cwd: dir,
        encoding: 'utf8',
      });
    } catch (e) {
      output = String((e as { stdout?: string }).stdout ?? e);
      throw new Error(`tsc failed:\n${output}`);
    }
    expect(output).toBe('');
  });
});
