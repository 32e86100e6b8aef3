// `envrun/client`: the runs client (EnvRunClient, Temporal only: no database, driver or worker package is
// loaded with it), its configuration and the errors every envrun call throws. Environments, workspaces and
// leases are `envrun/admin`; the schemas and constants, `envrun/contracts`.
export { EnvRunClient, type EnvRunClientOptions, type EnvironmentRunWorkflow, type StartedRun } from './runs.js';
export type { ListedRun, ReadinessStats, RunFilter } from './visibility.js';
export {
  EnvRunError,
  InvalidInputError,
  NotFoundError,
  RunEndedError,
  RunFailedError,
  RunStateError,
  toRunFailedError,
  type RunOutcome,
} from './errors.js';
export { ConfigError, loadClientConfig, type ClientConfig } from './config.js';
export type * from '../contracts/index.js';
