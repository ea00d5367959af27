/**
 * Which masking code ws really uses: Node's own (`http.websocketMask`, newer Node), the
 * `bufferutil` native addon, or ws's JavaScript fallback. Logged at start-up so an operator can
 * see that the addon loaded (npm 11 skips install scripts; bufferutil ships prebuilt binaries).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);

export type MaskImplementation = 'node' | 'bufferutil' | 'js';

/** Inspects ws's own buffer-util module (the instance ws loaded). */
export function maskImplementation(): MaskImplementation {
  try {
    const wsDir = dirname(require.resolve('ws'));
    const util = require(join(wsDir, 'lib', 'buffer-util.js')) as { mask: () => void };
    const src = util.mask.toString();
    if (src.includes('websocketMask')) return 'node';
    if (src.includes('bufferUtil')) return 'bufferutil';
    return 'js';
  } catch {
    return 'js';
  }
}
