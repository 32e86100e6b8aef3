export { EnvRunClient, type StartedRun } from './client.js';
export { EnvRunError, InvalidInputError, NotFoundError, toEnvRunError } from './errors.js';
export type * from '../contracts/index.js';
