// Plugin environments served by plugin modules loaded from outside envrun's source tree (as
// ENVRUN_PLUGIN_MODULES does), through the real worker and Temporal dev server.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { WorkspaceRealizationRecordSchema, runWorkflowId } from '../../contracts/index.js';
import { loadPlugins } from '../../drivers/plugins/load.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { expectRunError, runEnd, runRequest, scheduledActivities } from '../support/runs.js';

const outside = mkdtempSync(join(tmpdir(), 'my-plugins-'));
for (const name of ['acme.mjs', 'liar.mjs']) {
  copyFileSync(fileURLToPath(new URL(`../fixtures/plugins/${name}`, import.meta.url)), join(outside, name));
}

let h: Harness;
beforeAll(async () => {
  h = await createHarness({ pluginModules: [join(outside, 'acme.mjs'), join(outside, 'liar.mjs')] });
});
afterAll(async () => {
  await h?.close();
});

interface Call {
  op: string;
  heartbeatRunId?: string;
  environmentId: string;
  idempotencyKey?: string;
  attempt?: number;
  adopted?: boolean;
  keep?: boolean;
  providerLeaseId?: string;
  driverKey: string;
  driverConfig: Record<string, unknown>;
}

/** What the acme plugin was asked, for one run (or, with no run, one environment). */
function callsOf(filter: { heartbeatRunId?: string; environmentId?: string }): Call[] {
  const file = join(h.dataDir, 'acme', 'calls.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Call)
    .filter(
      (c) =>
        (!filter.heartbeatRunId || c.heartbeatRunId === filter.heartbeatRunId) &&
        (!filter.environmentId || c.environmentId === filter.environmentId),
    );
}

const leaseDir = (metadata: Record<string, unknown> | null) =>
  join(h.dataDir, 'acme', 'leases', String((metadata?.plugin as { dir: string }).dir));

async function acmeEnvironment(companyId: string, driverConfig: Record<string, unknown> = {}) {
  return h.admin.createEnvironment({
    companyId,
    name: 'acme',
    driver: 'plugin',
    config: { pluginKey: 'acme', driverKey: 'vm', driverConfig },
  });
}

it('a plugin environment reaches ready with {} and a null target; the plugin acquires by the run key and releases at completion', async () => {
  const companyId = uniqueId('co');
  const env = await acmeEnvironment(companyId, { label: 'first' });
  const req = runRequest({ companyId, environmentId: env.id });
  const result = await h.client.startRunAndWaitReady(req);
  expect(result.workspaceRealization).toEqual({});
  expect(result.executionTarget).toBeNull();
  expect(result.remoteExecution).toBeNull();
  expect(result.lease).toMatchObject({
    provider: 'acme',
    providerLeaseId: `plugin://acme/vm/${req.heartbeatRunId}`,
    status: 'active',
  });
  expect(result.lease.metadata).toMatchObject({ pluginKey: 'acme', driverKey: 'vm', plugin: { label: 'first' } });
  const dir = leaseDir(result.lease.metadata);
  expect(existsSync(dir)).toBe(true);
  const steps = await scheduledActivities(h, companyId, req.heartbeatRunId);
  // One prepare step that only resolves the target: the plugin realizes nothing, nothing is persisted.
  expect(steps).toEqual(['local:resolveEnvironment', 'acquireLease', 'prepareWorkspace']);
  expect((await h.store.getLease(companyId, result.lease.id))!.metadata).not.toHaveProperty('workspaceRealization');

  const workflowId = runWorkflowId(companyId, req.heartbeatRunId);
  expect(callsOf({ heartbeatRunId: req.heartbeatRunId }).map((c) => c.op)).toEqual(['acquire', 'resolveTarget']);
  expect(callsOf({ heartbeatRunId: req.heartbeatRunId })[0]).toMatchObject({
    idempotencyKey: workflowId,
    environmentId: env.id,
    attempt: 1,
    adopted: false,
    driverKey: 'vm',
    driverConfig: { label: 'first', target: 'none' },
  });

  await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  const calls = callsOf({ heartbeatRunId: req.heartbeatRunId });
  expect(calls.map((c) => c.op)).toEqual(['acquire', 'resolveTarget', 'release']);
  expect(calls[2]).toMatchObject({ providerLeaseId: result.lease.providerLeaseId, keep: false });
  expect(existsSync(dir)).toBe(false);
  const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
  expect(lease).toMatchObject({ status: 'released', cleanupStatus: 'success' });
});

it('probe is delegated to the plugin', async () => {
  const companyId = uniqueId('co');
  const env = await acmeEnvironment(companyId);
  expect(await h.admin.probeEnvironment(companyId, env.id)).toEqual({
    ok: true,
    diagnostics: [
      { severity: 'info', message: `acme root ${join(h.dataDir, 'acme')}` },
      { severity: 'info', message: 'driver vm' },
    ],
  });
  expect(callsOf({ environmentId: env.id }).map((c) => c.op)).toEqual(['probe']);
});

it('a plugin that offers a target gives it, with the environment and lease filled in', async () => {
  const companyId = uniqueId('co');
  const env = await acmeEnvironment(companyId, { target: 'local' });
  const req = runRequest({ companyId, environmentId: env.id });
  const result = await h.client.startRunAndWaitReady(req);
  expect(result.workspaceRealization).toEqual({});
  expect(result.executionTarget).toEqual({
    kind: 'local',
    environmentId: env.id,
    leaseId: result.lease.id,
    cwd: leaseDir(result.lease.metadata),
  });
  expect(result.remoteExecution).toBeNull();
  await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
});

it("a plugin acquire that fails once is retried, and the retry adopts the first attempt's resource", async () => {
  const companyId = uniqueId('co');
  const env = await acmeEnvironment(companyId, { faults: { acquire: 1 } });
  const req = runRequest({ companyId, environmentId: env.id });
  const result = await h.client.startRunAndWaitReady(req);
  const workflowId = runWorkflowId(companyId, req.heartbeatRunId);
  const acquires = callsOf({ heartbeatRunId: req.heartbeatRunId }).filter((c) => c.op === 'acquire');
  expect(acquires.map((c) => [c.attempt, c.adopted, c.idempotencyKey])).toEqual([
    [1, false, workflowId],
    [2, true, workflowId],
  ]);
  expect(result.lease.providerLeaseId).toBe(`plugin://acme/vm/${req.heartbeatRunId}`);
  const dir = leaseDir(result.lease.metadata);
  expect(existsSync(dir)).toBe(true);
  await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  expect(existsSync(dir)).toBe(false);
});

it('a plugin error marked nonRetryable fails the step at once', async () => {
  const companyId = uniqueId('co');
  const env = await acmeEnvironment(companyId, { faults: { refuse: 'no capacity in region' } });
  const req = runRequest({ companyId, environmentId: env.id });
  const err = await expectRunError(h.client.startRunAndWaitReady(req), 'lease_acquire_failed');
  expect(err.message).toBe('no capacity in region');
  await runEnd(h, companyId, req.heartbeatRunId);
  expect(callsOf({ heartbeatRunId: req.heartbeatRunId }).map((c) => c.attempt)).toEqual([1]);
});

it('an environment whose plugin is not loaded fails unsupported_environment', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'elsewhere',
    driver: 'plugin',
    config: { pluginKey: 'nope', driverKey: 'vm' },
  });
  const req = runRequest({ companyId, environmentId: env.id });
  const err = await expectRunError(h.client.startRunAndWaitReady(req), 'unsupported_environment');
  expect(err.message).toBe('plugin "nope" is not loaded in this worker (loaded: acme, liar)');
  expect(err).toMatchObject({ environmentId: env.id, driver: 'plugin', provider: 'nope' });
  await runEnd(h, companyId, req.heartbeatRunId);
  expect(await h.store.listRunLeases(companyId, req.heartbeatRunId)).toEqual([]);
  expect(await h.admin.probeEnvironment(companyId, env.id)).toEqual({
    ok: false,
    diagnostics: [{ severity: 'error', message: 'plugin "nope" is not loaded in this worker (loaded: acme, liar)' }],
  });
});

it('a reply off the contract fails the step with a message naming the plugin', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'liar',
    driver: 'plugin',
    config: { pluginKey: 'liar', driverKey: 'vm' },
  });
  const req = runRequest({ companyId, environmentId: env.id });
  const err = await expectRunError(h.client.startRunAndWaitReady(req), 'lease_acquire_failed');
  expect(err.message).toMatch(/^plugin "liar" returned an invalid reply to acquire: reply\.providerLeaseId/);
  expect(err.provider).toBe('liar');
  await runEnd(h, companyId, req.heartbeatRunId);
  const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
  expect(lease).toMatchObject({ status: 'failed', providerLeaseId: null });
  await expect(h.admin.probeEnvironment(companyId, env.id)).rejects.toThrow(
    /^plugin "liar" returned an invalid reply to probe: reply\.ok/,
  );
});

it('a driver config the plugin refuses is refused when the environment is created', async () => {
  await expect(acmeEnvironment(uniqueId('co'), { label: 5 })).rejects.toThrow(
    'plugin "acme" refused the config: driverConfig.label: must be a string',
  );
  await expect(
    h.admin.createEnvironment({
      companyId: uniqueId('co'),
      name: 'acme',
      driver: 'plugin',
      config: { pluginKey: 'acme', driverKey: 'tank' },
    }),
  ).rejects.toThrow('plugin "acme" refused the config: driverKey: must be one of vm');
});

it('a duplicate plugin key, or a module that does not load, is refused at start', async () => {
  await expect(
    loadPlugins({ dataDir: h.dataDir, pluginModules: [join(outside, 'acme.mjs'), join(outside, 'acme.mjs')] }),
  ).rejects.toThrow('duplicate plugin key "acme"');
  await expect(loadPlugins({ dataDir: h.dataDir, pluginModules: [join(outside, 'missing.mjs')] })).rejects.toThrow(
    /plugin module .*missing\.mjs could not be loaded/,
  );
  const keyless = join(outside, 'keyless.mjs');
  writeFileSync(keyless, 'export const plugin = { key: "keyless", acquire: async () => ({}) };\n');
  await expect(loadPlugins({ dataDir: h.dataDir, pluginModules: [keyless] })).rejects.toThrow(
    /plugin "keyless" from .*keyless\.mjs lacks release/,
  );
});

it('a plugin that realizes: the run realizes through the plugin and gets a plugin realization record', async () => {
  const companyId = uniqueId('co');
  const env = await acmeEnvironment(companyId, { workspace: true, target: 'local' });
  const req = runRequest({ companyId, environmentId: env.id, runtimeOverlay: { provisionCommand: 'echo hi > made' } });
  const cwd = (req.workspace as { cwd: string }).cwd;
  writeFileSync(join(cwd, 'src.txt'), 'source');
  const result = await h.client.startRunAndWaitReady(req);
  expect((await h.store.getLease(companyId, result.lease.id))!.metadata).toHaveProperty('workspaceRealization');
  const record = WorkspaceRealizationRecordSchema.parse(result.workspaceRealization);
  expect(record).toMatchObject({
    driver: 'plugin',
    transport: 'plugin',
    provider: 'acme',
    providerLeaseId: result.lease.providerLeaseId,
    remote: { path: join(leaseDir(result.lease.metadata), 'ws') },
    sync: { strategy: 'provider_defined' },
    bootstrap: { command: 'echo hi > made', exitCode: 0 },
  });
  expect(readdirSync(record.remote.path).sort()).toEqual(['made', 'src.txt']);
  // The plugin's target is the realized workspace, on this host.
  expect(result.executionTarget).toMatchObject({ kind: 'local', cwd: record.remote.path });
  await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
});
