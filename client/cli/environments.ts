// `envrun env …` and `envrun workspace …`: a company's environments and execution workspaces. By id, always
// within --company: another company's environment is "not found", exactly like a missing one. The commands
// and their options are declared in commands.ts.
import { DriverSchema, ExternalId, NewExecutionWorkspaceSchema } from '../../contracts/index.js';
import { withAdmin } from './connect.js';
import { check, checkId, localPath, parseJsonObject, type IdOptions } from './input.js';
import { EXIT_FAILURE, print, type Output } from './output.js';

interface EnvironmentOptions extends Output {
  company: string;
  name: string;
  driver: string;
  config?: string;
  description?: string;
}

export async function createEnvironment(o: EnvironmentOptions): Promise<void> {
  const companyId = check(ExternalId, o.company, '--company');
  const driver = check(DriverSchema, o.driver, '--driver');
  const config = parseJsonObject(o.config, '--config') ?? {};
  const created = await withAdmin((a) =>
    a.createEnvironment({ companyId, name: o.name, driver, config, description: o.description }),
  );
  print(o, created, () => `${created.id}\t${created.driver}\t${created.name}`);
}

export async function listEnvironments(o: Output & { company: string }): Promise<void> {
  const companyId = check(ExternalId, o.company, '--company');
  const list = await withAdmin((a) => a.listEnvironments(companyId));
  print(o, list, () => list.map((e) => `${e.id}\t${e.driver}\t${e.status}\t${e.name}`).join('\n') || '(none)');
}

export async function updateEnvironment(id: string, o: IdOptions & { config: string }): Promise<void> {
  const { companyId } = checkId(id, o);
  const config = parseJsonObject(o.config, '--config');
  const updated = await withAdmin((a) => a.updateEnvironment(companyId, id, { config }));
  print(o, updated, () => `${updated.id}\tupdated`);
}

export async function probeEnvironment(id: string, o: IdOptions): Promise<void> {
  const { companyId } = checkId(id, o);
  const result = await withAdmin((a) => a.probeEnvironment(companyId, id));
  print(o, result, () =>
    [
      `${result.ok ? 'ok' : 'FAILED'}${result.summary ? `: ${result.summary}` : ''}`,
      ...result.diagnostics.map((d) => `  ${d.severity.padEnd(7)}  ${d.message}${d.code ? ` (${d.code})` : ''}`),
    ].join('\n'),
  );
  if (!result.ok) process.exitCode = EXIT_FAILURE;
}

/** The environment's warm pool as its workflow sees it; exit 1 when the environment has no pool running. */
export async function showPool(id: string, o: IdOptions): Promise<void> {
  const { companyId } = checkId(id, o);
  const pool = await withAdmin((a) => a.getPool(companyId, id));
  print(o, pool, () =>
    pool
      ? [
          `size ${pool.size}\tfilled ${pool.filled}\ttaken ${pool.taken}\tretired ${pool.retired}`,
          `fingerprint ${pool.fingerprint ?? '-'}`,
          ...(pool.note ? [`note: ${pool.note}`] : []),
          ...pool.members.map((m) => `${m.leaseId}\t${m.state}\t${m.hostId ?? '-'}\t${m.readyAt ?? '-'}`),
        ].join('\n')
      : 'no warm pool runs for this environment',
  );
  if (!pool) process.exitCode = EXIT_FAILURE;
}

export async function archiveEnvironment(id: string, o: IdOptions): Promise<void> {
  const { companyId } = checkId(id, o);
  const archived = await withAdmin((a) => a.archiveEnvironment(companyId, id));
  const kept = archived.keptResources;
  print(o, archived, () =>
    [
      kept.destroyed + kept.failed + kept.skippedLive === 0
        ? `${archived.id}\tarchived`
        : `${archived.id}\tarchived\tkept resources: ${kept.destroyed} destroyed, ${kept.failed} failed, ${kept.skippedLive} in use`,
      ...kept.failures.map((f) => `  lease ${f.leaseId} (${f.providerLeaseId ?? 'no provider lease'}): ${f.error}`),
    ].join('\n'),
  );
  // What could not be destroyed is left to the reaper; the archive itself is done.
  if (kept.failed > 0) process.exitCode = EXIT_FAILURE;
}

export async function createWorkspace(
  o: Output & { company: string; name: string; cwd: string; config?: string },
): Promise<void> {
  const companyId = check(ExternalId, o.company, '--company');
  const config = parseJsonObject(o.config, '--config');
  const cwd = localPath(o.cwd, '--cwd');
  // Checked before connecting, so bad input writes nothing.
  const input = check(NewExecutionWorkspaceSchema, { companyId, name: o.name, cwd, config }, '');
  const ws = await withAdmin((a) => a.createExecutionWorkspace(input));
  print(o, ws, () => `${ws.id}\t${ws.cwd}`);
}
