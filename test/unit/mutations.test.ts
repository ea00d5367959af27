/**
 * The mutation list stays true to the code: each mutation names a line found exactly once in
 * its file and tests that exist. A refactor that moves the line makes `npm run mutate` call
 * the mutation stale; this check fails the suite at once instead of waiting for that run.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mutations } from '../../scripts/mutations.mjs';

const root = resolve(import.meta.dirname, '../..');

describe('mutation list', () => {
  it('names, for every mutation, a line found once in its file and tests that exist', () => {
    const wrong: string[] = [];
    for (const m of mutations) {
      const text = readFileSync(join(root, m.file), 'utf8');
      const count = text.split(m.find).length - 1;
      if (count !== 1) wrong.push(`${m.id}: found ${count} times in ${m.file}`);
      for (const t of m.tests) if (!existsSync(join(root, t))) wrong.push(`${m.id}: no ${t}`);
    }
    expect(wrong).toEqual([]);
    expect(new Set(mutations.map((m) => m.id)).size).toBe(mutations.length);
  });
});
