/**
 * TLS: wss:// and https probes with --tls-cert/--tls-key, client certificates with --tls-ca,
 * and a rolling restart that picks up renewed certificate files. Certificates are made here
 * with openssl.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { get } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { certificate as makeCertificate } from '../bench/lib/tls.js';
import { CLI, killAll, startWsdrain } from './helpers/process.js';

afterEach(killAll);

const dir = mkdtempSync(join(tmpdir(), 'wsdrain-tls-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const certificate = (name: string, ca?: { cert: string; key: string }) =>
  makeCertificate(dir, name, ca);

function fingerprintOf(file: string): string {
  return new X509Certificate(readFileSync(file)).fingerprint256;
}

/** Opens a wss client; resolves with it and the fingerprint of the certificate it was shown. */
function wss(port: number, ca: string, clientCert?: { cert: string; key: string }) {
  return new Promise<{ ws: WebSocket; fingerprint: string; closed: Promise<number> }>(
    (resolve, reject) => {
      const ws = new WebSocket(`wss://127.0.0.1:${port}`, {
        ca: readFileSync(ca),
        ...(clientCert
          ? { cert: readFileSync(clientCert.cert), key: readFileSync(clientCert.key) }
          : {}),
      });
      ws.on('error', reject);
      const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
      ws.on('open', () => {
        const socket = (
          ws as unknown as { _socket: { getPeerCertificate(): { fingerprint256: string } } }
        )._socket;
        resolve({ ws, fingerprint: socket.getPeerCertificate().fingerprint256, closed });
      });
    },
  );
}

function httpsStatus(port: number, path: string, ca: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, ca: readFileSync(ca) }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
  });
}

describe('TLS', () => {
  it('serves wss:// and https probes', async () => {
    const a = certificate('server-a');
    const srv = await startWsdrain([
      '--workers',
      '0',
      '--threads',
      '1',
      '--tls-cert',
      a.cert,
      '--tls-key',
      a.key,
    ]);
    expect(await httpsStatus(srv.port, '/healthz', a.cert)).toBe(200);
    expect(await httpsStatus(srv.port, '/readyz', a.cert)).toBe(200);
    const c = await wss(srv.port, a.cert);
    const echo = new Promise<string>((r) => c.ws.once('message', (d) => r(String(d))));
    c.ws.send('over tls');
    expect(await echo).toBe('over tls');
    srv.kill('SIGTERM');
    expect(await c.closed).toBe(1001);
    expect((await srv.exited).code).toBe(0);
  });

  it('takes renewed certificate files on a rolling restart, refusing no one', async () => {
    const a = certificate('roll-a');
    const cert = join(dir, 'live.crt');
    const key = join(dir, 'live.key');
    execFileSync('cp', [a.cert, cert]);
    execFileSync('cp', [a.key, key]);
    const srv = await startWsdrain([
      '--workers',
      '2',
      '--threads',
      '1',
      '--tls-cert',
      cert,
      '--tls-key',
      key,
    ]);
    const before = await wss(srv.port, a.cert);
    expect(before.fingerprint).toBe(fingerprintOf(a.cert));
    // Renew: the new files replace the old ones in place.
    const b = certificate('roll-b');
    renameSync(b.cert, cert);
    renameSync(b.key, key);
    srv.kill('SIGHUP');
    expect(await before.closed).toBe(1012);
    await srv.waitFor((l) => /rolling restart done/.test(l.msg), 20_000);
    const after = await wss(srv.port, cert);
    expect(after.fingerprint).toBe(fingerprintOf(cert));
    expect(after.fingerprint).not.toBe(fingerprintOf(a.cert));
  });

  it('asks for a client certificate with --tls-ca and refuses a client without one', async () => {
    const ca = certificate('ca');
    const server = certificate('server-c', ca);
    const client = certificate('client', ca);
    const srv = await startWsdrain([
      '--workers',
      '0',
      '--threads',
      '1',
      '--tls-cert',
      server.cert,
      '--tls-key',
      server.key,
      '--tls-ca',
      ca.cert,
    ]);
    const ok = await wss(srv.port, ca.cert, client);
    ok.ws.close();
    await expect(wss(srv.port, ca.cert)).rejects.toThrow();
  });

  it('refuses half a TLS setup at start, exit 2', () => {
    const a = certificate('half');
    const r = spawnSync(process.execPath, [CLI, 'start', '--tls-cert', a.cert], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--tls-cert and --tls-key go together');
    const missing = spawnSync(
      process.execPath,
      [CLI, 'start', '--tls-cert', a.cert, '--tls-key', join(dir, 'nope.key')],
      {
        encoding: 'utf8',
      },
    );
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain('--tls-key: no such file');
  });
});
