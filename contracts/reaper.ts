// What the reaper workflow returns: one entry per lease it released. A contract between the worker, which
// sweeps, and the clients that start a sweep and print its result.

export interface ReapedLease {
  leaseId: string;
  companyId: string;
  heartbeatRunId: string | null;
  reason: string;
  cleanupStatus: 'success' | 'failed';
  error: string | null;
}
