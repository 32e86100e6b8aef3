// Commands connect lazily, after their input was checked, and always close. Run commands need Temporal
// only; commands on environments, workspaces and leases (and exec, which runs a driver here) need the admin.
import { EnvRunAdmin } from '../admin.js';
import { loadClientConfig } from '../config.js';
import { EnvRunClient } from '../runs.js';

export async function withRuns<T>(fn: (runs: EnvRunClient) => Promise<T>): Promise<T> {
  const runs = await EnvRunClient.connect(loadClientConfig());
  try {
    return await fn(runs);
  } finally {
    await runs.close();
  }
}

export async function withAdmin<T>(fn: (admin: EnvRunAdmin) => Promise<T>): Promise<T> {
  const admin = await EnvRunAdmin.connect(loadClientConfig());
  try {
    return await fn(admin);
  } finally {
    await admin.close();
  }
}
