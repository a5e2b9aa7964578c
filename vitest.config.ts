import { defineConfig } from 'vitest/config';

// GPU tests run on a software adapter in CI (llvmpipe): one device per test file, separate
// processes (Dawn's addon is not meant for worker threads), generous timeouts for CPU "GPUs".
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
    setupFiles: ['test/setup.ts'],
  },
});
