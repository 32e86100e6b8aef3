import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globalSetup: ['./test/support/global-setup.ts'],
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 60_000,
    hookTimeout: 120_000,
    include: [
      'test/unit/**/*.test.ts',
      'test/workflows/**/*.test.ts',
      'test/e2e/**/*.test.ts',
      'test/faults/**/*.test.ts',
      'test/security/**/*.test.ts',
    ],
    reporters: ['default'],
  },
});
