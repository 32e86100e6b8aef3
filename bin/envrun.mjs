#!/usr/bin/env node
// The `envrun` CLI: the compiled JavaScript in dist/ (`npm run build`; `npm install` in the checkout and
// `npm pack` build it), under plain node: no TypeScript compiler at run time.
import { fileURLToPath } from 'node:url';

const CLI = new URL('../dist/client/cli/index.js', import.meta.url);
let cli;
try {
  cli = await import(CLI.href);
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes(fileURLToPath(CLI))) {
    console.error('envrun: dist/ is missing; run `npm run build` in the checkout');
    process.exit(1);
  }
  throw err;
}
process.exit(await cli.main(process.argv.slice(2)));
