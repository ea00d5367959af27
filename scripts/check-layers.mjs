#!/usr/bin/env node
/**
 * The layering rules of the tree, checked on every `npm run lint`:
 *
 *   - src/primary/ and src/worker/ never import each other: what both need lives in
 *     src/drain/ or in top-level src/ modules;
 *   - src/drain/ and src/app/ (shared by both sides) import neither primary/ nor worker/;
 *   - src/client/ (browser-safe) imports nothing from the server side but src/hint.ts,
 *     src/codes.ts and src/wire.ts;
 *   - nothing imports src/cli.ts (the executable, the one module that acts when loaded);
 *   - test/, bench/ and scripts/ use the package (`wsdrain`, `wsdrain/client`,
 *     `wsdrain/internal`), never a file under src/;
 *   - no import cycle among the modules of src/.
 *
 * Usage: node scripts/check-layers.mjs [--root DIR]. Prints one line per violation and exits
 * 1 when there is any.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

const args = process.argv.slice(2);
const root = resolve(args[0] === '--root' && args[1] ? args[1] : '.');

/** Every .ts/.mts/.js/.mjs file under `dir`, skipping node_modules, dist and results. */
function files(dir) {
  let out = [];
  let names;
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of names) {
    if (name === 'node_modules' || name === 'dist' || name === 'results' || name.startsWith('.'))
      continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(files(p));
    else if (/\.(m?ts|m?js)$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

const IMPORT =
  /(?:^|[\s;])(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]|(?:^|[\s;(])import\s*\(\s*['"]([^'"]+)['"]\s*\)|(?:^|[\s;])import\s+['"]([^'"]+)['"]/gm;

/** The module specifiers a file imports (comments stripped first). */
function imports(file) {
  const text = readFileSync(file, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
  const specs = [];
  for (const m of text.matchAll(IMPORT)) specs.push(m[1] ?? m[2] ?? m[3]);
  return specs;
}

/** A relative specifier resolved to a repo path (the .js of an import is the .ts source). */
function target(from, spec) {
  if (!spec.startsWith('.')) return undefined;
  const abs = resolve(dirname(from), spec);
  return relative(root, abs.replace(/\.js$/, '.ts')).split(sep).join('/');
}

const rel = (p) => relative(root, p).split(sep).join('/');
const under = (p, dir) => p === dir || p.startsWith(`${dir}/`);

const problems = [];
const graph = new Map();
for (const top of ['src', 'test', 'bench', 'scripts', 'examples']) {
  for (const file of files(join(root, top))) {
    const me = rel(file);
    const edges = [];
    for (const spec of imports(file)) {
      const to = target(file, spec);
      if (!to) continue;
      if (under(to, 'src')) edges.push(to);
      const say = (why) => problems.push(`${me}: imports ${spec} (${to}): ${why}`);
      if (under(me, 'src/primary') && under(to, 'src/worker'))
        say('primary/ must not import worker/ (share it through src/drain/ or a top-level module)');
      if (under(me, 'src/worker') && under(to, 'src/primary'))
        say('worker/ must not import primary/ (share it through src/drain/ or a top-level module)');
      if (
        (under(me, 'src/drain') || under(me, 'src/app')) &&
        (under(to, 'src/primary') || under(to, 'src/worker'))
      )
        say('drain/ and app/ are shared by both sides: they import neither primary/ nor worker/');
      if (
        under(me, 'src/client') &&
        under(to, 'src') &&
        !under(to, 'src/client') &&
        !['src/hint.ts', 'src/codes.ts', 'src/wire.ts'].includes(to)
      )
        say(
          'client/ may import only src/hint.ts, src/codes.ts and src/wire.ts from the server side',
        );
      if (to === 'src/cli.ts') say('src/cli.ts is the executable: import src/command.ts instead');
      if (!under(me, 'src') && under(to, 'src'))
        say("use the package ('wsdrain', 'wsdrain/client', 'wsdrain/internal'), not src/ files");
    }
    if (under(me, 'src')) graph.set(me, edges);
  }
}

// Import cycles among src/ modules: depth-first search, one report per cycle found.
const state = new Map();
const stack = [];
function visit(node) {
  state.set(node, 'open');
  stack.push(node);
  for (const next of graph.get(node) ?? []) {
    if (!graph.has(next)) continue;
    if (state.get(next) === 'open') {
      const cycle = stack.slice(stack.indexOf(next)).concat(next);
      problems.push(`import cycle: ${cycle.join(' -> ')}`);
    } else if (!state.has(next)) visit(next);
  }
  stack.pop();
  state.set(node, 'done');
}
for (const node of graph.keys()) if (!state.has(node)) visit(node);

for (const p of problems) console.error(p);
if (problems.length > 0) {
  console.error(`check-layers: ${problems.length} violation(s)`);
  process.exit(1);
}
console.log(`check-layers: ${graph.size} modules of src/ checked, layers hold, no cycle`);
