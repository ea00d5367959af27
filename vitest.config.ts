import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Tests fork real servers and open real sockets: keep parallelism modest on small machines.
    maxWorkers: 2,
    fileParallelism: true,
  },
});
