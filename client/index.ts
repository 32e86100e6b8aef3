// Everything the client folder offers, runs and administration together (inside this repository; a
// consumer imports `envrun/client` and `envrun/admin`, which keep the two apart).
export * from './public.js';
export { EnvRunAdmin } from './admin.js';
