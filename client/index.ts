export { EnvRunClient, type StartedRun } from './runs.js';
export { EnvRunAdmin } from './admin.js';
export {
  EnvRunError,
  InvalidInputError,
  NotFoundError,
  RunEndedError,
  RunStateError,
  toEnvRunError,
  type RunOutcome,
} from './errors.js';
export type * from '../contracts/index.js';
