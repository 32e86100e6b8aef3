// `npm run bundle` from the sources, or `node dist/scripts/bundle-workflows.js OUT` from the build (an image):
// writes the workflow bundle production workers load (worker/bundle.ts).
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflows } from '../worker/bundle.js';

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = resolve(process.argv[2] ?? 'dist/workflow-bundle.js');
  bundleWorkflows(out)
    .then((file) => console.log(`workflow bundle written to ${file}`))
    .catch((err: unknown) => {
      console.error(err);
      process.exit(1);
    });
}
