// The store against both servers: the embedded PostgreSQL and Debian's ordinary PostgreSQL.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openDatabase } from '../../store/db.js';
import { randomUUID } from 'node:crypto';
import { Store, uniqueViolation, type EgressAuditRow } from '../../store/store.js';
import type { WorkspaceRealizationRecord, WorkspaceRealizationRequest } from '../../contracts/index.js';
import { freshDatabase, uniqueId } from '../support/harness.js';

const backends = [
  { name: 'embedded PostgreSQL', url: () => inject('embeddedPgUrl') },
  { name: 'Debian PostgreSQL (DATABASE_URL)', url: () => inject('debianPgUrl') },
];

const record = (leaseId: string, environmentId: string): WorkspaceRealizationRecord => ({
  version: 1,
  driver: 'local',
  transport: 'local',
  provider: 'local',
  environmentId,
  leaseId,
  providerLeaseId: null,
  local: { path: '/w', strategy: 'project_primary', branchName: null },
  remote: { path: '/w' },
  sync: { strategy: 'none' },
  bootstrap: { command: null, exitCode: null, durationMs: null },
  rebuild: {},
  summary: 'Local workspace realized at /w.',
});

describe.each(backends)('store on $name', ({ url }) => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let store: Store;
  beforeAll(async () => {
    const server = url();
    if (!server) throw new Error('no server URL: Debian PostgreSQL is required (apt-get install postgresql)');
    db = await freshDatabase(server);
    store = new Store(db.db);
  });
  afterAll(async () => {
    await db?.close();
  });

  it('applies migrations idempotently, also from several processes at once', async () => {
    const again = await Promise.all([openDatabase(db.url, 1), openDatabase(db.url, 1)]);
    await Promise.all(again.map((d) => d.close()));
    const tables = await db.pool.query(
      `select table_name from information_schema.tables where table_schema = 'public' order by 1`,
    );
    expect(tables.rows.map((r) => r.table_name)).toEqual([
      'activity_log',
      'command_input',
      'command_output',
      'commands',
      'egress_audit',
      'environment_leases',
      'environments',
      'execution_workspaces',
    ]);
  });

  it('ensures exactly one local environment per company under concurrent callers', async () => {
    const companyId = uniqueId('co');
    const envs = await Promise.all(Array.from({ length: 8 }, () => store.ensureLocalEnvironment(companyId)));
    expect(new Set(envs.map((e) => e.id)).size).toBe(1);
    expect(await store.listEnvironments(companyId)).toHaveLength(1);
    await expect(store.createEnvironment({ companyId, name: 'second', driver: 'local', config: {} })).rejects.toSatisfy(
      (e: unknown) => uniqueViolation(e) === 'environments_one_local_per_company',
    );
  });

  it('scopes environment reads by company', async () => {
    const env = await store.createEnvironment({ companyId: uniqueId('a'), name: 'e', driver: 'plugin', config: {} });
    expect(await store.getEnvironment(env.companyId, env.id)).toMatchObject({ id: env.id });
    expect(await store.getEnvironment(uniqueId('b'), env.id)).toBeNull();
  });

  it('never writes a second lease for one run, nor two active ephemeral leases on one execution workspace', async () => {
    const companyId = uniqueId('co');
    const env = await store.ensureLocalEnvironment(companyId);
    const ws = await store.createExecutionWorkspace({ companyId, name: 'ws', cwd: '/w' });
    const base = {
      companyId,
      environmentId: env.id,
      executionWorkspaceId: ws.id,
      issueId: null,
      leasePolicy: 'ephemeral' as const,
      provider: 'local',
      metadata: null,
      expiresAt: null,
    };
    const first = await store.insertLease({ ...base, heartbeatRunId: 'r1' });
    await expect(store.insertLease({ ...base, executionWorkspaceId: null, heartbeatRunId: 'r1' })).rejects.toSatisfy(
      (e: unknown) => uniqueViolation(e) === 'environment_leases_one_per_run',
    );
    await expect(store.insertLease({ ...base, heartbeatRunId: 'r2' })).rejects.toSatisfy(
      (e: unknown) => uniqueViolation(e) === 'environment_leases_single_flight',
    );
    // A reusable lease is not single-flight, and a released lease frees the workspace.
    await store.insertLease({ ...base, heartbeatRunId: 'r3', leasePolicy: 'reuse_by_execution_workspace' });
    await store.updateLease(first.id, { status: 'released', releasedAt: new Date() });
    await store.insertLease({ ...base, heartbeatRunId: 'r4' });
    expect((await store.listLeases(companyId, 'active')).map((l) => l.heartbeatRunId).sort()).toEqual(['r3', 'r4']);
  });

  it('refuses to delete an environment that still has leases', async () => {
    const companyId = uniqueId('co');
    const env = await store.createEnvironment({ companyId, name: 'e', driver: 'plugin', config: {} });
    await store.insertLease({
      companyId,
      environmentId: env.id,
      executionWorkspaceId: null,
      issueId: null,
      heartbeatRunId: 'r',
      leasePolicy: 'ephemeral',
      provider: null,
      metadata: null,
      expiresAt: null,
    });
    await expect(db.pool.query('delete from environments where id = $1', [env.id])).rejects.toThrow(
      /update or delete on table "environments" violates (RESTRICT setting of )?foreign key constraint/,
    );
  });

  it('writes an activity-log event once, however often it is logged', async () => {
    const companyId = uniqueId('co');
    const entry = {
      eventKey: uniqueId('ev'),
      companyId,
      actorType: 'system',
      actorId: 'envrun',
      action: 'environment.lease_acquired',
      entityType: 'environment_lease',
      entityId: 'l',
      agentId: null,
      runId: 'r',
      details: {},
    };
    const wrote = await Promise.all([store.logActivity(entry), store.logActivity(entry), store.logActivity(entry)]);
    expect(wrote.filter(Boolean)).toHaveLength(1);
    expect(await store.listActivity(companyId)).toHaveLength(1);
  });

  it('sums egress audit rows per lease, phase, host, port, verdict and reason; logs each denial once', async () => {
    const companyId = uniqueId('co');
    const heartbeatRunId = uniqueId('run');
    const leaseId = randomUUID();
    const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s));
    const row = (over: Partial<EgressAuditRow>): EgressAuditRow => ({
      companyId,
      heartbeatRunId,
      leaseId,
      environmentId: 'env-1',
      phase: 'run',
      host: 'registry.npmjs.org',
      port: 443,
      verdict: 'allowed',
      reason: null,
      connections: 1,
      bytesUp: 10,
      bytesDown: 100,
      firstAt: at(10),
      lastAt: at(11),
      ...over,
    });
    const denied = (over: Partial<EgressAuditRow> = {}) =>
      row({ host: 'evil.example', verdict: 'denied', reason: 'not_listed', bytesUp: 0, bytesDown: 0, ...over });

    // The same key twice in one batch, then again later: summed, first and last widened.
    expect(await store.recordEgress([row({}), row({ firstAt: at(5), lastAt: at(6) }), denied()])).toBe(1);
    expect(
      await store.recordEgress([
        row({ connections: 3, bytesUp: 1, bytesDown: 2, firstAt: at(20), lastAt: at(30) }),
        denied({ connections: 2, firstAt: at(40), lastAt: at(41) }),
        denied({ phase: 'provision', firstAt: at(1), lastAt: at(2) }),
        denied({ reason: 'private_address' }),
      ]),
    ).toBe(2); // the run phase's not_listed denial was logged already
    // Concurrent writers of a new denial: one activity row between them.
    const racing = await Promise.all([1, 2, 3].map(() => store.recordEgress([denied({ port: 80 })])));
    expect(racing.reduce((a, b) => a + b, 0)).toBe(1);
    await store.recordEgress([]);

    const listed = await store.listEgress(companyId, heartbeatRunId);
    expect(listed.map((e) => [e.phase, e.host, e.port, e.verdict, e.reason, e.connections])).toEqual([
      ['provision', 'evil.example', 443, 'denied', 'not_listed', 1],
      ['run', 'registry.npmjs.org', 443, 'allowed', null, 5],
      ['run', 'evil.example', 80, 'denied', 'not_listed', 3],
      ['run', 'evil.example', 443, 'denied', 'not_listed', 3],
      ['run', 'evil.example', 443, 'denied', 'private_address', 1],
    ]);
    expect(listed[1]).toMatchObject({
      leaseId,
      environmentId: 'env-1',
      bytesUp: 21,
      bytesDown: 202,
      firstAt: at(5).toISOString(),
      lastAt: at(30).toISOString(),
    });
    expect(listed[3]).toMatchObject({ firstAt: at(10).toISOString(), lastAt: at(41).toISOString() });

    const log = await store.listActivity(companyId, { action: 'environment.egress_denied' });
    expect(log).toHaveLength(4);
    expect(log.map((e) => e.details).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))).toEqual(
      [
        { phase: 'provision', port: 443, reason: 'not_listed' },
        { phase: 'run', port: 443, reason: 'not_listed' },
        { phase: 'run', port: 443, reason: 'private_address' },
        { phase: 'run', port: 80, reason: 'not_listed' },
      ].map((d) => expect.objectContaining({ ...d, host: 'evil.example', environmentId: 'env-1' })),
    );
    expect(log.every((e) => e.entityId === leaseId && e.runId === heartbeatRunId)).toBe(true);
    expect(
      await store.listActivity(companyId, { action: 'environment.egress_denied', runId: heartbeatRunId }),
    ).toHaveLength(4);

    // Scoped by company and run; a hostile host is cut to a key's length, not refused.
    expect(await store.listEgress(uniqueId('other'), heartbeatRunId)).toEqual([]);
    await store.recordEgress([denied({ host: 'x'.repeat(20_000) })]);
    expect((await store.listEgress(companyId, heartbeatRunId)).some((e) => e.host === 'x'.repeat(255))).toBe(true);
  });

  it('persists realization metadata in one transaction, merging into existing metadata, scoped by company', async () => {
    const companyId = uniqueId('co');
    const env = await store.ensureLocalEnvironment(companyId);
    const ws = await store.createExecutionWorkspace({
      companyId,
      name: 'ws',
      cwd: '/w',
      metadata: { config: { provisionCommand: 'make' } },
    });
    const lease = await store.insertLease({
      companyId,
      environmentId: env.id,
      executionWorkspaceId: ws.id,
      issueId: null,
      heartbeatRunId: 'r',
      leasePolicy: 'ephemeral',
      provider: 'local',
      metadata: { cwd: '/w' },
      expiresAt: null,
    });
    const request = { version: 1 } as unknown as WorkspaceRealizationRequest;
    // Another company's ids: nothing is written, not even the lease half.
    await expect(
      store.persistRealization({
        leaseId: lease.id,
        companyId: uniqueId('other'),
        executionWorkspaceId: ws.id,
        request,
        record: record(lease.id, env.id),
      }),
    ).rejects.toThrow(/not found/);
    const otherWs = await store.createExecutionWorkspace({ companyId: uniqueId('other'), name: 'x', cwd: '/x' });
    await expect(
      store.persistRealization({
        leaseId: lease.id,
        companyId,
        executionWorkspaceId: otherWs.id,
        request,
        record: record(lease.id, env.id),
      }),
    ).rejects.toThrow(/not found/);
    expect((await store.getLease(companyId, lease.id))!.metadata).toEqual({ cwd: '/w' });

    const stored = await store.persistRealization({
      leaseId: lease.id,
      companyId,
      executionWorkspaceId: ws.id,
      request,
      record: record(lease.id, env.id),
    });
    expect(stored.lease.metadata).toEqual({ cwd: '/w', workspaceRealization: record(lease.id, env.id) });
    expect(stored.executionWorkspace!.metadata).toEqual({
      config: { provisionCommand: 'make' },
      workspaceRealizationRequest: request,
      workspaceRealization: record(lease.id, env.id),
    });
    expect(await store.getLease(companyId, lease.id)).toEqual(stored.lease);
  });
});
