// The `envrun` CLI, built on EnvRunClient (runs) and EnvRunAdmin (environments, workspaces, leases). Every
// command takes --json. Bad input: a message naming the field, exit code 2, nothing started or written.
// bin/envrun.mjs runs main(); importing this module runs nothing.
import { Command, CommanderError } from 'commander';
import { ConfigError } from '../config.js';
import { EnvRunError, InvalidInputError, NotFoundError, RunEndedError, RunStateError } from '../errors.js';
import { addDbCommands } from './db.js';
import { addEnvironmentCommands } from './environments.js';
import { addLeaseCommands } from './leases.js';
import { addOpsCommands } from './ops.js';
import { EXIT_FAILURE, EXIT_USAGE } from './output.js';
import { addRunCommands } from './runs.js';

export function buildProgram(): Command {
  const program = new Command('envrun')
    .description('Durable environment runs for agent control planes (Temporal workflows).')
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str) })
    .showHelpAfterError(false);
  addEnvironmentCommands(program);
  addRunCommands(program);
  addLeaseCommands(program);
  addOpsCommands(program);
  addDbCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const asJson = argv.includes('--json');
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    const { exitCode, code, message } = classify(err);
    if (exitCode === 0) return 0;
    if (asJson) console.log(JSON.stringify({ error: { code, message, ...details(err) }, exitCode }, null, 2));
    // Commander printed its own usage error already.
    if (!(err instanceof CommanderError))
      console.error(`envrun: ${err instanceof EnvRunError ? `${code}: ` : ''}${message}`);
    return exitCode;
  }
}

/** How the CLI reports an error: its exit code, and a stable code and message for --json. */
function classify(err: unknown): { exitCode: number; code: string; message: string } {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof CommanderError) {
    // help/version exit 0; usage errors were already printed
    return { exitCode: err.exitCode === 0 ? 0 : EXIT_USAGE, code: 'usage', message: message.replace(/^error: /, '') };
  }
  if (err instanceof InvalidInputError) return { exitCode: EXIT_USAGE, code: err.code, message };
  if (err instanceof ConfigError) return { exitCode: EXIT_USAGE, code: 'invalid_configuration', message };
  if (err instanceof EnvRunError) return { exitCode: EXIT_FAILURE, code: err.code, message };
  if (err instanceof NotFoundError) return { exitCode: EXIT_FAILURE, code: 'not_found', message };
  if (err instanceof RunEndedError) return { exitCode: EXIT_FAILURE, code: 'run_ended', message };
  if (err instanceof RunStateError) return { exitCode: EXIT_FAILURE, code: 'invalid_state', message };
  return { exitCode: EXIT_FAILURE, code: 'error', message };
}

function details(err: unknown): Record<string, unknown> {
  if (err instanceof EnvRunError) {
    return { environmentId: err.environmentId, driver: err.driver, provider: err.provider };
  }
  if (err instanceof RunEndedError) return { outcome: err.outcome, detail: err.detail };
  return {};
}
