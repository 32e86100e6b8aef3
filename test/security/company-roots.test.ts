// ATTACK: workspace roots were per deployment, not per company. With ENVRUN_WORKSPACE_ROOTS=/srv/ws, company
// acme started a run with `--cwd /srv/ws/globex`, read globex's files and left one there. A root may now
// name each company's own folder (`/srv/ws/{company}`): a run's cwd, baseCwd and worktree must lie in its
// own company's folder, checked by the CLI, the admin API and the worker, each naming the field it refuses.
import { mkdirSync, mkdtempSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../client/errors.js';
import { checkWorkspacePath, loadTenancy, TenancyError } from '../../config/tenancy.js';
import type { RunRequestInput } from '../../contracts/index.js';
import { runCli } from '../support/cli.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { expectRunError, runRequest } from '../support/runs.js';

const ws = mkdtempSync(join(tmpdir(), 'envrun-company-roots-'));
/** The production setting: each company's workspaces under its own folder. */
const ROOTS = join(ws, '{company}');
const ACME = uniqueId('acme');
const GLOBEX = uniqueId('globex');
const acmeDir = join(ws, ACME);
const globexDir = join(ws, GLOBEX);
const SECRET = `globex-only-${uniqueId('s')}`;

let h: Harness;
beforeAll(async () => {
  mkdirSync(acmeDir);
  mkdirSync(globexDir);
  writeFileSync(join(globexDir, 'secret.txt'), SECRET);
  writeFileSync(join(acmeDir, 'own.txt'), 'acme');
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

describe('each company works in its own folder', () => {
  it("acme's and globex's runs realize in their own folders", async () => {
    for (const [companyId, cwd] of [
      [ACME, acmeDir],
      [GLOBEX, globexDir],
    ] as const) {
      const req = runRequest({ companyId, cwd, runtimeOverlay: { provisionCommand: 'ls > /dev/null' } });
      const ready = await h.client.startRunAndWaitReady(req);
      expect(ready.executionTarget).toMatchObject({ kind: 'local', cwd });
      await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    }
  });
});

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
        baseCwd: acmeDir,
        cwd: acmeDir,
        strategy: 'git_worktree' as const,
        worktreePath: join(globexDir, 'wt'),
        branchName: 'b',
      },
    ],
  ])('the worker refuses it in %s, leasing and running nothing', async (field, workspace) => {
    const request = attack(workspace);
    const err = await expectRunError(h.client.startRunAndWaitReady(request), 'invalid_request');
    expect(err.message).toContain(`request.workspace.${field}: `);
    expect(err.message).toContain(`outside the workspace roots of company ${ACME}`);
    expect(await h.store.listRunLeases(ACME, request.heartbeatRunId)).toEqual([]);
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

describe('the setting', () => {
  it('{company} is replaced by the company id, which must be a safe path segment', () => {
    const tenancy = loadTenancy({ ENVRUN_WORKSPACE_ROOTS: ROOTS });
    expect(checkWorkspacePath(tenancy, ACME, join(acmeDir, 'x'), 'cwd')).toBe(join(acmeDir, 'x'));
    expect(() => checkWorkspacePath(tenancy, GLOBEX, join(acmeDir, 'x'), 'cwd')).toThrow(
      /cwd: .* is outside the workspace roots of company globex-/,
    );
    for (const bad of ['..', '.', '', 'a/b', '../globex', 'a\0b']) {
      expect(() => checkWorkspacePath(tenancy, bad, join(ws, bad, 'x'), 'cwd'), JSON.stringify(bad)).toThrow(
        TenancyError,
      );
    }
  });

  it('refuses {company} that is not a whole path segment, and a relative root', () => {
    expect(() => loadTenancy({ ENVRUN_WORKSPACE_ROOTS: '/srv/ws-{company}' })).toThrow(
      /ENVRUN_WORKSPACE_ROOTS: .*\{company\} must be a whole path segment/,
    );
    expect(() => loadTenancy({ ENVRUN_WORKSPACE_ROOTS: 'srv/{company}' })).toThrow(
      /ENVRUN_WORKSPACE_ROOTS: srv\/\{company\} is not an absolute path/,
    );
  });
});
