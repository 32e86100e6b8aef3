// Hostile input, generated: 1,000 invalid run requests and 1,000 invalid environment configs each get a
// clear error naming the bad field; no workflow starts and no row is written.
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { InvalidInputError } from '../../client/errors.js';
import { createHarness, type Harness } from '../support/harness.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

const companyId = 'hostile-co';
const valid = () => ({ companyId, heartbeatRunId: 'run-1', workspace: { baseCwd: '/w', cwd: '/w' } });

/** Values that are never valid for the field they replace. */
const badId = fc.oneof(
  fc.constant(''),
  fc.constant('-oProxyCommand=sh'),
  fc.constant('a/../b'),
  fc.constant('x; rm -rf /'),
  fc.constant('$(id)'),
  fc.string({ minLength: 129, maxLength: 300 }).map((s) => `a${s}`),
  fc.integer(),
  fc.constant(null),
  fc.array(fc.string()),
);
const badPath = fc.oneof(
  fc.constant('relative/path'),
  fc.constant('/w/../etc'),
  fc.constant('/w/\0x'),
  fc.constant(''),
  fc.integer(),
  fc.constant('../..'),
  fc.string().filter((s) => !s.startsWith('/')),
);
const badBranch = fc.oneof(
  fc.constant('--upload-pack=x'),
  fc.constant('a..b'),
  fc.constant('a b'),
  fc.constant('x;y'),
  fc.constant('`id`'),
  fc.constant('b.lock'),
);

const invalidRequest = fc.oneof(
  badId.map((v) => ({ field: 'request.companyId', input: { ...valid(), companyId: v } })),
  badId.map((v) => ({ field: 'request.heartbeatRunId', input: { ...valid(), heartbeatRunId: v } })),
  badPath.map((v) => ({ field: 'request.workspace.cwd', input: { ...valid(), workspace: { baseCwd: '/w', cwd: v } } })),
  badPath.map((v) => ({
    field: 'request.workspace.baseCwd',
    input: { ...valid(), workspace: { baseCwd: v, cwd: '/w' } },
  })),
  badBranch.map((v) => ({
    field: 'request.workspace.branchName',
    input: {
      ...valid(),
      workspace: { baseCwd: '/w', cwd: '/w', strategy: 'git_worktree', branchName: v, worktreePath: '/wt' },
    },
  })),
  fc
    .string()
    .filter((s) => !/^[0-9a-f-]{36}$/i.test(s))
    .map((v) => ({ field: 'request.environmentId', input: { ...valid(), environmentId: v } })),
  fc
    .string()
    .filter(
      (s) => !['ephemeral', 'reuse_by_environment', 'reuse_by_execution_workspace', 'retain_on_failure'].includes(s),
    )
    .map((v) => ({ field: 'request.leasePolicy', input: { ...valid(), leasePolicy: v } })),
  fc
    .oneof(fc.integer({ max: -1 }), fc.double(), fc.string())
    .map((v) => ({ field: 'request.awaitRetryMs', input: { ...valid(), awaitRetryMs: v } })),
  fc
    .string({ minLength: 1 })
    .filter(
      (k) =>
        !(k in valid()) &&
        ![
          'environmentId',
          'executionWorkspaceId',
          'issueId',
          'agentId',
          'adapterType',
          'requestedMode',
          'leasePolicy',
          'runtimeOverlay',
          'provisionTimeoutMs',
          'awaitRetryMs',
          'leaseTtlMs',
          '__proto__',
          'constructor',
        ].includes(k),
    )
    .map((k) => ({ field: 'request', input: { ...valid(), [k]: 1 } })),
);

it('1,000 invalid run requests: each refused naming its field; nothing started', async () => {
  await fc.assert(
    fc.asyncProperty(invalidRequest, async ({ field, input }) => {
      const err = await h.client.startRun(input as never).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(InvalidInputError);
      expect((err as Error).message).toContain(field);
    }),
    { numRuns: 1000, seed: 20261127 },
  );
  const started = await h.client.listRuns({ companyId });
  expect(started).toEqual([]);
  expect(await h.client.getRun(companyId, 'run-1')).toBeNull();
});

const sshBase = { host: 'h.example', username: 'u', remoteWorkspacePath: '/srv', privateKeySecretRef: 'env:K' };
const invalidConfig = fc.oneof(
  fc
    .oneof(
      fc.constant('-oProxyCommand=touch /tmp/x'),
      fc.constant(''),
      fc.constant('a b'),
      fc.constant('h;rm'),
      fc.integer(),
    )
    .map((v) => ({ driver: 'ssh', field: 'config.host', config: { ...sshBase, host: v } })),
  fc
    .oneof(fc.integer({ max: 0 }), fc.integer({ min: 65536 }), fc.string())
    .map((v) => ({ driver: 'ssh', field: 'config.port', config: { ...sshBase, port: v } })),
  badPath.map((v) => ({
    driver: 'ssh',
    field: 'config.remoteWorkspacePath',
    config: { ...sshBase, remoteWorkspacePath: v },
  })),
  fc
    .oneof(
      fc.constant('-----BEGIN OPENSSH PRIVATE KEY-----'),
      fc.constant('env:'),
      fc.constant('file:relative'),
      fc.string().filter((s) => !/^(env:|file:\/)/.test(s)),
    )
    .map((v) => ({
      driver: 'ssh',
      field: 'config.privateKeySecretRef',
      config: { ...sshBase, privateKeySecretRef: v },
    })),
  fc
    .oneof(fc.constant('Bad Key'), fc.constant(''), fc.constant('../x'), fc.integer())
    .map((v) => ({ driver: 'sandbox', field: 'config.provider', config: { provider: v } })),
  fc.oneof(fc.integer({ max: 0 }), fc.string(), fc.double({ min: 0.1, max: 0.9 })).map((v) => ({
    driver: 'sandbox',
    field: 'config.maxConcurrentLeases',
    config: { provider: 'fake', maxConcurrentLeases: v },
  })),
  fc
    .oneof(fc.constant('maybe'), fc.integer())
    .map((v) => ({ driver: 'local', field: 'config.singleFlight', config: { singleFlight: v } })),
  fc
    .string({ minLength: 1 })
    .filter(
      (k) =>
        ![
          'leasePolicy',
          'provisionTimeoutMs',
          'maxConcurrentLeases',
          'singleFlight',
          '__proto__',
          'constructor',
        ].includes(k),
    )
    .map((k) => ({ driver: 'local', field: 'config', config: { [k]: true } })),
  fc.oneof(fc.constant(0), fc.constant(-1), fc.constant('x')).map((v) => ({
    driver: 'sandbox',
    field: 'config.faults.realize.fail',
    config: { provider: 'fake', faults: { realize: { fail: v } } },
  })),
);

it('1,000 invalid environment configs: each refused naming its field; no row written', async () => {
  await fc.assert(
    fc.asyncProperty(invalidConfig, async ({ driver, field, config }) => {
      const err = await h.admin.createEnvironment({ companyId, name: 'x', driver, config }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(InvalidInputError);
      expect((err as Error).message).toContain(field);
    }),
    { numRuns: 1000, seed: 20261127 },
  );
  expect(await h.store.listEnvironments(companyId)).toEqual([]);
});
