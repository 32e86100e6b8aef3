// `npm run test:crash`: the whole crash matrix (test/crash/matrix.ts), on the suite's global setup. Its cases
// kill and start worker processes in turn, so they run one at a time, alone.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globalSetup: ['./test/support/global-setup.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 180_000,
    hookTimeout: 120_000,
    include: ['test/crash/**/*.test.ts'],
    reporters: ['default'],
  },
});
