export * from './constants.js';
export * from './common.js';
export * from './driver-config.js';
export * from './records.js';
export * from './target.js';
export * from './run.js';
export * from './messages.js';
export * from './activity-log.js';
