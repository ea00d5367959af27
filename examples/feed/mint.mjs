#!/usr/bin/env node
// Mints a feed token (what your auth service would do):
//
//   node examples/feed/mint.mjs --sub alice --feeds prices,news [--publish news] [--ttl 3600]
import { parseArgs } from 'node:util';
import { mint } from './token.mjs';

const { values } = parseArgs({
  options: {
    sub: { type: 'string', default: 'demo' },
    feeds: { type: 'string', default: 'prices' },
    publish: { type: 'string', default: '' },
    ttl: { type: 'string', default: '3600' },
  },
});
const list = (s) => s.split(',').filter(Boolean);
console.log(
  mint(
    { sub: values.sub, feeds: list(values.feeds), publish: list(values.publish) },
    Number(values.ttl) * 1000,
  ),
);
