// `envrun db …`: the embedded PostgreSQL store of ENVRUN_DATA_DIR. Declared in commands.ts.
import { loadClientConfig } from '../config.js';
import { print, type Output } from './output.js';

export async function stopStore(o: Output): Promise<void> {
  const { stopEmbeddedStore } = await import('../../store/embedded.js');
  const stopped = await stopEmbeddedStore(loadClientConfig().dataDir);
  print(o, { stopped }, () => (stopped ? 'stopped' : 'not running'));
}
