#!/usr/bin/env node
// The `envrun` CLI. Runs the TypeScript sources through tsx's loader, so no build step is needed.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../client/cli/index.ts');
process.exit(await main(process.argv.slice(2)));
