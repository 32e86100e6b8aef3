// `npm run test:cluster`: the end-to-end workflow suites and the load audit, unchanged, against the
// production engine (test/cluster/harness.ts: Temporal server on PostgreSQL as four processes, two envrun worker
// hosts), then the cluster's faults (test/cluster). One file at a time: a fault test breaks the whole cluster
// for a while, which no other file should see.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globalSetup: ['./test/cluster/global-setup.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 180_000,
    include: [
      'test/workflows/environment-run.test.ts',
      'test/workflows/ops.test.ts',
      'test/workflows/lease-policies.test.ts',
      'test/e2e/load.test.ts',
      'test/cluster/**/*.test.ts',
    ],
    reporters: ['default'],
  },
});
