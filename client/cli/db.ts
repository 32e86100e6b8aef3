// `envrun db …`: the embedded PostgreSQL store of ENVRUN_DATA_DIR.
import type { Command } from 'commander';
import { stopEmbeddedStore } from '../../store/embedded.js';
import { loadClientConfig } from '../config.js';

export function addDbCommands(program: Command): void {
  const db = program.command('db').description('the embedded PostgreSQL store').exitOverride();
  db.command('stop')
    .description('stop the embedded PostgreSQL server of ENVRUN_DATA_DIR')
    .action(async () => {
      const stopped = await stopEmbeddedStore(loadClientConfig().dataDir);
      console.log(stopped ? 'stopped' : 'not running');
    });
}
