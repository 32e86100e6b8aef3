// What the cluster's fault tests share: the control endpoint, and a client, an admin and a store on the
// cluster's worker hosts (their task queue, their database, the shared sandbox provider).
import { Client, Connection } from '@temporalio/client';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { inject } from 'vitest';
import { EnvRunAdmin } from '../../client/admin.js';
import { EnvRunClient } from '../../client/runs.js';
import { runWorkflowId } from '../../contracts/index.js';
import { createProviders } from '../../drivers/providers/load.js';
import { createDrivers } from '../../drivers/registry.js';
import { openDatabase } from '../../store/db.js';
import { Store } from '../../store/store.js';
import type { ClusterInfo } from './global-setup.js';
import { createSharedProvider } from './shared-provider.js';

/** Asks the global setup to act on the cluster (`hosts/0/kill`, `services/history/start`, …); its state after. */
export async function control(action: string): Promise<ClusterInfo> {
  const res = await fetch(`${inject('clusterControl')}/${action}`, { method: 'POST' });
  if (!res.ok) throw new Error(`cluster control ${action}: ${await res.text()}`);
  return { ...((await res.json()) as ClusterInfo), sharedSandboxes: inject('cluster').sharedSandboxes };
}

/** The cluster as it is now: its hosts' current pids (another file may have killed and started one). */
export async function clusterState(): Promise<ClusterInfo> {
  const res = await fetch(`${inject('clusterControl')}/state`);
  if (!res.ok) throw new Error(`cluster state: ${await res.text()}`);
  return { ...((await res.json()) as ClusterInfo), sharedSandboxes: inject('cluster').sharedSandboxes };
}

export interface ClusterClients {
  client: EnvRunClient;
  admin: EnvRunAdmin;
  store: Store;
  /** The shared provider's root: the audit's `fakeRoot`. */
  fakeRoot: string;
  /** The workflow's pending realize activity and the identity (`pid@host`) of the worker running it. */
  realizingOn(companyId: string, runId: string): Promise<string | null>;
  /** The identity of the worker whose realize attempt the run's history records (the last one, that ended). */
  realizedBy(companyId: string, runId: string): Promise<string | null>;
  close(): Promise<void>;
}

export async function clusterClients(): Promise<ClusterClients> {
  const cluster = inject('cluster');
  const connection = await Connection.connect({ address: cluster.temporalAddress });
  const client = new EnvRunClient({
    client: new Client({ connection, namespace: cluster.namespace }),
    taskQueue: cluster.taskQueue,
    runDefaults: { awaitRetryMs: 0 },
  });
  const database = await openDatabase(cluster.databaseUrl, 5);
  const store = new Store(database.db);
  const providers = createProviders({ dataDir: mkdtempSync(join(inject('tmpRoot'), 'admin-')) });
  providers.register(createSharedProvider(cluster.sharedSandboxes));
  const admin = new EnvRunAdmin({ runs: client, store, drivers: createDrivers(providers) });
  return {
    client,
    admin,
    store,
    fakeRoot: cluster.sharedSandboxes,
    async realizingOn(companyId, runId) {
      const description = await client.temporal.workflow.getHandle(runWorkflowId(companyId, runId)).describe();
      const pending = description.raw.pendingActivities?.find((a) => a.activityType?.name === 'prepareWorkspace');
      return pending?.lastStartedTime && pending.lastWorkerIdentity ? pending.lastWorkerIdentity : null;
    },
    async realizedBy(companyId, runId) {
      const history = await client.temporal.workflow.getHandle(runWorkflowId(companyId, runId)).fetchHistory();
      const types = new Map<string, string>();
      let identity: string | null = null;
      for (const e of history.events ?? []) {
        const scheduled = e.activityTaskScheduledEventAttributes;
        if (scheduled) types.set(String(e.eventId), scheduled.activityType?.name ?? '');
        const started = e.activityTaskStartedEventAttributes;
        if (started && types.get(String(started.scheduledEventId)) === 'prepareWorkspace')
          identity = started.identity ?? null;
      }
      return identity;
    },
    async close() {
      await connection.close();
      await database.close();
    },
  };
}
