// Bundles the workflow code ahead of time (production workers load it with ENVRUN_WORKFLOW_BUNDLE):
// `npm run bundle` from the sources, or `node dist/scripts/bundle-workflows.js OUT` from the build (an image).
import { DefaultLogger, bundleWorkflowCode } from '@temporalio/worker';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WORKFLOWS_PATH } from '../worker/worker.js';

export async function bundleWorkflows(outFile: string): Promise<string> {
  const { code } = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: new DefaultLogger('WARN') });
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, code);
  return outFile;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = resolve(process.argv[2] ?? 'dist/workflow-bundle.js');
  bundleWorkflows(out)
    .then((file) => console.log(`workflow bundle written to ${file}`))
    .catch((err: unknown) => {
      console.error(err);
      process.exit(1);
    });
}
