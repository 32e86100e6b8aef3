export { EnvRunClient, type StartedRun } from './client.js';
export { EnvRunError, InvalidInputError, NotFoundError, RunEndedError, RunStateError, toEnvRunError, type RunOutcome } from './errors.js';
export type * from '../contracts/index.js';
