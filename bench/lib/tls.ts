/**
 * Certificates for TLS runs over loopback, made with openssl: an EC P-256 key and a
 * certificate for 127.0.0.1, self-signed or signed by a CA of the caller's (also used by
 * test/tls.test.ts).
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A key and a certificate for 127.0.0.1 (self-signed, or signed by `ca`). */
export function certificate(
  dir: string,
  name: string,
  ca?: { cert: string; key: string },
): { cert: string; key: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  const common = ['-days', '2', '-subj', `/CN=${name}`];
  // A new P-256 key, unencrypted, written to `key`.
  const newKey = [
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
  ];
  if (!ca) {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        ...newKey,
        '-out',
        cert,
        ...common,
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'pipe' },
    );
  } else {
    const csr = join(dir, `${name}.csr`);
    execFileSync('openssl', ['req', '-new', ...newKey, '-out', csr, '-subj', `/CN=${name}`], {
      stdio: 'pipe',
    });
    const ext = join(dir, `${name}.ext`);
    writeFileSync(ext, 'subjectAltName=IP:127.0.0.1\n');
    execFileSync(
      'openssl',
      [
        'x509',
        '-req',
        '-extfile',
        ext,
        '-in',
        csr,
        '-CA',
        ca.cert,
        '-CAkey',
        ca.key,
        '-CAcreateserial',
        '-days',
        '2',
        '-out',
        cert,
      ],
      { stdio: 'pipe' },
    );
  }
  return { cert, key };
}
