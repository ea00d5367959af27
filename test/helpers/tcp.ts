/**
 * What the kernel holds for one loopback TCP connection, read from /proc/net/tcp (Linux): the
 * bytes waiting in the sender's send queue plus those in the receiver's receive queue. Tests
 * use it to fill a non-reading peer's kernel buffers exactly, so that whatever the server sends
 * next stays in its own process (where --max-buffered counts it).
 */
import { readFileSync } from 'node:fs';

interface Row {
  local: number;
  remote: number;
  tx: number;
  rx: number;
}

function rows(): Row[] {
  const out: Row[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 5) continue;
      const [tx, rx] = f[4]!.split(':').map((h) => Number.parseInt(h, 16));
      out.push({
        local: Number.parseInt(f[1]!.split(':').at(-1)!, 16),
        remote: Number.parseInt(f[2]!.split(':').at(-1)!, 16),
        tx: tx ?? 0,
        rx: rx ?? 0,
      });
    }
  }
  return out;
}

/**
 * Bytes the kernel holds on their way from the server (port `serverPort`) to the client whose
 * local port is `clientPort`: the server socket's send queue plus the client's receive queue.
 */
export function kernelQueued(serverPort: number, clientPort: number): number {
  let n = 0;
  for (const r of rows()) {
    if (r.local === serverPort && r.remote === clientPort) n += r.tx;
    if (r.local === clientPort && r.remote === serverPort) n += r.rx;
  }
  return n;
}
