// The deterministic fake sandbox provider: a temp directory per lease, `fake://<env>` when the
// resource is reused, `fake://<run>/<id>` otherwise; execute spawns without a shell with only the explicit
// env. Its `faults` config makes every failure path reachable end to end without mocks, and `chaos` fails a
// seeded random share of all its calls (before or after the call takes effect) for the fault suite.
import { createHash } from 'node:crypto';
import { appendFile, cp, mkdir, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { z } from 'zod';
import { FaultsConfig, describeZodError, type FaultOperation } from '../../contracts/index.js';
import { EnvRunError, NonRetryableError } from '../../contracts/errors.js';
import { runProcess } from '../process.js';
import type { ProviderCallContext, SandboxProvider } from './contract.js';

const FakeConfig = z
  .object({
    provider: z.literal('fake'),
    reuseLease: z.boolean().default(false),
    timeoutMs: z.number().int().positive().optional(),
    faults: FaultsConfig.default({}),
    /** Fail this share of calls; which ones is decided by hashing (seed, operation, run, attempt). */
    chaos: z
      .object({ rate: z.number().min(0).max(1), seed: z.number().int() })
      .strict()
      .optional(),
  })
  .passthrough();
export type FakeConfig = z.infer<typeof FakeConfig>;

export class FakeFaultError extends EnvRunError {
  override name = 'FakeFaultError';
  readonly code = 'fake_fault';
}

function maybeFail(
  config: FakeConfig,
  op: FaultOperation,
  ctx: ProviderCallContext,
  when: 'before' | 'after' = 'before',
): void {
  const fault = config.faults[op];
  if (!fault || fault.when !== when) return;
  if (fault.fail === 'always' || ctx.attempt <= fault.fail) {
    throw new FakeFaultError(fault.message ?? `fake provider: injected ${op} failure (attempt ${ctx.attempt})`);
  }
}

/** The chaos draw for one call: deterministic, so a seed replays the same faults whatever the timing. */
function chaosDraw(config: FakeConfig, op: FaultOperation, ctx: ProviderCallContext): 'before' | 'after' | null {
  if (!config.chaos) return null;
  const digest = createHash('sha256')
    .update(`${config.chaos.seed}/${op}/${ctx.heartbeatRunId}/${ctx.attempt}`)
    .digest();
  if (digest.readUInt32BE(0) / 2 ** 32 >= config.chaos.rate) return null;
  return digest[4]! & 1 ? 'after' : 'before';
}

const idPart = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 16);
const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]/g, '_');

export function createFakeProvider(options: { rootDir: string }): SandboxProvider<FakeConfig> {
  const root = resolve(options.rootDir);

  function leaseDir(providerLeaseId: string): string {
    const m = /^fake:\/\/(.+)$/.exec(providerLeaseId);
    if (!m?.[1]) throw new NonRetryableError(`fake provider: not a fake lease id: ${providerLeaseId}`);
    const dir = resolve(root, 'leases', ...m[1].split('/').map(safe));
    if (relative(root, dir).startsWith('..')) throw new NonRetryableError('fake provider: lease id escapes its root');
    return dir;
  }

  function insideLease(providerLeaseId: string, cwd: string | undefined, fallback: string): string {
    const base = leaseDir(providerLeaseId);
    // Sandbox paths are host paths under the lease folder; anything else is taken relative to it.
    const target = !cwd
      ? fallback
      : isAbsolute(cwd) && !relative(base, cwd).startsWith('..')
        ? cwd
        : resolve(base, cwd.replace(/^\/+/, ''));
    if (relative(base, target).startsWith('..'))
      throw new NonRetryableError(`fake provider: cwd ${cwd} is outside the sandbox`);
    return target;
  }

  async function chaos(
    config: FakeConfig,
    op: FaultOperation,
    ctx: ProviderCallContext,
    when: 'before' | 'after',
  ): Promise<void> {
    maybeFail(config, op, ctx, when);
    if (chaosDraw(config, op, ctx) !== when) return;
    await mkdir(root, { recursive: true });
    await appendFile(join(root, 'chaos.log'), `${op} ${when} ${ctx.heartbeatRunId} attempt ${ctx.attempt}\n`);
    throw new FakeFaultError(`fake provider: chaos ${op} failure ${when} the call (attempt ${ctx.attempt})`);
  }

  /** The commands running per lease in this process: a release waits for them, or stops them when asked. */
  const running = new Map<string, Set<{ run: string; stop: AbortController; done: Promise<unknown> }>>();
  async function stopRunning(providerLeaseId: string, options: { run?: string; cancel: boolean }): Promise<void> {
    const mine = [...(running.get(providerLeaseId) ?? [])].filter((r) => !options.run || r.run === options.run);
    if (options.cancel) for (const r of mine) r.stop.abort(new Error('the lease is being released'));
    await Promise.allSettled(mine.map((r) => r.done));
  }

  return {
    contractVersion: 2,
    key: 'fake',
    hostBound: true,
    async validateConfig(config) {
      const parsed = FakeConfig.safeParse(config);
      if (!parsed.success)
        throw new NonRetryableError(`fake provider config: ${describeZodError(parsed.error, 'config')}`);
      return { config: parsed.data, warnings: [] };
    },
    async probe(config) {
      await mkdir(root, { recursive: true });
      const faults = Object.keys(config.faults);
      return {
        ok: true,
        diagnostics: [
          { severity: 'info', message: `root ${root} is writable` },
          faults.length
            ? { severity: 'warning', message: `faults configured: ${faults.join(', ')}` }
            : { severity: 'info', message: 'no faults configured' },
        ],
      };
    },
    async acquireLease(config, ctx) {
      await chaos(config, 'acquire', ctx, 'before');
      // Deterministic from the idempotency key: a retried acquire adopts the resource it may have made.
      const providerLeaseId = ctx.reuseKey
        ? `fake://${safe(ctx.reuseKey)}`
        : `fake://${safe(ctx.heartbeatRunId)}/${idPart(ctx.idempotencyKey)}`;
      const dir = leaseDir(providerLeaseId);
      const existed = await stat(dir).then(
        () => true,
        () => false,
      );
      await mkdir(dir, { recursive: true });
      await chaos(config, 'acquire', ctx, 'after');
      return {
        providerLeaseId,
        metadata: { root: dir, reused: Boolean(ctx.reuseKey), adopted: existed },
        expiresAt: null,
      };
    },
    async resumeLease(_config, ctx) {
      const { providerLeaseId } = ctx.lease;
      const dir = leaseDir(providerLeaseId);
      const exists = await stat(dir).then(
        (s) => s.isDirectory(),
        () => false,
      );
      return exists
        ? {
            providerLeaseId,
            metadata: { ...ctx.lease.metadata, root: dir, resumed: true },
            expiresAt: ctx.lease.expiresAt,
          }
        : null;
    },
    async releaseLease(config, ctx) {
      const { providerLeaseId } = ctx.lease;
      await chaos(config, 'release', ctx, 'before');
      // A kept folder may be in use by other runs: only this run's commands end.
      await stopRunning(providerLeaseId, {
        cancel: ctx.cancelActiveWork,
        ...(ctx.keep ? { run: ctx.heartbeatRunId } : {}),
      });
      if (!ctx.keep) await rm(leaseDir(providerLeaseId), { recursive: true, force: true });
      await chaos(config, 'release', ctx, 'after');
      return { receipt: { providerLeaseId, state: ctx.keep ? 'stopped' : 'destroyed' } };
    },
    async destroyLease(_config, ctx) {
      const { providerLeaseId } = ctx.lease;
      await stopRunning(providerLeaseId, { cancel: ctx.cancelActiveWork });
      await rm(leaseDir(providerLeaseId), { recursive: true, force: true });
      return { receipt: { providerLeaseId, state: 'destroyed' } };
    },
    async realizeWorkspace(config, ctx) {
      await chaos(config, 'realize', ctx, 'before');
      const cwd = join(leaseDir(ctx.lease.providerLeaseId), 'workspace');
      await mkdir(cwd, { recursive: true });
      await cp(ctx.localPath, cwd, { recursive: true, force: true });
      await chaos(config, 'realize', ctx, 'after');
      return { cwd, metadata: { copiedFrom: ctx.localPath } };
    },
    async execute(config, ctx, request) {
      const { providerLeaseId } = ctx.lease;
      await chaos(config, 'execute', ctx, 'before');
      const dir = leaseDir(providerLeaseId);
      if (
        !(await stat(dir).then(
          (s) => s.isDirectory(),
          () => false,
        ))
      ) {
        throw new NonRetryableError(`fake provider: no sandbox ${providerLeaseId} under ${root}`);
      }
      const cwd = insideLease(providerLeaseId, request.cwd, join(dir, 'workspace'));
      await mkdir(cwd, { recursive: true });
      const stop = new AbortController();
      const signal = ctx.signal ? AbortSignal.any([ctx.signal, stop.signal]) : stop.signal;
      const done = runProcess({
        command: request.command,
        args: request.args,
        cwd,
        env: request.env,
        stdin: request.stdin,
        stdinStream: request.stdinStream,
        timeoutMs: request.timeoutMs,
        signal,
        onLine: ctx.onProgress,
        onOutput: request.onOutput,
        onStarted: request.onStarted,
      });
      const entry = { run: ctx.heartbeatRunId, stop, done };
      const set = running.get(providerLeaseId) ?? new Set();
      running.set(providerLeaseId, set.add(entry));
      let result: Awaited<typeof done>;
      try {
        result = await done;
      } finally {
        set.delete(entry);
        if (!set.size && running.get(providerLeaseId) === set) running.delete(providerLeaseId);
      }
      await chaos(config, 'execute', ctx, 'after');
      return result;
    },
    async resolveTarget(config, ctx) {
      await chaos(config, 'target', ctx, 'before');
      const exists = await stat(ctx.cwd).then(
        (s) => s.isDirectory(),
        () => false,
      );
      if (!exists)
        throw new Error(`fake provider: sandbox ${ctx.lease.providerLeaseId} has no workspace at ${ctx.cwd}`);
      await chaos(config, 'target', ctx, 'after');
      return { remoteCwd: ctx.cwd };
    },
  };
}
