import { readSetting } from '../config/settings.js';
import { durationMs } from '../contracts/duration.js';
import type { ActivityDeps } from './deps.js';

/**
 * The reaper's sweep, last part: deletes the journals of commands whose lease was released longer ago than
 * ENVRUN_COMMAND_RETENTION (their output and input go with them). A running command is never deleted.
 * Returns how many were deleted.
 */
export function createDeleteExpiredCommands(deps: ActivityDeps) {
  return async function deleteExpiredCommands(): Promise<number> {
    const retentionMs = durationMs(readSetting('ENVRUN_COMMAND_RETENTION'))!;
    return deps.store.deleteExpiredCommands(retentionMs, deps.clock?.() ?? new Date());
  };
}
