// What the workflow bundle exports.
export { capacityGate } from './capacity-gate.js';
export { environmentRun } from './environment-run.js';
export { reaper } from './reaper.js';
export { leaseOperation } from './lease-operation.js';
export { warmPool } from './warm-pool.js';
