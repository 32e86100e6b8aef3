import type { CommandStatus, CommandSummary } from '../contracts/index.js';
import { toCommandSummary } from '../store/store.js';
import type { ActivityDeps } from './deps.js';

export interface SettleCommandInput {
  companyId: string;
  heartbeatRunId: string;
  commandId: string;
  status: Extract<CommandStatus, 'lost' | 'killed_by_release' | 'failed'>;
  error: string;
}

/**
 * Records how a command ended when its own step could not say (its worker died: `lost`; the step never
 * started it: `failed`). A command that already has an end keeps it. Null when the command has no row
 * (its step never reached the store).
 */
export function createSettleCommand(deps: ActivityDeps) {
  return async function settleCommand(input: SettleCommandInput): Promise<CommandSummary | null> {
    const row = await deps.store.getCommandRow(input);
    if (!row) return null;
    const settled = await deps.store.finishCommand(row.key, {
      status: input.status,
      exitCode: null,
      signal: null,
      timedOut: false,
      error: input.error,
    });
    return settled ? toCommandSummary(settled) : null;
  };
}
