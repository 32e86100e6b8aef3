// The store: queries over the envrun tables, one file for each thing they touch (environments.ts,
// workspaces.ts, leases.ts, pool.ts, activity-log.ts, commands.ts, egress.ts), assembled here into the one
// Store the rest of the code uses.
// Every read is scoped by company; rows leave as contract records.
import { activityLogQueries } from './activity-log.js';
import { commandQueries } from './commands.js';
import type { Db } from './db.js';
import { egressQueries } from './egress.js';
import { environmentQueries } from './environments.js';
import { leaseQueries } from './leases.js';
import { poolQueries } from './pool.js';
import { workspaceQueries } from './workspaces.js';

export { uniqueViolation } from './base.js';
export { toActivityLogEntry, type NewActivity } from './activity-log.js';
export { toEnvironment, type NewEnvironment } from './environments.js';
export { toLease, type NewLease } from './leases.js';
export {
  CONTROL_CHANNEL,
  OUTPUT_CHANNEL,
  STREAM_CODES,
  startKeyOf,
  toCommandSummary,
  type CommandRef,
  type CommandRow,
  type JournalCounts,
} from './commands.js';
export { toExecutionWorkspace, type NewExecutionWorkspace } from './workspaces.js';
export { egressDeniedKey, type EgressAuditEntry, type EgressAuditRow } from './egress.js';

class Database {
  constructor(readonly db: Db) {}
}

export class Store extends egressQueries(
  poolQueries(commandQueries(activityLogQueries(leaseQueries(workspaceQueries(environmentQueries(Database)))))),
) {
  constructor(db: Db) {
    super(db);
  }
}
