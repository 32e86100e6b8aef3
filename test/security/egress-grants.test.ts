// The secrets an egress proxy injects (`config.egress.inject[i].secret`) are held to the deployment's secret
// grants like an SSH key: refused when an environment is created or updated, and again when a run acquires
// its lease (a row written around the admin API, or a grant revoked since), naming the field.
import { MockActivityEnvironment } from '@temporalio/testing';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities/index.js';
import { EnvRunAdmin } from '../../client/admin.js';
import { InvalidInputError } from '../../client/errors.js';
import { loadTenancy } from '../../config/tenancy.js';
import { RunRequestSchema, type EnvironmentLease } from '../../contracts/index.js';
import { createProviders } from '../../drivers/providers/load.js';
import { createDrivers } from '../../drivers/registry.js';
import { Store } from '../../store/store.js';
import { freshDatabase, uniqueId } from '../support/harness.js';

const base = mkdtempSync(join(inject('tmpRoot'), 'egress-grants-'));
const A = uniqueId('co-a');
const B = uniqueId('co-b');
const tenancy = loadTenancy({ ENVRUN_SECRET_GRANTS: JSON.stringify({ [A]: ['env:ENVRUN_TEST_GH_TOKEN_OF_A'] }) });

const config = (...secrets: string[]) => ({
  provider: 'bubblewrap',
  network: 'allowlist',
  egress: {
    allow: ['api.github.com:443', 'registry.npmjs.org:443'],
    inject: secrets.map((secret, i) => ({
      host: i === 0 ? 'api.github.com' : 'registry.npmjs.org',
      header: 'authorization',
      value: 'Bearer {secret}',
      secret,
    })),
  },
});

let db: Awaited<ReturnType<typeof freshDatabase>>;
let store: Store;
const drivers = createDrivers(createProviders({ dataDir: join(base, 'data') }));
beforeAll(async () => {
  db = await freshDatabase();
  store = new Store(db.db);
});
afterAll(async () => {
  await db?.close();
});

describe('egress inject secrets: checked against the grants', () => {
  it('the admin API refuses an ungranted secret at create and at update, naming the entry', async () => {
    // Every refusal comes before anything is written or started; a write tells the environment's warm pool
    // workflow (none here), which is all the admin asks of Temporal.
    const noPool = { temporal: { workflow: { getHandle: () => ({ signal: () => Promise.resolve() }) } } };
    const admin = new EnvRunAdmin({ runs: noPool as never, store, drivers, tenancy });
    const create = (companyId: string, cfg: unknown) =>
      admin.createEnvironment({ companyId, name: 'bw', driver: 'sandbox', config: cfg });
    const ofB = await create(B, config('env:ENVRUN_TEST_GH_TOKEN_OF_A')).catch((e: unknown) => e);
    expect(ofB).toBeInstanceOf(InvalidInputError);
    expect((ofB as Error).message).toMatch(
      /^config\.egress\.inject\[0\]\.secret: env:ENVRUN_TEST_GH_TOKEN_OF_A is not granted to company co-b-/,
    );
    await expect(create(A, config('env:ENVRUN_TEST_GH_TOKEN_OF_A', 'file:/etc/shadow'))).rejects.toThrow(
      /config\.egress\.inject\[1\]\.secret: file:\/etc\/shadow is not granted/,
    );
    expect(await store.listEnvironments(A)).toEqual([]);
    expect(await store.listEnvironments(B)).toEqual([]);

    // Granted: written; an update that adds an ungranted one is refused and changes nothing.
    const env = (await create(A, config('env:ENVRUN_TEST_GH_TOKEN_OF_A'))) as { id: string };
    await expect(
      admin.updateEnvironment(A, env.id, { config: config('env:ENVRUN_TEST_GH_TOKEN_OF_A', 'env:HOME') }),
    ).rejects.toThrow(/config\.egress\.inject\[1\]\.secret: env:HOME is not granted/);
    const stored = await store.getEnvironment(A, env.id);
    expect((stored!.config.egress as { inject: unknown[] }).inject).toHaveLength(1);
  });

  it('a run on an environment written around the admin API fails at acquire before any lease is made', async () => {
    const acquire = (companyId: string, environmentId: string): Promise<EnvironmentLease> =>
      new MockActivityEnvironment({
        attempt: 1,
        workflowExecution: { workflowId: `wf-${companyId}`, runId: 'r' },
      } as never).run(createActivities({ store, drivers, tenancy }).acquireLease, {
        request: RunRequestSchema.parse({
          companyId,
          heartbeatRunId: 'run-egress',
          environmentId,
          workspace: { baseCwd: base, cwd: base },
        }),
        environmentId,
      }) as Promise<EnvironmentLease>;
    const planted = await store.createEnvironment({
      companyId: B,
      name: 'planted',
      driver: 'sandbox',
      config: config('env:ENVRUN_TEST_GH_TOKEN_OF_A'),
    });
    await expect(acquire(B, planted.id)).rejects.toMatchObject({
      type: 'unsupported_environment',
      message: expect.stringMatching(
        /config\.egress\.inject\[0\]\.secret: env:ENVRUN_TEST_GH_TOKEN_OF_A is not granted to company co-b-/,
      ),
    });
    expect(await store.listLeases(B)).toEqual([]);
  });
});
