// The `envrun` CLI, built on EnvRunClient. Every command takes --json. Bad input: a message naming the
// field, exit code 2, nothing started or written. bin/envrun.mjs runs main(); importing this module runs nothing.
import { Command, CommanderError, Option } from 'commander';
import { resolve } from 'node:path';
import { z } from 'zod';
import { stopEmbeddedStore } from '../store/embedded.js';
import {
  DriverSchema, ErrorCodeSchema, ExternalId, NewExecutionWorkspaceSchema, RunPhaseSchema, RunRequestSchema, describeZodError, type RunRequestInput,
} from '../contracts/index.js';
import { ConfigError, loadConfig } from '../worker/config.js';
import { EnvRunClient } from './client.js';
import { EnvRunError, InvalidInputError, NotFoundError, RunStateError } from './errors.js';

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

function fail(field: string, message: string): never {
  throw new InvalidInputError(`${field}: ${message}`);
}

function check<S extends z.ZodType>(schema: S, value: unknown, field: string): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new InvalidInputError(describeZodError(r.error, field));
  return r.data;
}

function parseJsonObject(text: string | undefined, field: string): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    fail(field, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(field, 'must be a JSON object');
  return value as Record<string, unknown>;
}

/** Milliseconds as typed: digits only ('' or ' ' is not 0, nor is 0x10 sixteen). */
const millis = (min: number) => z.string().regex(/^\d+$/, 'must be a whole number of milliseconds').transform(Number).pipe(z.number().int().min(min));

/** A path on this machine, resolved against the current directory; an empty one is a mistake, not ".". */
function localPath(value: string, field: string): string {
  if (value === '') fail(field, 'must not be empty');
  return resolve(value);
}

function parseEnvAssignments(values: string[] | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const item of values ?? []) {
    const eq = item.indexOf('=');
    if (eq <= 0) fail('--env-var', `"${item}" must be NAME=VALUE`);
    env[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return env;
}

interface Output {
  json: boolean;
}

function print(opts: Output, value: unknown, human: () => string): void {
  console.log(opts.json ? JSON.stringify(value, null, 2) : human());
}

/** Connects lazily, after the input was checked, and always closes. */
async function withClient<T>(fn: (client: EnvRunClient) => Promise<T>): Promise<T> {
  const client = await EnvRunClient.connect(loadConfig());
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

const company = () => new Option('--company <id>', 'company id').makeOptionMandatory();
const runOpt = () => new Option('--run <id>', 'heartbeat run id').makeOptionMandatory();
const json = () => new Option('--json', 'print JSON');

export function buildProgram(): Command {
  const program = new Command('envrun')
    .description('Durable environment runs for agent control planes (Temporal workflows).')
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str) })
    .showHelpAfterError(false);

  // ---- env --------------------------------------------------------------------------------------
  const env = program.command('env').description('environments').exitOverride();
  env.command('create').description('create an environment')
    .addOption(company()).requiredOption('--name <name>', 'display name')
    .requiredOption('--driver <driver>', 'local | ssh | sandbox | plugin')
    .option('--config <json>', 'driver config as a JSON object').option('--description <text>')
    .addOption(json())
    .action(async (o) => {
      const companyId = check(ExternalId, o.company, '--company');
      const driver = check(DriverSchema, o.driver, '--driver');
      const config = parseJsonObject(o.config, '--config') ?? {};
      const created = await withClient((c) => c.createEnvironment({ companyId, name: o.name, driver, config, description: o.description }));
      print(o, created, () => `${created.id}\t${created.driver}\t${created.name}`);
    });
  env.command('list').description('list a company\'s environments').addOption(company()).addOption(json())
    .action(async (o) => {
      const companyId = check(ExternalId, o.company, '--company');
      const list = await withClient((c) => c.listEnvironments(companyId));
      print(o, list, () => list.map((e) => `${e.id}\t${e.driver}\t${e.status}\t${e.name}`).join('\n') || '(none)');
    });
  // By id, always within --company: another company's environment is "not found", exactly like a missing one.
  env.command('update').description('replace an environment\'s config').argument('<id>').addOption(company())
    .requiredOption('--config <json>', 'driver config as a JSON object').addOption(json())
    .action(async (id: string, o) => {
      check(z.uuid(), id, 'id');
      const companyId = check(ExternalId, o.company, '--company');
      const config = parseJsonObject(o.config, '--config');
      const updated = await withClient((c) => c.updateEnvironment(companyId, id, { config }));
      print(o, updated, () => `${updated.id}\tupdated`);
    });
  env.command('probe').description('run the environment\'s probe and print its diagnostics').argument('<id>').addOption(company()).addOption(json())
    .action(async (id: string, o) => {
      check(z.uuid(), id, 'id');
      const companyId = check(ExternalId, o.company, '--company');
      const result = await withClient((c) => c.probeEnvironment(companyId, id));
      print(o, result, () => [`${result.ok ? 'ok' : 'FAILED'}`, ...result.diagnostics.map((d) => `  ${d}`)].join('\n'));
      if (!result.ok) process.exitCode = EXIT_FAILURE;
    });
  env.command('archive').description('archive an environment (no new run can lease it)').argument('<id>').addOption(company()).addOption(json())
    .action(async (id: string, o) => {
      check(z.uuid(), id, 'id');
      const companyId = check(ExternalId, o.company, '--company');
      const archived = await withClient((c) => c.archiveEnvironment(companyId, id));
      print(o, archived, () => `${archived.id}\tarchived`);
    });

  // ---- workspace --------------------------------------------------------------------------------
  const workspace = program.command('workspace').description('execution workspaces').exitOverride();
  workspace.command('create').description('persist an execution workspace (its runtime config lives in metadata.config)')
    .addOption(company()).requiredOption('--name <name>').requiredOption('--cwd <path>')
    .option('--config <json>', 'runtime config: {provisionCommand, teardownCommand, cleanupCommand, environmentId}')
    .addOption(json())
    .action(async (o) => {
      const companyId = check(ExternalId, o.company, '--company');
      const config = parseJsonObject(o.config, '--config');
      const cwd = localPath(o.cwd, '--cwd');
      const input = check(NewExecutionWorkspaceSchema, { companyId, name: o.name, cwd, config }, ''); // before connecting
      const ws = await withClient((c) => c.createExecutionWorkspace(input));
      print(o, ws, () => `${ws.id}\t${ws.cwd}`);
    });

  // ---- run --------------------------------------------------------------------------------------
  const run = program.command('run').description('environment runs').exitOverride();
  run.command('start').description('start a run (and with --wait, wait for its execution target)')
    .addOption(company()).addOption(runOpt())
    .option('--env <id>', 'environment id (default: the company\'s local environment)')
    .requiredOption('--cwd <path>', 'the workspace on this machine')
    .option('--adapter <type>', 'agent adapter type', 'process')
    .option('--provision <cmd>', 'provision command run in the realized workspace')
    .option('--workspace <id>', 'persisted execution workspace id')
    .option('--issue <id>', 'issue id')
    .addOption(new Option('--lease-policy <policy>').choices(['ephemeral', 'reuse_by_environment', 'reuse_by_execution_workspace', 'retain_on_failure']))
    .option('--worktree <path>', 'realize as a git worktree at this path (needs --branch)')
    .option('--branch <name>', 'branch of the git worktree')
    .option('--await-retry-ms <ms>', 'how long a failed realization waits in awaiting_retry for an operator (0: fail at once)')
    .option('--lease-ttl-ms <ms>', 'a ready run not renewed or completed within this time expires')
    .option('--wait', 'wait until ready and print the execution target')
    .addOption(json())
    .action(async (o) => {
      const cwd = localPath(o.cwd, '--cwd');
      const worktree = o.worktree === undefined ? undefined : localPath(o.worktree, '--worktree');
      const request: RunRequestInput = {
        companyId: o.company, heartbeatRunId: o.run, environmentId: o.env ?? null,
        executionWorkspaceId: o.workspace ?? null, issueId: o.issue ?? null, adapterType: o.adapter,
        leasePolicy: o.leasePolicy ?? null,
        workspace: worktree
          ? { baseCwd: cwd, cwd: worktree, strategy: 'git_worktree', worktreePath: worktree, branchName: o.branch ?? null }
          : { baseCwd: cwd, cwd },
        runtimeOverlay: o.provision ? { provisionCommand: o.provision } : {},
        ...(o.awaitRetryMs !== undefined ? { awaitRetryMs: check(millis(0), o.awaitRetryMs, '--await-retry-ms') } : {}),
        ...(o.leaseTtlMs !== undefined ? { leaseTtlMs: check(millis(1000), o.leaseTtlMs, '--lease-ttl-ms') } : {}),
      };
      if (worktree && !o.branch) fail('--branch', 'required with --worktree');
      check(ExternalId, o.company, '--company');
      check(ExternalId, o.run, '--run');
      check(RunRequestSchema, request, 'request'); // before connecting: bad input starts nothing
      await withClient(async (c) => {
        if (o.wait) {
          const result = await c.startRunAndWaitReady(request);
          print(o, result, () => `ready\t${JSON.stringify(result.executionTarget)}`);
        } else {
          const started = await c.startRun(request);
          print(o, started, () => `${started.started ? 'started' : 'exists'}\t${started.workflowId}`);
        }
      });
    });
  run.command('status').description('phase, lease, target and error of a run').addOption(company()).addOption(runOpt()).addOption(json())
    .action(async (o) => {
      const [companyId, runId] = [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
      const state = await withClient((c) => c.getRun(companyId, runId));
      if (!state) throw new NotFoundError(`run ${runId} of company ${companyId} not found`);
      print(o, state, () => [
        `phase\t${state.phase}`,
        `workflow\t${state.workflowId}`,
        `environment\t${state.environmentId ?? '-'} (${state.driver ?? '-'})`,
        `lease\t${state.leaseId ?? '-'}`,
        `target\t${state.result ? JSON.stringify(state.result.executionTarget) : '-'}`,
        ...(state.error ? [`error\t${state.error.code}: ${state.error.message}`] : []),
      ].join('\n'));
    });
  run.command('complete').description('the agent is done: release the lease').addOption(company()).addOption(runOpt())
    .option('--failed', 'the agent failed').option('--reason <text>', 'failure reason (with --failed)').addOption(json())
    .action(async (o) => {
      const [companyId, runId] = [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
      if (o.reason && !o.failed) fail('--reason', 'only with --failed');
      const state = await withClient((c) => c.completeRun(companyId, runId, { status: o.failed ? 'failed' : 'succeeded', failureReason: o.reason ?? null }));
      print(o, state, () => `${state.phase}\t${state.releasedLeases.map((l) => `${l.id}:${l.status}`).join(' ')}`);
      if (state.error) throw new EnvRunError(state.error);
    });
  run.command('renew').description('the control plane is alive: push the lease\'s expiry out by its TTL')
    .addOption(company()).addOption(runOpt()).addOption(json())
    .action(async (o) => {
      const [companyId, runId] = [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
      const state = await withClient((c) => c.renewRun(companyId, runId));
      print(o, state, () => `renewed\texpires ${state.expiresAt}`);
    });
  run.command('retry').description('retry a failed realization: one run (--company --run), or every run --phase awaiting_retry')
    .option('--company <id>').option('--run <id>').addOption(new Option('--phase <phase>').choices(['awaiting_retry']))
    .option('--environment <id>', 'with --phase: only runs on this environment').addOption(json())
    .action(async (o) => {
      if (o.phase) {
        if (o.run) fail('--run', 'not with --phase');
        const filter = {
          // An empty value is refused, never read as "no filter" (that would retry every company's runs).
          ...(o.company !== undefined ? { companyId: check(ExternalId, o.company, '--company') } : {}),
          ...(o.environment !== undefined ? { environmentId: check(z.uuid(), o.environment, '--environment') } : {}),
        };
        const retried = await withClient((c) => c.retryAwaiting(filter));
        print(o, retried, () => retried.map((r) => `retried\t${r.workflowId}`).join('\n') || '(no run awaiting retry)');
        return;
      }
      if (!o.company || !o.run) fail('--run', 'give --company and --run, or --phase awaiting_retry');
      const [companyId, runId] = [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
      const state = await withClient((c) => c.retryRealization(companyId, runId));
      print(o, state, () => `retried\t${state.workflowId}\t${state.phase}`);
    });
  run.command('list').description('runs from Temporal visibility').option('--company <id>')
    .option('--phase <phase>').option('--error-code <code>').option('--environment <id>').addOption(json())
    .action(async (o) => {
      if (o.phase) check(RunPhaseSchema, o.phase, '--phase');
      if (o.errorCode) check(ErrorCodeSchema, o.errorCode, '--error-code');
      const runs = await withClient((c) => c.listRuns({ companyId: o.company, phase: o.phase, errorCode: o.errorCode, environmentId: o.environment }));
      print(o, runs, () => runs.map((r) => `${r.workflowId}\t${r.phase ?? '-'}\t${r.errorCode ?? '-'}\t${r.status}`).join('\n') || '(none)');
    });
  run.command('cancel').description('cancel a run; its lease is released').addOption(company()).addOption(runOpt()).addOption(json())
    .action(async (o) => {
      const [companyId, runId] = [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
      await withClient((c) => c.cancelRun(companyId, runId));
      print(o, { cancelled: true }, () => 'cancelled');
    });
  run.command('exec').description('run a command in a ready run\'s target, with only the explicit environment')
    .addOption(company()).addOption(runOpt())
    .option('--env-var <NAME=VALUE...>', 'environment variables for the command (nothing else is passed)')
    .option('--timeout <ms>', 'timeout in milliseconds', '600000')
    .argument('<command>').argument('[args...]').addOption(json())
    .action(async (command: string, args: string[], o) => {
      const [companyId, runId] = [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
      const env = parseEnvAssignments(o.envVar);
      const timeoutMs = check(millis(1), o.timeout, '--timeout');
      const result = await withClient((c) => c.exec(companyId, runId, { command, args, env, timeoutMs }));
      if (o.json) console.log(JSON.stringify(result, null, 2));
      else {
        process.stdout.write(result.stdout);
        process.stderr.write(result.stderr);
      }
      process.exitCode = result.exitCode ?? (result.timedOut ? 124 : 128);
    });

  // ---- lease ------------------------------------------------------------------------------------
  const lease = program.command('lease').description('environment leases').exitOverride();
  lease.command('list').description('list a company\'s leases').addOption(company())
    .addOption(new Option('--status <status>').choices(['active', 'released', 'expired', 'failed', 'retained'])).addOption(json())
    .action(async (o) => {
      const companyId = check(ExternalId, o.company, '--company');
      const leases = await withClient((c) => c.listLeases(companyId, o.status));
      print(o, leases, () => leases.map((l) => `${l.id}\t${l.status}\t${l.environmentId}\trun=${l.heartbeatRunId}\tcleanup=${l.cleanupStatus ?? '-'}`).join('\n') || '(none)');
    });

  lease.command('release').description('release a lease kept by retain_on_failure (destroys its resource)')
    .argument('<id>').addOption(company()).addOption(json())
    .action(async (id: string, o) => {
      check(z.uuid(), id, 'id');
      const companyId = check(ExternalId, o.company, '--company');
      const released = await withClient((c) => c.releaseRetainedLease(companyId, id));
      print(o, released, () => `${released.id}\t${released.status}\tcleanup=${released.cleanupStatus}`);
    });

  // ---- stats ----
  program.command('stats').description('p50/p95 of requested→ready per driver/provider (from visibility)')
    .option('--since <duration>', 'e.g. 30m, 1h, 2d', '1h').option('--company <id>', 'only this company\'s runs').addOption(json())
    .action(async (o) => {
      const m = /^(\d+)(m|h|d)$/.exec(o.since);
      if (!m) fail('--since', 'must be a duration like 30m, 1h or 2d');
      const sinceMs = Number(m[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'm' | 'h' | 'd'];
      const stats = await withClient((c) => c.stats(sinceMs, o.company !== undefined ? { companyId: o.company } : {}));
      print(o, stats, () => ['driver/provider\truns\tp50 ms\tp95 ms', ...stats.map((s) => `${s.driver}/${s.provider}\t${s.runs}\t${s.p50Ms}\t${s.p95Ms}`)].join('\n'));
    });

  // ---- reaper -------------------------------------------------------------------------------------
  const reaper = program.command('reaper').description('the sweep of leases whose run is gone').exitOverride();
  reaper.command('install').description('create the reaper schedule').option('--every <duration>', 'e.g. 5m', '5m')
    .action(async (o) => {
      const every = check(z.string().regex(/^\d+(ms|s|m|h)$/, 'must be a duration like 5m'), o.every, '--every');
      const created = await withClient((c) => c.installReaper(every));
      console.log(created ? `installed (every ${every})` : 'already installed');
    });
  reaper.command('run-once').description('sweep now and print what was released').addOption(json())
    .action(async (o) => {
      const reaped = await withClient((c) => c.reaperRunOnce());
      print(o, reaped, () => reaped.map((r) => `${r.leaseId}\t${r.cleanupStatus}\t${r.reason}`).join('\n') || '(nothing to release)');
    });

  // ---- db ---------------------------------------------------------------------------------------
  const db = program.command('db').description('the embedded PostgreSQL store').exitOverride();
  db.command('stop').description('stop the embedded PostgreSQL server of ENVRUN_DATA_DIR').action(async () => {
    const stopped = await stopEmbeddedStore(loadConfig().dataDir);
    console.log(stopped ? 'stopped' : 'not running');
  });
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? 0 : EXIT_USAGE; // help/version exit 0; usage errors were already printed
    }
    if (err instanceof InvalidInputError || err instanceof ConfigError) {
      console.error(`envrun: ${err.message}`);
      return EXIT_USAGE;
    }
    if (err instanceof EnvRunError) {
      console.error(`envrun: ${err.code}: ${err.message}`);
      return EXIT_FAILURE;
    }
    if (err instanceof NotFoundError || err instanceof RunStateError) {
      console.error(`envrun: ${err.message}`);
      return EXIT_FAILURE;
    }
    console.error(`envrun: ${err instanceof Error ? err.message : String(err)}`);
    return EXIT_FAILURE;
  }
}

