// The `envrun` CLI, built on EnvRunClient (runs) and EnvRunAdmin (environments, workspaces, leases). Every
// command takes --json. Bad input: a message naming the field, exit code 2, nothing started or written.
// bin/envrun.mjs runs main(); importing this module runs nothing.
import { Command, CommanderError } from 'commander';
import { ConfigError } from '../config.js';
import { EnvRunError, InvalidInputError, NotFoundError, RunStateError } from '../errors.js';
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
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? 0 : EXIT_USAGE; // help/version exit 0; usage errors were already printed
    }
    if (err instanceof InvalidInputError || err instanceof ConfigError) {
      console.error(`envrun: ${err.message}`);
      return EXIT_USAGE;
    }
    if (err instanceof EnvRunError) {
      console.error(`envrun: ${err.code}: ${err.message}`);
      return EXIT_FAILURE;
    }
    if (err instanceof NotFoundError || err instanceof RunStateError) {
      console.error(`envrun: ${err.message}`);
      return EXIT_FAILURE;
    }
    console.error(`envrun: ${err instanceof Error ? err.message : String(err)}`);
    return EXIT_FAILURE;
  }
}
