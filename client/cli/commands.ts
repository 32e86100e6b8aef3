// The `envrun` command tree: every command, its arguments and options, and where its action lives. Only
// commander is loaded here; a command's module (with the schemas, the client or the store it needs) is
// imported when that command runs, so `envrun --help`, a command's help and a usage error load nothing more.
import { Command, Option } from 'commander';

const company = () => new Option('--company <id>', 'company id').makeOptionMandatory();
const runOpt = () => new Option('--run <id>', 'heartbeat run id').makeOptionMandatory();
const json = () => new Option('--json', 'print JSON');

// Commander passes the arguments, the options and the command: the action modules take what they declare.
type Action = (...args: any[]) => Promise<void>;

/** The action `pick` selects from a module loaded when the command runs. */
function lazy<M>(load: () => Promise<M>, pick: (module: M) => Action): Action {
  return async (...args) => pick(await load())(...args);
}

const DISPOSITION = '--disposition <what>';
const DISPOSITION_HELP =
  "the sandbox after the run: keep_running, stop_and_retain or destroy (default: the lease policy's)";
const environments = () => import('./environments.js');
const runs = () => import('./runs.js');
const commandsIo = () => import('./commands-io.js');
const egress = () => import('./egress.js');
const leases = () => import('./leases.js');
const ops = () => import('./ops.js');
const db = () => import('./db.js');
const doctor = () => import('./doctor.js');

/** A command on one of a company's records by id: `<group> <name> ID --company C`. */
function idCommand(group: Command, name: string, description: string, action: Action): void {
  group.command(name).description(description).argument('<id>').addOption(company()).addOption(json()).action(action);
}

export function buildProgram(): Command {
  const program = new Command('envrun')
    .description('Durable environment runs for agent control planes (Temporal workflows).')
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str) })
    .showHelpAfterError(false);
  addEnvironmentCommands(program);
  addRunCommands(program);
  addLeaseCommands(program);
  addOpsCommands(program);
  addDbCommands(program);
  return program;
}

function addEnvironmentCommands(program: Command): void {
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
    .action(lazy(environments, (m) => m.createEnvironment));
  env
    .command('list')
    .description("list a company's environments")
    .addOption(company())
    .addOption(json())
    .action(lazy(environments, (m) => m.listEnvironments));
  env
    .command('update')
    .description("replace an environment's config")
    .argument('<id>')
    .addOption(company())
    .requiredOption('--config <json>', 'driver config as a JSON object')
    .addOption(json())
    .action(lazy(environments, (m) => m.updateEnvironment));
  idCommand(
    env,
    'probe',
    "run the environment's probe and print its diagnostics",
    lazy(environments, (m) => m.probeEnvironment),
  );
  idCommand(
    env,
    'pool',
    "the environment's warm pool: its sandboxes, fingerprint and counts",
    lazy(environments, (m) => m.showPool),
  );
  idCommand(
    env,
    'archive',
    'archive an environment (no new run can lease it)',
    lazy(environments, (m) => m.archiveEnvironment),
  );
  const workspace = program.command('workspace').description('execution workspaces').exitOverride();
  workspace
    .command('create')
    .description('persist an execution workspace (its runtime config lives in metadata.config)')
    .addOption(company())
    .requiredOption('--name <name>')
    .requiredOption('--cwd <path>')
    .option('--config <json>', 'runtime config: {provisionCommand, teardownCommand, cleanupCommand, environmentId}')
    .addOption(json())
    .action(lazy(environments, (m) => m.createWorkspace));
}

function addRunCommands(program: Command): void {
  const run = program.command('run').description('environment runs').exitOverride();
  run
    .command('start')
    .description('start a run (and with --wait, wait for its execution target)')
    .addOption(company())
    .addOption(runOpt())
    .option('--env <id>', "environment id (default: the company's local environment)")
    .requiredOption('--cwd <path>', 'the workspace on this machine')
    .option('--adapter <type>', 'agent adapter type', 'process')
    .option('--provision <cmd>', 'provision command run in the realized workspace')
    .option('--workspace <id>', 'persisted execution workspace id')
    .option('--issue <id>', 'issue id')
    .addOption(
      new Option('--lease-policy <policy>').choices([
        'ephemeral',
        'reuse_by_environment',
        'reuse_by_execution_workspace',
        'retain_on_failure',
      ]),
    )
    .option('--worktree <path>', 'realize as a git worktree at this path (needs --branch)')
    .option('--branch <name>', 'branch of the git worktree')
    .option(
      '--await-retry-ms <ms>',
      'how long a failed realization waits in awaiting_retry for an operator (0: fail at once)',
    )
    .option('--lease-ttl-ms <ms>', 'a ready run not renewed or completed within this time expires')
    .option('--host-pickup-ms <ms>', "how long a step may wait for its resource's host before the host is checked")
    .option('--wait', 'wait until ready and print the execution target; phase changes go to stderr')
    .option('--wait-through-retry', 'with --wait: keep waiting while the run awaits an operator retry')
    .addOption(json())
    .action(lazy(runs, (m) => m.startRun));
  run
    .command('status')
    .description('phase, lease, target and error of a run')
    .addOption(company())
    .addOption(runOpt())
    .addOption(json())
    .action(lazy(runs, (m) => m.runStatus));
  run
    .command('complete')
    .description('the agent is done: release the lease')
    .addOption(company())
    .addOption(runOpt())
    .option('--failed', 'the agent failed')
    .option('--reason <text>', 'failure reason (with --failed)')
    .option(DISPOSITION, DISPOSITION_HELP)
    .option('--cancel-active-work', 'stop commands still running instead of waiting for them')
    .addOption(json())
    .action(lazy(runs, (m) => m.completeRun));
  run
    .command('renew')
    .description("the control plane is alive: push the lease's expiry out by its TTL")
    .addOption(company())
    .addOption(runOpt())
    .addOption(json())
    .action(lazy(runs, (m) => m.renewRun));
  run
    .command('retry')
    .description('retry a failed realization: one run (--company --run), or every run --phase awaiting_retry')
    .option('--company <id>')
    .option('--run <id>')
    .addOption(new Option('--phase <phase>').choices(['awaiting_retry']))
    .option('--environment <id>', 'with --phase: only runs on this environment')
    .addOption(json())
    .action(lazy(runs, (m) => m.retryRun));
  run
    .command('list')
    .description('runs from Temporal visibility')
    .option('--company <id>')
    .option('--phase <phase>')
    .option('--error-code <code>')
    .option('--environment <id>')
    .addOption(json())
    .action(lazy(runs, (m) => m.listRuns));
  run
    .command('cancel')
    .description('cancel a run; its lease is released')
    .addOption(company())
    .addOption(runOpt())
    .option(DISPOSITION, DISPOSITION_HELP)
    .option('--cancel-active-work', 'stop commands still running instead of waiting for them')
    .addOption(json())
    .action(lazy(runs, (m) => m.cancelRun));
  run
    .command('exec')
    .description(
      "run a command in a ready run's target, with only the explicit environment: its output streams as it is " +
        "written; exits with the command's status (128+signal when killed, 124 timed out); Ctrl-C stops " +
        'following, not the command',
    )
    .addOption(company())
    .addOption(runOpt())
    .option('--env-var <NAME=VALUE...>', 'environment variables for the command (nothing else is passed)')
    .option('--env-file <path>', 'NAME=VALUE lines for the environment, kept off the command line (--env-var wins)')
    .option('--timeout <ms>', 'timeout in milliseconds', '600000')
    .option('--command-id <id>', 'the command id (the same id twice is one command; default: a new UUID)')
    .option('--detach', 'start the command and print its id, without following it')
    .option('--stdin', "pipe this process's stdin into the command (its end closes the command's stdin)")
    .argument('<command>')
    .argument('[args...]')
    .addOption(new Option('--json', 'one JSON event a line (output as base64), instead of raw bytes'))
    .action(lazy(commandsIo, (m) => m.execCommand));
  run
    .command('logs')
    .description("a command's output from the journal (no id: the run's latest command), then its exit status")
    .argument('[id]', 'command id')
    .addOption(company())
    .addOption(runOpt())
    .option('--follow', 'wait for more output until the command ends')
    .option('--from <seq>', 'only the chunks after this sequence number', '0')
    .addOption(new Option('--json', 'one JSON event a line (output as base64), instead of raw bytes'))
    .action(lazy(commandsIo, (m) => m.commandLogs));
  run
    .command('kill')
    .description("signal a running command's whole process group")
    .argument('<id>', 'command id')
    .addOption(company())
    .addOption(runOpt())
    .option('--signal <name>', 'signal name: TERM, INT, KILL, …', 'TERM')
    .addOption(json())
    .action(lazy(commandsIo, (m) => m.killCommand));
  run
    .command('commands')
    .description("the run's commands from the store: id, status, exit, sizes, start and duration")
    .addOption(company())
    .addOption(runOpt())
    .addOption(json())
    .action(lazy(commandsIo, (m) => m.listCommands));
  run
    .command('egress')
    .description(
      "what the egress proxy let the run's sandboxes reach and refused (network allowlist): host, port, phase, " +
        'verdict, reason, connections, bytes up and down, first and last',
    )
    .addOption(company())
    .addOption(runOpt())
    .addOption(json())
    .action(lazy(egress, (m) => m.listEgress));
}

function addLeaseCommands(program: Command): void {
  const lease = program.command('lease').description('environment leases').exitOverride();
  lease
    .command('list')
    .description("list a company's leases")
    .addOption(company())
    .addOption(new Option('--status <status>').choices(['active', 'released', 'expired', 'failed', 'retained']))
    .addOption(json())
    .action(lazy(leases, (m) => m.listLeases));
  idCommand(
    lease,
    'release',
    'release a lease kept by retain_on_failure (destroys its resource)',
    lazy(leases, (m) => m.releaseLease),
  );
}

function addOpsCommands(program: Command): void {
  program
    .command('doctor')
    .description('the settings here (secrets masked) and probes: sandbox tools, Temporal, the store')
    .option('--timeout <duration>', 'how long the Temporal and store probes may take, e.g. 5s', '5s')
    .addOption(json())
    .action(lazy(doctor, (m) => m.doctor));
  program
    .command('stats')
    .description('p50/p95 of requested→ready per driver/provider (from visibility)')
    .option('--since <duration>', 'e.g. 30m, 1h, 2d', '1h')
    .option('--company <id>', "only this company's runs")
    .addOption(json())
    .action(lazy(ops, (m) => m.stats));
  const reaper = program.command('reaper').description('the sweep of leases whose run is gone').exitOverride();
  reaper
    .command('install')
    .description('create the reaper schedule')
    .option('--every <duration>', 'e.g. 5m', '5m')
    .addOption(json())
    .action(lazy(ops, (m) => m.installReaper));
  reaper
    .command('run-once')
    .description('sweep now and print what was released')
    .addOption(json())
    .action(lazy(ops, (m) => m.reaperRunOnce));
}

function addDbCommands(program: Command): void {
  const store = program.command('db').description('the embedded PostgreSQL store').exitOverride();
  store
    .command('stop')
    .description('stop the embedded PostgreSQL server of ENVRUN_DATA_DIR')
    .addOption(json())
    .action(lazy(db, (m) => m.stopStore));
}
