// The workflow bundle holds what workflow code needs and nothing heavier: the SDK evaluates its modules again
// for every workflow it creates, so a schema library pulled in through a contract costs every run CPU.
// Workflows import contracts' plain files (constants, messages, pool-messages, lease-policy), never zod's.
import { readFileSync } from 'node:fs';
import { expect, inject, it } from 'vitest';

it('the workflow bundle has no zod in it', () => {
  const bundle = readFileSync(inject('workflowBundle'), 'utf8');
  expect(bundle).toContain('environmentRun'); // the bundle is the one the workers run
  expect(bundle).toContain('warmPool');
  expect(bundle).not.toMatch(/node_modules\/zod\//);
});
