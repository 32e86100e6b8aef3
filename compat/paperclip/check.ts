// The type-level test: envrun's orchestrator (client/orchestrator/) against the declarations Paperclip
// 2026.916.1 publishes (its server's environment-run-orchestrator.d.ts, with @paperclipai/shared and
// @paperclipai/adapter-utils). Each assignment compiles only if Paperclip's call reaches envrun's function
// with all it sends accepted (parameters compare contravariantly: strictFunctionTypes) and envrun's result is
// what Paperclip's call site reads. `npm run test:paperclip-types` installs this folder and runs tsc on it.
import type {
  EnvironmentErrorCode as PaperclipErrorCode,
  EnvironmentRunError as PaperclipRunError,
  EnvironmentRunOrchestrator as PaperclipOrchestrator,
} from './node_modules/@paperclipai/server/dist/services/environment-run-orchestrator.js';
import type { EnvironmentRuntimeLeaseRecord } from './node_modules/@paperclipai/server/dist/services/environment-runtime.js';
import {
  EnvironmentRunError,
  type EnvironmentErrorCode,
  type EnvironmentRunOrchestrator,
  type ReleaseForRunResult,
} from '../../client/orchestrator/index.js';

declare const envrun: EnvironmentRunOrchestrator;
type Args<F> = F extends (input: infer I) => unknown ? I : never;
type Result<F> = F extends (...args: never[]) => Promise<infer R> ? R : never;
type Call = keyof EnvironmentRunOrchestrator & keyof PaperclipOrchestrator;

// Call by call, so a failure names the call.
export const resolveEnvironment: PaperclipOrchestrator['resolveEnvironment'] = envrun.resolveEnvironment;
export const acquireLease: PaperclipOrchestrator['acquireLease'] = envrun.acquireLease;
export const resolveTransport: PaperclipOrchestrator['resolveTransport'] = envrun.resolveTransport;
export const acquireForRun: PaperclipOrchestrator['acquireForRun'] = envrun.acquireForRun;
export const realizeForRun: PaperclipOrchestrator['realizeForRun'] = envrun.realizeForRun;
export const releaseForRun: PaperclipOrchestrator['releaseForRun'] = envrun.releaseForRun;

// The whole: what the heartbeat calls can be envrun's (all but `runtime`, Paperclip's own drivers).
export const orchestrator: Omit<PaperclipOrchestrator, 'runtime'> = envrun;

// Every key Paperclip sends is one envrun names (envrun refuses unknown keys at run time, which assignability
// alone would not show): each is `true`, else the keys envrun lacks.
type KeysKnown<P, E> = [Exclude<keyof P, keyof E>] extends [never] ? true : Exclude<keyof P, keyof E>;
type Known<K extends Call> = KeysKnown<Args<PaperclipOrchestrator[K]>, Args<EnvironmentRunOrchestrator[K]>>;
export const keysKnown: [
  Known<'resolveEnvironment'>,
  Known<'acquireLease'>,
  Known<'resolveTransport'>,
  Known<'acquireForRun'>,
  Known<'realizeForRun'>,
  Known<'releaseForRun'>,
] = [true, true, true, true, true, true];

// Released leases are Paperclip's records; release errors and thrown errors are its EnvironmentRunError.
export const released: EnvironmentRuntimeLeaseRecord[] = ({} as ReleaseForRunResult).released;
export const releaseError: PaperclipRunError = ({} as ReleaseForRunResult).errors[0]!.error;
export const errorClass: typeof PaperclipRunError = EnvironmentRunError;

// The error codes are the same set, both ways.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
export const sameCodes: Same<EnvironmentErrorCode, PaperclipErrorCode> = true;

// The check is strict: a function that requires more than Paperclip sends (here `status`) is refused.
// @ts-expect-error: its parameter is narrower than Paperclip's input
export const narrower: PaperclipOrchestrator['releaseForRun'] = (input: {
  companyId: string;
  heartbeatRunId: string;
  agentId: string;
  status: 'released';
}) => envrun.releaseForRun(input);

// The declarations were found: each of these fails to compile, unless its type came out as `any` (as an
// import that does not resolve makes it), and then the unused directive fails.
type Realized = Result<PaperclipOrchestrator['realizeForRun']>;
// @ts-expect-error: @paperclipai/shared's Environment has no such driver
export const sharedFound: Result<PaperclipOrchestrator['resolveEnvironment']>['driver'] = 'docker';
// @ts-expect-error: @paperclipai/adapter-utils' AdapterExecutionTarget has no such kind
export const adapterUtilsFound: NonNullable<Realized['executionTarget']>['kind'] = 'container';
// @ts-expect-error: the server's RealizedExecutionWorkspace has no such strategy
export const workspaceFound: Args<PaperclipOrchestrator['realizeForRun']>['executionWorkspace']['strategy'] = 'copy';
// @ts-expect-error: the server's ProviderResourceDisposition has no such value
export const runtimeFound: Args<PaperclipOrchestrator['releaseForRun']>['providerResourceDisposition'] = 'pause';
// @ts-expect-error: EnvironmentErrorCode has no such code
export const codesFound: PaperclipErrorCode = 'lease_conflict';
