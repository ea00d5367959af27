#!/usr/bin/env node
/**
 * `npm run mutate`: mutation testing as a habit. Each mutation in scripts/mutations.mjs is a
 * one-line change to src/ that a test should notice (a close code, a deadline, an ordering
 * rule, a limit, a signal handler, a backpressure threshold, an error path, the hint format).
 * For each: apply it to a scratch copy of the tree, build, run the tests named for it (stopping
 * at the first failure), and call it killed when they fail, survived when they pass.
 *
 *   npm run mutate                      # every mutation
 *   npm run mutate -- --only hint,drain # mutations whose id contains one of these words
 *   npm run mutate -- --list            # list them, run nothing
 *
 * Prints one line per mutation, then the score and the survivors; exits 1 when one survived
 * or no longer applies (the code it names has changed: update the list). The scratch copy
 * lives in the system's temporary folder and is removed at the end.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { mutations } from './mutations.mjs';

const { values } = parseArgs({
  options: { only: { type: 'string' }, list: { type: 'boolean' } },
});
const root = resolve(import.meta.dirname, '..');
const only = values.only?.split(',').filter(Boolean);
const chosen = only ? mutations.filter((m) => only.some((w) => m.id.includes(w))) : mutations;

if (values.list) {
  for (const m of chosen) console.log(`${m.id.padEnd(34)} ${m.file}  [${m.tests.join(' ')}]`);
  console.log(`${chosen.length} mutations`);
  process.exit(0);
}

const scratch = mkdtempSync(join(tmpdir(), 'wsdrain-mutate-'));
for (const part of [
  'src',
  'test',
  // Test helpers share bench/lib (the redis-server a test starts, certificates).
  'bench',
  'scripts',
  'package.json',
  'tsconfig.json',
  'tsconfig.build.json',
  'vitest.config.ts',
]) {
  cpSync(join(root, part), join(scratch, part), { recursive: true });
}
symlinkSync(join(root, 'node_modules'), join(scratch, 'node_modules'), 'dir');

const run = (cmd, args) =>
  spawnSync(cmd, args, {
    cwd: scratch,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
  });
const build = () =>
  run(process.execPath, [
    join(scratch, 'node_modules/typescript/bin/tsc'),
    '-p',
    'tsconfig.build.json',
  ]);

const results = [];
const t0 = Date.now();
try {
  for (const m of chosen) {
    const file = join(scratch, m.file);
    const original = readFileSync(file, 'utf8');
    const count = original.split(m.find).length - 1;
    if (count !== 1) {
      results.push({ m, outcome: 'stale', note: `"${m.find}" found ${count} times in ${m.file}` });
      console.log(`stale     ${m.id}: the code it names changed (${count} matches)`);
      continue;
    }
    writeFileSync(file, original.replace(m.find, m.replace));
    const started = Date.now();
    let outcome;
    let note = '';
    const b = build();
    if (b.status !== 0) {
      outcome = 'killed';
      note = 'by the type-checker';
    } else {
      const out = join(scratch, 'result.json');
      rmSync(out, { force: true });
      const args = [join(scratch, 'node_modules/vitest/vitest.mjs'), 'run', '--bail=1'];
      args.push('--reporter=json', `--outputFile=${out}`, ...m.tests);
      if (m.name) args.push('-t', m.name);
      const t = run(process.execPath, args);
      let r;
      try {
        r = JSON.parse(readFileSync(out, 'utf8'));
      } catch {
        r = undefined;
      }
      if (!r || r.numTotalTests - r.numPendingTests === 0) {
        outcome = 'error';
        note = r
          ? 'no test ran (check `tests` and `name`)'
          : (t.stderr || t.stdout).trim().split('\n').slice(-3).join(' ');
      } else if (r.numFailedTests > 0) {
        outcome = 'killed';
        const failed = r.testResults
          .flatMap((f) => f.assertionResults)
          .find((a) => a.status === 'failed');
        if (failed) note = `by "${failed.title}"`;
      } else {
        outcome = 'survived';
      }
    }
    writeFileSync(file, original);
    const secs = ((Date.now() - started) / 1000).toFixed(0);
    results.push({ m, outcome, note });
    console.log(`${outcome.padEnd(9)} ${m.id} (${secs} s) ${note}`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

const killed = results.filter((r) => r.outcome === 'killed').length;
const bad = results.filter((r) => r.outcome !== 'killed');
console.log(
  `\nmutation score: ${killed} of ${results.length} killed (${((100 * killed) / Math.max(1, results.length)).toFixed(0)}%) in ${((Date.now() - t0) / 60000).toFixed(1)} min`,
);
for (const r of bad) console.log(`  ${r.outcome}: ${r.m.id}: ${r.m.why} ${r.note}`);
process.exit(bad.length > 0 ? 1 : 0);
