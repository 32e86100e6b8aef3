// docker-compose.yml is for users (no Docker engine here): the Compose client validates it, and it must
// stay in step with envrun (search attributes, pinned images, two workers on the shared store) and with the
// cluster test suite (the same setup scripts, the same Temporal release as scripts/temporal-server.ts).
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { SEARCH_ATTRIBUTE_REGISTRATIONS } from '../../contracts/index.js';
import { TEMPORAL_SERVER_VERSION } from '../../scripts/temporal-server.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

function composeCommand(): string[] {
  if (spawnSync('docker', ['compose', 'version'], { stdio: 'ignore' }).status === 0) return ['docker', 'compose'];
  if (spawnSync('docker-compose', ['version'], { stdio: 'ignore' }).status === 0) return ['docker-compose'];
  throw new Error('no Compose client: install the docker compose plugin or Debian docker-compose (.ci/run does)');
}

let out: string;
/** One service's block of the resolved file (`  name:` up to the next service). */
function service(name: string): string {
  const start = out.indexOf(`\n  ${name}:\n`);
  expect(start, `service ${name}`).toBeGreaterThanOrEqual(0);
  const rest = out.slice(start + 1);
  const next = rest.slice(3).search(/\n {2}\S|\n\S/);
  return next < 0 ? rest : rest.slice(0, next + 3);
}
const SERVICES = ['postgresql', 'temporal-schema', 'temporal', 'temporal-setup', 'temporal-ui', 'envrun-worker'];

beforeAll(() => {
  const [cmd, ...args] = composeCommand();
  out = execFileSync(cmd!, [...args, '-f', 'docker-compose.yml', 'config'], { cwd: ROOT }).toString();
});

describe('docker-compose.yml', () => {
  it('is accepted by docker compose config; images are pinned; workers share PostgreSQL; attributes match', () => {
    for (const name of SERVICES) service(name);
    const images = [...out.matchAll(/^\s+image: (\S+)$/gm)].map((m) => m[1]!);
    expect(images.length).toBeGreaterThanOrEqual(6);
    for (const image of images) expect(image, image).toMatch(/:[0-9][\w.-]*$/); // a version tag, never latest
    expect(out).toMatch(/replicas: 2/);
    // The server gets envrun's dynamic config (eager activity dispatch), from a file that says so.
    expect(out).toContain('DYNAMIC_CONFIG_FILE_PATH: config/dynamicconfig/envrun.yaml');
    expect(read('deploy/dynamicconfig.yaml')).toMatch(/system\.enableActivityEagerExecution:\n\s+- value: true/);
    // The workers' database is the one deploy/postgres-init.sql makes, with the same password.
    const url = /DATABASE_URL: postgres:\/\/envrun:([^@]+)@postgresql:5432\/envrun/.exec(service('envrun-worker'));
    expect(url, 'envrun-worker DATABASE_URL').not.toBeNull();
    expect(read('deploy/postgres-init.sql')).toContain(`PASSWORD ''${url![1]}''`);
    // The setup service creates exactly envrun's search attributes (YAML may fold the line: compare words).
    const declared = service('temporal-setup').match(/EnvRun[A-Za-z]+/g) ?? [];
    expect([...new Set(declared)].sort()).toEqual(SEARCH_ATTRIBUTE_REGISTRATIONS.map((a) => a.name).sort());
  });

  it('runs the Temporal release the cluster tests run, set up by the scripts they run', () => {
    expect(service('temporal')).toContain(`image: temporalio/server:${TEMPORAL_SERVER_VERSION}\n`);
    for (const job of ['temporal-schema', 'temporal-setup']) {
      expect(service(job)).toContain(`image: temporalio/admin-tools:${TEMPORAL_SERVER_VERSION}-`);
      expect(service(job)).toMatch(/- \.?\/?\S*deploy:\/deploy:ro/);
    }
    expect(service('temporal-schema')).toMatch(/entrypoint:\n\s+- \/bin\/sh\n\s+- \/deploy\/setup-schema\.sh\n/);
    expect(service('temporal-setup')).toMatch(/entrypoint:\n\s+- \/bin\/sh\n\s+- \/deploy\/setup-namespace\.sh\n/);
    expect(read('test/cluster/harness.ts')).toMatch(/'setup-schema\.sh'[\s\S]*'setup-namespace\.sh'/);
    // The scripts stop at the first failure and hide none.
    for (const script of ['deploy/setup-schema.sh', 'deploy/setup-namespace.sh']) {
      expect(read(script)).toMatch(/^set -eu$/m);
      expect(read(script)).not.toMatch(/\|\|\s*true/);
    }
  });

  it('restarts services, drains workers before killing them, lets bubblewrap run', () => {
    for (const name of ['postgresql', 'temporal', 'temporal-ui', 'envrun-worker'])
      expect(service(name), name).toMatch(/restart: (unless-stopped|always)/);
    for (const job of ['temporal-schema', 'temporal-setup']) expect(service(job)).toMatch(/restart: on-failure/);
    const worker = service('envrun-worker');
    expect(worker).toMatch(/init: true/);
    const grace = Number(/ENVRUN_SHUTDOWN_GRACE_MS: '?(\d+)'?/.exec(worker)?.[1] ?? 10_000);
    const stop = /stop_grace_period: (\d+)s/.exec(worker);
    expect(stop, 'stop_grace_period in seconds').not.toBeNull();
    expect(Number(stop![1]) * 1000).toBeGreaterThan(grace);
    for (const opt of ['seccomp=unconfined', 'apparmor=unconfined', 'systempaths=unconfined'])
      expect(worker).toContain(`- ${opt}`);
    expect(worker).toMatch(/- envrun-data:\/var\/lib\/envrun/);
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');
  it('builds dist/ on a pinned Node LTS and runs it as node, its data folder owned by node before the volume', () => {
    const bases = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]!);
    expect(bases.length).toBeGreaterThan(0);
    for (const base of bases) expect(base).toMatch(/^node:(22|24)\.\d+\.\d+-bookworm-slim$/);
    // Every source folder the build compiles is in the build context.
    for (const dir of ['contracts', 'store', 'drivers', 'leases', 'lib', 'workflows', 'activities', 'worker', 'client'])
      expect(dockerfile, dir).toMatch(new RegExp(`^COPY ${dir} \\./${dir}$`, 'm'));
    expect(dockerfile).toMatch(/npm run build/);
    expect(dockerfile).toMatch(/^CMD \["node", "dist\/worker\/main\.js"\]$/m);
    const chown = dockerfile.search(/chown node:node \/var\/lib\/envrun/);
    const volume = dockerfile.search(/^VOLUME \/var\/lib\/envrun$/m);
    expect(chown).toBeGreaterThan(0);
    expect(volume).toBeGreaterThan(chown);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toContain('ENVRUN_DATA_DIR=/var/lib/envrun');
  });
});
