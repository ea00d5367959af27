/**
 * The structure holds: the layer rules of scripts/check-layers.mjs (run by `npm run lint`)
 * reject a violation, and importing any module of the built package does nothing by itself.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/process.js';

const script = join(ROOT, 'scripts', 'check-layers.mjs');

function tree(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'wsdrain-layers-'));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

function check(dir: string): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [script, '--root', dir], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

describe('layer rules', () => {
  it('pass on this tree', () => {
    const r = check(ROOT);
    expect(r.out).toContain('layers hold');
    expect(r.status).toBe(0);
  });

  it('reject primary -> worker, worker -> primary, shared -> a side, client -> server, src from tests, cycles', () => {
    const dir = tree({
      'src/primary/roll.ts': "import { x } from '../worker/server.js';\nexport const y = x;\n",
      'src/worker/server.ts': "export { z } from '../primary/metrics.js';\nexport const x = 1;\n",
      'src/primary/metrics.ts': 'export const z = 2;\n',
      'src/client/index.ts': "import { a } from '../options.js';\nexport const b = a;\n",
      'src/options.ts': "import { c } from './log.js';\nexport const a = c;\n",
      'src/log.ts': "import { a } from './options.js';\nexport const c = 3; void a;\n",
      'test/x.test.ts': "import { a } from '../src/options.js';\nvoid a;\n",
      'src/app/broker.ts': "import { x } from '../worker/server.js';\nexport const w = x;\n",
      'src/fine.ts': "// import { x } from './worker/server.js' in a comment is fine\nexport {};\n",
    });
    try {
      const r = check(dir);
      expect(r.status).toBe(1);
      expect(r.out).toContain('src/primary/roll.ts: imports ../worker/server.js');
      expect(r.out).toContain('src/worker/server.ts: imports ../primary/metrics.js');
      expect(r.out).toContain('src/client/index.ts: imports ../options.js');
      expect(r.out).toContain('src/app/broker.ts: imports ../worker/server.js');
      expect(r.out).toContain('test/x.test.ts: imports ../src/options.js');
      expect(r.out).toMatch(/import cycle: src\/(options|log)\.ts -> /);
      expect(r.out).not.toContain('src/fine.ts');
      expect(r.out).toContain('check-layers: 6 violation(s)');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('importing the package', () => {
  it('does nothing by itself: every module but the executables loads and the process ends', () => {
    const dist = join(ROOT, 'dist');
    const all: string[] = [];
    const walk = (d: string): void => {
      for (const n of readdirSync(d)) {
        const p = join(d, n);
        if (statSync(p).isDirectory()) walk(p);
        else if (n.endsWith('.js')) all.push(p);
      }
    };
    walk(dist);
    // The two entry points: the CLI, and the script each pool thread runs.
    const entries = new Set(['cli.js', 'worker/pool-worker.js']);
    const modules = all.filter((p) => !entries.has(relative(dist, p)));
    expect(modules.length).toBeGreaterThan(20);
    const code = `for (const m of ${JSON.stringify(modules)}) await import(m);`;
    const t0 = Date.now();
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('');
    expect(r.status).toBe(0);
    // Nothing keeps the process alive: no server, timer or thread started by an import.
    expect(Date.now() - t0).toBeLessThan(20_000);
  });
});
