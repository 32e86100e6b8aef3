import type { EgressConfig, EgressPhase } from '../../contracts/egress.js';

export type { EgressAuditRow } from '../../contracts/egress.js';

/** Opens and closes the egress routes of sandbox leases on the worker's proxy. */
export interface EgressBroker {
  /** Opens (or replaces) the route of one lease's phase; returns the folder to bind at /run/envrun/egress. */
  open(input: {
    providerLeaseId: string;
    leaseId: string;
    companyId: string;
    heartbeatRunId: string;
    environmentId: string;
    phase: EgressPhase;
    egress: EgressConfig;
  }): Promise<{ socketDir: string; caCertPem: string | null }>;
  /** Closes every phase of the lease; at release/destroy. */
  close(providerLeaseId: string): Promise<void>;
  stop(): Promise<void>;
}
