// What the workflow bundle exports.
export { environmentRun } from './environment-run.js';
export { reaper } from './reaper.js';
