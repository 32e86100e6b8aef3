// Commands connect lazily, after their input was checked, and always close. Run commands need Temporal
// only; commands on environments, workspaces and leases need the admin (the store). Both are loaded when a
// command first needs them, so `envrun --help` and bad input never load the Temporal client or pg.
import type { EnvRunAdmin } from '../admin.js';
import { loadClientConfig } from '../config.js';
import type { EnvRunClient } from '../runs.js';

export async function withRuns<T>(fn: (runs: EnvRunClient) => Promise<T>): Promise<T> {
  const { EnvRunClient } = await import('../runs.js');
  const runs = await EnvRunClient.connect(loadClientConfig());
  try {
    return await fn(runs);
  } finally {
    await runs.close();
  }
}

export async function withAdmin<T>(fn: (admin: EnvRunAdmin) => Promise<T>): Promise<T> {
  const { EnvRunAdmin } = await import('../admin.js');
  const admin = await EnvRunAdmin.connect(loadClientConfig());
  try {
    return await fn(admin);
  } finally {
    await admin.close();
  }
}
