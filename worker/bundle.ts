// Bundles the workflow code ahead of time: production workers load the file with ENVRUN_WORKFLOW_BUNDLE
// instead of bundling at start (`npm run bundle`, or `node dist/scripts/bundle-workflows.js OUT`).
import { DefaultLogger, bundleWorkflowCode } from '@temporalio/worker';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { WORKFLOWS_PATH } from './worker.js';

export async function bundleWorkflows(outFile: string): Promise<string> {
  const { code } = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: new DefaultLogger('WARN') });
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, code);
  return outFile;
}
