// Hostile CLI arguments, generated: 1,000 invalid argument vectors for the commands that write or start
// things, run in-process through main() against a real worker and database. Each exits 2 with a message on
// stderr naming the option or field; no workflow is started and no row is written.
import fc from 'fast-check';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { main } from '../../client/cli/index.js';
import { InvalidInputError } from '../../client/errors.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { tempWorkspace } from '../support/runs.js';

let h: Harness;
let envId: string;
const CO = uniqueId('cli-co');
const RUN = 'cli-run';
const cwd = tempWorkspace();

beforeAll(async () => {
  h = await createHarness();
  // main() reads its configuration from the environment, as the binary does (this file has its own process).
  Object.assign(process.env, {
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    DATABASE_URL: h.database.url,
    ENVRUN_TASK_QUEUE: h.taskQueue,
    ENVRUN_DATA_DIR: h.dataDir,
  });
  envId = (
    await h.admin.createEnvironment({ companyId: CO, name: 'sbx', driver: 'sandbox', config: { provider: 'fake' } })
  ).id;
});
afterAll(async () => {
  await h?.close();
});

/** Runs the CLI in this process, capturing what it prints (console and the raw streams). */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = { stdout: '', stderr: '' };
  const saved = { log: console.log, error: console.error, out: process.stdout.write, err: process.stderr.write };
  const sink = (stream: 'stdout' | 'stderr') => (chunk: unknown) => {
    out[stream] += String(chunk);
    return true;
  };
  console.log = (...a: unknown[]) => sink('stdout')(`${a.join(' ')}\n`);
  console.error = (...a: unknown[]) => sink('stderr')(`${a.join(' ')}\n`);
  process.stdout.write = sink('stdout') as typeof process.stdout.write;
  process.stderr.write = sink('stderr') as typeof process.stderr.write;
  try {
    return { code: await main(args), ...out };
  } finally {
    Object.assign(console, { log: saved.log, error: saved.error });
    Object.assign(process.stdout, { write: saved.out });
    Object.assign(process.stderr, { write: saved.err });
  }
}

async function rowCounts(): Promise<Record<string, string>> {
  const { rows } = await h.database.pool.query(`select
    (select count(*) from environments) environments, (select count(*) from execution_workspaces) workspaces,
    (select count(*) from environment_leases) leases, (select count(*) from activity_log) activity`);
  return rows[0] as Record<string, string>;
}

// ---- invalid values (positional ones never start with "-": commander would read them as options) -------
const isExternalId = (s: string) => /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(s);
const isUuidLike = (s: string) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s);
const badId = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    '-oProxyCommand=touch /tmp/x',
    '../x',
    'a/b',
    '$(touch /tmp/x)',
    'x;rm -rf /',
    '`id`',
    'é',
    '_a',
    'a b',
  ),
  fc.string({ minLength: 129, maxLength: 200 }).map((s) => `a${s}`),
  fc.string({ maxLength: 30 }).filter((s) => !isExternalId(s)),
);
const badUuid = fc.oneof(
  fc.constantFrom(
    '',
    'nope',
    `${'0'.repeat(8)}-0000-0000-0000-00000000000g`,
    "' OR 1=1 --",
    '../00000000-0000-4000-8000-000000000000',
  ),
  fc.string({ maxLength: 40 }).filter((s) => !isUuidLike(s)),
);
const badArgUuid = badUuid.filter((s) => !s.startsWith('-'));
const badJson = fc.oneof(
  fc.constantFrom('', '{', "{'a':1}", '{"a":}', 'undefined'),
  fc.string().filter((s) => {
    try {
      JSON.parse(s);
      return false;
    } catch {
      return true;
    }
  }),
);
const nonObjectJson = fc
  .jsonValue()
  .filter((v) => v === null || typeof v !== 'object' || Array.isArray(v))
  .map((v) => JSON.stringify(v));
const badBranch = fc.oneof(
  fc.constantFrom(
    '$(touch /tmp/pwned)',
    '`id`',
    'a;b',
    'a b',
    '--upload-pack=touch /tmp/x',
    'a..b',
    'x.lock',
    'x/',
    'a|b',
    'a&b',
    "a'b",
  ),
  fc.string({ minLength: 1, maxLength: 20 }).filter((s) => !/^[A-Za-z0-9][A-Za-z0-9._/-]*$/.test(s)),
);
const badMs = fc.oneof(
  fc.constantFrom('', ' ', 'soon', '1.5', '-1', 'NaN', 'Infinity'),
  fc.integer({ max: -1 }).map(String),
  fc.string().filter((s) => !/^\d+$/.test(s)),
);
const nulPath = fc.string({ maxLength: 10 }).map((s) => `/w/${s}\0x`);
const longPath = fc.integer({ min: 4097, max: 5000 }).map((n) => `/${'a'.repeat(n)}`);
const sshBase = { host: 'h.example', username: 'u', remoteWorkspacePath: '/srv', privateKeySecretRef: 'env:K' };

type Case = { field: string; args: string[] };
const c = (field: string, args: string[]): Case => ({ field, args });
const create = (over: Record<string, string>) => [
  'env',
  'create',
  ...Object.entries({ '--company': CO, '--name': 'x', '--driver': 'local', ...over }).flat(),
];
const wsCreate = (config: Record<string, unknown>) => [
  'workspace',
  'create',
  '--company',
  CO,
  '--name',
  'w',
  '--cwd',
  cwd,
  '--config',
  JSON.stringify(config),
];
const start = (...extra: string[]) => ['run', 'start', '--company', CO, '--run', RUN, '--cwd', cwd, ...extra];

const envCommands = fc.oneof(
  badId.map((v) => c('--company', create({ '--company': v }))),
  fc
    .string()
    .filter((s) => !['local', 'ssh', 'sandbox', 'plugin'].includes(s))
    .map((v) => c('--driver', create({ '--driver': v }))),
  fc.oneof(badJson, nonObjectJson).map((v) => c('--config', create({ '--driver': 'sandbox', '--config': v }))),
  // Refused by the client after connecting: still exit 2, still no row.
  fc
    .constantFrom('-oProxyCommand=touch /tmp/x', 'a b', 'h;id', '$(id)')
    .map((v) => c('config.host', create({ '--driver': 'ssh', '--config': JSON.stringify({ ...sshBase, host: v }) }))),
  fc.constantFrom('', ' ', '\t').map((v) => c('name:', create({ '--name': v }))),
  badArgUuid.map((v) => c('envrun: id:', ['env', 'update', v, '--company', CO, '--config', '{}'])),
  fc.oneof(badJson, nonObjectJson).map((v) => c('--config', ['env', 'update', envId, '--company', CO, '--config', v])),
  fc
    .constantFrom('Bad Key', '../x', '')
    .map((v) =>
      c('config.provider', ['env', 'update', envId, '--company', CO, '--config', JSON.stringify({ provider: v })]),
    ),
  badArgUuid.map((v) => c('envrun: id:', ['env', 'archive', v, '--company', CO])),
  // By id, always within a company: without --company (or with a bad one) nothing is looked up.
  fc
    .constantFrom('update', 'archive', 'probe')
    .map((cmd) =>
      c("required option '--company <id>'", ['env', cmd, envId, ...(cmd === 'update' ? ['--config', '{}'] : [])]),
    ),
  fc
    .tuple(fc.constantFrom('update', 'archive', 'probe'), badId)
    .map(([cmd, v]) =>
      c('--company', ['env', cmd, envId, '--company', v, ...(cmd === 'update' ? ['--config', '{}'] : [])]),
    ),
  badId.map((v) => c('--company', ['workspace', 'create', '--company', v, '--name', 'w', '--cwd', cwd])),
  fc
    .oneof(badJson, nonObjectJson)
    .map((v) => c('--config', ['workspace', 'create', '--company', CO, '--name', 'w', '--cwd', cwd, '--config', v])),
  fc.constant(c("required option '--cwd <path>'", ['workspace', 'create', '--company', CO, '--name', 'w'])),
  fc.constant(c('--cwd: must not be empty', ['workspace', 'create', '--company', CO, '--name', 'w', '--cwd', ''])),
  fc
    .constantFrom('', ' ', '\t', 'x'.repeat(201))
    .map((v) =>
      c('name: must be a non-empty string', ['workspace', 'create', '--company', CO, '--name', v, '--cwd', cwd]),
    ),
  fc
    .oneof<[fc.Arbitrary<unknown>, fc.Arbitrary<unknown>]>(badUuid, fc.integer())
    .map((v) => c('config.environmentId', wsCreate({ environmentId: v }))),
  fc
    .constantFrom('provisionComand', 'environment', 'env')
    .map((k) => c(`config: Unrecognized key: "${k}"`, wsCreate({ [k]: 'x' }))),
  fc
    .constantFrom(5, true, ['make'], { cmd: 'make' })
    .map((v) => c('config.provisionCommand', wsCreate({ provisionCommand: v }))),
  fc.constant(c('config.teardownCommand', wsCreate({ teardownCommand: 'x'.repeat(10_001) }))),
  // Well formed, but no environment of CO: refused by the client after connecting, still exit 2, still no row.
  fc
    .uuid()
    .map((v) => c(`config.environmentId: environment ${v} of company ${CO} not found`, wsCreate({ environmentId: v }))),
);

const runStart = fc.oneof(
  badId.map((v) => c('--company', ['run', 'start', '--company', v, '--run', RUN, '--cwd', cwd])),
  badId.map((v) => c('--run', ['run', 'start', '--company', CO, '--run', v, '--cwd', cwd])),
  badUuid.map((v) => c('request.environmentId', start('--env', v))),
  badUuid.map((v) => c('request.executionWorkspaceId', start('--workspace', v))),
  badId.map((v) => c('request.issueId', start('--issue', v))),
  fc
    .string()
    .filter((s) => !/^[a-z0-9_.-]{1,64}$/.test(s))
    .map((v) => c('request.adapterType', start('--adapter', v))),
  fc
    .string()
    .filter(
      (s) => !['ephemeral', 'reuse_by_environment', 'reuse_by_execution_workspace', 'retain_on_failure'].includes(s),
    )
    .map((v) => c("option '--lease-policy <policy>' argument", start('--lease-policy', v))),
  fc.constant(c('--branch', start('--worktree', `${cwd}/wt`))),
  badBranch.map((v) => c('request.workspace.branchName', start('--worktree', `${cwd}/wt`, '--branch', v))),
  fc
    .oneof(nulPath, longPath)
    .map((v) => c('request.workspace.cwd', ['run', 'start', '--company', CO, '--run', RUN, '--cwd', v])),
  fc.oneof(nulPath, longPath).map((v) => c('request.workspace.worktreePath', start('--worktree', v, '--branch', 'b'))),
  fc.constant(c('--cwd: must not be empty', ['run', 'start', '--company', CO, '--run', RUN, '--cwd', ''])),
  fc.constant(c('--worktree: must not be empty', start('--worktree', '', '--branch', 'b'))),
  badMs.map((v) => c('--await-retry-ms', start('--await-retry-ms', v))),
  fc
    .oneof(badMs, fc.integer({ min: 0, max: 999 }).map(String))
    .map((v) => c('--lease-ttl-ms', start('--lease-ttl-ms', v))),
  fc
    .integer({ min: 10_001, max: 12_000 })
    .map((n) => c('request.runtimeOverlay.provisionCommand', start('--provision', 'x'.repeat(n)))),
  fc
    .stringMatching(/^--[a-z][a-z-]{0,12}$/)
    .filter(
      (o) =>
        !/^--(company|run|env|cwd|adapter|provision|workspace|issue|lease-policy|worktree|branch|await-retry-ms|lease-ttl-ms|wait|json|help)$/.test(
          o,
        ),
    )
    .map((o) => c(`unknown option '${o}'`, start(o, 'x'))),
  fc.constant(c("required option '--run <id>'", ['run', 'start', '--company', CO, '--cwd', cwd])),
);

const runCommands = fc.oneof(
  fc
    .tuple(fc.constantFrom('complete', 'renew', 'cancel', 'retry'), badId, fc.boolean())
    .map(([cmd, v, bad]) =>
      bad
        ? c('--company', ['run', cmd, '--company', v, '--run', RUN])
        : c('--run', ['run', cmd, '--company', CO, '--run', v]),
    ),
  fc
    .string({ minLength: 1, maxLength: 20 })
    .map((v) => c('--reason', ['run', 'complete', '--company', CO, '--run', RUN, '--reason', v])),
  fc.constant(c('completion.failureReason', ['run', 'complete', '--company', CO, '--run', RUN, '--reason', ''])), // refused by the client
  fc.constant(c('--run', ['run', 'retry', '--phase', 'awaiting_retry', '--run', RUN])),
  badUuid.map((v) => c('--environment', ['run', 'retry', '--phase', 'awaiting_retry', '--environment', v])),
  badId.map((v) => c('--company', ['run', 'retry', '--phase', 'awaiting_retry', '--company', v])),
  fc
    .string()
    .filter((s) => s !== 'awaiting_retry')
    .map((v) => c("option '--phase <phase>' argument", ['run', 'retry', '--phase', v])),
  fc
    .oneof(
      fc.constantFrom('NOEQUALS', '=x', ''),
      fc.string().filter((s) => s.indexOf('=') <= 0),
    )
    .map((v) =>
      c('--env-var', ['run', 'exec', '--company', CO, '--run', RUN, '--env-var', v, '--', 'touch', `${cwd}/exec-ran`]),
    ),
  fc
    .oneof(badMs, fc.constant('0'))
    .map((v) => c('--timeout', ['run', 'exec', '--company', CO, '--run', RUN, '--timeout', v, '--', 'true'])),
  badArgUuid.map((v) => c('envrun: id:', ['lease', 'release', v, '--company', CO])),
  badId.map((v) => c('--company', ['lease', 'release', '00000000-0000-4000-8000-000000000000', '--company', v])),
  fc
    .oneof(
      fc.constantFrom('', 'soon', '5', '5 m', '-5m', '5m;id'),
      fc.string().filter((s) => !/^\d+(ms|s|m|h)$/.test(s)),
    )
    .map((v) => c('--every', ['reaper', 'install', '--every', v])),
);

it('1,000 invalid CLI argument vectors: exit 2, stderr names the option or field; nothing started or written', async () => {
  const before = await rowCounts();
  const envBefore = await h.store.getEnvironmentById(envId);
  await fc.assert(
    fc.asyncProperty(fc.oneof(envCommands, runStart, runCommands), async ({ field, args }) => {
      const res = await cli(args);
      expect(res.code, `${JSON.stringify(args)}\n${res.stderr}`).toBe(2);
      expect(res.stderr).toContain(field);
      expect(res.stdout).toBe('');
      expect(process.exitCode).toBeUndefined();
    }),
    { numRuns: 1000, seed: 20261127 },
  );
  expect(await rowCounts()).toEqual(before);
  expect(await h.store.getEnvironmentById(envId)).toEqual(envBefore);
  expect(await h.client.getRun(CO, RUN)).toBeNull();
  expect(existsSync(`${cwd}/exec-ran`)).toBe(false);
  const onQueue = [];
  for await (const wf of h.client.temporal.workflow.list({ query: `TaskQueue = '${h.taskQueue}'` }))
    onQueue.push(wf.workflowId);
  expect(onQueue).toEqual([]);
}, 300_000);

it('createExecutionWorkspace through the client: bad input is refused naming the field, and nothing is written', async () => {
  const otherCompanysEnv = await h.admin.createEnvironment({
    companyId: uniqueId('other-co'),
    name: 'theirs',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const before = await rowCounts();
  const good = { companyId: CO, name: 'ws', cwd };
  const cases: [string, Record<string, unknown>][] = [
    ['companyId: ', { companyId: 'a b' }],
    ['name: must be a non-empty string of at most 200 characters', { name: '' }],
    ['name: must be a non-empty string of at most 200 characters', { name: '  ' }],
    ['name: must be a non-empty string of at most 200 characters', { name: 'n'.repeat(201) }],
    ['name: ', { name: 42 }],
    ['cwd: must be an absolute path', { cwd: 'relative/dir' }],
    ['cwd: must not contain ".." segments', { cwd: `${cwd}/../..` }],
    ['cwd: ', { cwd: undefined }],
    ['config.environmentId: ', { config: { environmentId: 'not-a-uuid' } }],
    ['config.environmentId: ', { config: { environmentId: 17 } }],
    // Another company's environment reads exactly like a missing one.
    [
      `config.environmentId: environment ${otherCompanysEnv.id} of company ${CO} not found`,
      { config: { environmentId: otherCompanysEnv.id } },
    ],
    ['config.provisionCommand: ', { config: { provisionCommand: ['make'] } }],
    ['config: Unrecognized key: "provisionComand"', { config: { provisionComand: 'make' } }],
    ['config: ', { config: 'make' }],
    [': Unrecognized key: "metadata"', { metadata: { config: {} } }],
  ];
  for (const [field, over] of cases) {
    const attempt = h.admin.createExecutionWorkspace({ ...good, ...over } as Parameters<
      Harness['admin']['createExecutionWorkspace']
    >[0]);
    const err = await attempt.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err, JSON.stringify(over)).toBeInstanceOf(InvalidInputError);
    expect((err as Error).message, JSON.stringify(over)).toContain(field);
  }
  expect(await rowCounts()).toEqual(before);

  // Good input is stored as given (the name trimmed), its config under metadata.config.
  const config = { provisionCommand: 'make setup', teardownCommand: null, environmentId: envId };
  const ws = await h.admin.createExecutionWorkspace({ ...good, name: '  ws  ', config });
  expect(ws).toMatchObject({ companyId: CO, name: 'ws', cwd, metadata: { config } });
  expect(await h.store.getExecutionWorkspace(CO, ws.id)).toEqual(ws);
});
