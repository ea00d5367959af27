/**
 * Work that cannot finish within the drain budget: its socket still gets a close frame before
 * the deadline (the work abandoned and counted), never a bare cut.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { codes, connectMany } from './helpers/clients.js';
import { killAll, startWsdrain } from './helpers/process.js';

afterEach(killAll);

describe('work longer than the drain budget', () => {
  it('closes its socket with 1001 before the deadline, the work abandoned and counted', async () => {
    const budget = 1500;
    const srv = await startWsdrain([
      '--workers',
      '0',
      '--threads',
      '1',
      '--drain-timeout',
      String(budget),
      '--max-work',
      String(budget * 4),
    ]);
    const [heavy, ...others] = await connectMany(srv.port, 6);
    // One thread: the heavy work holds it, the others' echoes wait behind it.
    heavy!.ws.send(JSON.stringify({ op: 'work', ms: budget * 4, id: 'long' }));
    await new Promise((r) => setTimeout(r, 100));
    for (const c of others) c.ws.send('behind the heavy work');
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    srv.kill('SIGTERM');
    const all = [heavy!, ...others];
    await Promise.all(all.map((c) => c.closed));
    expect(codes(all)).toEqual({ 1001: 6 });
    for (const c of all) expect(c.closedAt! - t0).toBeLessThan(budget);
    const exit = await srv.exited;
    expect(exit.code).toBe(0);
    const line = await srv.waitFor((l) => l.msg.startsWith('drained'));
    expect(line.report).toMatchObject({ sockets: 6, clean: 6, terminated: 0, abandoned: 6 });
  });
});
