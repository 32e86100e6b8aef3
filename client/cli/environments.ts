// `envrun env …` and `envrun workspace …`: a company's environments and execution workspaces. By id, always
// within --company: another company's environment is "not found", exactly like a missing one.
import type { Command } from 'commander';
import { z } from 'zod';
import { DriverSchema, ExternalId, NewExecutionWorkspaceSchema } from '../../contracts/index.js';
import { withAdmin } from './connect.js';
import { check, company, idCommand, json, localPath, parseJsonObject } from './input.js';
import { EXIT_FAILURE, print } from './output.js';

export function addEnvironmentCommands(program: Command): void {
  const env = program.command('env').description('environments').exitOverride();
  env
    .command('create')
    .description('create an environment')
    .addOption(company())
    .requiredOption('--name <name>', 'display name')
    .requiredOption('--driver <driver>', 'local | ssh | sandbox | plugin')
    .option('--config <json>', 'driver config as a JSON object')
    .option('--description <text>')
    .addOption(json())
    .action(async (o) => {
      const companyId = check(ExternalId, o.company, '--company');
      const driver = check(DriverSchema, o.driver, '--driver');
      const config = parseJsonObject(o.config, '--config') ?? {};
      const created = await withAdmin((a) =>
        a.createEnvironment({ companyId, name: o.name, driver, config, description: o.description }),
      );
      print(o, created, () => `${created.id}\t${created.driver}\t${created.name}`);
    });
  env
    .command('list')
    .description("list a company's environments")
    .addOption(company())
    .addOption(json())
    .action(async (o) => {
      const companyId = check(ExternalId, o.company, '--company');
      const list = await withAdmin((a) => a.listEnvironments(companyId));
      print(o, list, () => list.map((e) => `${e.id}\t${e.driver}\t${e.status}\t${e.name}`).join('\n') || '(none)');
    });
  env
    .command('update')
    .description("replace an environment's config")
    .argument('<id>')
    .addOption(company())
    .requiredOption('--config <json>', 'driver config as a JSON object')
    .addOption(json())
    .action(async (id: string, o) => {
      check(z.uuid(), id, 'id');
      const companyId = check(ExternalId, o.company, '--company');
      const config = parseJsonObject(o.config, '--config');
      const updated = await withAdmin((a) => a.updateEnvironment(companyId, id, { config }));
      print(o, updated, () => `${updated.id}\tupdated`);
    });
  idCommand(env, 'probe', "run the environment's probe and print its diagnostics", async (companyId, id, o) => {
    const result = await withAdmin((a) => a.probeEnvironment(companyId, id));
    print(o, result, () => [`${result.ok ? 'ok' : 'FAILED'}`, ...result.diagnostics.map((d) => `  ${d}`)].join('\n'));
    if (!result.ok) process.exitCode = EXIT_FAILURE;
  });
  idCommand(env, 'archive', 'archive an environment (no new run can lease it)', async (companyId, id, o) => {
    const archived = await withAdmin((a) => a.archiveEnvironment(companyId, id));
    print(o, archived, () => `${archived.id}\tarchived`);
  });

  const workspace = program.command('workspace').description('execution workspaces').exitOverride();
  workspace
    .command('create')
    .description('persist an execution workspace (its runtime config lives in metadata.config)')
    .addOption(company())
    .requiredOption('--name <name>')
    .requiredOption('--cwd <path>')
    .option('--config <json>', 'runtime config: {provisionCommand, teardownCommand, cleanupCommand, environmentId}')
    .addOption(json())
    .action(async (o) => {
      const companyId = check(ExternalId, o.company, '--company');
      const config = parseJsonObject(o.config, '--config');
      const cwd = localPath(o.cwd, '--cwd');
      // Checked before connecting, so bad input writes nothing.
      const input = check(NewExecutionWorkspaceSchema, { companyId, name: o.name, cwd, config }, '');
      const ws = await withAdmin((a) => a.createExecutionWorkspace(input));
      print(o, ws, () => `${ws.id}\t${ws.cwd}`);
    });
}
