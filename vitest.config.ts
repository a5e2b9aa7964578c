import { defineConfig } from 'vitest/config';

// GPU tests run on a software adapter in CI (llvmpipe): one device per test file, separate
// processes (Dawn's addon is not meant for worker threads). Every test's work is bounded (sizes and
// step counts, never seconds), so timeouts only catch hangs: they are generous because a busy
// 2-core machine runs a software adapter many times slower than an idle one.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 600_000,
    hookTimeout: 600_000,
    setupFiles: ['test/setup.ts'],
  },
});
