// The cluster suite's one deployment (harness.ts): PostgreSQL, the Temporal server as four
// processes on it, two envrun worker hosts. It provides the same keys as test/support/global-setup.ts,
// pointing at the cluster, so the end-to-end files run unchanged against it, plus `cluster` (addresses,
// hosts) and `clusterControl`: an HTTP endpoint in this process through which fault tests kill and restart
// the cluster's parts (this process started them, so only it can start them again and stop them at the end).
import { chmodSync, cpSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import { startCluster, TEMPORAL_SERVICES, type Cluster, type ClusterState } from './harness.js';
import { SHARED_PROVIDER_MODULE } from './shared-provider.js';

export type ClusterInfo = ClusterState & { sharedSandboxes: string };

declare module 'vitest' {
  export interface ProvidedContext {
    cluster: ClusterInfo;
    clusterControl: string;
  }
}

const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/cluster-logs', import.meta.url));

/** POST /hosts/:i/kill|start, /services/:name/kill|start, /postgres/restart?downMs=N; GET /state. */
function controlServer(cluster: Cluster): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://control');
    const parts = url.pathname.split('/').filter(Boolean);
    const act = async (): Promise<void> => {
      if (req.method === 'GET' && parts[0] === 'state') return;
      if (req.method !== 'POST') throw new Error(`${req.method} ${url.pathname}: not a control action`);
      const [what, which, action] = parts;
      if (what === 'hosts' && (action === 'kill' || action === 'start')) {
        const index = Number(which);
        if (!Number.isInteger(index) || !cluster.state().hosts[index]) throw new Error(`no host ${which}`);
        return action === 'kill' ? cluster.killHost(index) : cluster.startHost(index);
      }
      if (what === 'services' && (action === 'kill' || action === 'start')) {
        const service = TEMPORAL_SERVICES.find((s) => s === which);
        if (!service) throw new Error(`no Temporal service ${which}`);
        return action === 'kill' ? cluster.killService(service) : cluster.startService(service);
      }
      if (what === 'postgres' && which === 'restart')
        return cluster.restartPostgres(Number(url.searchParams.get('downMs') ?? 3000));
      throw new Error(`unknown control action ${url.pathname}`);
    };
    act().then(
      () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(cluster.state()));
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end((err as Error).message);
      },
    );
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const address = server.address() as { port: number };
      resolve({ url: `http://127.0.0.1:${address.port}`, server });
    }),
  );
}

export default async function setup(project: TestProject) {
  const tmp = mkdtempSync(join(tmpdir(), 'envrun-cluster-test-'));
  chmodSync(tmp, 0o755); // PostgreSQL runs as the postgres user below it
  const sharedSandboxes = join(tmp, 'shared-sandboxes');
  const started = Date.now();
  let cluster: Cluster;
  try {
    cluster = await startCluster({
      dir: join(tmp, 'cluster'),
      taskQueue: 'envrun-cluster',
      hostEnv: { ENVRUN_PROVIDER_MODULES: SHARED_PROVIDER_MODULE, ENVRUN_CLUSTER_SHARED_SANDBOXES: sharedSandboxes },
    });
  } catch (err) {
    saveLogs(tmp);
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  console.error(`[cluster] up in ${Math.round((Date.now() - started) / 1000)} s`);
  const control = await controlServer(cluster);
  const state = cluster.state();
  project.provide('temporalAddress', state.temporalAddress);
  // The end-to-end files make their databases on this server; so do the fault tests' stores.
  project.provide('embeddedPgUrl', state.pgAdminUrl);
  project.provide('debianPgUrl', state.pgAdminUrl);
  project.provide('workflowBundle', state.workflowBundle);
  project.provide('tmpRoot', tmp);
  project.provide('cluster', { ...state, sharedSandboxes });
  project.provide('clusterControl', control.url);
  return async () => {
    await new Promise((r) => control.server.close(r));
    await cluster.stop().catch((e: unknown) => console.error(e));
    saveLogs(tmp);
    rmSync(tmp, { recursive: true, force: true });
  };
}

/** The servers' and hosts' logs, kept in test-artifacts/cluster-logs for a look after the run. */
function saveLogs(tmp: string): void {
  try {
    rmSync(ARTIFACTS, { recursive: true, force: true });
    cpSync(join(tmp, 'cluster', 'logs'), ARTIFACTS, { recursive: true });
  } catch {
    // no logs yet
  }
}
