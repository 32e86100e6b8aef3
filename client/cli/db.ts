// `envrun db …`: the embedded PostgreSQL store of ENVRUN_DATA_DIR.
import type { Command } from 'commander';
import { loadClientConfig } from '../config.js';
import { json } from './input.js';
import { print, type Output } from './output.js';

export function addDbCommands(program: Command): void {
  const db = program.command('db').description('the embedded PostgreSQL store').exitOverride();
  db.command('stop')
    .description('stop the embedded PostgreSQL server of ENVRUN_DATA_DIR')
    .addOption(json())
    .action(async (o: Output) => {
      const { stopEmbeddedStore } = await import('../../store/embedded.js');
      const stopped = await stopEmbeddedStore(loadClientConfig().dataDir);
      print(o, { stopped }, () => (stopped ? 'stopped' : 'not running'));
    });
}
