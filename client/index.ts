export { EnvRunClient, type StartedRun } from './client.js';
export { EnvRunError, InvalidInputError, NotFoundError, RunStateError, toEnvRunError } from './errors.js';
export type * from '../contracts/index.js';
