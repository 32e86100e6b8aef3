// The Paperclip plugin host's process side (drivers/providers/paperclip/{rpc,worker}.ts) against real worker
// processes: a hand-written worker that misbehaves on request (test/fixtures/paperclip-rpc/raw-worker.mjs)
// and one built with the published SDK (sdk-worker.mjs).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { RpcConnection, eachLine } from '../../drivers/providers/paperclip/rpc.js';
import { PluginWorker, PluginWorkerError, type PluginWorkerOptions } from '../../drivers/providers/paperclip/worker.js';
import { createLogger } from '../../worker/logging.js';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/paperclip-rpc/${name}`, import.meta.url));
const RAW = fixture('raw-worker.mjs');
const SDK = fixture('sdk-worker.mjs');
type Line = Record<string, unknown> & { level: string; msg: string };

const started: PluginWorker[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((w) => w.stop()));
});

async function startWorker(workerPath: string, options: Partial<PluginWorkerOptions> = {}) {
  const lines: Line[] = [];
  const logger = createLogger({
    level: 'DEBUG',
    destination: { write: (l: string) => void lines.push(JSON.parse(l)) },
  });
  const worker = await PluginWorker.start({
    pluginKey: 'acme.raw',
    workerPath,
    cwd: dirname(workerPath),
    manifest: { id: 'acme.raw', apiVersion: 1, version: '1.0.0' },
    logger,
    callTimeoutMs: 5_000,
    restart: { initialDelayMs: 50, maxDelayMs: 400 },
    stopGraceMs: 500,
    ...options,
  });
  started.push(worker);
  return { worker, lines };
}

const exec = (
  worker: PluginWorker,
  command: string,
  extra: Record<string, unknown> = {},
  options?: Parameters<PluginWorker['call']>[2],
) =>
  worker.call(
    'environmentExecute',
    {
      driverKey: 'raw',
      companyId: 'c1',
      environmentId: 'e1',
      config: {},
      lease: { providerLeaseId: 'l1' },
      command,
      ...extra,
    },
    options,
  );

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** This test process's child processes running `script`. */
const childrenRunning = (script: string) =>
  spawnSync('ps', ['-o', 'args=', '--ppid', String(process.pid)], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter((l) => l.includes(script));

const failure = (code: string, message?: string) =>
  expect.objectContaining({
    name: 'PluginWorkerError',
    code,
    ...(message ? { message: expect.stringContaining(message) } : {}),
  });

it('starts the worker with a minimal environment and a private home, and initializes it', async () => {
  process.env.ENVRUN_TEST_SECRET = 's3cret-value';
  process.env.DATABASE_URL = 'postgres://envrun:pw-s3cret@db/envrun';
  let worker: PluginWorker;
  try {
    ({ worker } = await startWorker(RAW, { config: { region: 'x' } }));
  } finally {
    delete process.env.ENVRUN_TEST_SECRET;
    delete process.env.DATABASE_URL;
  }
  const seen = (await exec(worker, 'env')) as { env: Record<string, string>; cwd: string; pid: number };
  expect(Object.keys(seen.env).sort()).toEqual(['HOME', 'LANG', 'PATH']);
  expect(JSON.stringify(seen.env)).not.toContain('s3cret');
  expect(seen.env.HOME).not.toBe(homedir());
  expect(seen.env.HOME!.startsWith(tmpdir())).toBe(true);
  expect(statSync(seen.env.HOME!).mode & 0o777).toBe(0o700);
  expect(seen.cwd).toBe(dirname(RAW));
  expect(seen.pid).toBe(worker.pid);

  const init = (await exec(worker, 'init')) as Record<string, any>;
  const version = (
    JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  ).version;
  expect(init).toEqual({
    manifest: { id: 'acme.raw', apiVersion: 1, version: '1.0.0' },
    config: { region: 'x' },
    instanceInfo: {
      instanceId: expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/),
      hostVersion: version,
    },
    apiVersion: 1,
  });
  expect([
    worker.supports('environmentExecute'),
    worker.supports('health'),
    worker.supports('environmentProbe'),
  ]).toEqual([true, true, false]);
  expect(await worker.health()).toEqual({ ok: true, message: 'all good' });

  const pid = worker.pid!;
  await worker.stop();
  expect(alive(pid)).toBe(false);
  expect(existsSync(seen.env.HOME!)).toBe(false);
});

it('times a call out and ignores its late reply; a cancelled call fails with its signal reason', async () => {
  const { worker, lines } = await startWorker(RAW);
  const late = exec(worker, 'late', { timeoutMs: 300 }, { timeoutMs: 100 });
  await expect(late).rejects.toEqual(failure('plugin_call_timeout', 'environmentExecute got no reply within 100 ms'));
  await expect(late).rejects.toHaveProperty('retryable', true);
  await waitFor(() => lines.some((l) => l.msg.includes('replied to no pending call')));
  expect(await exec(worker, 'env')).toMatchObject({ pid: worker.pid });

  const controller = new AbortController();
  const hanging = exec(worker, 'hang', {}, { signal: controller.signal });
  controller.abort(new Error('run cancelled'));
  await expect(hanging).rejects.toThrow('run cancelled');
});

it('logs and ignores lines that are not messages; a malformed reply fails its call only', async () => {
  const { worker, lines } = await startWorker(RAW);
  const pid = worker.pid;
  expect(await exec(worker, 'garbage')).toEqual({ afterGarbage: true });
  const ignored = lines.filter((l) => l.msg.includes('not a JSON-RPC message'));
  expect(ignored.map((l) => [l.level, l.plugin, l.line])).toEqual([
    ['warn', 'acme.raw', 'this is not json'],
    ['warn', 'acme.raw', '[1,2]'],
    ['warn', 'acme.raw', '{"jsonrpc":"2.0"}'],
  ]);
  await expect(exec(worker, 'malformed')).rejects.toEqual(
    failure('plugin_protocol_error', 'malformed reply to environmentExecute'),
  );
  await expect(exec(worker, 'no-result')).rejects.toEqual(failure('plugin_protocol_error', 'environmentExecute'));
  await expect(exec(worker, 'no-result')).rejects.toHaveProperty('retryable', false);
  expect(worker.pid).toBe(pid);
  expect(await exec(worker, 'env')).toMatchObject({ pid });
});

it("keeps the worker's JSON-RPC error; refuses methods the worker does not implement", async () => {
  const { worker } = await startWorker(RAW);
  const err = (await exec(worker, 'error').catch((e: unknown) => e)) as PluginWorkerError;
  expect(err).toBeInstanceOf(PluginWorkerError);
  expect(err).toMatchObject({ code: 'plugin_error', retryable: false, rpcError: { code: -32002, data: { x: 1 } } });
  expect(err.message).toContain('the sandbox is on fire');
  await expect(exec(worker, 'not-implemented')).rejects.toEqual(failure('plugin_method_not_implemented', 'nope'));
  const probe = worker.call('environmentProbe', { driverKey: 'raw', companyId: 'c1', environmentId: 'e1', config: {} });
  await expect(probe).rejects.toEqual(
    failure('plugin_method_not_implemented', 'plugin "acme.raw" does not implement environmentProbe'),
  );
});

it('answers log and config.get from the worker, refuses other host methods by name, and logs', async () => {
  const { worker, lines } = await startWorker(RAW, { config: { region: 'x' } });
  const answers = (await exec(worker, 'call-host', { args: ['config.get', 'state.get', 'secrets.resolve'] })) as any[];
  expect(answers[0]).toMatchObject({ result: { region: 'x' } });
  for (const [i, method] of [
    [1, 'state.get'],
    [2, 'secrets.resolve'],
  ] as const) {
    expect(answers[i].result).toBeUndefined();
    expect(answers[i].error).toEqual({ code: -32601, message: expect.stringContaining(`does not offer "${method}"`) });
  }
  expect(lines.filter((l) => l.msg.includes('does not offer')).map((l) => [l.level, l.method])).toEqual([
    ['warn', 'state.get'],
    ['warn', 'secrets.resolve'],
  ]);

  expect(await exec(worker, 'log')).toMatchObject({ result: null });
  const hello = lines.find((l) => l.msg === 'hello from the plugin');
  expect(hello).toMatchObject({
    level: 'info',
    plugin: 'acme.raw',
    pid: worker.pid,
    meta: { a: 1, token: '[redacted]' },
  });
  const long = lines.find((l) => l.level === 'error' && l.msg.startsWith('xxx'));
  expect(long).toMatchObject({ msg: `${'x'.repeat(2000)}…`, metaOmitted: expect.stringContaining('characters') });
  expect(long).not.toHaveProperty('meta');
  expect(lines.find((l) => l.msg === 'a log request')).toMatchObject({ level: 'warn', plugin: 'acme.raw' });
  expect(lines.some((l) => l.msg.includes('malformed log call'))).toBe(true);
  expect(JSON.stringify(lines)).not.toContain('t0psecret');
});

it('logs stderr lines at warn with the plugin key, long lines cut', async () => {
  const { worker, lines } = await startWorker(RAW);
  await exec(worker, 'stderr');
  await waitFor(() => lines.some((l) => l.msg === 'after the long line'));
  const stderr = lines.filter((l) => l.stream === 'stderr');
  expect(stderr.map((l) => [l.level, l.plugin, l.msg.length > 40 ? `${l.msg.length}` : l.msg])).toEqual([
    ['warn', 'acme.raw', 'first stderr line'],
    ['warn', 'acme.raw', 'second stderr line'],
    ['warn', 'acme.raw', '2001'],
    ['warn', 'acme.raw', 'after the long line'],
  ]);
});

it("streams a call's output chunks to its onOutput, and only its own", async () => {
  const { worker } = await startWorker(RAW);
  const chunks: string[][] = [];
  const result = await exec(worker, 'output', {}, { onOutput: (stream, chunk) => chunks.push([stream, chunk]) });
  expect(result).toEqual({ scope: { companyId: 'c1' } });
  expect(chunks).toEqual([
    ['stdout', 'chunk 1\n'],
    ['stderr', 'chunk 2\n'],
  ]);
});

it('fails the calls of a dead worker, restarts it, and calls made meanwhile wait for the new one', async () => {
  const { worker, lines } = await startWorker(RAW);
  const first = worker.pid!;
  const dying = exec(worker, 'die');
  await expect(dying).rejects.toEqual(failure('plugin_worker_unavailable', 'exited with signal SIGKILL'));
  await expect(dying).rejects.toHaveProperty('retryable', true);
  const second = (await exec(worker, 'env')) as { pid: number };
  expect(second.pid).not.toBe(first);

  const hanging = exec(worker, 'hang');
  await new Promise((r) => setTimeout(r, 50));
  process.kill(second.pid, 'SIGKILL');
  await expect(hanging).rejects.toEqual(failure('plugin_worker_unavailable', `pid ${second.pid}) exited`));
  const meanwhile = exec(worker, 'env');
  expect(worker.pid).toBeUndefined();
  const third = (await meanwhile) as { pid: number };
  expect([first, second.pid]).not.toContain(third.pid);
  expect(worker.pid).toBe(third.pid);
  expect(alive(first) || alive(second.pid)).toBe(false);
  expect(lines.filter((l) => l.msg.startsWith('plugin worker died')).length).toBe(2);
  expect(await worker.health()).toEqual({ ok: true, message: 'all good' });
});

it('backs restarts off exponentially, up to the cap; a call waiting past its timeout fails unavailable', async () => {
  const { worker, lines } = await startWorker(RAW, { restart: { initialDelayMs: 50, maxDelayMs: 200 } });
  for (let i = 0; i < 5; i++) {
    const pid = worker.pid!;
    process.kill(pid, 'SIGKILL');
    await waitFor(() => worker.pid !== undefined && worker.pid !== pid);
  }
  const delays = lines.filter((l) => l.msg === 'plugin worker restarting').map((l) => l.delayMs);
  expect(delays).toEqual([50, 100, 200, 200, 200]);

  process.kill(worker.pid!, 'SIGKILL');
  await waitFor(() => worker.pid === undefined);
  const waited = exec(worker, 'env', {}, { timeoutMs: 20 });
  await expect(waited).rejects.toEqual(failure('plugin_worker_unavailable', 'it is restarting'));
});

it('fails start() clearly when the worker does not initialize, leaving no process behind', async () => {
  await expect(startWorker(RAW, { config: { initialize: 'fail' } })).rejects.toEqual(
    failure('plugin_initialize_failed', 'bad config'),
  );
  const exited = startWorker(RAW, { config: { initialize: 'exit' } });
  await expect(exited).rejects.toEqual(failure('plugin_initialize_failed', 'exited with code 3'));
  await expect(exited).rejects.toThrow('cannot start: no sandbox root');
  await expect(startWorker(RAW, { config: { initialize: 'hang' }, callTimeoutMs: 300 })).rejects.toEqual(
    failure('plugin_initialize_failed', 'initialize got no reply within 300 ms'),
  );
  const missing = '/nonexistent/plugin/worker.mjs';
  await expect(startWorker(missing, { cwd: tmpdir() })).rejects.toEqual(failure('plugin_initialize_failed', missing));
  expect(childrenRunning('raw-worker.mjs')).toEqual([]);
});

it('stops cleanly: shutdown answered, the worker exits, nothing restarts, calls fail unavailable', async () => {
  const { worker, lines } = await startWorker(RAW);
  const pid = worker.pid!;
  const hanging = exec(worker, 'hang').catch((e: unknown) => e);
  await new Promise((r) => setTimeout(r, 50));
  await worker.stop();
  await expect(hanging).resolves.toEqual(failure('plugin_worker_unavailable', 'the plugin host stopped'));
  expect(alive(pid)).toBe(false);
  expect(worker.pid).toBeUndefined();
  expect(lines.some((l) => l.msg.includes('SIGTERM'))).toBe(false);
  await expect(exec(worker, 'env')).rejects.toEqual(failure('plugin_worker_unavailable', 'stopped'));
  await new Promise((r) => setTimeout(r, 200));
  expect(childrenRunning('raw-worker.mjs')).toEqual([]);
  await worker.stop(); // twice is fine
});

it('stops a worker that ignores shutdown and SIGTERM with SIGKILL', async () => {
  const { worker, lines } = await startWorker(RAW, { config: { shutdown: 'ignore' }, stopGraceMs: 300 });
  const pid = worker.pid!;
  const begun = Date.now();
  await worker.stop();
  expect(Date.now() - begun).toBeGreaterThanOrEqual(600);
  expect(alive(pid)).toBe(false);
  expect(lines.filter((l) => l.msg.includes('ignored')).map((l) => l.msg)).toEqual([
    'plugin worker ignored shutdown: SIGTERM',
    'plugin worker ignored SIGTERM: SIGKILL',
  ]);
  expect(childrenRunning('raw-worker.mjs')).toEqual([]);
});

it('runs a worker built with the published SDK: initialize, health, a call, logs, shutdown', async () => {
  const { worker, lines } = await startWorker(SDK, { pluginKey: 'acme.sdk', manifest: { id: 'acme.sdk' } });
  expect([worker.supports('environmentProbe'), worker.supports('environmentExecute')]).toEqual([true, false]);
  expect(await worker.health()).toEqual({ ok: true, message: 'sdk worker healthy' });
  const probe = { driverKey: 'folder', companyId: 'c1', environmentId: 'e1', config: {} };
  expect(await worker.call('environmentProbe', probe)).toEqual({
    ok: true,
    summary: 'probed folder for e1',
    diagnostics: [],
  });
  expect(lines.find((l) => l.msg === 'sdk plugin set up')).toMatchObject({
    level: 'info',
    plugin: 'acme.sdk',
    meta: { driver: 'folder' },
  });
  const pid = worker.pid!;
  await worker.stop();
  expect(alive(pid)).toBe(false);
  expect(lines.some((l) => l.msg.includes('ignored shutdown'))).toBe(false);
});

it('leaves no worker behind when its host process is killed', async () => {
  const host = spawn(process.execPath, ['--import', 'tsx', fixture('host.ts'), SDK], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const pid = await new Promise<number>((resolve) =>
    createInterface({ input: host.stdout }).once('line', (l) => resolve(Number(l))),
  );
  expect(alive(pid)).toBe(true);
  host.kill('SIGKILL');
  await waitFor(() => !alive(pid));
  // the killed host could not remove its worker's home folder
  for (const name of readdirSync(tmpdir()).filter((n) => n.startsWith('envrun-plugin-orphan.test-'))) {
    rmSync(join(tmpdir(), name), { recursive: true, force: true });
  }
});

it('splits lines across chunks and cuts a long one without buffering it; a long message breaks the session', async () => {
  const stream = new PassThrough();
  const got: Array<[string, boolean]> = [];
  eachLine(stream, 5, (line, cut) => got.push([line, cut]));
  for (const chunk of ['ab', 'c\r\nabcdefgh', 'ijk\nxy']) stream.write(chunk);
  stream.end('z');
  await new Promise((r) => stream.on('end', r));
  expect(got).toEqual([
    ['abc', false],
    ['abcde', true],
    ['xyz', false],
  ]);

  const [input, output] = [new PassThrough(), new PassThrough()];
  const broken: string[] = [];
  const quiet = { debug() {}, info() {}, warn() {}, error() {} };
  const rpc = new RpcConnection({
    ...{ input, output, label: 'plugin "p"', logger: quiet, logFields: {}, maxLineLength: 100 },
    onRequest: async () => null,
    onNotification: () => {},
    onBroken: (reason) => broken.push(reason),
  });
  const call = rpc.request('health', {}, { timeoutMs: 5_000 });
  input.write('x'.repeat(150));
  await waitFor(() => broken.length > 0);
  expect(broken).toEqual(['it wrote a line over 100 characters']);
  rpc.close('the worker broke the protocol');
  await expect(call).rejects.toEqual(
    failure('plugin_worker_unavailable', 'health failed: the worker broke the protocol'),
  );
});
