import type { ActivityLogRow } from '../contracts/index.js';
import type { ActivityDeps } from './deps.js';

/** Writes one activity-log row built by `leaseEventRow`; the same event key twice leaves one row. */
export function createLogActivity(deps: ActivityDeps) {
  return async function logActivity(row: ActivityLogRow): Promise<void> {
    await deps.store.logActivity(row);
  };
}
