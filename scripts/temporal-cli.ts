// Provides the Temporal CLI: ENVRUN_TEMPORAL_CLI, `temporal` on PATH, a cached build, or a fresh
// `go install` into ~/.cache/envrun (minutes, once). Prints what it does; fails naming every way to get it.
import { execFile, spawnSync } from 'node:child_process';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

export const TEMPORAL_CLI_MODULE = 'github.com/temporalio/cli/cmd/temporal@v1.5.1';

export function cacheBinDir(): string {
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'envrun', 'bin');
}

export function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function onPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && executable(join(dir, name))) return join(dir, name);
  }
  return null;
}

function works(path: string): boolean {
  return spawnSync(path, ['--version'], { stdio: 'ignore', timeout: 20_000 }).status === 0;
}

export const INSTALL_HELP = [
  'The Temporal CLI is needed to run the local Temporal dev server. Install it one of these ways:',
  '  - macOS/Linux with Homebrew:   brew install temporal',
  '  - a release binary:            see https://docs.temporal.io/cli#install and put `temporal` on PATH',
  `  - with Go (>= 1.23):           go install ${TEMPORAL_CLI_MODULE}`,
  '  - or point ENVRUN_TEMPORAL_CLI at an existing binary.',
].join('\n');

export async function ensureTemporalCli(log: (line: string) => void = (l) => console.error(l)): Promise<string> {
  const explicit = process.env.ENVRUN_TEMPORAL_CLI;
  if (explicit) {
    if (works(explicit)) return explicit;
    throw new Error(`ENVRUN_TEMPORAL_CLI=${explicit} is not a working Temporal CLI.\n${INSTALL_HELP}`);
  }
  const found = onPath('temporal');
  if (found && works(found)) return found;
  const cached = join(cacheBinDir(), 'temporal');
  if (executable(cached) && works(cached)) return cached;
  const go = onPath('go') ?? (executable('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : null);
  if (!go)
    throw new Error(
      `No Temporal CLI found (not on PATH, not in ${cacheBinDir()}) and no Go toolchain to build one.\n${INSTALL_HELP}`,
    );
  mkdirSync(cacheBinDir(), { recursive: true });
  log(
    `[envrun] building the Temporal CLI: go install ${TEMPORAL_CLI_MODULE} into ${cacheBinDir()} (takes a few minutes, once)`,
  );
  const started = Date.now();
  try {
    await promisify(execFile)(go, ['install', TEMPORAL_CLI_MODULE], {
      env: { ...process.env, GOBIN: cacheBinDir(), CGO_ENABLED: process.env.CGO_ENABLED ?? '0' },
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(
      `go install ${TEMPORAL_CLI_MODULE} failed: ${(e.stderr ?? e.message).trim().split('\n').slice(-5).join('\n')}\n${INSTALL_HELP}`,
    );
  }
  if (!works(cached)) throw new Error(`go install finished but ${cached} does not run.\n${INSTALL_HELP}`);
  log(`[envrun] built the Temporal CLI in ${Math.round((Date.now() - started) / 1000)} s: ${cached}`);
  return cached;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  ensureTemporalCli()
    .then((path) => console.log(path))
    .catch((err: unknown) => {
      console.error((err as Error).message);
      process.exit(1);
    });
}
