// The layering and cycle rules of eslint.config.js, shown failing: an import that runs from a lower folder to
// a higher one, and two modules that import each other. `npm run lint` runs the same rules over the tree.
import { ESLint } from 'eslint';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The project's own config, without type information (the layering rules need none; a virtual file has none). */
function lint(): ESLint {
  return new ESLint({
    cwd: ROOT,
    ignore: false,
    overrideConfig: {
      files: ['**/*.ts'],
      languageOptions: { parserOptions: { projectService: false, project: null } },
      rules: { '@typescript-eslint/no-floating-promises': 'off', '@typescript-eslint/no-misused-promises': 'off' },
    },
  });
}

async function messages(code: string, filePath: string): Promise<string[]> {
  const [result] = await lint().lintText(code, { filePath: join(ROOT, filePath) });
  return (result?.messages ?? []).map((m) => `${m.ruleId}: ${m.message}`);
}

describe('layering lint', () => {
  it('refuses an import from a lower folder to a higher one', async () => {
    const found = await messages(
      "import { createActivities } from '../activities/index.js';\nvoid createActivities;\n",
      'drivers/fixture.ts',
    );
    expect(found.some((m) => m.startsWith('import-x/no-restricted-paths') && m.includes('drivers/'))).toBe(true);
  });

  it('refuses store importing drivers, and contracts importing the worker', async () => {
    expect(await messages("export * from '../drivers/types.js';\n", 'store/fixture.ts')).toEqual([
      expect.stringContaining('import-x/no-restricted-paths'),
    ]);
    expect(await messages("export * from '../worker/config.js';\n", 'contracts/fixture.ts')).toEqual([
      expect.stringContaining('import-x/no-restricted-paths'),
    ]);
  });

  it('allows an import downwards', async () => {
    expect(await messages("export * from '../contracts/index.js';\n", 'activities/fixture.ts')).toEqual([]);
  });

  it('refuses a cycle', async () => {
    const results = await lint().lintFiles([join(ROOT, 'test/fixtures/layering/cycle-a.ts')]);
    const found = results.flatMap((r) => r.messages.map((m) => m.ruleId));
    expect(found).toContain('import-x/no-cycle');
  });
});
