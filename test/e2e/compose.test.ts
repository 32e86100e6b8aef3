// docker-compose.yml is for users (no Docker engine here): the Compose client validates it, and it must
// stay in step with envrun (search attributes, pinned images, two workers on the shared store).
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { SEARCH_ATTRIBUTE_REGISTRATIONS } from '../../contracts/index.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function composeCommand(): string[] {
  if (spawnSync('docker', ['compose', 'version'], { stdio: 'ignore' }).status === 0) return ['docker', 'compose'];
  if (spawnSync('docker-compose', ['version'], { stdio: 'ignore' }).status === 0) return ['docker-compose'];
  throw new Error('no Compose client: install the docker compose plugin or Debian docker-compose (.ci/run does)');
}

it('docker compose config accepts the file; images are pinned; workers share PostgreSQL; attributes match', () => {
  const [cmd, ...args] = composeCommand();
  const out = execFileSync(cmd!, [...args, '-f', 'docker-compose.yml', 'config'], { cwd: ROOT }).toString();
  for (const service of [
    'postgresql:',
    'temporal-schema:',
    'temporal:',
    'temporal-setup:',
    'temporal-ui:',
    'envrun-worker:',
  ]) {
    expect(out).toContain(`  ${service}`);
  }
  const images = [...out.matchAll(/^\s+image: (\S+)$/gm)].map((m) => m[1]!);
  expect(images.length).toBeGreaterThanOrEqual(6);
  for (const image of images) expect(image, image).toMatch(/:[0-9][\w.-]*$/); // a version tag, never latest
  expect(out).toMatch(/replicas: 2/);
  // The server gets envrun's dynamic config (eager activity dispatch), from a file that says so.
  expect(out).toContain('DYNAMIC_CONFIG_FILE_PATH: config/dynamicconfig/envrun.yaml');
  expect(readFileSync(join(ROOT, 'deploy/dynamicconfig.yaml'), 'utf8')).toMatch(
    /system\.enableActivityEagerExecution:\n\s+- value: true/,
  );
  expect(out).toContain('DATABASE_URL: postgres://envrun:');
  // The setup service creates exactly envrun's search attributes (YAML may fold the line: compare words).
  const setup = out.slice(out.indexOf('  temporal-setup:'), out.indexOf('  temporal-ui:'));
  const declared = setup.match(/EnvRun[A-Za-z]+/g) ?? [];
  expect([...new Set(declared)].sort()).toEqual(SEARCH_ATTRIBUTE_REGISTRATIONS.map((a) => a.name).sort());
});
