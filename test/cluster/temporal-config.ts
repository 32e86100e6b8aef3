// The Temporal server's configuration in the cluster: one process per service, each with its own ports, all on
// the cluster's PostgreSQL.
import { createServer } from 'node:net';

export const TEMPORAL_SERVICES = ['frontend', 'history', 'matching', 'worker'] as const;
export type TemporalService = (typeof TEMPORAL_SERVICES)[number];

/** Temporal's database role, made by the harness (the PostgreSQL image's superuser in docker-compose.yml). */
export const TEMPORAL_DB_USER = 'temporal';
export const TEMPORAL_DB_PASSWORD = 'temporal';

export interface ServicePorts {
  grpc: number;
  membership: number;
  metrics: number;
}

/** The server configuration of one service process (config/development-postgres12.yaml, adapted). */
export function serverConfig(o: {
  pgPort: number;
  ports: Record<TemporalService, ServicePorts>;
  frontendHttpPort: number;
  metricsPort: number;
  dynamicConfig: string;
}): string {
  const datastore = (database: string, maxConns: number) => `
      sql:
        pluginName: "postgres12"
        databaseName: "${database}"
        connectAddr: "127.0.0.1:${o.pgPort}"
        connectProtocol: "tcp"
        user: "${TEMPORAL_DB_USER}"
        password: "${TEMPORAL_DB_PASSWORD}"
        maxConns: ${maxConns}
        maxIdleConns: ${maxConns}
        maxConnLifetime: "1h"`;
  const service = (name: TemporalService) => `
  ${name}:
    rpc:
      grpcPort: ${o.ports[name].grpc}
      membershipPort: ${o.ports[name].membership}
      bindOnLocalHost: true${name === 'frontend' ? `\n      httpPort: ${o.frontendHttpPort}` : ''}`;
  return `# Written by test/cluster/harness.ts for one service process.
log:
  stdout: true
  level: warn

persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: 4
  datastores:
    postgres-default:${datastore('temporal', 10)}
    postgres-visibility:${datastore('temporal_visibility', 5)}

global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: "127.0.0.1"
  pprof:
    port: 0
  metrics:
    prometheus:
      framework: "tally"
      timerType: "histogram"
      listenAddress: "127.0.0.1:${o.metricsPort}"

services:${TEMPORAL_SERVICES.map(service).join('')}

clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: "active"
  currentClusterName: "active"
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: "frontend"
      rpcAddress: "127.0.0.1:${o.ports.frontend.grpc}"
      httpAddress: "127.0.0.1:${o.frontendHttpPort}"

dcRedirectionPolicy:
  policy: "noop"

archival:
  history:
    state: "disabled"
  visibility:
    state: "disabled"

namespaceDefaults:
  archival:
    history:
      state: "disabled"
    visibility:
      state: "disabled"

dynamicConfigClient:
  filepath: "${o.dynamicConfig}"
  pollInterval: "10s"
`;
}

/**
 * A free port for ringpop membership. The SQL schema keeps it in a smallint (cluster_membership.rpc_port), so
 * it must be below 32768, under the OS's ephemeral range: picked at random there and tried.
 */
export async function freeMembershipPort(taken: Set<number>): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (taken.has(port)) continue;
    const free = await new Promise<boolean>((res) => {
      const srv = createServer();
      srv.once('error', () => res(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
    });
    if (free) {
      taken.add(port);
      return port;
    }
  }
  throw new Error('no free port between 20000 and 32000 for Temporal membership');
}
