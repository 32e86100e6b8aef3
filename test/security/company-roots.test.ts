// ATTACK: workspace roots are per deployment, not per company. With ENVRUN_WORKSPACE_ROOTS=/srv/ws (the only
// setting there is), company acme starts a run with `--cwd /srv/ws/globex`, reads globex's files and leaves one
// there. A run's cwd, baseCwd and worktree must lie in its own company's folder, checked by the CLI, the admin
// API and the worker, each naming the field it refuses.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../client/errors.js';
import { loadTenancy } from '../../drivers/tenancy.js';
import type { RunRequestInput } from '../../contracts/index.js';
import { runCli } from '../support/cli.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { expectRunError, runRequest } from '../support/runs.js';

const ws = mkdtempSync(join(tmpdir(), 'envrun-company-roots-'));
const ROOTS = ws; // the only setting there is: one root for the whole deployment
const ACME = uniqueId('acme');
const GLOBEX = uniqueId('globex');
const acmeDir = join(ws, ACME);
const globexDir = join(ws, GLOBEX);
const acmeRepo = join(acmeDir, 'repo');
const SECRET = `globex-only-${uniqueId('s')}`;

let h: Harness;
beforeAll(async () => {
  mkdirSync(acmeDir);
  mkdirSync(globexDir);
  writeFileSync(join(globexDir, 'secret.txt'), SECRET);
  writeFileSync(join(acmeDir, 'own.txt'), 'acme');
  // acme's own git repository, so that a worktree can be asked for
  mkdirSync(acmeRepo);
  const git = (...args: string[]) =>
    execFileSync('git', ['-c', 'user.name=acme', '-c', 'user.email=acme@example.com', ...args], { cwd: acmeRepo });
  git('init', '-q');
  writeFileSync(join(acmeRepo, 'README'), 'acme');
  git('add', 'README');
  git('commit', '-q', '-m', 'init');
  h = await createHarness({ tenancy: loadTenancy({ ENVRUN_WORKSPACE_ROOTS: ROOTS }) });
});
afterAll(async () => {
  await h?.close();
});

/** What acme's agent does wherever it is started: takes globex's secret home and leaves a file behind. */
const STEAL = `cat secret.txt > ${acmeDir}/stolen.txt; echo acme was here > left-by-acme.txt`;

function globexUntouched(): void {
  expect(readdirSync(globexDir).sort()).toEqual(['secret.txt']);
  expect(readdirSync(acmeDir)).not.toContain('stolen.txt');
}

describe("acme against globex's folder", () => {
  const attack = (workspace: RunRequestInput['workspace']): RunRequestInput => ({
    ...runRequest({ companyId: ACME, runtimeOverlay: { provisionCommand: STEAL } }),
    workspace,
  });

  it.each([
    ['baseCwd', { baseCwd: globexDir, cwd: globexDir }],
    ['cwd', { baseCwd: acmeDir, cwd: globexDir }],
    [
      'worktreePath',
      {
        baseCwd: acmeRepo,
        cwd: acmeRepo,
        strategy: 'git_worktree' as const,
        worktreePath: join(globexDir, 'wt'),
        branchName: 'b',
      },
    ],
  ])('the worker refuses it in %s, leasing and running nothing', async (field, workspace) => {
    const err = await expectRunError(h.client.startRunAndWaitReady(attack(workspace)), 'invalid_request');
    expect(err.message).toContain(`request.workspace.${field}: `);
    expect(err.message).toContain(`outside the workspace roots of company ${ACME}`);
    expect(await h.store.listLeases(ACME)).toEqual([]);
    globexUntouched();
  });

  it("the worker refuses a link in acme's folder that leads to globex's", async () => {
    const link = join(acmeDir, 'to-globex');
    symlinkSync(globexDir, link);
    const err = await expectRunError(
      h.client.startRunAndWaitReady(attack({ baseCwd: acmeDir, cwd: link })),
      'invalid_request',
    );
    expect(err.message).toContain('request.workspace.cwd: ');
    globexUntouched();
  });

  it('the CLI refuses it before starting anything, naming the option', async () => {
    const run = uniqueId('cli');
    const res = await runCli(
      h,
      ['run', 'start', '--company', ACME, '--run', run, '--cwd', globexDir, '--provision', STEAL, '--wait'],
      { ENVRUN_WORKSPACE_ROOTS: ROOTS },
    );
    expect(res.code, res.stderr).toBe(2);
    expect(res.stderr).toContain(`--cwd: ${globexDir} is outside the workspace roots of company ${ACME}`);
    expect(await h.client.getRun(ACME, run)).toBeNull();
    globexUntouched();
  });

  it('the admin API refuses an execution workspace there', async () => {
    const err = await h.admin
      .createExecutionWorkspace({ companyId: ACME, name: 'theirs', cwd: globexDir })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidInputError);
    expect((err as Error).message).toContain(`cwd: ${globexDir} is outside the workspace roots of company ${ACME}`);
    const own = await h.admin.createExecutionWorkspace({ companyId: ACME, name: 'own', cwd: acmeDir });
    expect(own.cwd).toBe(acmeDir);
  });
});
