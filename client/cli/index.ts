// The `envrun` CLI, built on EnvRunClient (runs) and EnvRunAdmin (environments, workspaces, leases). Every
// command takes --json. Bad input: a message naming the field, exit code 2, nothing started or written.
// bin/envrun.mjs runs main(); importing this module runs nothing. It loads commander and the command tree
// only: a command's code, and what reports its errors, load when they are needed (commands.ts).
import { CommanderError } from 'commander';
import { buildProgram } from './commands.js';
import { EXIT_USAGE } from './output.js';

export { buildProgram };

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const asJson = argv.includes('--json');
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version exit 0; a usage error was printed by commander already
      if (err.exitCode === 0) return 0;
      const message = err.message.replace(/^error: /, '');
      if (asJson) console.log(JSON.stringify({ error: { code: 'usage', message }, exitCode: EXIT_USAGE }, null, 2));
      return EXIT_USAGE;
    }
    // A command failed: its modules, and so the error classes, are loaded already.
    const { reportError } = await import('./report.js');
    return reportError(err, asJson);
  }
}
