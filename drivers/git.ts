// Every git command envrun runs on this host goes through runGit. The repositories it touches may have been
// written by agent code (a local run works in them directly; older versions synced sandbox changes back into
// them), so git must not run anything a repository can configure: no hooks, no fsmonitor, no clean/smudge/
// process filters, no transports, no pager, no credential helper; no system or global config; and a minimal
// environment (never the worker's: its secrets must not reach anything git might start).
import { execFile } from 'node:child_process';
import { EnvRunError } from '../contracts/errors.js';
import { DEFAULT_PATH, firstLine } from './process.js';

/**
 * Settings given on the command line: they outrank anything in a repository's own config (`.git/config`,
 * `config.worktree`, included files). `core.hooksPath=/dev/null` finds no hook, so none runs.
 */
export const GIT_HARDENING: ReadonlyArray<readonly [string, string]> = [
  ['core.hooksPath', '/dev/null'],
  ['core.fsmonitor', 'false'],
  ['core.attributesFile', '/dev/null'],
  ['core.sshCommand', 'false'],
  ['core.askPass', 'false'],
  ['core.pager', 'cat'],
  ['credential.helper', ''],
  ['protocol.allow', 'never'],
  ['submodule.recurse', 'false'],
  ['diff.external', ''],
];

/** `-c key=value …` for GIT_HARDENING (also for a git run on an ssh host: see remoteGit in ssh/archive.ts). */
export function gitHardeningArgs(): string[] {
  return GIT_HARDENING.flatMap(([k, v]) => ['-c', `${k}=${v}`]);
}

/** The whole environment a host git command gets. */
export function gitEnv(): Record<string, string> {
  return {
    PATH: process.env.PATH || DEFAULT_PATH,
    HOME: '/nonexistent',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    GIT_PAGER: 'cat',
    GIT_ATTR_NOSYSTEM: '1',
  };
}

/** A git command that failed: its exit code and stderr, and git's own complaint as the message. */
export class GitError extends EnvRunError {
  override name = 'GitError';
  readonly code = 'git_failed';
  constructor(
    readonly args: string[],
    readonly stderr: string,
    readonly exitCode: number | null,
    detail: string,
  ) {
    super(`git ${args[0] ?? ''} failed: ${gitErrorLine(stderr) || detail}`);
  }
}

/**
 * The line of git's stderr that says what went wrong: its first `fatal:` line, else its first `error:` line,
 * else its first line. (Git often starts with progress, e.g. "Preparing worktree (new branch …)".)
 */
export function gitErrorLine(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim());
  return lines.find((l) => l.startsWith('fatal:')) ?? lines.find((l) => l.startsWith('error:')) ?? firstLine(stderr);
}

export interface RunGitOptions {
  cwd: string;
  /** Killed (SIGKILL) after this long; 10 minutes by default. */
  timeoutMs?: number;
  /** Most stdout kept (bytes); 64 MiB by default. A command printing more fails. */
  maxBuffer?: number;
}

interface Raw {
  stdout: string;
  stderr: string;
}

function exec(shown: string[], env: Record<string, string>, options: RunGitOptions): Promise<Raw> {
  return new Promise((resolve, reject) => {
    execFile(
      'git',
      [...gitHardeningArgs(), ...shown],
      {
        cwd: options.cwd,
        env,
        timeout: options.timeoutMs ?? 10 * 60_000,
        killSignal: 'SIGKILL',
        maxBuffer: options.maxBuffer ?? 64 * 1024 ** 2,
        encoding: 'utf8',
        shell: false,
      },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
        const detail = e.killed ? `killed after ${options.timeoutMs ?? 10 * 60_000} ms` : e.message;
        reject(new GitError(shown, stderr ?? '', typeof e.code === 'number' ? e.code : null, detail));
      },
    );
  });
}

/** The filter drivers a repository's config defines (`filter.<name>.*`), read without running anything. */
async function filterDrivers(env: Record<string, string>, options: RunGitOptions): Promise<string[]> {
  const res = await exec(['config', '--list', '-z'], env, { ...options, timeoutMs: 60_000 }).catch(() => null);
  if (!res) return []; // not a repository, or an unreadable config: git will say so on the real command
  const names = new Set<string>();
  for (const entry of res.stdout.split('\0')) {
    const key = entry.split('\n', 1)[0] ?? '';
    const m = /^filter\.(.+)\.[^.]+$/is.exec(key);
    if (m?.[1]) names.add(m[1]);
  }
  return [...names];
}

/**
 * Runs `git ARGS` in `cwd`, hardened (see the top of this file); resolves with stdout, throws a GitError.
 * Filter drivers named in the repository's config are emptied for this command (an empty clean/smudge/
 * process command is no filter; `required=false` so checkout still succeeds): given through
 * GIT_CONFIG_COUNT so that no driver name, however odd, is parsed as an option.
 */
export async function runGit(args: string[], options: RunGitOptions): Promise<string> {
  const env = gitEnv();
  const filters = await filterDrivers(env, options);
  const overrides: Array<[string, string]> = filters.flatMap(
    (name) =>
      [
        [`filter.${name}.clean`, ''],
        [`filter.${name}.smudge`, ''],
        [`filter.${name}.process`, ''],
        [`filter.${name}.required`, 'false'],
      ] as Array<[string, string]>,
  );
  if (overrides.length > 0) {
    env.GIT_CONFIG_COUNT = String(overrides.length);
    overrides.forEach(([k, v], i) => {
      env[`GIT_CONFIG_KEY_${i}`] = k;
      env[`GIT_CONFIG_VALUE_${i}`] = v;
    });
  }
  const { stdout } = await exec(args, env, options);
  return stdout;
}
