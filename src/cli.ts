#!/usr/bin/env node
/** The `wsdrain` executable: the only module that does something when loaded. */
import { main } from './command.js';

main().catch((err: unknown) => {
  process.stderr.write(`wsdrain: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
